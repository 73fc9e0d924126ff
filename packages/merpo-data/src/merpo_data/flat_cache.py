"""The sampler's flat arrays of each dataset, cached beside Minari's store so loading is fast.

Reading a dataset through Minari costs one HDF5 read per episode (about a second for a
200-episode Point-Robot-Wind dataset on a 2-core CPU, almost all of it there), so 50 tasks
took about a minute before training could start. The sampler only ever needs the
flattened arrays (``merpo_data.sampler._flatten``), so they are kept, once built, as one
uncompressed ``.npz`` per dataset in the store's hidden work folder,
``<store>/.merpo-data/flat-cache/<dataset id>.npz``: outside the dataset's own Minari
folder, so ``minari`` (``load_dataset``, ``list``, uploads) never sees them, and Minari's
files stay the only source of truth.

A cache file is used only when everything it was built from is unchanged:

- its key matches: the cache format, the dataset id, the content hash stored in the
  dataset's recipe (:mod:`merpo_data.integrity`), and the size and modification time of
  ``main_data.hdf5``. The hash names the data the dataset should hold; the file's size and
  time tell that the HDF5 file on disk is still the one the cache was built from, so a
  torn or edited file after the cache was built is read through Minari again and reported
  as damaged (one line naming the fix) rather than hidden by the cache;
- its arrays read whole and their SHA-256 equals the one written with them (a torn or
  edited cache file).

Otherwise the arrays are built through Minari and the cache file is written again,
atomically (:func:`merpo_data.atomic.atomic_write`). A dataset without a content hash in
its recipe is always read through Minari. A store that cannot be written to still loads,
only without the cache.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from merpo_data.atomic import atomic_write
from merpo_data.datasets import RECIPE_KEY
from merpo_data.integrity import _update as _hash_array
from merpo_data.store import store_root

__all__ = ["cache_path", "cache_root", "load_flat"]

FORMAT = 1
_META = "__meta__"
# What reading a torn, truncated or foreign file raises (numpy, zipfile, json).
_READ_ERRORS = (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile)


def cache_root() -> Path:
    """The cache folder of the store Minari reads now (removing it only costs a rebuild)."""
    return store_root() / ".merpo-data" / "flat-cache"


def cache_path(dataset_id: str) -> Path:
    """Where the flat arrays of a dataset are cached."""
    return cache_root() / f"{dataset_id}.npz"


def load_flat(dataset, dataset_id: str, flatten: Callable[[object, str], dict]) -> dict:
    """``flatten(dataset, dataset_id)``, from the cache when it is valid, else built and cached.

    ``flatten`` (the sampler's) stays the one definition of the arrays: the cache stores
    exactly what it returned (numpy arrays, dicts of arrays, floats) and gives it back
    bit for bit.
    """
    key = _cache_key(dataset, dataset_id)
    if key is None:
        return flatten(dataset, dataset_id)
    path = cache_path(dataset_id)
    cached = _read(path, key)
    if cached is not None:
        return cached
    flat = flatten(dataset, dataset_id)
    try:
        _write(path, key, flat)
    except OSError:
        pass  # a read-only or full store: loading works, only without the cache
    return flat


def _cache_key(dataset, dataset_id: str) -> dict | None:
    """What a valid cache file must have been built from (``None``: no content hash)."""
    try:
        raw = dataset.storage.metadata.get(RECIPE_KEY)
        content = json.loads(raw).get("content_hash") if raw else None
        stat = (Path(dataset.storage.data_path) / "main_data.hdf5").stat()
    except _READ_ERRORS:
        return None  # Minari's own read reports what is wrong
    if not content:
        return None
    return {
        "format": FORMAT,
        "dataset_id": dataset_id,
        "content_hash": content,
        "hdf5_size": stat.st_size,
        "hdf5_mtime_ns": stat.st_mtime_ns,
    }


def _encode(flat: dict) -> dict[str, np.ndarray]:
    """``flatten``'s output as named arrays: ``a:<name>``, ``d:<name>:<key>``, ``f:<name>``."""
    arrays = {}
    for name, value in flat.items():
        if isinstance(value, np.ndarray):
            arrays[f"a:{name}"] = value
        elif isinstance(value, dict):
            for key, array in value.items():
                arrays[f"d:{name}:{key}"] = np.asarray(array)
            arrays[f"d:{name}:"] = np.zeros(0)  # marks the dict, empty or not
        elif isinstance(value, float):
            arrays[f"f:{name}"] = np.float64(value)
        else:
            raise TypeError(f"flat cache: cannot store {name!r} of type {type(value).__name__}")
    return arrays


def _decode(arrays: dict[str, np.ndarray]) -> dict:
    flat: dict = {}
    for stored, array in arrays.items():
        kind, name = stored[0], stored[2:]
        if kind == "a":
            flat[name] = array
        elif kind == "f":
            flat[name] = float(array[()])
        else:
            name, key = name.split(":", 1)
            entries = flat.setdefault(name, {})
            if key:
                entries[key] = array
    return flat


def _digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        _hash_array(digest, name, arrays[name])
    return digest.hexdigest()


def _write(path: Path, key: dict, flat: dict) -> None:
    arrays = _encode(flat)
    meta = json.dumps({"key": key, "sha256": _digest(arrays)})
    buffer = io.BytesIO()
    np.savez(buffer, **{_META: np.array(meta)}, **arrays)
    atomic_write(path, lambda handle: handle.write(buffer.getbuffer()))


def _read(path: Path, key: dict) -> dict | None:
    """The cached arrays, or ``None`` when missing, stale (another key) or damaged."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz[_META][()]))
            if meta.get("key") != key:
                return None
            arrays = {name: npz[name] for name in npz.files if name != _META}
        if _digest(arrays) != meta["sha256"]:
            return None
        return _decode(arrays)
    except _READ_ERRORS:
        return None
