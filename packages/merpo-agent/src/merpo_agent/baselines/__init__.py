"""Baselines named by the paper (SPEC §8), each one self-contained module."""

from merpo_agent.baselines.focal import (
    FocalAgent,
    FocalConfig,
    evaluate_focal,
    load_focal,
    save_focal,
    train_focal,
)

__all__ = [
    "FocalAgent",
    "FocalConfig",
    "evaluate_focal",
    "load_focal",
    "save_focal",
    "train_focal",
]
