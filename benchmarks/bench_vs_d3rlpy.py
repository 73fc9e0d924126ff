"""Speed against the field, same run: merpo's COMBO and MerPO updates vs d3rlpy's CQL update.

All at the same sizes: actor and twin critics 3 x 256, batch 256, 17-d observations and
6-d actions, one intra-op thread, 10 sampled actions per proposal in the conservative
term. Timed side by side in the same rounds with a 2048^3 float32 matmul, the machine's
yardstick:

- ``merpo combo``: ``merpo_agent.task_learners.TaskLearners`` with
  ``RACConfig.for_algo("combo")``, T = 1 (128 real + 128 model rows);
- ``merpo merpo``: the same with ``RACConfig.for_algo("merpo")`` (Eq. 9: the meta-policy
  and behavior-policy regularizers too);
- ``d3rlpy cql``: ``d3rlpy.algos.CQL`` (its defaults otherwise: 10 uniform + 10 + 10 policy
  actions, learned temperature and Lagrange alpha), its implementation's ``update`` on a
  batch already on the device, as merpo's update gets one.

Printed per update: ms, the speed-up over d3rlpy, the matmul FLOPs actually run (torch's
FLOP counter; merpo's also counted analytically, ``flops.py``) and that FLOP rate as a
fraction of the matmul's. d3rlpy is an optional bench dependency (``pip install d3rlpy``,
never a package dependency): without it the line reads "d3rlpy: not installed" and the
rest still runs.

``--profile`` adds where merpo COMBO's update spends its time, by kind of op. Measured on
the shared 2-core CPU (one thread, load average about 6): matmuls 78%, ReLU backward 5%
and forward 3%, the bias broadcast copy inside ``baddbmm`` 5%, bias-gradient sums 2%,
everything else (small ops, autograd, Adam) 7%; the big non-matmul passes are over the
critics' 2816-row activations (256 batch rows + 128 model states x 20 CQL(H) actions) in
``merpo_data.networks``, none in the loss math. The update runs at about 65-70% of the
matmul's FLOP rate, while d3rlpy's CQL does about 2.7x its matmul FLOPs (256 states x 30
sampled actions): even at 100% of the matmul rate merpo's COMBO update would be only about
2.9x faster than d3rlpy's, so the speed-up is bounded by the FLOP count, not by overhead.

    python benchmarks/bench_vs_d3rlpy.py [--quick] [--threads 1] [--profile]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import add_common_arguments, compare_times, matmul_fn, print_header, save, setup
from flops import count_executed_flops, rac_update_flops
from merpo_agent.rac_config import RACConfig
from workloads import COMBO_CPU, make_bc_policy, make_learners, make_meta, random_batch

SIZES = COMBO_CPU  # 3 x 256, batch 256, obs 17, act 6, 10 + 10 CQL(H) actions
TARGET_SPEEDUP = 4.0
TARGET_FRACTION = 0.5


def merpo_update(algo: str, device: torch.device):
    """One ``TaskLearners.update`` of one task, and its analytic FLOPs."""
    s = SIZES
    config = RACConfig.for_algo(
        algo, hidden=s.hidden, hidden_layers=s.hidden_layers, batch_size=s.batch_size,
        real_data_ratio=s.real_data_ratio, cql_uniform_actions=s.cql_actions,
        cql_policy_actions=s.cql_actions, discount=0.99,
    )  # fmt: skip
    learners = make_learners(config, s, 1, device)
    meta_policy = make_meta(config, s, device).policy if config.use_meta_regularizer else None
    bc = make_bc_policy(config, s, 1, device) if config.use_meta_regularizer else None
    real = random_batch(1, config.real_batch_size, s.obs_dim, s.act_dim, device)
    model = random_batch(1, config.model_batch_size, s.obs_dim, s.act_dim, device, seed=1)
    flops = rac_update_flops(
        config, s.obs_dim, s.act_dim, 1, meta_policy=meta_policy is not None,
        bc_policy=bc is not None,
    )["total"]  # fmt: skip
    return (lambda: learners.update(real, model, meta_policy, bc)), flops


def d3rlpy_update(device: torch.device):
    """d3rlpy's CQL update at the same sizes, or ``None`` when d3rlpy is not installed."""
    try:
        import d3rlpy
        from d3rlpy.torch_utility import TorchMiniBatch
    except ImportError:
        return None
    s, n = SIZES, 1000
    rng = np.random.default_rng(0)
    dataset = d3rlpy.dataset.MDPDataset(
        observations=rng.standard_normal((n, s.obs_dim)).astype(np.float32),
        actions=rng.uniform(-1, 1, (n, s.act_dim)).astype(np.float32),
        rewards=rng.standard_normal(n).astype(np.float32),
        terminals=np.zeros(n, dtype=np.float32),
        timeouts=(np.arange(n) % 100 == 99).astype(np.float32),
    )
    encoder = d3rlpy.models.VectorEncoderFactory([s.hidden] * s.hidden_layers)
    cql = d3rlpy.algos.CQLConfig(
        actor_encoder_factory=encoder, critic_encoder_factory=encoder,
        batch_size=s.batch_size, n_critics=2, n_action_samples=s.cql_actions,
    ).create(device=f"{device.type}:0" if device.type == "cuda" else "cpu:0")  # fmt: skip
    cql.build_with_dataset(dataset)
    batch = TorchMiniBatch.from_batch(
        batch=dataset.sample_transition_batch(s.batch_size), gamma=0.99,
        compute_returns_to_go=False, device=cql._device,
    )  # fmt: skip
    step = [0]

    def update():
        cql._impl.update(batch, step[0])
        step[0] += 1

    return update, d3rlpy.__version__


PROFILE_GROUPS = {  # aten op -> where its time goes (self time: a child op counts apart)
    "aten::bmm": "matmul", "aten::baddbmm": "matmul", "aten::mm": "matmul",
    "aten::addmm": "matmul", "aten::clamp_min": "ReLU forward",
    "aten::relu": "ReLU forward", "aten::threshold_backward": "ReLU backward",
    "aten::copy_": "copies (bias broadcast inside baddbmm, cat, expand)",
    "aten::sum": "sums (bias gradients, losses)",
}  # fmt: skip


def profile_update(fn, device: torch.device, steps: int = 5) -> dict[str, float]:
    """Self time of one update by kind of op (ms), from ``torch.profiler`` over ``steps``."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(2):
        fn()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            fn()
    groups: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("aten::_foreach"):
            group = "optimizers and Polyak (foreach ops)"
        else:
            group = PROFILE_GROUPS.get(event.key, "everything else (small ops, autograd)")
        groups[group] = groups.get(group, 0.0) + event.self_cpu_time_total / 1e3 / steps
    return dict(sorted(groups.items(), key=lambda item: -item[1]))


def run(args: argparse.Namespace, device: torch.device) -> dict:
    repeats, rounds = (3, 2) if args.quick else (10, 3)
    mm, mm_flops = matmul_fn(device)
    fns = {"matmul_2048": mm}
    analytic = {}
    for algo in ("combo", "merpo"):
        fns[f"merpo_{algo}"], analytic[f"merpo_{algo}"] = merpo_update(algo, device)
    d3 = d3rlpy_update(device)
    if d3 is None:
        print("   d3rlpy: not installed")
    else:
        fns["d3rlpy_cql"], version = d3
        print(f"   d3rlpy {version}")
    counted = {name: count_executed_flops(fn) for name, fn in fns.items() if name != "matmul_2048"}
    times = compare_times(fns, device, warmup=3, repeats=repeats, rounds=rounds)
    mm_rate = mm_flops / times["matmul_2048"]
    print(
        f"\n-- one update, 3x256 nets, batch 256, obs 17, act 6, "
        f"{torch.get_num_threads()} thread(s); best of {rounds} rounds of {repeats}"
    )
    print(f"   matmul 2048^3: {times['matmul_2048'] * 1e3:8.2f} ms ({mm_rate / 1e9:.1f} GFLOP/s)")
    out: dict = {"matmul_ms": times["matmul_2048"] * 1e3, "matmul_gflop_per_s": mm_rate / 1e9}
    for name in fns:
        if name == "matmul_2048":
            continue
        t, flops = times[name], counted[name]
        row = {
            "ms_per_update": t * 1e3,
            "gflop_per_update_counted": flops / 1e9,
            "achieved_gflop_per_s": flops / t / 1e9,
            "fraction_of_matmul_flop_rate": flops / t / mm_rate,
        }
        line = (
            f"   {name:11s}: {t * 1e3:8.2f} ms; {flops / 1e9:.3f} GFLOP counted "
            f"-> {row['achieved_gflop_per_s']:.1f} GFLOP/s = "
            f"{row['fraction_of_matmul_flop_rate']:.0%} of matmul"
        )
        if name in analytic:
            row["gflop_per_update_analytic"] = analytic[name] / 1e9
            line += f" (analytic {analytic[name] / 1e9:.3f} GFLOP)"
        if "d3rlpy_cql" in times and name != "d3rlpy_cql":
            row["speedup_over_d3rlpy_cql"] = times["d3rlpy_cql"] / t
            line += f"; {row['speedup_over_d3rlpy_cql']:.2f}x d3rlpy CQL"
        print(line)
        out[name] = row
    combo = out["merpo_combo"]
    if "speedup_over_d3rlpy_cql" in combo:
        ok = combo["speedup_over_d3rlpy_cql"] >= TARGET_SPEEDUP
        print(
            f"   target merpo COMBO >= {TARGET_SPEEDUP:.0f}x d3rlpy CQL: "
            f"{'meets' if ok else 'MISSES'} ({combo['speedup_over_d3rlpy_cql']:.2f}x)"
        )
    ok = combo["fraction_of_matmul_flop_rate"] >= TARGET_FRACTION
    print(
        f"   target merpo COMBO >= {TARGET_FRACTION:.0%} of the matmul FLOP rate: "
        f"{'meets' if ok else 'MISSES'} ({combo['fraction_of_matmul_flop_rate']:.0%})"
    )
    out["d3rlpy_installed"] = d3 is not None
    if args.profile:
        breakdown = profile_update(fns["merpo_combo"], device)
        total = sum(breakdown.values())
        print(f"\n-- where merpo COMBO's update spends its time (torch.profiler, {total:.1f} ms)")
        for group, ms in breakdown.items():
            print(f"   {group:45s} {ms:8.2f} ms  {ms / total:6.1%}")
        out["merpo_combo_profile_ms"] = breakdown
    return out


def main() -> None:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    parser.add_argument(
        "--profile", action="store_true", help="also break merpo COMBO's update down by op"
    )
    parser.set_defaults(threads=1)
    args = parser.parse_args()
    device = setup(args)
    print_header("merpo COMBO / MerPO update vs d3rlpy CQL, same run", device)
    save("vs_d3rlpy", args, device, run(args, device))


if __name__ == "__main__":
    main()
