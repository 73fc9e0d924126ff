"""MBML: multi-task batch RL with metric learning.

Li, Vuong, Liu, Liu, Ciosek, Christensen, Su, NeurIPS 2020 ("Multi-task Batch Reinforcement
Learning with Metric Learning"), one of the MerPO paper's baselines (MerPO §5.2, Fig. 6).
One module, top to bottom: config, the relabeling models, the triplet loss, the update,
the training loop, meta-test evaluation, save / load.

The problem MBML addresses: each training task's dataset has its own state-action
distribution, so a task-inference encoder can tell the training tasks apart from (s, a)
alone and ignore rewards and dynamics; on an unseen task that shortcut fails. MBML's fix
(MBML §4.2) is a triplet loss on *relabeled* transitions:

1. Per training task i, an ensemble of learned models of the task's reward and transition
   (MBML learns reward ensembles; where tasks differ in dynamics, as in Point-Robot-Wind and
   Walker-2D-Params, the next state must be relabeled too): ``DynamicsEnsemble`` Gaussian
   MLPs over (s' - s, r), fit once before the policy, elites by held-out MSE.
2. For each task i of a task batch a partner task j != i. The anchor X_{j->i} is a context
   of task j's (s, a) with reward and next state relabeled by task i's models (the mean of
   its elites): task i's reward and dynamics on task j's state-action distribution. The
   positive is a real context X_i of task i (same task, other (s, a)); the hard negative is
   X_j itself (the very same (s, a), another task's rewards and next states).
   Triplet loss (MBML Eq. 3): mean_i [ d(z(X_{j->i}), z(X_i)) - d(z(X_{j->i}), z(X_j)) + m ]_+
   with d the squared Euclidean distance. It can only be minimised by reading r and s'.
3. The multi-task policy is BCQ on (s, z) (Fujimoto et al. 2019), every network shared
   across tasks with the task latent z of the task's own context concatenated to the state:
   the contextual BCQ update of ``contextual_bcq.py`` (VAE, perturbation net, twin critics
   with the soft clipped double-Q target). The encoder is trained by the critics' Bellman
   loss plus ``triplet_weight`` times the triplet loss.
4. Meta-test: z is inferred from the unseen task's offline data only (no models of the
   unseen task are needed), then BCQ's policy runs in the real env.

Choices where MBML leaves room (all fields of ``MBMLConfig``):

- MBML distills per-task BCQ policies into the multi-task policy (MBML §4.3); here the
  multi-task BCQ is trained directly on all training tasks at once (the MerPO paper's
  description of the baseline: "metric learning + multi-task BCQ"), which removes a stage
  and keeps the same policy class and task inference.
- Relabeling is deterministic (the mean of the task's elite members), so a relabeled
  context differs from the real one only where the models of the two tasks differ.
- The partner of task i in a batch of T tasks is the task ``(i + k) mod T`` of the batch
  with one random k in 1..T-1 per update (a derangement drawn on the device).
- The margin m (``triplet_margin``) is 1.0 on the scale of the encoder's output.
- A task batch needs at least two tasks (there is no negative otherwise).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from merpo_data.networks import StackedLinear, by_seed, seed_baddbmm
from merpo_data.sampler import TaskSampler

from merpo_agent.baselines.context import agent_from_state as _agent_from_state
from merpo_agent.baselines.context import (
    evaluate_agent,
    load_agent,
    save_agent,
    seed_mean,
    seed_rows,
)
from merpo_agent.baselines.contextual_bcq import (
    ContextualBCQAgent,
    ContextualBCQConfig,
    ContextualBCQLearner,
)
from merpo_agent.dynamics import DynamicsEnsemble
from merpo_agent.holdout import HoldoutSplit
from merpo_agent.model_training import train_models
from merpo_agent.task_slice import Generators, per_seed, sample_tasks
from merpo_agent.transitions import TransitionBatch

# ---- config -----------------------------------------------------------------------------


@dataclass
class MBMLConfig(ContextualBCQConfig):
    """Contextual BCQ's fields (the multi-task policy) plus the relabeling models and the
    triplet loss. ``discount`` comes from the env (``for_env``)."""

    model_ensemble: int = 5  # members per task model (reward and transition)
    model_elites: int = 4  # members whose mean relabels
    model_hidden: int = 200
    model_layers: int = 3
    model_steps: int = 5000  # Adam steps of the models, once before the policy
    model_lr: float = 1e-3
    model_batch_size: int = 256
    triplet_margin: float = 1.0  # m of MBML Eq. 3
    triplet_weight: float = 1.0  # weight of the triplet loss beside the Bellman loss

    POSITIVE: ClassVar[tuple[str, ...]] = (
        *ContextualBCQConfig.POSITIVE, "model_ensemble", "model_elites", "model_hidden",
        "model_layers", "model_batch_size",
    )
    SMOKE: ClassVar[dict[str, Any]] = dict(
        **ContextualBCQConfig.SMOKE, model_ensemble=3, model_elites=2, model_hidden=32,
        model_layers=2, model_steps=300, model_lr=3e-3,
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.model_elites > self.model_ensemble:
            raise ValueError(
                f"MBMLConfig.model_elites={self.model_elites} must be <= model_ensemble="
                f"{self.model_ensemble}"
            )
        if self.model_steps < 0 or self.triplet_margin < 0 or self.triplet_weight < 0:
            raise ValueError(
                "MBMLConfig needs model_steps, triplet_margin and triplet_weight >= 0"
            )
        if self.task_batch_size is not None and self.task_batch_size < 2:
            raise ValueError(
                f"MBMLConfig.task_batch_size must be >= 2 (the triplet loss needs another "
                f"task), got {self.task_batch_size}"
            )


class MBMLAgent(ContextualBCQAgent):
    """What meta-test needs: normalizer, context encoder and BCQ's networks on (s, z)
    (the same agent as contextual BCQ; only the encoder's training differs)."""


# ---- relabeling and the triplet loss ----------------------------------------------------


@torch.no_grad()
def relabel(
    models: DynamicsEnsemble, rows: torch.Tensor, context: TransitionBatch
) -> TransitionBatch:
    """``context`` (T', C, ...) with reward and next state predicted by the models of
    ``rows`` (T',) (the mean of each task's elites): row t's (s, a) under task rows[t].

    The rows' elite weights are gathered and run as one batched MLP (no loop over tasks;
    in a seed batch the rows are every seed's, seed-major, and ``models`` every seed's).
    """
    obs, act = context.observations, context.actions
    t, n, _ = obs.shape
    x = torch.cat([obs, act], dim=-1)
    x = (x - models.input_mean[rows][:, None]) / models.input_std[rows][:, None]
    elites = models.elite_idx[rows]  # (T', K)
    k = elites.shape[1]
    x = x.unsqueeze(1).expand(-1, k, -1, -1).reshape(t * k, n, -1)
    index = elites[:, :, None, None]
    for layer in models.net.net:
        if isinstance(layer, StackedLinear):
            w, b = layer.weight.index_select(0, rows), layer.bias.index_select(0, rows)
            w = w.gather(1, index.expand(-1, -1, *w.shape[2:])).reshape(t * k, *w.shape[2:])
            b = b.gather(1, index.expand(-1, -1, *b.shape[2:])).reshape(t * k, *b.shape[2:])
            x = seed_baddbmm(b, x, w, models.seeds)
        else:
            x = by_seed(layer, x, models.seeds)
    mean = x.reshape(t, k, n, -1)[..., : models.out_dim].mean(dim=1)  # (T', C, obs + 1)
    return context._replace(
        next_observations=obs + mean[..., : models.obs_dim], rewards=mean[..., models.obs_dim]
    )


def triplet_loss(
    anchor: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor, margin: float,
    seeds: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MBML Eq. 3 over task latents (T, L): mean_t [d(a, p) - d(a, n) + margin]_+ with d
    the squared Euclidean distance. Returns (loss, fraction of triplets with d(a, p) <
    d(a, n), i.e. anchors closer to their own task); with ``seeds`` S > 1 (T seed-major)
    each seed's over its own tasks, (S,) each."""
    to_positive = (anchor - positive).pow(2).sum(-1)
    to_negative = (anchor - negative).pow(2).sum(-1)
    loss = seed_mean(torch.relu(to_positive - to_negative + margin), seeds)
    return loss, seed_mean((to_positive < to_negative).float(), seeds)


def partners(task_indices: torch.Tensor, generator: Generators) -> torch.Tensor:
    """For each task of the batch another task of the batch: position (i + k) mod T with
    one random k in 1..T-1 (drawn on the device, no host read); in a seed batch each
    seed's within its own tasks, from its own generator."""
    out = []
    for g, rows in per_seed(generator, task_indices):
        t = rows.shape[0]
        k = torch.randint(1, t, (1,), device=rows.device, generator=g)
        out.append(rows[(torch.arange(t, device=rows.device) + k) % t])
    return out[0] if len(out) == 1 else torch.cat(out)


# ---- the learner ------------------------------------------------------------------------


class MBMLLearner(ContextualBCQLearner):
    """Contextual BCQ's training state plus the training tasks' relabeling models."""

    agent_class = MBMLAgent
    agent_format = "mbml"
    watched = ("critic_loss", "actor_loss", "triplet_loss")

    @classmethod
    def create(cls, agent: MBMLAgent, num_tasks: int, generator: torch.Generator) -> MBMLLearner:
        return cls(agent, num_tasks, generator)

    def __init__(self, agent: MBMLAgent, num_tasks: int, generator: torch.Generator):
        cfg = agent.config
        if num_tasks < 2:
            raise ValueError(
                f"MBML needs at least 2 training tasks (the triplet loss contrasts tasks), "
                f"got {num_tasks}"
            )
        super().__init__(agent, generator)
        self.num_tasks = num_tasks
        self.models = DynamicsEnsemble(  # every seed's tasks, seed-major
            agent.seeds * num_tasks, agent.obs_dim, agent.act_dim, cfg.model_ensemble,
            cfg.model_elites, cfg.model_hidden, cfg.model_layers, device=agent.device,
            seeds=agent.seeds,
        )

    def prepare(self, sampler: TaskSampler) -> dict[str, float]:
        """Fit every training task's reward / transition models (10% held out, elites)."""
        cfg, models = self.config, self.models
        split = HoldoutSplit(sampler, generator=self.generator)
        models.set_normalizer_stats(*split.input_stats())
        train_models(models, split, cfg.model_steps, cfg.model_lr, cfg.model_batch_size,
                     generator=self.generator)
        val, mask = split.validation()
        models.select_elites(val, mask)
        return {"model_heldout_mse": float(models.heldout_mse(val, mask).mean())}

    def after_prepare(self) -> None:
        self.models.requires_grad_(False)  # fit once, then fixed

    def step(self, sampler: TaskSampler, task_indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Draw the RL batch, each task's context (the positive) and its partner's context
        (the negative), relabel the latter with the task's models (the anchor), update."""
        cfg = self.config
        batch = sample_tasks(sampler, cfg.batch_size, task_indices, self.generator)
        context = sample_tasks(sampler, cfg.context_size, task_indices, self.generator)
        negative = sample_tasks(sampler, cfg.context_size,
                                partners(task_indices, self.generator), self.generator)
        rows = seed_rows(task_indices, self.agent.seeds, self.num_tasks)
        anchor = relabel(self.models, rows, negative)
        return self.update_mbml(batch, context, anchor, negative)

    def update_mbml(
        self,
        batch: TransitionBatch,
        context: TransitionBatch,
        anchor: TransitionBatch,
        negative: TransitionBatch,
    ) -> dict[str, torch.Tensor]:
        """One MBML step: BCQ's update with the triplet loss added to the encoder's
        objective (z of ``context`` is the positive). Returns detached scalar metrics."""
        cfg, agent = self.config, self.agent
        found: dict[str, torch.Tensor] = {}

        def encoder_loss(z_positive: torch.Tensor) -> torch.Tensor:
            loss, accuracy = triplet_loss(
                agent.infer_latent(anchor), z_positive, agent.infer_latent(negative),
                cfg.triplet_margin, agent.seeds,
            )
            found.update(triplet_loss=loss.detach(), triplet_accuracy=accuracy)
            return cfg.triplet_weight * loss

        metrics = self.update(batch, context, encoder_loss)
        return {**metrics, **found}


# ---- training loop ----------------------------------------------------------------------



# ---- meta-test --------------------------------------------------------------------------


def evaluate_mbml(
    agent: MBMLAgent,
    test_sampler: TaskSampler,
    env_id: str,
    episodes: int,
    seed: int,
    context_size: int | None = None,
) -> dict[int, float]:
    """Meta-test: z of each unseen task from its offline data, BCQ's policy in the real env
    (``context.evaluate_agent``, reproducible for a seed). Returns ``{task: mean return}``."""
    return evaluate_agent("evaluate_mbml", agent, test_sampler, env_id, episodes, seed,
                          context_size)


# ---- save / load ------------------------------------------------------------------------

FORMAT = MBMLLearner.agent_format
_HINT = "save it with save_mbml"


def agent_from_state(state: dict[str, Any], device: str | torch.device = "cpu") -> MBMLAgent:
    return _agent_from_state(state, FORMAT, MBMLAgent, MBMLConfig, device, "MBML", _HINT)


def save_mbml(agent: MBMLAgent, path: str | Path) -> None:
    """Write the agent atomically (temporary file + rename)."""
    save_agent(agent, path, FORMAT)


def load_mbml(path: str | Path, device: str | torch.device = "cpu") -> MBMLAgent:
    """Read an agent written by ``save_mbml`` (``torch.load(weights_only=True)``)."""
    return load_agent(path, device, FORMAT, MBMLAgent, MBMLConfig, "MBML", _HINT)


__all__ = [
    "MBMLAgent",
    "MBMLConfig",
    "MBMLLearner",
    "agent_from_state",
    "evaluate_mbml",
    "load_mbml",
    "partners",
    "relabel",
    "save_mbml",
    "triplet_loss",
]
