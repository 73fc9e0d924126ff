"""Run every benchmark (``nox -s bench``), each in its own process, and summarise the ratios.

    python benchmarks/run_all.py [--quick] [--device cuda] [--compile] [--cuda-graphs]
                                 [--only rac_update,dynamics]

Benchmarks (the issue's numbering):
  1+2 ``bench_rac_update.py``   RAC update: single-task ms vs a matmul, batched over T vs a
                                 loop over T, achieved FLOP/s as a fraction of the matmul's
  1   ``bench_meta_iteration.py`` whole meta-iteration, batched over T vs a loop over T
  3   ``bench_dynamics.py``      model rollouts (50,000 start states) and dynamics training
  4   ``bench_sac_datagen.py``   batched SAC for data generation vs task by task
  5   ``bench_memory.py``        peak memory of a Table 2 run slice
      ``bench_dataset_load.py``  TaskSampler load: Minari path vs flat cache, cold and warm
      ``bench_vs_d3rlpy.py``     merpo COMBO / MerPO update vs d3rlpy's CQL (optional), 1 thread

Each prints its numbers (ratios measured side by side in one process, absolute numbers,
the device name) and writes ``benchmarks/results/<name>[_cuda].json``; this script adds
``summary[_cuda].json`` with the headline ratios. A separate process per benchmark keeps
peak-memory figures and torch.compile caches from leaking between them. ``--quick`` takes
under 5 minutes on an idle 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import RESULTS_DIR, add_common_arguments, write_results

HERE = Path(__file__).resolve().parent
BENCHMARKS = {  # name -> (script, the name of its results JSON)
    "rac_update": ("bench_rac_update.py", "rac_update"),
    "meta_iteration": ("bench_meta_iteration.py", "meta_iteration"),
    "dynamics": ("bench_dynamics.py", "dynamics"),
    "sac_datagen": ("bench_sac_datagen.py", "bench_sac_datagen"),
    "memory": ("bench_memory.py", "memory"),
    "dataset_load": ("bench_dataset_load.py", "dataset_load"),
    "vs_d3rlpy": ("bench_vs_d3rlpy.py", "vs_d3rlpy"),
}


def forwarded_flags(args: argparse.Namespace, script: Path) -> list[str]:
    """The common flags, restricted to those ``script`` accepts (its --help lists them)."""
    flags = []
    if args.quick:
        flags.append("--quick")
    flags += ["--device", args.device]
    if args.compile:
        flags.append("--compile")
    if args.cuda_graphs:
        flags.append("--cuda-graphs")
    if args.threads is not None:
        flags += ["--threads", str(args.threads)]
    try:
        usage = subprocess.run([sys.executable, str(script), "--help"], capture_output=True,
                               text=True, timeout=120).stdout
    except subprocess.TimeoutExpired:
        return flags
    kept, i = [], 0
    while i < len(flags):
        takes_value = flags[i] in ("--device", "--threads")
        if flags[i] in usage:
            kept += flags[i : i + 1 + takes_value]
        i += 1 + takes_value
    return kept


def get(results: dict, *path, default=None):
    for key in path:
        if not isinstance(results, dict) or key not in results:
            return default
        results = results[key]
    return results


def by_task_count(rows: dict) -> list:
    """``{"T=8": ..., "T=40": ...}`` items in numeric order of T (JSON keys sort as text)."""
    def key(item):
        digits = "".join(ch for ch in item[0].split(",")[0] if ch.isdigit())
        return (int(digits) if digits else 0, item[0])

    return sorted(rows.items(), key=key)


def headline(name: str, r: dict) -> list[str]:
    """The ratios the issue asks for, one line each."""
    lines = []
    if name == "rac_update":
        for algo in ("merpo", "combo"):
            s = get(r, "single_task", algo) or {}
            if s:
                lines.append(
                    f"single-task {algo} update (3x256, batch 256): {s['ms_per_update']:.1f} ms"
                    f" = {s['matmuls_per_update']:.2f} x matmul(2048^3) (target <= "
                    f"{s['target_matmuls_per_update']:.2f}); "
                    f"{s['fraction_of_matmul_flop_rate']:.0%} of matmul FLOP/s")
        for key in ("task_batching", "task_batching_small"):
            for t, row in by_task_count(get(r, key) or {}):
                extra = ""
                if "speedup_batched_over_loop" in row:
                    extra = (f", batched {row['speedup_batched_over_loop']:.2f}x the loop, "
                             f"T-step/1-step {row.get('time_ratio_vs_T1', float('nan')):.2f}")
                lines.append(f"inner step {key} {t}: {row['task_updates_per_s_batched']:.1f} "
                             f"task-updates/s{extra}")
        for k, v in (get(r, "compile") or {}).items():
            if k.endswith("speedup_vs_eager") and not k.startswith("eager"):
                lines.append(f"{k}: {v:.2f}x")
    elif name == "meta_iteration":
        for t, row in by_task_count(r):
            if isinstance(row, dict) and "batched_ms" in row:
                extra = (f", batched {row['speedup_batched_over_loop']:.2f}x the loop"
                         if "speedup_batched_over_loop" in row else "")
                lines.append(f"meta-iteration {t}: {row['batched_ms']:.0f} ms, "
                             f"{row['task_updates_per_s_batched']:.1f} task-updates/s{extra}")
    elif name == "dynamics":
        for key, row in by_task_count(get(r, "rollouts") or {}):
            line = f"rollouts {key}: {row['model.step']['transitions_per_s'] / 1e3:.1f} k/s"
            if "speedup_batched_over_loop" in row:
                line += f", batched {row['speedup_batched_over_loop']:.2f}x the task loop"
            lines.append(line)
        for key, row in by_task_count(get(r, "training") or {}):
            extra = (f", batched {row['speedup_batched_over_loop']:.2f}x the loop"
                     if "speedup_batched_over_loop" in row else "")
            lines.append(f"dynamics training {key}: {row['task_steps_per_s_batched']:.1f} "
                         f"task-steps/s{extra}")
    elif name == "memory":
        lines.append(f"peak {r['memory_kind']}: {r['peak_mib']:.0f} MiB (run adds "
                     f"{r['run_adds_mib']:.0f} MiB), {r['seconds_per_meta_iteration']:.2f} s "
                     f"per meta-iteration (J = {r['inner_steps']})")
    elif name == "dataset_load":
        t, q = r["seconds"], r["ratios"]
        lines.append(f"TaskSampler load, {r['num_datasets']} datasets: warm {t['warm']:.2f} s, "
                     f"Minari path {t['minari']:.1f} s ({q['minari_over_warm']:.0f}x), cold "
                     f"{t['cold']:.1f} s ({q['cold_over_minari']:.2f}x the Minari path); "
                     f"identical arrays: {r['identical_arrays']}")
    elif name == "vs_d3rlpy":
        for key in ("merpo_combo", "merpo_merpo", "d3rlpy_cql"):
            row = r.get(key)
            if row:
                vs = (f", {row['speedup_over_d3rlpy_cql']:.2f}x d3rlpy CQL"
                      if "speedup_over_d3rlpy_cql" in row else "")
                lines.append(f"{key} update: {row['ms_per_update']:.1f} ms, "
                             f"{row['fraction_of_matmul_flop_rate']:.0%} of matmul FLOP/s{vs}")
        if not r.get("d3rlpy_installed"):
            lines.append("d3rlpy: not installed")
    elif name == "sac_datagen" and "env_steps_per_s" in r:
        rates = r["env_steps_per_s"]
        lines.append(f"SAC data generation, {r.get('tasks')} tasks: batched "
                     f"{rates.get('batched', 0):.0f} env steps/s vs per task "
                     f"{rates.get('per_task', 0):.0f} -> "
                     f"{r.get('ratio_batched_over_per_task', 0):.1f}x")
    else:
        for key, value in r.items():
            if key != "meta" and isinstance(value, int | float):
                lines.append(f"{key}: {value:.4g}")
    return lines


def main() -> None:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument("--only", default="", help=f"comma list of: {', '.join(BENCHMARKS)}")
    args = parser.parse_args()
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = sorted(set(chosen) - set(BENCHMARKS))
    if unknown:
        sys.exit(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    suffix = "" if args.device == "cpu" else f"_{args.device.split(':')[0]}"
    summary, status = {}, {}
    start_all = time.perf_counter()
    for name in chosen:
        script_name, result_name = BENCHMARKS[name]
        script = HERE / script_name
        if not script.exists():
            print(f"\n=== {name}: {script.name} not present, skipped", flush=True)
            status[name] = "missing"
            continue
        cmd = [sys.executable, str(script), *forwarded_flags(args, script)]
        print(f"\n$ {' '.join(cmd[1:])}", flush=True)
        start = time.perf_counter()
        code = subprocess.run(cmd, cwd=HERE.parent).returncode
        status[name] = {"returncode": code, "seconds": time.perf_counter() - start}
        result_file = RESULTS_DIR / f"{result_name}{suffix}.json"
        if code == 0 and result_file.exists() and result_file.stat().st_mtime >= start_all:
            summary[name] = headline(name, json.loads(result_file.read_text()))
    total = time.perf_counter() - start_all
    print(f"\n=== Summary ({args.device}{', quick' if args.quick else ''}; {total:.0f} s)")
    for name in chosen:
        state = status[name]
        print(f"{name}: " + (state if isinstance(state, str) else
                             f"exit {state['returncode']}, {state['seconds']:.0f} s"))
        for line in summary.get(name, []):
            print(f"   {line}")
    path = write_results(f"summary{suffix}", {"headlines": summary, "status": status,
                                              "seconds": total, "argv": sys.argv})
    print(f"-> {path}")
    failed = [n for n, s in status.items() if isinstance(s, dict) and s["returncode"] != 0]
    if failed:
        sys.exit(f"benchmark(s) failed: {', '.join(failed)}")


if __name__ == "__main__":
    main()
