"""Reliability: atomic dataset creation, no silent overwrite, resume after an interruption."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import merpo_data.datasets as datasets
import minari
import numpy as np
import pytest
import torch
from merpo_data import dataset_id, generate, load_dataset
from merpo_data.behavior import TRAIN_STATE, BehaviorRecord, load_record
from merpo_data.presets import get_preset
from merpo_data.rollouts import Episode
from merpo_data.sac import SACTrainer
from merpo_data.store import behavior_dir

ENV = "merpo/PointRobotWind-v0"


@pytest.fixture
def empty_store(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))
    return tmp_path / "store"


@pytest.fixture
def tiny_preset(monkeypatch):
    """A few hundred SAC iterations: enough for the plumbing, not for good policies."""
    base = get_preset(ENV, "test")
    tiny = dataclasses.replace(
        base,
        sac=dataclasses.replace(
            base.sac,
            iterations=300,
            random_iterations=50,
            checkpoint_every=100,
            eval_episodes=2,
            eval_envs_per_task=2,
        ),
        episodes=6,
        rollout_envs_per_task=3,
        random_eval_episodes=2,
        reference_episodes=2,
        tasks_per_group=1,
    )
    monkeypatch.setattr(datasets, "get_preset", lambda env_id, name="default": tiny)
    # Policies this short need not beat the uniform one, which reference_scores refuses
    # (test_recipes.py tests that); the plumbing tested here does not depend on the scores.
    monkeypatch.setattr(
        datasets, "reference_scores", lambda env_id, group, *a, **k: {t: (-1e3, 0.0) for t in group}
    )
    return tiny


def _fake_episodes(n: int) -> list[Episode]:
    rng = np.random.default_rng(0)
    return [
        Episode(
            observations=rng.normal(size=(26, 2)),
            actions=rng.uniform(-0.1, 0.1, size=(25, 2)).astype(np.float32),
            rewards=rng.normal(size=25),
            terminations=np.zeros(25, dtype=bool),
            truncations=np.arange(25) == 24,
        )
        for _ in range(n)
    ]


def _fake_record(task: int) -> BehaviorRecord:
    return BehaviorRecord(
        task=task,
        steps=np.array([0, 100]),
        returns=np.array([-30.0, -8.0]),
        random_return=-31.0,
        actor={},
    )


def _write(task=5, quality="expert", force=False, n=10):
    preset = get_preset(ENV, "test")
    datasets.ensure_namespaces(ENV)
    return datasets.write_dataset(
        ENV, task, quality, _fake_episodes(n), _fake_record(task), preset, 0, force
    )


def _merpo_dirs(store: Path) -> list[str]:
    """Every dataset-looking folder anywhere in the store, hidden ones included."""
    return sorted(str(p.parent.relative_to(store)) for p in store.rglob("data") if p.is_dir())


def test_failure_mid_write_leaves_no_dataset(empty_store, monkeypatch):
    from minari.dataset._storages.hdf5_storage import HDF5Storage

    real_update = HDF5Storage.update_episodes

    def write_half_then_die(self, episodes):
        episodes = list(episodes)
        real_update(self, episodes[: len(episodes) // 2])
        raise KeyboardInterrupt("simulated kill mid-write")

    monkeypatch.setattr(HDF5Storage, "update_episodes", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        _write()
    ds_id = dataset_id(ENV, 5, "expert", "test")
    assert ds_id not in minari.list_local_datasets()
    assert not (empty_store / ds_id).exists()
    assert _merpo_dirs(empty_store) == []  # the half-written temporary store is gone too
    monkeypatch.undo()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(empty_store))
    _write()
    assert minari.load_dataset(ds_id).total_episodes == 10


def test_recreating_an_existing_id_needs_force(empty_store):
    ds_id = _write(n=10)
    with pytest.raises(FileExistsError, match="already exists; pass --force"):
        _write(n=4)
    assert minari.load_dataset(ds_id).total_episodes == 10
    _write(n=4, force=True)
    assert minari.load_dataset(ds_id).total_episodes == 4
    assert _merpo_dirs(empty_store) == [ds_id]


def test_generate_refuses_another_recipe_without_force(empty_store, tiny_preset):
    generate(ENV, tasks=[7], qualities=["random"], preset="test", progress=False)
    ds_id = dataset_id(ENV, 7, "random", "test")
    with pytest.raises(ValueError, match="exists with another recipe.*--force"):
        generate(ENV, tasks=[7], qualities=["random"], preset="test", episodes=9, progress=False)
    generate(
        ENV, tasks=[7], qualities=["random"], preset="test", episodes=9, force=True, progress=False
    )
    assert minari.load_dataset(ds_id).total_episodes == 9


def _interrupt_at_evaluation(monkeypatch, call: int):
    real = SACTrainer.evaluate
    calls = {"n": 0}

    def evaluate(self, episodes=None):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt("simulated kill during training")
        return real(self, episodes)

    monkeypatch.setattr(SACTrainer, "evaluate", evaluate)


def test_interrupted_generate_resumes_and_matches_an_uninterrupted_run(
    tmp_path, monkeypatch, tiny_preset
):
    tasks = [4, 9]
    # Uninterrupted reference run in its own store.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "reference"))
    generate(ENV, tasks=tasks, qualities=["expert"], preset="test", progress=False)
    reference = {t: load_record(behavior_dir("point-robot-wind", "test", 0), t) for t in tasks}

    # Interrupted run: killed at the third evaluation (iteration 200), after the checkpoint at 100.
    store = tmp_path / "interrupted"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    with monkeypatch.context() as m:
        _interrupt_at_evaluation(m, call=3)
        with pytest.raises(KeyboardInterrupt):
            generate(ENV, tasks=tasks, qualities=["expert"], preset="test", progress=False)
    directory = behavior_dir("point-robot-wind", "test", 0)
    assert (directory / TRAIN_STATE).exists()
    assert minari.list_local_datasets() == {}

    steps = {"n": 0}
    real_step = SACTrainer._env_step

    def counting_step(self):
        steps["n"] += 1
        real_step(self)

    monkeypatch.setattr(SACTrainer, "_env_step", counting_step)
    generate(ENV, tasks=tasks, qualities=["expert"], preset="test", progress=False)
    # Task 4's group resumed at iteration 100, not from scratch; task 9's group (the tiny
    # preset's groups are single tasks) had not started: it trains all 300 iterations.
    assert steps["n"] == (300 - 100) + 300
    assert not (directory / TRAIN_STATE).exists()
    for t in tasks:
        resumed = load_record(directory, t)
        np.testing.assert_array_equal(resumed.steps, reference[t].steps)
        # Checkpoints fall on episode boundaries and the RNG state is saved: same run.
        np.testing.assert_allclose(resumed.returns, reference[t].returns, rtol=1e-5)
        for name, value in reference[t].actor.items():
            torch.testing.assert_close(resumed.actor[name], value)


def test_finished_tasks_are_never_retrained(empty_store, tiny_preset, monkeypatch):
    generate(ENV, tasks=[2], qualities=["medium"], preset="test", progress=False)
    trained: list[tuple[int, ...]] = []
    real_init = SACTrainer.__init__

    def spy_init(self, env_id, tasks, *args, **kwargs):
        trained.append(tuple(tasks))
        real_init(self, env_id, tasks, *args, **kwargs)

    monkeypatch.setattr(SACTrainer, "__init__", spy_init)
    generate(ENV, tasks=[2, 3], qualities=["medium", "expert"], preset="test", progress=False)
    assert trained == [(3,)]
    assert set(minari.list_local_datasets()) == {
        dataset_id(ENV, t, q, "test") for t in (2, 3) for q in ("medium", "expert")
    }


def test_load_dataset_builds_a_missing_one_when_no_remote_answers(
    empty_store, tiny_preset, monkeypatch
):
    monkeypatch.setenv("MINARI_REMOTE", "nowhere://merpo")  # a remote Minari cannot reach
    ds_id = dataset_id(ENV, 11, "mixed", "test")
    with pytest.raises(
        FileNotFoundError,
        match=r"merpo-data generate merpo/PointRobotWind-v0 --tasks 11 --qualities mixed",
    ):
        load_dataset(ds_id, download=False)
    ds = load_dataset(ds_id)
    assert ds.total_episodes == 6
    assert ds.recover_environment().unwrapped.task == 11


def test_checkpoint_files_are_plain_state_dicts(empty_store, tiny_preset):
    generate(ENV, tasks=[0], qualities=["random"], preset="test", progress=False)
    path = behavior_dir("point-robot-wind", "test", 0) / "task-00.pt"
    state = torch.load(path, weights_only=True)
    assert state["steps"].tolist() == [0, 100, 200, 300]
    assert state["returns"].shape == (4,)
    assert all(v.shape[0] == 4 for v in state["actor"].values())
    assert not list(path.parent.glob("*.tmp"))


@pytest.fixture
def mid_episode_preset(monkeypatch, tiny_preset):
    """The tiny preset with checkpoints every 40 iterations: mid-episode (episodes last 25)."""
    preset = dataclasses.replace(
        tiny_preset,
        sac=dataclasses.replace(tiny_preset.sac, iterations=130, checkpoint_every=40),
    )
    monkeypatch.setattr(datasets, "get_preset", lambda env_id, name="default": preset)
    return preset


def _content_hashes(tasks) -> dict[int, str]:
    from merpo_data.datasets import existing_recipe

    return {t: existing_recipe(dataset_id(ENV, t, "expert", "test"))["content_hash"] for t in tasks}


def test_a_build_stopped_after_any_checkpoint_resumes_to_the_same_datasets(
    tmp_path, monkeypatch, mid_episode_preset
):
    """A dataset is a function of its recipe: a build killed after SAC checkpoint k (the
    first one, at iteration 0, included; later ones fall mid-episode) and run again writes
    the bytes an uninterrupted build writes."""
    tasks = [4]
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "reference"))
    generate(ENV, tasks=tasks, qualities=["expert"], preset="test", progress=False)
    reference = _content_hashes(tasks)
    for stop_call in (2, 3, 4):  # killed after the checkpoint at iteration 0, 40 or 80
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / f"stopped-{stop_call}"))
        with monkeypatch.context() as m:
            _interrupt_at_evaluation(m, call=stop_call)
            with pytest.raises(KeyboardInterrupt):
                generate(ENV, tasks=tasks, qualities=["expert"], preset="test", progress=False)
        state = torch.load(
            behavior_dir("point-robot-wind", "test", 0) / TRAIN_STATE, weights_only=True
        )
        assert state["trainer"]["iteration"] == 40 * (stop_call - 2)
        generate(ENV, tasks=tasks, qualities=["expert"], preset="test", progress=False)
        record = load_record(behavior_dir("point-robot-wind", "test", 0), 4)
        assert record.steps.tolist() == [0, 40, 80, 120, 130]  # no checkpoint twice
        assert _content_hashes(tasks) == reference, f"stopped at evaluation {stop_call}"


def test_an_older_train_state_without_its_episodes_restarts_the_group(
    tmp_path, monkeypatch, mid_episode_preset, capsys
):
    """A state that cannot resume exactly (no episodes in flight) is not resumed inexactly."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "reference"))
    generate(ENV, tasks=[4], qualities=["expert"], preset="test", progress=False)
    reference = _content_hashes([4])
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "old"))
    with monkeypatch.context() as m:
        _interrupt_at_evaluation(m, call=3)
        with pytest.raises(KeyboardInterrupt):
            generate(ENV, tasks=[4], qualities=["expert"], preset="test", progress=False)
    path = behavior_dir("point-robot-wind", "test", 0) / TRAIN_STATE
    state = torch.load(path, weights_only=True)
    del state["trainer"]["episodes"]
    torch.save(state, path)
    generate(ENV, tasks=[4], qualities=["expert"], preset="test", progress=False)
    assert "training tasks 4 from the start" in capsys.readouterr().err
    assert _content_hashes([4]) == reference


def _python(code: str, **kwargs):
    import subprocess
    import sys

    return subprocess.Popen([sys.executable, "-c", code], text=True, **kwargs)


def test_generate_removes_the_temporary_stores_of_killed_writers_only(empty_store, tiny_preset):
    import os
    import socket

    killed = _python(
        "import os, signal\n"
        "from merpo_data.store import temporary_store\n"
        "with temporary_store():\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    assert killed.wait() == -9
    tmp = empty_store / ".merpo-data" / "tmp"
    (orphan,) = tmp.iterdir()  # what the kill left behind
    live = tmp / f"{os.getpid()}~{socket.gethostname()}~abc"
    elsewhere = tmp / f"{killed.pid}~another-host~abc"
    unnamed = tmp / "0123abcd"
    for path in (live, elsewhere, unnamed):
        path.mkdir()
    generate(ENV, tasks=[0], qualities=["random"], preset="test", progress=False)
    assert not orphan.exists()
    assert live.exists() and elsewhere.exists() and unnamed.exists()


def test_a_second_generate_into_a_busy_store_says_who_holds_it(empty_store, capsys):
    import os
    import subprocess

    from merpo_data.cli import main
    from merpo_data.lock import LockHeld

    holder = _python(
        "import sys\n"
        "from merpo_data.store import store_lock\n"
        "with store_lock():\n"
        "    print('locked', flush=True)\n"
        "    sys.stdin.read()\n",
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={**os.environ},
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(LockHeld, match=rf"in use by pid {holder.pid} on \S+ since "):
            generate(ENV, tasks=[0], qualities=["random"], preset="test", progress=False)
        assert main(["generate", ENV, "--tasks", "0", "--qualities", "random", "--preset",
                     "test", "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"in use by pid {holder.pid}" in err
    finally:
        holder.stdin.close()
        holder.wait()
    assert not (empty_store / "merpo").exists() or minari.list_local_datasets() == {}
    generate(ENV, tasks=[0], qualities=["random"], preset="test", progress=False)  # free again


def test_a_full_disk_during_generate_is_one_line_and_a_rerun_resumes(
    tmp_path, monkeypatch, mid_episode_preset, capsys, disk_full_at_second_save
):
    """ENOSPC at the second behavior checkpoint: one line naming the file and that a rerun
    resumes; the rerun does, and writes what an uninterrupted build writes."""
    from merpo_data.cli import main

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "reference"))
    generate(ENV, tasks=[4], qualities=["expert"], preset="test", progress=False)
    reference = _content_hashes([4])
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "full"))
    argv = ["generate", ENV, "--tasks", "4", "--qualities", "expert", "--preset", "test",
            "--quiet"]
    with disk_full_at_second_save():
        assert main(argv) == 3
    err = capsys.readouterr().err
    state = behavior_dir("point-robot-wind", "test", 0) / TRAIN_STATE
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"no space left on the device writing {state}" in err
    assert "work finished so far is kept" in err and "rerun the same command" in err
    assert torch.load(state, weights_only=True)["trainer"]["iteration"] == 0  # whole
    assert main(argv) == 0
    assert _content_hashes([4]) == reference
