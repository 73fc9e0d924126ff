"""The meta-policy pi_c (Eq. 10) and the meta-Q network (App. A.2.2), Alg. 2 lines 17-18.

pi_c is ONE network (a ``StackedTanhGaussianPolicy`` with stack (1,)) evaluated on the
states of every task of a batch by folding the task axis into the rows. Its parameter
shapes match one slot of the task actors (stack (T,)), so ``TaskLearners.init_from_meta``
broadcasts it into every slot; likewise the meta-Q network is a ``StackedMLP`` with stack
(1, 2) (twin critics) broadcast into the task critics' (T, 2) stack.

Meta-policy step (Eq. 10): of Eq. 10's terms only the KL depends on pi_c, so one Adam step
(outer actor lr) is taken on

    L(pi_c) = mean_{n in B} lam_n (1 - alpha_n) E_{s~rho_n} KL(pi_n(.|s) || pi_c(.|s))

with pi_n, lam_n, alpha_n fixed (detached). KL is the closed form of the pre-tanh Gaussians.

Meta-Q step: ``Q_meta <- Q_meta - xi_q (Q_meta - mean_{n in B} Q_n)`` in parameter space,
i.e. ``Q_meta.lerp_(mean_n Q_n, xi_q)`` (first-order, Reptile-like).

Seeds (``merpo_agent.seed_batch``): ``seeds`` S runs' pi_c and Q_meta in one module each,
the seed axis in place of the stack of one (pi_c stack (S,), Q_meta (S, 2)); the task slots
of their batches are seed-major, each seed's Eq. 10 loss is over its own tasks (the loss
backpropagated is their sum: each seed's gradient is its own loss's) and each seed's Q_meta
averages its own task critics.

Under torchrun each rank holds a slice of the batch B (``distributed``): pi_c's gradient is
averaged over ranks weighted by their number of (task, state) terms before the Adam step,
which is the gradient of the whole batch's mean, so every rank takes the same step; the
meta-Q step is linear in the task mean, so each rank steps with its own slice's mean and the
results are averaged weighted by the slices' sizes: exactly the step with the whole batch's
mean. Both are no-ops in a single process.
"""

from __future__ import annotations

import torch
from merpo_data.networks import StackedMLP, StackedTanhGaussianPolicy, set_seed_block
from torch import nn

from merpo_agent.distributed import all_reduce_gradients_, all_reduce_mean_
from merpo_agent.rac_config import RACConfig
from merpo_agent.rac_losses import diagonal_gaussian_kl


class MetaPolicy(StackedTanhGaussianPolicy):
    """pi_c: a single tanh-Gaussian policy applied to observations of any leading shape
    (with ``seeds`` S > 1: one per seed, each on its block of the leading axis).

    ``forward(obs (..., obs_dim)) -> (mean, log_std)`` of shape (..., act_dim); ``sample``
    and ``deterministic`` (inherited) accept the same shapes, e.g. (T, N, obs_dim).
    """

    def __init__(self, obs_dim: int, act_dim: int, hidden: int, hidden_layers: int,
                 seeds: int = 1):
        super().__init__((seeds,), obs_dim, act_dim, hidden, hidden_layers)
        self.obs_dim = obs_dim

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lead = obs.shape[:-1]
        seeds = self.trunk.net[0].weight.shape[0]  # also a view of some seeds' rows
        mean, log_std = super().forward(obs.reshape(seeds, -1, obs.shape[-1]))
        return mean.reshape(*lead, self.act_dim), log_std.reshape(*lead, self.act_dim)


def make_meta_critic(obs_dim: int, act_dim: int, hidden: int, hidden_layers: int,
                     seeds: int = 1) -> StackedMLP:
    """The meta-Q network: twin critics with stack (1, 2), same layout as a task's critics
    (``seeds`` S: (S, 2), one per seed)."""
    return StackedMLP((seeds, 2), obs_dim + act_dim, 1, hidden, hidden_layers)


def meta_policy_losses(
    meta_policy: MetaPolicy,
    task_mean: torch.Tensor,
    task_log_std: torch.Tensor,
    states: torch.Tensor,
    lam: torch.Tensor,
    alpha: torch.Tensor,
) -> torch.Tensor:
    """Eq. 10's pi_c-dependent term of each seed: ``mean_n lam_n (1 - alpha_n) E_s
    KL(pi_n || pi_c)`` over the seed's own tasks n, shape (S,).

    task_mean, task_log_std: (T, N, act_dim), pi_n's pre-tanh Gaussian at ``states``
    (T, N, obs_dim), the T slots seed-major (S equal blocks, S the meta-policy's seeds);
    lam, alpha: (T,). Everything but pi_c is detached.
    """
    meta_mean, meta_log_std = meta_policy(states)
    kl = diagonal_gaussian_kl(task_mean.detach(), task_log_std.detach(), meta_mean, meta_log_std)
    weight = (lam * (1.0 - alpha)).detach()
    seeds = meta_policy.trunk.net[0].weight.shape[0]
    return (weight * kl.mean(-1)).view(seeds, -1).mean(1)


def meta_policy_loss(meta_policy: MetaPolicy, *inputs: torch.Tensor) -> torch.Tensor:
    """Eq. 10's pi_c-dependent term (:func:`meta_policy_losses`, the same inputs) as a
    scalar: the sum of the seeds' terms (one seed: its term), whose gradient in each seed's
    pi_c is its own."""
    return meta_policy_losses(meta_policy, *inputs).sum()


@torch.no_grad()
def meta_q_update_(meta_q: StackedMLP, task_critic: StackedMLP, xi_q: float) -> None:
    """In place: ``Q_meta <- Q_meta - xi_q (Q_meta - mean_n Q_n)`` over the task axis."""
    meta_params = list(meta_q.parameters())
    task_means = [p.mean(0, keepdim=True) for p in task_critic.parameters()]
    torch._foreach_lerp_(meta_params, task_means, xi_q)


class MetaLearner(nn.Module):
    """Holds pi_c, Q_meta and pi_c's Adam (outer actor lr); one step each per meta-iteration."""

    def __init__(
        self, config: RACConfig, obs_dim: int, act_dim: int, device: torch.device | str = "cpu",
        seeds: int = 1,
    ):
        super().__init__()
        self.config = config
        self.seeds = seeds
        self.policy = MetaPolicy(obs_dim, act_dim, config.hidden, config.hidden_layers,
                                 seeds).to(device)
        self.q = make_meta_critic(obs_dim, act_dim, config.hidden, config.hidden_layers,
                                  seeds).to(device)
        if seeds > 1:  # one network per seed
            set_seed_block(self.policy, 1)
            set_seed_block(self.q, 1)
        self.q.requires_grad_(False)  # moved only by meta_q_update_
        self.policy_optimizer = torch.optim.Adam(self.policy.parameters(), lr=config.outer_actor_lr)

    def update_policy(
        self,
        task_actor: StackedTanhGaussianPolicy,
        states: torch.Tensor,
        lam: torch.Tensor,
        alpha: torch.Tensor,
    ) -> torch.Tensor:
        """One Adam step on Eq. 10 with states (T, N, obs_dim) from each task's rho_n.

        Returns each seed's loss before the step (detached, shape (seeds,)).
        """
        with torch.no_grad():
            task_mean, task_log_std = task_actor(states)
        return self.update_policy_from(task_mean, task_log_std, states, lam, alpha)

    def update_policy_from(
        self,
        task_mean: torch.Tensor,
        task_log_std: torch.Tensor,
        states: torch.Tensor,
        lam: torch.Tensor,
        alpha: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`update_policy` given the task policies' pre-tanh Gaussians at ``states``
        (the trainer computes them chunk by chunk when the task batch runs in chunks)."""
        losses = meta_policy_losses(self.policy, task_mean, task_log_std, states, lam, alpha)
        self.policy_optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # each seed's pi_c gets its own loss's gradient
        # torchrun: the gradient of the mean over every rank's (task, state) terms
        all_reduce_gradients_(self.policy, weight=float(states.shape[0] * states.shape[1]))
        self.policy_optimizer.step()
        return losses.detach()

    def update_q(self, task_critic: StackedMLP) -> None:
        """Meta-Q averaging step with rate xi_q = ``config.meta_q_lr`` (under torchrun, with
        the mean over every rank's tasks: see the module docstring)."""
        meta_q_update_(self.q, task_critic, self.config.meta_q_lr)
        all_reduce_mean_(self.q.parameters(), weight=float(task_critic.stack_shape[0]))

    @torch.no_grad()
    def update_q_towards(self, mean_parameters: list[torch.Tensor], num_tasks: int) -> None:
        """The meta-Q step given the task critics' mean parameters (each (seeds, 2, ...):
        each seed's mean of its own tasks)."""
        torch._foreach_lerp_(list(self.q.parameters()), mean_parameters, self.config.meta_q_lr)
        all_reduce_mean_(self.q.parameters(), weight=float(num_tasks))

    @torch.no_grad()
    def reptile_policy_step(self, mean_parameters: list[torch.Tensor], num_tasks: int,
                            step: float) -> None:
        """The "reptile" reading of App. A.2.2: ``pi_c <- pi_c + step (mean_n pi_n - pi_c)``
        in parameter space, given the task actors' mean parameters (each (seeds, ...)).
        pi_c's Adam moments are left as they are (the Eq. 10 steps keep using them)."""
        torch._foreach_lerp_(list(self.policy.parameters()), mean_parameters, step)
        all_reduce_mean_(self.policy.parameters(), weight=float(num_tasks))

    def training_state(self) -> dict:
        return {"module": self.state_dict(), "policy_optimizer": self.policy_optimizer.state_dict()}

    def load_training_state(self, state: dict) -> None:
        self.load_state_dict(state["module"])
        self.policy_optimizer.load_state_dict(state["policy_optimizer"])


__all__ = ["MetaLearner", "MetaPolicy", "make_meta_critic", "meta_policy_loss",
           "meta_policy_losses", "meta_q_update_"]
