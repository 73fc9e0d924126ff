"""``merpo-data generate`` under torchrun: ranks split the tasks, the result is the same store.

A 2-process Gloo run (``python -m torch.distributed.run --standalone --nproc-per-node 2 -m
merpo_data generate ...``) and a single-process run of the same request, each in its own
Minari store, must give bit-identical datasets: tasks train in the fixed task groups of
their preset (pairs with the "test" preset), the ranks split the groups, and only rank 0
prints the summary.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import minari
import pytest
import torch
from merpo_data import dataset_id
from merpo_data.datasets import RECIPE_KEY
from merpo_data.distributed import init_from_env, shard_bounds

ENV = "merpo/PointRobotWind-v0"
TASKS = (5, 6, 7)  # in the test preset's groups (4, 5) and (6, 7): one per rank
QUALITY = "expert"
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", "2", "-m", "merpo_data"]  # fmt: skip
ARGS = [
    "generate", ENV, "--tasks", "5-7", "--qualities", QUALITY, "--preset", "test",
    "--episodes", "20", "--quiet",
]  # fmt: skip


def _env(store: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
    }
    env["MINARI_DATASETS_PATH"] = str(store)
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(cmd: list[str], store: Path) -> str:
    proc = subprocess.run(cmd, env=_env(store), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def _summary(store: Path) -> dict[str, tuple]:
    old = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(store)
    try:
        out = {}
        for ds_id in minari.list_local_datasets(prefix="merpo"):
            ds = minari.load_dataset(ds_id)
            recipe = json.loads(ds.storage.metadata[RECIPE_KEY])
            out[ds_id] = (ds.total_episodes, ds.total_steps, recipe)
        return out
    finally:
        os.environ["MINARI_DATASETS_PATH"] = old


def test_two_gloo_ranks_build_the_same_datasets_as_one_process(tmp_path):
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    single_out = _run([sys.executable, "-m", "merpo_data", *ARGS], single)
    sharded_out = _run([*TORCHRUN, *ARGS], sharded)

    expected = {dataset_id(ENV, t, QUALITY, "test") for t in TASKS}
    one, two = _summary(single), _summary(sharded)
    assert set(one) == set(two) == expected
    for ds_id in expected:
        episodes, steps, recipe = two[ds_id]
        assert (episodes, steps, recipe) == one[ds_id]
        assert episodes == 20 and recipe["seed"] == 0 and recipe["preset"] == "test"
    # Only rank 0 reports, naming the process count; the single run reports too.
    assert sharded_out.count("datasets ready") == 1 and "by 2 processes" in sharded_out
    assert single_out.count("datasets ready") == 1
    # The same content (the content hash covers every array) and the same behavior
    # policies: each task trained in its own group, whichever process trained it.
    assert {i: r["content_hash"] for i, (_, _, r) in one.items()} == {
        i: r["content_hash"] for i, (_, _, r) in two.items()
    }
    behavior = Path("point-robot-wind") / "test-seed0"

    def returns(store, task):
        path = store / ".merpo-data" / "behavior" / behavior / f"task-{task:02d}.pt"
        return torch.load(path, weights_only=True)["returns"]

    for task in (4, 5, 6, 7):  # whole groups trained, task 4 too
        assert torch.equal(returns(single, task), returns(sharded, task))
    for store in (single, sharded):
        assert not list((store / ".merpo-data" / "behavior" / behavior).glob("train-state*"))


@pytest.mark.parametrize("count", [0, 1, 3, 4, 50])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_shards_cover_every_task_once_in_order(count, world):
    bounds = [shard_bounds(count, r, world) for r in range(world)]
    items = [i for start, stop in bounds for i in range(start, stop)]
    assert items == list(range(count))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_bad_launch_environment_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="launch with torchrun"):
        init_from_env("cpu")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("RANK")
    assert init_from_env("cpu").world_size == 1


def test_bad_input_under_torchrun_is_one_error_line(tmp_path):
    cmd = [*TORCHRUN, "generate", ENV, "--tasks", "9-3"]
    proc = subprocess.run(cmd, env=_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if "merpo-data generate" in line]
    assert errors == [
        "merpo-data generate (rank 0 of 2): error: bad task range '9-3': 3 < 9; use e.g. 0-9"
    ]
