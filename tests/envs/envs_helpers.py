"""Helpers shared by the merpo-envs tests (a plain module: test files import it by name)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

POINT = "merpo/PointRobotWind-v0"
CHEETAH = "merpo/HalfCheetahFwdBack-v0"
ANT = "merpo/AntFwdBack-v0"
WALKER = "merpo/Walker2dParams-v0"
ALL_IDS = (POINT, CHEETAH, ANT, WALKER)
MUJOCO_IDS = (CHEETAH, ANT, WALKER)


def rollout(env: gym.Env, seed: int, steps: int, actions: np.ndarray | None = None) -> dict:
    """Step ``env`` from ``reset(seed=seed)`` with seeded random (or given) actions.

    Continues through episode ends with a fresh reset (seed + episode number), and returns
    stacked arrays: obs, actions, rewards, next_obs, terminated, truncated.
    """
    rng = np.random.default_rng(seed)
    space = env.action_space
    obs, _ = env.reset(seed=seed)
    out = {k: [] for k in ("obs", "actions", "rewards", "next_obs", "terminated", "truncated")}
    episode = 0
    for i in range(steps):
        if actions is None:
            action = rng.uniform(space.low, space.high).astype(space.dtype)
        else:
            action = actions[i]
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for key, value in zip(
            out, (obs, action, reward, next_obs, terminated, truncated), strict=True
        ):
            out[key].append(value)
        obs = next_obs
        if terminated or truncated:
            episode += 1
            obs, _ = env.reset(seed=seed + episode)
    return {k: np.asarray(v) for k, v in out.items()}
