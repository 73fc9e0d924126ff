"""Damaged datasets and missing CUDA: one line naming the dataset and the fix, never a traceback.

Each test damages a copy of a few datasets of the session store (``point_robot_store``):
a truncated HDF5 file, a corrupt metadata file, or data edited after it was written.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import pytest
import torch
from merpo_data import TaskSampler, dataset_id, generate
from merpo_data.cli import main as data_main
from merpo_data.datasets import RECIPE_KEY
from merpo_data.integrity import DamagedDatasetError, dataset_problem

ENV = "merpo/PointRobotWind-v0"
DAMAGED = dataset_id(ENV, 0, "medium", "test")
SMOKE_TASKS = (0, 1, 2, 3, 40, 41)  # the agent's smoke preset trains on 0-3, tests on 40-41


def _copy_store(src: Path, dst: Path, ids, behavior: bool = False) -> Path:
    for name in ("merpo/namespace_metadata.json", "merpo/point-robot-wind/namespace_metadata.json"):
        (dst / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src / name, dst / name)
    for ds_id in ids:
        shutil.copytree(src / ds_id, dst / ds_id)
    if behavior:
        shutil.copytree(src / ".merpo-data" / "behavior", dst / ".merpo-data" / "behavior")
    return dst


def _damage(store: Path, ds_id: str, how: str) -> None:
    data = store / ds_id / "data"
    if how == "truncated":
        path = data / "main_data.hdf5"
        with path.open("r+b") as handle:
            handle.truncate(path.stat().st_size // 2)
    elif how == "metadata":
        (data / "metadata.json").write_text('{"total_episodes": 100, "total_')
    elif how in ("nan", "inf"):  # one non-finite reward (a bad edit, a bad rollout)
        with h5py.File(data / "main_data.hdf5", "r+") as handle:
            handle["episode_3/rewards"][5] = float(how)
    else:  # edited: the file reads, but one reward is not what was written
        with h5py.File(data / "main_data.hdf5", "r+") as handle:
            handle["episode_3/rewards"][5] += 1.0


@pytest.fixture
def store(point_robot_store, tmp_path, monkeypatch) -> Path:
    ids = [dataset_id(ENV, t, "medium", "test") for t in SMOKE_TASKS]
    root = _copy_store(point_robot_store, tmp_path / "store", ids, behavior=True)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


def _one_line_naming_the_fix(text: str) -> None:
    text = text.strip()
    assert len(text.splitlines()) == 1, text
    assert DAMAGED in text and "Traceback" not in text
    assert f"merpo-data generate {ENV} --tasks 0 --qualities medium --preset test --force" in text


@pytest.mark.parametrize("how", ["truncated", "metadata"])
def test_sampler_names_the_damaged_dataset_and_the_fix(store, how):
    _damage(store, DAMAGED, how)
    with pytest.raises(DamagedDatasetError) as err:
        TaskSampler(ENV, tasks=[1, 0], quality="medium", preset="test")
    _one_line_naming_the_fix(str(err.value))


@pytest.mark.parametrize("how", ["truncated", "metadata"])
def test_info_and_plot_say_one_line(store, how, capsys, tmp_path):
    _damage(store, DAMAGED, how)
    assert data_main(["info", DAMAGED]) == 2
    _one_line_naming_the_fix(capsys.readouterr().err)
    png = tmp_path / "returns.png"
    assert data_main(["plot", ENV, "--output", str(png), "--preset", "test"]) == 2
    _one_line_naming_the_fix(capsys.readouterr().err)
    assert not png.exists()


@pytest.mark.parametrize(
    "how, argv", [("truncated", []), ("metadata", []), ("edited", ["--verify"])]
)
def test_list_marks_the_damaged_dataset(store, how, argv, capsys):
    _damage(store, DAMAGED, how)
    if how == "edited":  # the file reads: only the content hash tells
        assert data_main(["list"]) == 0
        assert "DAMAGED" not in capsys.readouterr().out
    assert data_main(["list", *argv]) == 1  # damage found: a non-zero exit
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(SMOKE_TASKS)
    (marked,) = [line for line in lines if "DAMAGED" in line]
    assert marked.startswith(f"{DAMAGED}\tDAMAGED") and "--force" in marked
    assert f"{dataset_id(ENV, 1, 'medium', 'test')}\t100 episodes\t2500 steps" in lines


@pytest.mark.parametrize("how", ["truncated", "metadata", "edited"])
def test_generate_rebuilds_a_damaged_dataset(store, point_robot_store, how, capsys):
    before = json.loads(
        (point_robot_store / DAMAGED / "data" / "metadata.json").read_text()
    )[RECIPE_KEY]
    _damage(store, DAMAGED, how)
    assert dataset_problem(DAMAGED, RECIPE_KEY) is not None
    generate(ENV, tasks=[0, 1], qualities=["medium"], preset="test", progress=False)
    err = capsys.readouterr().err
    assert f"rebuilding: dataset {DAMAGED} is damaged" in err
    assert dataset_id(ENV, 1, "medium", "test") not in err  # the sound one is kept as it is
    assert dataset_problem(DAMAGED, RECIPE_KEY) is None
    after = json.loads((store / DAMAGED / "data" / "metadata.json").read_text())[RECIPE_KEY]
    # Rebuilt from the cached behavior policies: the very same data.
    assert json.loads(after)["content_hash"] == json.loads(before)["content_hash"]


@pytest.mark.parametrize("how", ["truncated", "metadata", "nan"])
def test_agent_train_and_evaluate_say_one_line(store, how, capsys, tmp_path):
    from merpo_agent.cli import build_parser, train_config
    from merpo_agent.cli import main as agent_main
    from merpo_data.atomic import atomic_write_text

    _damage(store, DAMAGED, how)
    run = tmp_path / "run"
    argv = ["train", "--env", ENV, "--preset", "smoke", "--run-dir", str(run), "--no-progress"]
    assert agent_main(argv) == 2
    _one_line_naming_the_fix(capsys.readouterr().err)
    assert not run.exists()  # the failed train created it: nothing is left behind
    # evaluate of a run whose data has since been damaged
    atomic_write_text(run / "config.yaml", train_config(build_parser().parse_args(argv)).to_yaml())
    assert agent_main(["evaluate", str(run)]) == 2
    _one_line_naming_the_fix(capsys.readouterr().err)


def test_cuda_without_cuda_is_one_line(point_robot_store, monkeypatch, capsys, tmp_path):
    from merpo_agent.cli import main as agent_main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available here; use --device cpu"):
        TaskSampler(ENV, tasks=[0], quality="medium", device="cuda", preset="test")
    argv = ["generate", ENV, "--tasks", "0", "--preset", "test", "--device", "cuda", "--quiet"]
    assert data_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == (
        "merpo-data generate: error: --device cuda was asked for but CUDA is not available "
        "here; use --device cpu"
    )
    assert agent_main(["evaluate", str(tmp_path), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert "CUDA is not available" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("how", ["nan", "inf"])
def test_a_non_finite_value_is_named_where_the_data_is_loaded(store, how, capsys):
    """Sampler, ``info``, ``list --verify`` and ``generate``'s check all refuse a NaN/inf,
    naming the dataset, the field and the episode in one line."""
    _damage(store, DAMAGED, how)
    where = f"non-finite value ({how}) in rewards of episode 3, step 5"
    with pytest.raises(DamagedDatasetError, match=r"non-finite") as err:
        TaskSampler(ENV, [0, 1], "medium", preset="test")
    _one_line_naming_the_fix(str(err.value))
    assert where in str(err.value)
    assert data_main(["info", DAMAGED]) == 2
    captured = capsys.readouterr()
    _one_line_naming_the_fix(captured.err)
    assert where in captured.err and "mean nan" not in captured.out
    assert where in dataset_problem(DAMAGED, RECIPE_KEY)
    assert data_main(["list", "--verify"]) == 1
    assert where in capsys.readouterr().out
