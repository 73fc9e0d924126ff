"""Vector envs over tasks: one sub-env per task of a split or a task list.

``merpo_envs.make_vec("merpo/PointRobotWind-v0", tasks="train")`` gives a
``gymnasium.vector.SyncVectorEnv`` of the 40 training tasks (sub-env ``i`` runs
``tasks[i]``; ``infos["task"]`` says which). Every merpo id also registers
:func:`vector_entry_point`, so ``gymnasium.make_vec(env_id, tasks="test")`` does the same.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

from merpo_envs.meta_info import get_meta_info

SPLITS = ("train", "test", "all")
VECTORIZATION_MODES = ("sync", "async")


def resolve_tasks(env_id: str, tasks: str | int | Sequence[int]) -> tuple[int, ...]:
    """A split name (``"train"``, ``"test"``, ``"all"``), one task or a task list -> tasks."""
    info = get_meta_info(env_id)
    if isinstance(tasks, str):
        split = {"train": info.train_tasks, "test": info.test_tasks, "all": info.tasks}
        if tasks not in split:
            raise ValueError(
                f"{env_id}: unknown split {tasks!r}; give one of {', '.join(SPLITS)} "
                "or a list of task indices"
            )
        return tuple(split[tasks])
    if isinstance(tasks, int | np.integer) and not isinstance(tasks, bool):
        tasks = [tasks]
    resolved = tuple(info.check_task(t) for t in tasks)
    if not resolved:
        raise ValueError(f"{env_id}: tasks is empty; give a split name or at least one task")
    return resolved


def make_vec(
    env_id: str,
    tasks: str | int | Sequence[int] = "train",
    vectorization_mode: str = "sync",
    wrappers: Sequence[Callable[[gym.Env], gym.Env]] = (),
    vector_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> gym.vector.VectorEnv:
    """A vector env with one sub-env per task of ``tasks`` (a split name or task indices).

    ``vectorization_mode`` is ``"sync"`` (one process) or ``"async"`` (one process per
    sub-env); ``wrappers`` wrap each sub-env; ``kwargs`` go to every sub-env's
    ``gymnasium.make`` (``render_mode``, ``max_episode_steps``, ...).
    """
    if "task" in kwargs:
        raise TypeError(f"{env_id}: make_vec takes tasks= (one per sub-env), not task=")
    if vectorization_mode not in VECTORIZATION_MODES:
        raise ValueError(
            f"unknown vectorization_mode {vectorization_mode!r}; valid modes are "
            f"{', '.join(VECTORIZATION_MODES)}"
        )
    fns = [
        functools.partial(_make_one, env_id, task, tuple(wrappers), kwargs)
        for task in resolve_tasks(env_id, tasks)
    ]
    if vectorization_mode == "sync":
        return gym.vector.SyncVectorEnv(fns, **(vector_kwargs or {}))
    return gym.vector.AsyncVectorEnv(fns, **(vector_kwargs or {}))


def _make_one(
    env_id: str, task: int, wrappers: tuple[Callable[[gym.Env], gym.Env], ...], kwargs: dict
) -> gym.Env:
    env = gym.make(env_id, task=task, **kwargs)
    for wrapper in wrappers:
        env = wrapper(env)
    return env


def vector_entry_point(env_id: str) -> Callable[..., gym.vector.VectorEnv]:
    """The ``vector_entry_point`` of ``env_id``: what ``gymnasium.make_vec(env_id, ...)`` calls.

    ``tasks`` picks the sub-envs' tasks as in :func:`make_vec`; without it there are
    ``num_envs`` sub-envs of ``task`` (the registered default, or the one given).
    """
    return functools.partial(_from_make_vec, env_id)


def _from_make_vec(
    env_id: str,
    num_envs: int = 1,
    tasks: str | int | Sequence[int] | None = None,
    task: int | None = None,
    **kwargs: Any,
) -> gym.vector.VectorEnv:
    if tasks is None:
        tasks = [get_meta_info(env_id).train_tasks[0] if task is None else task] * num_envs
    elif num_envs not in (1, len(resolve_tasks(env_id, tasks))):
        raise ValueError(
            f"{env_id}: num_envs={num_envs} but tasks= gives "
            f"{len(resolve_tasks(env_id, tasks))} sub-envs (one per task); drop num_envs"
        )
    return make_vec(env_id, tasks=tasks, **kwargs)


# The registered ``vector_entry_point`` strings name these ("merpo_envs.vector:<name>").
make_vec_point_robot_wind = vector_entry_point("merpo/PointRobotWind-v0")
make_vec_half_cheetah_fwd_back = vector_entry_point("merpo/HalfCheetahFwdBack-v0")
make_vec_ant_fwd_back = vector_entry_point("merpo/AntFwdBack-v0")
make_vec_walker_2d_params = vector_entry_point("merpo/Walker2dParams-v0")
