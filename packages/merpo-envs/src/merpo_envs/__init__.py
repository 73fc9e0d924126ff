"""merpo-envs: the four meta-environments of MerPO (ICLR 2022), as Gymnasium environments.

``import merpo_envs`` registers the ids; then ``gymnasium.make("merpo/PointRobotWind-v0", task=3)``,
or :func:`make_vec` (``gymnasium.make_vec`` alike) for a vector env with one sub-env per task:
``merpo_envs.make_vec("merpo/PointRobotWind-v0", tasks="train")``.
Without making an env, :func:`get_meta_info` gives an id's task list, train/test split,
task parameters and batched termination function.
"""

from merpo_envs.meta_info import MetaEnvInfo, env_ids, format_tasks, get_meta_info
from merpo_envs.registration import register_all
from merpo_envs.task_env import set_task
from merpo_envs.vector import make_vec

register_all()

ENV_IDS = env_ids()

__all__ = [
    "ENV_IDS",
    "MetaEnvInfo",
    "env_ids",
    "format_tasks",
    "get_meta_info",
    "make_vec",
    "register_all",
    "set_task",
]
