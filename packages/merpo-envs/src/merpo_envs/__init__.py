"""merpo-envs: the four meta-environments of MerPO (ICLR 2022), as Gymnasium environments.

``import merpo_envs`` registers the ids; then ``gymnasium.make("merpo/PointRobotWind-v0", task=3)``.
Without making an env, :func:`get_meta_info` gives an id's task list, train/test split,
task parameters and batched termination function.
"""

from merpo_envs.meta_info import MetaEnvInfo, env_ids, get_meta_info
from merpo_envs.registration import register_all

register_all()

ENV_IDS = env_ids()

__all__ = ["ENV_IDS", "MetaEnvInfo", "env_ids", "get_meta_info", "register_all"]
