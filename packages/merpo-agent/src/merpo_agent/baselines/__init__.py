"""Baselines named by the paper (SPEC §8), each one self-contained module; ``run.py`` is
the run directory of ``merpo-agent train --algo focal|cbcq``."""

from merpo_agent.baselines.contextual_bcq import (
    ContextualBCQAgent,
    ContextualBCQConfig,
    evaluate_contextual_bcq,
    load_contextual_bcq,
    save_contextual_bcq,
    train_contextual_bcq,
)
from merpo_agent.baselines.focal import (
    FocalAgent,
    FocalConfig,
    evaluate_focal,
    load_focal,
    save_focal,
    train_focal,
)

__all__ = [
    "ContextualBCQAgent",
    "ContextualBCQConfig",
    "FocalAgent",
    "FocalConfig",
    "evaluate_contextual_bcq",
    "evaluate_focal",
    "load_contextual_bcq",
    "load_focal",
    "save_contextual_bcq",
    "save_focal",
    "train_contextual_bcq",
    "train_focal",
]
