"""Registration: ids, string entry points, JSON-able specs, the ``merpo_envs:`` prefix."""

import json

import gymnasium as gym
import merpo_envs
import numpy as np
import pytest
from envs_helpers import ALL_IDS, POINT, WALKER


def test_import_registers_every_id_with_a_string_entry_point_and_plain_int_task():
    assert set(merpo_envs.ENV_IDS) == set(ALL_IDS)
    for env_id in ALL_IDS:
        spec = gym.spec(env_id)
        info = merpo_envs.get_meta_info(env_id)
        assert isinstance(spec.entry_point, str) and ":" in spec.entry_point
        assert type(spec.kwargs["task"]) is int
        assert spec.kwargs["task"] == info.train_tasks[0]
        assert spec.max_episode_steps == info.max_episode_steps
        json.loads(spec.to_json())  # Minari stores the spec as JSON


def test_make_with_module_prefix_and_register_envs():
    gym.register_envs(merpo_envs)
    env = gym.make("merpo_envs:merpo/PointRobotWind-v0", task=3)
    assert env.unwrapped.task == 3
    assert env.spec.id == POINT
    assert merpo_envs.get_meta_info("merpo_envs:" + POINT) is merpo_envs.get_meta_info(POINT)


def test_numpy_integer_task_is_accepted_and_stored_as_plain_int_in_the_spec():
    env = gym.make(WALKER, task=np.int64(21))
    assert env.unwrapped.task == 21 and type(env.unwrapped.task) is int
    assert type(env.spec.kwargs["task"]) is int
    assert json.loads(env.spec.to_json())["kwargs"]["task"] == 21
    env.close()


def test_spec_recreates_the_same_task():
    env = gym.make(WALKER, task=7)
    again = gym.make(env.spec)
    assert again.unwrapped.task == 7
    np.testing.assert_array_equal(again.unwrapped.model.body_mass, env.unwrapped.model.body_mass)


def test_default_task_is_the_first_training_task():
    for env_id in ALL_IDS:
        info = merpo_envs.get_meta_info(env_id)
        assert gym.make(env_id).unwrapped.task == info.train_tasks[0]


def test_unknown_env_id_names_the_valid_ids():
    with pytest.raises(ValueError, match="merpo/PointRobotWind-v0"):
        merpo_envs.get_meta_info("merpo/Nope-v0")
