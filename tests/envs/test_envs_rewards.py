"""Rewards recomputed from the simulator state on sampled steps (App. A.1, Gymnasium v5)."""

import gymnasium as gym
import merpo_envs
import numpy as np
import pytest
from envs_helpers import ANT, CHEETAH, POINT, WALKER

STEPS = 60


def _random_actions(space, n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(space.low, space.high, size=(n, *space.shape)).astype(np.float32)


@pytest.mark.parametrize("task", [0, 1])
def test_half_cheetah_reward_is_direction_times_x_velocity_minus_control_cost(task):
    env = gym.make(CHEETAH, task=task)
    sim = env.unwrapped
    direction = merpo_envs.get_meta_info(CHEETAH).task_params(task)["direction"]
    assert direction == (1.0, -1.0)[task]
    env.reset(seed=task)
    for action in _random_actions(env.action_space, STEPS, seed=task):
        x_before = sim.data.qpos[0]
        _, reward, _, _, info = env.step(action)
        x_velocity = (sim.data.qpos[0] - x_before) / 0.05
        expected = direction * x_velocity - 0.05 * np.sum(np.square(action.astype(np.float64)))
        assert reward == pytest.approx(expected, rel=1e-9, abs=1e-9)
        assert info["task"] == task


@pytest.mark.parametrize("task", [0, 1])
def test_ant_reward_is_direction_velocity_healthy_control_and_contact_terms(task):
    env = gym.make(ANT, task=task)
    sim = env.unwrapped
    direction = (1.0, -1.0)[task]
    env.reset(seed=10 + task)
    contact_seen = False
    for action in _random_actions(env.action_space, STEPS, seed=task):
        x_before = sim.data.body("torso").xpos[0]
        _, reward, terminated, _, _ = env.step(action)
        x_velocity = (sim.data.body("torso").xpos[0] - x_before) / 0.05
        z = sim.data.qpos[2]
        healthy = float(0.2 <= z <= 1.0)
        contact = np.clip(sim.data.cfrc_ext, -1.0, 1.0)
        contact_seen |= bool(np.any(contact != 0))
        expected = (
            direction * x_velocity
            + healthy
            - 0.5 * np.sum(np.square(action.astype(np.float64)))
            - 5e-4 * np.sum(np.square(contact))
        )
        assert reward == pytest.approx(expected, rel=1e-9, abs=1e-9)
        if terminated:
            break
    assert contact_seen  # the contact term was exercised


def test_walker_reward_is_x_velocity_plus_healthy_minus_control_cost():
    env = gym.make(WALKER, task=5)
    sim = env.unwrapped
    env.reset(seed=3)
    for action in _random_actions(env.action_space, STEPS, seed=3):
        x_before = sim.data.qpos[0]
        _, reward, terminated, _, _ = env.step(action)
        x_velocity = (sim.data.qpos[0] - x_before) / 0.008
        z, angle = sim.data.qpos[1], sim.data.qpos[2]
        healthy = float(0.8 < z < 2.0 and -1.0 < angle < 1.0)
        expected = x_velocity + healthy - 1e-3 * np.sum(np.square(action.astype(np.float64)))
        assert reward == pytest.approx(expected, rel=1e-9, abs=1e-9)
        if terminated:
            break


def test_point_robot_reward_is_minus_distance_to_goal_and_sparse_reward_in_info():
    wind = np.asarray(merpo_envs.get_meta_info(POINT).task_params(7)["wind"])
    env = gym.make(POINT, task=7)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [0.0, 0.0])
    # Push straight at the goal so the sparse reward becomes positive near the end.
    saw_sparse = False
    for _ in range(25):
        action = np.clip(np.array([1.0, 0.0]) - obs - wind, -0.1, 0.1).astype(np.float32)
        next_obs, reward, _, _, info = env.step(action)
        np.testing.assert_allclose(next_obs, obs + action.astype(np.float64) + wind, atol=1e-12)
        distance = np.linalg.norm(next_obs - [1.0, 0.0])
        assert reward == pytest.approx(-distance)
        assert info["sparse_reward"] == pytest.approx(1.0 - distance if distance <= 0.2 else 0.0)
        saw_sparse |= info["sparse_reward"] > 0
        obs = next_obs
    assert saw_sparse


def test_point_robot_actions_are_clipped_to_the_box():
    wind = np.asarray(merpo_envs.get_meta_info(POINT).task_params(0)["wind"])
    env = gym.make(POINT, task=0, disable_env_checker=True)
    env.reset(seed=0)
    obs, _, _, _, _ = env.step(np.array([5.0, -5.0], dtype=np.float32))
    np.testing.assert_allclose(obs, np.array([0.1, -0.1]) + wind, atol=1e-7)


def test_cheetah_directions_mirror_the_forward_reward_on_the_same_trajectory():
    actions = _random_actions(gym.make(CHEETAH).action_space, 30, seed=4)
    infos = []
    for task in (0, 1):
        env = gym.make(CHEETAH, task=task)
        env.reset(seed=4)
        infos.append([env.step(a)[4] for a in actions])
    for fwd, back in zip(*infos, strict=True):
        assert fwd["x_velocity"] == back["x_velocity"]
        assert fwd["reward_forward"] == -back["reward_forward"]
