"""Every bad input gets one clear error naming the valid values."""

import gymnasium as gym
import merpo_envs
import numpy as np
import pytest
from envs_helpers import ALL_IDS, MUJOCO_IDS, POINT


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_out_of_range_task_is_a_value_error_naming_the_range(env_id):
    info = merpo_envs.get_meta_info(env_id)
    for task in (-1, info.num_tasks, 1000):
        with pytest.raises(ValueError, match=rf"0\.\.{info.num_tasks - 1}"):
            gym.make(env_id, task=task)


@pytest.mark.parametrize("env_id", ALL_IDS)
@pytest.mark.parametrize("task", [1.0, "1", None, True, np.float64(1.0)])
def test_non_integer_task_is_a_type_error_naming_the_range(env_id, task):
    info = merpo_envs.get_meta_info(env_id)
    with pytest.raises(TypeError, match=rf"task must be an int in 0\.\.{info.num_tasks - 1}"):
        gym.make(env_id, task=task)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_numpy_integer_tasks_are_accepted_as_plain_ints(env_id):
    env = gym.make(env_id, task=np.int64(1))
    assert env.unwrapped.task == 1 and type(env.unwrapped.task) is int
    env.unwrapped.set_task(np.int32(0))
    env.reset(seed=0)
    assert env.unwrapped.task == 0 and type(env.unwrapped.task) is int


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_unknown_keyword_is_a_type_error_naming_the_valid_keywords(env_id):
    with pytest.raises(TypeError, match=r"unknown keyword argument\(s\) wind_scale; valid .* task"):
        gym.make(env_id, wind_scale=2.0)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_bad_set_task_raises_at_once_and_keeps_the_task(env_id):
    info = merpo_envs.get_meta_info(env_id)
    env = gym.make(env_id, task=1)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="valid tasks"):
        env.unwrapped.set_task(info.num_tasks)
    with pytest.raises(TypeError, match="task must be an int"):
        env.unwrapped.set_task("0")
    env.reset(seed=0)
    assert env.unwrapped.task == 1


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_task_params_of_a_bad_task_raises(env_id):
    info = merpo_envs.get_meta_info(env_id)
    with pytest.raises(ValueError, match="valid tasks"):
        info.task_params(info.num_tasks)
    assert info.check_task(np.int64(0)) == 0


BAD_POINT_ACTIONS = [
    np.zeros(3),
    np.zeros((1, 2)),
    np.array([np.nan, 0.0]),
    np.array([0.0, np.inf]),
    "up",
    [0.05],
]


@pytest.mark.parametrize("action", BAD_POINT_ACTIONS, ids=repr)
def test_point_robot_rejects_bad_actions(action):
    env = gym.make(POINT, disable_env_checker=True)
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action must be 2 finite numbers in \[-0\.1, 0\.1\]"):
        env.unwrapped.step(action)


@pytest.mark.parametrize("env_id", MUJOCO_IDS)
def test_mujoco_envs_reject_wrong_shapes_and_nan_actions(env_id):
    info = merpo_envs.get_meta_info(env_id)
    env = gym.make(env_id, disable_env_checker=True)
    env.reset(seed=0)
    for action in (np.zeros(info.act_dim + 1), np.full(info.act_dim, np.nan)):
        with pytest.raises(ValueError, match=rf"action must be {info.act_dim} finite numbers"):
            env.unwrapped.step(action)
