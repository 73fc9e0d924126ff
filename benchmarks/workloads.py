"""The workloads the benchmarks time: sizes, synthetic task data, learners, task models.

Data is synthetic (random transitions on the device) so that the benchmarks need no
datasets: speed does not depend on the values, only on the shapes. The synthetic sampler
is a ``merpo_data.TaskSampler`` whose tensors are filled at random, so ``sample`` is the
real code the trainer runs.

Sizes:
- ``TABLE2``: the paper's Table 2 networks (task Q / policy / meta-policy 5 x 300, dynamics
  7 members x 4 x 256), Walker-2D-Params dimensions (obs 17, act 6), batch 256 (f = 0.5),
  CQL(H) with 10 uniform + 10 policy actions.
- ``COMBO_CPU``: the issue's single-task yardstick, critic / actor 3 x 256, batch 256 (half
  real, half model), 10 sampled actions per proposal in the CQL term (OfflineRL-Kit COMBO
  at about 150 ms per update on a 2-core CPU).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from merpo_agent.dynamics import DynamicsEnsemble
from merpo_agent.meta_policy import MetaLearner
from merpo_agent.rac_config import RACConfig
from merpo_agent.task_learners import TaskLearners
from merpo_agent.transitions import TransitionBatch
from merpo_data.networks import StackedTanhGaussianPolicy
from merpo_data.sampler import TaskSampler

WALKER = "merpo/Walker2dParams-v0"


@dataclass(frozen=True)
class Sizes:
    name: str
    obs_dim: int
    act_dim: int
    hidden: int
    hidden_layers: int
    batch_size: int = 256
    real_data_ratio: float = 0.5
    cql_actions: int = 10  # per proposal (uniform and policy)
    dyn_ensemble: int = 7
    dyn_elites: int = 5
    dyn_hidden: int = 256
    dyn_layers: int = 4

    def rac_config(self, **overrides) -> RACConfig:
        return RACConfig(
            hidden=self.hidden,
            hidden_layers=self.hidden_layers,
            batch_size=self.batch_size,
            real_data_ratio=self.real_data_ratio,
            cql_uniform_actions=self.cql_actions,
            cql_policy_actions=self.cql_actions,
            discount=0.99,
            **overrides,
        )


TABLE2 = Sizes("table2 (5x300, Walker dims 17/6)", 17, 6, 300, 5)
COMBO_CPU = Sizes("combo-cpu (3x256, dims 17/6)", 17, 6, 256, 3)
SMOKE = Sizes("smoke (2x32, dims 17/6)", 17, 6, 32, 2, dyn_hidden=32, dyn_layers=2)


class SyntheticTaskSampler(TaskSampler):
    """A ``TaskSampler`` over random transitions (``rows_per_task`` per task) on ``device``."""

    def __init__(
        self,
        num_tasks: int,
        obs_dim: int,
        act_dim: int,
        rows_per_task: int = 10_000,
        device: torch.device | str = "cpu",
        seed: int = 0,
    ):
        n = num_tasks * rows_per_task
        self.env_id = WALKER
        self.tasks = tuple(range(num_tasks))
        self.num_tasks, self.obs_dim, self.act_dim = num_tasks, obs_dim, act_dim
        self.device = torch.device(device)
        self.action_low = -torch.ones(act_dim, device=self.device)
        self.action_high = torch.ones(act_dim, device=self.device)
        self.sizes = torch.full((num_tasks,), rows_per_task, dtype=torch.long, device=self.device)
        self.offsets = torch.arange(num_tasks, device=self.device) * rows_per_task
        # Drawn in place on the device: no host temporaries inflate the peak-memory benchmark.
        g = torch.Generator(self.device).manual_seed(seed)
        self.observations = torch.randn(n, obs_dim, device=self.device, generator=g)
        self.actions = torch.rand(n, act_dim, device=self.device, generator=g).mul_(2).sub_(1)
        self.rewards = torch.randn(n, device=self.device, generator=g)
        self.next_observations = torch.randn(n, obs_dim, device=self.device, generator=g)
        self.next_observations.mul_(0.1).add_(self.observations)
        self.terminations = torch.zeros(n, device=self.device)
        self.dataset_returns = torch.zeros(num_tasks, device=self.device)


def random_batch(
    num_tasks: int, rows: int, obs_dim: int, act_dim: int, device: torch.device, seed: int = 0
) -> TransitionBatch:
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(num_tasks, rows, obs_dim, generator=g)
    return TransitionBatch(
        observations=obs.to(device),
        actions=(torch.rand(num_tasks, rows, act_dim, generator=g) * 2 - 1).to(device),
        rewards=torch.randn(num_tasks, rows, generator=g).to(device),
        next_observations=(obs + 0.1 * torch.randn(obs.shape, generator=g)).to(device),
        terminations=torch.zeros(num_tasks, rows, device=device),
    )


def slice_tasks(batch: TransitionBatch, start: int, stop: int) -> TransitionBatch:
    return TransitionBatch(*(field[start:stop] for field in batch))


def make_learners(
    config: RACConfig, sizes: Sizes, num_tasks: int, device: torch.device, seed: int = 0
) -> TaskLearners:
    torch.manual_seed(seed)
    return TaskLearners(
        config, sizes.obs_dim, sizes.act_dim, num_tasks, device=device,
        generator=torch.Generator(device).manual_seed(seed),
    )


def make_bc_policy(
    config: RACConfig, sizes: Sizes, num_tasks: int, device: torch.device
) -> StackedTanhGaussianPolicy:
    policy = StackedTanhGaussianPolicy(
        (num_tasks,), sizes.obs_dim, sizes.act_dim, config.bc_hidden, config.bc_hidden_layers
    )
    return policy.to(device).requires_grad_(False)


def make_meta(config: RACConfig, sizes: Sizes, device: torch.device) -> MetaLearner:
    torch.manual_seed(1)
    return MetaLearner(config, sizes.obs_dim, sizes.act_dim, device=device)


def make_dynamics(sizes: Sizes, num_tasks: int, device: torch.device, seed: int = 0):
    return DynamicsEnsemble(
        num_tasks, sizes.obs_dim, sizes.act_dim, ensemble=sizes.dyn_ensemble,
        elites=sizes.dyn_elites, hidden=sizes.dyn_hidden, hidden_layers=sizes.dyn_layers,
        device=device, seed=seed,
    )


def terminated_fn():
    """Walker-2D's known termination function (batched torch), as rollouts use it."""
    from merpo_envs import get_meta_info

    return get_meta_info(WALKER).terminated_torch
