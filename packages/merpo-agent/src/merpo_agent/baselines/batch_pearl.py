"""Batch PEARL: PEARL trained from the offline datasets only.

PEARL is Rakelly, Zhou, Quillen, Finn, Levine, ICML 2019 ("Efficient Off-Policy
Meta-Reinforcement Learning via Probabilistic Context Variables"); its batch variant, with
no exploration and no online collection, is one of the MerPO paper's baselines (MerPO §5.2,
Fig. 6; MBML's paper introduced it). One module, top to bottom: config, the probabilistic
context encoder, the losses, the update, the training loop, meta-test evaluation, save /
load.

The method (PEARL §4, Alg. 1 with the data collection removed):

1. A probabilistic context encoder q(z | c): each transition c_n of a task's context gives
   a Gaussian factor N(mu_n, sigma_n^2) (an MLP, sigma_n^2 by softplus); the posterior is
   their normalized product (PEARL Eq. 4 / App. A), permutation invariant:
   sigma^2 = 1 / sum_n sigma_n^-2, mu = sigma^2 sum_n mu_n / sigma_n^2.
2. The information bottleneck (PEARL Eq. 3): beta * KL(q(z | c) || N(0, I)) with PEARL's
   beta = 0.1 (``kl_lambda``), summed over the tasks of the batch as in PEARL's code.
3. SAC (Haarnoja et al. 2018) on the state augmented with z: z ~ q(z | c) is sampled once
   per task and update (reparameterized); the critics' Bellman loss trains the encoder
   (PEARL's critic-driven task inference), the actor sees z detached, the target uses the
   same sample detached.
4. Meta-test: the posterior from the unseen task's offline context, its mean as z, and
   the deterministic policy tanh(mean) in the real env.

Choices where PEARL or its batch use leave room (all fields of ``BatchPearlConfig``):

- Critics: twin Q-functions with Polyak-averaged targets (SAC v2) in place of PEARL's
  Q + V with a target V (SAC v1); same fixed point, one network type fewer.
- Reward scale: PEARL's per-env ``reward_scale`` (its env configs: 100 on the point robot,
  5 on the locomotion envs; ``for_env``). It sets the Bellman loss against the KL term,
  so it decides how much task information the encoder keeps: with unscaled Point-Robot
  rewards (|r| < 2) the KL wins and the posterior collapses onto the prior.
- Temperature: PEARL fixes alpha = 1 against the scaled rewards; here alpha is tuned to
  the target entropy -act_dim (SAC v2) from ``entropy_coef``; ``tune_entropy=false`` is
  PEARL's setting.
- Context features are (s, a, r, s') (PEARL's ``use_next_obs_in_context``): tasks that
  differ only in dynamics (Point-Robot-Wind, Walker-2D-Params) are invisible in (s, a, r)
  alone where the reward does not depend on s'.
- PEARL's policy regularizers: ``policy_mean_reg`` * mean^2 + ``policy_std_reg`` *
  log_std^2 (both 1e-3, PEARL's defaults).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from merpo_data.networks import by_seed
from merpo_data.sampler import TaskSampler
from merpo_envs import get_meta_info
from torch import nn
from torch.nn import functional as F

from merpo_agent.baselines.context import (
    BaselineConfig,
    BaselineLearner,
    GaussianPolicyAgent,
    evaluate_agent,
    load_agent,
    mlp,
    polyak_,
    save_agent,
    seed_mean,
    seed_scale,
    seed_sum,
    twin_bellman_loss,
    twin_critics,
)
from merpo_agent.baselines.context import agent_from_state as _agent_from_state
from merpo_agent.pearl_reward_scale import pearl_reward_scale
from merpo_agent.task_slice import draw_slots, sample_tasks
from merpo_agent.transitions import TransitionBatch

# PEARL's code clamps the factors' variances from below (softplus, then >= 1e-7).
MIN_FACTOR_VARIANCE = 1e-7

# ---- config -----------------------------------------------------------------------------


@dataclass
class BatchPearlConfig(BaselineConfig):
    """PEARL's hyperparameters (its ``configs/default.py``) for offline training.
    ``discount`` comes from the env (``for_env``)."""

    latent_dim: int = 5  # PEARL latent_size
    hidden: int = 300  # PEARL net_size: actor and critics
    hidden_layers: int = 3
    encoder_hidden: int = 200  # PEARL's context encoder: 3 x 200
    encoder_layers: int = 3
    batch_size: int = 256  # RL transitions per task per update
    context_size: int = 64  # PEARL embedding_batch_size
    task_batch_size: int | None = 16  # PEARL meta_batch; None: every training task
    discount: float = 0.99
    tau: float = 0.005  # PEARL soft_target_tau
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    encoder_lr: float = 3e-4  # PEARL context_lr
    kl_lambda: float = 0.1  # beta of PEARL Eq. 3
    reward_scale: float = 5.0  # PEARL's; rewards are scaled in the Bellman target only
    tune_entropy: bool = True
    entropy_coef: float = 1.0  # the initial (or, without tuning, fixed) temperature alpha
    entropy_lr: float = 3e-4
    policy_mean_reg: float = 1e-3
    policy_std_reg: float = 1e-3
    eval_context_size: int = 256  # meta-test: transitions of the unseen task's data
    log_every: int = 1000

    POSITIVE: ClassVar[tuple[str, ...]] = (
        "latent_dim", "hidden", "hidden_layers", "encoder_hidden", "encoder_layers",
        "batch_size", "context_size", "eval_context_size", "log_every",
    )
    POSITIVE_OR_NONE: ClassVar[tuple[str, ...]] = ("task_batch_size",)
    SMOKE: ClassVar[dict[str, Any]] = dict(
        hidden=32, hidden_layers=2, encoder_hidden=32, encoder_layers=2, batch_size=64,
        context_size=32, task_batch_size=None, eval_context_size=128, log_every=25,
        actor_lr=1e-3, critic_lr=1e-3, encoder_lr=3e-3,
    )

    @classmethod
    def for_env(cls, env_id: str, **overrides: Any) -> BatchPearlConfig:
        """Defaults with the env's Table 2 discount and PEARL's reward scale for it."""
        scale = pearl_reward_scale(get_meta_info(env_id).env_id)
        return super().for_env(env_id, **{"reward_scale": scale, **overrides})

    def __post_init__(self) -> None:
        self.check_fields()
        if self.kl_lambda < 0 or self.entropy_coef <= 0:
            raise ValueError(
                f"BatchPearlConfig needs kl_lambda >= 0 and entropy_coef > 0, got "
                f"{self.kl_lambda}, {self.entropy_coef}"
            )


# ---- encoder and agent ------------------------------------------------------------------


class ProbabilisticContextEncoder(nn.Module):
    """PEARL's q(z | c): per-transition Gaussian factors, multiplied (PEARL Eq. 4).

    Input features (..., C, 2 * obs_dim + act_dim + 1) already normalized.
    """

    def __init__(self, obs_dim: int, act_dim: int, latent_dim: int, hidden: int, layers: int,
                 seeds: int = 1):
        super().__init__()
        self.latent_dim, self.seeds = latent_dim, seeds
        self.net = mlp(2 * obs_dim + act_dim + 1, 2 * latent_dim, hidden, layers, seeds)

    def posterior(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance (..., latent_dim) of the product of the C factors."""
        mu, raw = self.net(features).split(self.latent_dim, dim=-1)
        precision = 1.0 / by_seed(F.softplus, raw, self.seeds).clamp_min(MIN_FACTOR_VARIANCE)
        variance = 1.0 / precision.sum(dim=-2)
        return variance * (mu * precision).sum(dim=-2), variance

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """The posterior mean: the task latent at meta-test."""
        return self.posterior(features)[0]


class BatchPearlAgent(GaussianPolicyAgent):
    """What meta-test needs: normalizer, probabilistic encoder and pi(a | s, z).

    ``infer_latent(context)`` is the posterior mean; ``posterior(context)`` its mean and
    variance; ``act`` returns actions in [-1, 1].
    """

    encoder_class = ProbabilisticContextEncoder

    def posterior(self, context: TransitionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """q(z | c) of contexts (T, C, ...) in env units: mean and variance (T, latent)."""
        return self.encoder.posterior(self.context_features(context))


# ---- losses -----------------------------------------------------------------------------


def kl_to_unit_prior(mean: torch.Tensor, variance: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, diag variance) || N(0, I)) per task (T,):
    0.5 sum (variance + mean^2 - 1 - log variance)."""
    return 0.5 * (variance + mean.pow(2) - 1.0 - variance.log()).sum(-1)


# ---- the learner ------------------------------------------------------------------------


class BatchPearlLearner(BaselineLearner):
    """Training state: the agent, twin critics and targets, the temperature, optimizers."""

    agent_class = BatchPearlAgent
    agent_format = "batch_pearl"

    def __init__(self, agent: BatchPearlAgent, num_tasks: int, generator: torch.Generator):
        super().__init__()
        cfg = agent.config
        self.agent, self.config, self.generator = agent, cfg, generator
        act_dim = agent.act_dim
        self.critic, self.target_critic = twin_critics(agent)
        lead = () if agent.seeds == 1 else (agent.seeds,)  # one temperature per seed
        self.log_entropy_coef = nn.Parameter(torch.full(lead, math.log(cfg.entropy_coef)))
        self.target_entropy = -float(act_dim)
        self.to(agent.device)
        self.encoder_optimizer = torch.optim.Adam(agent.encoder.parameters(), lr=cfg.encoder_lr)
        self.actor_optimizer = torch.optim.Adam(agent.policy.parameters(), lr=cfg.actor_lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.entropy_optimizer = torch.optim.Adam([self.log_entropy_coef], lr=cfg.entropy_lr)

    def step(self, sampler: TaskSampler, task_indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Draw the RL batch and a context per task, then :meth:`update`."""
        cfg = self.config
        batch = sample_tasks(sampler, cfg.batch_size, task_indices, self.generator)
        context = sample_tasks(sampler, cfg.context_size, task_indices, self.generator)
        return self.update(batch, context)

    def sample_latent(self, context: TransitionBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """z ~ q(z | c) per task, reparameterized (T, latent), and its KL to the prior (T,)."""
        mean, variance = self.agent.posterior(context)
        noise = draw_slots(self.generator, lambda s, g: torch.randn(
            s, device=mean.device, generator=g), mean.shape)
        return mean + variance.sqrt() * noise, kl_to_unit_prior(mean, variance)

    def critic_loss(
        self,
        norm_obs: torch.Tensor,
        unit_act: torch.Tensor,
        rewards: torch.Tensor,
        norm_next_obs: torch.Tensor,
        terminations: torch.Tensor,
        z: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Twin-Q soft Bellman error; z (T, B, L) carries the encoder's gradient into Q(s, a, z)
        while the target uses it detached:
        y = r_scaled + gamma (1 - term) (min_i Q'_i(s', a', z) - alpha log pi(a' | s', z)).
        Returns (loss, mean Q)."""
        cfg = self.config
        z_fixed = z.detach()
        with torch.no_grad():
            next_act, next_log_prob, _, _ = self.agent.sample_action(
                norm_next_obs, z_fixed, self.generator
            )
            next_value = self.target_critic(norm_next_obs, next_act, z_fixed).min(0).values
            next_value = next_value - seed_scale(self.log_entropy_coef.exp(), next_log_prob)
            target = cfg.reward_scale * rewards + cfg.discount * (1.0 - terminations) * next_value
        q = self.critic(norm_obs, unit_act, z)
        seeds = self.agent.seeds
        return twin_bellman_loss(q, target, seeds), seed_mean(q.detach(), seeds, axis=1)

    def actor_loss(
        self, norm_obs: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAC's policy loss on (s, z) with z detached, plus PEARL's mean / log-std
        regularizers: E[alpha log pi - min_i Q_i] + reg. Returns (loss, log pi (T, B))."""
        cfg, seeds = self.config, self.agent.seeds
        action, log_prob, mean, log_std = self.agent.sample_action(norm_obs, z, self.generator)
        q = self.critic(norm_obs, action, z).min(0).values
        alpha = self.log_entropy_coef.detach().exp()
        regularizer = cfg.policy_mean_reg * seed_mean(mean.pow(2), seeds) + (
            cfg.policy_std_reg * seed_mean(log_std.pow(2), seeds)
        )
        return seed_mean(seed_scale(alpha, log_prob) - q, seeds) + regularizer, log_prob.detach()

    def update(self, batch: TransitionBatch, context: TransitionBatch) -> dict[str, torch.Tensor]:
        """One Batch PEARL step: encoder + critics (Bellman + KL), actor, temperature,
        targets. ``batch`` (T', B, ...) and ``context`` (T', C, ...) come straight from
        ``TaskSampler.sample`` for the same tasks. Returns detached scalar metrics."""
        cfg, agent = self.config, self.agent
        seeds = agent.seeds
        t, b = batch.rewards.shape
        z_tasks, kl = self.sample_latent(context)
        z = z_tasks.unsqueeze(1).expand(t, b, cfg.latent_dim)
        norm_obs = agent.normalize_obs(batch.observations)
        norm_next_obs = agent.normalize_obs(batch.next_observations)
        unit_act = agent.unit_actions(batch.actions)

        # 1. Critics and encoder: Bellman error through z plus the information bottleneck.
        critic_loss, q_mean = self.critic_loss(
            norm_obs, unit_act, batch.rewards, norm_next_obs, batch.terminations, z
        )
        kl_loss = cfg.kl_lambda * seed_sum(kl, seeds)
        self.critic_optimizer.zero_grad(set_to_none=True)
        self.encoder_optimizer.zero_grad(set_to_none=True)
        (critic_loss + kl_loss).sum().backward()  # each seed's gradient its own
        self.critic_optimizer.step()
        self.encoder_optimizer.step()

        # 2. Actor on (s, z) with z detached (the critic held fixed).
        self.critic.requires_grad_(False)
        actor_loss, log_prob = self.actor_loss(norm_obs, z.detach())
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
        self.actor_optimizer.step()
        self.critic.requires_grad_(True)

        # 3. Temperature (SAC v2), unless fixed as in PEARL.
        if cfg.tune_entropy:
            entropy_loss = -seed_mean(seed_scale(self.log_entropy_coef,
                                                 log_prob + self.target_entropy), seeds)
            self.entropy_optimizer.zero_grad(set_to_none=True)
            entropy_loss.sum().backward()
            self.entropy_optimizer.step()

        # 4. Target critics.
        polyak_(self.target_critic, self.critic, cfg.tau)

        return {
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "kl": seed_mean(kl.detach(), seeds),
            "q_mean": q_mean,
            "entropy_coef": self.log_entropy_coef.detach().exp(),
            "entropy": -seed_mean(log_prob, seeds),
            "latent_norm": seed_mean(z_tasks.detach().norm(dim=-1), seeds),
        }


# ---- training loop ----------------------------------------------------------------------



# ---- meta-test --------------------------------------------------------------------------


def evaluate_batch_pearl(
    agent: BatchPearlAgent,
    test_sampler: TaskSampler,
    env_id: str,
    episodes: int,
    seed: int,
    context_size: int | None = None,
) -> dict[int, float]:
    """Meta-test: the posterior mean of each unseen task's offline context as z, the
    deterministic policy in the real env (``context.evaluate_agent``)."""
    return evaluate_agent("evaluate_batch_pearl", agent, test_sampler, env_id, episodes, seed,
                          context_size)


# ---- save / load ------------------------------------------------------------------------

FORMAT = BatchPearlLearner.agent_format
_HINT = "save it with save_batch_pearl"


def agent_from_state(state: dict[str, Any], device: str | torch.device = "cpu") -> BatchPearlAgent:
    return _agent_from_state(
        state, FORMAT, BatchPearlAgent, BatchPearlConfig, device, "Batch PEARL", _HINT
    )


def save_batch_pearl(agent: BatchPearlAgent, path: str | Path) -> None:
    """Write the agent atomically (temporary file + rename)."""
    save_agent(agent, path, FORMAT)


def load_batch_pearl(path: str | Path, device: str | torch.device = "cpu") -> BatchPearlAgent:
    """Read an agent written by ``save_batch_pearl`` (``torch.load(weights_only=True)``)."""
    return load_agent(path, device, FORMAT, BatchPearlAgent, BatchPearlConfig, "Batch PEARL",
                      _HINT)


__all__ = [
    "BatchPearlAgent",
    "BatchPearlConfig",
    "BatchPearlLearner",
    "ProbabilisticContextEncoder",
    "agent_from_state",
    "evaluate_batch_pearl",
    "kl_to_unit_prior",
    "load_batch_pearl",
    "save_batch_pearl",
]
