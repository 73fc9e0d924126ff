"""Benchmark: loading a ``TaskSampler`` over many Point-Robot-Wind datasets.

Three ways to load the same datasets, timed side by side in the same rounds (so their
ratios hold on a shared machine):

- ``minari``: ``TaskSampler(..., cache=False)``, every episode read through Minari (one
  HDF5 read per field per episode): the path before the flat-array cache;
- ``cold``: the cache folder removed first, so every dataset is read through Minari and
  its flat arrays written to the cache (``merpo_data.flat_cache``): a first load;
- ``warm``: the cache in place: every later load.

The datasets (``medium`` quality, default preset) are built first into a temporary Minari
store from the shipped behavior policies (a few seconds per dataset on a 2-core CPU), and
the warm sampler is checked to hold the very arrays of the Minari path. Target: 50
datasets load warm in under 5 s on a 2-core CPU.

    python benchmarks/bench_dataset_load.py [--quick] [--tasks 50] [--store PATH]

``--quick`` loads 4 datasets; ``--store`` reuses a store that already holds the datasets
(its cache folder is removed and rebuilt).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from common import add_common_arguments, print_header, save, setup

ENV = "merpo/PointRobotWind-v0"
TARGET_WARM_SECONDS_FOR_50 = 5.0


def load(num_tasks: int, cache: bool):
    from merpo_data import TaskSampler

    return TaskSampler(ENV, tasks=f"0-{num_tasks - 1}", quality="medium", cache=cache)


def identical(a, b) -> bool:
    """Every tensor of two samplers bit-identical (the cache's promise)."""
    for name, value in vars(a).items():
        if isinstance(value, torch.Tensor):
            other = getattr(b, name)
            if value.dtype != other.dtype or not torch.equal(value, other):
                return False
    return all(torch.equal(a.infos[k], b.infos[k]) for k in a.infos) and a.infos.keys() == (
        b.infos.keys()
    )


def run(args: argparse.Namespace) -> dict:
    from merpo_data import generate
    from merpo_data.flat_cache import cache_root

    num_tasks = 4 if args.quick and args.tasks is None else (args.tasks or 50)
    rounds = 2 if args.quick else args.rounds
    build_seconds = None
    if args.store is None:
        start = time.perf_counter()
        generate(ENV, tasks=f"0-{num_tasks - 1}", qualities=["medium"], progress=False)
        build_seconds = time.perf_counter() - start
        print(f"   built {num_tasks} datasets in {build_seconds:.1f} s", flush=True)
    times: dict[str, float] = {"minari": float("inf"), "cold": float("inf"), "warm": float("inf")}
    samplers = {}
    for _ in range(rounds):
        for name in times:
            if name == "cold":
                shutil.rmtree(cache_root(), ignore_errors=True)
            start = time.perf_counter()
            samplers[name] = load(num_tasks, cache=name != "minari")
            times[name] = min(times[name], time.perf_counter() - start)
    same = identical(samplers["minari"], samplers["warm"]) and identical(
        samplers["minari"], samplers["cold"]
    )
    transitions = int(samplers["warm"].sizes.sum())
    print(
        f"\n-- TaskSampler over {num_tasks} Point-Robot-Wind medium datasets "
        f"({transitions} transitions), best of {rounds} rounds"
    )
    for name, seconds in times.items():
        print(f"   {name:6s}: {seconds:8.3f} s  ({seconds / num_tasks * 1e3:7.1f} ms per dataset)")
    ratios = {
        "minari_over_warm": times["minari"] / times["warm"],
        "cold_over_warm": times["cold"] / times["warm"],
        "cold_over_minari": times["cold"] / times["minari"],
    }
    print(
        f"   warm is {ratios['minari_over_warm']:.1f}x faster than the Minari path; "
        f"cold (first load, writes the cache) takes {ratios['cold_over_minari']:.2f}x the "
        f"Minari path; cold/warm {ratios['cold_over_warm']:.1f}x"
    )
    warm_for_50 = times["warm"] / num_tasks * 50
    verdict = "meets" if warm_for_50 < TARGET_WARM_SECONDS_FOR_50 else "MISSES"
    scaled = "" if num_tasks == 50 else " (scaled from the measured per-dataset time)"
    print(
        f"   warm load of 50 datasets: {warm_for_50:.2f} s{scaled}, target < "
        f"{TARGET_WARM_SECONDS_FOR_50:.0f} s: {verdict}"
    )
    print(f"   warm arrays identical to the Minari path's: {same}")
    if not same:
        raise SystemExit("the cached arrays differ from the Minari path's")
    return {
        "num_datasets": num_tasks,
        "transitions": transitions,
        "rounds": rounds,
        "build_seconds": build_seconds,
        "seconds": times,
        "seconds_per_dataset": {k: v / num_tasks for k, v in times.items()},
        "ratios": ratios,
        "warm_seconds_for_50": warm_for_50,
        "meets_target": warm_for_50 < TARGET_WARM_SECONDS_FOR_50,
        "identical_arrays": same,
    }


def main() -> None:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="number of datasets, tasks 0..N-1 (default 50; --quick: 4)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (default 3)")
    parser.add_argument(
        "--store",
        default=None,
        help="a Minari store already holding the datasets (default: build "
        "them into a temporary store)",
    )
    args = parser.parse_args()
    device = setup(args)
    print_header("TaskSampler load: Minari path vs flat-array cache (cold, warm)", device)
    before = os.environ.get("MINARI_DATASETS_PATH")
    with tempfile.TemporaryDirectory(prefix="merpo-bench-store-") as tmp:
        os.environ["MINARI_DATASETS_PATH"] = str(Path(args.store or tmp).resolve())
        try:
            results = run(args)
        finally:
            if before is None:
                os.environ.pop("MINARI_DATASETS_PATH", None)
            else:
                os.environ["MINARI_DATASETS_PATH"] = before
    save("dataset_load", args, device, results)


if __name__ == "__main__":
    main()
