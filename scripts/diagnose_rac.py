"""Diagnose the within-task RAC learner on Point-Robot-Wind TRAINING tasks (no test task).

Runs single-task RAC learners (one per training task, batched over a task axis) from a
random initialisation against a FIXED random meta-policy, and every ``--every`` updates
measures, per task:

- the real-env return of the deterministic policy on the task's OWN environment;
- the learned Q at the dataset's (s, a) against the dataset's discounted Monte-Carlo
  return-to-go (mean and correlation);
- the task model's one-step error on the POLICY's actions (true next state from the env's
  known dynamics) next to its error on the dataset's actions;
- the actor's deviation from the behavior clone (mean |tanh mu_pi - tanh mu_bc| in unit
  actions, and D_beta') and the policy's push at the origin (unit x-action);
- every regularizer and dual: lam, beta, SAC temperature, entropy, Q gap, D_beta, D_meta.

    python scripts/diagnose_rac.py --algo combo --steps 4000 --tasks 0-3
    python scripts/diagnose_rac.py --algo merpo --set rac.target_divergence=1.0

It prints one table row per measurement and writes JSON lines to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch
from merpo_agent.action_scaling import from_unit_actions, to_unit_actions
from merpo_agent.env_eval import evaluate_in_env
from merpo_agent.metrics import MetricsWriter
from merpo_agent.model_buffer import ModelBuffer
from merpo_agent.presets import build_config
from merpo_agent.rac_loop import TaskData, rac_updates
from merpo_agent.task_learners import TaskLearners, twin_q_values
from merpo_agent.trainer import MetaTrainer
from merpo_envs.point_robot_wind import MAX_ACTION, WINDS

ENV = "merpo/PointRobotWind-v0"


def parse_tasks(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out += list(range(int(lo), int(hi or lo) + 1))
    return out


def returns_to_go(sampler, i: int, discount: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dataset (s, a) of task position i and their discounted Monte-Carlo returns-to-go."""
    obs, act, rtg = [], [], []
    for episode in sampler.episodes(i):
        r = np.asarray(episode.rewards, dtype=np.float64)
        g = np.zeros_like(r)
        acc = 0.0
        for t in range(len(r) - 1, -1, -1):
            acc = r[t] + discount * acc
            g[t] = acc
        obs.append(np.asarray(episode.observations)[:-1])
        act.append(np.asarray(episode.actions))
        rtg.append(g)
    return np.concatenate(obs), np.concatenate(act), np.concatenate(rtg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algo", default="merpo")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--tasks", default="0-3")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    tasks = parse_tasks(args.tasks)
    overrides = [f"data.train_tasks={tasks}", f"meta.task_batch_size={len(tasks)}", *args.set]
    cfg = build_config(ENV, args.preset, args.algo, overrides=overrides, seed=args.seed)
    run_dir = tempfile.mkdtemp(prefix="diagnose-")
    trainer = MetaTrainer(cfg, run_dir, progress=False, tensorboard=False, say=lambda s: None)
    trainer.build()
    writer = MetricsWriter(run_dir, tensorboard=False)
    trainer.setup(writer)
    writer.close()
    rac, device = cfg.rac, trainer.device
    sampler = trainer.train_data
    t = len(tasks)
    idx = torch.arange(t)
    learners = TaskLearners(rac, sampler.obs_dim, sampler.act_dim, t, device,
                            generator=torch.Generator(device).manual_seed(args.seed + 1))
    learners.init_from_meta(trainer.meta.policy, trainer.meta.q)  # random pi_c and Q_meta
    buffer = (ModelBuffer(t, cfg.rollout.capacity, sampler.obs_dim, sampler.act_dim, device)
              if rac.use_model else None)
    data = TaskData(sampler, idx, trainer.task_models if rac.use_model else None,
                    trainer.info.terminated_torch)
    regularized = rac.use_meta_regularizer
    bc = trainer.bc_train.select(idx)
    gen = torch.Generator(device).manual_seed(args.seed + 2)
    low, high = sampler.action_low, sampler.action_high

    # fixed evaluation sets per task: dataset (s, a) with returns-to-go
    per_task = [returns_to_go(sampler, i, rac.discount) for i in range(t)]
    n = min(len(p[0]) for p in per_task)
    obs = torch.tensor(np.stack([p[0][:n] for p in per_task]), dtype=torch.float32)
    act = torch.tensor(np.stack([p[1][:n] for p in per_task]), dtype=torch.float32)
    rtg = np.stack([p[2][:n] for p in per_task])
    winds = torch.tensor(WINDS[tasks], dtype=torch.float32)[:, None]

    def true_next(o: torch.Tensor, a_env: torch.Tensor) -> torch.Tensor:
        return o + a_env.clamp(-MAX_ACTION, MAX_ACTION) + winds

    @torch.no_grad()
    def model_error(a_env: torch.Tensor) -> np.ndarray:
        mean, _ = trainer.task_models.predict_elites(obs, a_env)
        pred = obs + mean[..., : sampler.obs_dim].mean(1)
        return (pred - true_next(obs, a_env)).norm(dim=-1).mean(-1).numpy()

    def measure(step: int, metrics: dict) -> dict:
        with torch.no_grad():
            unit = to_unit_actions(act, low, high)
            q = twin_q_values(learners.critic, obs, unit).min(1).values.numpy()
            mean, _ = learners.actor(obs)
            bc_mean, _ = bc(obs)
            pi_env = from_unit_actions(torch.tanh(mean), low, high)
            origin = torch.zeros(t, 1, sampler.obs_dim)
            push = torch.tanh(learners.actor(origin)[0])[:, 0, 0].numpy()
        ret = evaluate_in_env(ENV, tasks, {"pi": lambda o: learners.act(o, deterministic=True)},
                              4, 123, device)["pi"]
        corr = [float(np.corrcoef(q[i], rtg[i])[0, 1]) for i in range(t)]
        row = {
            "step": step, "return": ret.tolist(), "return_mean": float(ret.mean()),
            "q_data": float(q.mean()), "mc_return": float(rtg.mean()),
            "q_mc_corr": float(np.mean(corr)),
            "model_err_data_actions": float(model_error(act).mean()),
            "model_err_policy_actions": float(model_error(pi_env).mean()),
            "dev_from_bc": float((torch.tanh(mean) - torch.tanh(bc_mean)).abs().mean()),
            "push_x_at_origin": float(push.mean()),
        }
        for name in ("lam", "beta", "entropy_temperature", "entropy", "q_gap", "d_beta",
                     "d_beta_prime", "d_meta", "q_policy"):
            if name in metrics:
                row[name] = float(metrics[name].float().mean())
        return row

    rows = []
    t0 = time.perf_counter()
    print(f"algo={args.algo} tasks={tasks} behavior return="
          f"{sampler.dataset_returns.mean().item():.2f} overrides={args.set}")
    for step in range(0, args.steps, args.every):
        metrics, _ = rac_updates(learners, data, buffer, args.every, cfg.rollout,
                                 trainer.meta.policy if regularized else None,
                                 bc if regularized and rac.auto_tune_lambda else None, gen)
        row = measure(step + args.every, metrics)
        rows.append(row)
        print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()
                          if k != "return"}), flush=True)
    print(f"wall {time.perf_counter() - t0:.0f} s")
    if args.out:
        with open(args.out, "w") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
