"""Benchmark: S random seeds trained as one batch (``merpo-agent train --seeds``) against S
runs of one seed each, one after another, in the same process with the same threads.

Both sides run the real training code (``seed_batch.SeedBatch`` for MerPO,
``baselines.run.train_baseline_runs`` for the baselines) on Point-Robot-Wind at the
``small`` preset's sizes (``repro`` has the same networks and batches on more tasks): MerPO
64 x 2 networks, task batches of 8, J = 10, 128-row batches and rollouts, 5 x 64 x 3
dynamics with 3 elites; contextual BCQ 64 x 2 networks, 128-row batches over its 8 tasks.
Timed is the training loop alone (the gradient steps, with its final checkpoint); the
setup (MerPO's meta-model, task models and behavior clones, restored from a setup cache
after the first round; a baseline's ``prepare``) and the final meta-test are timed apart
and reported, not compared. The two sides take turns, ``--rounds`` times with the order
swapped each round, so that both see the same background load; the ratio printed is
batched / S singles per round and over all rounds (target: at most 0.4 on a CPU).

Datasets: the ``test`` data preset of merpo-data for the tasks the runs read, built into
``--store`` if missing (about a minute once).

    python benchmarks/bench_seed_batch.py [--seeds 5] [--steps 300] [--rounds 2]
        [--algos merpo,cbcq] [--device cuda] [--threads 1] [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import time
from pathlib import Path

from common import RESULTS_DIR, add_common_arguments, print_header, save, setup

ENV = "merpo/PointRobotWind-v0"
TRAIN_TASKS, TEST_TASKS = tuple(range(8)), (40, 41)
DATA = ["data.preset=test", "data.train_tasks=0-7", "data.test_tasks=40-41"]
# neither the meta-tests nor the setup are what is compared: the smallest that runs (the
# setup's sizes, and so the loop's, are the preset's; its step counts are cut)
MERPO_QUIET = ["eval.every=0", "eval.episodes=1", "test.compare_combo=false",
               "test.compare_beha_only=false", "test.adaptation_steps=1",
               "run.log_every=100000", "dynamics.meta_iterations=5", "rac.bc_steps=10",
               "dynamics.adaptation_steps=5", "dynamics.scratch_steps=5"]
BASELINE_QUIET = ["eval.every=0", "eval.episodes=1", "run.log_every=100000"]


@contextlib.contextmanager
def clocked(owner: object, name: str):
    """Sum the wall seconds of every call of ``owner.name`` inside the block."""
    real = getattr(owner, name)
    spent = {"seconds": 0.0}

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            spent["seconds"] += time.perf_counter() - start

    setattr(owner, name, timed)
    try:
        yield spent
    finally:
        setattr(owner, name, real)


def train_merpo(seeds: list[int], work: Path, steps: int, device: str, cache: Path,
                preset: str) -> dict[str, float]:
    """MerPO's seeds ``seeds`` as one SeedBatch: (training loop s, total s)."""
    from merpo_agent import seed_batch
    from merpo_agent.presets import build_config
    from merpo_agent.trainer import MetaTrainer

    overrides = [*DATA, *MERPO_QUIET, f"run.steps={steps}", f"run.checkpoint_every={steps}"]
    members = [
        MetaTrainer(build_config(ENV, preset, "merpo", overrides=overrides, seed=seed,
                                 device=device), work / f"merpo-seed-{seed}", progress=False,
                    say=lambda _: None, tensorboard=False, setup_cache=cache)
        for seed in seeds
    ]
    start = time.perf_counter()
    with clocked(seed_batch._Stack, "run") as loop:
        seed_batch.SeedBatch(members, progress=False).train()
    return {"loop": loop["seconds"], "total": time.perf_counter() - start}


def train_cbcq(seeds: list[int], work: Path, steps: int, device: str, cache: Path,
               preset: str) -> dict[str, float]:
    """Contextual BCQ's seeds as one batch: (training loop s, total s)."""
    from merpo_agent.baselines import run

    overrides = [*DATA, *BASELINE_QUIET, f"run.steps={steps}", f"run.checkpoint_every={steps}"]
    start = time.perf_counter()
    with clocked(run, "_train_together") as loop, contextlib.redirect_stdout(open(os.devnull,
                                                                                  "w")):
        run.train_baseline_runs("cbcq", ENV, preset, overrides, seeds, device,
                                [work / f"cbcq-seed-{seed}" for seed in seeds],
                                progress=False)
    return {"loop": loop["seconds"], "total": time.perf_counter() - start}


ALGOS = {"merpo": train_merpo, "cbcq": train_cbcq}


def measure(train, seeds: list[int], steps: int, device: str, rounds: int,
            cache: Path, preset: str) -> dict:
    """``rounds`` turns of (the batch, then each seed alone), the order swapped each round;
    every run in a fresh folder."""
    per_round = []
    for r in range(rounds):
        times: dict[str, dict[str, float]] = {}
        sides = ["batched", "singles"] if r % 2 == 0 else ["singles", "batched"]
        for side in sides:
            with tempfile.TemporaryDirectory() as folder:
                if side == "batched":
                    times[side] = train(seeds, Path(folder), steps, device, cache, preset)
                else:
                    runs = [train([s], Path(folder), steps, device, cache, preset)
                            for s in seeds]
                    times[side] = {k: sum(t[k] for t in runs) for k in ("loop", "total")}
        times["ratio"] = times["batched"]["loop"] / times["singles"]["loop"]
        per_round.append(times)
        print(f"  round {r + 1}: batched {times['batched']['loop']:7.1f} s   "
              f"{len(seeds)} singles {times['singles']['loop']:7.1f} s   "
              f"ratio {times['ratio']:.2f}   (with setup and final meta-test: "
              f"{times['batched']['total']:.1f} s vs {times['singles']['total']:.1f} s)",
              flush=True)
    batched = sum(t["batched"]["loop"] for t in per_round)
    singles = sum(t["singles"]["loop"] for t in per_round)
    return {"rounds": per_round, "batched_loop_s": batched / rounds,
            "singles_loop_s": singles / rounds, "ratio": batched / singles}


def main() -> None:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--seeds", type=int, default=5, help="S seeds (default 5)")
    parser.add_argument("--steps", type=int, default=None,
                        help="gradient steps per run (default 300; --quick 100)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="turns of both sides (default 2; --quick 1)")
    parser.add_argument("--algos", default="merpo,cbcq", help="comma list of merpo, cbcq")
    parser.add_argument("--preset", default="small",
                        help="the networks' and batches' sizes: small (default) or smoke")
    parser.add_argument("--store", default=str(RESULTS_DIR / "minari-store"),
                        help="the Minari store of the test datasets (built if missing)")
    args = parser.parse_args()
    if args.threads is None:
        args.threads = 1  # what reproduce and tune train with (bit-identical seeds)
    device = setup(args)
    os.environ["MINARI_DATASETS_PATH"] = str(Path(args.store).resolve())
    steps = args.steps or (100 if args.quick else 300)
    rounds = args.rounds or (1 if args.quick else 2)
    seeds = list(range(args.seeds))
    print_header(f"seeds as a batch: {len(seeds)} seeds batched vs {len(seeds)} single runs, "
                 f"{steps} gradient steps each ({args.preset} sizes)", device)
    results: dict = {"seeds": len(seeds), "steps": steps, "preset": args.preset}
    import merpo_data

    merpo_data.ensure_datasets(ENV, [(t, "medium") for t in (*TRAIN_TASKS, *TEST_TASKS)],
                               "test", build_missing=True)
    with tempfile.TemporaryDirectory() as cache_dir:
        cache = Path(cache_dir)
        for name in args.algos.split(","):
            train = ALGOS[name]
            # warm-up: imports, datasets, the setup cache of every seed (not timed)
            with tempfile.TemporaryDirectory() as folder:
                train(seeds, Path(folder), 10, str(device), cache, args.preset)
            print(f"{name}:", flush=True)
            results[name] = measure(train, seeds, steps, str(device), rounds, cache,
                                    args.preset)
    print()
    print(f"{'algo':>6} {'batched s':>10} {f'{len(seeds)} singles s':>12} "
          f"{'batched / singles':>18}")
    for name in args.algos.split(","):
        r = results[name]
        print(f"{name:>6} {r['batched_loop_s']:10.1f} {r['singles_loop_s']:12.1f} "
              f"{r['ratio']:18.2f}")
    save(f"seed_batch_{args.preset}", args, device, results)


if __name__ == "__main__":
    main()
