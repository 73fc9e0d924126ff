"""Benchmarks 1 (RAC inner step) and 2 (efficiency): ``TaskLearners.update``.

1a. Single-task RAC update at the issue's yardstick sizes (critic / actor 3 x 256, batch
    256 = 128 real + 128 model, 10 uniform + 10 policy actions in the CQL(H) term): ms per
    update next to a plain 2048^3 float32 matmul timed in the same rounds. The ratio
    "update / matmul" travels between machines; the issue's target (half of OfflineRL-Kit
    COMBO's 150 ms on a 2-core CPU whose matmul runs at 21 GFLOP / (0.15 s * 0.67) = 209
    GFLOP/s, i.e. 82 ms per 2048^3 matmul) is <= 75 ms, i.e. <= 0.91 matmuls per update.
    Shown for MerPO's RAC (Eq. 9 with pi_c and pi_hat_beta) and for COMBO (no regularizer).
1b. Inner step batched over T tasks (one update of T slots) vs a Python loop over T
    single-slot learners running the same code, at Table 2 sizes: ms per step, the
    speed-up, task-updates per second, and the T-step / 1-step time ratio.
2.  Efficiency: achieved matmul FLOP/s of each update (FLOPs counted analytically in
    ``flops.py``, checked against torch's FLOP counter) as a fraction of the matmul's.

``--compile`` adds the learners' ``RACConfig.compile`` (torch.compile of the loss math) and
``--cuda-graphs`` their ``RACConfig.cuda_graphs`` (the update replayed as one CUDA graph;
CUDA only), each timed against eager and checked to give the eager parameters after three
steps with the same noise.

    python benchmarks/bench_rac_update.py [--quick] [--device cuda] [--compile]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import time

import torch
from common import (
    add_common_arguments,
    compare_times,
    fmt_ms,
    matmul_fn,
    print_header,
    save,
    setup,
    synchronize,
)
from flops import count_executed_flops, rac_update_flops
from merpo_agent.rac_config import RACConfig
from merpo_agent.task_learners import UpdateNoise
from workloads import (
    COMBO_CPU,
    SMOKE,
    TABLE2,
    make_bc_policy,
    make_learners,
    make_meta,
    random_batch,
)

TARGET_MATMULS_PER_UPDATE = 0.075 / (2.0 * 2048**3 / (21e9 / (0.150 * 0.67)))  # = 0.91


def build_update(sizes, num_tasks, device, algo="merpo", seed=0, **overrides):
    """What one update of ``num_tasks`` slots needs (``overrides``: RACConfig fields)."""
    if algo == "combo":
        overrides = dict(use_meta_regularizer=False, lambda_initial=0.0,
                         auto_tune_lambda=False, **overrides)
    config = sizes.rac_config(**overrides)
    learners = make_learners(config, sizes, num_tasks, device, seed)
    meta = make_meta(config, sizes, device)
    bc = make_bc_policy(config, sizes, num_tasks, device) if algo == "merpo" else None
    real = random_batch(num_tasks, config.real_batch_size, sizes.obs_dim, sizes.act_dim, device)
    model = random_batch(num_tasks, config.model_batch_size, sizes.obs_dim, sizes.act_dim,
                         device, seed=1)
    meta_policy = meta.policy if algo == "merpo" else None
    return dict(config=config, learners=learners, meta_policy=meta_policy, bc=bc, real=real,
                model=model)


def loop_update(sizes, num_tasks, device, algo="merpo"):
    """T single-slot learners of the same code, updated one after the other."""
    parts = [build_update(sizes, 1, device, algo, seed=i) for i in range(num_tasks)]

    def step():
        for p in parts:
            p["learners"].update(p["real"], p["model"], p["meta_policy"], p["bc"])

    return step


def chunked_update(sizes, num_tasks, device):
    """The trainer's per-device choice: chunks of ``device_chunk_size`` tasks, each one
    batched update, one after the other (the whole batch on a GPU)."""
    from merpo_agent.task_slice import device_chunk_size, task_chunks
    from merpo_agent.trainer import CPU_CHUNK_CRITIC_WEIGHTS, critic_weights

    config = sizes.rac_config()
    weights = critic_weights(config.hidden, config.hidden_layers, sizes.obs_dim + sizes.act_dim)
    size = device_chunk_size(device, num_tasks, weights, CPU_CHUNK_CRITIC_WEIGHTS)
    parts = [build_update(sizes, c.size, device, seed=c.start)
             for c in task_chunks(num_tasks, size)]

    def step():
        for p in parts:
            p["learners"].update(p["real"], p["model"], p["meta_policy"], p["bc"])

    return step, size


def batched_update(built, fn=None):
    update = fn or built["learners"].update

    def step():
        update(built["real"], built["model"], built["meta_policy"], built["bc"])

    return step


def single_task(args, device, mm, mm_flops, repeats, rounds):
    print("\n-- 1a/2: single-task update, critic/actor 3x256, batch 256 (128 real + 128 model),"
          " 10+10 CQL(H) actions")
    out = {}
    fns = {"matmul_2048": mm}
    builds = {}
    for algo in ("merpo", "combo"):
        builds[algo] = build_update(COMBO_CPU, 1, device, algo)
        fns[algo] = batched_update(builds[algo])
    times = compare_times(fns, device, warmup=2, repeats=repeats, rounds=rounds)
    mm_rate = mm_flops / times["matmul_2048"]
    print(f"   matmul 2048^3: {fmt_ms(times['matmul_2048'])}  ({mm_rate / 1e9:.1f} GFLOP/s)")
    for algo in ("merpo", "combo"):
        b = builds[algo]
        flops = rac_update_flops(b["config"], COMBO_CPU.obs_dim, COMBO_CPU.act_dim, 1,
                                 meta_policy=algo == "merpo", bc_policy=algo == "merpo")
        executed = count_executed_flops(fns[algo])
        t = times[algo]
        ratio = t / times["matmul_2048"]
        efficiency = flops["total"] / t / mm_rate
        ok = "meets" if ratio <= TARGET_MATMULS_PER_UPDATE else "MISSES"
        print(f"   {algo:6s} update: {fmt_ms(t)} = {ratio:.2f} matmuls "
              f"(target <= {TARGET_MATMULS_PER_UPDATE:.2f}: {ok}); "
              f"{flops['total'] / 1e9:.2f} GFLOP (counter: {executed / 1e9:.2f}) -> "
              f"{flops['total'] / t / 1e9:.1f} GFLOP/s = {efficiency:.0%} of matmul")
        out[algo] = {
            "ms_per_update": t * 1e3,
            "updates_per_s": 1.0 / t,
            "matmuls_per_update": ratio,
            "target_matmuls_per_update": TARGET_MATMULS_PER_UPDATE,
            "meets_target": ratio <= TARGET_MATMULS_PER_UPDATE,
            "gflop_per_update": flops["total"] / 1e9,
            "gflop_per_update_counted_by_torch": executed / 1e9,
            "gflop_by_part": {k: v / 1e9 for k, v in flops.items()},
            "achieved_gflop_per_s": flops["total"] / t / 1e9,
            "fraction_of_matmul_flop_rate": efficiency,
        }
    out["matmul_2048_ms"] = times["matmul_2048"] * 1e3
    out["matmul_gflop_per_s"] = mm_rate / 1e9
    return out


def task_batching(args, device, mm, mm_flops, task_counts, sizes, repeats, rounds):
    print(f"\n-- 1b/2: inner step batched over T vs a loop over T single-task learners, "
          f"{sizes.name}")
    out = {}
    base = None
    for t in task_counts:
        built = build_update(sizes, t, device)
        fns = {"matmul_2048": mm, "batched": batched_update(built)}
        if t > 1:
            fns["loop"] = loop_update(sizes, t, device)
            fns["chunked"], chunk = chunked_update(sizes, t, device)
        times = compare_times(fns, device, warmup=1, repeats=repeats, rounds=rounds)
        flops = rac_update_flops(built["config"], sizes.obs_dim, sizes.act_dim, t)["total"]
        mm_rate = mm_flops / times["matmul_2048"]
        tb = times["batched"]
        base = tb if t == 1 else base
        row = {
            "batched_ms": tb * 1e3,
            "task_updates_per_s_batched": t / tb,
            "batched_steps_per_s": 1.0 / tb,
            "fraction_of_matmul_flop_rate": flops / tb / mm_rate,
            "matmul_2048_ms": times["matmul_2048"] * 1e3,
        }
        line = (f"   T={t:3d}: batched {fmt_ms(tb)} ({t / tb:8.1f} task-updates/s, "
                f"{flops / tb / mm_rate:.0%} of matmul FLOP rate)")
        if "loop" in times:
            row["loop_ms"] = times["loop"] * 1e3
            row["task_updates_per_s_loop"] = t / times["loop"]
            row["speedup_batched_over_loop"] = times["loop"] / tb
            line += f" | loop {fmt_ms(times['loop'])} -> batched is {times['loop'] / tb:.2f}x"
            tc = times["chunked"]
            row["chunk_size"] = chunk
            row["chunked_ms"] = tc * 1e3
            row["speedup_chunked_over_loop"] = times["loop"] / tc
            line += (f" | per-device chunks of {chunk}: {fmt_ms(tc)} -> "
                     f"{times['loop'] / tc:.2f}x the loop")
        if base is not None and t > 1:
            row["time_ratio_vs_T1"] = tb / base
            line += f" | T-step / 1-step = {tb / base:.2f}"
        print(line, flush=True)
        out[f"T={t}"] = row
    return out


def compiled_comparison(args, device, sizes, num_tasks, repeats, rounds):
    """Eager vs the learners' own switches: ``RACConfig.compile`` (torch.compile of the loss
    math) and, on CUDA, ``RACConfig.cuda_graphs`` (the whole update replayed as a graph)."""
    fields = {f.name for f in dataclasses.fields(RACConfig)}
    variants = {"eager": {}}
    if args.compile and "compile" in fields:
        variants["compile"] = {"compile": True}
    if args.cuda_graphs and "cuda_graphs" in fields:
        if device.type == "cuda":
            variants["cuda_graphs"] = {"cuda_graphs": True}
            if args.compile:
                variants["cuda_graphs+compile"] = {"cuda_graphs": True, "compile": True}
        else:
            print("   --cuda-graphs: CUDA only, skipped on", device)
    missing = ({"compile"} if args.compile else set()) | (
        {"cuda_graphs"} if args.cuda_graphs else set())
    if missing - fields:
        print(f"   RACConfig has no {', '.join(sorted(missing - fields))} switch: not timed")
    print(f"\n-- eager vs compiled / CUDA-graph updates, T={num_tasks}, {sizes.name}")
    out: dict = {}
    fns = {}
    for name, overrides in variants.items():
        built = build_update(sizes, num_tasks, device, **overrides)
        step = batched_update(built)
        start = time.perf_counter()
        step()
        step()  # the CUDA-graph path captures after its warm-up steps
        synchronize(device)
        out[f"{name}_first_two_calls_s"] = time.perf_counter() - start
        fns[name] = step
        if name != "eager":
            out[f"{name}_max_param_diff_vs_eager_after_3_steps"] = same_result_check(
                sizes, num_tasks, device, overrides)
    times = compare_times(fns, device, warmup=2, repeats=repeats, rounds=rounds)
    for name, t in times.items():
        speed = times["eager"] / t
        line = f"   {name:22s} {fmt_ms(t)}  ({speed:.2f}x eager"
        if name != "eager":
            diff = out[f"{name}_max_param_diff_vs_eager_after_3_steps"]
            line += (f"; first two calls {out[f'{name}_first_two_calls_s']:.1f} s; "
                     f"max |param diff| vs eager after 3 steps {diff:.1e}")
        print(line + ")", flush=True)
        out[f"{name}_ms"] = t * 1e3
        out[f"{name}_speedup_vs_eager"] = speed
    return out


def same_result_check(sizes, num_tasks, device, overrides) -> float:
    """Three steps with the same noise, eager vs a variant: the largest parameter difference."""
    a = build_update(sizes, num_tasks, device, seed=5)
    b = build_update(sizes, num_tasks, device, seed=5, **overrides)
    b["learners"].load_state_dict(copy.deepcopy(a["learners"].state_dict()))
    c = a["config"]
    g = torch.Generator(device).manual_seed(3)
    for _ in range(3):
        noise = UpdateNoise.draw(num_tasks, c.batch_size, c.model_batch_size, sizes.act_dim,
                                 c.cql_uniform_actions, c.cql_policy_actions, device, g)
        for built in (a, b):
            built["learners"].update(built["real"], built["model"], built["meta_policy"],
                                     built["bc"], noise)
    return max(
        (p - q).abs().max().item()
        for p, q in zip(a["learners"].parameters(), b["learners"].parameters(), strict=True)
    )


def run(args: argparse.Namespace) -> dict:
    device = setup(args)
    print_header("Benchmarks 1+2: RAC update (TaskLearners.update)", device)
    mm, mm_flops = matmul_fn(device)
    cpu = device.type == "cpu"
    repeats, rounds = (2, 2) if args.quick else (3, 3)
    results = {"single_task": single_task(args, device, mm, mm_flops, 2 * repeats, rounds)}
    sizes = TABLE2
    if not cpu:  # a GPU does all of it in seconds
        counts, loop_repeats, loop_rounds = (1, 8, 40), 10, 3
    elif args.quick:
        counts, loop_repeats, loop_rounds = (1, 8), 1, 2
    else:
        counts, loop_repeats, loop_rounds = (1, 8, 40), 1, 2
    results["task_batching"] = task_batching(args, device, mm, mm_flops, counts, sizes,
                                             loop_repeats, loop_rounds)
    results["task_batching_sizes"] = sizes.name
    if not cpu or not args.quick:
        # Small networks: where Python and launch overhead, not FLOPs, dominate.
        results["task_batching_small"] = task_batching(args, device, mm, mm_flops, (1, 8, 40),
                                                       SMOKE, 5, 3)
    if args.compile or args.cuda_graphs:
        t = 1 if cpu else 8
        results["compile"] = compiled_comparison(args, device, COMBO_CPU if cpu else TABLE2,
                                                 t, repeats, rounds)
    save("rac_update", args, device, results)
    return results


def main() -> None:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    run(parser.parse_args())


if __name__ == "__main__":
    main()
