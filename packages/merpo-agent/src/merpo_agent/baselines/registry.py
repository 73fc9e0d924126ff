"""The baselines' registry: each baseline's config class, presets, learner, meta-test and
agent-file format, and ``Baseline.train``, the one public surface to train any of them.

``merpo_agent.baselines.run`` runs a registered baseline in a run directory (``merpo-agent
train --algo focal|cbcq|mbml|batch-pearl``); a preset's data are every algorithm's
(``merpo_agent.schema.preset_data``), its budget and evaluation are here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import torch

from merpo_agent.baselines.batch_pearl import (
    BatchPearlConfig,
    BatchPearlLearner,
    evaluate_batch_pearl,
)
from merpo_agent.baselines.batch_pearl import agent_from_state as batch_pearl_from_state
from merpo_agent.baselines.context import BaselineLearner, train_baseline
from merpo_agent.baselines.contextual_bcq import (
    ContextualBCQConfig,
    ContextualBCQLearner,
    evaluate_contextual_bcq,
)
from merpo_agent.baselines.contextual_bcq import agent_from_state as cbcq_from_state
from merpo_agent.baselines.focal import FocalConfig, FocalLearner, evaluate_focal
from merpo_agent.baselines.focal import agent_from_state as focal_from_state
from merpo_agent.baselines.mbml import MBMLConfig, MBMLLearner, evaluate_mbml
from merpo_agent.baselines.mbml import agent_from_state as mbml_from_state
from merpo_agent.overrides import ConfigError
from merpo_agent.schema import EvalConfig, RunConfig


@dataclasses.dataclass(frozen=True)
class Baseline:
    """One baseline of the run-directory code path (``algo`` is its ``--algo`` name)."""

    algo: str
    label: str  # in messages, tables and plots
    config_class: type
    # per preset: (budget, evaluation, config constructor taking the env id); the preset's
    # data are every algorithm's (``schema.preset_data``)
    presets: dict[str, tuple[RunConfig, EvalConfig, Callable[[str], Any]]]
    learner: type[BaselineLearner]  # build / prepare / step / training state
    evaluate: Callable[..., dict[int, float]]  # (agent, sampler, env_id, episodes, seed)
    agent_from_state: Callable[[dict[str, Any], str], Any]  # the agent file's dict -> agent

    def train(self, config: Any, train_sampler: Any, steps: int, device: str | torch.device,
              seed: int, log_fn: Callable[[int, dict[str, float]], None] | None = None,
              progress_fn: Callable[[int, Any], None] | None = None) -> Any:
        """Meta-train the baseline on every task of ``train_sampler`` for ``steps`` updates
        (the learner's ``prepare``, logged as step 0, then its updates on task batches of
        ``config.task_batch_size``); ``log_fn(step, metrics)`` and ``progress_fn(step,
        agent)`` every ``config.log_every`` updates and after the last. Returns the agent
        (eval mode), for ``self.evaluate``."""
        return train_baseline(self.learner, config, train_sampler, steps, device, seed,
                              log_fn, progress_fn)


def _small(make: Callable[..., Any], **settings: Any) -> Callable[[str], Any]:
    """The ``small`` preset: minutes on a 2-core CPU (64 x 2 networks, batches of 128)."""
    return lambda env: make(env, **{
        "hidden": 64, "hidden_layers": 2, "encoder_hidden": 64, "encoder_layers": 2,
        "batch_size": 128, "encoder_lr": 1e-3, **settings,
    })


# (budget, evaluation) of the presets; ``log_every`` is the methods' own former default
TABLE2_RUN = (RunConfig(steps=20_000, checkpoint_every=1_000, log_every=1_000),
              EvalConfig(episodes=4, every=5_000))
SMALL_RUN = (RunConfig(steps=3_000, checkpoint_every=1_000, log_every=250),
             EvalConfig(episodes=4, every=1_000))
SMOKE_RUN = (RunConfig(steps=200, checkpoint_every=100, log_every=25),
             EvalConfig(episodes=1, every=100))


def _presets(smoke: Callable[[str], Any], small: Callable[[str], Any],
             table2: Callable[[str], Any]) -> dict[str, tuple[RunConfig, EvalConfig, Any]]:
    """A baseline's presets; ``repro`` is ``small``'s sizes on the whole split, as MerPO's."""
    return {"smoke": (*SMOKE_RUN, smoke), "small": (*SMALL_RUN, small),
            "repro": (*SMALL_RUN, small), "table2": (*TABLE2_RUN, table2)}


BASELINES: dict[str, Baseline] = {
    "focal": Baseline(
        algo="focal",
        label="FOCAL",
        config_class=FocalConfig,
        presets=_presets(
            FocalConfig.smoke,
            _small(
                FocalConfig.for_env, behavior_steps=500, behavior_hidden=64, behavior_layers=2,
                actor_lr=1e-3, critic_lr=1e-3,
            ),
            FocalConfig.for_env,
        ),
        learner=FocalLearner,
        evaluate=evaluate_focal,
        agent_from_state=focal_from_state,
    ),
    "cbcq": Baseline(
        algo="cbcq",
        label="Contextual BCQ",
        config_class=ContextualBCQConfig,
        presets=_presets(
            ContextualBCQConfig.smoke,
            _small(
                ContextualBCQConfig.for_env, vae_hidden=64, vae_layers=2,
            ),
            ContextualBCQConfig.for_env,
        ),
        learner=ContextualBCQLearner,
        evaluate=evaluate_contextual_bcq,
        agent_from_state=cbcq_from_state,
    ),
    "mbml": Baseline(
        algo="mbml",
        label="MBML",
        config_class=MBMLConfig,
        presets=_presets(
            MBMLConfig.smoke,
            _small(
                MBMLConfig.for_env, vae_hidden=64, vae_layers=2, model_hidden=64,
                model_layers=2, model_steps=1_000,
            ),
            MBMLConfig.for_env,
        ),
        learner=MBMLLearner,
        evaluate=evaluate_mbml,
        agent_from_state=mbml_from_state,
    ),
    "batch-pearl": Baseline(
        algo="batch-pearl",
        label="Batch PEARL",
        config_class=BatchPearlConfig,
        presets=_presets(
            BatchPearlConfig.smoke,
            _small(
                BatchPearlConfig.for_env, actor_lr=1e-3, critic_lr=1e-3,
            ),
            BatchPearlConfig.for_env,
        ),
        learner=BatchPearlLearner,
        evaluate=evaluate_batch_pearl,
        agent_from_state=batch_pearl_from_state,
    ),
}


def baseline(algo: str) -> Baseline:
    if algo not in BASELINES:
        raise ConfigError(f"unknown baseline {algo!r}; one of {', '.join(BASELINES)}")
    return BASELINES[algo]


__all__ = ["BASELINES", "Baseline", "SMALL_RUN", "SMOKE_RUN", "TABLE2_RUN", "baseline"]
