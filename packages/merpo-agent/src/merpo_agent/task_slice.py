"""A process's share of a batch of task slots, and random draws that do not depend on it.

Under torchrun each rank holds the slots ``[start, stop)`` of a task batch of ``total``
slots (``distributed.shard_bounds``). For the ranks together to compute exactly what one
process computes on the whole batch, every random tensor with a task axis is drawn for the
WHOLE batch, from a generator in the same state on every rank, and then cut to the rank's
rows (:meth:`TaskSlice.draw`). Drawing ``total`` rows costs a little RNG work per rank;
the networks, the costly part, only ever see the local rows.

The same slices cut a task batch into chunks run one after another in one process
(:func:`task_chunks`), when the device runs smaller batched ops faster
(:func:`device_chunk_size`): the RAC inner loop (Alg. 2 lines 10-15) and the training of
task models (Eq. 3-4).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from merpo_data.distributed import shard_bounds

if TYPE_CHECKING:
    from merpo_agent.config import Config


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


def task_chunks(total: int, size: int) -> list[TaskSlice]:
    """``total`` task slots in ``ceil(total / size)`` consecutive chunks of at most ``size``
    slots, their sizes differing by at most one (``[]`` for no slots)."""
    if size < 1:
        raise ValueError(f"task chunk size must be >= 1, got {size}")
    count = -(-total // size)
    return [TaskSlice(*shard_bounds(total, i, count), total) for i in range(count)]


def device_chunk_size(device: torch.device | str, batch: int, weights_per_task: int,
                      cpu_max_weights: int) -> int:
    """The device's tasks per batched op: all of ``batch`` off the CPU; on the CPU as many
    tasks (at least one) as keep one op's weights within ``cpu_max_weights``, the measured
    size beyond which the op's memory-bound parts spill the cache and a loop over smaller
    ops runs faster."""
    if torch.device(device).type != "cpu":
        return batch
    return max(1, min(batch, cpu_max_weights // max(1, weights_per_task)))


# Twin-critic weights per batched op that a CPU still runs faster batched than one task at
# a time (benchmarks/bench_meta_iteration.py): the memory-bound ops of a bigger op spill
# the cache (2 x 32 networks: batched 2.1x the loop at T = 8; 5 x 300: 0.6-0.9x).
CPU_CHUNK_CRITIC_WEIGHTS = 131_072


def task_chunk_size(cfg: Config, device: torch.device, batch: int, obs_dim: int,
                    act_dim: int) -> int:
    """Tasks per batched op of the inner loop: ``meta.task_chunk`` if set; else the whole
    batch on a GPU, and on a CPU as many tasks as fit ``CPU_CHUNK_CRITIC_WEIGHTS``."""
    if cfg.meta.task_chunk > 0:
        return min(cfg.meta.task_chunk, batch)
    weights = critic_weights(cfg.rac.hidden, cfg.rac.hidden_layers, obs_dim + act_dim)
    return device_chunk_size(device, batch, weights, CPU_CHUNK_CRITIC_WEIGHTS)


def critic_weights(hidden: int, hidden_layers: int, in_features: int) -> int:
    """The twin critics' weights per task, what ``CPU_CHUNK_CRITIC_WEIGHTS`` bounds."""
    return 2 * (in_features * hidden + (hidden_layers - 1) * hidden * hidden + hidden)


__all__ = ["CPU_CHUNK_CRITIC_WEIGHTS", "TaskSlice", "critic_weights", "device_chunk_size",
           "draw_sliced", "task_chunk_size", "task_chunks"]
