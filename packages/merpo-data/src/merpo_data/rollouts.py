"""Whole-episode rollouts of many tasks at once through one Gymnasium vector env.

Sub-env ``i`` of a task vector env runs task ``tasks[i // envs_per_task]``, so a flat
``(T * K, ...)`` array from the vector env reshapes to ``(T, K, ...)`` with the task axis
first, which is what the stacked networks take. Each step is one call into the vector env
and one batched policy call: no Python loop over tasks per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import gymnasium as gym
import merpo_envs  # noqa: F401  (registers the merpo ids with Gymnasium)
import numpy as np


def make_task_vector_env(
    env_id: str, tasks: Sequence[int], envs_per_task: int
) -> gym.vector.VectorEnv:
    """A SyncVectorEnv with ``envs_per_task`` sub-envs per task, task-major.

    Autoreset is disabled: the caller resets finished sub-envs with ``reset_mask``, so a
    step's observation is always the true next observation (no final-obs bookkeeping).
    """

    def make(task: int) -> Callable[[], gym.Env]:
        return lambda: gym.make(env_id, task=task)

    fns = [make(task) for task in tasks for _ in range(envs_per_task)]
    return gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.DISABLED)


@dataclass
class Episode:
    """One whole episode: ``observations`` has one row more than the other arrays."""

    observations: np.ndarray  # (L + 1, obs_dim)
    actions: np.ndarray  # (L, act_dim), env units
    rewards: np.ndarray  # (L,)
    terminations: np.ndarray  # (L,) bool
    truncations: np.ndarray  # (L,) bool
    # The numeric step infos (e.g. Point-Robot-Wind's sparse_reward), each (L, ...):
    # row t is the info of step t, aligned with rewards[t] (reset infos are not kept).
    infos: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum())


# act_fn(observations (T, K, obs_dim) float32) -> actions (T, K, act_dim) in env units
ActFn = Callable[[np.ndarray], np.ndarray]


def collect_episodes(
    vec_env: gym.vector.VectorEnv,
    num_tasks: int,
    act_fn: ActFn,
    episodes_per_task: int,
    seed: int,
) -> list[list[Episode]]:
    """Roll ``act_fn`` until every task has ``episodes_per_task`` whole episodes.

    Episodes end on termination or truncation (kept apart in the arrays). Sub-envs of a
    task share the quota; a sub-env that finishes more episodes than needed has the extra
    ones dropped, so the result does not depend on episode lengths. Returns per task a
    list of exactly ``episodes_per_task`` episodes.
    """
    num_envs = vec_env.num_envs
    envs_per_task = num_envs // num_tasks
    per_env = -(-episodes_per_task // envs_per_task)  # ceil
    obs, _ = vec_env.reset(seed=[seed + i for i in range(num_envs)])
    steps_obs, steps_act, steps_rew, steps_term, steps_trunc, steps_next = [], [], [], [], [], []
    steps_info: list[dict[str, np.ndarray]] = []
    finished = np.zeros(num_envs, dtype=np.int64)
    while (finished < per_env).any():
        flat_obs = np.asarray(obs, dtype=np.float32)
        act = act_fn(flat_obs.reshape(num_tasks, envs_per_task, -1)).reshape(num_envs, -1)
        next_obs, rew, term, trunc, info = vec_env.step(act)
        done = np.logical_or(term, trunc)
        steps_info.append(_numeric_infos(info, num_envs))
        steps_obs.append(np.array(obs))
        steps_act.append(np.array(act))
        steps_rew.append(np.asarray(rew, dtype=np.float64))
        steps_term.append(np.asarray(term, dtype=bool))
        steps_trunc.append(np.asarray(trunc, dtype=bool))
        steps_next.append(np.array(next_obs))
        finished += done
        obs = next_obs
        if done.any():
            obs, _ = vec_env.reset(options={"reset_mask": done})

    arrays = [
        np.stack(x, axis=1)
        for x in (steps_obs, steps_act, steps_rew, steps_term, steps_trunc, steps_next)
    ]
    all_obs, all_act, all_rew, all_term, all_trunc, all_next = arrays  # (num_envs, steps, ...)
    info_keys = set.intersection(*(set(i) for i in steps_info)) if steps_info else set()
    all_info = {k: np.stack([i[k] for i in steps_info], axis=1) for k in sorted(info_keys)}
    episodes: list[list[Episode]] = [[] for _ in range(num_tasks)]
    for env_index in range(num_envs):
        task_pos = env_index // envs_per_task
        ends = np.flatnonzero(all_term[env_index] | all_trunc[env_index])
        start = 0
        for end in ends[:per_env]:
            if len(episodes[task_pos]) < episodes_per_task:
                sl = slice(start, end + 1)
                episodes[task_pos].append(
                    Episode(
                        observations=np.concatenate(
                            [all_obs[env_index, sl], all_next[env_index, end : end + 1]]
                        ),
                        actions=all_act[env_index, sl],
                        rewards=all_rew[env_index, sl],
                        terminations=all_term[env_index, sl],
                        truncations=all_trunc[env_index, sl],
                        infos={k: v[env_index, sl] for k, v in all_info.items()},
                    )
                )
            start = end + 1
    return episodes


def _numeric_infos(info: dict, num_envs: int) -> dict[str, np.ndarray]:
    """The vector env's step infos that Minari can store as arrays: numbers (or numeric
    arrays) set for every sub-env; Gymnasium's ``_key`` masks and anything else dropped."""
    out = {}
    for key, value in info.items():
        if key.startswith("_") or isinstance(value, dict):
            continue
        mask = info.get(f"_{key}")
        array = np.asarray(value)
        if array.dtype.kind in "biuf" and array.shape[:1] == (num_envs,):
            if mask is None or np.all(mask):
                out[key] = array.copy()
    return out


def uniform_act_fn(action_space: gym.spaces.Box, seed: int) -> ActFn:
    """The ``random`` behavior policy: actions uniform in the env's action box."""
    rng = np.random.default_rng(seed)
    low, high = action_space.low, action_space.high

    def act(obs: np.ndarray) -> np.ndarray:
        return rng.uniform(low, high, size=(*obs.shape[:-1], low.shape[0])).astype(np.float32)

    return act
