"""Task bookkeeping shared by every merpo env: ``task``, ``task_params``, ``set_task``.

A merpo env is one task of a fixed task list (its :class:`~merpo_envs.meta_info.MetaEnvInfo`).
This mixin holds the current task, validates constructor keywords and actions with
one-line errors that name the valid values, and keeps the Gymnasium spec's ``task`` a
plain ``int`` (Minari stores the spec as JSON, which an ``np.int64`` would break).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium.envs.registration import EnvSpec

from merpo_envs.meta_info import MetaEnvInfo


class TaskEnvMixin:
    """Mixin for a ``gymnasium.Env`` that is one task of a meta-environment.

    Put it first in the bases (``class MyEnv(TaskEnvMixin, gym.Env)``); call
    :meth:`_init_task` at the start of ``__init__`` and :meth:`_start_pending_task` at the
    start of ``reset``.
    """

    info: MetaEnvInfo
    _task: int
    _next_task: int
    _spec: EnvSpec | None = None

    def _init_task(
        self,
        info: MetaEnvInfo,
        task: Any,
        unknown_kwargs: Mapping[str, Any],
        valid: tuple[str, ...],
    ) -> None:
        if unknown_kwargs:
            raise TypeError(
                f"{info.env_id}: unknown keyword argument(s) {', '.join(sorted(unknown_kwargs))}; "
                f"valid keyword arguments are {', '.join(valid)}"
            )
        self.info = info
        self._task = info.check_task(task)
        self._next_task = self._task

    @property
    def task(self) -> int:
        """The task the current episode runs (an index into ``info.tasks``)."""
        return self._task

    @property
    def task_params(self) -> dict[str, Any]:
        """The current task's parameters as plain data (see the env's docstring)."""
        return self.info.task_params(self._task)

    def set_task(self, task: int) -> None:
        """Switch to ``task``; it takes effect at the next ``reset`` (PEARL-style switching)."""
        self._next_task = self.info.check_task(task)

    def _start_pending_task(self) -> bool:
        """Make the task chosen by :meth:`set_task` current; True when it changed."""
        changed = self._next_task != self._task
        self._task = self._next_task
        return changed

    def _check_action(self, action: Any) -> np.ndarray:
        """The action as a float64 array, or a one-line ``ValueError`` naming the expected box."""
        space = self.action_space  # type: ignore[attr-defined]
        try:
            array = np.asarray(action, dtype=np.float64)
        except (TypeError, ValueError):
            array = None
        if array is None or array.shape != space.shape or not np.all(np.isfinite(array)):
            raise ValueError(
                f"{self.info.env_id}: action must be {space.shape[0]} finite numbers in "
                f"[{space.low.min():g}, {space.high.max():g}], got {action!r}"
            )
        return array

    # ``gymnasium.make`` assigns ``env.unwrapped.spec`` with the kwargs it was given; keep the
    # task a plain int there so the spec stays JSON-serialisable (Minari stores it).
    @property
    def spec(self) -> EnvSpec | None:
        return self._spec

    @spec.setter
    def spec(self, spec: EnvSpec | None) -> None:
        if spec is not None and "task" in spec.kwargs:
            task = spec.kwargs["task"]
            if isinstance(task, np.integer):
                spec = dataclasses.replace(spec, kwargs={**spec.kwargs, "task": int(task)})
        self._spec = spec
