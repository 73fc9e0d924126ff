"""Batched termination functions agree with the envs' own ``terminated`` on real transitions."""

import gymnasium as gym
import merpo_envs
import numpy as np
import pytest
import torch
from envs_helpers import ALL_IDS, ANT, CHEETAH, POINT, WALKER, rollout


def _transitions(env_id, task, seed, steps):
    env = gym.make(env_id, task=task)
    return rollout(env, seed=seed, steps=steps)


@pytest.mark.parametrize("env_id,task", [(ANT, 1), (WALKER, 0), (WALKER, 22)])
def test_termination_fn_matches_env_flag_numpy_and_torch(env_id, task):
    info = merpo_envs.get_meta_info(env_id)
    data = _transitions(env_id, task, seed=task, steps=600)
    flags = data["terminated"]
    assert flags.any() and not flags.all()  # both outcomes are exercised

    predicted = info.terminated_np(data["obs"], data["actions"], data["next_obs"])
    assert predicted.dtype == np.bool_ and predicted.shape == flags.shape
    np.testing.assert_array_equal(predicted, flags)

    for dtype in (torch.float64, torch.float32):
        as_torch = [torch.as_tensor(data[k], dtype=dtype) for k in ("obs", "actions", "next_obs")]
        predicted_torch = info.terminated_torch(*as_torch)
        assert predicted_torch.dtype == torch.bool
        np.testing.assert_array_equal(predicted_torch.numpy(), flags)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_termination_fn_is_batched_over_leading_axes(env_id):
    info = merpo_envs.get_meta_info(env_id)
    data = _transitions(env_id, info.train_tasks[0], seed=5, steps=60)
    flat = info.terminated_np(data["obs"], data["actions"], data["next_obs"])

    def fold(x):  # (60, d) -> (3, 4, 5, d)
        return x.reshape(3, 4, 5, x.shape[-1])

    folded = info.terminated_np(fold(data["obs"]), fold(data["actions"]), fold(data["next_obs"]))
    assert folded.shape == (3, 4, 5)
    np.testing.assert_array_equal(folded.reshape(-1), flat)
    folded_torch = info.terminated_torch(
        *(torch.as_tensor(fold(data[k])) for k in ("obs", "actions", "next_obs"))
    )
    assert folded_torch.shape == (3, 4, 5)
    np.testing.assert_array_equal(folded_torch.reshape(-1).numpy(), flat)


@pytest.mark.parametrize("env_id", [POINT, CHEETAH])
def test_envs_without_termination_never_terminate(env_id):
    info = merpo_envs.get_meta_info(env_id)
    data = _transitions(env_id, info.train_tasks[0], seed=2, steps=300)
    assert not data["terminated"].any()
    big = np.full((7, info.obs_dim), 1e6)
    assert not info.terminated_np(big, np.zeros((7, info.act_dim)), big).any()


@pytest.mark.parametrize("env_id", [ANT, WALKER])
def test_non_finite_or_fallen_states_terminate(env_id):
    info = merpo_envs.get_meta_info(env_id)
    obs = np.zeros((4, info.obs_dim))
    obs[:, 0] = 0.9 if env_id == ANT else 1.2  # healthy height
    obs[1, 0] = np.nan
    obs[2, 0] = 0.1  # fallen
    obs[3, 0] = 2.5  # too high
    act = np.zeros((4, info.act_dim))
    expected = [False, True, True, True]
    np.testing.assert_array_equal(info.terminated_np(obs, act, obs), expected)
    np.testing.assert_array_equal(
        info.terminated_torch(torch.as_tensor(obs), torch.as_tensor(act), torch.as_tensor(obs)),
        expected,
    )


def test_walker_torso_angle_terminates():
    info = merpo_envs.get_meta_info(WALKER)
    obs = np.zeros((3, 17))
    obs[:, 0] = 1.25
    obs[:, 1] = [0.5, 1.5, -1.5]
    np.testing.assert_array_equal(info.terminated_np(obs, None, obs), [False, True, True])
