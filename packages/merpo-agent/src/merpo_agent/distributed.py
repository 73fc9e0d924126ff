"""torch.distributed building blocks for running MerPO across processes (torchrun).

One machine is the default; beyond it, training and data
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

from collections.abc import Iterable, Sequence
from typing import TypeVar

import torch
import torch.distributed as dist
from merpo_data.distributed import RankInfo, barrier, init_from_env, shard_bounds, shutdown
from torch import nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

T_co = TypeVar("T_co")


# Joining the process group and the task split are merpo-data's (data generation shards
# tasks the same way); the agent adds the collectives of the meta-updates below.
DistributedContext = RankInfo
init_distributed = init_from_env
destroy_distributed = shutdown


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if _active() else 0


def get_world_size() -> int:
    return dist.get_world_size() if _active() else 1


def is_main_rank() -> bool:
    """True on rank 0 (and in a single process): the rank that writes checkpoints and logs."""
    return get_rank() == 0


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
