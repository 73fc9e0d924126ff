"""Shared helpers for the benchmarks: timing, the matmul reference, peak memory, JSON output.

Every benchmark prints ratios measured side by side in the same process (so they travel
between machines) next to the absolute numbers and the device name.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from merpo_data.atomic import atomic_write_text

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_per_call(
    fn: Callable[[], object], device: torch.device, warmup: int, repeats: int
) -> float:
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
    """FLOP/s of a plain large float32 matmul: the yardstick for the update's FLOP rate."""
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
    atomic_write_text(path, json.dumps(results, indent=2, sort_keys=True))
    return path


# ------------------------------------------------------------------------------------------
# Shared by the benchmark modules of run_all.py (each is also runnable on its own).


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The flags every benchmark module accepts (run_all.py passes them through)."""
    parser.add_argument("--quick", action="store_true", help="fewer sizes and repeats (CI)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile of the hot functions"
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="also time CUDA-graph replay of the update (CUDA only)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (default: torch's)"
    )
    return parser


def setup(args: argparse.Namespace) -> torch.device:
    """Threads, seeds and the device of a benchmark run; one clear error for a bad device."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        sys.exit(f"unknown --device {args.device!r}; use cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda asked for but CUDA is not available here; use --device cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False  # FLOP counts are float32 FLOPs
        torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    return device


def run_metadata(device: torch.device, args: argparse.Namespace) -> dict:
    """What makes numbers comparable between runs: machine, versions, flags, command."""
    return {
        "device": str(device),
        "device_name": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "quick": bool(getattr(args, "quick", False)),
        "compile": bool(getattr(args, "compile", False)),
        "cuda_graphs": bool(getattr(args, "cuda_graphs", False)),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        # Other processes on the same cores slow every number down (ratios hold better).
        "load_average_1min": os.getloadavg()[0],
        "time_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def compare_times(
    fns: dict[str, Callable[[], object]],
    device: torch.device,
    warmup: int = 1,
    repeats: int = 3,
    rounds: int = 3,
) -> dict[str, float]:
    """Seconds per call of each function, measured side by side.

    The functions take turns, ``rounds`` times ``repeats`` calls each, and each keeps the
    fastest round's mean: on a machine whose cores are shared, every function sees the
    same background load, so the RATIOS between them hold even when the absolute numbers
    drift.
    """
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    synchronize(device)
    best = {name: float("inf") for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            synchronize(device)
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            synchronize(device)
            best[name] = min(best[name], (time.perf_counter() - start) / repeats)
    return best


def matmul_fn(device: torch.device, size: int = 2048) -> tuple[Callable[[], object], float]:
    """A plain large float32 matmul and its FLOPs (the yardstick timed beside each update)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    return (lambda: torch.mm(a, b, out=out)), 2.0 * size**3


def current_rss_bytes() -> int:
    """Resident set size now (Linux /proc; 0 where unavailable)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def fmt_ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.2f} ms"


def print_header(title: str, device: torch.device) -> None:
    load = os.getloadavg()[0]
    print(f"\n=== {title} | {device_name(device)} | torch {torch.__version__} | "
          f"load average {load:.1f} on {os.cpu_count()} cores", flush=True)


def save(name: str, args: argparse.Namespace, device: torch.device, results: dict) -> Path:
    """``write_results`` with the run's metadata; prints where the JSON went."""
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    path = write_results(f"{name}{suffix}", {"meta": run_metadata(device, args), **results})
    print(f"-> {path}", flush=True)
    return path
