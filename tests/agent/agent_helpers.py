"""Helpers shared by the merpo-agent tests (a plain module: test files import it by name)."""

from __future__ import annotations

import torch
from merpo_agent.rac_config import RACConfig
from merpo_agent.transitions import TransitionBatch

# The devices a test runs on: the CPU always, CUDA where there is one.
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def small_config(algo: str = "merpo", **overrides) -> RACConfig:
    """A RAC config with tiny networks and batches (fast on a CPU), for ``algo``."""
    base = dict(hidden=16, hidden_layers=2, batch_size=16, critic_lr=3e-3, actor_lr=3e-3)
    return RACConfig.for_algo(algo, **{**base, **overrides})


def random_batch(
    t: int, n: int, g: torch.Generator, obs_dim: int = 3, act_dim: int = 2, device: str = "cpu"
) -> TransitionBatch:
    """``(t, n, ...)`` random transitions (about 20% terminal), drawn from ``g`` on the CPU."""
    batch = TransitionBatch(
        observations=torch.randn(t, n, obs_dim, generator=g),
        actions=torch.rand(t, n, act_dim, generator=g) * 2 - 1,
        rewards=torch.randn(t, n, generator=g),
        next_observations=torch.randn(t, n, obs_dim, generator=g),
        terminations=(torch.rand(t, n, generator=g) < 0.2).float(),
    )
    return TransitionBatch(*(x.to(device) for x in batch))


def wind_context(winds: torch.Tensor, size: int, generator: torch.Generator) -> TransitionBatch:
    """Point-Robot-Wind-like transitions (T, size, ...): s' = s + a + wind_t."""
    t = winds.shape[0]
    obs = torch.rand(t, size, 2, generator=generator) * 2 - 0.5
    act = (torch.rand(t, size, 2, generator=generator) * 2 - 1) * 0.1
    nxt = obs + act + winds[:, None, :]
    reward = -(nxt - torch.tensor([1.0, 0.0])).norm(dim=-1)
    return TransitionBatch(obs, act, reward, nxt, torch.zeros(t, size))
