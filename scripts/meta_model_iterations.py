"""Task-model error against the number K of meta-model iterations (Eq. 3), then Eq. 4.

On the ``small`` preset's Point-Robot-Wind training tasks (medium data), trains the
meta-model iteration by iteration and, at each K of ``--at``, adapts the task models from it
(Eq. 4, Table 2's 25 steps at lr 1e-4) and prints their held-out MSE (the training data's
held-out split) and their one-step position error against the env's known dynamics
``s' = s + clip(a) + wind``. No return is measured: K is chosen on model error alone.

    python scripts/meta_model_iterations.py --at 100,200,300
"""

from __future__ import annotations

import argparse
import time

import torch
from merpo_agent.dynamics import DynamicsEnsemble, HoldoutSplit
from merpo_agent.meta_model import adapt, meta_iteration
from merpo_agent.presets import build_config
from merpo_agent.trainer import make_sampler
from merpo_envs.point_robot_wind import MAX_ACTION, WINDS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--at", default="100,200,300")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    checkpoints = sorted(int(k) for k in args.at.split(","))
    torch.set_num_threads(1)
    cfg = build_config("merpo/PointRobotWind-v0", "small", "merpo", seed=args.seed)
    sampler = make_sampler(cfg, "train")
    dyn = cfg.dynamics
    gen = torch.Generator().manual_seed(args.seed)
    split = HoldoutSplit(sampler, generator=gen)
    tasks = torch.arange(len(sampler.tasks))
    phi = DynamicsEnsemble.from_config(1, sampler.obs_dim, sampler.act_dim, dyn, device="cpu",
                                       seed=args.seed)
    phi.set_normalizer_stats(*split.input_stats(tasks, pooled=True))
    theta = phi.empty_like(len(tasks))
    winds = torch.tensor(WINDS[list(sampler.tasks)], dtype=torch.float32)[:, None]
    probe = sampler.sample(512, None, torch.Generator().manual_seed(args.seed + 1))
    obs, act = probe.observations, probe.actions  # env units
    start = time.perf_counter()
    print("K  heldout_mse_adapted  position_error  seconds")
    for k in range(1, checkpoints[-1] + 1):
        meta_iteration(phi, theta, split, tasks, dyn, gen)
        if k not in checkpoints:
            continue
        model, metrics = adapt(phi, sampler, tasks, dyn.adaptation_steps, dyn.task_model_lr,
                               dyn.eta, gen, split=split, cfg=dyn, compare_scratch=False)
        with torch.no_grad():
            mean, _ = model.predict_elites(obs, act)
            predicted = obs + mean[..., : sampler.obs_dim].mean(1)
            true = obs + act.clamp(-MAX_ACTION, MAX_ACTION) + winds
            error = (predicted - true).norm(dim=-1).mean().item()
        print(f"{k}  {metrics['heldout_mse_adapted'].mean().item():.5f}  {error:.4f}  "
              f"{time.perf_counter() - start:.0f}", flush=True)


if __name__ == "__main__":
    main()
