"""The held-out split of each task's data for model learning (App. A.2.1; MBPO's 10%).

Training batches are drawn from the other 90% on the device; the held-out rows pick the
elites and report the held-out MSE (``dynamics.DynamicsEnsemble``).
"""

from __future__ import annotations

from typing import Any

import torch

from merpo_agent.transitions import TransitionBatch


class HoldoutSplit:
    """Each task's data split into training and a held-out ``fraction`` (10%, as MBPO and
    MOPO hold out; the paper does not say).

    Works on a task sampler's flat tensors (``observations`` etc. with ``offsets``/``sizes``,
    see ``merpo_data.TaskSampler``): one random permutation per task (one sort on the device,
    no loop over tasks); the first ``min(max_holdout, max(1, floor(fraction * size)))`` rows of
    a task's permutation are held out, the rest are its training rows.
    """

    def __init__(
        self,
        sampler: Any,
        fraction: float = 0.1,
        max_holdout: int = 5000,
        generator: torch.Generator | None = None,
    ):
        self.sampler = sampler
        device = sampler.observations.device
        self.device = device
        sizes = sampler.sizes.to(device)
        offsets = sampler.offsets.to(device)
        if (sizes < 2).any():
            raise ValueError(
                "every task needs at least 2 transitions to hold out a validation set; "
                f"sizes are {sizes.tolist()}: build larger datasets (merpo-data generate)"
            )
        num_tasks = sizes.shape[0]
        total = int(sampler.observations.shape[0])
        task_of_row = torch.repeat_interleave(torch.arange(num_tasks, device=device), sizes)
        # Rows must be grouped by task at the offsets (the sampler's flat layout).
        if total != int(sizes.sum()) or not torch.equal(offsets, torch.cumsum(sizes, 0) - sizes):
            raise ValueError("sampler offsets/sizes do not describe contiguous task segments")
        # Sorting (task id + uniform noise) permutes rows within each task segment at once.
        noise = torch.rand(total, device=device, generator=generator, dtype=torch.float64)
        self.perm = torch.sort(task_of_row.to(torch.float64) + noise).indices
        self.sizes, self.offsets = sizes, offsets
        self.num_val = (sizes.to(torch.float64) * fraction).floor().long().clamp(1, max_holdout)
        self.num_val = torch.minimum(self.num_val, sizes - 1)
        self.num_train = sizes - self.num_val
        self.max_val = int(self.num_val.max())
        position = torch.arange(total, device=device) - offsets[task_of_row]
        self.is_train_row = torch.empty(total, dtype=torch.bool, device=device)
        self.is_train_row[self.perm] = position >= self.num_val[task_of_row]
        self.task_of_row = task_of_row

    @property
    def num_tasks(self) -> int:
        return int(self.sizes.shape[0])

    def _all(self, task_indices: torch.Tensor | None) -> torch.Tensor:
        if task_indices is None:
            return torch.arange(self.num_tasks, device=self.device)
        return task_indices.to(self.device)

    def _gather(self, rows: torch.Tensor) -> TransitionBatch:
        s = self.sampler
        return TransitionBatch(
            s.observations[rows],
            s.actions[rows],
            s.rewards[rows],
            s.next_observations[rows],
            s.terminations[rows],
        )

    def sample_train(
        self,
        batch_size: int,
        task_indices: torch.Tensor | None = None,
        members: int | None = None,
        generator: torch.Generator | None = None,
    ) -> TransitionBatch:
        """Training transitions drawn uniformly with replacement, on the device.

        Shapes (T', B, ...), or (T', members, B, ...) with an independent batch per ensemble
        member (as MBPO's per-member shuffles). ``task_indices``: positions in the sampler's
        tasks (default all).
        """
        tasks = self._all(task_indices)
        shape = (tasks.shape[0], members or 1, batch_size)
        u = torch.rand(shape, device=self.device, generator=generator)
        n_train = self.num_train[tasks][:, None, None]
        j = (u * n_train).long().clamp(max=n_train - 1)
        start = (self.offsets[tasks] + self.num_val[tasks])[:, None, None]
        batch = self._gather(self.perm[start + j])
        if members is None:
            batch = TransitionBatch(*(x.squeeze(1) for x in batch))
        return batch

    def validation(
        self, task_indices: torch.Tensor | None = None
    ) -> tuple[TransitionBatch, torch.Tensor]:
        """All held-out transitions, padded to (T', V, ...), and the validity mask (T', V)."""
        tasks = self._all(task_indices)
        j = torch.arange(self.max_val, device=self.device)[None, :]
        n_val = self.num_val[tasks][:, None]
        mask = j < n_val
        rows = self.perm[self.offsets[tasks][:, None] + torch.minimum(j, n_val - 1)]
        return self._gather(rows), mask

    def input_stats(
        self, task_indices: torch.Tensor | None = None, pooled: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of (s, a) over the training rows: per task (T', in) or pooled (1, in)."""
        s = self.sampler
        x = torch.cat([s.observations, s.actions], dim=-1).to(torch.float64)
        tasks = self._all(task_indices)
        selected = torch.zeros(self.num_tasks, dtype=torch.bool, device=self.device)
        selected[tasks] = True
        weight = (self.is_train_row & selected[self.task_of_row]).to(torch.float64)
        if pooled:
            count = weight.sum()
            mean = (x * weight[:, None]).sum(0) / count
            var = ((x - mean).square() * weight[:, None]).sum(0) / count
            return mean[None].float(), var.sqrt()[None].float()
        groups = self.task_of_row
        count = torch.zeros(self.num_tasks, device=self.device, dtype=torch.float64)
        count.index_add_(0, groups, weight)
        sums = torch.zeros(self.num_tasks, x.shape[1], device=self.device, dtype=torch.float64)
        sums.index_add_(0, groups, x * weight[:, None])
        mean = sums / count[:, None]
        sq = torch.zeros_like(sums).index_add_(
            0, groups, (x - mean[groups]).square() * weight[:, None]
        )
        std = (sq / count[:, None]).sqrt()
        return mean[tasks].float(), std[tasks].float()


__all__ = ["HoldoutSplit"]
