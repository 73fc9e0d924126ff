"""TaskSampler's flat-array cache (merpo_data.flat_cache) and its task specs.

The cache must give exactly what reading through Minari gives (every field, bit for bit),
be rebuilt when stale (another content hash, another HDF5 file) or damaged, never hide a
damaged dataset, and leave Minari's own files and ``minari.load_dataset`` alone. Each
test works on a copy of a few datasets of the session store (``point_robot_store``).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import minari
import numpy as np
import pytest
import torch
from merpo_data import TaskSampler, dataset_id
from merpo_data.datasets import RECIPE_KEY
from merpo_data.flat_cache import cache_path, load_flat
from merpo_data.integrity import DamagedDatasetError, open_dataset
from merpo_data.sampler import _flatten

ENV = "merpo/PointRobotWind-v0"
TASKS = [0, 40, 1]
QUALITIES = ["medium", "expert", "mixed"]
IDS = [dataset_id(ENV, t, q, "test") for t, q in zip(TASKS, QUALITIES, strict=True)]


@pytest.fixture
def store(point_robot_store, tmp_path, monkeypatch) -> Path:
    root = tmp_path / "store"
    for name in ("merpo/namespace_metadata.json", "merpo/point-robot-wind/namespace_metadata.json"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(point_robot_store / name, root / name)
    for ds_id in IDS:
        shutil.copytree(point_robot_store / ds_id, root / ds_id)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def _sampler(**kwargs) -> TaskSampler:
    return TaskSampler(ENV, tasks=TASKS, quality=QUALITIES, preset="test", **kwargs)


def _no_minari_reads(monkeypatch) -> None:
    """Any episode read through Minari now fails: a load that works came from the cache."""

    def refuse(*args, **kwargs):
        raise AssertionError("episodes were read through Minari")

    monkeypatch.setattr("merpo_data.sampler.read_episodes", refuse)


def _same_bits(a, b, where: str) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        a, b = a.cpu().numpy(), b.cpu().numpy()
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, where
        assert a.tobytes() == b.tobytes(), where
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b), where
        for key in a:
            _same_bits(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, tuple | list) and a and isinstance(a[0], np.ndarray):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_bits(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert isinstance(b, float) and np.float64(a).tobytes() == np.float64(b).tobytes(), where
    else:  # ids, task tuples, sizes, the device
        assert a == b, where


def _same_sampler(a: TaskSampler, b: TaskSampler) -> None:
    """Every array, tensor and number of two samplers is bit-identical (datasets aside)."""
    fields = [k for k, v in vars(a).items() if not k.startswith("datasets")]
    assert "episode_ids" in fields and "timesteps" in fields and "infos" in fields
    for name in fields:
        _same_bits(getattr(a, name), getattr(b, name), name)


def _cache_key(ds_id: str) -> dict:
    with np.load(cache_path(ds_id)) as npz:
        return json.loads(str(npz["__meta__"][()]))["key"]


def test_cache_gives_the_minari_arrays_bit_for_bit(store, monkeypatch):
    minari_path = _sampler(cache=False)
    direct = {i: _flatten(open_dataset(i), i) for i in IDS}
    assert not any(cache_path(i).exists() for i in IDS)  # cache=False writes nothing
    cold = _sampler()
    assert all(cache_path(i).is_file() for i in IDS)
    _no_minari_reads(monkeypatch)
    warm = _sampler()
    _same_sampler(minari_path, cold)
    _same_sampler(minari_path, warm)
    # and the flat arrays themselves, field by field (infos and per-episode arrays too)
    for ds_id in IDS:
        cached = load_flat(open_dataset(ds_id), ds_id, _flatten)
        assert sorted(cached) == sorted(direct[ds_id])
        assert {"episode_ids", "timesteps", "infos", "mean_return"} <= set(cached)
        for key, value in direct[ds_id].items():
            _same_bits(value, cached[key], f"{ds_id}:{key}")
    assert warm.episode_ids[:3].tolist() == [0, 0, 0] and warm.timesteps[:3].tolist() == [0, 1, 2]


def test_minari_files_stay_as_they_were(store):
    before = {p: p.stat().st_mtime_ns for p in (store / IDS[0]).rglob("*")}
    _sampler()
    after = {p: p.stat().st_mtime_ns for p in (store / IDS[0]).rglob("*")}
    assert after == before  # nothing added, nothing rewritten in Minari's folder
    assert cache_path(IDS[0]).is_relative_to(store / ".merpo-data")
    assert minari.load_dataset(IDS[0]).total_episodes == 100
    assert set(minari.list_local_datasets()) == set(IDS)
    leftovers = [p for p in (store / ".merpo-data").rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def _edit_recipe_hash(store: Path, ds_id: str) -> str:
    path = store / ds_id / "data" / "metadata.json"
    metadata = json.loads(path.read_text())
    recipe = json.loads(metadata[RECIPE_KEY])
    recipe["content_hash"] = "0" * 64
    metadata[RECIPE_KEY] = json.dumps(recipe)
    path.write_text(json.dumps(metadata))
    return recipe["content_hash"]


@pytest.mark.parametrize("how", ["content_hash", "hdf5_mtime_ns"])
def test_a_stale_cache_is_rebuilt(store, monkeypatch, how):
    expected = _sampler(cache=False)
    _sampler()
    ds_id = IDS[1]
    old = _cache_key(ds_id)
    if how == "content_hash":
        new_value = _edit_recipe_hash(store, ds_id)
    else:  # the HDF5 file was replaced by another one (same bytes here)
        hdf5 = store / ds_id / "data" / "main_data.hdf5"
        new_value = old["hdf5_mtime_ns"] + 10**9
        os.utime(hdf5, ns=(new_value, new_value))
    rebuilt = _sampler()
    assert _cache_key(ds_id)[how] == new_value != old[how]
    _same_sampler(expected, rebuilt)
    _no_minari_reads(monkeypatch)  # the rebuilt cache serves the next load
    _same_sampler(expected, _sampler())


def _truncate(path: Path) -> None:
    with path.open("r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _consistent_zip_other_arrays(path: Path) -> None:
    """A readable cache whose key still matches, but one array changed after the fact."""
    with np.load(path) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays["a:rewards"] = arrays["a:rewards"] + 1.0
    np.savez(path, **arrays)


@pytest.mark.parametrize(
    "damage",
    [_truncate, _flip_a_byte, _consistent_zip_other_arrays, lambda p: p.write_bytes(b"npz?")],
    ids=["truncated", "flipped-byte", "edited-arrays", "garbage"],
)
def test_a_damaged_cache_is_rebuilt(store, monkeypatch, damage):
    expected = _sampler(cache=False)
    _sampler()
    path = cache_path(IDS[2])
    good = path.read_bytes()
    damage(path)
    assert path.read_bytes() != good
    _same_sampler(expected, _sampler())
    _no_minari_reads(monkeypatch)
    _same_sampler(expected, _sampler())  # rebuilt, and whole again


@pytest.mark.parametrize("how", ["truncated", "edited"])
def test_the_cache_never_hides_a_changed_hdf5_file(store, how):
    _sampler()  # the cache now holds the sound data
    ds_id = IDS[0]
    hdf5 = store / ds_id / "data" / "main_data.hdf5"
    if how == "truncated":
        _truncate(hdf5)
        with pytest.raises(DamagedDatasetError) as err:
            _sampler()
        text = str(err.value)
        assert len(text.splitlines()) == 1 and ds_id in text
        assert "merpo-data generate merpo/PointRobotWind-v0 --tasks 0 --qualities medium" in text
        return
    before = _sampler(cache=False).rewards[0].item()
    with h5py.File(hdf5, "r+") as handle:
        handle["episode_0/rewards"][0] += 1.0
    edited = _sampler(cache=False).rewards[0].item()
    assert edited != before
    assert _sampler().rewards[0].item() == edited  # what the file holds now, not the cache


def test_a_store_that_cannot_be_written_still_loads(store, monkeypatch):
    def fail(*args, **kwargs):
        raise OSError("read-only file system")

    monkeypatch.setattr("merpo_data.flat_cache.atomic_write", fail)
    _same_sampler(_sampler(cache=False), _sampler())
    assert not cache_path(IDS[0]).exists()


# ---- task specs: the same strings as the CLI's --tasks (merpo_data.ids.parse_tasks) ----


@pytest.mark.parametrize(
    "spec, tasks",
    [("0-3,40-41", (0, 1, 2, 3, 40, 41)), ("41,0-1", (0, 1, 41)), ("40", (40,))],
)
def test_task_specs(point_robot_store, spec, tasks):
    sampler = TaskSampler(ENV, tasks=spec, quality="medium", preset="test")
    assert sampler.tasks == tasks
    assert sampler.sizes.tolist() == [2500] * len(tasks)


def test_split_and_all_specs_name_what_is_missing(point_robot_store):
    # the session store holds tasks 0-3 and 40-41: "all" misses the others, in --tasks form
    for spec, missing in [("all", "4-39,42-49"), ("train", "4-39"), ("test", "42-49")]:
        with pytest.raises(ValueError, match=f"--tasks {missing} --qualities medium"):
            TaskSampler(ENV, tasks=spec, quality="medium", preset="test")


@pytest.mark.parametrize("spec", ["val", "0-x", "9-3", "", "0,,1", "50", "3-60"])
def test_a_bad_task_spec_is_one_line(point_robot_store, spec):
    with pytest.raises(ValueError) as err:
        TaskSampler(ENV, tasks=spec, quality="medium", preset="test")
    text = str(err.value)
    assert len(text.splitlines()) == 1
    assert "e.g. 0-9" in text or "out of range" in text, text
