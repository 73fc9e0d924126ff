"""What Gymnasium users take for granted: spec, pickling and deepcopy follow set_task;
make_vec over a split or a task list; rgb_array frames; a Version History per env."""

import copy
import json
import pickle

import gymnasium as gym
import merpo_envs
import numpy as np
import pytest
from envs_helpers import ALL_IDS, CHEETAH, POINT, WALKER
from merpo_envs.point_robot_wind import PointRobotWindEnv

# (env id, task given to make, task given to set_task): a switch away from the made task
SWITCHES = [(POINT, 3, 7), (CHEETAH, 1, 0), (WALKER, 3, 7)]


@pytest.mark.parametrize(("env_id", "made", "switched"), SWITCHES)
def test_spec_pickle_and_deepcopy_follow_set_task(env_id, made, switched):
    env = gym.make(env_id, task=made)
    env.reset(seed=0)
    env.step(env.action_space.sample())
    env.unwrapped.set_task(switched)
    assert env.spec.kwargs["task"] == switched == env.unwrapped.spec.kwargs["task"]
    assert json.loads(env.spec.to_json())["kwargs"]["task"] == switched
    assert gym.make(env.spec).unwrapped.task == switched
    for other in (copy.deepcopy(env), pickle.loads(pickle.dumps(env))):
        _, info = other.reset(seed=0)
        assert info["task"] == switched and other.unwrapped.task == switched
        assert other.spec.id == env_id and other.spec.kwargs["task"] == switched
        other.close()
    _, info = env.reset(seed=0)  # the original switches too
    assert info["task"] == switched
    env.close()


@pytest.mark.parametrize(
    ("tasks", "expected"),
    [("train", tuple(range(40))), ("test", tuple(range(40, 50))), ([5, 41, 5], (5, 41, 5))],
)
def test_make_vec_gives_one_sub_env_per_task(tasks, expected):
    envs = merpo_envs.make_vec(POINT, tasks=tasks)
    obs, infos = envs.reset(seed=0)
    assert envs.num_envs == len(expected) and obs.shape == (len(expected), 2)
    np.testing.assert_array_equal(infos["task"], expected)
    obs, *_ = envs.step(np.zeros((len(expected), 2), dtype=np.float32))
    winds = [merpo_envs.get_meta_info(POINT).task_params(t)["wind"] for t in expected]
    np.testing.assert_allclose(obs, winds, atol=1e-12)  # each sub-env has its task's wind
    envs.close()


def test_gymnasium_make_vec_uses_the_vector_entry_point():
    from gymnasium.envs.registration import load_env_creator

    for env_id in ALL_IDS:  # every id's entry point resolves to its own env id
        assert load_env_creator(gym.spec(env_id).vector_entry_point).args == (env_id,)
    envs = gym.make_vec(WALKER, tasks=[2, 21])
    _, infos = envs.reset(seed=0)
    np.testing.assert_array_equal(infos["task"], [2, 21])
    assert envs.get_attr("task") == (2, 21)
    envs.close()
    envs = gym.make_vec(POINT, num_envs=3)  # without tasks: num_envs copies of the default
    assert envs.num_envs == 3 and envs.get_attr("task") == (0, 0, 0)
    envs.close()


def test_make_vec_bad_input_is_one_line_naming_the_fix():
    with pytest.raises(ValueError, match="unknown split 'val'; give one of train, test, all"):
        merpo_envs.make_vec(POINT, tasks="val")
    with pytest.raises(ValueError, match="out of range"):
        merpo_envs.make_vec(POINT, tasks=[3, 50])
    with pytest.raises(TypeError, match="tasks= makes one sub-env per task; use merpo_envs"):
        gym.make(POINT, tasks="train")
    with pytest.raises(ValueError, match="drop num_envs"):
        gym.make_vec(POINT, num_envs=4, tasks="test")


def test_point_robot_renders_rgb_array_frames_that_follow_the_point():
    env = gym.make(POINT, task=3, render_mode="rgb_array", width=96, height=64)
    env.reset(seed=0)
    first = env.render()
    for _ in range(5):
        env.step(np.array([0.1, 0.0], dtype=np.float32))
    later = env.render()
    env.close()
    assert first.shape == later.shape == (64, 96, 3) and first.dtype == np.uint8
    assert first.std() > 1.0 and not np.array_equal(first, later)
    assert gym.make(POINT).unwrapped.render() is None  # no render_mode: no frame
    with pytest.raises(ValueError, match="render_mode must be None or 'rgb_array'"):
        PointRobotWindEnv(render_mode="depth_array")


@pytest.mark.parametrize("env_id", ALL_IDS)
def test_each_env_docstring_has_a_version_history(env_id):
    doc = type(gym.make(env_id).unwrapped).__doc__
    assert "## Version History" in doc and "* v0:" in doc.split("## Version History")[1]


def test_making_an_env_leaves_no_mujoco_log_and_no_deprecation_noise(
    tmp_path, monkeypatch, capfd
):
    """MuJoCo 4 warns that Gymnasium's half_cheetah.xml uses ``settotalmass`` (still
    applied) on every env built, into ``MUJOCO_LOG.TXT`` in the working directory; merpo
    drops that one warning and restores the handler it found."""
    import mujoco

    monkeypatch.chdir(tmp_path)
    for env_id in ALL_IDS:
        gym.make(env_id).close()
    assert list(tmp_path.iterdir()) == []
    assert "settotalmass" not in capfd.readouterr().err
    assert mujoco.get_mju_user_warning() is None
    # The masses are still scaled to the model's total of 14 (the deprecated attribute).
    model = gym.make(CHEETAH).unwrapped.model
    assert float(model.body_mass.sum()) == pytest.approx(14.0)
