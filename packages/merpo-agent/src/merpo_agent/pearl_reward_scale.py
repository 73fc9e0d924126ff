"""PEARL's per-env reward scale: Batch PEARL's default and the centre of its tuning space.

PEARL's env configs scale the rewards in the Bellman target by 100 on its point robot and by
5 on the locomotion envs. The scale sets the Bellman loss against PEARL Eq. 3's KL term, so
it decides how much task information the encoder keeps (``baselines.batch_pearl``). Torch-
free, so that ``search_spaces`` (imported by ``--help`` and ``reproduce``'s settings checks)
can centre the space on the env's value.
"""

from __future__ import annotations

POINT_ROBOT_SCALE = 100.0
LOCOMOTION_SCALE = 5.0
_BY_ENV = {"merpo/PointRobotWind-v0": POINT_ROBOT_SCALE}


def pearl_reward_scale(env_id: str) -> float:
    """PEARL's reward scale for ``env_id`` (a registered merpo env id)."""
    return _BY_ENV.get(env_id, LOCOMOTION_SCALE)


__all__ = ["LOCOMOTION_SCALE", "POINT_ROBOT_SCALE", "pearl_reward_scale"]
