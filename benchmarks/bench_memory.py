"""Benchmark 5: peak memory of a Table 2 run slice (Walker-2D-Params sizes).

The state a Table 2 meta-training run holds: the task sampler of the 20 training tasks
(200 episodes x 200 steps = 40,000 transitions per task, synthetic values), the 20 adapted
task models (7 x 4 x 256) and the meta-model, the 20 behavior-cloning policies, pi_c and
Q_meta (5 x 300); then a few meta-iterations with a task batch of 8 (Alg. 2 lines 10-18:
J = 10 RAC steps, each with a 512-state rollout per task, then the meta updates).

Peak memory: resident set size (``ru_maxrss``) on CPU, ``torch.cuda.max_memory_allocated``
on GPU; printed with the baseline before the run's state is built (the interpreter,
torch and the packages), so the difference is what the run itself needs. Run it in its own
process (run_all.py does): ``ru_maxrss`` is the peak over the process' whole life.

    python benchmarks/bench_memory.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse
import time

import torch
from bench_meta_iteration import MetaIteration
from common import (
    add_common_arguments,
    current_rss_bytes,
    peak_memory_bytes,
    print_header,
    save,
    setup,
    synchronize,
)
from workloads import TABLE2, SyntheticTaskSampler, make_bc_policy, make_dynamics

TRAIN_TASKS, ROWS_PER_TASK, TASK_BATCH = 20, 40_000, 8
MiB = 2**20


def run(args: argparse.Namespace) -> dict:
    device = setup(args)
    print_header("Benchmark 5: peak memory of a Table 2 run slice", device)
    iterations, inner = (1, 2) if args.quick else (3, 10)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    baseline = current_rss_bytes() if device.type == "cpu" else torch.cuda.memory_allocated()
    sizes = TABLE2
    sampler = SyntheticTaskSampler(TRAIN_TASKS, sizes.obs_dim, sizes.act_dim, ROWS_PER_TASK,
                                   device)
    task_models = make_dynamics(sizes, TRAIN_TASKS, device)
    meta_model = make_dynamics(sizes, 1, device)
    bc_all = make_bc_policy(sizes.rac_config(), sizes, TRAIN_TASKS, device)
    positions = torch.arange(TASK_BATCH, device=device)
    run_state = MetaIteration(sizes, TASK_BATCH, inner, device, sampler=sampler,
                              task_positions=positions)
    g = torch.Generator(device).manual_seed(0)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(iterations):
        # A new task batch: its positions, models and BC policies into the slots.
        chosen = torch.randperm(TRAIN_TASKS, device=device, generator=g)[:TASK_BATCH]
        run_state.data.task_indices.copy_(chosen)
        run_state.models.copy_from_(task_models, chosen)
        with torch.no_grad():
            for dst, src in zip(run_state.bc.parameters(), bc_all.parameters(), strict=True):
                dst.copy_(src.index_select(0, chosen))
        run_state()
    synchronize(device)
    seconds = (time.perf_counter() - start) / iterations
    peak = peak_memory_bytes(device)
    kind = "RSS" if device.type == "cpu" else "torch.cuda.max_memory_allocated"
    state_bytes = sum(t.numel() * t.element_size() for t in (
        sampler.observations, sampler.actions, sampler.rewards, sampler.next_observations,
        sampler.terminations))
    params = sum(p.numel() for m in (task_models, meta_model, bc_all, run_state.learners,
                                     run_state.meta, run_state.models) for p in m.parameters())
    print(f"   {TRAIN_TASKS} tasks x {ROWS_PER_TASK} transitions, task batch {TASK_BATCH}, "
          f"J = {inner}, {iterations} meta-iteration(s): {seconds:.2f} s each")
    print(f"   peak {kind}: {peak / MiB:8.1f} MiB (baseline before building "
          f"{baseline / MiB:.1f} MiB; the run adds {(peak - baseline) / MiB:.1f} MiB)")
    print(f"   of which: task data {state_bytes / MiB:.1f} MiB, parameters "
          f"{params * 4 / MiB:.1f} MiB (x3-4 with gradients and Adam moments)")
    results = {
        "memory_kind": kind,
        "peak_mib": peak / MiB,
        "baseline_mib": baseline / MiB,
        "run_adds_mib": (peak - baseline) / MiB,
        "task_data_mib": state_bytes / MiB,
        "parameters_mib": params * 4 / MiB,
        "seconds_per_meta_iteration": seconds,
        "train_tasks": TRAIN_TASKS,
        "rows_per_task": ROWS_PER_TASK,
        "task_batch": TASK_BATCH,
        "inner_steps": inner,
        "iterations": iterations,
    }
    save("memory", args, device, results)
    return results


def main() -> None:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    run(parser.parse_args())


if __name__ == "__main__":
    main()
