"""Data generation across processes: ``torchrun --nproc-per-node N -m merpo_data generate ...``.

The ranks split the requested task list into contiguous shards (the first ``len % N`` ranks
take one task more); each rank trains the behavior policies of its own tasks only and writes
their datasets (every dataset atomically, as in one process); a final barrier makes the
command end when every dataset exists. Only rank 0 prints progress and the summary.

The few lines of ``torch.distributed`` needed here are written out (merpo-data does not
depend on merpo-agent): Gloo on CPUs, NCCL on GPUs (each rank on ``cuda:LOCAL_RANK``).
Without torchrun (``WORLD_SIZE`` unset or 1) nothing is initialised: rank 0 of 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class RankInfo:
    """This process's ``rank`` of ``world_size``, the ``device`` it uses (``cuda:LOCAL_RANK``
    under torchrun with CUDA) and its ``local_rank`` on its machine."""

    rank: int
    world_size: int
    device: torch.device
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(
            f"environment variable {name}={value!r} must be an integer: launch with torchrun, "
            "which sets RANK, WORLD_SIZE and LOCAL_RANK"
        ) from None


def check_device(device: torch.device | str) -> torch.device:
    """``device`` as a ``torch.device``; one line naming the fix when it is unknown or asks
    for CUDA on a machine without it (the one home of this check: merpo-data's CLI and
    sampler and merpo-agent's CLIs call it)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"unknown device {device!r}; use cpu or cuda") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use cpu or cuda")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "--device cuda was asked for but CUDA is not available here; use --device cpu"
        )
    return dev


def init_from_env(device: torch.device | str = "cpu") -> RankInfo:
    """Join the process group torchrun describes (``RANK``/``WORLD_SIZE``/``LOCAL_RANK``).

    Gloo when ``device`` is a CPU, NCCL when it is CUDA (each rank then takes
    ``cuda:LOCAL_RANK``). A no-op returning rank 0 of 1 outside torchrun.
    """
    device = check_device(device)
    world, rank, local = _env_int("WORLD_SIZE", 1), _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} / WORLD_SIZE={world} are inconsistent: launch with torchrun")
    if world == 1:
        return RankInfo(0, 1, device)
    if not dist.is_available():
        raise RuntimeError("this torch build has no torch.distributed; run one process")
    if device.type == "cuda":
        device = torch.device("cuda", local % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group("nccl", rank=rank, world_size=world, device_id=device)
        else:
            dist.init_process_group("gloo", rank=rank, world_size=world)
    return RankInfo(rank, world, device, local)


def barrier() -> None:
    """Wait for every rank (a no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_bounds(count: int, rank: int, world_size: int) -> tuple[int, int]:
    """``[start, stop)`` of rank ``rank``'s contiguous share of ``count`` items.

    Shares differ by at most one (the first ``count % world_size`` ranks take one more),
    cover every item exactly once and keep the order; a rank may get none.
    """
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in 0..{world_size - 1}, got {rank}")
    if count < 0:
        raise ValueError(f"item count must be >= 0, got {count}")
    base, extra = divmod(int(count), world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)
