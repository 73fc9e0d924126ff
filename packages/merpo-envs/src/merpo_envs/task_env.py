"""Task bookkeeping shared by every merpo env: ``task``, ``task_params``, ``set_task``.

A merpo env is one task of a fixed task list (its :class:`~merpo_envs.meta_info.MetaEnvInfo`).
:class:`TaskEnvMixin` holds the current task, validates constructor keywords and actions
with one-line errors that name the valid values, and keeps the Gymnasium spec's ``task`` a
plain ``int`` (Minari stores the spec as JSON, which an ``np.int64`` would break).
:class:`MujocoTaskEnvMixin` adds what the Gymnasium-MuJoCo-based envs share: the
constructor (task plus render arguments), pickling, and ``reset``/``step`` that start the
pending task and put ``task`` in ``info``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import numpy as np
from gymnasium.envs.mujoco.mujoco_env import DEFAULT_SIZE
from gymnasium.envs.registration import EnvSpec
from gymnasium.utils import EzPickle

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
        if "tasks" in unknown_kwargs:
            raise TypeError(
                f"{info.env_id}: tasks= makes one sub-env per task; use "
                f"merpo_envs.make_vec({info.env_id!r}, tasks=...) (or gymnasium.make_vec "
                "without vectorization_mode), or task= for one env"
            )
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
        """Switch to ``task``; it takes effect at the next ``reset`` (PEARL-style switching).

        The env then describes itself as an env of ``task``: ``spec.kwargs["task"]`` says
        so, and a pickled or ``copy.deepcopy``-ed env runs ``task`` from its first reset.
        The wrappers of ``gymnasium.make`` cache the spec at its first read and this env
        cannot reach them: switch a wrapped env with :func:`set_task` (``merpo_envs.set_task
        (env, task)``), whose ``env.spec`` then follows too.
        """
        self._next_task = self.info.check_task(task)
        if self._spec is not None and "task" in self._spec.kwargs:
            self._spec = dataclasses.replace(
                self._spec, kwargs={**self._spec.kwargs, "task": self._next_task}
            )
        pickled = getattr(self, "_ezpickle_kwargs", None)
        if pickled is not None and "task" in pickled:
            pickled["task"] = self._next_task

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


def set_task(env: Any, task: int) -> None:
    """Switch a merpo env, wrapped or not, to ``task`` at its next reset, and make every
    wrapper's ``spec`` follow (Gymnasium wrappers cache the spec at their first read, so
    without this ``gymnasium.make(env.spec)`` would rebuild the old task)."""
    unwrapped = env.unwrapped
    if not isinstance(unwrapped, TaskEnvMixin):
        raise TypeError(f"{type(unwrapped).__name__} is not a merpo env; set_task needs one")
    unwrapped.set_task(task)
    layer = env
    while layer is not unwrapped:
        if hasattr(layer, "_cached_spec"):
            layer._cached_spec = None  # read again from the env below, with the new task
        layer = layer.env


# The constructor keywords of every MuJoCo merpo env, in signature order.
MUJOCO_VALID_KWARGS = ("task", "render_mode", "width", "height", "camera_id", "camera_name")
@contextlib.contextmanager
def _without_settotalmass_deprecation() -> Iterator[None]:
    """Compile a Gymnasium MuJoCo model without MuJoCo 4's ``settotalmass`` deprecation.

    Gymnasium's half_cheetah.xml sets ``settotalmass``; MuJoCo 4.0 still applies it (the
    masses are the ones the env was verified on) but warns on every env built, on stderr
    and into a ``MUJOCO_LOG.TXT`` in the working directory. That one warning is dropped;
    any other MuJoCo warning meanwhile goes to stderr (not into a file), then the previous
    handler is restored.
    """
    import mujoco

    def handler(message: str) -> None:
        if "'settotalmass' is deprecated" not in message:
            print(f"MuJoCo warning: {message}", file=sys.stderr)

    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(handler)
    try:
        yield
    finally:
        mujoco.set_mju_user_warning(previous)


# The default ``task`` of every MuJoCo merpo env: its first train task (checked per class).
DEFAULT_TASK = 0


class MujocoTaskEnvMixin(TaskEnvMixin):
    """Mixin for a Gymnasium MuJoCo env (``MujocoEnv`` subclass) that is one task of a
    meta-environment.

    Put it first in the bases (``class MyEnv(MujocoTaskEnvMixin, HalfCheetahEnv)``) and set
    the class attributes ``_meta_info`` (the env's :class:`MetaEnvInfo`) and
    ``_base_env_kwargs`` (keywords for the MuJoCo base class's ``__init__`` other than the
    render arguments). Override :meth:`_on_task_start` to apply a task to the simulation;
    it runs at the end of ``__init__`` and at every ``reset``.
    """

    _meta_info: ClassVar[MetaEnvInfo]
    _base_env_kwargs: ClassVar[Mapping[str, Any]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        info = cls.__dict__.get("_meta_info")
        if info is not None and info.train_tasks[0] != DEFAULT_TASK:
            raise TypeError(
                f"{cls.__name__}: the default task {DEFAULT_TASK} must be the first train task "
                f"of {info.env_id} ({info.train_tasks[0]}); reorder train_tasks"
            )

    def __init__(
        self,
        task: int = DEFAULT_TASK,
        render_mode: str | None = None,
        width: int = DEFAULT_SIZE,
        height: int = DEFAULT_SIZE,
        camera_id: int | None = None,
        camera_name: str | None = None,
        **unknown_kwargs: Any,
    ):
        self._init_task(self._meta_info, task, unknown_kwargs, MUJOCO_VALID_KWARGS)
        render_kwargs = dict(
            render_mode=render_mode,
            width=width,
            height=height,
            camera_id=camera_id,
            camera_name=camera_name,
        )
        with _without_settotalmass_deprecation():
            super().__init__(**self._base_env_kwargs, **render_kwargs)
        # Pickling must rebuild this class from its own arguments, not the MuJoCo base's.
        EzPickle.__init__(self, task=self._task, **render_kwargs)
        self._on_task_start(self._task, changed=True)

    # EzPickle rebuilds the env from its constructor arguments (``task`` follows set_task);
    # the spec ``gymnasium.make`` gave it is carried along, so a copy keeps its id and kwargs.
    def __getstate__(self) -> dict[str, Any]:
        return {**EzPickle.__getstate__(self), "_merpo_spec": self._spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        spec = state.pop("_merpo_spec", None)
        EzPickle.__setstate__(self, state)
        self._spec = spec

    def _on_task_start(self, task: int, changed: bool) -> None:
        """Apply ``task`` to the simulation; ``changed`` is False when it ran the last
        episode too. Called at the end of ``__init__`` (``changed=True``) and at every
        ``reset`` before the base class's reset."""

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        changed = self._start_pending_task()
        self._on_task_start(self._task, changed)
        obs, info = super().reset(seed=seed, options=options)
        info["task"] = self._task
        return obs, self._machine_independent(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = super().step(self._check_action(action))
        info["task"] = self._task
        return obs, reward, terminated, truncated, self._machine_independent(info)

    def _machine_independent(self, info: dict[str, Any]) -> dict[str, Any]:
        """``info`` with Gymnasium's ``distance_from_origin`` (Ant-v5) recomputed in plain
        float arithmetic: Gymnasium's ``np.linalg.norm`` is a BLAS dot, whose kernel, and
        so the last bit of the value that datasets store, depends on the CPU."""
        if "distance_from_origin" in info:
            x, y = (float(v) for v in self.data.qpos[0:2])  # type: ignore[attr-defined]
            info["distance_from_origin"] = math.sqrt(x * x + y * y)
        return info
