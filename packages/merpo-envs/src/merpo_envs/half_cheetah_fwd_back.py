"""Half-Cheetah-Fwd-Back: run forward (task 0) or backward (task 1) (PEARL's cheetah-dir).

Gymnasium's HalfCheetah-v5 with the forward reward multiplied by the task's direction
(the paper, Appendix A.1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv

from merpo_envs.meta_info import MetaEnvInfo
from merpo_envs.task_env import MujocoTaskEnvMixin

ENV_ID = "merpo/HalfCheetahFwdBack-v0"
HORIZON = 200
DIRECTIONS = (1.0, -1.0)
TRAIN_TASKS = (0, 1)
TEST_TASKS = (0, 1)
# PEARL's cheetah-dir: 0.5 * 0.1 (half of HalfCheetah-v5's default control cost).
CTRL_COST_WEIGHT = 0.05
OBS_DIM = 17
ACT_DIM = 6


def task_params(task: int) -> dict[str, Any]:
    return {"direction": DIRECTIONS[task]}


def terminated_np(obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """Half-Cheetah never terminates (episodes are only truncated at the horizon)."""
    return np.zeros(np.shape(next_obs)[:-1], dtype=bool)


def terminated_torch(obs, act, next_obs):
    """Torch form of :func:`terminated_np` (on the inputs' device)."""
    import torch

    return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)


META_INFO = MetaEnvInfo(
    env_id=ENV_ID,
    slug="half-cheetah-fwd-back",
    num_tasks=len(DIRECTIONS),
    train_tasks=TRAIN_TASKS,
    test_tasks=TEST_TASKS,
    max_episode_steps=HORIZON,
    obs_dim=OBS_DIM,
    act_dim=ACT_DIM,
    params_fn=task_params,
    terminated_np=terminated_np,
    terminated_torch=terminated_torch,
)


class HalfCheetahFwdBackEnv(MujocoTaskEnvMixin, HalfCheetahEnv):
    """HalfCheetah-v5 that runs in the direction of its task.

    ## Observation
    ``Box(-inf, inf, (17,), float64)``: HalfCheetah-v5's, qpos without the x position (8)
    then qvel (9).

    ## Action
    ``Box(-1, 1, (6,), float32)``: torques on the six joints.

    ## Reward
    ``d * v_x - 0.05 * ||a||^2`` with ``v_x`` the x velocity of the torso over the step
    (``(x' - x) / dt``, ``dt = 0.05``) and ``d`` the task's direction. ``info`` carries
    ``reward_forward`` (``d * v_x``), ``reward_ctrl``, ``x_velocity`` and ``task``.

    ## Starting state
    HalfCheetah-v5's: qpos + U(-0.1, 0.1), qvel + 0.1 N(0, 1).

    ## Termination and truncation
    Never terminates; truncated after 200 steps.

    ## Tasks
    Two tasks: direction ``d = +1`` (task 0, run forward) and ``d = -1`` (task 1, run
    backward). Both are train and test tasks (the paper uses the same two directions; test
    datasets are separate draws). ``task`` picks one (default 0); ``set_task(j)`` switches at
    the next reset; ``task_params`` is ``{"direction": d}``.

    ## Arguments
    ``task``, ``render_mode`` (``"rgb_array"``, ``"depth_array"``, ``"human"``),
    ``width``, ``height``, ``camera_id``, ``camera_name``.

    ## Version History
    * v0: initial version, on Gymnasium's HalfCheetah-v5 (directions +1 and -1, control
      cost weight 0.05, horizon 200).
    """

    _meta_info = META_INFO
    _base_env_kwargs = {"ctrl_cost_weight": CTRL_COST_WEIGHT}

    def _on_task_start(self, task: int, changed: bool) -> None:
        # The task's direction multiplies the forward reward (the paper, App. A.1).
        self._forward_reward_weight = DIRECTIONS[task]
