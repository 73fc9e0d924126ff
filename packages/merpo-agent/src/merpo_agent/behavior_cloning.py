"""pi_hat_beta: a behavior-cloning tanh-Gaussian per task, fit once (for the lambda dual).

RAC's lambda dual (App. A.2.2) needs a divergence between pi_n and the unknown behavior
policy that is zero when they agree. The reverse-KL surrogate of Eq. 9, -E_D[log pi_n],
is not; so we fit pi_hat_beta by maximum likelihood on D_n and use
D_beta' = E_D[log pi_hat_beta(a|s) - log pi_n(a|s)] (``rac_losses.behavior_divergence_estimate``).

All tasks are fit at once: one ``StackedTanhGaussianPolicy`` with stack (N,), one Adam over
the stacked parameters, the loss SUMMED over tasks (each task's fit is exactly its own).
Actions are in [-1, 1] (``action_scaling.to_unit_actions``); dataset actions at the bounds
get a finite log-likelihood through the atanh clipping of ``tanh_gaussian_log_prob``.
Parameters are initialised from torch's global RNG: seed it for reproducible fits.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from merpo_data.networks import StackedTanhGaussianPolicy, tanh_gaussian_log_prob
from torch import nn

from merpo_agent.transitions import TransitionBatch


class BehaviorCloning(nn.Module):
    def __init__(
        self,
        num_tasks: int,
        obs_dim: int,
        act_dim: int,
        hidden: int = 256,
        hidden_layers: int = 3,
        device: torch.device | str = "cpu",
        seeds: int = 1,
    ):
        """``seeds``: the ``num_tasks`` tasks are that many seeds' equal blocks (a baseline
        trained with seeds as a batch axis, ``merpo_agent.seeds``)."""
        super().__init__()
        self.num_tasks, self.obs_dim, self.act_dim = num_tasks, obs_dim, act_dim
        self.seeds = seeds
        self.hidden, self.hidden_layers = hidden, hidden_layers
        self.policy = StackedTanhGaussianPolicy(
            (num_tasks,), obs_dim, act_dim, hidden, hidden_layers
        ).to(device)

    def log_prob(self, observations: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """log pi_hat_beta(a|s) of unit actions: (T, N, obs), (T, N, act) -> (T, N)."""
        mean, log_std = self.policy(observations)
        return tanh_gaussian_log_prob(mean, log_std, actions)

    def negative_log_likelihood(self, batch: TransitionBatch) -> torch.Tensor:
        """Per-task mean NLL of the batch's (unit) actions, (T,)."""
        return -self.log_prob(batch.observations, batch.actions).mean(-1)

    def fit(
        self,
        sample_batch: Callable[[int], TransitionBatch],
        steps: int,
        batch_size: int = 256,
        lr: float = 1e-3,
    ) -> torch.Tensor:
        """Maximum likelihood on ``sample_batch(batch_size)`` (a (N, B) batch, unit actions).

        Returns the per-task NLL of the last step's batch (detached), shape (N,).
        """
        optimizer = torch.optim.Adam(self.policy.parameters(), lr=lr)
        nll = torch.full((self.num_tasks,), float("nan"))
        for _ in range(steps):
            nll = self.negative_log_likelihood(sample_batch(batch_size))
            optimizer.zero_grad(set_to_none=True)
            nll.sum().backward()  # sum over tasks: each task gets its own gradient
            optimizer.step()
        return nll.detach()

    @torch.no_grad()
    def select(self, task_indices: torch.Tensor) -> StackedTanhGaussianPolicy:
        """A frozen copy with stack (T',) holding the fits of ``task_indices`` (positions
        in 0..N-1), to pass to ``TaskLearners.update`` for a task batch."""
        device = next(self.policy.parameters()).device
        task_indices = torch.as_tensor(task_indices, device=device)
        selected = StackedTanhGaussianPolicy(
            (len(task_indices),), self.obs_dim, self.act_dim, self.hidden, self.hidden_layers
        ).to(device)
        for dst, src in zip(selected.parameters(), self.policy.parameters(), strict=True):
            dst.copy_(src.index_select(0, task_indices))
        return selected.requires_grad_(False)


__all__ = ["BehaviorCloning"]
