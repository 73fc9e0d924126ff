"""D_model: a fixed-size FIFO buffer of model-rollout transitions, one per task (Alg. 1 line 3).

Storage is ``(T, capacity, ...)`` on the device, filled in the same ring order for every
task, so a push of ``(T, n)`` rows and a sample of ``(T, B)`` rows are single batched ops
with fixed shapes: no Python loop over tasks, no host copy (the fill level is plain Python
bookkeeping: it depends only on how many rows were pushed, never on their values).

Rows may carry a validity mask (e.g. rollout steps after a termination, which keep the
shapes fixed): invalid rows are stored but never sampled. Each task must have at least one
valid row before ``sample`` is called.
"""

from __future__ import annotations

import torch

from merpo_agent.task_slice import Generators, SeedGenerators, TaskSlice, draw_slots
from merpo_agent.transitions import TransitionBatch


class ModelBuffer:
    def __init__(
        self,
        num_tasks: int,
        capacity: int,
        obs_dim: int,
        act_dim: int,
        device: torch.device | str = "cpu",
    ):
        if num_tasks < 1 or capacity < 1:
            raise ValueError("ModelBuffer: num_tasks and capacity must be >= 1")
        self.num_tasks, self.capacity = num_tasks, capacity
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.device = torch.device(device)

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(num_tasks, capacity, *shape, device=self.device)

        self.observations = zeros(obs_dim)
        self.actions = zeros(act_dim)
        self.rewards = zeros()
        self.next_observations = zeros(obs_dim)
        self.terminations = zeros()
        self.valid = zeros()  # 1.0 for rows that may be sampled
        self.size = 0  # rows filled per task (the same for every task)
        self.position = 0  # next row to write
        self._has_masked_rows = False

    def __len__(self) -> int:
        return self.size

    def clear(self) -> None:
        """Forget all rows (e.g. when the learners' slots move to other tasks)."""
        self.size = 0
        self.position = 0
        self.valid.zero_()
        self._has_masked_rows = False

    def push(self, batch: TransitionBatch, valid: torch.Tensor | None = None) -> None:
        """Append ``(T, n)`` rows per task, overwriting the oldest ones when full (FIFO).

        ``valid``: optional (T, n) bool/float mask; rows with 0 are never sampled.
        """
        t, n = batch.rewards.shape
        if t != self.num_tasks:
            raise ValueError(
                f"ModelBuffer.push: batch has {t} tasks, buffer has {self.num_tasks}; "
                "build the buffer with num_tasks equal to the learners' task slots"
            )
        if n > self.capacity:  # only the newest `capacity` rows would survive anyway
            batch = TransitionBatch(*(field[:, n - self.capacity :] for field in batch))
            valid = None if valid is None else valid[:, n - self.capacity :]
            n = self.capacity
        rows = (self.position + torch.arange(n, device=self.device)) % self.capacity
        self.observations.index_copy_(1, rows, batch.observations)
        self.actions.index_copy_(1, rows, batch.actions)
        self.rewards.index_copy_(1, rows, batch.rewards)
        self.next_observations.index_copy_(1, rows, batch.next_observations)
        self.terminations.index_copy_(1, rows, batch.terminations)
        if valid is None:
            self.valid.index_fill_(1, rows, 1.0)
        else:
            self.valid.index_copy_(1, rows, valid.to(self.valid.dtype))
            self._has_masked_rows = True
        self.position = (self.position + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def sample(
        self,
        batch_size: int,
        generator: Generators = None,
        task_slice: TaskSlice | None = None,
    ) -> TransitionBatch:
        """``(T, batch_size)`` rows per task, uniformly with replacement among valid rows.

        ``task_slice`` (torchrun, or a chunk of the batch): this buffer holds the slots
        ``[start, stop)`` of a larger task batch; the row indices are drawn for the whole
        batch and cut, as a single process holding every slot would draw them;
        :class:`SeedGenerators` draw each seed's block from its own generator
        (``task_slice.draw_slots``; unmasked buffers only, both).
        """
        if self.size == 0:
            raise RuntimeError("ModelBuffer.sample: the buffer is empty; push model rollouts first")
        if self._has_masked_rows:
            if (task_slice is not None and not task_slice.is_whole) or isinstance(
                    generator, SeedGenerators):
                raise ValueError(
                    "ModelBuffer.sample: a task slice or a seed batch needs a buffer without "
                    "masked rows (push without valid=...)"
                )
            index = torch.multinomial(
                self.valid[:, : self.size], batch_size, replacement=True, generator=generator
            )
        else:
            index = draw_slots(
                generator,
                lambda shape, g: torch.randint(0, self.size, shape, device=self.device,
                                               generator=g),
                (self.num_tasks, batch_size), task_slice,
            )

        def gather(field: torch.Tensor) -> torch.Tensor:
            if field.dim() == 2:
                return field.gather(1, index)
            return field.gather(1, index[..., None].expand(-1, -1, field.shape[-1]))

        return TransitionBatch(
            observations=gather(self.observations),
            actions=gather(self.actions),
            rewards=gather(self.rewards),
            next_observations=gather(self.next_observations),
            terminations=gather(self.terminations),
        )

    def state_dict(self) -> dict:
        return {
            "observations": self.observations,
            "actions": self.actions,
            "rewards": self.rewards,
            "next_observations": self.next_observations,
            "terminations": self.terminations,
            "valid": self.valid,
            "size": self.size,
            "position": self.position,
            "has_masked_rows": self._has_masked_rows,
        }

    def load_state_dict(self, state: dict) -> None:
        for name in ("observations", "actions", "rewards", "next_observations", "terminations",
                     "valid"):
            getattr(self, name).copy_(state[name])
        self.size = int(state["size"])
        self.position = int(state["position"])
        self._has_masked_rows = bool(state["has_masked_rows"])


__all__ = ["ModelBuffer"]
