"""Damaged datasets: how merpo-data notices them and the one line that says how to fix them.

A dataset is two files in Minari's store, ``data/metadata.json`` and ``data/main_data.hdf5``.
A copy cut short, a full disk or a stray edit leaves one of them unreadable, and Minari
then fails with a JSON or HDF5 traceback, sometimes only when an episode is read.
Everything that reads a merpo dataset (the sampler, ``merpo-data info`` and ``plot``,
``merpo-agent train`` and ``evaluate``) goes through :func:`open_dataset` and
:func:`read_episodes`, which turn any such failure into :class:`DamagedDatasetError`: one
line naming the dataset and the ``merpo-data generate ... --force`` command that rebuilds
it. ``generate`` checks an existing dataset with :func:`dataset_problem` (every episode
read, and its content hash compared with the one stored in its recipe) before it calls
the dataset ready. A NaN or inf anywhere in the data (:func:`nonfinite_problem`) is
damage too, named by field, episode and step: it would otherwise poison training far
from its cause.

The content hash (:func:`content_hash`) is a SHA-256 over every episode's arrays (names,
dtypes, shapes and bytes, infos included), so equal hashes mean bit-identical datasets;
:func:`field_hashes` hashes each array name apart, to say which part of two datasets differs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace

import minari
import numpy as np

from merpo_data.ids import generate_command, parse_dataset_recipe

__all__ = [
    "DamagedDatasetError",
    "content_hash",
    "damaged",
    "field_hashes",
    "dataset_problem",
    "nonfinite_problem",
    "open_dataset",
    "read_episodes",
    "rebuild_command",
]

# What a torn or edited file raises inside Minari and h5py: OSError (HDF5 "truncated
# file", unreadable blocks), ValueError (JSON, bad shapes), KeyError (a missing episode or
# field), TypeError / AttributeError / AssertionError (fields of the wrong kind).
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, AttributeError, AssertionError)


class DamagedDatasetError(ValueError):
    """A local dataset whose files cannot be read (one line: the id and the fix)."""


def rebuild_command(dataset_id: str) -> str:
    """The ``merpo-data generate`` command that rebuilds one dataset over a damaged copy."""
    env_id, task, quality, preset = parse_dataset_recipe(dataset_id)
    return generate_command(env_id, [task], [quality], preset, force=True)


def damaged(dataset_id: str, reason: str) -> DamagedDatasetError:
    """The error for a damaged dataset: id, what is wrong (first line only) and the fix."""
    reason = (str(reason).strip().splitlines() or ["unreadable"])[0]
    return DamagedDatasetError(
        f"dataset {dataset_id} is damaged ({reason}); rebuild it with "
        f"`{rebuild_command(dataset_id)}`"
    )


def open_dataset(dataset_id: str) -> minari.MinariDataset:
    """``minari.load_dataset`` with a damaged metadata file as :class:`DamagedDatasetError`.

    Minari reads only the metadata here; a torn HDF5 file shows when episodes are read
    (:func:`read_episodes`).
    """
    try:
        return minari.load_dataset(dataset_id)
    except _READ_ERRORS as err:
        raise damaged(dataset_id, f"metadata: {type(err).__name__}: {err}") from None


def read_episodes(dataset: minari.MinariDataset, dataset_id: str | None = None) -> list:
    """Every episode (``minari`` EpisodeData) of a dataset; a torn file is one-line error."""
    dataset_id = dataset_id or dataset.spec.dataset_id
    try:
        episodes = list(dataset.iterate_episodes())
    except _READ_ERRORS as err:
        raise damaged(dataset_id, f"episodes: {type(err).__name__}: {err}") from None
    if len(episodes) != dataset.total_episodes:
        raise damaged(
            dataset_id, f"{len(episodes)} episodes read, metadata says {dataset.total_episodes}"
        )
    for index, episode in enumerate(episodes):
        problem = nonfinite_problem(episode, index)
        if problem is not None:
            raise damaged(dataset_id, problem)
    return episodes


def nonfinite_problem(episode, index: int) -> str | None:
    """Where an episode holds a NaN or inf (field, episode, step), or ``None``.

    One NaN reward poisons every network trained on the dataset, and the failure shows
    far from its cause (a diverged loss iterations later), so readers refuse it at load.
    """
    fields = {name: getattr(episode, name, None) for name in _FLOAT_FIELDS}
    fields.update(_leaves("infos", getattr(episode, "infos", None) or {}))
    for name, value in fields.items():
        if value is None:
            continue
        array = np.asarray(value)
        if array.dtype.kind not in "fc" or np.isfinite(array).all():
            continue
        bad = np.argwhere(~np.isfinite(array))[0]
        kind = "nan" if np.isnan(array[tuple(bad)]) else "inf"
        where = f", step {int(bad[0])}" if array.ndim else ""
        return f"a non-finite value ({kind}) in {name} of episode {index}{where}"
    return None


_FLOAT_FIELDS = ("observations", "actions", "rewards")


def _leaves(name: str, value) -> dict:
    if isinstance(value, Mapping):
        out = {}
        for key in sorted(value):
            out.update(_leaves(f"{name}/{key}", value[key]))
        return out
    return {name: value}


def dataset_problem(dataset_id: str, recipe_key: str, verify: bool = True) -> str | None:
    """Why a local dataset is damaged, or ``None`` when it reads whole.

    Reads every episode and, when the dataset's recipe (metadata ``recipe_key``) holds a
    content hash, compares it with the data's; the episodes are read straight from the
    HDF5 file in one pass (the arrays Minari would return). ``verify=False`` only checks
    that the metadata loads and the HDF5 file opens with every episode in it (a torn file
    fails there): a fraction of a second less per dataset, for ``merpo-data list``.
    """
    try:
        dataset = open_dataset(dataset_id)
        raw = dataset.storage.metadata.get(recipe_key)
        stored = json.loads(raw).get("content_hash") if raw else None
    except DamagedDatasetError as err:
        return str(err)
    except _READ_ERRORS as err:
        return str(damaged(dataset_id, f"recipe: {type(err).__name__}: {err}"))
    path = Path(dataset.storage.data_path) / "main_data.hdf5"
    try:
        episodes = _hdf5_episodes(path, dataset.total_episodes)
        if not verify:
            next(episodes, None)  # opens the file and counts the episodes
            episodes.close()
            return None
        digest = content_hash(_finite(episodes))
    except _READ_ERRORS as err:
        return str(damaged(dataset_id, f"episodes: {type(err).__name__}: {err}"))
    except _NonFinite as err:
        return str(damaged(dataset_id, str(err)))
    if stored is not None and stored != digest:
        return str(damaged(dataset_id, "its content hash differs from the one in its recipe"))
    return None


class _NonFinite(Exception):
    pass


def _finite(episodes: Iterable) -> Iterator:
    """The episodes, checked by :func:`nonfinite_problem` as they go by."""
    for index, episode in enumerate(episodes):
        problem = nonfinite_problem(episode, index)
        if problem is not None:
            raise _NonFinite(problem)
        yield episode


def _hdf5_episodes(path: Path, total: int) -> Iterator[SimpleNamespace]:
    """The episodes of a Minari HDF5 file as Minari decodes them (Box spaces: arrays)."""
    import h5py

    with h5py.File(path, "r") as handle:
        if len(handle.keys()) != total:
            raise ValueError(f"{len(handle.keys())} episodes in the file, metadata says {total}")
        for index in range(total):
            group = handle[f"episode_{index}"]
            fields = {
                name: _read_tree(group[name])
                for name in ("observations", "actions", "rewards", "terminations", "truncations")
            }
            infos = _read_tree(group["infos"]) if "infos" in group else None
            yield SimpleNamespace(**fields, infos=infos)


def _read_tree(node):
    import h5py

    if isinstance(node, h5py.Group):
        return {key: _read_tree(node[key]) for key in node.keys()}
    return node[()]


def content_hash(episodes: Iterable) -> str:
    """SHA-256 (hex) of episodes' observations, actions, rewards, terminations,
    truncations and infos: every array's name, dtype, shape and bytes, in a fixed order."""
    digest = hashlib.sha256()
    for episode in episodes:
        for name in ("observations", "actions", "rewards", "terminations", "truncations"):
            _update(digest, name, getattr(episode, name))
        _update(digest, "infos", getattr(episode, "infos", None) or {})
    return digest.hexdigest()


def _update(digest, name: str, value) -> None:
    if isinstance(value, Mapping):  # dict spaces and infos: their leaves, keys sorted
        for key in sorted(value):
            _update(digest, f"{name}/{key}", value[key])
        return
    array = np.ascontiguousarray(np.asarray(value))
    digest.update(f"{name}:{array.dtype.str}:{array.shape};".encode())
    digest.update(array.tobytes())


def field_hashes(episodes: Iterable) -> dict[str, str]:
    """``name -> SHA-256 (hex, first 16 digits)`` of one array name over all episodes
    (``observations``, ..., ``infos/<key>``), hashed as :func:`content_hash` hashes it:
    two datasets whose content hashes differ differ in the names whose hashes differ."""
    digests: dict[str, hashlib._Hash] = {}

    def update(name: str, value) -> None:
        if isinstance(value, Mapping):
            for key in sorted(value):
                update(f"{name}/{key}", value[key])
            return
        _update(digests.setdefault(name, hashlib.sha256()), name, value)

    for episode in episodes:
        for name in ("observations", "actions", "rewards", "terminations", "truncations"):
            update(name, getattr(episode, name))
        update("infos", getattr(episode, "infos", None) or {})
    return {name: digest.hexdigest()[:16] for name, digest in sorted(digests.items())}
