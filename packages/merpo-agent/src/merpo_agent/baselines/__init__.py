"""Baselines named by the paper (MerPO §5.2): FOCAL, MBML, Batch PEARL, contextual BCQ.

What they share lives in ``context.py``; each method's own networks, losses and update in
its own module; ``run.py`` is the run directory of ``merpo-agent train --algo
focal|cbcq|mbml|batch-pearl``. Its registry ``BASELINES`` is the one public surface to train
any of the four: ``BASELINES["focal"].train(config, sampler, steps, device, seed)``.
"""

from merpo_agent.baselines.batch_pearl import (
    BatchPearlAgent,
    BatchPearlConfig,
    evaluate_batch_pearl,
    load_batch_pearl,
    save_batch_pearl,
)
from merpo_agent.baselines.contextual_bcq import (
    ContextualBCQAgent,
    ContextualBCQConfig,
    evaluate_contextual_bcq,
    load_contextual_bcq,
    save_contextual_bcq,
)
from merpo_agent.baselines.focal import (
    FocalAgent,
    FocalConfig,
    evaluate_focal,
    load_focal,
    save_focal,
)
from merpo_agent.baselines.mbml import (
    MBMLAgent,
    MBMLConfig,
    evaluate_mbml,
    load_mbml,
    save_mbml,
)
from merpo_agent.baselines.registry import BASELINES, Baseline, baseline

__all__ = [
    "BASELINES",
    "Baseline",
    "BatchPearlAgent",
    "BatchPearlConfig",
    "ContextualBCQAgent",
    "ContextualBCQConfig",
    "FocalAgent",
    "FocalConfig",
    "MBMLAgent",
    "MBMLConfig",
    "baseline",
    "evaluate_batch_pearl",
    "evaluate_contextual_bcq",
    "evaluate_focal",
    "evaluate_mbml",
    "load_batch_pearl",
    "load_contextual_bcq",
    "load_focal",
    "load_mbml",
    "save_batch_pearl",
    "save_contextual_bcq",
    "save_focal",
    "save_mbml",
]
