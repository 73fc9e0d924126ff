"""Every training task's own RAC learner, kept for the whole meta-training (Alg. 2 line 1).

Alg. 2 creates an actor, twin critics (with targets) and dual variables for each training
task once; a task sampled again continues where its learner stopped. ``LearnerTable`` holds
them as per-task tables: a ``TaskLearners`` with one slot per training task (N slots), never
updated itself. A meta-iteration gathers its batch's rows into the working ``TaskLearners``
(T slots), runs the J inner updates there, batched, and writes the rows back. Gathering and
writing back are ``index_select`` / ``index_copy_`` on each persistent tensor (parameters,
targets, Adam moments and step counts, duals): a loop over tensors, never over tasks.

Under torchrun each rank holds the whole table and updates its own slots' rows;
``merge_ranks_`` gives every rank every row of the batch (the ranks' rows are disjoint).
"""

from __future__ import annotations

import torch

from merpo_agent.distributed import all_reduce_sum_
from merpo_agent.task_learners import TaskLearners


class LearnerTable:
    """Per-task learners of ``num_tasks`` tasks, stored as a ``TaskLearners`` of N slots."""

    def __init__(self, learners: TaskLearners):
        self.learners = learners
        self.num_tasks = learners.num_slots

    @torch.no_grad()
    def initialize(self, meta_policy, meta_q) -> None:
        """Alg. 2 line 1: every task's actor <- the initial pi_c, critics <- the initial Q_meta
        (the same initialization for all tasks), the config's initial duals, fresh Adam."""
        self.learners.init_from_meta(meta_policy, meta_q)

    def _check(self, working: TaskLearners, rows: torch.Tensor) -> torch.Tensor:
        rows = torch.as_tensor(rows, device=self.learners.device, dtype=torch.long)
        if rows.shape != (working.num_slots,):
            raise ValueError(
                f"LearnerTable: rows must have shape ({working.num_slots},) (one task per "
                f"slot), got {tuple(rows.shape)}"
            )
        return rows

    @torch.no_grad()
    def gather_into(self, working: TaskLearners, rows: torch.Tensor) -> None:
        """Load the learners of tasks ``rows`` (T,) into the slots of ``working``."""
        rows = self._check(working, rows)
        for dst, src in zip(
            working.persistent_tensors(), self.learners.persistent_tensors(), strict=True
        ):
            dst.copy_(src.index_select(0, rows))

    @torch.no_grad()
    def scatter_from(self, working: TaskLearners, rows: torch.Tensor) -> None:
        """Write the slots of ``working`` back as the learners of tasks ``rows`` (T,)."""
        rows = self._check(working, rows)
        for dst, src in zip(
            self.learners.persistent_tensors(), working.persistent_tensors(), strict=True
        ):
            dst.index_copy_(0, rows, src.detach())

    @torch.no_grad()
    def merge_ranks_(self, batch_rows: torch.Tensor, local_rows: torch.Tensor) -> None:
        """torchrun: each rank wrote the rows ``local_rows`` of the batch ``batch_rows``; give
        every rank every batch row (a sum of each rank's rows, zero elsewhere, is exact
        because the ranks' rows are disjoint). Rows outside the batch keep their value."""
        tensors = self.learners.persistent_tensors()
        device = tensors[0].device
        mine = torch.zeros(self.num_tasks, dtype=torch.bool, device=device)
        mine[local_rows] = True
        in_batch = torch.zeros_like(mine)
        in_batch[batch_rows] = True
        merged = [
            torch.where(mine.view((-1,) + (1,) * (t.dim() - 1)), t, torch.zeros_like(t))
            for t in tensors
        ]
        all_reduce_sum_(merged)
        for tensor, value in zip(tensors, merged, strict=True):
            keep = in_batch.view((-1,) + (1,) * (tensor.dim() - 1))
            tensor.copy_(torch.where(keep, value, tensor))

    def duals(self) -> torch.Tensor:
        """Every task's (log temperature, log beta, lam, alpha), shape (4, N)."""
        return self.learners.duals()

    def training_state(self) -> dict:
        state = self.learners.training_state()
        state.pop("generator")  # the table draws no noise
        return state

    def load_training_state(self, state: dict) -> None:
        self.learners.load_training_state(state)


__all__ = ["LearnerTable"]
