"""Benchmark 3: model rollouts and dynamics-ensemble training (Section 4.1, Alg. 1 line 3).

- Rollouts: 50,000 start states x rollout length (Table 2: 1; Table 1: 5) through a task
  model (7 members x 4 x 256, SiLU; Walker dims) with a Table 2 policy (5 x 300):
  transitions per second, and the same 50,000 states split over T = 8 tasks, batched vs a
  loop over 8 single-task rollouts.
  ``DynamicsEnsemble.step`` deals the samples to the elites in equal random shares, so
  each sample runs through its own elite only (fixed shapes, 1/E of the full ensemble's work).
- Training: one Adam step of the proximal objective of Eq. 3-4 (NLL + eta ||theta - phi||^2,
  ``model_training.ChunkedTrainer``) with a fresh 256-sample batch per member drawn on the device,
  for T tasks batched (one op) vs a loop over T single-task models (each with its own Adam)
  vs the per-device chunks ``train_models`` runs (``DynamicsEnsemble.chunk_size``: the whole
  batch on a GPU, chunks of C tasks on a CPU), all three timed side by side.

``--quick``: rollout length 1 and T = 1 only, training T in {1, 8}; the full run adds length
5, the 8-task rollout, training T = 40, and training small (2 x 32) ensembles at T = 1, 8, 40.

    python benchmarks/bench_dynamics.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse

import torch
from common import add_common_arguments, compare_times, fmt_ms, print_header, save, setup
from merpo_agent.holdout import HoldoutSplit
from merpo_agent.model_training import ChunkedTrainer
from merpo_agent.rollout import rollout
from workloads import (
    SMOKE,
    TABLE2,
    SyntheticTaskSampler,
    make_dynamics,
    make_learners,
    terminated_fn,
)

START_STATES = 50_000


def rollout_benchmark(device, lengths, task_counts, repeats, rounds):
    sizes = TABLE2
    print(f"\n-- rollouts: {START_STATES} start states, dynamics {sizes.dyn_ensemble}x"
          f"{sizes.dyn_layers}x{sizes.dyn_hidden}, policy {sizes.hidden_layers}x{sizes.hidden}")
    term = terminated_fn()
    out = {}
    g = torch.Generator(device).manual_seed(0)
    for tasks in task_counts:
        per_task = START_STATES // tasks
        model = make_dynamics(sizes, tasks, device)
        learners = make_learners(sizes.rac_config(), sizes, tasks, device)
        start = torch.randn(tasks, per_task, sizes.obs_dim, device=device)

        def policy(obs, learners=learners):
            return learners.act(obs, generator=g)

        for length in lengths:
            fns = {"model.step": lambda m=model, s=start, n=length, p=policy:
                   rollout(m, p, s, n, term, g)}
            if tasks > 1:
                singles = [make_dynamics(sizes, 1, device, seed=i) for i in range(tasks)]
                actors = [make_learners(sizes.rac_config(), sizes, 1, device, i)
                          for i in range(tasks)]

                def loop(singles=singles, actors=actors, s=start, n=length):
                    for i, (m, a) in enumerate(zip(singles, actors, strict=True)):
                        rollout(m, lambda o, a=a: a.act(o, generator=g), s[i:i + 1], n, term, g)

                fns["loop_over_tasks"] = loop
            times = compare_times(fns, device, warmup=1, repeats=repeats, rounds=rounds)
            rows = START_STATES * length
            base = times["model.step"]
            key = f"T={tasks},length={length}"
            out[key] = {name: {"ms": t * 1e3, "transitions_per_s": rows / t}
                        for name, t in times.items()}
            line = (f"   T={tasks} x {per_task} states, length {length}: "
                    f"{fmt_ms(base)} ({rows / base / 1e3:8.1f} k transitions/s)")
            if "loop_over_tasks" in times:
                speed = times["loop_over_tasks"] / base
                out[key]["speedup_batched_over_loop"] = speed
                line += (f" | loop over tasks {fmt_ms(times['loop_over_tasks'])} -> batched "
                         f"{speed:.2f}x")
            print(line, flush=True)
    return out


def training_benchmark(device, task_counts, repeats, rounds, sizes=TABLE2):
    print(f"\n-- dynamics training: Adam steps of NLL + eta ||theta - phi||^2, batch 256 per "
          f"member, {sizes.dyn_ensemble}x{sizes.dyn_layers}x{sizes.dyn_hidden} "
          f"({sizes.name})")
    out = {}
    base = None
    for tasks in task_counts:
        sampler = SyntheticTaskSampler(tasks, sizes.obs_dim, sizes.act_dim, 10_000, device)
        g = torch.Generator(device).manual_seed(0)
        split = HoldoutSplit(sampler, generator=g)
        phi = make_dynamics(sizes, 1, device)

        def steps_for(model, task_indices, task_chunk, split=split, g=g, phi=phi):
            trainer = ChunkedTrainer(model, 1e-3, task_chunk)

            def step():
                batch = split.sample_train(256, task_indices, members=model.ensemble,
                                           generator=g)
                trainer.step(batch, eta=0.1, anchor=phi)

            return step, len(trainer.chunks), model.chunk_size(task_chunk)

        every = torch.arange(tasks, device=device)
        fns = {"batched": steps_for(make_dynamics(sizes, tasks, device), every, tasks)[0]}
        if tasks > 1:
            loop_steps = [steps_for(make_dynamics(sizes, 1, device, seed=i),
                                    torch.tensor([i], device=device), 1)[0]
                          for i in range(tasks)]
            fns["loop"] = lambda fs=loop_steps: [f() for f in fs]
            # the per-device choice train_models makes (dynamics.task_chunk = 0)
            fns["chunked"], count, chunk = steps_for(make_dynamics(sizes, tasks, device),
                                                     every, 0)
        times = compare_times(fns, device, warmup=1, repeats=repeats, rounds=rounds)
        tb = times["batched"]
        base = tb if tasks == 1 else base
        row = {"batched_ms": tb * 1e3, "task_steps_per_s_batched": tasks / tb}
        line = f"   T={tasks:3d}: batched {fmt_ms(tb)} ({tasks / tb:8.1f} task-steps/s)"
        if "loop" in times:
            tl, tc = times["loop"], times["chunked"]
            row["loop_ms"] = tl * 1e3
            row["speedup_batched_over_loop"] = tl / tb
            row.update(chunk_size=chunk, chunks=count, chunked_ms=tc * 1e3,
                       speedup_chunked_over_loop=tl / tc)
            line += (f" | loop {fmt_ms(tl)} -> batched is {tl / tb:.2f}x"
                     f" | per-device chunks of {chunk}: {fmt_ms(tc)} -> {tl / tc:.2f}x the loop")
        if tasks > 1 and base is not None:
            row["time_ratio_vs_T1"] = tb / base
            line += f" | T / 1 = {tb / base:.2f}"
        print(line, flush=True)
        out[f"T={tasks}"] = row
    return out


def run(args: argparse.Namespace) -> dict:
    device = setup(args)
    print_header("Benchmark 3: model rollouts and dynamics training", device)
    cpu = device.type == "cpu"
    if args.quick:
        lengths, r_counts, counts = (1,), (1,), (1, 8)
        (r_rep, r_rounds), (t_rep, t_rounds) = (1, 1), (2, 3)
    else:
        lengths, r_counts, counts = (1, 5), (1, 8), (1, 8, 40)
        (r_rep, r_rounds), (t_rep, t_rounds) = ((1, 2), (3, 2)) if cpu else ((5, 3), (20, 3))
    results = {
        "rollouts": rollout_benchmark(device, lengths, r_counts, r_rep, r_rounds),
        "training": training_benchmark(device, counts, t_rep, t_rounds),
    }
    if not args.quick:  # small ensembles: where batching pays on a CPU too
        results["training_small"] = training_benchmark(device, (1, 8, 40), 5, 3, SMOKE)
    save("dynamics", args, device, results)
    return results


def main() -> None:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    run(parser.parse_args())


if __name__ == "__main__":
    main()
