"""Faults a hostile but realistic user meets: damaged or non-finite checkpoints, a full
disk, two trainers on one run directory, and bad inputs that used to get through.

Each case ends in one line (no traceback) and keeps every good file; the smoke runs here
are a few meta-iterations on the session's test datasets (``point_robot_store``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from merpo_agent import checkpoint as ckpt
from merpo_agent.cli import main
from merpo_agent.run_dir import LOCK_FILE

ENV = "merpo/PointRobotWind-v0"
BASE = ["--env", ENV, "--preset", "smoke", "--no-progress", "--threads", "1"]
SMOKE = [*BASE, "--set", "test.compare_combo=false", "--set", "test.compare_beha_only=false"]
FOCAL = [*BASE, "--algo", "focal", "--set", "data.train_tasks=[0,1,2,3]", "--set",
         "data.test_tasks=[40,41]", "--set", "run.steps=4", "--set", "eval.every=4", "--set",
         "run.log_every=2"]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# ---- checkpoints ---------------------------------------------------------------------------


def test_a_state_with_a_nan_is_never_saved(tmp_path):
    path = tmp_path / ckpt.LATEST
    ckpt.save_checkpoint(path, {"iteration": 1, "w": torch.ones(3)})
    bad = {"iteration": 2, "net": {"layer": [torch.ones(2), torch.tensor([0.0, float("nan")])]}}
    with pytest.raises(ckpt.NonFiniteState, match=r"net\.layer\.1 holds a NaN or inf"):
        ckpt.save_checkpoint(path, bad)
    assert ckpt.load_checkpoint(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.LATEST]  # nothing else written


def test_bytes_damaged_inside_a_complete_archive_fall_back_to_previous(tmp_path):
    path = tmp_path / ckpt.LATEST
    weights = torch.randn(20_000, generator=torch.Generator().manual_seed(0))
    ckpt.save_checkpoint(path, {"iteration": 1, "w": weights})
    ckpt.save_checkpoint(path, {"iteration": 2, "w": weights + 1})
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 4096] = np.random.default_rng(0).bytes(4096)
    path.write_bytes(bytes(data))
    import zipfile

    assert zipfile.is_zipfile(path)  # the archive's directory is intact: only a CRC tells
    lines = []
    state = ckpt.load_checkpoint(path, say=lines.append)
    assert state["iteration"] == 1 and torch.equal(state["w"], weights)
    assert len(lines) == 1 and "previous.pt" in lines[0] and "damaged" in lines[0]


def test_a_nan_reaching_the_state_stops_training_and_keeps_the_last_good_checkpoint(
    point_robot_store, tmp_path, monkeypatch, capsys
):
    """A NaN in the parameters that no watched loss shows yet: the checkpoint of that
    iteration is not written, the line says which tensor, keeps iteration 1's checkpoint,
    and advises what ``train`` accepts (a new --run-dir, not a resume with other settings)."""
    from merpo_agent.config import ConfigError
    from merpo_agent.trainer import MetaTrainer

    real_state = MetaTrainer.state

    def poisoned(self):
        state = real_state(self)
        if self.iteration == 2:
            name = next(iter(state["meta_model"]))
            state["meta_model"][name] = state["meta_model"][name] * float("nan")
        return state

    monkeypatch.setattr(MetaTrainer, "state", poisoned)
    run_dir = tmp_path / "run"
    argv = ["train", *SMOKE, "--set", "run.steps=6", "--set", "run.checkpoint_every=2",
            "--run-dir", str(run_dir)]
    assert main(argv) == 1
    err = _one_line(capsys)
    assert "meta_model." in err and "NaN or inf by meta-iteration 2" in err
    assert "(meta-iteration 1) kept" in err and "another --run-dir" in err
    saved = ckpt.load_checkpoint(run_dir / "checkpoints" / ckpt.LATEST)
    assert saved["iteration"] == 1 and ckpt.nonfinite_entry(saved) is None
    # The advice is one train accepts; a resume with another seed is refused, as it says.
    from merpo_agent.cli import build_parser, train_config

    advised = train_config(build_parser().parse_args(
        ["train", *SMOKE, "--seed", "1", "--set", "rac.critic_lr=1e-4"]))
    MetaTrainer(advised, tmp_path / "new-run")
    with pytest.raises(ConfigError, match="other settings"):
        MetaTrainer(advised, run_dir)


def test_a_nan_reaching_a_baselines_state_stops_it_keeping_the_last_good_checkpoint(
    point_robot_store, tmp_path, monkeypatch, capsys
):
    from merpo_agent.baselines.context import BaselineLearner

    real_state = BaselineLearner.training_state
    calls = {"n": 0}

    def poisoned(self):
        state = real_state(self)
        calls["n"] += 1
        if calls["n"] == 2:  # the checkpoint at update 2 (update 0's is the first)
            name = next(iter(state["module"]))
            state["module"][name] = state["module"][name] * float("nan")
        return state

    monkeypatch.setattr(BaselineLearner, "training_state", poisoned)
    run_dir = tmp_path / "focal"
    assert main(["train", *FOCAL, "--set", "run.checkpoint_every=2", "--run-dir",
                 str(run_dir)]) == 1
    err = _one_line(capsys)
    assert "learner.module." in err and "NaN or inf by update 2" in err
    assert "kept; start a new run (another --run-dir)" in err
    assert ckpt.load_checkpoint(run_dir / "checkpoints" / ckpt.LATEST)["step"] == 0


def test_load_policy_of_a_foreign_checkpoint_and_of_a_nan_observation(
    point_robot_store, tmp_path
):
    import merpo_agent
    from merpo_agent.policy import PolicyError

    run_dir = tmp_path / "run"
    assert main(["train", *SMOKE, "--set", "run.steps=2", "--run-dir", str(run_dir)]) == 0
    policy = merpo_agent.load_policy(run_dir)
    with pytest.raises(ValueError, match="observation holds a NaN or inf"):
        policy(np.array([0.1, np.nan]))
    assert np.isfinite(policy(np.array([0.1, 0.2]))).all()
    ckpt.save_checkpoint(run_dir / "checkpoints" / ckpt.LATEST,
                         {"format": 1, "algo": "focal", "step": 4, "agent": {}})
    with pytest.raises(PolicyError, match="is not a MerPO checkpoint") as info:
        merpo_agent.load_policy(run_dir)
    assert "\n" not in str(info.value)


# ---- a full disk ---------------------------------------------------------------------------


def test_a_full_disk_during_train_is_one_line_and_a_rerun_resumes(
    point_robot_store, tmp_path, capsys, disk_full_at_second_save
):
    run_dir = tmp_path / "run"
    argv = ["train", *SMOKE, "--set", "run.steps=4", "--set", "run.checkpoint_every=2",
            "--run-dir", str(run_dir)]
    with disk_full_at_second_save():
        assert main(argv) == 3
    err = _one_line(capsys)
    latest = run_dir / "checkpoints" / ckpt.LATEST
    assert f"no space left on the device writing {latest}" in err
    assert "work finished so far is kept" in err and "rerun the same command" in err
    assert ckpt.load_checkpoint(latest)["iteration"] == 0  # the setup's checkpoint is whole
    assert main(argv) == 0  # the same command resumes from the setup's checkpoint
    assert ckpt.load_checkpoint(latest)["iteration"] == 2


# ---- one trainer per run directory ---------------------------------------------------------


def _hold(path):
    """A process holding the lock at ``path`` until its stdin closes."""
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys\nfrom merpo_data.lock import hold_lock\n"
         f"with hold_lock({str(path)!r}, 'x'):\n"
         "    print('locked', flush=True)\n    sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ},
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


@pytest.mark.parametrize("algo", [SMOKE, FOCAL], ids=["merpo", "focal"])
def test_a_second_train_on_a_busy_run_directory_says_who_holds_it(
    point_robot_store, tmp_path, capsys, algo
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = _hold(run_dir / LOCK_FILE)
    try:
        assert main(["train", *algo, "--run-dir", str(run_dir)]) == 2
        err = _one_line(capsys)
        assert f"run directory {run_dir} is in use by pid {holder.pid} on " in err
        assert " since " in err
    finally:
        holder.stdin.close()
        holder.wait()
    assert run_dir.is_dir()  # not ours to remove
    assert not (run_dir / "checkpoints").exists()  # the second trainer wrote nothing


# ---- bad inputs ----------------------------------------------------------------------------


@pytest.mark.parametrize("argv, expected", [
    (["--set", "rac.actor_lr=-1e-3"], "actor_lr=-0.001 must be > 0"),
    (["--set", "dynamics.task_model_lr=0"], "task_model_lr=0.0 must be > 0"),
    (["--set", "data.train_tasks=[0,1,2,40]", "--set", "data.test_tasks=[40,41]"],
     "task(s) 40 are both training and test tasks"),
    (["--set", "data.test_tasks=[2]"], "task(s) 2 are both training and test tasks"),
    (["--set", "data.train_tasks=[0,0]"], "data.train_tasks lists task(s) 0 more than once"),
    (["--seed", "-1"], "--seed must be >= 0, got -1"),
])
def test_bad_train_settings_are_one_line_and_leave_no_run_directory(
    point_robot_store, tmp_path, capsys, argv, expected
):
    run_dir = tmp_path / "run"
    assert main(["train", *SMOKE, *argv, "--run-dir", str(run_dir)]) == 2
    assert expected in _one_line(capsys)
    assert not run_dir.exists()


def test_a_baselines_test_task_cannot_be_a_training_task(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *FOCAL, "--set", "data.train_tasks=[0,1,40]", "--run-dir",
                 str(run_dir)]) == 2
    assert "task(s) 40 are both training and test tasks" in _one_line(capsys)
    assert not run_dir.exists()


def test_a_negative_seed_of_a_baseline_is_one_line(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *FOCAL, "--seed", "-1", "--run-dir", str(run_dir)]) == 2
    assert "--seed must be >= 0, got -1" in _one_line(capsys)
    assert not run_dir.exists()


def test_the_table2_default_test_tasks_cannot_be_training_tasks(capsys, tmp_path):
    assert main(["train", "--env", ENV, "--set", "data.test_tasks=[7]",
                 "--run-dir", str(tmp_path / "run")]) == 2
    assert "task(s) 7 are both training and test tasks (train 0-39" in _one_line(capsys)


@pytest.mark.parametrize("algo", [SMOKE, FOCAL], ids=["merpo", "focal"])
def test_a_run_dir_that_is_a_file_is_one_line(point_robot_store, tmp_path, capsys, algo):
    path = tmp_path / "notes.txt"
    path.write_text("keep me\n")
    assert main(["train", *algo, "--run-dir", str(path)]) == 2
    assert f"--run-dir {path} is an existing file, not a directory" in _one_line(capsys)
    assert path.read_text() == "keep me\n"


@pytest.mark.parametrize("argv, expected", [
    (["--set", "meta.task_batch_size=20"], "meta.task_batch_size=20 exceeds the 4 training"),
    (["--set", "data.quality=expert", "--set", "data.train_tasks=[5]", "--set",
      "meta.task_batch_size=1"], "dataset(s) missing"),
])
def test_a_train_that_fails_before_training_removes_the_run_directory_it_created(
    point_robot_store, tmp_path, capsys, argv, expected
):
    run_dir = tmp_path / "new" / "run"
    assert main(["train", *SMOKE, *argv, "--run-dir", str(run_dir)]) == 2
    assert expected in _one_line(capsys)
    assert not run_dir.exists()


def test_a_failed_train_keeps_a_run_directory_it_did_not_create(
    point_robot_store, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "mine.txt").write_text("x")
    assert main(["train", *SMOKE, "--set", "meta.task_batch_size=20",
                 "--run-dir", str(run_dir)]) == 2
    _one_line(capsys)
    assert (run_dir / "mine.txt").read_text() == "x"


@pytest.mark.parametrize("argv, expected", [
    (["--env", "merpo/NoSuchEnv-v0"], "--env: unknown env id 'merpo/NoSuchEnv-v0'"),
    (["--quality", "superb"], "--quality 'superb' is not one of random, medium"),
    (["--jobs", "0"], "--jobs must be >= 1"),
    (["--jobs", "-2"], "--jobs must be >= 1"),
])
def test_bad_reproduce_input_is_one_line_before_any_dataset_is_built(
    tmp_path, monkeypatch, capsys, argv, expected
):
    import merpo_data

    def no_build(*args, **kwargs):
        raise AssertionError("built datasets before checking the input")

    monkeypatch.setattr(merpo_data, "generate", no_build)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty"))
    assert main(["reproduce", "fig6", "--quick", "--out", str(tmp_path / "out"), *argv]) == 2
    assert expected in _one_line(capsys)
    assert not (tmp_path / "out").exists()
