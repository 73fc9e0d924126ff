"""Spaces, horizons and Gymnasium's env checker (the paper's App. A.1 on Gymnasium v5)."""

import gymnasium as gym
import merpo_envs
import numpy as np
import pytest
from envs_helpers import ALL_IDS, ANT, CHEETAH, POINT, WALKER
from gymnasium.utils.env_checker import check_env

# env id -> (obs dim, act dim, action bound, horizon, num tasks, train tasks, test tasks)
TABLE = {
    POINT: (2, 2, 0.1, 25, 50, tuple(range(40)), tuple(range(40, 50))),
    CHEETAH: (17, 6, 1.0, 200, 2, (0, 1), (0, 1)),
    ANT: (27, 8, 1.0, 200, 2, (0, 1), (0, 1)),
    WALKER: (17, 6, 1.0, 200, 25, tuple(range(20)), tuple(range(20, 25))),
}
CHECKED_TASKS = {POINT: (0, 39, 40, 49), CHEETAH: (0, 1), ANT: (0, 1), WALKER: (0, 19, 24)}


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_spaces_and_meta_info_follow_the_spec_table(env_id):
    obs_dim, act_dim, bound, horizon, num_tasks, train, test = TABLE[env_id]
    info = merpo_envs.get_meta_info(env_id)
    assert (info.obs_dim, info.act_dim, info.max_episode_steps) == (obs_dim, act_dim, horizon)
    assert (info.num_tasks, info.train_tasks, info.test_tasks) == (num_tasks, train, test)
    assert info.tasks == tuple(range(num_tasks))
    env = gym.make(env_id)
    assert env.observation_space.shape == (obs_dim,)
    assert env.action_space.shape == (act_dim,)
    np.testing.assert_array_equal(env.action_space.low, np.float32(-bound))
    np.testing.assert_array_equal(env.action_space.high, np.float32(bound))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (obs_dim,) and env.observation_space.contains(obs)


# Unbounded observation boxes are intended (positions and velocities).
@pytest.mark.filterwarnings("ignore:.*Box observation space m.*:UserWarning")
@pytest.mark.parametrize(
    "env_id,task", [(env_id, task) for env_id in ALL_IDS for task in CHECKED_TASKS[env_id]]
)
def test_gymnasium_env_checker_passes(env_id, task):
    env = gym.make(env_id, task=task, disable_env_checker=True)
    check_env(env.unwrapped, skip_render_check=True)


@pytest.mark.parametrize("env_id", [POINT, CHEETAH])
def test_episodes_are_truncated_at_the_horizon(env_id):
    env = gym.make(env_id)
    env.reset(seed=0)
    horizon = merpo_envs.get_meta_info(env_id).max_episode_steps
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    for step in range(1, horizon + 1):
        _, _, terminated, truncated, _ = env.step(zero)
        assert not terminated
        assert truncated == (step == horizon)


def test_ant_standing_still_is_truncated_at_the_horizon():
    # Zero torques: the ant stays on its legs (healthy) until the 200-step truncation.
    env = gym.make(ANT)
    env.reset(seed=1)
    zero = np.zeros(env.action_space.shape, dtype=np.float32)
    steps = 0
    while True:
        _, _, terminated, truncated, _ = env.step(zero)
        steps += 1
        if terminated or truncated:
            break
    assert truncated and not terminated and steps == 200
