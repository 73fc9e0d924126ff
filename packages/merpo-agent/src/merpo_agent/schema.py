"""What every algorithm's run shares: its data, its budget, its evaluation (torch-free).

MerPO (``config.Config``) and each baseline (``baselines.run``) nest the same three
sections beside ``env``, ``algo``, ``preset``, ``seed`` and ``device``, and keep only their
own method settings in a section of their own (MerPO: ``dynamics``, ``rac``, ``rollout``,
``meta``, ``test``; a baseline: ``method``):

- ``data``: :class:`DataConfig`: quality, merpo-data preset, training and test tasks;
- ``run``: :class:`RunConfig`: the budget in gradient steps of the actor and critic
  (MerPO: meta-iterations x ``meta.inner_steps``, Alg. 2), checkpoints and logging;
- ``eval``: :class:`EvalConfig`: real-env episodes per test task and how often.

A preset name means the same tasks and data for every algorithm (:func:`preset_data`).
Keys of the former schemas are one-line errors naming their new key (:func:`check_key`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from merpo_agent.overrides import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """Datasets of the run (``merpo_data.TaskSampler``)."""

    quality: str = "medium"
    # The merpo-data preset that built the datasets: "default", or "test" (the cheap test
    # datasets, ids task-NN-<quality>-test-v0; the smoke preset reads them).
    preset: str = "default"
    # None = the env's own train / test split (App. A.1); a subset is fine (quickstart).
    # ``--set data.train_tasks=0-34`` takes merpo-data's ranges; an empty list is an error.
    train_tasks: tuple[int, ...] | None = None
    test_tasks: tuple[int, ...] | None = None
    # Build missing datasets with merpo_data.generate instead of stopping with the command.
    build_missing: bool = False

    def __post_init__(self) -> None:
        from merpo_data import QUALITIES
        from merpo_data.ids import check_preset

        if self.quality not in QUALITIES:
            raise ValueError(f"quality {self.quality!r} is not one of {', '.join(QUALITIES)}")
        check_preset(self.preset)
        for name in ("train_tasks", "test_tasks"):
            if getattr(self, name) == ():
                raise ValueError(
                    f"data.{name} is empty; give tasks (e.g. 0-34), or leave it out for the "
                    "env's whole split"
                )


@dataclass(frozen=True)
class RunConfig:
    """The budget and bookkeeping, all counted in gradient steps of the actor and critic."""

    steps: int = 20_000  # MerPO: meta-iterations x meta.inner_steps (Alg. 2 lines 9-18)
    checkpoint_every: int = 1_000
    log_every: int = 100  # metrics are read to the host once per this many steps

    def __post_init__(self) -> None:
        for name in ("steps", "checkpoint_every", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"run.{name}={getattr(self, name)} must be >= 1")


@dataclass(frozen=True)
class EvalConfig:
    """The meta-test in the real env (§4.3): episodes per test task and how often."""

    episodes: int = 4  # real-env episodes (seeds) per task (the paper: 4 random seeds)
    every: int = 1_000  # gradient steps between meta-tests (0: only at the end)

    def __post_init__(self) -> None:
        if self.episodes < 1:
            raise ValueError(f"eval.episodes={self.episodes} must be >= 1")
        if self.every < 0:
            raise ValueError(f"eval.every={self.every} must be >= 0 (0: only at the end)")


SHARED_SECTIONS = ("data", "run", "eval")
TASK_KEYS = ("data.train_tasks", "data.test_tasks")

# Keys of the former schemas -> their key now (MerPO's, then the baselines' flat ones).
RENAMED_KEYS: dict[str, str] = {
    "meta.iterations": "run.steps (gradient steps: meta-iterations x meta.inner_steps)",
    "meta.eval_every": "eval.every (in gradient steps)",
    "meta.log_every": "run.log_every (in gradient steps)",
    "meta.checkpoint_every": "run.checkpoint_every (in gradient steps)",
    "test.episodes": "eval.episodes",
    "steps": "run.steps",
    "quality": "data.quality",
    "data_preset": "data.preset",
    "run.data_preset": "data.preset",
    "train_tasks": "data.train_tasks",
    "test_tasks": "data.test_tasks",
    "run.quality": "data.quality",
    "run.train_tasks": "data.train_tasks",
    "run.test_tasks": "data.test_tasks",
    "eval_episodes": "eval.episodes",
    "run.eval_episodes": "eval.episodes",
    "eval_every": "eval.every",
    "run.eval_every": "eval.every",
    "checkpoint_every": "run.checkpoint_every",
    "log_every": "run.log_every",
    "method.log_every": "run.log_every",
}


def check_key(key: str) -> None:
    """One line naming the new key for a key of the former schemas."""
    if key in RENAMED_KEYS:
        raise ConfigError(f"config key {key!r} is gone; use {RENAMED_KEYS[key]}")


def parse_task_value(key: str, raw: Any, env_id: str) -> tuple[int, ...]:
    """``data.train_tasks`` / ``data.test_tasks`` as merpo-data's ``--tasks`` takes them
    (``0-34``, ``0,2,5``, ``[0,1]``, ``train``, a YAML list); empty is an error."""
    from merpo_data.ids import parse_tasks, repeated_tasks
    from merpo_envs import get_meta_info

    if isinstance(raw, str):
        raw = raw.strip().strip("[]()").replace(" ", "")
        if not raw:
            raise ConfigError(f"{key} is empty; give tasks (e.g. 0-34), or leave it out for the "
                              "env's whole split")
    elif isinstance(raw, int):
        raw = [raw]
    info = get_meta_info(env_id)
    try:
        tasks = parse_tasks(raw, info)
        # a task listed twice would weigh double: refused, not silently merged
        parts = raw.split(",") if isinstance(raw, str) else list(raw)
        listed = [t for part in parts if part not in ("train", "test", "all")
                  for t in parse_tasks(part if isinstance(part, str) else [part], info)]
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{key}: {str(err).strip().splitlines()[0]}") from None
    twice = repeated_tasks(listed)
    if twice:
        from merpo_envs import format_tasks

        raise ConfigError(f"{key} lists task(s) {format_tasks(twice)} more than once; "
                          "list each task once")
    return tasks


def normalize_items(items: list[tuple[str, Any]], env_id: str) -> list[tuple[str, Any]]:
    """Check every key against the former schemas and parse task ranges."""
    out = []
    for key, raw in items:
        check_key(key)
        if key in TASK_KEYS and raw is not None:
            raw = parse_task_value(key, raw, env_id)
        out.append((key, raw))
    return out


def preset_data(env_id: str, preset: str) -> DataConfig:
    """The tasks and data a preset name means for every algorithm.

    ``small``: the first 8 training and 4 test tasks (the quickstart); ``smoke``: the first
    4 / 2 on merpo-data's cheap ``test`` datasets (the ``point_robot_store`` test fixture);
    any other preset: the env's whole split at the default data.
    """
    from merpo_envs import get_meta_info

    info = get_meta_info(env_id)
    if preset == "small":
        return DataConfig(train_tasks=tuple(info.train_tasks[:8]),
                          test_tasks=tuple(info.test_tasks[:4]))
    if preset == "smoke":
        return DataConfig(preset="test", train_tasks=tuple(info.train_tasks[:4]),
                          test_tasks=tuple(info.test_tasks[:2]))
    return DataConfig()


__all__ = [
    "RENAMED_KEYS",
    "SHARED_SECTIONS",
    "DataConfig",
    "EvalConfig",
    "RunConfig",
    "check_key",
    "normalize_items",
    "parse_task_value",
    "preset_data",
]
