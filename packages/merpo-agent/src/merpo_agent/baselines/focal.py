"""FOCAL: fully-offline meta-RL with distance metric learning and behavior regularization.

Li, Yang, Luo, ICLR 2021 ("FOCAL: Efficient Fully-Offline Meta-Reinforcement Learning via
Distance Metric Learning and Behavior Regularization"), the MerPO paper's headline rival
(MerPO §5.2, Fig. 6). One module, top to bottom: config, context encoder, networks, losses, the
update, the training loop, meta-test evaluation, save / load.

The method:

1. A deterministic context encoder q maps each transition (s, a, r, s') of a task's
   context to an embedding; the task latent z is their mean (permutation invariant).
2. The encoder is trained alone with FOCAL's distance metric loss (FOCAL Eq. 9):
   same task: ||z_i - z_j||^2; different tasks: beta / (||z_i - z_j||^n + eps).
3. A behavior-regularized actor-critic (BRAC, Wu et al. 2019) Q(s, a, z), pi(a | s, z)
   is trained on all training tasks with z detached (FOCAL decouples the encoder from the
   Bellman gradients), shared networks over a (T * B) flattened batch.
4. Meta-test: z is inferred from the unseen task's offline data, and the deterministic
   policy pi(s, z) runs in the real env of that task.

Choices where the paper or FOCAL's code leaves room (all fields of ``FocalConfig``):

- Positive pairs: FOCAL's code pairs the task latents of the tasks that happen to repeat in
  a meta-batch sampled with replacement. Here every task of the batch gets two independent
  context draws, so each task contributes a positive pair at every step and the task batch
  is drawn without replacement. Negatives: every pair of latents of different tasks.
- Behavior model: BRAC learns pi_b by maximum likelihood. Task identity is known during
  meta-training, so pi_b is one tanh-Gaussian per training task (``BehaviorCloning``,
  stacked over tasks), fit once before the actor-critic. It is only used in training.
- Divergence: KL(pi(.|s,z) || pi_b(.|s)). Both are tanh-squashed Gaussians and tanh is a
  bijection, so the KL equals the KL of the pre-tanh Gaussians: closed form, exact, no
  sampling noise (FOCAL's code estimates it in dual form with an extra critic; same target).
- Regularization mode: ``value_penalty=False`` (FOCAL's default, BRAC-pr: the penalty in
  the actor loss) or ``True`` (BRAC-vp: also subtracted in the Bellman target).
- The penalty weight alpha is a dual variable (FOCAL's ``train_alpha``): log alpha rises
  while the divergence exceeds ``target_divergence``, capped at ``alpha_max``.
- Entropy: SAC's auto-tuned temperature with target entropy -act_dim (FOCAL's
  ``max_entropy``), twin critics with Polyak-averaged targets.
- Inputs are normalized with training-data statistics (kept in the agent for meta-test):
  observations and rewards by mean / std, actions mapped from the env box onto [-1, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from merpo_data.networks import (
    LOG_STD_MAX,
    LOG_STD_MIN,
    StackedLinear,
    seed_baddbmm,
)
from merpo_data.sampler import TaskSampler
from torch import nn

from merpo_agent.baselines.context import (
    BaselineConfig,
    BaselineLearner,
    GaussianPolicyAgent,
    TwinCritic,
    agent_state,
    evaluate_agent,
    gaussian_kl,
    infer_test_latents,
    load_agent,
    polyak_,
    save_agent,
    seed_mean,
    seed_rows,
    seed_scale,
    split_context,
    twin_bellman_loss,
    twin_critics,
)
from merpo_agent.baselines.context import agent_from_state as _agent_from_state
from merpo_agent.behavior_cloning import BehaviorCloning
from merpo_agent.task_slice import sample_tasks
from merpo_agent.transitions import TransitionBatch

# ---- config -----------------------------------------------------------------------------


@dataclass
class FocalConfig(BaselineConfig):
    """FOCAL's hyperparameters; defaults follow FOCAL's code (``configs/default.py``) and
    BRAC where FOCAL's are not stated. ``discount`` comes from the env (``for_env``)."""

    latent_dim: int = 5  # FOCAL latent_size
    hidden: int = 300  # FOCAL net_size: actor and critics
    hidden_layers: int = 3
    encoder_hidden: int = 200  # FOCAL's context encoder: 3 x 200
    encoder_layers: int = 3
    batch_size: int = 256  # RL transitions per task per update
    context_size: int = 64  # FOCAL embedding_batch_size: transitions per context
    task_batch_size: int | None = 16  # FOCAL meta_batch; None: every training task
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target critics
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    encoder_lr: float = 3e-4
    reward_scale: float = 1.0  # rewards are scaled in the Bellman target only
    # distance metric loss: same task ||dz||^2, different tasks beta / (||dz||^power + eps)
    metric_beta: float = 1.0
    metric_power: float = 2.0
    metric_eps: float = 0.1  # FOCAL's code: 100 * 1e-3
    # behavior regularization (BRAC)
    value_penalty: bool = False
    alpha_init: float = 1.0
    alpha_max: float = 1000.0
    alpha_lr: float = 1e-3
    tune_alpha: bool = True
    target_divergence: float = 0.05
    entropy_lr: float = 3e-4
    # the per-task behavior model, fit once before the actor-critic
    behavior_steps: int = 2000
    behavior_hidden: int = 256
    behavior_layers: int = 3
    behavior_lr: float = 1e-3
    # meta-test: transitions of the unseen task's data averaged into z
    eval_context_size: int = 256
    log_every: int = 1000

    POSITIVE: ClassVar[tuple[str, ...]] = (
        "latent_dim", "hidden", "hidden_layers", "encoder_hidden", "encoder_layers",
        "batch_size", "context_size", "eval_context_size", "log_every", "behavior_hidden",
        "behavior_layers",
    )
    POSITIVE_OR_NONE: ClassVar[tuple[str, ...]] = ("task_batch_size",)
    # Smoke tests: larger learning rates (the encoder's 3e-3) so that a few hundred updates
    # show learning.
    SMOKE: ClassVar[dict[str, Any]] = dict(
        hidden=32, hidden_layers=2, encoder_hidden=32, encoder_layers=2, batch_size=64,
        context_size=32, task_batch_size=None, behavior_steps=100, behavior_hidden=32,
        behavior_layers=2, eval_context_size=128, log_every=25, actor_lr=1e-3,
        critic_lr=1e-3, encoder_lr=3e-3,
    )

    def __post_init__(self) -> None:
        self.check_fields()
        if not 0.0 < self.alpha_init <= self.alpha_max:
            raise ValueError(
                f"FocalConfig needs 0 < alpha_init <= alpha_max, got {self.alpha_init}, "
                f"{self.alpha_max}"
            )


# ---- encoder and networks ---------------------------------------------------------------


class FocalAgent(GaussianPolicyAgent):
    """What meta-test needs: normalizer, context encoder and the latent-conditioned policy.

    ``infer_latent(context)`` takes transitions as the task sampler gives them (env-unit
    actions, raw rewards), ``act`` returns actions in [-1, 1] (``from_unit_actions`` maps them
    to the env box).
    """


# ---- losses -----------------------------------------------------------------------------


def distance_metric_loss(
    z_a: torch.Tensor,
    z_b: torch.Tensor,
    beta: float = 1.0,
    power: float = 2.0,
    eps: float = 0.1,
    seeds: int = 1,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FOCAL's distance metric loss (FOCAL Eq. 9) over two context draws per task.

    ``z_a``, ``z_b`` (T, L): latents of task t from two independent contexts. Pairs of the
    same task (z_a[t], z_b[t]) are pulled together by their squared distance; pairs of
    different tasks (any draw) are pushed apart by ``beta / (||dz||^power + eps)``.
    Returns (loss, mean squared same-task distance, mean squared cross-task distance):
    scalars, or with ``seeds`` S > 1 (T seed-major) each seed's over its own tasks (S,).
    """
    t = z_a.shape[0] // seeds
    # (S, 2T, L): each seed's two draws
    z = torch.cat([z_a.view(seeds, t, -1), z_b.view(seeds, t, -1)], dim=1)
    labels = torch.arange(t, device=z.device).repeat(2)
    sq_dist = (z.unsqueeze(1) - z.unsqueeze(2)).pow(2).sum(-1)  # (S, 2T, 2T)
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    same = same & ~torch.eye(2 * t, dtype=torch.bool, device=z.device)
    different = labels.unsqueeze(0) != labels.unsqueeze(1)
    same_f, different_f = same.float(), different.float()
    # ||dz||^power through the squared distance (no sqrt: its gradient is infinite at 0).
    inverse = beta / (sq_dist.pow(power / 2.0) + eps)

    def pair_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        total = (values * mask).sum() if seeds == 1 else (values * mask).sum(dim=(1, 2))
        return total / mask.sum().clamp_min(1.0)

    if seeds == 1:
        sq_dist, inverse = sq_dist[0], inverse[0]
    positive = pair_mean(sq_dist, same_f)
    negative = pair_mean(inverse, different_f)
    cross = pair_mean(sq_dist, different_f)
    return positive + negative, positive.detach(), cross.detach()


def behavior_distribution(
    behavior: BehaviorCloning, task_indices: torch.Tensor, norm_obs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """pi_b's pre-tanh mean, log-std (T', N, act_dim) for the tasks ``task_indices`` of its
    stack (one batched matmul per layer with the gathered weights, no loop over tasks; a
    seed-stacked pi_b's rows are every seed's tasks, seed-major)."""
    x = norm_obs
    seeds = behavior.seeds
    for layer in behavior.policy.trunk.net:
        if isinstance(layer, StackedLinear):
            x = seed_baddbmm(
                layer.bias.index_select(0, task_indices), x,
                layer.weight.index_select(0, task_indices), seeds,
            )
        else:
            x = layer(x)
    mean, log_std = x.chunk(2, dim=-1)
    return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)


# ---- the learner ------------------------------------------------------------------------


class FocalLearner(BaselineLearner):
    """Training state: the agent, twin critics and targets, behavior model, duals, optimizers."""

    agent_class = FocalAgent
    agent_format = "focal"

    def __init__(self, agent: FocalAgent, num_tasks: int, generator: torch.Generator):
        super().__init__()
        cfg = agent.config
        self.agent, self.config, self.num_tasks, self.generator = agent, cfg, num_tasks, generator
        obs_dim, act_dim = agent.obs_dim, agent.act_dim
        device = agent.device
        self.critic, self.target_critic = twin_critics(agent)
        self.behavior = BehaviorCloning(  # every seed's tasks, seed-major
            agent.seeds * num_tasks, obs_dim, act_dim, cfg.behavior_hidden,
            cfg.behavior_layers, device, agent.seeds
        )
        lead = () if agent.seeds == 1 else (agent.seeds,)  # one dual per seed
        self.log_alpha = nn.Parameter(torch.full(lead, math.log(cfg.alpha_init)))
        self.log_entropy_coef = nn.Parameter(torch.zeros(lead))
        self.target_entropy = -float(act_dim)
        self.to(device)
        self.encoder_optimizer = torch.optim.Adam(agent.encoder.parameters(), lr=cfg.encoder_lr)
        self.actor_optimizer = torch.optim.Adam(agent.policy.parameters(), lr=cfg.actor_lr)
        self.critic_optimizer = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.alpha_optimizer = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.entropy_optimizer = torch.optim.Adam([self.log_entropy_coef], lr=cfg.entropy_lr)

    def fit_behavior(self, sampler: TaskSampler) -> torch.Tensor:
        """Maximum likelihood pi_b per training task (normalized s, unit a); returns NLL (T,)."""
        agent = self.agent

        def sample(batch_size: int) -> TransitionBatch:
            b = sampler.sample(batch_size, generator=self.generator)
            return b._replace(
                observations=agent.normalize_obs(b.observations),
                actions=agent.unit_actions(b.actions),
            )

        nll = self.behavior.fit(
            sample, self.config.behavior_steps, self.config.batch_size, self.config.behavior_lr
        )
        return nll

    def prepare(self, sampler: TaskSampler) -> dict[str, float]:
        return {"behavior_nll": float(self.fit_behavior(sampler).mean())}

    def after_prepare(self) -> None:
        self.behavior.requires_grad_(False)  # fit once, then fixed

    def step(self, sampler: TaskSampler, task_indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Draw the RL batch and two contexts per task, then :meth:`update` (the behavior
        model's rows: each seed's tasks in its own block)."""
        cfg = self.config
        batch = sample_tasks(sampler, cfg.batch_size, task_indices, self.generator)
        context = sample_tasks(sampler, 2 * cfg.context_size, task_indices, self.generator)
        context_a, context_b = split_context(context, cfg.context_size)
        rows = seed_rows(task_indices, self.agent.seeds, self.num_tasks)
        return self.update(batch, context_a, context_b, rows)

    def alpha(self) -> torch.Tensor:
        return self.log_alpha.detach().exp().clamp(max=self.config.alpha_max)

    def critic_loss(
        self,
        norm_obs: torch.Tensor,
        unit_act: torch.Tensor,
        rewards: torch.Tensor,
        norm_next_obs: torch.Tensor,
        terminations: torch.Tensor,
        z: torch.Tensor,
        task_indices: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Twin-Q Bellman error with SAC's soft target (BRAC-vp: minus alpha * KL at s').

        y = r_scaled + gamma (1 - term) (min_i Q'_i(s', a') - ent log pi(a'|s', z)
                                         [- alpha KL(pi(.|s', z) || pi_b(.|s'))]).
        Returns (loss, mean Q).
        """
        cfg, agent = self.config, self.agent
        with torch.no_grad():
            next_act, next_log_prob, mean, log_std = agent.sample_action(
                norm_next_obs, z, self.generator
            )
            next_value = self.target_critic(norm_next_obs, next_act, z).min(0).values
            next_value = next_value - seed_scale(self.log_entropy_coef.exp(), next_log_prob)
            if cfg.value_penalty:
                b_mean, b_log_std = behavior_distribution(
                    self.behavior, task_indices, norm_next_obs
                )
                kl = gaussian_kl(mean, log_std, b_mean, b_log_std)
                next_value = next_value - seed_scale(self.alpha(), kl)
            target = cfg.reward_scale * rewards + cfg.discount * (1.0 - terminations) * next_value
        q = self.critic(norm_obs, unit_act, z)
        seeds = self.agent.seeds
        return twin_bellman_loss(q, target, seeds), seed_mean(q.detach(), seeds, axis=1)

    def actor_loss(
        self, norm_obs: torch.Tensor, z: torch.Tensor, task_indices: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """BRAC's policy loss: E[ent log pi(a|s,z) - min_i Q_i(s,a,z) + alpha KL(pi || pi_b)].

        Returns (loss, log pi of the sampled actions (T, B), KL per state (T, B)).
        """
        action, log_prob, mean, log_std = self.agent.sample_action(norm_obs, z, self.generator)
        q = self.critic(norm_obs, action, z).min(0).values
        b_mean, b_log_std = behavior_distribution(self.behavior, task_indices, norm_obs)
        divergence = gaussian_kl(mean, log_std, b_mean, b_log_std)
        entropy_coef = self.log_entropy_coef.detach().exp()
        per_state = seed_scale(entropy_coef, log_prob) - q + seed_scale(self.alpha(), divergence)
        return seed_mean(per_state, self.agent.seeds), log_prob.detach(), divergence.detach()

    def update(
        self,
        batch: TransitionBatch,
        context_a: TransitionBatch,
        context_b: TransitionBatch,
        task_indices: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """One FOCAL step on a task batch: encoder (metric loss), critics, actor, duals, targets.

        ``batch`` (T', B, ...) and the two contexts (T', C, ...) come straight from
        ``TaskSampler.sample`` for the tasks ``task_indices`` (positions in the sampler,
        also the rows of the behavior model). Returns detached scalar metrics.
        """
        cfg, agent = self.config, self.agent
        seeds = agent.seeds
        # 1. Encoder: distance metric learning only (no Bellman gradient reaches it).
        z_a, z_b = agent.infer_latent(context_a), agent.infer_latent(context_b)
        metric_loss, same_dist, cross_dist = distance_metric_loss(
            z_a, z_b, cfg.metric_beta, cfg.metric_power, cfg.metric_eps, seeds
        )
        self.encoder_optimizer.zero_grad(set_to_none=True)
        metric_loss.sum().backward()  # with several seeds each seed's gradient is its own
        self.encoder_optimizer.step()

        t, b = batch.rewards.shape
        z = z_a.detach().unsqueeze(1).expand(t, b, cfg.latent_dim)
        norm_obs = agent.normalize_obs(batch.observations)
        norm_next_obs = agent.normalize_obs(batch.next_observations)
        unit_act = agent.unit_actions(batch.actions)

        # 2. Critics.
        critic_loss, q_mean = self.critic_loss(
            norm_obs, unit_act, batch.rewards, norm_next_obs, batch.terminations, z, task_indices
        )
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        self.critic_optimizer.step()

        # 3. Actor (the critic is held fixed: its grads from this loss are discarded).
        self.critic.requires_grad_(False)
        actor_loss, log_prob, divergence = self.actor_loss(norm_obs, z, task_indices)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
        self.actor_optimizer.step()
        self.critic.requires_grad_(True)

        # 4. Duals: entropy temperature (SAC) and divergence weight alpha (BRAC / FOCAL).
        entropy_loss = -seed_mean(seed_scale(self.log_entropy_coef,
                                             log_prob + self.target_entropy), seeds)
        self.entropy_optimizer.zero_grad(set_to_none=True)
        entropy_loss.sum().backward()
        self.entropy_optimizer.step()
        mean_divergence = seed_mean(divergence, seeds)
        if cfg.tune_alpha:
            alpha_loss = -self.log_alpha * (mean_divergence - cfg.target_divergence)
            self.alpha_optimizer.zero_grad(set_to_none=True)
            alpha_loss.sum().backward()
            self.alpha_optimizer.step()
            with torch.no_grad():  # projection onto alpha <= alpha_max (no wind-up above it)
                self.log_alpha.clamp_(max=math.log(cfg.alpha_max))

        # 5. Target critics.
        polyak_(self.target_critic, self.critic, cfg.tau)

        return {
            "metric_loss": metric_loss.detach(),
            "latent_same_task_sq_dist": same_dist,
            "latent_cross_task_sq_dist": cross_dist,
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "q_mean": q_mean,
            "divergence": mean_divergence,
            "alpha": self.alpha(),
            "entropy_coef": self.log_entropy_coef.detach().exp(),
            "entropy": -seed_mean(log_prob, seeds),
        }


# ---- training loop ----------------------------------------------------------------------



# ---- meta-test --------------------------------------------------------------------------


@torch.no_grad()
def latent_separation(
    agent: FocalAgent,
    sampler: TaskSampler,
    draws: int = 16,
    context_size: int | None = None,
    seed: int = 0,
) -> torch.Tensor:
    """How well the latents tell the sampler's tasks apart: (T, T) Fisher-style ratios.

    ``draws`` independent contexts per task give latents Z (draws, T, L); entry (i, j) is
    ||mean Z_i - mean Z_j||^2 / (spread_i + spread_j) / 2, spread_t the mean squared distance
    of task t's latents from their mean. Scale free; large means well separated.
    """
    size = agent.config.context_size if context_size is None else context_size
    generator = torch.Generator(device=sampler.device).manual_seed(seed)
    latents = torch.stack(
        [infer_test_latents(agent, sampler, size, generator) for _ in range(draws)]
    )
    means = latents.mean(0)  # (T, L)
    spread = (latents - means).pow(2).sum(-1).mean(0)  # (T,)
    between = (means.unsqueeze(0) - means.unsqueeze(1)).pow(2).sum(-1)
    return between / ((spread.unsqueeze(0) + spread.unsqueeze(1)) / 2).clamp_min(1e-12)


def evaluate_focal(
    agent: FocalAgent,
    test_sampler: TaskSampler,
    env_id: str,
    episodes: int,
    seed: int,
    context_size: int | None = None,
) -> dict[int, float]:
    """Meta-test: infer z of each task from its offline data, run the deterministic
    pi(s, z) in the real env (``context.evaluate_agent``). Returns ``{task: mean return}``."""
    return evaluate_agent(
        "evaluate_focal", agent, test_sampler, env_id, episodes, seed, context_size
    )


# ---- save / load ------------------------------------------------------------------------

FORMAT = FocalLearner.agent_format


def focal_state(agent: FocalAgent) -> dict[str, Any]:
    """A ``weights_only``-loadable dict: config, dimensions and the agent's state_dict."""
    return agent_state(agent, FORMAT)


def agent_from_state(state: dict[str, Any], device: str | torch.device = "cpu") -> FocalAgent:
    return _agent_from_state(
        state, FORMAT, FocalAgent, FocalConfig, device, "FOCAL", "save it with save_focal"
    )


def save_focal(agent: FocalAgent, path: str | Path) -> None:
    """Write the agent atomically (temporary file + rename)."""
    save_agent(agent, path, FORMAT)


def load_focal(path: str | Path, device: str | torch.device = "cpu") -> FocalAgent:
    """Read an agent written by ``save_focal`` (``torch.load(weights_only=True)``)."""
    return load_agent(
        path, device, FORMAT, FocalAgent, FocalConfig, "FOCAL", "save it with save_focal"
    )


__all__ = [
    "FocalAgent",
    "FocalConfig",
    "FocalLearner",
    "TwinCritic",
    "agent_from_state",
    "behavior_distribution",
    "distance_metric_loss",
    "evaluate_focal",
    "focal_state",
    "gaussian_kl",
    "infer_test_latents",
    "latent_separation",
    "load_focal",
    "save_focal",
]
