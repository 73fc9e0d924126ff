"""What the context-based baselines (FOCAL, contextual BCQ) share: the task-context encoder,
the agent's input normalization and latent inference, the meta-test latents, and the
checkpoint format. Each baseline module keeps only its own method.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import torch
from merpo_data.sampler import TaskSampler
from merpo_envs import get_meta_info
from torch import nn

from merpo_agent.action_scaling import from_unit_actions, to_unit_actions
from merpo_agent.transitions import TransitionBatch

FORMAT_VERSION = 1


def mlp(in_features: int, out_features: int, hidden: int, hidden_layers: int) -> nn.Sequential:
    sizes = [in_features] + [hidden] * hidden_layers
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(n_in, n_out), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], out_features))
    return nn.Sequential(*layers)


class ContextEncoder(nn.Module):
    """FOCAL's deterministic encoder: per-transition embeddings q(s, a, r, s'), averaged.

    Input features (..., C, 2 * obs_dim + act_dim + 1) already normalized; output the task
    latent (..., latent_dim), the mean over the C context transitions (so the order of the
    context does not matter).
    """

    def __init__(self, obs_dim: int, act_dim: int, latent_dim: int, hidden: int, layers: int):
        super().__init__()
        self.net = mlp(2 * obs_dim + act_dim + 1, latent_dim, hidden, layers)

    def embed(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.embed(features).mean(dim=-2)


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
    ):
        super().__init__()
        self.config, self.obs_dim, self.act_dim = config, obs_dim, act_dim
        self.register_buffer("action_low", torch.as_tensor(action_low, dtype=torch.float32))
        self.register_buffer("action_high", torch.as_tensor(action_high, dtype=torch.float32))
        self.register_buffer("obs_mean", torch.zeros(obs_dim))
        self.register_buffer("obs_std", torch.ones(obs_dim))
        self.register_buffer("reward_mean", torch.zeros(()))
        self.register_buffer("reward_std", torch.ones(()))

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

    def normalize_obs(self, obs: torch.Tensor) -> torch.Tensor:
        return (obs - self.obs_mean) / self.obs_std

    def unit_actions(self, env_actions: torch.Tensor) -> torch.Tensor:
        return to_unit_actions(env_actions, self.action_low, self.action_high)

    def env_actions(self, unit_actions: torch.Tensor) -> torch.Tensor:
        return from_unit_actions(unit_actions, self.action_low, self.action_high)

    def context_features(self, context: TransitionBatch) -> torch.Tensor:
        """(..., C, 2 * obs_dim + act_dim + 1): normalized s, unit a, normalized r, s'."""
        reward = ((context.rewards - self.reward_mean) / self.reward_std).unsqueeze(-1)
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


def check_sampler_device(sampler: TaskSampler, device: str | torch.device) -> torch.device:
    """The sampler's device, or a one-line error when training was asked elsewhere."""
    device = torch.device(device)
    if device.type != sampler.device.type:
        raise ValueError(
            f"the TaskSampler lives on {sampler.device} but training was asked on {device}; "
            f"build the sampler with device={str(device)!r}"
        )
    return sampler.device


def task_batches(
    sampler: TaskSampler, task_batch_size: int | None, steps: int, generator: torch.Generator
) -> Iterator[tuple[int, torch.Tensor]]:
    """``(step, task_indices)`` for steps 1..steps: a batch of ``task_batch_size`` distinct
    tasks drawn on the device each step (all tasks when None or when it covers them)."""
    num_tasks = sampler.num_tasks
    size = num_tasks if task_batch_size is None else min(task_batch_size, num_tasks)
    all_tasks = torch.arange(num_tasks, device=sampler.device)
    for step in range(1, steps + 1):
        if size < num_tasks:
            yield step, torch.randperm(num_tasks, device=sampler.device, generator=generator)[:size]
        else:
            yield step, all_tasks


def report_progress(
    step: int,
    steps: int,
    log_every: int,
    metrics: dict[str, torch.Tensor],
    agent: ContextualAgent,
    log_fn: Callable[[int, dict[str, float]], None] | None,
    progress_fn: Callable[[int, Any], None] | None,
) -> None:
    """Every ``log_every`` steps and after the last: metrics to host (the only host reads of
    the training loop), then ``log_fn`` and ``progress_fn``."""
    if step % log_every == 0 or step == steps:
        if log_fn is not None:
            log_fn(step, {k: float(v) for k, v in metrics.items()})
        if progress_fn is not None:
            progress_fn(step, agent)


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
