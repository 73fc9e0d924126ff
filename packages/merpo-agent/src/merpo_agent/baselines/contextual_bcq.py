"""Contextual BCQ: batch-constrained Q-learning with a task latent in the state.

BCQ is Fujimoto, Meger, Precup, ICML 2019 ("Off-Policy Deep Reinforcement Learning without
Exploration", Alg. 1); the contextual variant is one of the MerPO paper's baselines
(MerPO §5.2, Fig. 6):
the state is augmented with a task latent z inferred from a context of the task's own
transitions, as in PEARL trained offline. One module, top to bottom: config, networks,
losses, the update, the training loop, meta-test evaluation, save / load.

The method:

1. A deterministic, permutation-invariant context encoder (FOCAL's ``ContextEncoder``: the
   mean of per-transition embeddings of (s, a, r, s')) maps a task's context to z. It is
   trained end to end through the critics' Bellman loss (PEARL's critic-driven encoder); z
   is detached for the VAE and the perturbation network, and in the Bellman target.
2. A conditional VAE G(s, z) models the dataset's actions (BCQ §4: reconstruction + 0.5 KL);
   its decoder, fed a clipped latent in [-0.5, 0.5], proposes in-distribution actions.
3. A perturbation network xi(s, a, z) moves each proposal by at most Phi (0.05 of the
   [-1, 1] action range) and is trained to maximise Q_1 (BCQ Eq. 11 / 12).
4. Twin critics with BCQ's soft clipped double-Q target (Eq. 13): for n sampled actions at
   s', lam * min_i Q'_i + (1 - lam) * max_i Q'_i, maximised over the n actions.
5. Acting (Eq. 10): n proposals perturbed by xi, the one with the highest Q_1 is taken.

Every network is shared across tasks and fed the (T * B) flattened batch with z
concatenated; batches come from ``TaskSampler.sample`` as (T, B, ...), so one update is one
set of matmuls whatever the number of tasks. Inputs are normalized with training-data
statistics (kept in the agent): observations by mean / std, actions mapped from the env box
onto [-1, 1] (``merpo_agent.action_scaling``), context rewards by mean / std.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from merpo_data.networks import StackedMLP, set_seed_block
from merpo_data.sampler import TaskSampler
from torch import nn

from merpo_agent.baselines.context import (
    BaselineConfig,
    BaselineLearner,
    ContextEncoder,
    ContextualAgent,
    PolicyFn,
    TwinCritic,
    agent_state,
    evaluate_agent,
    frozen_copy,
    infer_test_latents,
    load_agent,
    polyak_,
    save_agent,
    seed_mean,
    twin_bellman_loss,
)
from merpo_agent.baselines.context import agent_from_state as _agent_from_state
from merpo_agent.task_slice import Generators, draw_slots, sample_tasks
from merpo_agent.transitions import TransitionBatch

# BCQ's code: the VAE's log-std is clamped to [-4, 15] and its prior latent to [-0.5, 0.5].
VAE_LOG_STD_MIN, VAE_LOG_STD_MAX = -4.0, 15.0
VAE_PRIOR_CLIP = 0.5


# ---- config -----------------------------------------------------------------------------


@dataclass
class ContextualBCQConfig(BaselineConfig):
    """BCQ's hyperparameters (paper §5 and its code) plus the context encoder's (FOCAL's
    sizes). ``discount`` comes from the env (``for_env``)."""

    latent_dim: int = 5  # task latent z
    hidden: int = 300  # perturbation network and critics (BCQ: 400, 300)
    hidden_layers: int = 2
    vae_hidden: int = 750  # BCQ's VAE: 750, 750
    vae_layers: int = 2
    vae_latent_dim: int | None = None  # None: 2 * act_dim (BCQ)
    encoder_hidden: int = 200
    encoder_layers: int = 3
    batch_size: int = 256  # RL transitions per task per update
    context_size: int = 64  # transitions averaged into z during training
    task_batch_size: int | None = 16  # None: every training task
    discount: float = 0.99
    tau: float = 0.005  # Polyak rate of the target actor and critics
    lam: float = 0.75  # soft clipped double-Q weight (BCQ Eq. 13)
    phi: float = 0.05  # perturbation bound in [-1, 1] action units
    num_samples: int = 10  # n: actions sampled in the target and when acting
    actor_lr: float = 1e-3
    critic_lr: float = 1e-3
    vae_lr: float = 1e-3
    encoder_lr: float = 3e-4
    kl_weight: float = 0.5  # BCQ's VAE loss: reconstruction + 0.5 KL
    reward_scale: float = 1.0  # rewards are scaled in the Bellman target only
    eval_context_size: int = 256  # meta-test: transitions of the unseen task averaged into z
    log_every: int = 1000

    POSITIVE: ClassVar[tuple[str, ...]] = (
        "latent_dim", "hidden", "hidden_layers", "vae_hidden", "vae_layers",
        "encoder_hidden", "encoder_layers", "batch_size", "context_size", "num_samples",
        "eval_context_size", "log_every",
    )
    POSITIVE_OR_NONE: ClassVar[tuple[str, ...]] = ("task_batch_size", "vae_latent_dim")
    # Smoke tests: a faster target (tau 0.02) and encoder (3e-3) so that a few hundred
    # updates show learning.
    SMOKE: ClassVar[dict[str, Any]] = dict(
        hidden=32, hidden_layers=2, vae_hidden=32, vae_layers=2, encoder_hidden=32,
        encoder_layers=2, batch_size=64, context_size=32, task_batch_size=None,
        eval_context_size=128, log_every=25, tau=0.02, encoder_lr=3e-3,
    )

    def __post_init__(self) -> None:
        self.check_fields()
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"ContextualBCQConfig.lam must be in [0, 1], got {self.lam}")
        if not 0.0 <= self.phi <= 2.0:
            raise ValueError(f"ContextualBCQConfig.phi must be in [0, 2], got {self.phi}")


# ---- networks ---------------------------------------------------------------------------


def _shared(net: StackedMLP, x: torch.Tensor) -> torch.Tensor:
    """Apply a stack-of-one network to (..., N, features): all leading axes flattened (a
    stack of S seeds' networks: each on its seed's block of the leading axis)."""
    lead = x.shape[:-1]
    seeds = net.stack_shape[0]
    return net(x.reshape(seeds, -1, x.shape[-1])).reshape(*lead, -1)


def _seed_stack(seeds: int, *args: int) -> StackedMLP:
    """A stack-of-one network, or one per seed (stack (seeds,))."""
    return set_seed_block(StackedMLP((seeds,), *args), None if seeds == 1 else 1)


class ActionVAE(nn.Module):
    """BCQ's conditional VAE G(s, z) of dataset actions (in [-1, 1]), conditioned on the
    normalized state with the task latent appended (``cond``)."""

    def __init__(self, cond_dim: int, act_dim: int, latent: int, hidden: int, layers: int,
                 seeds: int = 1):
        super().__init__()
        self.latent = latent
        self.encoder = _seed_stack(seeds, cond_dim + act_dim, 2 * latent, hidden, layers)
        self.decoder = _seed_stack(seeds, cond_dim + latent, act_dim, hidden, layers)

    def encode(self, cond: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = _shared(self.encoder, torch.cat([cond, action], -1)).chunk(2, -1)
        return mean, log_std.clamp(VAE_LOG_STD_MIN, VAE_LOG_STD_MAX)

    def decode(self, cond: torch.Tensor, latent: torch.Tensor) -> torch.Tensor:
        return torch.tanh(_shared(self.decoder, torch.cat([cond, latent], -1)))

    def sample(self, cond: torch.Tensor, generator: Generators = None) -> torch.Tensor:
        """Decoded actions for the prior latent clipped to [-0.5, 0.5] (BCQ's sampling)."""
        shape = (*cond.shape[:-1], self.latent)
        noise = draw_slots(generator, lambda s, g: torch.randn(s, device=cond.device,
                                                              generator=g), shape)
        return self.decode(cond, noise.clamp(-VAE_PRIOR_CLIP, VAE_PRIOR_CLIP))

    def forward(
        self, cond: torch.Tensor, action: torch.Tensor, noise: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, mean, log_std) with the latent mean + std * noise."""
        mean, log_std = self.encode(cond, action)
        return self.decode(cond, mean + log_std.exp() * noise), mean, log_std


class Perturbation(nn.Module):
    """xi_phi(s, a, z): a + phi * tanh(net(s, a, z)), clipped to [-1, 1] (BCQ §4)."""

    def __init__(self, cond_dim: int, act_dim: int, phi: float, hidden: int, layers: int,
                 seeds: int = 1):
        super().__init__()
        self.phi = phi
        self.net = _seed_stack(seeds, cond_dim + act_dim, act_dim, hidden, layers)

    def forward(self, cond: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        shift = self.phi * torch.tanh(_shared(self.net, torch.cat([cond, action], -1)))
        return (action + shift).clamp(-1.0, 1.0)


def select_best(candidates: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The candidate with the highest Q: candidates (..., n, act_dim), q (..., n) ->
    (..., act_dim) (BCQ Eq. 10's argmax, a gather: no host copy)."""
    best = q.argmax(dim=-1, keepdim=True)  # (..., 1)
    index = best.unsqueeze(-1).expand(*best.shape, candidates.shape[-1])
    return candidates.gather(-2, index).squeeze(-2)


def soft_clipped_double_q(q: torch.Tensor, lam: float) -> torch.Tensor:
    """BCQ Eq. 13's inner value, lam * min_i Q_i + (1 - lam) * max_i Q_i, then the max over
    the n sampled actions: q (2, ..., n) -> (...)."""
    soft = lam * q.min(0).values + (1.0 - lam) * q.max(0).values
    return soft.max(dim=-1).values


class ContextualBCQAgent(ContextualAgent):
    """What meta-test needs: normalizer, context encoder, VAE, perturbation net and critics.

    ``infer_latent(context)`` takes transitions as the task sampler gives them (env-unit
    actions, raw rewards); ``act`` returns actions in [-1, 1] (``env_actions`` maps them to
    the env box).
    """

    def __init__(
        self,
        config: ContextualBCQConfig,
        obs_dim: int,
        act_dim: int,
        action_low: torch.Tensor,
        action_high: torch.Tensor,
        device: str | torch.device = "cpu",
        seeds: int = 1,
    ):
        super().__init__(config, obs_dim, act_dim, action_low, action_high, seeds)
        cond = obs_dim + config.latent_dim
        vae_latent = config.vae_latent_dim or 2 * act_dim
        self.encoder = ContextEncoder(
            obs_dim, act_dim, config.latent_dim, config.encoder_hidden, config.encoder_layers,
            seeds,
        )
        self.vae = ActionVAE(cond, act_dim, vae_latent, config.vae_hidden, config.vae_layers,
                             seeds)
        self.actor = Perturbation(cond, act_dim, config.phi, config.hidden, config.hidden_layers,
                                  seeds)
        self.critic = TwinCritic(
            obs_dim, act_dim, config.latent_dim, config.hidden, config.hidden_layers, seeds
        )
        self.to(device)

    def candidates(
        self,
        norm_obs: torch.Tensor,
        z: torch.Tensor,
        generator: torch.Generator | None = None,
        actor: Perturbation | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """n perturbed VAE proposals per state: norm_obs (T, N, obs_dim), z (T, N, L) ->
        (repeated states (T, N * n, obs_dim), their z (T, N * n, L), actions (T, N * n, act))
        with the n candidates of a state adjacent (``actor``: e.g. the target network)."""
        n = self.config.num_samples
        obs_rep = norm_obs.repeat_interleave(n, dim=1)
        z_rep = z.repeat_interleave(n, dim=1)
        cond = torch.cat([obs_rep, z_rep], -1)
        proposals = self.vae.sample(cond, generator)
        return obs_rep, z_rep, (actor or self.actor)(cond, proposals)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """BCQ's policy (Eq. 10): of n perturbed proposals the argmax of Q_1; raw
        observations (T, N, obs_dim), z (T, L) -> actions in [-1, 1] (T, N, act_dim)."""
        if obs.dim() != 3 or z.dim() != 2 or z.shape[0] != obs.shape[0]:
            raise ValueError(
                f"act needs obs (T, N, obs_dim) and z (T, latent); got {tuple(obs.shape)} and "
                f"{tuple(z.shape)}"
            )
        t, n_states, _ = obs.shape
        z = z.unsqueeze(1).expand(-1, n_states, -1)
        obs_rep, z_rep, actions = self.candidates(self.normalize_obs(obs), z, generator)
        q = self.critic(obs_rep, actions, z_rep)[0]  # (T, N * n)
        n = self.config.num_samples
        return select_best(
            actions.reshape(t, n_states, n, self.act_dim), q.reshape(t, n_states, n)
        )

    def meta_test_policy(self, z: torch.Tensor, seed: int) -> PolicyFn:
        """BCQ's policy with the VAE's proposals drawn from a generator seeded with
        ``seed`` (a meta-test is reproducible)."""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        return lambda obs: self.act(obs, z, generator)


# ---- losses -----------------------------------------------------------------------------


def vae_loss(
    recon: torch.Tensor,
    action: torch.Tensor,
    mean: torch.Tensor,
    log_std: torch.Tensor,
    kl_weight: float,
    seeds: int = 1,
) -> torch.Tensor:
    """BCQ's VAE objective: MSE reconstruction + kl_weight * KL(N(mean, std) || N(0, 1));
    each seed's over its own task rows (``seeds``, seed-major)."""
    recon_loss = seed_mean((recon - action).pow(2), seeds)
    kl = -0.5 * seed_mean(1.0 + 2.0 * log_std - mean.pow(2) - (2.0 * log_std).exp(), seeds)
    return recon_loss + kl_weight * kl


# ---- the learner ------------------------------------------------------------------------


class ContextualBCQLearner(BaselineLearner):
    """Training state: the agent, target actor and critics, optimizers."""

    agent_class = ContextualBCQAgent
    agent_format = "contextual_bcq"

    @property
    def candidates(self) -> int:
        """The target's critics evaluate ``num_samples`` proposals per state."""
        return self.config.num_samples

    @classmethod
    def create(
        cls, agent: ContextualBCQAgent, num_tasks: int, generator: torch.Generator
    ) -> ContextualBCQLearner:
        return cls(agent, generator)

    def __init__(self, agent: ContextualBCQAgent, generator: torch.Generator):
        super().__init__()
        cfg = agent.config
        self.agent, self.config, self.generator = agent, cfg, generator
        cond = agent.obs_dim + cfg.latent_dim
        self.target_actor = frozen_copy(agent.actor, lambda: Perturbation(
            cond, agent.act_dim, cfg.phi, cfg.hidden, cfg.hidden_layers, agent.seeds
        ))
        self.target_critic = frozen_copy(agent.critic, lambda: TwinCritic(
            agent.obs_dim, agent.act_dim, cfg.latent_dim, cfg.hidden, cfg.hidden_layers,
            agent.seeds
        ))
        self.to(agent.device)
        self.vae_optimizer = torch.optim.Adam(agent.vae.parameters(), lr=cfg.vae_lr)
        self.actor_optimizer = torch.optim.Adam(agent.actor.parameters(), lr=cfg.actor_lr)
        self.critic_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=cfg.critic_lr)
        self.encoder_optimizer = torch.optim.Adam(agent.encoder.parameters(), lr=cfg.encoder_lr)

    @torch.no_grad()
    def bellman_target(
        self,
        rewards: torch.Tensor,
        norm_next_obs: torch.Tensor,
        terminations: torch.Tensor,
        z: torch.Tensor,
    ) -> torch.Tensor:
        """y = r_scaled + gamma (1 - term) max_j [lam min_i Q'_i + (1 - lam) max_i Q'_i]
        (s', a_j, z) over n target-perturbed VAE proposals a_j at s' (BCQ Eq. 13); (T, B)."""
        cfg, agent = self.config, self.agent
        t, b = rewards.shape
        obs_rep, z_rep, actions = agent.candidates(
            norm_next_obs, z, self.generator, self.target_actor
        )
        q = self.target_critic(obs_rep, actions, z_rep).reshape(2, t, b, cfg.num_samples)
        next_value = soft_clipped_double_q(q, cfg.lam)
        return cfg.reward_scale * rewards + cfg.discount * (1.0 - terminations) * next_value

    def step(self, sampler: TaskSampler, task_indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """Draw the RL batch and a context per task, then :meth:`update`."""
        cfg = self.config
        batch = sample_tasks(sampler, cfg.batch_size, task_indices, self.generator)
        context = sample_tasks(sampler, cfg.context_size, task_indices, self.generator)
        return self.update(batch, context)

    def update(
        self,
        batch: TransitionBatch,
        context: TransitionBatch,
        encoder_loss: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """One BCQ step on a task batch: VAE, critics + encoder, perturbation net, targets.

        ``batch`` (T', B, ...) and ``context`` (T', C, ...) come straight from
        ``TaskSampler.sample`` for the same tasks. ``encoder_loss(z)``, with z (T', latent)
        the context's latents, is added to the critic loss before its backward (a second
        objective of the encoder, e.g. MBML's triplet loss; it adds to ``critic_loss``'s
        gradient only through the encoder). Returns detached scalar metrics (one per seed).
        """
        cfg, agent = self.config, self.agent
        seeds = agent.seeds
        t, b = batch.rewards.shape
        z_tasks = agent.infer_latent(context)
        z = z_tasks.unsqueeze(1).expand(t, b, cfg.latent_dim)
        z_fixed = z.detach()
        norm_obs = agent.normalize_obs(batch.observations)
        norm_next_obs = agent.normalize_obs(batch.next_observations)
        unit_act = agent.unit_actions(batch.actions)
        cond = torch.cat([norm_obs, z_fixed], -1)

        # 1. Generative model of the dataset's actions (z detached).
        noise = draw_slots(self.generator, lambda s, g: torch.randn(
            s, device=norm_obs.device, generator=g), (t, b, agent.vae.latent))
        recon, mean, log_std = agent.vae(cond, unit_act, noise)
        generative_loss = vae_loss(recon, unit_act, mean, log_std, cfg.kl_weight, seeds)
        self.vae_optimizer.zero_grad(set_to_none=True)
        generative_loss.sum().backward()  # with several seeds each seed's gradient its own
        self.vae_optimizer.step()

        # 2. Critics and, through z, the context encoder (the Bellman loss trains both).
        target = self.bellman_target(batch.rewards, norm_next_obs, batch.terminations, z_fixed)
        q = agent.critic(norm_obs, unit_act, z)
        critic_loss = twin_bellman_loss(q, target, seeds)
        extra = encoder_loss(z_tasks) if encoder_loss is not None else None
        self.critic_optimizer.zero_grad(set_to_none=True)
        self.encoder_optimizer.zero_grad(set_to_none=True)
        (critic_loss if extra is None else critic_loss + extra).sum().backward()
        self.critic_optimizer.step()
        self.encoder_optimizer.step()

        # 3. Perturbation network: maximise Q_1 of the perturbed proposals (critic held fixed).
        agent.critic.requires_grad_(False)
        with torch.no_grad():
            proposals = agent.vae.sample(cond, self.generator)
        perturbed = agent.actor(cond, proposals)
        actor_loss = -seed_mean(agent.critic(norm_obs, perturbed, z_fixed)[0], seeds)
        self.actor_optimizer.zero_grad(set_to_none=True)
        actor_loss.sum().backward()
        self.actor_optimizer.step()
        agent.critic.requires_grad_(True)

        # 4. Target networks.
        polyak_(self.target_critic, agent.critic, cfg.tau)
        polyak_(self.target_actor, agent.actor, cfg.tau)

        return {
            "vae_loss": generative_loss.detach(),
            "critic_loss": critic_loss.detach(),
            "actor_loss": actor_loss.detach(),
            "q_mean": seed_mean(q.detach(), seeds, axis=1),
            "perturbation": seed_mean((perturbed.detach() - proposals).abs(), seeds),
            "latent_norm": seed_mean(z_fixed[:, 0].norm(dim=-1), seeds),
        }


# ---- training loop ----------------------------------------------------------------------



# ---- meta-test --------------------------------------------------------------------------


def evaluate_contextual_bcq(
    agent: ContextualBCQAgent,
    test_sampler: TaskSampler,
    env_id: str,
    episodes: int,
    seed: int,
    context_size: int | None = None,
) -> dict[int, float]:
    """Meta-test: infer z of each task from its offline data, run BCQ's policy in the real
    env (``context.evaluate_agent``; the VAE's proposals are drawn from a generator seeded
    with ``seed``, so a call is reproducible). Returns ``{task: mean return}``."""
    return evaluate_agent(
        "evaluate_contextual_bcq", agent, test_sampler, env_id, episodes, seed, context_size
    )


# ---- save / load ------------------------------------------------------------------------

FORMAT = ContextualBCQLearner.agent_format
_HINT = "save it with save_contextual_bcq"


def contextual_bcq_state(agent: ContextualBCQAgent) -> dict[str, Any]:
    """A ``weights_only``-loadable dict: config, dimensions and the agent's state_dict."""
    return agent_state(agent, FORMAT)


def agent_from_state(
    state: dict[str, Any], device: str | torch.device = "cpu"
) -> ContextualBCQAgent:
    return _agent_from_state(
        state, FORMAT, ContextualBCQAgent, ContextualBCQConfig, device, "contextual BCQ", _HINT
    )


def save_contextual_bcq(agent: ContextualBCQAgent, path: str | Path) -> None:
    """Write the agent atomically (temporary file + rename)."""
    save_agent(agent, path, FORMAT)


def load_contextual_bcq(path: str | Path, device: str | torch.device = "cpu") -> ContextualBCQAgent:
    """Read an agent written by ``save_contextual_bcq`` (``torch.load(weights_only=True)``)."""
    return load_agent(
        path, device, FORMAT, ContextualBCQAgent, ContextualBCQConfig, "contextual BCQ", _HINT
    )


__all__ = [
    "ActionVAE",
    "ContextualBCQAgent",
    "ContextualBCQConfig",
    "ContextualBCQLearner",
    "Perturbation",
    "agent_from_state",
    "contextual_bcq_state",
    "evaluate_contextual_bcq",
    "infer_test_latents",
    "load_contextual_bcq",
    "save_contextual_bcq",
    "select_best",
    "soft_clipped_double_q",
    "vae_loss",
]
