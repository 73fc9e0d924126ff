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


__all__ = ["from_unit_actions", "to_unit_actions"]
