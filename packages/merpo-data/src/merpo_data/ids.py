"""Dataset ids and task ranges: the names that tie an env, a task and a quality together.

A dataset id is ``merpo/<env slug>/task-<NN>-<quality>-v0``, e.g.
``merpo/point-robot-wind/task-03-medium-v0``, for the ``default`` data preset; any other
preset's datasets carry its name, ``task-<NN>-<quality>-<preset>-v0`` (e.g.
``task-03-medium-test-v0``), so a cheap test build never takes the id of a real dataset.
Everything that names a dataset goes through :func:`dataset_id` and
:func:`parse_dataset_id`, so the two never drift apart.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import merpo_envs
import numpy as np
from merpo_envs import MetaEnvInfo, get_meta_info

QUALITIES = ("random", "medium", "expert", "mixed")
PRESET_NAMES = ("default", "test")  # the data presets (merpo_data.presets)
NAMESPACE = "merpo"
VERSION = 0

_ID_PATTERN = re.compile(
    r"^merpo/(?P<slug>[a-z0-9-]+)/task-(?P<task>\d+)-(?P<quality>[a-z]+)"
    r"(?:-(?P<preset>[a-z]+))?-v0$"
)


def check_preset(preset: str) -> str:
    if preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESET_NAMES)}")
    return preset


def check_seed(seed: int) -> int:
    """A seed must be an integer >= 0 (NumPy and Gymnasium refuse negative ones, and only
    after minutes of training): one line up front instead."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def check_quality(quality: str) -> str:
    if quality not in QUALITIES:
        raise ValueError(f"unknown quality {quality!r}; valid qualities: {', '.join(QUALITIES)}")
    return quality


def parse_qualities(spec: str | Sequence[str] | None) -> tuple[str, ...]:
    """Qualities from ``None`` or ``"all"`` (every one), ``"medium,expert"`` or a list whose
    items may hold commas too (``--qualities medium expert`` and ``medium,expert`` agree).

    Returns them in the order given, without duplicates; an unknown one is a one-line error.
    """
    if spec is None:
        return QUALITIES
    items = [spec] if isinstance(spec, str) else list(spec)
    names = [part.strip() for item in items for part in str(item).split(",") if part.strip()]
    if names == ["all"]:
        return QUALITIES
    if not names:
        raise ValueError(f"empty quality list; use e.g. medium,expert ({', '.join(QUALITIES)})")
    return tuple(dict.fromkeys(check_quality(q) for q in names))


def dataset_id(env_id: str, task: int, quality: str, preset: str = "default") -> str:
    """``merpo/<slug>/task-<NN>-<quality>-v0`` for a task of an env (``default`` preset),
    ``merpo/<slug>/task-<NN>-<quality>-<preset>-v0`` for another data preset."""
    info = get_meta_info(env_id)
    task = info.check_task(task)
    suffix = "" if check_preset(preset) == "default" else f"-{preset}"
    return f"{NAMESPACE}/{info.slug}/task-{task:02d}-{check_quality(quality)}{suffix}-v{VERSION}"


def generate_command(
    env_id: str,
    tasks: Iterable[int],
    qualities: Iterable[str],
    preset: str = "default",
    force: bool = False,
) -> str:
    """The ``merpo-data generate`` command that builds these datasets (the one place its
    form is written, for the error messages that name it)."""
    wanted = set(qualities)
    quals = ",".join(q for q in QUALITIES if q in wanted)
    parts = [f"merpo-data generate {env_id} --tasks {merpo_envs.format_tasks(tasks)}",
             f"--qualities {quals}"]  # fmt: skip
    parts += [f"--preset {preset}"] if preset != "default" else []
    parts += ["--force"] if force else []
    return " ".join(parts)


def describe_datasets(
    env_id: str, pairs: Iterable[tuple[int, str]], preset: str = "default"
) -> str:
    """Every dataset id of ``(task, quality)`` pairs, short: per quality, the id itself for
    one or two tasks, else the id with ``NN`` for the task and the tasks in ``--tasks``
    form (``merpo/point-robot-wind/task-NN-medium-v0 for NN in 0-39``)."""
    tasks_of: dict[str, set[int]] = {}
    for task, quality in pairs:
        tasks_of.setdefault(check_quality(quality), set()).add(int(task))
    parts: list[str] = []
    for quality in (q for q in QUALITIES if q in tasks_of):
        tasks = sorted(tasks_of[quality])
        if len(tasks) <= 2:
            parts += [dataset_id(env_id, t, quality, preset) for t in tasks]
        else:
            first = dataset_id(env_id, tasks[0], quality, preset)
            pattern = first.replace(f"/task-{tasks[0]:02d}-", "/task-NN-", 1)
            parts.append(f"{pattern} for NN in {merpo_envs.format_tasks(tasks)}")
    return ", ".join(parts)


def missing_datasets_message(
    env_id: str, missing: Iterable[tuple[int, str]], preset: str = "default"
) -> str:
    """One line naming every missing dataset and the one ``merpo-data generate`` command
    that builds them all (it keeps the datasets that exist)."""
    missing = list(dict.fromkeys((int(t), q) for t, q in missing))
    command = generate_command(env_id, [t for t, _ in missing], [q for _, q in missing], preset)
    return (
        f"{len(missing)} dataset(s) missing: {describe_datasets(env_id, missing, preset)}; "
        f"build them all with `{command}`, or let training build them with "
        "`--set data.build_missing=true` (build_missing=True in Python)"
    )


def env_namespace(env_id: str) -> str:
    """The Minari namespace holding an env's datasets, e.g. ``merpo/point-robot-wind``."""
    return f"{NAMESPACE}/{get_meta_info(env_id).slug}"


def env_id_for_slug(slug: str) -> str:
    for env_id in merpo_envs.env_ids():
        if get_meta_info(env_id).slug == slug:
            return env_id
    slugs = ", ".join(get_meta_info(e).slug for e in merpo_envs.env_ids())
    raise ValueError(f"unknown env {slug!r} in dataset id; valid envs: {slugs}")


def parse_dataset_id(dataset_id_: str) -> tuple[str, int, str]:
    """``(env_id, task, quality)`` of a merpo dataset id, or a one-line error showing the form."""
    return parse_dataset_recipe(dataset_id_)[:3]


def parse_dataset_recipe(dataset_id_: str) -> tuple[str, int, str, str]:
    """``(env_id, task, quality, preset)`` of a merpo dataset id (one-line errors)."""
    match = _ID_PATTERN.match(dataset_id_)
    if match is None:
        raise ValueError(
            f"bad dataset id {dataset_id_!r}; expected merpo/<env>/task-<NN>-<quality>-v0, "
            f"e.g. merpo/point-robot-wind/task-03-medium-v0 (see `merpo-data list`)"
        )
    env_id = env_id_for_slug(match["slug"])
    task = get_meta_info(env_id).check_task(int(match["task"]))
    preset = check_preset(match["preset"] or "default")
    canonical = dataset_id(env_id, task, check_quality(match["quality"]), preset)
    if canonical != dataset_id_:
        raise ValueError(f"bad dataset id {dataset_id_!r}; did you mean {canonical!r}?")
    return env_id, task, match["quality"], preset


def repeated_tasks(tasks: Sequence[int]) -> list[int]:
    """The tasks listed more than once, sorted: a task listed twice would be sampled (and
    weigh) twice as much, silently, so every caller refuses them."""
    listed = [int(t) for t in tasks]
    return sorted({t for t in listed if listed.count(t) > 1})


def parse_tasks(spec: str | Sequence[int] | None, info: MetaEnvInfo) -> tuple[int, ...]:
    """Tasks from ``None`` (all), ``"train"``, ``"test"``, ``"all"``, ``"0-9,40-49"`` or ints.

    Returns a sorted tuple without duplicates; bad ranges raise one line naming the form.
    """
    if spec is None or spec == "all":
        return info.tasks
    if spec == "train":
        return tuple(info.train_tasks)
    if spec == "test":
        return tuple(info.test_tasks)
    if isinstance(spec, str):
        tasks: list[int] = []
        for part in spec.split(","):
            part = part.strip()
            match = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if match is None:
                raise ValueError(
                    f"bad task range {spec!r}; use e.g. 0-9,40-49 (tasks 0..{info.num_tasks - 1}), "
                    f"'train', 'test' or 'all'"
                )
            start = int(match[1])
            stop = int(match[2]) if match[2] is not None else start
            if stop < start:
                raise ValueError(f"bad task range {part!r}: {stop} < {start}; use e.g. 0-9")
            tasks.extend(range(start, stop + 1))
        return _checked(tasks, info)
    return _checked(list(spec), info)


def _checked(tasks: Iterable, info: MetaEnvInfo) -> tuple[int, ...]:
    checked = sorted({info.check_task(t) for t in tasks})
    if not checked:
        raise ValueError(f"{info.env_id}: empty task list; use e.g. 0-9 or 'train'")
    return tuple(checked)
