"""Benchmark 1 (whole meta-iteration): Alg. 2 lines 10-18 for a task batch of T tasks.

One meta-iteration = put the batch's tasks in the learners' slots from pi_c and Q_meta,
then J RAC steps (``merpo_agent.rac_loop.rac_updates``: each step a model rollout of
512 dataset states per task into the model buffer, a buffer sample and one
``TaskLearners.update``), then one meta-policy step (Eq. 10) and one meta-Q averaging
step. Batched over T (one set of learners with T slots, one T-task dynamics ensemble, one
T-task model buffer) vs a Python loop over T single-task copies of the same code (the
meta-policy loss then accumulated task by task before its one step).

Data are synthetic (``workloads.SyntheticTaskSampler``); the dynamics models are untrained
(speed does not depend on the weights). Sizes: Table 2 (5 x 300 networks, 7 x 4 x 256
dynamics, Walker dims) with J = 10; ``--quick`` uses 3 x 256 networks and J = 2.

    python benchmarks/bench_meta_iteration.py [--quick] [--device cuda]
"""

from __future__ import annotations

import argparse

import torch
from common import add_common_arguments, compare_times, fmt_ms, print_header, save, setup
from merpo_agent.config import RolloutConfig
from merpo_agent.meta_policy import meta_policy_loss
from merpo_agent.model_buffer import ModelBuffer
from merpo_agent.rac_loop import TaskData, buffer_capacity, rac_updates
from workloads import (
    COMBO_CPU,
    TABLE2,
    SyntheticTaskSampler,
    make_bc_policy,
    make_dynamics,
    make_learners,
    make_meta,
    terminated_fn,
)


class MetaIteration:
    """The state of a meta-training run with task batch ``num_tasks`` and one iteration."""

    def __init__(self, sizes, num_tasks, inner_steps, device, rows_per_task=10_000,
                 meta=None, sampler=None, task_positions=None, seed=0):
        self.sizes, self.num_tasks, self.inner_steps = sizes, num_tasks, inner_steps
        self.device = device
        self.config = sizes.rac_config()
        self.rollout_cfg = RolloutConfig()  # preset defaults: length 1, 512 states, every step
        self.sampler = sampler or SyntheticTaskSampler(num_tasks, sizes.obs_dim, sizes.act_dim,
                                                       rows_per_task, device, seed)
        if task_positions is None:
            task_positions = torch.arange(num_tasks, device=device)
        self.task_positions = task_positions
        self.learners = make_learners(self.config, sizes, num_tasks, device, seed)
        self.meta = meta or make_meta(self.config, sizes, device)
        self.bc = make_bc_policy(self.config, sizes, num_tasks, device)
        self.models = make_dynamics(sizes, num_tasks, device, seed)
        self.buffer = ModelBuffer(num_tasks, buffer_capacity(inner_steps, self.rollout_cfg),
                                  sizes.obs_dim, sizes.act_dim, device)
        self.data = TaskData(self.sampler, task_positions, self.models, terminated_fn())
        self.generator = torch.Generator(device).manual_seed(seed)

    def inner_loop(self):
        """Slots <- (pi_c, Q_meta); J RAC steps with rollouts. Returns rho_n's states."""
        self.learners.init_from_meta(self.meta.policy, self.meta.q)
        self.buffer.clear()
        _, last = rac_updates(self.learners, self.data, self.buffer, self.inner_steps,
                              self.rollout_cfg, self.meta.policy, self.bc, self.generator)
        return last.observations

    def __call__(self) -> None:
        states = self.inner_loop()
        self.meta.update_policy(self.learners.actor, states, self.learners.lam.detach(),
                                self.learners.alpha)
        self.meta.update_q(self.learners.critic)


class LoopedMetaIteration:
    """The same meta-iteration as T single-task runs of the same code, one after another."""

    def __init__(self, sizes, num_tasks, inner_steps, device):
        self.meta = make_meta(sizes.rac_config(), sizes, device)
        self.tasks = [MetaIteration(sizes, 1, inner_steps, device, meta=self.meta, seed=i)
                      for i in range(num_tasks)]

    def __call__(self) -> None:
        meta, n = self.meta, len(self.tasks)
        meta.policy_optimizer.zero_grad(set_to_none=True)
        for task in self.tasks:
            states = task.inner_loop()
            learners = task.learners
            with torch.no_grad():
                mean, log_std = learners.actor(states)
            loss = meta_policy_loss(meta.policy, mean, log_std, states, learners.lam.detach(),
                                    learners.alpha) / n
            loss.backward()
        meta.policy_optimizer.step()
        with torch.no_grad():
            task_params = [list(t.learners.critic.parameters()) for t in self.tasks]
            means = [torch.stack(ps).mean(0) for ps in zip(*task_params, strict=True)]
            torch._foreach_lerp_(list(meta.q.parameters()), means, meta.config.meta_q_lr)


def run(args: argparse.Namespace) -> dict:
    device = setup(args)
    print_header("Benchmark 1: whole meta-iteration (rollouts + J RAC steps + meta updates)",
                 device)
    cpu = device.type == "cpu"
    if args.quick:
        sizes, inner, counts = COMBO_CPU, 2, (1, 8)
    else:
        sizes, inner, counts = TABLE2, 10, ((1, 8) if cpu else (1, 8, 40))
    repeats, rounds = ((1, 2) if args.quick else (1, 1)) if cpu else (3, 3)
    print(f"   sizes {sizes.name}, J = {inner} inner steps, 512 rollout states per task per "
          f"step")
    results = {"sizes": sizes.name, "inner_steps": inner}
    base = None
    for t in counts:
        fns = {"batched": MetaIteration(sizes, t, inner, device)}
        if t > 1:
            fns["loop"] = LoopedMetaIteration(sizes, t, inner, device)
        times = compare_times(fns, device, warmup=1, repeats=repeats, rounds=rounds)
        tb = times["batched"]
        base = tb if t == 1 else base
        row = {
            "batched_ms": tb * 1e3,
            "meta_iterations_per_s": 1.0 / tb,
            "task_updates_per_s_batched": t * inner / tb,
        }
        line = (f"   T={t:3d}: batched {fmt_ms(tb)} per meta-iteration "
                f"({t * inner / tb:8.1f} task-updates/s)")
        if "loop" in times:
            row["loop_ms"] = times["loop"] * 1e3
            row["task_updates_per_s_loop"] = t * inner / times["loop"]
            row["speedup_batched_over_loop"] = times["loop"] / tb
            line += f" | loop {fmt_ms(times['loop'])} -> batched is {times['loop'] / tb:.2f}x"
        if t > 1 and base is not None:
            row["time_ratio_vs_T1"] = tb / base
            line += f" | T / 1 = {tb / base:.2f}"
        print(line, flush=True)
        results[f"T={t}"] = row
    save("meta_iteration", args, device, results)
    return results


def main() -> None:
    parser = add_common_arguments(argparse.ArgumentParser(description=__doc__.split("\n")[0]))
    run(parser.parse_args())


if __name__ == "__main__":
    main()
