"""Seeded episodes are reproducible; the envs work inside Gymnasium's vector envs."""

import gymnasium as gym
import merpo_envs
import numpy as np
import pytest
from envs_helpers import ALL_IDS, MUJOCO_IDS, POINT, WALKER, rollout


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_seeded_episodes_are_reproducible(env_id):
    task = merpo_envs.get_meta_info(env_id).test_tasks[-1]
    first = rollout(gym.make(env_id, task=task), seed=42, steps=80)
    second = rollout(gym.make(env_id, task=task), seed=42, steps=80)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])


@pytest.mark.parametrize("env_id", MUJOCO_IDS)
def test_different_seeds_give_different_starts(env_id):
    env = gym.make(env_id)
    starts = [env.reset(seed=seed)[0] for seed in (0, 1, 0)]
    assert not np.array_equal(starts[0], starts[1])
    np.testing.assert_array_equal(starts[0], starts[2])


def test_sync_vector_env_with_one_point_robot_per_task():
    tasks = [0, 13, 40, 49]
    winds = np.array([merpo_envs.get_meta_info(POINT).task_params(t)["wind"] for t in tasks])
    envs = gym.vector.SyncVectorEnv([lambda t=t: gym.make(POINT, task=t) for t in tasks])
    obs, infos = envs.reset(seed=0)
    np.testing.assert_array_equal(obs, np.zeros((4, 2)))
    np.testing.assert_array_equal(infos["task"], tasks)
    action = np.tile(np.array([0.1, 0.0], dtype=np.float32), (4, 1))
    for step in range(1, 26):
        obs, rewards, terminated, truncated, _ = envs.step(action)
        expected = step * (np.array([0.1, 0.0]) + winds)
        np.testing.assert_allclose(obs, expected, atol=1e-6)
        np.testing.assert_allclose(rewards, -np.linalg.norm(expected - [1, 0], axis=1), atol=1e-6)
        assert not terminated.any()
        assert truncated.all() == (step == 25)
    envs.close()


def test_sync_vector_env_with_walker_tasks_differs_per_task():
    tasks = (0, 10, 24)
    envs = gym.vector.SyncVectorEnv([lambda t=t: gym.make(WALKER, task=t) for t in tasks])
    envs.reset(seed=[3, 3, 3])  # same start in every sub-env
    actions = np.full((3, 6), 0.5, dtype=np.float32)
    for _ in range(5):
        obs, _, _, _, infos = envs.step(actions)
    assert obs.shape == (3, 17)
    assert envs.get_attr("task") == tasks
    assert not np.allclose(obs[0], obs[1]) and not np.allclose(obs[1], obs[2])
    envs.close()


def test_async_vector_env_with_one_walker_per_task():
    tasks = (20, 21)
    envs = gym.vector.AsyncVectorEnv([lambda t=t: gym.make(WALKER, task=t) for t in tasks])
    try:
        obs, _ = envs.reset(seed=[5, 5])
        np.testing.assert_array_equal(obs[0], obs[1])  # same seed, same start
        actions = np.full((2, 6), -0.3, dtype=np.float32)
        for _ in range(5):
            obs, rewards, _, _, _ = envs.step(actions)
        assert obs.shape == (2, 17) and rewards.shape == (2,)
        assert envs.get_attr("task") == tasks
        # The sub-env processes run each task's physics: the same as a local env of that task.
        local = gym.make(WALKER, task=21)
        local.reset(seed=5)
        for _ in range(5):
            local_obs, *_ = local.step(actions[1])
        np.testing.assert_allclose(obs[1], local_obs, rtol=1e-12, atol=1e-12)
    finally:
        envs.close()
