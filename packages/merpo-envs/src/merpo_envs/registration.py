"""Register the merpo ids with Gymnasium (string entry points, so Minari can store the spec)."""

from __future__ import annotations

import gymnasium as gym

from merpo_envs import ant_fwd_back, half_cheetah_fwd_back, point_robot_wind, walker2d_params
from merpo_envs.meta_info import register_meta_info

# env module (holding META_INFO) -> "module:Class" entry point: a string, not the class, so
# Minari can store the spec as JSON.
_ENVS = [
    (point_robot_wind, "merpo_envs.point_robot_wind:PointRobotWindEnv"),
    (half_cheetah_fwd_back, "merpo_envs.half_cheetah_fwd_back:HalfCheetahFwdBackEnv"),
    (ant_fwd_back, "merpo_envs.ant_fwd_back:AntFwdBackEnv"),
    (walker2d_params, "merpo_envs.walker2d_params:Walker2dParamsEnv"),
]


def register_all() -> None:
    for module, entry_point in _ENVS:
        info = module.META_INFO
        register_meta_info(info)
        if info.env_id not in gym.registry:
            gym.register(
                id=info.env_id,
                entry_point=entry_point,
                max_episode_steps=info.max_episode_steps,
                kwargs={"task": info.train_tasks[0]},
                # gymnasium.make_vec(env_id, tasks=...): one sub-env per task (merpo_envs.vector)
                vector_entry_point=f"merpo_envs.vector:make_vec_{info.slug.replace('-', '_')}",
            )
