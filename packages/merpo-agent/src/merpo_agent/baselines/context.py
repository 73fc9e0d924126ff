"""What the context-based baselines (FOCAL, contextual BCQ, MBML, Batch PEARL) share: the
config base, the task-context encoder, the agent's input normalization and latent inference,
the twin critics, the learner's training state, the training loop (task batches, logging
cadence, NaN stop, checkpoints for resume), the meta-test in the real env and the agent file
format. Each baseline module keeps only its own method: its networks, losses and update.

Seeds as a batch axis (``train --seeds``, ``baselines.run``): an agent and learner of
``seeds`` S > 1 hold S seeds' networks, each parameter with a seed axis in front of the
one-seed shape (``nn.Linear`` layers as ``SeedLinear``, stacks of one as stacks of S, twin
critics (S, 2), scalars (S,)), and every batch has the S seeds' task rows seed-major along
its task axis (each seed's tasks drawn from its own generator, ``SeedGenerators``). Each
loss is computed per seed (:func:`seed_mean`, :func:`seed_scale`) and their sum is
backpropagated, so every seed's gradient is its own; each metric has one value per seed.
A learner of one seed runs the same code on today's one-seed shapes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, ClassVar

import torch
from merpo_data.networks import (
    SeedLinear,
    StackedMLP,
    StackedTanhGaussianPolicy,
    set_seed_block,
    tanh_gaussian_rsample,
)
from merpo_data.sampler import TaskSampler
from merpo_envs import get_meta_info
from torch import nn

from merpo_agent.action_scaling import from_unit_actions, to_unit_actions
from merpo_agent.checkpoint import load_checkpoint, save_checkpoint
from merpo_agent.env_eval import TaskReturns, evaluate_in_env
from merpo_agent.presets import TABLE2_PER_ENV
from merpo_agent.seeds import optimizer_state_like, stack_state, unstack_state
from merpo_agent.task_slice import Generators, SeedGenerators, draw_slots
from merpo_agent.transitions import TransitionBatch

FORMAT_VERSION = 1

# log_fn(step, metrics): called every ``log_every`` updates with plain floats.
LogFn = Callable[[int, dict[str, float]], None]
# policy(obs (T, N, obs_dim)) -> actions in [-1, 1] (T, N, act_dim)
PolicyFn = Callable[[torch.Tensor], torch.Tensor]

# Activations (floats) of one batched critic evaluation that a CPU still runs faster with
# several seeds' rows than seed by seed (benchmarks/bench_seed_batch.py, one thread:
# contextual BCQ at the smoke sizes, 0.33 M a seed, 5 seeds batched 0.88x their single
# runs; at the small sizes, 1.3 M a seed, 1.09x): beyond it the batched tensors spill the
# caches, as ``task_slice.CPU_CHUNK_CRITIC_WEIGHTS`` finds for MerPO's task batches.
CPU_SEED_ACTIVATIONS = 2_500_000

# What a diverged baseline run should do next: a resume may not change the learning rates
# or the seed (the run directory's settings check refuses it), a new run may.
NEW_RUN_ADVICE = ("start a new run (another --run-dir) with lower learning rates (e.g. --set "
                  "critic_lr=...) or another --seed")


# ---- config base ------------------------------------------------------------------------


class BaselineConfig:
    """What every baseline's dataclass config shares: field checks, the env's discount,
    the tiny ``smoke`` variant and a checked ``from_dict``.

    A subclass lists its integer fields that must be >= 1 (``POSITIVE``), those that may
    also be None (``POSITIVE_OR_NONE``), its smoke-test settings (``SMOKE``) and calls
    :meth:`check_fields` from ``__post_init__``. Every baseline config has ``discount``.
    """

    POSITIVE: ClassVar[tuple[str, ...]] = ()
    POSITIVE_OR_NONE: ClassVar[tuple[str, ...]] = ()
    SMOKE: ClassVar[dict[str, Any]] = {}

    def check_fields(self) -> None:
        name = type(self).__name__
        for field in self.POSITIVE:
            if getattr(self, field) < 1:
                raise ValueError(f"{name}.{field} must be >= 1, got {getattr(self, field)}")
        for field in self.POSITIVE_OR_NONE:
            value = getattr(self, field)
            if value is not None and value < 1:
                raise ValueError(f"{name}.{field} must be >= 1 or None, got {value}")
        discount = self.discount
        if not 0.0 <= discount < 1.0:
            raise ValueError(f"{name}.discount must be in [0, 1), got {discount}")

    @classmethod
    def for_env(cls, env_id: str, **overrides: Any) -> Any:
        """Defaults with the env's Table 2 discount (0.9 Point-Robot-Wind, else 0.99)."""
        env = get_meta_info(env_id).env_id
        discount = TABLE2_PER_ENV.get(env, {}).get("discount", 0.99)
        return cls(**{"discount": discount, **overrides})

    @classmethod
    def smoke(cls, env_id: str | None = None, **overrides: Any) -> Any:
        """Tiny networks and batches for tests (seconds on a CPU), ``SMOKE`` then
        ``overrides`` over the defaults."""
        tiny = {**cls.SMOKE, **overrides}
        return cls.for_env(env_id, **tiny) if env_id is not None else cls(**tiny)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown {cls.__name__} field(s) {unknown}; known: {sorted(known)}"
            )
        return cls(**data)


def mlp(in_features: int, out_features: int, hidden: int, hidden_layers: int,
        seeds: int = 1) -> nn.Sequential:
    """``hidden_layers`` ReLU layers of ``hidden``, then a linear output: ``nn.Linear`` s, or
    with ``seeds`` S > 1 ``SeedLinear`` s of S seeds (each seed's rows its own network)."""
    def linear(n_in: int, n_out: int) -> nn.Module:
        return nn.Linear(n_in, n_out) if seeds == 1 else SeedLinear(seeds, n_in, n_out)

    sizes = [in_features] + [hidden] * hidden_layers
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [linear(n_in, n_out), nn.ReLU()]
    layers.append(linear(sizes[-1], out_features))
    return nn.Sequential(*layers)


def seed_mean(x: torch.Tensor, seeds: int, axis: int = 0) -> torch.Tensor:
    """Each seed's mean of all of ``x``: a scalar for one seed, else (seeds,), where
    ``axis`` is the task axis with the seeds' blocks seed-major (a seed's elements reduced
    in the order they have alone)."""
    if seeds == 1:
        return x.mean()
    per_seed = x.unflatten(axis, (seeds, -1)).movedim(axis, 0)
    return per_seed.reshape(seeds, -1).mean(1)


def seed_rows(task_indices: torch.Tensor, seeds: int, num_tasks: int) -> torch.Tensor:
    """Rows of a per-task table that stacks every seed's ``num_tasks`` tasks seed-major
    (seed s's task i at s * num_tasks + i) for task positions ``task_indices`` (each seed's
    block its own tasks); the positions themselves for one seed."""
    if seeds == 1:
        return task_indices
    seed = torch.arange(seeds, device=task_indices.device)
    return task_indices + seed.repeat_interleave(task_indices.shape[0] // seeds) * num_tasks


def seed_sum(x: torch.Tensor, seeds: int) -> torch.Tensor:
    """Each seed's sum of ``x`` (seed-major leading axis): a scalar for one seed, else
    (seeds,)."""
    return x.sum() if seeds == 1 else x.reshape(seeds, -1).sum(1)


def seed_scale(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``value * x`` with one value per seed: a scalar (one seed), or (S,) for the S seed
    blocks of ``x``'s leading axis."""
    if value.dim() == 0:
        return value * x
    seeds = value.shape[0]
    return (value.view(seeds, *[1] * x.dim()) * x.unflatten(0, (seeds, -1))).flatten(0, 1)


def twin_bellman_loss(q: torch.Tensor, target: torch.Tensor, seeds: int) -> torch.Tensor:
    """The twin critics' squared Bellman error, each critic's mean over the tasks and rows,
    summed over the critics: q (2, T, B), target (T, B) -> a scalar, or per seed (seeds,)."""
    error = (q - target.unsqueeze(0)).pow(2)
    if seeds == 1:
        return error.mean(dim=(1, 2)).sum()
    return error.unflatten(1, (seeds, -1)).mean(dim=(2, 3)).sum(0)


class ContextEncoder(nn.Module):
    """FOCAL's deterministic encoder: per-transition embeddings q(s, a, r, s'), averaged.

    Input features (..., C, 2 * obs_dim + act_dim + 1) already normalized; output the task
    latent (..., latent_dim), the mean over the C context transitions (so the order of the
    context does not matter).
    """

    def __init__(self, obs_dim: int, act_dim: int, latent_dim: int, hidden: int, layers: int,
                 seeds: int = 1):
        super().__init__()
        self.net = mlp(2 * obs_dim + act_dim + 1, latent_dim, hidden, layers, seeds)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.embed(features).mean(dim=-2)


class TwinCritic(nn.Module):
    """Q_1, Q_2 (s, a, z): one StackedMLP with stack (2,), shared across tasks (``seeds`` S:
    stack (S, 2), each seed's twins on its own tasks' rows)."""

    def __init__(self, obs_dim: int, act_dim: int, latent_dim: int, hidden: int, layers: int,
                 seeds: int = 1):
        super().__init__()
        self.seeds = seeds
        stack = (2,) if seeds == 1 else (seeds, 2)
        self.net = set_seed_block(
            StackedMLP(stack, obs_dim + act_dim + latent_dim, 1, hidden, layers),
            None if seeds == 1 else 1)

    def forward(
        self, norm_obs: torch.Tensor, action: torch.Tensor, z: torch.Tensor
    ) -> torch.Tensor:
        """(T, N, ...) inputs -> Q values (2, T, N)."""
        t, n, _ = norm_obs.shape
        x = torch.cat([norm_obs, action, z], dim=-1)
        if self.seeds == 1:
            return self.net(x.reshape(1, t * n, -1).expand(2, -1, -1)).reshape(2, t, n)
        x = x.reshape(self.seeds, 1, -1, x.shape[-1]).expand(-1, 2, -1, -1)
        q = self.net(x).reshape(self.seeds, 2, -1, n)  # each seed's twins
        return q.transpose(0, 1).reshape(2, t, n)


def twin_critics(agent: ContextualAgent) -> tuple[TwinCritic, TwinCritic]:
    """Q_1, Q_2 (s, a, z) with ``hidden_layers`` layers of ``hidden``, and their frozen target."""
    cfg = agent.config

    def make() -> TwinCritic:
        return TwinCritic(agent.obs_dim, agent.act_dim, cfg.latent_dim, cfg.hidden,
                          cfg.hidden_layers, agent.seeds)

    critic = make()
    return critic, frozen_copy(critic, make)


@torch.no_grad()
def polyak_(target: nn.Module, source: nn.Module, tau: float) -> None:
    """target <- (1 - tau) target + tau source, parameter by parameter."""
    for p_target, p in zip(target.parameters(), source.parameters(), strict=True):
        p_target.lerp_(p, tau)


def frozen_copy(module: nn.Module, make: Callable[[], nn.Module]) -> nn.Module:
    """A target network: ``make()`` loaded with ``module``'s weights, without gradients."""
    target = make()
    target.load_state_dict(module.state_dict())
    target.requires_grad_(False)
    return target


class ContextualAgent(nn.Module):
    """Base of a context-conditioned agent: action box, observation / reward normalizer and
    ``infer_latent``. Subclasses build ``self.encoder`` (a :class:`ContextEncoder`) and their
    networks, then call ``self.to(device)``.

    ``infer_latent(context)`` takes transitions as the task sampler gives them (env-unit
    actions, raw rewards); policies act in [-1, 1] (``env_actions`` maps to the env box).
    """

    encoder: ContextEncoder

    def __init__(
        self,
        config: Any,
        obs_dim: int,
        act_dim: int,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        seeds: int = 1,
    ):
        super().__init__()
        self.config, self.obs_dim, self.act_dim = config, obs_dim, act_dim
        self.seeds = seeds
        lead = () if seeds == 1 else (seeds,)  # one value per seed
        low = torch.as_tensor(action_low, dtype=torch.float32)
        high = torch.as_tensor(action_high, dtype=torch.float32)
        self.register_buffer("action_low", low.expand(*lead, *low.shape[-1:]).clone())
        self.register_buffer("action_high", high.expand(*lead, *high.shape[-1:]).clone())
        self.register_buffer("obs_mean", torch.zeros(*lead, obs_dim))
        self.register_buffer("obs_std", torch.ones(*lead, obs_dim))
        self.register_buffer("reward_mean", torch.zeros(lead))
        self.register_buffer("reward_std", torch.ones(lead))

    @property
    def device(self) -> torch.device:
        return self.action_low.device

    @torch.no_grad()
    def set_normalizer(self, sampler: TaskSampler) -> None:
        """Observation and reward statistics of the training data (all tasks pooled)."""
        obs = torch.cat([sampler.observations, sampler.next_observations]).to(self.device)
        self.obs_mean.copy_(obs.mean(0))
        self.obs_std.copy_(obs.std(0).clamp_min(1e-3))
        rewards = sampler.rewards.to(self.device)
        self.reward_mean.copy_(rewards.mean())
        self.reward_std.copy_(rewards.std().clamp_min(1e-3))

    def _per_seed(self, fn: Callable[..., torch.Tensor], x: torch.Tensor,
                  *values: torch.Tensor) -> torch.Tensor:
        """``fn(x, *values)`` with each seed's ``values`` (its statistics, (S, ...)) on its
        block of ``x``'s leading axis; one seed's apply to all of ``x``."""
        if self.seeds == 1:
            return fn(x, *values)
        blocks = x.reshape(self.seeds, -1, *values[0].shape[1:])
        return fn(blocks, *(v.unsqueeze(1) for v in values)).reshape(x.shape)

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return self._per_seed(lambda x, mean, std: (x - mean) / std, obs, self.obs_mean,
                              self.obs_std)

    def unit_actions(self, env_actions: torch.Tensor) -> torch.Tensor:
        return self._per_seed(to_unit_actions, env_actions, self.action_low, self.action_high)

    def env_actions(self, unit_actions: torch.Tensor) -> torch.Tensor:
        return self._per_seed(from_unit_actions, unit_actions, self.action_low,
                              self.action_high)

    def context_features(self, context: TransitionBatch) -> torch.Tensor:
        """(..., C, 2 * obs_dim + act_dim + 1): normalized s, unit a, normalized r, s'."""
        reward = self._per_seed(lambda x, mean, std: (x - mean) / std, context.rewards,
                                self.reward_mean, self.reward_std).unsqueeze(-1)
        return torch.cat(
            [
                self.normalize_obs(context.observations),
                self.unit_actions(context.actions),
                reward,
                self.normalize_obs(context.next_observations),
            ],
            dim=-1,
        )

    def infer_latent(self, context: TransitionBatch) -> torch.Tensor:
        """Task latents (T, latent_dim) from contexts (T, C, ...) in env units."""
        if context.observations.dim() != 3:
            raise ValueError(
                "infer_latent needs a context with a task axis, (T, C, obs_dim); got shape "
                f"{tuple(context.observations.shape)} (use TaskSampler.sample(C))"
            )
        return self.encoder(self.context_features(context))

    def meta_test_policy(self, z: torch.Tensor, seed: int) -> PolicyFn:
        """The policy run in the real env at meta-test for task latents z (T, latent):
        by default the deterministic ``act(obs, z)``."""
        return lambda obs: self.act(obs, z)


class GaussianPolicyAgent(ContextualAgent):
    """A context agent whose policy is a tanh-Gaussian pi(a | s, z) (FOCAL, Batch PEARL):
    one network shared across tasks (a stack of one, fed the (T * N) flattened batch), and
    an ``encoder_class`` built with the config's ``latent_dim``, ``encoder_hidden`` and
    ``encoder_layers``; the policy has ``hidden_layers`` layers of ``hidden``."""

    encoder_class: ClassVar[type[nn.Module]] = ContextEncoder

    def __init__(
        self,
        config: Any,
        obs_dim: int,
        act_dim: int,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        device: str | torch.device = "cpu",
        seeds: int = 1,
    ):
        super().__init__(config, obs_dim, act_dim, action_low, action_high, seeds)
        self.encoder = self.encoder_class(
            obs_dim, act_dim, config.latent_dim, config.encoder_hidden, config.encoder_layers,
            seeds,
        )
        self.policy = set_seed_block(StackedTanhGaussianPolicy(
            (seeds,), obs_dim + config.latent_dim, act_dim, config.hidden, config.hidden_layers
        ), None if seeds == 1 else 1)
        self.to(device)

    def policy_distribution(
        self, norm_obs: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pre-tanh mean and log-std (T, N, act_dim) of pi(. | s, z); z broadcast (T, N, L)."""
        t, n, _ = norm_obs.shape
        x = torch.cat([norm_obs, z], dim=-1).reshape(self.seeds, -1, norm_obs.shape[-1]
                                                     + z.shape[-1])
        mean, log_std = self.policy(x)
        return mean.reshape(t, n, -1), log_std.reshape(t, n, -1)

    def sample_action(
        self, norm_obs: torch.Tensor, z: torch.Tensor, generator: Generators
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """A reparameterized action of pi(. | s, z): (action, log pi, pre-tanh mean, log-std)."""
        mean, log_std = self.policy_distribution(norm_obs, z)
        noise = draw_slots(generator, lambda shape, g: torch.randn(
            shape, device=mean.device, generator=g), mean.shape)
        action, log_prob = tanh_gaussian_rsample(mean, log_std, noise, self.seeds)
        return action, log_prob, mean, log_std

    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        z: torch.Tensor,
        deterministic: bool = True,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Actions in [-1, 1], (T, N, act_dim), for raw observations (T, N, obs_dim), z (T, L)."""
        if obs.dim() != 3 or z.dim() != 2 or z.shape[0] != obs.shape[0]:
            raise ValueError(
                f"act needs obs (T, N, obs_dim) and z (T, latent); got {tuple(obs.shape)} and "
                f"{tuple(z.shape)}"
            )
        z = z.unsqueeze(1).expand(-1, obs.shape[1], -1)
        if deterministic:
            return torch.tanh(self.policy_distribution(self.normalize_obs(obs), z)[0])
        return self.sample_action(self.normalize_obs(obs), z, generator)[0]


def check_sampler_device(sampler: TaskSampler, device: str | torch.device) -> torch.device:
    """The sampler's device, or a one-line error when training was asked elsewhere."""
    device = torch.device(device)
    if device.type != sampler.device.type:
        raise ValueError(
            f"the TaskSampler lives on {sampler.device} but training was asked on {device}; "
            f"build the sampler with device={str(device)!r}"
        )
    return sampler.device


def task_batch(sampler: TaskSampler, task_batch_size: int | None,
               generator: Generators) -> torch.Tensor:
    """One update's task rows: ``task_batch_size`` distinct tasks drawn on the device (all
    tasks when None or when it covers them); with ``SeedGenerators`` each seed's batch from
    its own generator, seed-major."""
    num_tasks = sampler.num_tasks
    size = num_tasks if task_batch_size is None else min(task_batch_size, num_tasks)
    gens = generator.generators if isinstance(generator, SeedGenerators) else [generator]
    if size >= num_tasks:
        rows = torch.arange(num_tasks, device=sampler.device)
        return rows if len(gens) == 1 else rows.repeat(len(gens))
    batches = [torch.randperm(num_tasks, device=sampler.device, generator=g)[:size]
               for g in gens]
    return batches[0] if len(batches) == 1 else torch.cat(batches)


def split_context(context: TransitionBatch, size: int) -> tuple[TransitionBatch, TransitionBatch]:
    """Two independent contexts (T, size, ...) from one draw of (T, 2 * size, ...)."""
    return (
        TransitionBatch(*(x[:, :size] for x in context)),
        TransitionBatch(*(x[:, size:] for x in context)),
    )


# ---- the learner and the training loop --------------------------------------------------


class BaselineLearner(nn.Module):
    """Training state of one baseline: its agent (a submodule), the networks only training
    needs, the optimizers (attributes that are ``torch.optim.Optimizer``) and the noise
    generator. Subclasses set ``agent_class`` and implement :meth:`step`; ``prepare`` is
    what runs once before the updates (fitting a behavior or reward model).

    ``watched``: the metrics whose non-finite value stops training.
    """

    agent_class: ClassVar[type[ContextualAgent]]
    agent_format: ClassVar[str]  # the format name of the agent's file
    watched: ClassVar[tuple[str, ...]] = ("critic_loss", "actor_loss")
    agent: ContextualAgent
    generator: torch.Generator

    @classmethod
    def create(cls, agent: ContextualAgent, num_tasks: int, generator: torch.Generator) -> Any:
        return cls(agent, num_tasks, generator)

    @classmethod
    def build(
        cls, config: Any, sampler: TaskSampler, device: str | torch.device, seed: int
    ) -> Any:
        """Seeded agent (training-data normalizer) and learner for ``sampler``'s tasks."""
        device = check_sampler_device(sampler, device)
        torch.manual_seed(seed)
        generator = torch.Generator(device=device).manual_seed(seed)
        agent = cls.agent_class(
            config, sampler.obs_dim, sampler.act_dim, sampler.action_low, sampler.action_high,
            device,
        )
        agent.set_normalizer(sampler)
        learner = cls.create(agent, sampler.num_tasks, generator)
        learner.num_tasks = sampler.num_tasks
        return learner

    def prepare(self, sampler: TaskSampler) -> dict[str, float]:
        """Once, before the first update; returns metrics logged at step 0."""
        return {}

    def after_prepare(self) -> None:
        """After ``prepare`` or after a checkpoint was loaded in its place."""

    def step(self, sampler: TaskSampler, task_indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """One update on the tasks ``task_indices``: draw the batches, update, metrics."""
        raise NotImplementedError

    @property
    def seeds(self) -> int:
        """The seeds whose networks this learner trains together (``seeds.py``)."""
        return self.agent.seeds

    def critic_activations(self, sampler: TaskSampler) -> int:
        """Floats of one seed's largest critic evaluation of an update (twin critics'
        hidden activations over the task batch's rows): what a CPU's caches bound
        (:func:`seeds_per_group`). Methods that evaluate several actions per state scale
        it (``candidates``)."""
        cfg = self.agent.config
        tasks = min(cfg.task_batch_size or sampler.num_tasks, sampler.num_tasks)
        return 2 * tasks * cfg.batch_size * cfg.hidden * self.candidates

    candidates: ClassVar[int] = 1

    @classmethod
    def stack(cls, members: list[BaselineLearner]) -> BaselineLearner:
        """One learner training the one-seed learners ``members`` (built, prepared or
        resumed, each as alone) together: their networks, optimizer states and generators
        with a seed axis. One member is itself."""
        if len(members) == 1:
            return members[0]
        first = members[0]
        agent = first.agent
        with torch.random.fork_rng(devices=[agent.device] if agent.device.type == "cuda"
                                   else []):  # the members' random states untouched
            stacked_agent = cls.agent_class(
                agent.config, agent.obs_dim, agent.act_dim, agent.action_low,
                agent.action_high, agent.device, seeds=len(members))
            learner = cls.create(stacked_agent, first.num_tasks,
                                 SeedGenerators([m.generator for m in members]))
        learner.num_tasks = first.num_tasks
        learner.load_state_dict(stack_state(learner.state_dict(),
                                            [m.state_dict() for m in members]))
        for name, optimizer in learner.optimizers().items():
            states = [m.optimizers()[name].state_dict() for m in members]
            optimizer.load_state_dict(stack_state(optimizer_state_like(optimizer, states[0]),
                                                  states))
        learner.after_prepare()
        return learner

    def unstack_into(self, members: list[BaselineLearner]) -> None:
        """Each member's networks and optimizer states cut out of this learner's (what it
        saves and meta-tests); its generator is its own already."""
        if len(members) == 1 and members[0] is self:
            return
        state = self.state_dict()
        optimizers = {name: opt.state_dict() for name, opt in self.optimizers().items()}
        for s, m in enumerate(members):
            m.load_state_dict(unstack_state(state, self.seeds, s, m.state_dict()))
            for name, optimizer in m.optimizers().items():
                like = optimizer_state_like(optimizer, optimizers[name])
                optimizer.load_state_dict(unstack_state(optimizers[name], self.seeds, s, like))

    def agent_state(self) -> dict[str, Any]:
        """The agent alone, as its own file holds it (``agent_state``)."""
        return agent_state(self.agent, self.agent_format)

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {k: v for k, v in vars(self).items() if isinstance(v, torch.optim.Optimizer)}

    def training_state(self) -> dict[str, Any]:
        """Every parameter, buffer, optimizer and the generator (``weights_only``-loadable)."""
        return {
            "module": {k: v.detach().cpu() for k, v in self.state_dict().items()},
            "optimizers": {k: opt.state_dict() for k, opt in self.optimizers().items()},
            "generator": self.generator.get_state(),
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        self.load_state_dict(state["module"])
        for name, optimizer in self.optimizers().items():
            optimizer.load_state_dict(state["optimizers"][name])
        self.generator.set_state(state["generator"].cpu())
        self.after_prepare()


def train_steps(
    learner: BaselineLearner,
    sampler: TaskSampler,
    steps: int,
    start: int = 0,
    log_fn: Callable[[int, list[dict[str, float]]], None] | None = None,
    progress_fn: Callable[[int, BaselineLearner], None] | None = None,
    checkpoint_fn: Callable[[int], None] | None = None,
    checkpoint_every: int = 0,
    on_diverged: Callable[[int, list[int], str], None] | None = None,
) -> None:
    """Updates start+1..steps on task batches of ``config.task_batch_size`` tasks (each
    seed's from its own generator).

    Every ``config.log_every`` steps and after the last: the one host read of the loop
    (a non-finite flag per seed of the ``watched`` losses, accumulated on the device, then
    the metrics), ``log_fn(step, metrics)`` (a dict of floats per seed) and
    ``progress_fn(step, learner)``. Every ``checkpoint_every`` steps (0: never) and after
    the last, ``checkpoint_fn(step)``. A NaN or inf loss raises ``TrainingDiverged`` before
    anything is saved after it; with several seeds ``on_diverged(step, positions, line)``
    is told which seeds diverged, before that step's log and checkpoint: they write nothing
    more (the callbacks skip them) and the others train on, as they do alone (a seed's
    values never reach another's).
    """
    from merpo_agent.trainer import TrainingDiverged

    config, device = learner.agent.config, learner.agent.device
    bad = torch.zeros(learner.seeds, dtype=torch.bool, device=device)
    stopped = torch.zeros_like(bad)
    last_good = step = start
    while step < steps:
        step += 1
        task_indices = task_batch(sampler, config.task_batch_size, learner.generator)
        metrics = learner.step(sampler, task_indices)
        for name in learner.watched:
            bad |= ~torch.isfinite(metrics[name]).reshape(-1)
        log_now = step % config.log_every == 0 or step == steps
        save_now = checkpoint_fn is not None and (
            step == steps or (checkpoint_every > 0 and step % checkpoint_every == 0)
        )
        if (log_now or save_now) and bool((bad & ~stopped).any()):
            line = (f"non-finite loss (NaN or inf) by update {step}: training stopped; last "
                    f"good checkpoint at update {last_good} kept; {NEW_RUN_ADVICE}")
            if learner.seeds == 1 or on_diverged is None:
                raise TrainingDiverged(line)
            on_diverged(step, (bad & ~stopped).nonzero().flatten().tolist(), line)
            stopped |= bad
            if bool(stopped.all()):
                return
        if log_now:
            if log_fn is not None:
                log_fn(step, seed_floats(metrics, learner.seeds))
            if progress_fn is not None:
                progress_fn(step, learner)
        if save_now:
            checkpoint_fn(step)
            last_good = step


def seeds_per_group(learner: BaselineLearner, sampler: TaskSampler, seeds: int) -> int:
    """How many seeds a batch trains as one learner: all of them off the CPU; on the CPU as
    many as keep a critic evaluation within ``CPU_SEED_ACTIVATIONS`` (at least one)."""
    from merpo_agent.task_slice import device_chunk_size

    return device_chunk_size(learner.agent.device, seeds,
                             learner.critic_activations(sampler), CPU_SEED_ACTIVATIONS)


def seed_floats(metrics: dict[str, torch.Tensor], seeds: int) -> list[dict[str, float]]:
    """Device metrics (a scalar each for one seed, (seeds,) for several) as one dict of
    floats per seed."""
    if seeds == 1:
        return [{k: float(v) for k, v in metrics.items()}]
    host = {k: v.detach().cpu().tolist() for k, v in metrics.items()}
    return [{k: float(v[s]) for k, v in host.items()} for s in range(seeds)]


@torch.enable_grad()  # callable from inside a no_grad block (e.g. an evaluation hook)
def train_baseline(
    learner_class: type[BaselineLearner],
    config: Any,
    train_sampler: TaskSampler,
    steps: int,
    device: str | torch.device,
    seed: int,
    log_fn: LogFn | None = None,
    progress_fn: Callable[[int, Any], None] | None = None,
) -> Any:
    """Meta-train a baseline on every task of ``train_sampler`` for ``steps`` updates:
    ``prepare`` (logged as step 0), then :func:`train_steps`. Returns the agent (eval mode)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    learner = learner_class.build(config, train_sampler, device, seed)
    prepared = learner.prepare(train_sampler)
    learner.after_prepare()
    if log_fn is not None and prepared:
        log_fn(0, {k: float(v) for k, v in prepared.items()})
    train_steps(
        learner, train_sampler, steps, 0,
        None if log_fn is None else lambda step, metrics: log_fn(step, metrics[0]),
        None if progress_fn is None else lambda step, trained: progress_fn(step, trained.agent),
    )
    learner.agent.eval()
    return learner.agent


@torch.no_grad()
def infer_test_latents(
    agent: ContextualAgent,
    sampler: TaskSampler,
    context_size: int | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """z (T, latent) of every task of ``sampler`` from ``context_size`` of its transitions."""
    size = agent.config.eval_context_size if context_size is None else context_size
    context = sampler.sample(size, generator=generator)
    return agent.infer_latent(TransitionBatch(*(x.to(agent.device) for x in context)))


def check_evaluation(name: str, env_id: str, sampler: TaskSampler, episodes: int) -> None:
    """One-line errors for a meta-test on the wrong env or with no episodes."""
    if get_meta_info(env_id).env_id != sampler.env_id:
        raise ValueError(
            f"{name} got env_id {env_id!r} but the sampler holds {sampler.env_id!r}; "
            "pass the sampler's env"
        )
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")


def evaluate_agent(
    name: str,
    agent: ContextualAgent,
    test_sampler: TaskSampler,
    env_id: str,
    episodes: int,
    seed: int,
    context_size: int | None = None,
) -> dict[int, float]:
    """Meta-test: z of each task inferred from its offline data (``context_size``
    transitions, default ``config.eval_context_size``), then ``agent.meta_test_policy(z)``
    in the real env: ``episodes`` episodes per task (seeds ``seed + i``) in one Gymnasium
    vector env over all tasks. Returns ``{task: mean undiscounted return}`` (a
    ``TaskReturns``: every episode's return is in its ``episodes``)."""
    check_evaluation(name, env_id, test_sampler, episodes)
    generator = torch.Generator(device=test_sampler.device).manual_seed(seed)
    z = infer_test_latents(agent, test_sampler, context_size, generator)
    policy = agent.meta_test_policy(z, seed)
    returns = evaluate_in_env(
        env_id, test_sampler.tasks, {name: policy}, episodes, seed, agent.device,
        per_episode=True,
    )[name]
    tasks = test_sampler.tasks
    return TaskReturns({task: float(r.mean()) for task, r in zip(tasks, returns, strict=True)},
                       dict(zip(tasks, returns, strict=True)))


# ---- agent files ------------------------------------------------------------------------


def agent_state(agent: ContextualAgent, fmt: str) -> dict[str, Any]:
    """A ``weights_only``-loadable dict: format, config, dimensions and the state_dict."""
    return {
        "format": fmt,
        "version": FORMAT_VERSION,
        "config": asdict(agent.config),
        "obs_dim": agent.obs_dim,
        "act_dim": agent.act_dim,
        "state_dict": {k: v.detach().cpu() for k, v in agent.state_dict().items()},
    }


def agent_from_state(
    state: dict[str, Any],
    fmt: str,
    agent_class: type[ContextualAgent],
    config_class: Any,
    device: str | torch.device,
    label: str,
    hint: str,
) -> ContextualAgent:
    """Rebuild an agent written by :func:`agent_state` (``hint``: how to write one)."""
    if state.get("format") != fmt:
        raise ValueError(f"not a {label} checkpoint (no format {fmt!r}); {hint}")
    config = config_class.from_dict(state["config"])
    sd = state["state_dict"]
    agent = agent_class(
        config, state["obs_dim"], state["act_dim"], sd["action_low"], sd["action_high"], device
    )
    agent.load_state_dict(sd)
    agent.eval()
    return agent


def save_agent(agent: ContextualAgent, path: str | Path, fmt: str) -> None:
    """Write the agent atomically (temporary file + rename)."""
    save_checkpoint(path, agent_state(agent, fmt))


def load_agent(
    path: str | Path,
    device: str | torch.device,
    fmt: str,
    agent_class: type[ContextualAgent],
    config_class: Any,
    label: str,
    hint: str,
) -> Any:
    """Read an agent written by :func:`save_agent` (``torch.load(weights_only=True)``)."""
    state = load_checkpoint(path, map_location="cpu")
    return agent_from_state(state, fmt, agent_class, config_class, device, label, hint)


def gaussian_kl(
    mean_p: torch.Tensor, log_std_p: torch.Tensor, mean_q: torch.Tensor, log_std_q: torch.Tensor
) -> torch.Tensor:
    """KL(p || q) of diagonal Gaussians, summed over the last axis."""
    var_ratio = torch.exp(2.0 * (log_std_p - log_std_q))
    mean_term = ((mean_p - mean_q) * torch.exp(-log_std_q)).pow(2)
    return (0.5 * (var_ratio + mean_term - 1.0) - (log_std_p - log_std_q)).sum(-1)


__all__ = [
    "BaselineConfig",
    "BaselineLearner",
    "ContextEncoder",
    "ContextualAgent",
    "GaussianPolicyAgent",
    "TwinCritic",
    "agent_from_state",
    "agent_state",
    "evaluate_agent",
    "frozen_copy",
    "gaussian_kl",
    "infer_test_latents",
    "load_agent",
    "polyak_",
    "save_agent",
    "seed_floats",
    "seeds_per_group",
    "seed_mean",
    "seed_rows",
    "seed_scale",
    "seed_sum",
    "split_context",
    "task_batch",
    "twin_bellman_loss",
    "train_baseline",
    "train_steps",
    "twin_critics",
]
