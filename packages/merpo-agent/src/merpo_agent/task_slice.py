"""A process's share of a batch of task slots, and random draws that do not depend on it.

Under torchrun each rank holds the slots ``[start, stop)`` of a task batch of ``total``
slots (``distributed.shard_bounds``). For the ranks together to compute exactly what one
process computes on the whole batch, every random tensor with a task axis is drawn for the
WHOLE batch, from a generator in the same state on every rank, and then cut to the rank's
rows (:meth:`TaskSlice.draw`). Drawing ``total`` rows costs a little RNG work per rank;
the networks, the costly part, only ever see the local rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class TaskSlice:
    """Slots ``[start, stop)`` of a task batch of ``total`` slots."""

    start: int
    stop: int
    total: int

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.stop <= self.total:
            raise ValueError(
                f"TaskSlice: need 0 <= start <= stop <= total, got "
                f"[{self.start}, {self.stop}) of {self.total}"
            )

    @property
    def size(self) -> int:
        return self.stop - self.start

    @property
    def is_whole(self) -> bool:
        return self.start == 0 and self.stop == self.total

    def take(self, tensor: torch.Tensor, dim: int = 0) -> torch.Tensor:
        """This slice's rows of ``tensor`` along ``dim`` (which has ``total`` entries)."""
        if tensor.shape[dim] != self.total:
            raise ValueError(
                f"TaskSlice.take: expected {self.total} tasks along dim {dim}, "
                f"got shape {tuple(tensor.shape)}"
            )
        return tensor if self.is_whole else tensor.narrow(dim, self.start, self.size)

    def draw(
        self, sample: Callable[[tuple[int, ...]], torch.Tensor], local_shape: torch.Size | tuple
    ) -> torch.Tensor:
        """``sample(shape)`` drawn for the whole batch (shape ``(total, *local_shape[1:])``)
        and cut to this slice's rows: the values a single process would have at those rows.

        ``local_shape[0]`` must be this slice's size.
        """
        local_shape = tuple(local_shape)
        if local_shape[0] != self.size:
            raise ValueError(
                f"TaskSlice.draw: local shape {local_shape} must lead with {self.size} tasks"
            )
        return self.take(sample((self.total, *local_shape[1:])))


def draw_sliced(
    task_slice: TaskSlice | None,
    sample: Callable[[tuple[int, ...]], torch.Tensor],
    local_shape: torch.Size | tuple,
) -> torch.Tensor:
    """``task_slice.draw(sample, local_shape)``, or ``sample(local_shape)`` without a slice."""
    if task_slice is None:
        return sample(tuple(local_shape))
    return task_slice.draw(sample, local_shape)


__all__ = ["TaskSlice", "draw_sliced"]
