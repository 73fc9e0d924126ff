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

Seeds as a batch axis (``merpo_agent.seed_batch``): the slots of S random seeds side by
side, seed-major, each seed with its own generator (:class:`SeedGenerators`). A random
tensor with a slot axis is then drawn seed by seed, each from its own generator with the
shape that seed alone draws, and concatenated (:func:`draw_slots`): every seed sees the
stream it sees alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


class SeedGenerators:
    """One generator per seed of a seed batch, in the slots' (seed-major) order: what a
    function that draws for the slots takes in place of one ``torch.Generator``."""

    def __init__(self, generators: list[torch.Generator]):
        if not generators:
            raise ValueError("SeedGenerators: need at least one generator")
        self.generators = list(generators)

    def __len__(self) -> int:
        return len(self.generators)

    def get_state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def set_state(self, states: list[torch.Tensor]) -> None:
        for g, state in zip(self.generators, states, strict=True):
            g.set_state(state)


Generators = torch.Generator | SeedGenerators | None
# ``sample(shape, generator)``: one random tensor of ``shape`` from one generator
Sample = Callable[[tuple[int, ...], torch.Generator | None], torch.Tensor]


def per_seed(generator: Generators, rows: torch.Tensor) -> list[tuple[Any, torch.Tensor]]:
    """``(generator, rows)`` of each seed: the seed blocks of ``rows`` (slot axis first) with
    their seeds' generators, or the one pair ``(generator, rows)`` for one generator."""
    if not isinstance(generator, SeedGenerators):
        return [(generator, rows)]
    return list(zip(generator.generators, rows.chunk(len(generator)), strict=True))


def sample_tasks(sampler: Any, batch_size: int, task_indices: torch.Tensor | None,
                 generator: Generators) -> Any:
    """``sampler.sample(batch_size, task_indices, generator)`` of a ``merpo_data.TaskSampler``;
    with :class:`SeedGenerators` the rows ``task_indices`` (None: every task, for each seed)
    are the seeds' blocks, each drawn from its seed's generator as alone."""
    if not isinstance(generator, SeedGenerators):
        return sampler.sample(batch_size, task_indices, generator)
    if task_indices is None:
        task_indices = torch.arange(sampler.num_tasks, device=sampler.device).repeat(
            len(generator))
    index = [sampler.draw_indices(batch_size, rows, g)
             for g, rows in per_seed(generator, task_indices)]
    return sampler.gather(torch.cat(index))


def draw_slots(
    generator: Generators,
    sample: Sample,
    local_shape: torch.Size | tuple,
    task_slice: TaskSlice | None = None,
) -> torch.Tensor:
    """A random tensor with a slot axis first, as the slots' seeds draw it alone.

    One generator: ``sample(local_shape, generator)``, or under ``task_slice`` the whole
    batch's draw cut to the slice (:meth:`TaskSlice.draw`). :class:`SeedGenerators` of S
    seeds: the (whole) batch's slots are S equal seed blocks; each seed draws its block's
    shape from its own generator, in seed order, and the blocks are concatenated."""
    local_shape = tuple(local_shape)

    def whole(shape: tuple[int, ...]) -> torch.Tensor:
        if not isinstance(generator, SeedGenerators):
            return sample(shape, generator)
        seeds = len(generator)
        if shape[0] % seeds:
            raise ValueError(f"draw_slots: {shape[0]} slots are not {seeds} equal seed blocks")
        block = (shape[0] // seeds, *shape[1:])
        return torch.cat([sample(block, g) for g in generator.generators])

    if task_slice is None:
        return whole(local_shape)
    return task_slice.draw(whole, local_shape)


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


__all__ = ["CPU_CHUNK_CRITIC_WEIGHTS", "Generators", "SeedGenerators", "TaskSlice",
           "critic_weights", "device_chunk_size", "draw_slots", "per_seed", "sample_tasks",
           "task_chunk_size",
           "task_chunks"]
