"""Task lists (seeded; App. A.1), task parameters, set_task and Walker's physics per task."""

import json
import os

import gymnasium as gym
import gymnasium.envs.mujoco
import merpo_envs
import mujoco
import numpy as np
import pytest
from envs_helpers import ALL_IDS, ANT, CHEETAH, POINT, WALKER, rollout

WALKER_XML = os.path.join(
    os.path.dirname(gymnasium.envs.mujoco.__file__), "assets", "walker2d_v5.xml"
)
WALKER_PARAMS = ("body_mass", "body_inertia", "dof_damping", "geom_friction")


def _expected_walker_multipliers():
    """Recomputed here from rand_param_envs' recipe (not from merpo_envs)."""
    model = mujoco.MjModel.from_xml_path(WALKER_XML)
    rng = np.random.RandomState(1337)
    tasks = []
    for _ in range(25):
        multipliers = {}
        for name in WALKER_PARAMS:  # rand_param_envs' order
            exponents = rng.uniform(-3, 3, size=getattr(model, name).shape)
            multipliers[name] = (1.3 if name == "dof_damping" else 1.5) ** exponents
        tasks.append(multipliers)
    return model, tasks


def test_point_robot_winds_are_focal_values():
    rng = np.random.RandomState(1337)
    wind_x = rng.uniform(-0.05, 0.05, 50)
    wind_y = rng.uniform(-0.05, 0.05, 50)
    info = merpo_envs.get_meta_info(POINT)
    for task in range(50):
        assert info.task_params(task) == {"wind": [wind_x[task], wind_y[task]]}
    assert gym.make(POINT, task=0).unwrapped.task_params["wind"][0] == wind_x[0]


def test_direction_tasks():
    for env_id in (CHEETAH, ANT):
        info = merpo_envs.get_meta_info(env_id)
        assert [info.task_params(t) for t in info.tasks] == [
            {"direction": 1.0},
            {"direction": -1.0},
        ]


def test_walker_task_list_follows_the_seeded_recipe():
    _, expected = _expected_walker_multipliers()
    info = merpo_envs.get_meta_info(WALKER)
    for task in range(25):
        params = info.task_params(task)
        assert list(params) == list(WALKER_PARAMS)
        for name in WALKER_PARAMS:
            # the recipe's numpy power may round the last bit by CPU; merpo's does not
            np.testing.assert_array_max_ulp(np.asarray(params[name]), expected[task][name], 1)
    # Exponents in [-3, 3]: multipliers within the bases' ranges, and tasks differ.
    masses = np.array([info.task_params(t)["body_mass"] for t in range(25)])
    assert masses.min() >= 1.5**-3 and masses.max() <= 1.5**3
    assert len({m.tobytes() for m in masses}) == 25


# sha256 of the 25 tasks' multiplier arrays (float64, little-endian, task by task in
# PARAM_BASES order): the task definitions, pinned to the bit on every machine
WALKER_MULTIPLIERS_SHA256 = "585d94530fe309d0f21d2ac56d76b51134591c2d3d6235b9f1a0a0b115e35ea0"


def test_walker_multipliers_are_the_same_bits_on_every_machine():
    import hashlib

    from merpo_envs.walker2d_params import PARAM_BASES, task_multipliers

    digest = hashlib.sha256()
    for multipliers in task_multipliers():
        for name in PARAM_BASES:
            digest.update(np.ascontiguousarray(multipliers[name], dtype="<f8").tobytes())
    assert digest.hexdigest() == WALKER_MULTIPLIERS_SHA256


def test_walker_powers_are_the_floats_nearest_the_exact_values():
    from fractions import Fraction

    from merpo_envs.walker2d_params import power_on_every_cpu

    exponents = np.array([[2.0, -3.0], [0.5, 1.0]])
    got = power_on_every_cpu(1.5, exponents)
    assert got.shape == (2, 2)
    assert got[0, 0] == 2.25 and got[0, 1] == float(Fraction(8, 27)) and got[1, 1] == 1.5
    root = got[1, 0]  # sqrt(1.5): the nearest float squares closer to 1.5 than its neighbours
    errors = [abs(Fraction(x) ** 2 - Fraction(3, 2))
              for x in (np.nextafter(root, 0), root, np.nextafter(root, 2))]
    assert errors[1] == min(errors)


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_task_params_are_plain_json_data(env_id):
    info = merpo_envs.get_meta_info(env_id)
    for task in info.tasks:
        params = info.task_params(task)
        assert json.loads(json.dumps(params)) == params


def test_walker_applies_multipliers_to_the_model_defaults():
    default, expected = _expected_walker_multipliers()
    env = gym.make(WALKER, task=3)
    model = env.unwrapped.model
    for name in WALKER_PARAMS:
        np.testing.assert_allclose(
            getattr(model, name), getattr(default, name) * expected[3][name], rtol=1e-12
        )
    # Switching restores the defaults first: task 8's arrays, not task 3's times task 8's.
    env.unwrapped.set_task(8)
    task_3 = np.asarray(merpo_envs.get_meta_info(WALKER).task_params(3)["body_mass"])
    np.testing.assert_array_equal(model.body_mass, default.body_mass * task_3)
    env.reset(seed=0)
    for name in WALKER_PARAMS:
        np.testing.assert_allclose(
            getattr(model, name), getattr(default, name) * expected[8][name], rtol=1e-12
        )


def test_walker_tasks_give_different_trajectories_under_the_same_actions():
    actions = np.random.default_rng(0).uniform(-1, 1, size=(25, 6)).astype(np.float32)
    obs = {
        task: rollout(gym.make(WALKER, task=task), seed=0, steps=25, actions=actions)["next_obs"]
        for task in (0, 1)
    }
    assert np.max(np.abs(obs[0] - obs[1])) > 0.05


@pytest.mark.parametrize(
    "env_id,first,second", [(POINT, 2, 45), (CHEETAH, 0, 1), (ANT, 1, 0), (WALKER, 4, 21)]
)
def test_set_task_takes_effect_at_next_reset_and_matches_a_fresh_env(env_id, first, second):
    env = gym.make(env_id, task=first)
    env.reset(seed=0)
    env.unwrapped.set_task(second)
    assert env.unwrapped.task == first  # not before the reset
    switched = rollout(env, seed=9, steps=40)
    assert env.unwrapped.task == second
    assert env.unwrapped.task_params == merpo_envs.get_meta_info(env_id).task_params(second)
    fresh = rollout(gym.make(env_id, task=second), seed=9, steps=40)
    for key in ("obs", "rewards", "terminated"):
        np.testing.assert_array_equal(switched[key], fresh[key])


def test_walker_switching_back_restores_the_exact_physics():
    env = gym.make(WALKER, task=2)
    before = rollout(env, seed=1, steps=30)
    env.unwrapped.set_task(17)
    env.reset(seed=0)
    env.unwrapped.set_task(2)
    after = rollout(env, seed=1, steps=30)
    np.testing.assert_array_equal(before["next_obs"], after["next_obs"])


@pytest.mark.parametrize("env_id,first,second", [(POINT, 2, 45), (CHEETAH, 0, 1)])
def test_the_wrapped_spec_follows_set_task_even_when_read_before(env_id, first, second):
    """Gymnasium's wrappers cache the spec at their first read; merpo_envs.set_task clears
    those caches, so gym.make(env.spec) rebuilds the new task."""
    env = gym.make(env_id, task=first)
    assert env.spec.kwargs["task"] == first  # read (and cached by the wrappers) first
    merpo_envs.set_task(env, second)
    assert env.spec.kwargs["task"] == second
    rebuilt = gym.make(env.spec)
    rebuilt.reset(seed=0)
    assert rebuilt.unwrapped.task == second
    with pytest.raises(TypeError, match="not a merpo env"):
        merpo_envs.set_task(gym.make("CartPole-v1"), 0)
