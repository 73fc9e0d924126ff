"""Register the merpo ids with Gymnasium (string entry points, so Minari can store the spec)."""

from __future__ import annotations

import gymnasium as gym

from merpo_envs import point_robot_wind
from merpo_envs.meta_info import register_meta_info

# env module -> (Gymnasium id, "module:Class" entry point). MuJoCo envs are added here.
_ENVS = [
    (point_robot_wind, "merpo_envs.point_robot_wind:PointRobotWindEnv"),
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
            )
