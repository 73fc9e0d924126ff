"""rgb_array rendering of a MuJoCo env (headless, MUJOCO_GL=egl) and ``python -m merpo_envs``."""

import subprocess
import sys

import gymnasium as gym
import numpy as np
from envs_helpers import ALL_IDS, WALKER
from merpo_envs.__main__ import main


def test_walker_renders_rgb_array_frames():
    env = gym.make(WALKER, task=4, render_mode="rgb_array", width=96, height=64)
    env.reset(seed=0)
    frame = env.render()
    env.close()
    assert frame.shape == (64, 96, 3) and frame.dtype == np.uint8
    assert frame.std() > 1.0  # an actual image, not a blank buffer


def test_main_prints_a_return_per_env_and_split(capsys):
    main(["--seed", "1"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.startswith("merpo/")]
    assert len(rows) == 2 * len(ALL_IDS)
    assert {(row[0], row[1]) for row in rows} == {
        (env_id, split) for env_id in ALL_IDS for split in ("train", "test")
    }
    for row in rows:
        float(row[5])  # the return column


def test_module_prefix_imports_and_registers_in_a_fresh_interpreter():
    # Nothing imports merpo_envs first: gymnasium imports it from the "merpo_envs:" prefix.
    code = (
        "import gymnasium as gym; "
        "env = gym.make('merpo_envs:merpo/Walker2dParams-v0', task=3); "
        "print(env.unwrapped.task, env.spec.max_episode_steps)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.split() == ["3", "200"]


def test_python_dash_m_merpo_envs_runs():
    result = subprocess.run(
        [sys.executable, "-m", "merpo_envs", "--seed", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert sum(line.startswith("merpo/") for line in result.stdout.splitlines()) == 8
