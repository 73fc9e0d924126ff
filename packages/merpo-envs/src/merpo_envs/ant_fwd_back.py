"""Ant-Fwd-Back: walk forward (task 0) or backward (task 1) (PEARL's ant-dir, 2 directions).

Gymnasium's Ant-v5 without contact forces in the observation, with the forward reward
multiplied by the task's direction (the paper, Appendix A.1).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv

from merpo_envs.meta_info import MetaEnvInfo
from merpo_envs.task_env import MujocoTaskEnvMixin

ENV_ID = "merpo/AntFwdBack-v0"
HORIZON = 200
DIRECTIONS = (1.0, -1.0)
TRAIN_TASKS = (0, 1)
TEST_TASKS = (0, 1)
# Ant-v5's healthy torso height (qpos[2], observation[0]); both ends are healthy.
HEALTHY_Z_RANGE = (0.2, 1.0)
OBS_DIM = 27
ACT_DIM = 8


def task_params(task: int) -> dict[str, Any]:
    return {"direction": DIRECTIONS[task]}


def terminated_np(obs: np.ndarray, act: np.ndarray, next_obs: np.ndarray) -> np.ndarray:
    """Ant-v5's ``not is_healthy`` from the next observation: a non-finite entry or the
    torso height ``next_obs[..., 0]`` outside ``[0.2, 1.0]``. Batched over leading axes."""
    next_obs = np.asarray(next_obs)
    z = next_obs[..., 0]
    healthy = (
        np.isfinite(next_obs).all(axis=-1) & (z >= HEALTHY_Z_RANGE[0]) & (z <= HEALTHY_Z_RANGE[1])
    )
    return ~healthy


def terminated_torch(obs, act, next_obs):
    """Torch form of :func:`terminated_np` (on the inputs' device)."""
    import torch

    z = next_obs[..., 0]
    healthy = (
        torch.isfinite(next_obs).all(dim=-1) & (z >= HEALTHY_Z_RANGE[0]) & (z <= HEALTHY_Z_RANGE[1])
    )
    return ~healthy


META_INFO = MetaEnvInfo(
    env_id=ENV_ID,
    slug="ant-fwd-back",
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


class AntFwdBackEnv(MujocoTaskEnvMixin, AntEnv):
    """Ant-v5 (no contact forces in the observation) that walks in the direction of its task.

    ## Observation
    ``Box(-inf, inf, (27,), float64)``: qpos without the x, y position (13: torso height,
    torso orientation quaternion, 8 joint angles) then qvel (14). Ant-v5's contact forces
    are left out (``include_cfrc_ext_in_observation=False``); they still enter the reward.

    ## Action
    ``Box(-1, 1, (8,), float32)``: torques on the eight hip and ankle joints.

    ## Reward
    ``d * v_x + 1[healthy] - 0.5 * ||a||^2 - 5e-4 * ||clip(cfrc_ext, -1, 1)||^2`` with
    ``v_x`` the x velocity of the torso over the step (``dt = 0.05``), ``d`` the task's
    direction and ``cfrc_ext`` the external contact forces of all bodies (Ant-v5's terms;
    ``info`` carries ``reward_forward``, ``reward_survive``, ``reward_ctrl``,
    ``reward_contact``, ``x_velocity`` and ``task``).

    ## Starting state
    Ant-v5's: qpos + U(-0.1, 0.1), qvel + 0.1 N(0, 1).

    ## Termination and truncation
    Terminates when unhealthy (Ant-v5): a non-finite state or the torso height outside
    ``[0.2, 1.0]``. ``merpo_envs.get_meta_info(ENV_ID).terminated_np/_torch`` compute the
    same from batched next observations. Truncated after 200 steps.

    ## Tasks
    Two tasks: direction ``d = +1`` (task 0, walk forward) and ``d = -1`` (task 1, walk
    backward); both are train and test tasks. ``task`` picks one (default 0);
    ``set_task(j)`` switches at the next reset; ``task_params`` is ``{"direction": d}``.

    ## Arguments
    ``task``, ``render_mode`` (``"rgb_array"``, ``"depth_array"``, ``"human"``),
    ``width``, ``height``, ``camera_id``, ``camera_name``.

    ## Version History
    * v0: initial version, on Gymnasium's Ant-v5 without contact forces (directions +1
      and -1, horizon 200).
    """

    _meta_info = META_INFO
    _base_env_kwargs = {
        "healthy_z_range": HEALTHY_Z_RANGE,
        "include_cfrc_ext_in_observation": False,
    }

    def _on_task_start(self, task: int, changed: bool) -> None:
        # The task's direction multiplies the forward reward (the paper, App. A.1).
        self._forward_reward_weight = DIRECTIONS[task]
