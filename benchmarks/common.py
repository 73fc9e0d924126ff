"""Shared helpers for the benchmarks: timing, the matmul reference, peak memory, JSON output.

Every benchmark prints ratios measured side by side in the same process (so they travel
between machines) next to the absolute numbers and the device name.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_call(fn: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median-free mean seconds per call of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / repeats


def matmul_flops_per_second(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """FLOP/s of a plain large float32 matmul: the yardstick the update's FLOP rate is read against."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    seconds = time_per_call(lambda: a @ b, device, warmup=2, repeats=repeats)
    return 2.0 * size**3 / seconds


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    # ru_maxrss is in KiB on Linux.
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def write_results(name: str, results: dict) -> Path:
    """Write ``results`` as JSON to benchmarks/results/<name>.json atomically; return the path."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    fd, tmp = tempfile.mkstemp(dir=RESULTS_DIR, prefix=f".{name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(results, handle, indent=2, sort_keys=True)
    os.replace(tmp, path)
    return path
