"""Probabilistic dynamics ensembles, one per task, as stacked weights (Section 4.1, App. A.2.1).

A task model T_theta(s', r | s, a) is an ensemble of E probabilistic MLPs (MBPO/MOPO style,
Janner et al. 2019; Yu et al. 2020): each member maps normalized (s, a) to a diagonal Gaussian
over (s' - s, r). Parameters carry a leading task axis T and the MLP weights a member axis E
(``StackedMLP`` with stack (T, E)), so T tasks x E members train and predict as one set of
batched matmuls; nothing here loops over tasks or members.

Pieces, top to bottom:

- ``dynamics_config.DynamicsConfig``: every hyperparameter of model learning (Table 2
  defaults, and our choices for what the paper leaves open, documented on the fields;
  torch-free).
- :class:`DynamicsEnsemble`: ``predict``, ``nll_loss`` (Gaussian NLL + log-variance bound
  regularizer), input normalizer, held-out MSE, elites, ``step`` (one model transition).
- ``holdout.HoldoutSplit``: the held-out 10% of each task's data, training batches drawn
  from the other 90% on the device.
- ``model_training``: ``proximal_penalty``, ``train_step``, ``ChunkedTrainer``,
  ``train_models``: the optimisation shared by the meta-model (Eq. 3, Alg. 2 lines
  3-6), task adaptation (Eq. 4, line 8) and from-scratch training
  (``merpo_agent.meta_model`` builds on these). The tasks train in chunks of C tasks, each
  chunk one set of batched ops (C = T on a GPU; on a CPU, C from the model's weights per
  task, :data:`CPU_CHUNK_DYNAMICS_WEIGHTS`); every task's objective is its own, so the
  result does not depend on C.

Model rollouts of a policy live in ``merpo_agent.rollout``.
"""

from __future__ import annotations

import math

import torch
from merpo_data.networks import StackedLinear, StackedMLP, by_seed, seed_baddbmm
from torch import nn
from torch.nn import functional as F

from merpo_agent.dynamics_config import CPU_CHUNK_DYNAMICS_WEIGHTS, DynamicsConfig
from merpo_agent.holdout import HoldoutSplit
from merpo_agent.task_slice import Generators, TaskSlice, device_chunk_size, draw_slots
from merpo_agent.transitions import TransitionBatch


class DynamicsEnsemble(nn.Module):
    """T task models, each an ensemble of E Gaussian MLPs over (s' - s, r) (App. A.2.1).

    Every parameter and buffer has the task axis first, so that a meta-model (T = 1) broadcasts
    onto T task models parameter by parameter (Eq. 3-4):

    - ``net``: ``StackedMLP`` with stack (T, E), ``hidden_layers`` SiLU layers of ``hidden``,
      output ``2 * (obs_dim + 1)`` (mean and raw log-variance).
    - ``max_logvar`` / ``min_logvar`` (T, 1, 1, obs_dim + 1): learned soft bounds on the
      log-variance, shared by a task's members (MBPO): ``logvar = max - softplus(max - raw)``,
      then ``min + softplus(logvar - min)``; ``nll_loss`` adds
      ``logvar_bound_weight * (sum max - sum min)`` so the bounds tighten around the data.
    - buffers ``input_mean`` / ``input_std`` (T, obs_dim + act_dim): the input normalizer;
      ``elite_idx`` (T, elites): the members with the lowest held-out MSE per task.

    ``seeds``: the T tasks are the slots of that many seeds, seed-major (a seed batch,
    ``merpo_agent.seed_batch``), for the element-wise ops that run seed by seed
    (``merpo_data.networks.by_seed``).
    """

    def __init__(
        self,
        num_tasks: int,
        obs_dim: int,
        act_dim: int,
        ensemble: int = 7,
        elites: int = 5,
        hidden: int = 256,
        hidden_layers: int = 4,
        *,
        logvar_bound_weight: float = 0.01,
        device: torch.device | str | None = None,
        seed: int | None = None,
        seeds: int = 1,
    ):
        super().__init__()
        if not 1 <= elites <= ensemble:
            raise ValueError(f"elites={elites} must be in 1..ensemble={ensemble}")
        self.num_tasks = int(num_tasks)
        self.obs_dim = int(obs_dim)
        self.act_dim = int(act_dim)
        self.ensemble = int(ensemble)
        self.num_elites = int(elites)
        self.hidden = int(hidden)
        self.hidden_layers = int(hidden_layers)
        self.logvar_bound_weight = float(logvar_bound_weight)
        self.in_dim = self.obs_dim + self.act_dim
        self.out_dim = self.obs_dim + 1  # (s' - s, r)
        self.seeds = int(seeds)

        self.net = StackedMLP(
            (self.num_tasks, self.ensemble),
            self.in_dim,
            2 * self.out_dim,
            hidden,
            hidden_layers,
            activation=nn.SiLU,
        )
        if seed is not None:
            # Same initial weights on every device: draw them on the CPU from one seeded stream.
            gen = torch.Generator().manual_seed(int(seed))
            for layer in self.net.net:
                if hasattr(layer, "weight"):
                    bound = 1.0 / math.sqrt(layer.in_features)
                    with torch.no_grad():
                        layer.weight.uniform_(-bound, bound, generator=gen)
                        layer.bias.uniform_(-bound, bound, generator=gen)
        bound_shape = (self.num_tasks, 1, 1, self.out_dim)
        # MBPO's initial bounds: max 0.5, min -10.
        self.max_logvar = nn.Parameter(torch.full(bound_shape, 0.5))
        self.min_logvar = nn.Parameter(torch.full(bound_shape, -10.0))
        self.register_buffer("input_mean", torch.zeros(self.num_tasks, self.in_dim))
        self.register_buffer("input_std", torch.ones(self.num_tasks, self.in_dim))
        self.register_buffer(
            "elite_idx",
            torch.arange(self.num_elites).expand(self.num_tasks, -1).clone(),
        )
        if device is not None:
            self.to(device)

    # ----------------------------------------------------------------------------- building
    @classmethod
    def from_config(
        cls,
        num_tasks: int,
        obs_dim: int,
        act_dim: int,
        cfg: DynamicsConfig,
        *,
        device: torch.device | str | None = None,
        seed: int | None = None,
    ) -> DynamicsEnsemble:
        return cls(
            num_tasks,
            obs_dim,
            act_dim,
            **cfg.model_kwargs(),
            logvar_bound_weight=cfg.logvar_bound_weight,
            device=device,
            seed=seed,
        )

    def empty_like(self, num_tasks: int, seeds: int = 1) -> DynamicsEnsemble:
        """A model of the same architecture and device with ``num_tasks`` tasks (the slots
        of ``seeds`` seeds)."""
        return DynamicsEnsemble(
            num_tasks,
            self.obs_dim,
            self.act_dim,
            self.ensemble,
            self.num_elites,
            self.hidden,
            self.hidden_layers,
            logvar_bound_weight=self.logvar_bound_weight,
            device=self.device,
            seeds=seeds,
        )

    @property
    def device(self) -> torch.device:
        return self.max_logvar.device

    @property
    def weights_per_task(self) -> int:
        """Parameters of one task's ensemble (all members, the log-variance bounds)."""
        return sum(p[0].numel() for p in self.parameters())

    def chunk_size(self, task_chunk: int = 0) -> int:
        """Tasks per batched training op: ``task_chunk`` if > 0 (at most T), else the
        device's choice (``task_slice.device_chunk_size`` with
        :data:`CPU_CHUNK_DYNAMICS_WEIGHTS`)."""
        if task_chunk > 0:
            return min(task_chunk, self.num_tasks)
        return device_chunk_size(
            self.device, self.num_tasks, self.weights_per_task, CPU_CHUNK_DYNAMICS_WEIGHTS
        )

    def task_rows(self, rows: TaskSlice) -> DynamicsEnsemble:
        """A model of the tasks ``[rows.start, rows.stop)`` whose parameters and buffers are
        views of this model's rows: training it trains those rows in place.

        Built on the meta device, so no random number is drawn for weights it never uses.
        """
        if rows.total != self.num_tasks:
            raise ValueError(f"task_rows: a slice of {rows.total} tasks for a model of "
                             f"{self.num_tasks}")
        with torch.device("meta"):
            view = DynamicsEnsemble(
                rows.size, self.obs_dim, self.act_dim, self.ensemble, self.num_elites,
                self.hidden, self.hidden_layers, logvar_bound_weight=self.logvar_bound_weight,
            )
        for name, p in self.named_parameters():
            owner, _, leaf = name.rpartition(".")
            setattr(view.get_submodule(owner), leaf,
                    nn.Parameter(rows.take(p.detach()), requires_grad=p.requires_grad))
        for name, b in self.named_buffers():
            owner, _, leaf = name.rpartition(".")
            setattr(view.get_submodule(owner), leaf, rows.take(b))
        return view

    @torch.no_grad()
    def copy_from_(
        self, source: DynamicsEnsemble, task_indices: torch.Tensor | None = None
    ) -> None:
        """Copy parameters and buffers from ``source``, broadcasting over the task axis.

        ``source`` has 1 task (a meta-model: theta_n = phi_m for every n, Eq. 3-4) or this
        model's number of tasks; with ``task_indices`` (LongTensor (T,)) the source's tasks at
        those positions are copied instead.
        """
        mine = dict(self.named_parameters()) | dict(self.named_buffers())
        theirs = dict(source.named_parameters()) | dict(source.named_buffers())
        for name, tensor in mine.items():
            src = theirs[name]
            if task_indices is not None:
                src = src.index_select(0, task_indices.to(src.device))
            tensor.copy_(src.expand_as(tensor))

    # ----------------------------------------------------------------------------- normalizer
    @torch.no_grad()
    def set_normalizer(self, batch: TransitionBatch) -> None:
        """Per-task input mean/std from a batch with observations (T, N, obs_dim)."""
        x = torch.cat([batch.observations, batch.actions], dim=-1)
        if x.dim() != 3 or x.shape[0] != self.num_tasks:
            raise ValueError(
                f"set_normalizer needs observations/actions of shape (T={self.num_tasks}, N, dim),"
                f" got {tuple(x.shape)}"
            )
        self.set_normalizer_stats(x.mean(dim=1), x.std(dim=1, unbiased=False))

    @torch.no_grad()
    def set_normalizer_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Set the normalizer from (T or 1, obs_dim + act_dim) statistics (broadcast over T)."""
        # A constant input (std ~ 0) is left unscaled instead of divided by ~0 (as MBPO).
        std = torch.where(std < 1e-6, torch.ones_like(std), std)
        self.input_mean.copy_(mean.expand_as(self.input_mean))
        self.input_std.copy_(std.expand_as(self.input_std))

    # ----------------------------------------------------------------------------- forward
    def predict(self, obs: torch.Tensor, act: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussian over (s' - s, r) of every member: ``(mean, logvar)`` each (T, E, N, obs_dim+1).

        ``obs`` (T, N, obs_dim) and ``act`` (T, N, act_dim) are shared by the members; inputs of
        shape (T, E, N, dim) give each member its own samples (used in training).
        """
        x = torch.cat([obs, act], dim=-1)
        if x.dim() == 3:
            x = (x - self.input_mean[:, None]) / self.input_std[:, None]
            x = x.unsqueeze(1).expand(-1, self.ensemble, -1, -1)
        elif x.dim() == 4:
            x = (x - self.input_mean[:, None, None]) / self.input_std[:, None, None]
        else:
            raise ValueError(
                f"predict needs obs (T, N, {self.obs_dim}) or (T, E, N, {self.obs_dim}), "
                f"got {tuple(obs.shape)}"
            )
        mean, raw_logvar = self.net(x).chunk(2, dim=-1)
        return mean, self._bounded_logvar(raw_logvar)

    def _bounded_logvar(self, raw_logvar: torch.Tensor) -> torch.Tensor:
        """Soft log-variance bounds (MBPO/MOPO): a smooth clamp of (T, K, N, D) raw
        log-variances into (min_logvar, max_logvar)."""
        def softplus(x: torch.Tensor) -> torch.Tensor:
            return by_seed(F.softplus, x, self.seeds)

        logvar = self.max_logvar - softplus(self.max_logvar - raw_logvar)
        return self.min_logvar + softplus(logvar - self.min_logvar)

    def predict_elites(
        self, obs: torch.Tensor, act: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``predict`` of the elites only, in ``elite_idx`` order: each (T, elites, N, D).

        The elites' weights are gathered per task (a copy of elites / ensemble of the
        weights, small next to a rollout batch) and run as one batched MLP.
        """
        if self.num_elites == self.ensemble:
            mean, logvar = self.predict(obs, act)
            index = self.elite_idx[:, :, None, None].expand(-1, -1, *mean.shape[2:])
            return mean.gather(1, index), logvar.gather(1, index)
        x = torch.cat([obs, act], dim=-1)
        if x.dim() != 3:
            raise ValueError(
                f"predict_elites needs obs (T, N, {self.obs_dim}), got {tuple(obs.shape)}"
            )
        x = (x - self.input_mean[:, None]) / self.input_std[:, None]
        x = x.unsqueeze(1).expand(-1, self.num_elites, -1, -1)
        return self._members_forward(x, self.elite_idx)

    def _members_forward(
        self, x: torch.Tensor, members: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Gaussians of the members ``members`` (T, K) on their own normalized inputs.

        ``x`` (T, K, M, in): slot k of task t runs member ``members[t, k]``. The K members'
        weights are gathered per task (a copy of K / ensemble of the weights, small next to a
        rollout batch) and run as one batched MLP. Returns ``(mean, logvar)`` (T, K, M, D).
        """
        t, k, m = x.shape[:3]
        x = x.reshape(t * k, m, self.in_dim)
        idx = members[:, :, None, None]
        for layer in self.net.net:
            if isinstance(layer, StackedLinear):
                w, b = layer.weight, layer.bias  # (T, E, in, out), (T, E, 1, out)
                w = w.gather(1, idx.expand(-1, -1, *w.shape[2:])).reshape(t * k, *w.shape[2:])
                b = b.gather(1, idx.expand(-1, -1, *b.shape[2:])).reshape(t * k, *b.shape[2:])
                x = seed_baddbmm(b, x, w, self.seeds)
            else:
                x = by_seed(layer, x, self.seeds)
        mean, raw_logvar = x.reshape(t, k, m, -1).chunk(2, dim=-1)
        return mean, self._bounded_logvar(raw_logvar)

    def nll_loss(self, batch: TransitionBatch) -> torch.Tensor:
        """Per-task Gaussian NLL of (s' - s, r) plus the log-variance bound regularizer, (T,).

        For each member: ``0.5 * ((y - mu)^2 / var + log var + log 2 pi)`` averaged over samples
        and output dims; summed over members (each member's gradient is that of its own NLL, as
        in independently trained members); plus
        ``logvar_bound_weight * (sum(max_logvar) - sum(min_logvar))`` per task. Batches have
        fields (T, B, ...) (all members see the same samples) or (T, E, B, ...) (one batch per
        member, what :meth:`HoldoutSplit.sample_train` gives with ``members=E``).
        """
        mean, logvar = self.predict(batch.observations, batch.actions)
        target = self._target(batch)
        if target.dim() == 3:
            target = target.unsqueeze(1)
        nll = 0.5 * ((mean - target).square() * torch.exp(-logvar) + logvar + math.log(2 * math.pi))
        per_task = nll.mean(dim=(2, 3)).sum(dim=1)
        bounds = (self.max_logvar - self.min_logvar).flatten(1).sum(dim=1)
        return per_task + self.logvar_bound_weight * bounds

    @staticmethod
    def _target(batch: TransitionBatch) -> torch.Tensor:
        return torch.cat(
            [batch.next_observations - batch.observations, batch.rewards.unsqueeze(-1)], dim=-1
        )

    # ----------------------------------------------------------------------------- validation
    @torch.no_grad()
    def member_mse(
        self, val_batch: TransitionBatch, mask: torch.Tensor | None = None, chunk: int = 4096
    ) -> torch.Tensor:
        """Held-out MSE of each member's mean prediction of (s' - s, r), shape (T, E).

        ``mask`` (T, V) marks the valid samples of a padded validation batch (tasks with
        fewer held-out transitions); the batch is evaluated in chunks of ``chunk`` samples.
        """
        obs, act, target = val_batch.observations, val_batch.actions, self._target(val_batch)
        num = obs.shape[1]
        if mask is None:
            mask = torch.ones(obs.shape[:2], device=obs.device, dtype=obs.dtype)
        mask = mask.to(obs.dtype)
        total = torch.zeros(obs.shape[0], self.ensemble, device=obs.device, dtype=obs.dtype)
        for start in range(0, num, chunk):  # loop over data chunks (memory), not tasks/members
            sl = slice(start, start + chunk)
            mean, _ = self.predict(obs[:, sl], act[:, sl])
            err = (mean - target[:, sl].unsqueeze(1)).square().mean(dim=-1)  # (T, E, n)
            total += (err * mask[:, None, sl]).sum(dim=-1)
        return total / mask.sum(dim=1, keepdim=True).clamp(min=1.0)

    @torch.no_grad()
    def select_elites(
        self, val_batch: TransitionBatch, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Keep the ``elites`` members with the lowest held-out MSE per task; returns (T, E) MSE."""
        mse = self.member_mse(val_batch, mask)
        self.elite_idx.copy_(mse.topk(self.num_elites, dim=1, largest=False).indices)
        return mse

    @torch.no_grad()
    def heldout_mse(
        self, val_batch: TransitionBatch, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Mean held-out MSE of the current elites, per task (T,)."""
        return self.member_mse(val_batch, mask).gather(1, self.elite_idx).mean(dim=1)

    # ----------------------------------------------------------------------------- sampling
    @torch.no_grad()
    def step(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        generator: Generators = None,
        deterministic: bool = False,
        task_slice: TaskSlice | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One model transition: ``(next_obs (T, N, obs_dim), reward (T, N))``.

        Each sample goes through one of its task's elites, uniformly at random (App. A.2.1:
        a random elite per sample), and draws (s' - s, r) from that member's Gaussian (its
        mean if ``deterministic``; the elite is still drawn). Only that elite evaluates the
        sample: the samples are dealt to the K elites in equal shares (stratified), so the
        work is 1 / ensemble of evaluating every member, with fixed shapes and no loop:

        1. a random order of the N samples per task, laid out row-major on a
           (ceil(N / K), K) grid: column k holds positions k, k + K, ..., so the shares of
           the columns differ by at most one (the last row is padded with repeated samples,
           evaluated and dropped);
        2. column k runs elite ``elite_idx[(k + shift) % K]`` with a random cyclic ``shift``
           per task: a sample's column is position mod K, and the shift makes its elite
           exactly uniform over the K elites even when K does not divide N;
        3. the outputs are scattered back to the samples' places.

        Per sample this is the paper's distribution (uniform elite, then its Gaussian); the
        elites' loads are balanced instead of multinomial.

        ``task_slice`` (torchrun, ``merpo_agent.task_slice``): this model holds the slots
        ``[start, stop)`` of a larger task batch; the random draws are made for the whole
        batch and cut, so the result equals those rows of a single process's step;
        :class:`SeedGenerators` (a seed batch) draw each seed's block from its own generator
        (``task_slice.draw_slots``).
        """
        x = torch.cat([obs, act], dim=-1)
        if x.dim() != 3 or x.shape[0] != self.num_tasks:
            raise ValueError(
                f"step needs obs (T={self.num_tasks}, N, {self.obs_dim}) and act "
                f"(T, N, {self.act_dim}), got {tuple(obs.shape)} and {tuple(act.shape)}"
            )
        t, n, k = x.shape[0], x.shape[1], self.num_elites
        per = -(-n // k)  # rows of the deal grid
        x = (x - self.input_mean[:, None]) / self.input_std[:, None]
        order = draw_slots(
            generator, lambda s, g: torch.rand(s, device=x.device, generator=g), (t, n),
            task_slice,
        ).argsort(dim=1)
        # Slot j of the (per, K) grid holds sample order[j]; the padding slots j >= N repeat
        # samples (j % N) so that every elite runs the same fixed-size batch.
        slot_sample = order.repeat(1, -(-per * k // n))[:, : per * k] if per * k > n else order
        x = x.gather(1, slot_sample[..., None].expand(-1, -1, self.in_dim))
        x = x.view(t, per, k, self.in_dim).transpose(1, 2)  # (T, K, per, in): column-major
        shift = draw_slots(
            generator, lambda s, g: torch.randint(k, s, device=x.device, generator=g), (t, 1),
            task_slice,
        )
        columns = (torch.arange(k, device=x.device) + shift) % k
        mean, logvar = self._members_forward(x, self.elite_idx.gather(1, columns))
        if not deterministic:
            noise = draw_slots(
                generator,
                lambda s, g: torch.randn(s, device=mean.device, dtype=mean.dtype, generator=g),
                mean.shape, task_slice,
            )
            mean = mean + torch.exp(0.5 * logvar) * noise
        d = mean.shape[-1]
        slots = mean.transpose(1, 2).reshape(t, per * k, d)[:, :n]  # slot j = row * K + column
        out = torch.empty_like(slots).scatter_(1, order[..., None].expand(-1, -1, d), slots)
        return obs + out[..., :-1], out[..., -1]


# DynamicsConfig and HoldoutSplit are re-exported: their former home
__all__ = ["CPU_CHUNK_DYNAMICS_WEIGHTS", "DynamicsConfig", "DynamicsEnsemble", "HoldoutSplit"]
