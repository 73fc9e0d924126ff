"""Behavior-policy SAC of merpo-data: one batched SAC over 50 tasks vs the same code per task.

Env steps per second of training (one iteration = one env step per task + one gradient
update) on all 50 Point-Robot-Wind tasks, two ways, timed side by side in one process:
- batched: one ``SACTrainer`` with a task axis (T = 50): one vector-env step and one set of
  batched matmuls per iteration, as ``merpo-data generate`` runs;
- per task: 50 ``SACTrainer`` objects with T = 1, the same code, stepped one after another.
Prints both rates and their ratio (the speed-up of the task axis). Data generation runs
with one intra-op thread (see ``merpo_data.store.small_op_threads``); so does this
benchmark unless ``--threads`` says otherwise.

    python benchmarks/bench_sac_datagen.py [--quick] [--device cuda] [--threads N]
"""

from __future__ import annotations

import argparse

import torch
from common import add_common_arguments, compare_times, print_header, save, setup
from merpo_data.presets import get_preset
from merpo_data.sac import SACTrainer

ENV = "merpo/PointRobotWind-v0"


def main(argv: list[str] | None = None) -> dict:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n\n")[0]))
    parser.add_argument("--tasks", type=int, default=50, help="number of tasks (default 50)")
    args = parser.parse_args(argv)
    if args.threads is None:
        args.threads = 1
    device = setup(args)
    cfg = get_preset(ENV, "default").sac
    iterations = 10 if args.quick else 50
    rounds = 2 if args.quick else 3
    tasks = list(range(args.tasks))

    batched = SACTrainer(ENV, tasks, cfg, device=device, seed=0)
    single = [SACTrainer(ENV, [t], cfg, device=device, seed=0) for t in tasks]
    trainers = [batched, *single]
    # Fill every buffer past one batch with random actions, then time learning iterations.
    for trainer in trainers:
        for _ in range(cfg.batch_size):
            trainer._env_step()
        trainer.iteration = cfg.random_iterations  # policy actions from here on

    def iterate(trainer: SACTrainer) -> None:
        for _ in range(iterations):
            trainer._env_step()
            trainer.update()

    def run_batched() -> None:
        iterate(batched)

    def run_per_task() -> None:
        for trainer in single:
            iterate(trainer)

    print_header(f"merpo-data SAC datagen, {len(tasks)} Point-Robot-Wind tasks", device)
    seconds = compare_times(
        {"batched": run_batched, "per_task": run_per_task},
        device,
        warmup=1,
        repeats=1,
        rounds=rounds,
    )
    steps = len(tasks) * iterations
    rates = {name: steps / s for name, s in seconds.items()}
    ratio = rates["batched"] / rates["per_task"]
    print(f"batched  (T={len(tasks)}):        {rates['batched']:10.0f} env steps/s (with updates)")
    print(
        f"per task (T=1, x{len(tasks)}):     {rates['per_task']:10.0f} env steps/s (with updates)"
    )
    print(f"ratio batched / per task: {ratio:.1f}x", flush=True)
    for trainer in trainers:
        trainer.close()
    results = {
        "tasks": len(tasks),
        "iterations": iterations,
        "env_steps_per_s": rates,
        "ratio_batched_over_per_task": ratio,
        "sac": cfg.to_dict(),
    }
    save("bench_sac_datagen", args, device, results)
    return results


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
