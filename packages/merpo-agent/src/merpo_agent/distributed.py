"""torch.distributed building blocks for running MerPO across processes (torchrun).

DESIGN.md "Performance shape": one machine is the default; beyond it, training and data
generation shard TASKS across processes with torch.distributed (NCCL on GPUs, Gloo on
CPUs) and the meta-updates all-reduce across ranks. No home-made process pools.

How the pieces combine in a meta-iteration (Alg. 2), every rank running the same code:

- ``shard(task_batch, rank, world)``: each rank takes a contiguous slice of the task batch
  and runs its inner RAC loop (Alg. 2 lines 11-15) on those tasks only.
- Meta-policy step (Eq. 10): the loss is a MEAN over the batch's tasks, so each rank's
  gradient of its own shard's mean, averaged with weight = its number of tasks
  (``all_reduce_mean_(grads, weight=n_local)``), is the gradient of the whole batch's
  mean. Every rank then takes the same Adam step and pi_c stays identical everywhere.
- Meta-Q (and meta-model) averaging steps ``phi <- phi - xi (phi - mean_n theta_n)`` are
  linear in the task mean: each rank applies the step with its own shard's mean, then
  ``all_reduce_mean_(params, weight=n_local)`` gives exactly the step with the global mean.
- ``is_main_rank()`` writes checkpoints and logs; ``broadcast_module_`` makes the initial
  parameters identical on every rank (or seed every rank the same).

Without torchrun (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) every function is a no-op that
returns what a single process needs, so the same trainer code runs in both settings.
Collectives flatten their tensors into one buffer per (device, dtype): one message per
call instead of one per parameter (what DDP's gradient buckets do), which matters for
Gloo's per-message latency and NCCL's launch overhead alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

T_co = TypeVar("T_co")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its machine,
    and the ``device`` it must use (``cuda:LOCAL_RANK`` under torchrun with CUDA)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={value!r} must be an integer: launch with torchrun, "
            "which sets RANK, WORLD_SIZE and LOCAL_RANK"
        ) from None


def init_distributed(device: torch.device | str = "cpu") -> DistributedContext:
    """Join the process group torchrun describes in RANK / WORLD_SIZE / LOCAL_RANK.

    NCCL when ``device`` is CUDA (each rank takes ``cuda:LOCAL_RANK``), Gloo otherwise.
    Without torchrun (WORLD_SIZE unset or 1) nothing is initialised and the context says
    rank 0 of 1 on ``device``. Calling it again after initialisation returns the context.
    """
    device = torch.device(device)
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(
            f"RANK={rank} / WORLD_SIZE={world_size} are inconsistent: launch with torchrun"
        )
    if device.type == "cuda" and world_size > 1:
        if not torch.cuda.is_available():
            raise ValueError(
                "init_distributed: device cuda asked for but CUDA is not available here; "
                "use --device cpu (Gloo)"
            )
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_available():
        raise RuntimeError(
            "this torch build has no torch.distributed; run with one process (no torchrun)"
        )
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)
    return DistributedContext(rank, world_size, local_rank, device)


def destroy_distributed() -> None:
    """Leave the process group (a no-op when none was initialised)."""
    if _active():
        dist.destroy_process_group()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if _active() else 0


def get_world_size() -> int:
    return dist.get_world_size() if _active() else 1


def is_main_rank() -> bool:
    """True on rank 0 (and in a single process): the rank that writes checkpoints and logs."""
    return get_rank() == 0


def barrier() -> None:
    """Wait for every rank (a no-op in a single process)."""
    if _active():
        dist.barrier()


def shard_bounds(count: int, rank: int, world: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``count`` items.

    The first ``count % world`` ranks take one item more (as ``numpy.array_split``): shares
    differ by at most one, cover every item exactly once, in order. A rank may get none
    when ``world > count``.
    """
    if world < 1:
        raise ValueError(f"shard: world size must be >= 1, got {world}")
    if not 0 <= rank < world:
        raise ValueError(f"shard: rank must be in 0..{world - 1}, got {rank}")
    if count < 0:
        raise ValueError(f"shard: item count must be >= 0, got {count}")
    base, extra = divmod(count, world)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard(items: Sequence[T_co] | torch.Tensor, rank: int, world: int) -> Sequence[T_co]:
    """Rank ``rank``'s contiguous slice of ``items`` (a list, tuple, range or tensor).

    Deterministic (depends only on ``len(items)``, ``rank``, ``world``); works when the
    count does not divide (see :func:`shard_bounds`). Returns the same type of sequence.
    """
    start, stop = shard_bounds(len(items), rank, world)
    return items[start:stop]


def _buckets(tensors: list[torch.Tensor]) -> dict[tuple, list[int]]:
    buckets: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        buckets.setdefault((t.device, t.dtype), []).append(i)
    return buckets


def all_reduce_mean_(
    tensors: Iterable[torch.Tensor | None], weight: float | torch.Tensor | None = None
) -> None:
    """Average ``tensors`` over ranks, in place (a no-op in a single process).

    ``weight=None``: the plain mean over ranks. With ``weight`` (this rank's share, e.g. its
    number of tasks): ``sum_r w_r x_r / sum_r w_r``, which turns per-rank means over uneven
    shards into the mean over all items (a rank with weight 0 contributes nothing). ``None``
    entries (parameters without a gradient) are skipped; every rank must pass the same
    shapes in the same order. One all-reduce per (device, dtype) bucket.
    """
    tensors = [t for t in tensors if t is not None]
    if not _active() or not tensors:
        return
    world = dist.get_world_size()
    for (device, dtype), index in _buckets(tensors).items():
        if not dtype.is_floating_point:
            raise ValueError(f"all_reduce_mean_ averages floating-point tensors, got {dtype}")
        group = [tensors[i] for i in index]
        flat = _flatten_dense_tensors([t.detach() for t in group])
        if weight is None:
            dist.all_reduce(flat, op=dist.ReduceOp.SUM)
            flat.div_(world)
        else:
            w = torch.as_tensor(weight, dtype=dtype, device=device).reshape(1)
            # The weight travels in the same message: one collective, not two.
            message = torch.cat([flat * w, w])
            dist.all_reduce(message, op=dist.ReduceOp.SUM)
            flat = message[:-1] / message[-1]
        for dst, src in zip(group, _unflatten_dense_tensors(flat, group), strict=True):
            dst.detach().copy_(src)


def all_reduce_sum_(tensors: Iterable[torch.Tensor | None]) -> None:
    """Sum ``tensors`` over ranks, in place (a no-op in a single process).

    For state that each rank changes in disjoint places, e.g. the learners' per-task dual
    table: all-reduce the change ``new - old`` (zero outside this rank's tasks), then add it
    to ``old`` on every rank.
    """
    tensors = [t for t in tensors if t is not None]
    if not _active() or not tensors:
        return
    for _, index in _buckets(tensors).items():
        group = [tensors[i] for i in index]
        flat = _flatten_dense_tensors([t.detach() for t in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        for dst, src in zip(group, _unflatten_dense_tensors(flat, group), strict=True):
            dst.detach().copy_(src)


def any_rank(flag: torch.Tensor) -> torch.Tensor:
    """True on every rank if ``flag`` (a bool tensor) is true on any rank.

    Use it before a host read that may stop the run (e.g. the non-finite-loss check), so
    that all ranks stop together instead of the others waiting in the next collective.
    """
    if not _active():
        return flag
    value = flag.detach().to(torch.float32).reshape(-1).clone()
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return (value > 0).reshape(flag.shape)


def all_reduce_gradients_(module: nn.Module, weight: float | torch.Tensor | None = None) -> None:
    """``all_reduce_mean_`` of the ``.grad`` of ``module``'s parameters (those that have one)."""
    all_reduce_mean_((p.grad for p in module.parameters()), weight=weight)


def broadcast_module_(module: nn.Module, src: int = 0) -> None:
    """Copy rank ``src``'s parameters and buffers into every rank's ``module``, in place."""
    if not _active():
        return
    tensors = [t for t in (*module.parameters(), *module.buffers())]
    for _, index in _buckets(tensors).items():
        group = [tensors[i] for i in index]
        flat = _flatten_dense_tensors([t.detach() for t in group])
        dist.broadcast(flat, src=src)
        for dst, value in zip(group, _unflatten_dense_tensors(flat, group), strict=True):
            dst.detach().copy_(value)


def all_gather_objects(obj: object) -> list:
    """Every rank's ``obj`` (picklable, small: metrics, evaluation returns), in rank order."""
    if not _active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


__all__ = [
    "DistributedContext",
    "all_gather_objects",
    "all_reduce_gradients_",
    "all_reduce_mean_",
    "all_reduce_sum_",
    "any_rank",
    "barrier",
    "broadcast_module_",
    "destroy_distributed",
    "get_rank",
    "get_world_size",
    "init_distributed",
    "is_main_rank",
    "shard",
    "shard_bounds",
]
