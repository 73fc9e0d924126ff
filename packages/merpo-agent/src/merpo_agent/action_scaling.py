"""Map actions between the environment's box [low, high] and the networks' range [-1, 1].

RAC's networks are tanh-squashed, so they work in [-1, 1]; datasets and environments use
the env's own action box (e.g. [-0.1, 0.1]^2 for Point-Robot-Wind). The caller rescales
dataset actions with ``to_unit_actions`` before they reach the learners, and rescales the
learners' actions with ``from_unit_actions`` before stepping an environment.
"""

from __future__ import annotations

import torch


def to_unit_actions(actions: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Affine map of env-unit actions onto [-1, 1] (clamped: dataset rounding can overshoot)."""
    unit = 2.0 * (actions - low) / (high - low) - 1.0
    return unit.clamp(-1.0, 1.0)


def from_unit_actions(unit: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Inverse of ``to_unit_actions``: [-1, 1] onto the env's box [low, high]."""
    return low + 0.5 * (unit + 1.0) * (high - low)


def log_action_scale(low: torch.Tensor, high: torch.Tensor) -> float:
    """``sum_i log((high_i - low_i) / 2)``: the log-determinant of ``from_unit_actions``.

    A density over env-unit actions is the [-1, 1] density divided by this map's Jacobian,
    so ``-log pi`` of an env-unit action is ``-log pi`` in [-1, 1] units plus this number
    (e.g. 2 log 0.1 = -4.6 for Point-Robot-Wind's [-0.1, 0.1]^2)."""
    half_range = 0.5 * (torch.as_tensor(high, dtype=torch.float64)
                        - torch.as_tensor(low, dtype=torch.float64))
    return float(torch.log(half_range).sum())


__all__ = ["from_unit_actions", "log_action_scale", "to_unit_actions"]
