"""What other code needs to know about a meta-environment without making it.

Every merpo env id has one :class:`MetaEnvInfo`: its task list and train/test split, each
task's parameters as plain data, and its termination function as a pure function of
batched ``(obs, act, next_obs)`` arrays (numpy and torch), for model-based rollouts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MetaEnvInfo:
    """Static description of one meta-environment (one registered env id).

    Attributes:
        env_id: the Gymnasium id, e.g. ``"merpo/PointRobotWind-v0"``.
        slug: the dataset-name form, e.g. ``"point-robot-wind"`` (Minari ids use it).
        num_tasks: length of the fixed, seeded task list; tasks are ``0 .. num_tasks - 1``.
        train_tasks / test_tasks: the meta-train and meta-test split (the paper, Appendix A.1).
        max_episode_steps: the horizon (episodes are truncated there).
        obs_dim / act_dim: flat observation and action sizes.
        params_fn: task index -> that task's parameters as plain data (floats, lists).
        terminated_np: batched termination ``(obs, act, next_obs) -> bool array (...,)``.
        terminated_torch: the same in torch (same device as the inputs).
    """

    env_id: str
    slug: str
    num_tasks: int
    train_tasks: tuple[int, ...]
    test_tasks: tuple[int, ...]
    max_episode_steps: int
    obs_dim: int
    act_dim: int
    params_fn: Callable[[int], dict[str, Any]]
    terminated_np: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
    terminated_torch: Callable[[Any, Any, Any], Any]

    @property
    def tasks(self) -> tuple[int, ...]:
        return tuple(range(self.num_tasks))

    def check_task(self, task: Any) -> int:
        """Return ``task`` as a plain int, or raise a one-line error naming the valid values."""
        if isinstance(task, bool) or not isinstance(task, int | np.integer):
            raise TypeError(
                f"{self.env_id}: task must be an int in 0..{self.num_tasks - 1}, "
                f"got {task!r} ({type(task).__name__})"
            )
        if not 0 <= int(task) < self.num_tasks:
            raise ValueError(
                f"{self.env_id}: task {int(task)} is out of range; valid tasks are "
                f"0..{self.num_tasks - 1} (train {format_tasks(self.train_tasks)}, "
                f"test {format_tasks(self.test_tasks)})"
            )
        return int(task)

    def task_params(self, task: int) -> dict[str, Any]:
        """Parameters of ``task`` as plain JSON-serialisable data."""
        return self.params_fn(self.check_task(task))


def format_tasks(tasks) -> str:
    """Tasks in the ``--tasks`` form: runs of consecutive tasks as ranges, e.g. ``0-9,40-49``.

    ``merpo_data.parse_tasks`` reads it back (sorted, without duplicates).
    """
    ordered = sorted({int(t) for t in tasks})
    parts: list[str] = []
    start = prev = None
    for task in [*ordered, None]:
        if prev is not None and task == prev + 1:
            prev = task
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = task
    return ",".join(parts)


_REGISTRY: dict[str, MetaEnvInfo] = {}


def register_meta_info(info: MetaEnvInfo) -> None:
    _REGISTRY[info.env_id] = info


def get_meta_info(env_id: str) -> MetaEnvInfo:
    """The :class:`MetaEnvInfo` of a merpo env id (``"merpo/..."``; ``"merpo_envs:"`` prefix ok)."""
    key = env_id.split(":", 1)[1] if env_id.startswith("merpo_envs:") else env_id
    if key not in _REGISTRY:
        raise ValueError(f"unknown env id {env_id!r}; valid ids: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[key]


def env_ids() -> tuple[str, ...]:
    return tuple(sorted(_REGISTRY))
