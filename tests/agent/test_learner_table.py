"""Persistent per-task learners (Alg. 2 line 1): TaskAdam and the LearnerTable."""

from __future__ import annotations

import pytest
import torch
from merpo_agent.behavior_cloning import BehaviorCloning
from merpo_agent.learner_table import LearnerTable
from merpo_agent.meta_policy import MetaLearner
from merpo_agent.optimizers import TaskAdam
from merpo_agent.rac_config import RACConfig
from merpo_agent.task_learners import TaskLearners, UpdateNoise
from merpo_agent.transitions import TransitionBatch

OBS, ACT, N = 3, 2, 4


def test_task_adam_equals_torch_adam_per_task_and_counts_steps_per_task():
    torch.manual_seed(0)
    p = torch.randn(3, 5, requires_grad=True)
    reference = [p[i].detach().clone().requires_grad_(True) for i in range(3)]
    ours = TaskAdam([p], lr=1e-2, num_tasks=3)
    theirs = [torch.optim.Adam([r], lr=1e-2) for r in reference]
    for _ in range(4):
        g = torch.randn(3, 5)
        p.grad = g.clone()
        ours.step()
        for i in range(3):
            reference[i].grad = g[i].clone()
            theirs[i].step()
    for i in range(3):
        assert torch.allclose(p[i], reference[i], atol=1e-6), i
    assert torch.equal(ours.steps, torch.full((3,), 4.0))
    ours.reset()
    assert torch.equal(ours.steps, torch.zeros(3)) and not ours.exp_avg[0].any()
    with pytest.raises(ValueError, match="task axis"):
        TaskAdam([torch.zeros(2, 5)], lr=1e-3, num_tasks=3)


def config() -> RACConfig:
    return RACConfig.for_algo(
        "merpo", hidden=16, hidden_layers=2, batch_size=16, critic_lr=3e-3, actor_lr=3e-3,
        cql_uniform_actions=2, cql_policy_actions=2, target_divergence=-1.0,
    )


def step_inputs(cfg: RACConfig, steps: int, seed: int):
    """Per step, for all N tasks: a real and a model batch and the update noise."""
    g = torch.Generator().manual_seed(seed)

    def batch(n: int) -> TransitionBatch:
        return TransitionBatch(
            torch.randn(N, n, OBS, generator=g), torch.rand(N, n, ACT, generator=g) * 2 - 1,
            torch.randn(N, n, generator=g), torch.randn(N, n, OBS, generator=g),
            torch.zeros(N, n),
        )

    out = []
    for _ in range(steps):
        real, model = batch(cfg.real_batch_size), batch(cfg.model_batch_size)
        noise = UpdateNoise.draw(N, cfg.batch_size, cfg.model_batch_size, ACT, 2, 2, "cpu", g)
        out.append((real, model, noise))
    return out


def rows(items, index: torch.Tensor):
    return type(items)(*(x[index] for x in items))


def test_a_task_visited_twice_continues_where_it_stopped():
    """Task 2 is in the batch [2, 0] for J steps, then [1, 2] for J more (other slot, other
    neighbour): its learner equals one single-task learner run for 2J steps.

    To float rounding only: CPU kernels of exp / log / softplus take SIMD or scalar paths
    depending on a tensor's size, so a task batched with others may differ from a task run
    alone in the last bits (seen: 1e-9 after one step). The table's own bookkeeping is
    bit-exact (next test)."""
    cfg, j = config(), 3
    torch.manual_seed(0)
    meta = MetaLearner(cfg, OBS, ACT)
    bc = BehaviorCloning(N, OBS, ACT, hidden=8, hidden_layers=1)
    table = LearnerTable(TaskLearners(cfg, OBS, ACT, N))
    table.initialize(meta.policy, meta.q)
    working = TaskLearners(cfg, OBS, ACT, 2)
    single = TaskLearners(cfg, OBS, ACT, 1)
    LearnerTable(TaskLearners(cfg, OBS, ACT, 1)).gather_into(single, torch.tensor([0]))
    table_one = LearnerTable(single)  # the single learner starts as every table row does
    table_one.initialize(meta.policy, meta.q)
    inputs = step_inputs(cfg, 2 * j, seed=1)
    visits = [torch.tensor([2, 0]), torch.tensor([1, 2])]
    for v, batch_rows in enumerate(visits):
        table.gather_into(working, batch_rows)
        for real, model, noise in inputs[v * j : (v + 1) * j]:
            working.update(rows(real, batch_rows), rows(model, batch_rows), meta.policy,
                           bc.select(batch_rows), noise=rows(noise, batch_rows))
        table.scatter_from(working, batch_rows)
    two = torch.tensor([2])
    for real, model, noise in inputs:
        single.update(rows(real, two), rows(model, two), meta.policy, bc.select(two),
                      noise=rows(noise, two))
    for ours, reference in zip(
        table.learners.persistent_tensors(), single.persistent_tensors(), strict=True
    ):
        assert torch.allclose(ours[2:3], reference, atol=1e-6, rtol=1e-5)
    assert table.learners.critic_optimizer.steps.tolist() == [j, j, 2 * j, 0]
    # the untouched task 3 is still the initial pi_c / Q_meta with fresh duals
    fresh = LearnerTable(TaskLearners(cfg, OBS, ACT, 1))
    fresh.initialize(meta.policy, meta.q)
    for ours, reference in zip(
        table.learners.persistent_tensors(), fresh.learners.persistent_tensors(), strict=True
    ):
        assert torch.equal(ours[3:4], reference)


def test_gather_and_scatter_are_bit_exact_against_uninterrupted_training():
    """The same two tasks in the same slots, trained 2J steps without interruption, or J
    steps, written back, another batch trained in between, gathered again and J more steps:
    identical bits (parameters, targets, Adam moments and steps, duals)."""
    cfg, j = config(), 3
    torch.manual_seed(0)
    meta = MetaLearner(cfg, OBS, ACT)
    bc = BehaviorCloning(N, OBS, ACT, hidden=8, hidden_layers=1)
    inputs = step_inputs(cfg, 3 * j, seed=2)
    table = LearnerTable(TaskLearners(cfg, OBS, ACT, N))
    table.initialize(meta.policy, meta.q)
    working = TaskLearners(cfg, OBS, ACT, 2)
    straight = TaskLearners(cfg, OBS, ACT, 2)
    straight.init_from_meta(meta.policy, meta.q)
    ours, other = torch.tensor([1, 3]), torch.tensor([0, 2])
    schedule = [ours] * j + [other] * j + [ours] * j
    for k, (batch_rows, (real, model, noise)) in enumerate(zip(schedule, inputs, strict=True)):
        if k % j == 0:
            table.gather_into(working, batch_rows)
        working.update(rows(real, batch_rows), rows(model, batch_rows), meta.policy,
                       bc.select(batch_rows), noise=rows(noise, batch_rows))
        if k % j == j - 1:
            table.scatter_from(working, batch_rows)
        if batch_rows is ours:
            straight.update(rows(real, ours), rows(model, ours), meta.policy, bc.select(ours),
                            noise=rows(noise, ours))
    for mine, reference in zip(
        table.learners.persistent_tensors(), straight.persistent_tensors(), strict=True
    ):
        assert torch.equal(mine[ours], reference)


def test_reinitialising_each_visit_would_differ():
    """The exactness above is not vacuous: a learner restarted from pi_c at its second visit
    ends elsewhere than the persistent one."""
    cfg, j = config(), 3
    torch.manual_seed(0)
    meta = MetaLearner(cfg, OBS, ACT)
    bc = BehaviorCloning(N, OBS, ACT, hidden=8, hidden_layers=1)
    inputs = step_inputs(cfg, 2 * j, seed=1)
    idx = torch.tensor([2])
    persistent, restarted = TaskLearners(cfg, OBS, ACT, 1), TaskLearners(cfg, OBS, ACT, 1)
    for learner in (persistent, restarted):
        learner.init_from_meta(meta.policy, meta.q)
    for k, (real, model, noise) in enumerate(inputs):
        if k == j:
            restarted.init_from_meta(meta.policy, meta.q)
        for learner in (persistent, restarted):
            learner.update(rows(real, idx), rows(model, idx), meta.policy, bc.select(idx),
                           noise=rows(noise, idx))
    assert not torch.equal(persistent.lam, restarted.lam)
    first = (persistent.actor.trunk.net[0].weight, restarted.actor.trunk.net[0].weight)
    assert not torch.equal(*first)


def test_rows_must_match_the_working_slots():
    cfg = config()
    table = LearnerTable(TaskLearners(cfg, OBS, ACT, N))
    with pytest.raises(ValueError, match="one task per slot"):
        table.gather_into(TaskLearners(cfg, OBS, ACT, 2), torch.tensor([0, 1, 2]))
