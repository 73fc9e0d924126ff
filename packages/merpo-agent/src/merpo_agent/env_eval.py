"""Return of per-task policies in the real environments (Gymnasium vector env over tasks x seeds).

One :class:`gymnasium.vector.SyncVectorEnv` holds ``episodes`` copies of every task
(``gymnasium.make(env_id, task=j)``), ordered task-major, so the observations of all tasks
and seeds reshape to ``(T, episodes, obs_dim)`` and one batched policy call acts for all of
them. Each copy runs one episode from ``reset(seed=seed + i)``; rewards after an episode ends
are masked (fixed shapes, no Python loop over tasks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gymnasium as gym
import merpo_envs  # noqa: F401  (registers the merpo/* ids)
import numpy as np
import torch
from merpo_envs import get_meta_info

# policy(obs (T, S, obs_dim) float32 on device) -> action in [-1, 1], shape (T, S, act_dim)
PolicyFn = Callable[[torch.Tensor], torch.Tensor]


def make_task_vector_env(env_id: str, tasks: Sequence[int], episodes: int) -> gym.vector.VectorEnv:
    fns = [
        (lambda task=task: gym.make(env_id, task=int(task)))
        for task in tasks
        for _ in range(episodes)
    ]
    return gym.vector.SyncVectorEnv(fns)


class TaskReturns(dict):
    """``{task: mean return}`` that also keeps every episode's return, ``episodes``:
    ``{task: array (episodes,)}`` (for the spread of a meta-test, ``merpo_agent.scores``)."""

    def __init__(self, means: dict[int, float], episodes: dict[int, np.ndarray]):
        super().__init__(means)
        self.episodes = episodes


@torch.no_grad()
def evaluate_in_env(
    env_id: str,
    tasks: Sequence[int],
    policies: dict[str, PolicyFn],
    episodes: int,
    seed: int,
    device: str | torch.device,
    per_episode: bool = False,
) -> dict[str, np.ndarray]:
    """Mean undiscounted return per task of each named policy: ``{name: array (T,)}``; with
    ``per_episode`` every episode's return, ``{name: array (T, episodes)}``.

    ``policies`` maps a name to a batched deterministic policy; each is run on the same
    seeds. Actions in [-1, 1] are rescaled to the env's action box.
    """
    info = get_meta_info(env_id)
    num_tasks = len(tasks)
    envs = make_task_vector_env(env_id, tasks, episodes)
    try:
        low = np.asarray(envs.single_action_space.low, dtype=np.float64)
        high = np.asarray(envs.single_action_space.high, dtype=np.float64)
        results: dict[str, np.ndarray] = {}
        for name, policy in policies.items():
            obs, _ = envs.reset(seed=[seed + i for i in range(num_tasks * episodes)])
            returns = np.zeros(num_tasks * episodes)
            alive = np.ones(num_tasks * episodes, dtype=bool)
            for _ in range(info.max_episode_steps):
                obs_t = torch.as_tensor(obs, dtype=torch.float32, device=device)
                action = policy(obs_t.reshape(num_tasks, episodes, -1))
                action = action.reshape(num_tasks * episodes, -1).clamp(-1.0, 1.0)
                action_np = action.double().cpu().numpy()
                env_action = low + (action_np + 1.0) * 0.5 * (high - low)
                obs, reward, terminated, truncated, _ = envs.step(env_action)
                returns += np.where(alive, reward, 0.0)
                alive &= ~(terminated | truncated)
                if not alive.any():
                    break
            returns = returns.reshape(num_tasks, episodes)
            results[name] = returns if per_episode else returns.mean(axis=1)
        return results
    finally:
        envs.close()
