"""The generated Minari datasets: ids, round trip, env recovery, metadata, quality order."""

from __future__ import annotations

import json

import gymnasium as gym
import minari
import numpy as np
import pytest
from merpo_data import QUALITIES, dataset_id, generate, load_dataset
from minari.namespace import get_namespace_metadata

ENV = "merpo/PointRobotWind-v0"
TASKS = (0, 1, 2, 3, 40, 41)


def test_generated_ids_are_in_minaris_local_store(point_robot_store):
    local = minari.list_local_datasets()
    expected = {
        f"merpo/point-robot-wind/task-{t:02d}-{q}-test-v0" for t in TASKS for q in QUALITIES
    }
    assert expected <= set(local)
    assert dataset_id(ENV, 3, "medium") == "merpo/point-robot-wind/task-03-medium-v0"
    # The test preset's datasets never take the id of a real (default-preset) one.
    assert dataset_id(ENV, 3, "medium", "test") == "merpo/point-robot-wind/task-03-medium-test-v0"
    assert not any(minari.list_local_datasets(prefix="merpo/point-robot-wind/task-03-medium-v0"))
    # The behavior-policy cache is hidden: Minari lists nothing else of ours.
    assert {i for i in local if i.startswith("merpo/")} == expected


def test_generate_again_finds_the_same_ids_without_rebuilding(point_robot_store, monkeypatch):
    import merpo_data.datasets as datasets

    def fail(*args, **kwargs):
        raise AssertionError("nothing should be rebuilt")

    monkeypatch.setattr(datasets, "_build_quality", fail)
    monkeypatch.setattr(datasets, "ensure_behavior_policies", fail)
    ids = generate(ENV, tasks="0-3,40-41", preset="test", progress=False)
    assert ids == [dataset_id(ENV, t, q, "test") for t in TASKS for q in QUALITIES]


def test_minari_round_trip(point_robot_store):
    ds = minari.load_dataset(dataset_id(ENV, 2, "expert", "test"))
    assert ds.total_episodes == 100 and ds.total_steps == 2500
    episodes = list(ds.iterate_episodes())
    for ep in episodes[:5]:
        assert ep.observations.shape == (26, 2) and ep.actions.shape == (25, 2)
        assert ep.rewards.shape == (25,)
        # Point-Robot-Wind never terminates; every episode is truncated at the horizon.
        assert not ep.terminations.any()
        assert ep.truncations[-1] and not ep.truncations[:-1].any()
        assert np.all(np.abs(ep.actions) <= 0.1 + 1e-6)
    # The stored transitions are the env's own: replaying an episode's actions reproduces it.
    env = ds.recover_environment()
    obs, _ = env.reset()
    np.testing.assert_allclose(obs, episodes[0].observations[0])
    for t, action in enumerate(episodes[0].actions):
        obs, reward, *_ = env.step(action)
        np.testing.assert_allclose(obs, episodes[0].observations[t + 1], rtol=1e-6, atol=1e-7)
        assert reward == pytest.approx(episodes[0].rewards[t], rel=1e-6)


@pytest.mark.parametrize("task", [1, 41])
def test_recover_environment_makes_the_exact_task(point_robot_store, task):
    ds = minari.load_dataset(dataset_id(ENV, task, "medium", "test"))
    for eval_env in (True, False):
        env = ds.recover_environment(eval_env=eval_env)
        assert env.unwrapped.task == task
        assert env.spec.max_episode_steps == 25
    import merpo_envs

    assert env.unwrapped.task_params == merpo_envs.get_meta_info(ENV).task_params(task)


def test_metadata_and_reference_scores(point_robot_store):
    import merpo_envs

    for q in QUALITIES:
        ds = minari.load_dataset(dataset_id(ENV, 40, q, "test"))
        meta = ds.storage.metadata
        assert meta["ref_min_score"] < meta["ref_max_score"]
        assert "merpo-envs==0.1.0" in meta["requirements"]
        assert meta["algorithm_name"] and meta["author"] and meta["code_permalink"]
        wind = merpo_envs.get_meta_info(ENV).task_params(40)["wind"]
        assert json.dumps(wind) in meta["description"] and "task 40" in meta["description"]
        assert f"Quality '{q}'" in meta["description"]
    # Reference scores are per task (uniform policy and expert checkpoint), shared by qualities.
    refs = {
        (
            minari.load_dataset(dataset_id(ENV, 40, q, "test")).storage.metadata["ref_min_score"],
            minari.load_dataset(dataset_id(ENV, 40, q, "test")).storage.metadata["ref_max_score"],
        )
        for q in QUALITIES
    }
    assert len(refs) == 1


def _mean_return(ds) -> float:
    return float(np.mean([ep.rewards.sum() for ep in ds.iterate_episodes()]))


def test_normalized_scores_order_the_qualities(point_robot_store):
    """random ~ 0, expert ~ 1 in Minari's normalized score, and expert > medium > random."""
    for task in TASKS:
        ds = {q: minari.load_dataset(dataset_id(ENV, task, q, "test")) for q in QUALITIES}
        score = {
            q: float(minari.get_normalized_score(ds[q], np.array(_mean_return(ds[q]))))
            for q in QUALITIES
        }
        assert abs(score["random"]) < 0.2, score
        assert score["expert"] > 0.8, score
        assert score["expert"] > score["medium"] + 0.15 > score["random"] + 0.3, score
        assert score["expert"] > score["mixed"] > score["random"], score


def test_expert_beats_medium_beats_random_on_every_task(point_robot_store):
    for task in TASKS:
        r = {
            q: _mean_return(minari.load_dataset(dataset_id(ENV, task, q, "test")))
            for q in QUALITIES
        }
        # Margins in return units: random is ~ -30, a trained expert ~ -10 on this env.
        assert r["expert"] > r["medium"] + 3 > r["random"] + 6, (task, r)


def test_namespaces_have_descriptions(point_robot_store):
    assert "MerPO" in get_namespace_metadata("merpo")["description"]
    desc = get_namespace_metadata("merpo/point-robot-wind")["description"]
    assert "merpo/PointRobotWind-v0" in desc and "50 tasks" in desc


def test_load_dataset_returns_the_local_one(point_robot_store):
    ds = load_dataset(dataset_id(ENV, 0, "mixed", "test"))
    assert ds.spec.dataset_id == "merpo/point-robot-wind/task-00-mixed-test-v0"
    assert isinstance(ds.recover_environment(), gym.Env)
