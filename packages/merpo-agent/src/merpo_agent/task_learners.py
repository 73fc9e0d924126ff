"""RAC's learners for T tasks at once (Alg. 1 lines 4-5; Alg. 2 lines 13-14).

``TaskLearners`` holds, with a task axis on every parameter ("slots" 0..T-1):
actor pi_n (``StackedTanhGaussianPolicy``, stack (T,)), twin critics (``StackedMLP``, stack
(T, 2)) and their Polyak targets, and the per-task dual variables: SAC temperature
``log_alpha_ent``, CQL weight ``log_beta``, regularizer weight ``lam`` and ``alpha``.

One ``update`` is one RAC step for all T tasks as one set of batched ops:

1. beta dual step (App. A.2.2 "Tune beta": before the Q step), then one critic step on
   Eq. 1 (COMBO): soft Bellman error on the mixed batch (f real, 1 - f model) plus
   beta * (logsumexp_a Q at model states - Q at dataset (s, a)) with the CQL(H) estimate.
2. one actor step on Eq. 9: SAC objective + lam alpha D_beta + lam (1 - alpha) D_meta.
3. SAC temperature step (target entropy -act_dim) and lambda dual step
   (App. A.2.2 "Tune lambda", with D_beta' from a behavior-cloning model; our choice).
4. Polyak target update with ``torch._foreach_lerp_``.

Every loss is SUMMED over tasks, so each slot's gradient is exactly its single-task
gradient; Adam is per-element, so one optimizer over the stacked parameters equals T
separate optimizers (a test checks batched == T single-task updates).

Persistence (Alg. 2 line 1): each training task's learner (networks, targets, Adam moments
and step counts, duals) lives for the whole meta-training in a ``learner_table.LearnerTable``;
a meta-iteration gathers its batch's rows into these slots and writes them back after the J
updates. ``persistent_tensors`` lists every such tensor (task axis first). Adam is
``optimizers.TaskAdam``: one step count per task, so a task's bias correction follows its
own number of updates whichever tasks shared its batch.

lam is kept >= 0 by projection (clamp after each dual step), not by a log
parameterisation: with Table 2's lambda lr of 1.0 and initial values 5 / 100, a log-scale
step would multiply lam by e per step, while a projected step moves it by about 1.

Actions are in [-1, 1] (``action_scaling``). No ``.item()`` or host copy: metrics are
detached (T,) tensors.

Seeds (``merpo_agent.seed_batch``): the slots may hold the task batches of ``seeds``
random seeds side by side, seed-major; the generator is then a ``task_slice.SeedGenerators``
(each seed's noise from its own stream), pi_c and Q_meta carry a seed axis of the same size
(one per seed, broadcast into that seed's slots), the one shared beta of
``beta_sharing="shared"`` is one per seed, and the element-wise ops whose CPU kernels round
by position run seed by seed (``merpo_data.networks.by_seed``): each seed's slots compute
what they compute alone.

Speed: the critics run once per step on the mixed batch and the CQL(H) samples together;
Adam's moments and step counts stay on the device; opt-in
``RACConfig.compile`` compiles the pure loss math and ``RACConfig.cuda_graphs`` replays the
whole step as a CUDA graph (``merpo_agent.update_graph``), both with the eager results.
"""

from __future__ import annotations

import copy
import math
from typing import NamedTuple

import torch
from merpo_data.networks import (
    StackedMLP,
    StackedTanhGaussianPolicy,
    set_seed_block,
    tanh_gaussian_log_prob,
    tanh_gaussian_rsample,
)
from torch import nn

from merpo_agent import rac_losses as L
from merpo_agent.alpha_adaptation import adaptive_alpha_step
from merpo_agent.optimizers import TaskAdam
from merpo_agent.rac_config import RACConfig
from merpo_agent.task_slice import Generators, TaskSlice, draw_slots
from merpo_agent.transitions import TransitionBatch
from merpo_agent.update_graph import UpdateGraph

# Rows of the per-task dual table.
_LOG_ALPHA_ENT, _LOG_BETA, _LAM, _ALPHA = range(4)


class UpdateNoise(NamedTuple):
    """All the randomness of one ``update``, drawn up front (or injected by a test)."""

    next_action: torch.Tensor  # (T, B, act) standard normal: a' ~ pi(.|s') for the target
    actor_action: torch.Tensor  # (T, B, act) standard normal: a ~ pi(.|s) for Eq. 9
    cql_uniform: torch.Tensor  # (T, P, K_u, act) uniform in [-1, 1]
    cql_policy: torch.Tensor  # (T, P, K_p, act) standard normal: policy actions at s

    @staticmethod
    def draw(
        num_tasks: int,
        batch_size: int,
        penalty_size: int,
        act_dim: int,
        uniform_actions: int,
        policy_actions: int,
        device: torch.device | str,
        generator: Generators = None,
        task_slice: TaskSlice | None = None,
    ) -> UpdateNoise:
        """``num_tasks`` slots' noise; under ``task_slice`` the whole batch's, cut to it
        (``num_tasks`` is then the slice's size); per seed with ``SeedGenerators``."""
        def normal(*shape: int) -> torch.Tensor:
            return draw_slots(
                generator, lambda s, g: torch.randn(s, device=device, generator=g), shape,
                task_slice,
            )

        uniform = draw_slots(
            generator, lambda s, g: torch.rand(s, device=device, generator=g),
            (num_tasks, penalty_size, uniform_actions, act_dim), task_slice,
        )
        return UpdateNoise(
            next_action=normal(num_tasks, batch_size, act_dim),
            actor_action=normal(num_tasks, batch_size, act_dim),
            cql_uniform=2.0 * uniform - 1.0,
            cql_policy=normal(num_tasks, penalty_size, policy_actions, act_dim),
        )


def twin_q_values(critic: StackedMLP, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    """Twin critics (stack (T, 2)) at (T, N, obs), (T, N, act) -> (T, 2, N)."""
    x = torch.cat([obs, act], dim=-1).unsqueeze(1)
    x = x.expand(-1, critic.stack_shape[1], -1, -1)
    return critic(x).squeeze(-1)


_COMPILED: dict[object, object] = {}


def _compiled(loss):
    """``torch.compile`` of a pure loss function of ``rac_losses`` (once per process;
    recompiled only for new shapes or a new None pattern of its arguments)."""
    if loss not in _COMPILED:
        _COMPILED[loss] = torch.compile(loss, dynamic=False)
    return _COMPILED[loss]


class TaskLearners(nn.Module):
    def __init__(
        self,
        config: RACConfig,
        obs_dim: int,
        act_dim: int,
        num_slots: int,
        device: torch.device | str = "cpu",
        generator: Generators = None,
        action_log_scale: float = 0.0,
        seeds: int = 1,
    ):
        """``num_slots`` T tasks are learned at once. Parameters are initialised from
        torch's global RNG; ``generator`` (on ``device``) drives the update noise (default: a
        new one seeded 0). ``action_log_scale``: sum over action dimensions of
        log((high - low) / 2) of the env's action box (``action_scaling.log_action_scale``),
        what ``-log pi`` gains from [-1, 1] to env units (``divergence_units="env"``).
        ``seeds``: the slots are that many seeds' equal blocks (the module docstring)."""
        super().__init__()
        if num_slots < 1 or seeds < 1 or num_slots % seeds:
            raise ValueError("TaskLearners: need num_slots >= 1, split into seeds >= 1 "
                             "equal blocks")
        self.config = config
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.num_slots, self.seeds = num_slots, seeds
        self.device = torch.device(device)
        self.action_log_scale = float(action_log_scale)
        t, h, layers = num_slots, config.hidden, config.hidden_layers

        self.actor = StackedTanhGaussianPolicy((t,), obs_dim, act_dim, h, layers)
        self.critic = StackedMLP((t, 2), obs_dim + act_dim, 1, h, layers)
        block = num_slots // seeds if seeds > 1 else None  # each seed's slots
        set_seed_block(self.actor, block)
        set_seed_block(self.critic, block)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        initial = self.initial_duals(config)
        self.log_alpha_ent = nn.Parameter(initial[_LOG_ALPHA_ENT].repeat(t))
        self.log_beta = nn.Parameter(initial[_LOG_BETA].repeat(t))
        self.lam = nn.Parameter(initial[_LAM].repeat(t))
        self.register_buffer("alpha", initial[_ALPHA].repeat(t))
        self.to(self.device)

        self.target_entropy = config.target_entropy(act_dim)
        self.generator = generator or torch.Generator(self.device).manual_seed(0)
        if config.cuda_graphs and self.device.type != "cuda":
            raise ValueError(
                f"RACConfig.cuda_graphs=True needs a CUDA device, got {self.device}: "
                "pass device='cuda' or set cuda_graphs=False"
            )
        self._graph = None  # UpdateGraph, built at the first update with cuda_graphs
        self._actor_parameters = list(self.actor.parameters())
        self._critic_parameters = list(self.critic.parameters())
        self._target_parameters = list(self.target_critic.parameters())
        c = self.config
        self.critic_optimizer = TaskAdam(self._critic_parameters, c.critic_lr, t)
        self.actor_optimizer = TaskAdam(self._actor_parameters, c.actor_lr, t)
        self.entropy_optimizer = TaskAdam([self.log_alpha_ent], c.entropy_lr, t)
        self.beta_optimizer = TaskAdam([self.log_beta], c.log_beta_lr, t)
        self.lambda_optimizer = TaskAdam([self.lam], c.lambda_lr, t)

    @staticmethod
    def initial_duals(config: RACConfig) -> torch.Tensor:
        """(log SAC temperature, log beta, lam, alpha) of a new task learner, shape (4,)."""
        lam0 = config.lambda_initial if config.use_meta_regularizer else 0.0
        return torch.tensor(
            [config.log_entropy_initial, config.log_beta_initial, lam0, config.alpha]
        )

    # ------------------------------------------------------------------ state
    def duals(self) -> torch.Tensor:
        """The slots' (log temperature, log beta, lam, alpha), shape (4, T), detached."""
        return torch.stack([self.log_alpha_ent, self.log_beta, self.lam, self.alpha]).detach()

    @torch.no_grad()
    def set_duals(self, duals: torch.Tensor) -> None:
        """Set every slot's duals from (4,) or (4, T) (lam stays 0 without the regularizer)."""
        duals = torch.as_tensor(duals, device=self.device, dtype=torch.float32)
        if duals.dim() == 1:
            duals = duals[:, None].expand(-1, self.num_slots)
        for i, target in enumerate((self.log_alpha_ent, self.log_beta, self.lam, self.alpha)):
            target.copy_(duals[i])
        if not self.config.use_meta_regularizer:
            self.lam.zero_()

    def persistent_tensors(self) -> list[torch.Tensor]:
        """Everything a task's learner carries from one visit to the next, each (T, ...):
        actor, critics, target critics, duals, and every optimizer's moments and steps."""
        tensors = [
            *self._actor_parameters, *self._critic_parameters, *self._target_parameters,
            self.log_alpha_ent, self.log_beta, self.lam, self.alpha,
        ]
        for name in self._optimizer_names:
            tensors += getattr(self, name).state_tensors()
        return tensors

    def reset_optimizers(self) -> None:
        """Fresh Adam states, zeroed in place (a CUDA graph holds their addresses)."""
        for name in self._optimizer_names:
            getattr(self, name).reset()

    @torch.no_grad()
    def init_from_meta(
        self,
        meta_policy: StackedTanhGaussianPolicy | None,
        meta_q: StackedMLP | None,
        duals: torch.Tensor | None = None,
    ) -> None:
        """New task learners from the meta-learned ones: pi_n <- pi_c and Q_n <- Q_meta
        (broadcast into every slot; None leaves that network as it is), targets <- Q_n,
        duals <- ``duals`` ((4,) or (4, T); None: the config's initial values), fresh Adam.

        Alg. 2 line 1 (every training task starts from the initial pi_c and Q_meta) and the
        meta-test (§4.3: an unseen task starts from pi_c* and Q_meta)."""
        self.load_meta_networks(meta_policy, meta_q)
        self.set_duals(self.initial_duals(self.config) if duals is None else duals)
        self.reset_optimizers()

    @torch.no_grad()
    def load_meta_networks(
        self,
        meta_policy: StackedTanhGaussianPolicy | None,
        meta_q: StackedMLP | None,
        fresh_adam: bool = False,
    ) -> None:
        """pi_n <- pi_c and Q_n <- Q_meta in every slot (None leaves that network), targets
        <- Q_n; the duals stay. ``fresh_adam``: zero the actor's and critics' Adam states
        (the "reinit" reading of App. A.2.2: a task learner made anew from the meta-learned
        networks at every meta-iteration, keeping its own duals). pi_c and Q_meta have one
        network per seed (their leading axis): seed s's goes into seed s's slots."""
        for mine, meta in ((self.actor, meta_policy), (self.critic, meta_q)):
            if meta is None:
                continue
            for dst, src in zip(mine.parameters(), meta.parameters(), strict=True):
                blocks = dst.view(self.seeds, -1, *dst.shape[1:])
                blocks.copy_(src.unsqueeze(1).expand_as(blocks))
        for dst, src in zip(
            self.target_critic.parameters(), self.critic.parameters(), strict=True
        ):
            dst.copy_(src)
        if fresh_adam:
            self.actor_optimizer.reset()
            self.critic_optimizer.reset()

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Actions in [-1, 1], (T, N, act_dim), for observations (T, N, obs_dim)."""
        if deterministic:
            return self.actor.deterministic(obs)
        return self.actor.sample(obs, generator)[0]

    def entropy_temperature(self) -> torch.Tensor:
        """alpha_ent (T,) (zero without max-entropy), detached."""
        if not self.config.max_entropy:
            return torch.zeros_like(self.log_alpha_ent).detach()
        return self.log_alpha_ent.exp().detach()

    # ------------------------------------------------------------------ update
    def _check_inputs(
        self,
        real: TransitionBatch,
        model: TransitionBatch | None,
        meta_policy: nn.Module | None,
        bc_policy: nn.Module | None,
    ) -> None:
        c = self.config
        if real.observations.shape[0] != self.num_slots:
            raise ValueError(
                f"update: real batch has {real.observations.shape[0]} tasks, "
                f"learners have {self.num_slots} slots"
            )
        if c.use_model and model is None:
            raise ValueError(
                "update: use_model=True needs a model batch (sample the ModelBuffer), "
                "or use RACConfig.for_algo('cql') for the model-free variant"
            )
        regularized = c.use_meta_regularizer
        if regularized and meta_policy is None and (c.alpha < 1.0 or c.adaptive_alpha):
            raise ValueError("update: alpha < 1 needs the meta-policy (pass meta_policy=...)")
        tuned = regularized and c.auto_tune_lambda
        if tuned and bc_policy is None and (c.alpha > 0.0 or c.adaptive_alpha):
            raise ValueError(
                "update: lambda auto-tuning with alpha > 0 needs the behavior-cloning policy "
                "(pass bc_policy=BehaviorCloning.select(task_indices))"
            )

    def update(
        self,
        real: TransitionBatch,
        model: TransitionBatch | None = None,
        meta_policy: nn.Module | None = None,
        bc_policy: nn.Module | None = None,
        noise: UpdateNoise | None = None,
    ) -> dict[str, torch.Tensor]:
        """One RAC step for every slot. ``real`` (T, B_real) from D_n, ``model`` (T, B_model)
        from the model buffer (None without a model), actions in [-1, 1]. ``meta_policy``:
        pi_c (fixed here); ``bc_policy``: pi_hat_beta with stack (T,). Returns detached
        per-task metrics, each of shape (T,).

        With ``config.cuda_graphs`` the step runs as one replayed CUDA graph
        (``merpo_agent.update_graph``); with ``config.compile`` its pure loss math
        (``rac_losses.conservative_critic_terms`` / ``regularized_actor_terms``) is
        ``torch.compile``d. Both give the eager results (tests compare them)."""
        c = self.config
        self._check_inputs(real, model, meta_policy, bc_policy)
        if not c.use_model:
            model = None
        if noise is None:
            noise = self.draw_noise(real, model)
        if c.cuda_graphs:
            if self._graph is None:
                self._graph = UpdateGraph(self, warmup_steps=c.cuda_graph_warmup)
            return self._graph(real, model, meta_policy, bc_policy, noise)
        return self._update(real, model, meta_policy, bc_policy, noise)

    def draw_noise(
        self,
        real: TransitionBatch,
        model: TransitionBatch | None,
        task_slice: TaskSlice | None = None,
    ) -> UpdateNoise:
        """The noise of one ``update`` on these batches, from ``self.generator``; under
        ``task_slice`` the whole batch's noise cut to the slice (torchrun, or a chunk)."""
        c = self.config
        n_real = real.rewards.shape[1]
        n_model = 0 if model is None or not c.use_model else model.rewards.shape[1]
        penalty = n_real if n_model == 0 else n_model
        return UpdateNoise.draw(
            real.rewards.shape[0], n_real + n_model, penalty, self.act_dim,
            c.cql_uniform_actions, c.cql_policy_actions, self.device, self.generator,
            task_slice,
        )

    def _update(
        self,
        real: TransitionBatch,
        model: TransitionBatch | None,
        meta_policy: nn.Module | None,
        bc_policy: nn.Module | None,
        noise: UpdateNoise,
    ) -> dict[str, torch.Tensor]:
        """The update's body: the math and the optimizer steps (no input checks, no RNG).

        Only device work and Python bookkeeping that does not depend on tensor values, so
        that ``UpdateGraph`` can capture it into a CUDA graph."""
        c = self.config
        if model is not None:
            mixed = TransitionBatch(
                *(torch.cat([r, m], dim=1) for r, m in zip(real, model, strict=True))
            )
            penalty_obs = model.observations
        else:  # "No model (CQL)": f = 1 and the penalty's states come from D_n
            mixed, penalty_obs = real, real.observations
        alpha_ent = self.entropy_temperature()

        # ---- 1. conservative policy evaluation, Eq. 1 ---------------------------------
        bellman, gap, q_data = self._critic_terms(
            mixed, penalty_obs, real.rewards.shape[1], noise, alpha_ent
        )
        if c.auto_tune_beta:  # App. A.2.2: beta is optimised before the Q-network
            shared = c.beta_sharing == "shared"
            # one dual per seed, stepped by every task's update: seed by seed (rows)
            per_seed = self.log_beta.detach().view(self.seeds, -1)
            shared_before = per_seed.mean(1, keepdim=True) if shared else None
            beta_loss = L.beta_dual_loss(self.log_beta, gap, c.q_difference_threshold)
            self.beta_optimizer.zero_grad(set_to_none=True)
            beta_loss.backward()
            self.beta_optimizer.step()
            if shared_before is not None:
                with torch.no_grad():
                    step = (self.log_beta.view(self.seeds, -1) - shared_before).sum(
                        1, keepdim=True)
                    self.log_beta.copy_((shared_before + step).expand_as(per_seed).flatten())
        beta = self.log_beta.detach().exp().clamp(max=c.beta_max)
        critic_loss = L.critic_loss(bellman, gap, beta)
        self.critic_optimizer.zero_grad(set_to_none=True)
        critic_loss.sum().backward()
        self.critic_optimizer.step()

        # ---- 2. regularized policy improvement, Eq. 9 ----------------------------------
        actor_loss, log_prob, q_policy, d_beta, d_meta, d_beta_prime = self._actor_terms(
            real, mixed, noise.actor_action, alpha_ent, meta_policy, bc_policy
        )
        self.actor_optimizer.zero_grad(set_to_none=True)
        # Only the actor's parameters get gradients: the critics are constants in Eq. 9.
        actor_loss.sum().backward(inputs=self._actor_parameters)
        self.actor_optimizer.step()

        # ---- 3. dual variables: SAC temperature and lambda -------------------------------
        if c.max_entropy:
            entropy_loss = L.entropy_temperature_loss(
                self.log_alpha_ent, log_prob, self.target_entropy
            )
            self.entropy_optimizer.zero_grad(set_to_none=True)
            entropy_loss.backward()
            self.entropy_optimizer.step()
        d_beta_dual = self.dual_behavior_divergence(d_beta, d_beta_prime)
        if c.use_meta_regularizer and c.auto_tune_lambda:
            constraint = L.lambda_constraint(d_beta_dual, d_meta, self.alpha, c.target_divergence)
            lambda_loss = L.lambda_dual_loss(self.lam, constraint)
            self.lambda_optimizer.zero_grad(set_to_none=True)
            lambda_loss.backward()
            self.lambda_optimizer.step()
            with torch.no_grad():  # projection: 0 <= lam (<= lambda_max when clipped)
                self.lam.clamp_(min=0.0, max=c.lambda_max if c.lambda_max > 0 else None)

        # ---- 4. targets ------------------------------------------------------------------
        self.update_targets()

        return {
            "critic_loss": critic_loss.detach(),
            "q_gap": gap.detach().mean(1),
            "q_data": q_data,
            "beta": beta,
            "actor_loss": actor_loss.detach(),
            "q_policy": q_policy,
            "entropy": -log_prob.mean(-1),
            "entropy_temperature": alpha_ent,
            "d_beta": d_beta.detach(),
            "d_beta_prime": d_beta_prime,
            "d_beta_dual": d_beta_dual,
            "d_meta": d_meta,
            "lam": self.lam.detach().clone(),
            "alpha": self.alpha.clone(),
        }

    def _critic_terms(
        self,
        mixed: TransitionBatch,
        penalty_obs: torch.Tensor,
        n_real: int,
        noise: UpdateNoise,
        alpha_ent: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Eq. 1's terms per task and twin: Bellman error (T, 2) and conservative gap (T, 2)
        (both with gradients to the critics), and the mean Q at the data (T,), detached.

        The critics run ONCE on the mixed batch and the CQL(H) samples together (one
        forward and one backward per layer instead of two)."""
        c = self.config
        t = mixed.rewards.shape[0]
        with torch.no_grad():
            next_mean, next_log_std = self.actor(mixed.next_observations)
            next_action, next_log_prob = tanh_gaussian_rsample(
                next_mean, next_log_std, noise.next_action, self.seeds
            )
            next_q = twin_q_values(self.target_critic, mixed.next_observations, next_action)
            target = L.soft_bellman_target(
                mixed.rewards, mixed.terminations, next_q, next_log_prob, alpha_ent, c.discount
            )
            # CQL(H) proposals at the penalty states: K_u uniform + K_p policy actions.
            pen_mean, pen_log_std = self.actor(penalty_obs)
            pol_action, pol_log_prob = tanh_gaussian_rsample(
                pen_mean[:, :, None], pen_log_std[:, :, None], noise.cql_policy, self.seeds
            )
            ood_action = torch.cat([noise.cql_uniform, pol_action], dim=2)  # (T, P, K, act)
            uniform_log_density = torch.full_like(
                noise.cql_uniform[..., 0], -self.act_dim * math.log(2.0)
            )
            log_density = torch.cat([uniform_log_density, pol_log_prob], dim=2)[:, None]
        p, k = ood_action.shape[1], ood_action.shape[2]
        ood_obs = penalty_obs[:, :, None].expand(-1, -1, k, -1).reshape(t, p * k, -1)
        obs = torch.cat([mixed.observations, ood_obs], dim=1)
        act = torch.cat([mixed.actions, ood_action.reshape(t, p * k, -1)], dim=1)
        q_all = twin_q_values(self.critic, obs, act)  # (T, 2, B + P K)
        return self._math(L.conservative_critic_terms)(q_all, target, log_density, n_real)

    def _actor_terms(
        self,
        real: TransitionBatch,
        mixed: TransitionBatch,
        actor_noise: torch.Tensor,
        alpha_ent: torch.Tensor,
        meta_policy: nn.Module | None,
        bc_policy: nn.Module | None,
    ) -> tuple[torch.Tensor, ...]:
        """Eq. 9 per task (T,) with gradients to the actor, and (detached) the policy's
        log-probabilities (T, B), mean min-Q (T,), D_beta, D_meta and D_beta' (T,)."""
        mean, log_std = self.actor(mixed.observations)
        action, log_prob = tanh_gaussian_rsample(mean, log_std, actor_noise, self.seeds)
        q_policy = twin_q_values(self.critic, mixed.observations, action)
        meta_mean = meta_log_std = bc_log_prob = None
        with torch.no_grad():
            if meta_policy is not None:
                meta_mean, meta_log_std = meta_policy(mixed.observations)
            if bc_policy is not None:
                bc_mean, bc_log_std = bc_policy(real.observations)
                bc_log_prob = tanh_gaussian_log_prob(bc_mean, bc_log_std, real.actions,
                                                     self.seeds)
        actor_loss, q_min, d_beta, d_meta, d_beta_prime = self._math(L.regularized_actor_terms)(
            mean, log_std, log_prob, q_policy, real.actions, meta_mean, meta_log_std,
            bc_log_prob, alpha_ent, self.lam, self.alpha, self.seeds,
        )
        return actor_loss, log_prob.detach(), q_min, d_beta, d_meta, d_beta_prime

    def dual_behavior_divergence(
        self, d_beta: torch.Tensor, d_beta_prime: torch.Tensor
    ) -> torch.Tensor:
        """The behavior divergence that the lambda dual (App. A.2.2) and MerPO-Adp (Eq. 11)
        see, per ``RACConfig.behavior_divergence`` (T,), detached: D_beta' to the behavior
        clone ("kl_to_bc"), or Eq. 9's surrogate -E_D log pi_n ("nll"), in [-1, 1] units or
        in the env's (``divergence_units``)."""
        c = self.config
        if c.behavior_divergence == "kl_to_bc":
            return d_beta_prime
        offset = self.action_log_scale if c.divergence_units == "env" else 0.0
        return d_beta.detach() + offset

    def _math(self, loss):
        """``loss`` (a pure function of ``rac_losses``), ``torch.compile``d with
        ``config.compile`` (the networks stay eager: their matmuls are library calls)."""
        return _compiled(loss) if self.config.compile else loss

    @torch.no_grad()
    def update_targets(self) -> None:
        """Polyak: ``target <- target + tau (online - target)`` with rate ``polyak_tau``."""
        torch._foreach_lerp_(
            self._target_parameters, self._critic_parameters, self.config.polyak_tau
        )

    @torch.no_grad()
    def adapt_alpha(self, d_beta_dual: torch.Tensor, d_meta: torch.Tensor) -> torch.Tensor:
        """MerPO-Adp (Eq. 11), once per meta-iteration; a no-op when alpha is fixed.

        Pass the last update's ``metrics["d_beta_dual"]`` and ``metrics["d_meta"]``.
        Returns the slots' alphas (T,).
        """
        c = self.config
        if c.adaptive_alpha:
            self.alpha.copy_(
                adaptive_alpha_step(
                    self.alpha, d_beta_dual, d_meta, c.alpha_adp_lr, c.alpha_min, c.alpha_max
                )
            )
        return self.alpha.clone()

    # ------------------------------------------------------------------ checkpoints
    def training_state(self) -> dict:
        """Everything needed to resume bit-exactly: parameters, duals, optimizers, RNG."""
        return {
            "module": self.state_dict(),
            "optimizers": {
                name: getattr(self, name).state_dict() for name in self._optimizer_names
            },
            "generator": self.generator.get_state(),
        }

    def load_training_state(self, state: dict) -> None:
        """In place (tensor addresses kept, so a captured CUDA graph stays valid); a state
        without ``generator`` (a learner table's) leaves the noise generator as it is."""
        self.load_state_dict(state["module"])
        for name in self._optimizer_names:
            getattr(self, name).load_state_dict(state["optimizers"][name])
        if "generator" in state:
            self.generator.set_state(state["generator"])

    _optimizer_names = (
        "critic_optimizer",
        "actor_optimizer",
        "entropy_optimizer",
        "beta_optimizer",
        "lambda_optimizer",
    )


__all__ = ["TaskLearners", "UpdateNoise", "twin_q_values"]
