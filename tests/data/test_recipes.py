"""Datasets as a pure function of their recipe: reference scores, stored infos, the recipe in
the metadata, subset builds equal to full ones, shipped behavior policies."""

from __future__ import annotations

import json
from importlib.metadata import version
from pathlib import Path

import merpo_data.datasets as datasets
import minari
import numpy as np
import pytest
from merpo_data import dataset_id, generate
from merpo_data.cli import main as data_main
from merpo_data.datasets import RECIPE_KEY, reference_scores
from merpo_data.integrity import content_hash, read_episodes
from merpo_data.presets import get_preset

ENV = "merpo/PointRobotWind-v0"


def _recipe(ds_id: str) -> dict:
    return json.loads(minari.load_dataset(ds_id).storage.metadata[RECIPE_KEY])


def _hashes(ids) -> dict[str, str]:
    return {i: _recipe(i)["content_hash"] for i in ids}


def test_reference_scores_are_100_episode_means(point_robot_store):
    """ref_max: the expert policy over 100 episodes collected as its dataset was; ref_min:
    the uniform policy over 100 episodes (App. A.2.2 qualities)."""
    for task in (1, 40):
        meta = minari.load_dataset(dataset_id(ENV, task, "expert", "test")).storage.metadata
        assert meta["num_episodes_average_score"] == 100
        lo, hi = meta["ref_min_score"], meta["ref_max_score"]
        for quality, ref in (("expert", hi), ("random", lo)):
            ds = minari.load_dataset(dataset_id(ENV, task, quality, "test"))
            mean = np.mean([ep.rewards.sum() for ep in ds.iterate_episodes()])
            assert ref == pytest.approx(mean, abs=1.5)  # other episodes, same policy
            assert ref != pytest.approx(mean, abs=1e-9)  # ... on a stream of their own


def test_reference_scores_are_reproduced_by_reference_scores(point_robot_store):
    from merpo_data.behavior import ensure_behavior_policies

    preset = get_preset(ENV, "test")
    records = ensure_behavior_policies(ENV, [40, 41], preset, progress=False)
    refs = reference_scores(ENV, (40, 41), records, preset, 0)
    meta = minari.load_dataset(dataset_id(ENV, 41, "medium", "test")).storage.metadata
    assert refs[41] == (meta["ref_min_score"], meta["ref_max_score"])


def test_expert_not_above_uniform_fails_with_one_line(
    point_robot_store, tmp_path, monkeypatch, capsys
):
    import shutil

    store = tmp_path / "store"
    cache = Path(".merpo-data") / "behavior"
    shutil.copytree(point_robot_store / cache, store / cache)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    # the expert's 100-episode mean below the uniform policy's (what Half-Cheetah's
    # tiny test preset gave): generation stops before writing anything
    returns = iter([np.array([-10.0, -10.0]), np.array([-12.0, -9.0])])
    monkeypatch.setattr(datasets, "mean_returns", lambda episodes: next(returns))
    argv = ["generate", ENV, "--tasks", "0-1", "--preset", "test", "--quiet"]
    assert data_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "task 0: the expert policy's mean return -12.000 is not above the uniform" in err
    assert not list(store.glob("merpo/*/task-*"))


def test_step_infos_are_stored(point_robot_store):
    """Point-Robot-Wind's sparse reward (and the task) per step, aligned with the rewards."""
    ds = minari.load_dataset(dataset_id(ENV, 2, "expert", "test"))
    for ep in list(ds.iterate_episodes())[:10]:
        sparse = ep.infos["sparse_reward"]
        assert sparse.shape == ep.rewards.shape
        expected = np.where(ep.rewards >= -0.2, ep.rewards + 1.0, 0.0)
        np.testing.assert_allclose(sparse, expected)
        assert (ep.infos["task"] == 2).all()
    assert (np.concatenate([e.infos["sparse_reward"] for e in ds.iterate_episodes()]) > 0).any()


def test_recipe_and_requirements_in_the_metadata_and_info(point_robot_store, capsys):
    ds_id = dataset_id(ENV, 3, "medium", "test")
    ds = minari.load_dataset(ds_id)
    recipe = _recipe(ds_id)
    assert {k: recipe[k] for k in ("preset", "seed", "episodes", "task", "quality")} == {
        "preset": "test", "seed": 0, "episodes": 100, "task": 3, "quality": "medium"
    }  # fmt: skip
    assert recipe["task_group"] == [2, 3]
    assert recipe["versions"]["mujoco"] == version("mujoco")
    assert recipe["versions"]["merpo-data"] == version("merpo-data")
    assert recipe["content_hash"] == content_hash(read_episodes(ds))
    requirements = ds.storage.metadata["requirements"]
    assert f"mujoco=={version('mujoco')}" in requirements
    assert f"torch=={version('torch')}" in requirements
    assert data_main(["info", ds_id]) == 0
    out = capsys.readouterr().out
    assert "recipe:       preset test, seed 0, episodes 100, task group 2-3" in out
    assert f"content hash: {recipe['content_hash']}" in out
    assert f"mujoco {version('mujoco')}" in out


def test_mujoco_is_pinned_to_the_installed_version():
    import tomllib

    root = Path(__file__).resolve().parents[2]
    deps = tomllib.loads((root / "packages/merpo-envs/pyproject.toml").read_text())["project"]
    assert f"mujoco=={version('mujoco')}" in deps["dependencies"]


def test_a_task_alone_is_bit_identical_to_the_task_among_others(
    point_robot_store, tmp_path, monkeypatch
):
    """The session store built tasks 0-3 and 40-41 in one call; task 1 alone, in a store of
    its own (its behavior policies trained again), gives the very same datasets."""
    ids = [dataset_id(ENV, 1, q, "test") for q in ("medium", "expert", "random")]
    full = _hashes(ids)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "alone"))
    generate(ENV, tasks=[1], qualities=["medium", "expert", "random"], preset="test",
             progress=False)  # fmt: skip
    assert _hashes(ids) == full
    a = list(minari.load_dataset(ids[0]).iterate_episodes())
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(point_robot_store))
    b = list(minari.load_dataset(ids[0]).iterate_episodes())
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.rewards, y.rewards)


def test_shipped_policies_rebuild_what_training_built(point_robot_store, tmp_path, monkeypatch):
    """Export the session store's trained policies of tasks 0-1 as a shipped file; a fresh
    store then builds the same datasets from it without training; --retrain trains."""
    import merpo_data.behavior as behavior
    import merpo_data.shipped as shipped

    monkeypatch.setattr(shipped, "POLICY_DIR", tmp_path / "policies")
    path = shipped.export_shipped(ENV, "test", 0, tasks=[0, 1])
    assert path == tmp_path / "policies" / "point-robot-wind-test-seed0.safetensors"
    ids = [dataset_id(ENV, t, q, "test") for t in (0, 1) for q in ("medium", "mixed")]
    trained = _hashes(ids)

    calls = []

    def no_training(env_id, tasks, *args, **kwargs):
        calls.append(tuple(tasks))
        raise AssertionError("shipped policies must not be trained again")

    monkeypatch.setattr(behavior, "_train_group", no_training)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "fresh"))
    generate(ENV, tasks="0-1", qualities=["medium", "mixed"], preset="test", progress=False)
    assert _hashes(ids) == trained and calls == []
    with pytest.raises(AssertionError, match="must not be trained"):
        generate(ENV, tasks="0", qualities=["medium"], preset="test", progress=False,
                 force=True, retrain=True)  # fmt: skip
    assert calls == [(0, 1)]


def test_the_shipped_point_robot_policies():
    from merpo_data.presets import get_preset
    from merpo_data.shipped import load_shipped, shipped_path

    path = shipped_path("point-robot-wind", "default", 0)
    records = load_shipped(path, range(50))
    sac = get_preset(ENV).sac
    for task, rec in records.items():
        assert rec.task == task and rec.num_checkpoints == sac.iterations // 250 + 1
        assert rec.actor["trunk.net.0.weight"].shape == (rec.num_checkpoints, 2, sac.hidden)
        assert rec.returns[rec.expert_index] > rec.random_return
    with pytest.raises(ValueError, match="ships no policies of task 50"):
        load_shipped(path, [50])


def test_cached_policies_of_another_grouping_are_not_used(point_robot_store, tmp_path, monkeypatch):
    """Checkpoint files that do not say they trained in the task's group (older merpo-data
    trained "the tasks asked for") would make the data depend on the request: retrain."""
    import shutil

    import merpo_data.behavior as behavior
    import torch
    from merpo_data.atomic import atomic_torch_save
    from merpo_data.behavior import ensure_behavior_policies

    cache = Path(".merpo-data") / "behavior"
    shutil.copytree(point_robot_store / cache, tmp_path / cache)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    preset = get_preset(ENV, "test")
    assert ensure_behavior_policies(ENV, [3], preset, progress=False)[3].group == (2, 3)
    path = tmp_path / cache / "point-robot-wind" / "test-seed0" / "task-02.pt"
    state = torch.load(path, weights_only=True)
    del state["group"]
    atomic_torch_save(state, path)
    calls = []

    def train(env_id, tasks, *args, **kwargs):
        calls.append(tuple(tasks))
        raise KeyboardInterrupt("stop before training")

    monkeypatch.setattr(behavior, "_train_group", train)
    with pytest.raises(KeyboardInterrupt):
        ensure_behavior_policies(ENV, [3], preset, progress=False)
    assert calls == [(2, 3)]


def test_an_export_records_every_preset_that_rolls_out_its_policies():
    from merpo_data.ids import QUALITIES
    from merpo_data.shipped import rollout_presets, shipped_metadata, shipped_path

    assert rollout_presets("merpo/Walker2dParams-v0", "default") == ["default", "test"]
    assert rollout_presets(ENV, "default") == ["default"]  # its test preset trains its own
    assert rollout_presets(ENV, "test") == ["test"]
    recorded = shipped_metadata(shipped_path("walker-2d-params", "default", 0))["datasets"]
    walker = "merpo/Walker2dParams-v0"
    for preset in ("default", "test"):
        assert {dataset_id(walker, t, q, preset) for t in range(25) for q in QUALITIES} <= set(
            recorded
        )
