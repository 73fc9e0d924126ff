"""Task slices (torchrun): slots [start, stop) of a task batch, computed by themselves, give
the rows a single process computes for the whole batch (same generator states)."""

from __future__ import annotations

import pytest
import torch
from merpo_agent.behavior_cloning import BehaviorCloning
from merpo_agent.config import RolloutConfig
from merpo_agent.dynamics import DynamicsEnsemble
from merpo_agent.meta_policy import MetaLearner
from merpo_agent.model_buffer import ModelBuffer
from merpo_agent.rac_config import RACConfig
from merpo_agent.rac_loop import TaskData, rac_updates
from merpo_agent.task_learners import TaskLearners
from merpo_agent.task_slice import TaskSlice, device_chunk_size, task_chunks
from merpo_agent.transitions import TransitionBatch

PRW = "merpo/PointRobotWind-v0"
SLICES = [(0, 2), (2, 3)]  # uneven, as 3 slots over 2 ranks


def test_draw_cuts_the_whole_batch_draw():
    whole = torch.rand((3, 5), generator=torch.Generator().manual_seed(4))
    for lo, hi in SLICES:
        part = TaskSlice(lo, hi, 3).draw(
            lambda s: torch.rand(s, generator=torch.Generator().manual_seed(4)), (hi - lo, 5)
        )
        assert torch.equal(part, whole[lo:hi])
    with pytest.raises(ValueError, match="must lead with 2 tasks"):
        TaskSlice(0, 2, 3).draw(torch.rand, (3, 5))
    with pytest.raises(ValueError, match="start <= stop"):
        TaskSlice(2, 1, 3)


def test_task_chunks_cover_the_batch_in_order_and_the_device_picks_their_size():
    assert [(c.start, c.stop) for c in task_chunks(5, 2)] == [(0, 2), (2, 4), (4, 5)]
    assert [c.size for c in task_chunks(8, 3)] == [3, 3, 2] and task_chunks(0, 4) == []
    assert all(c.total == 8 for c in task_chunks(8, 8)) and len(task_chunks(8, 9)) == 1
    with pytest.raises(ValueError, match="chunk size must be >= 1"):
        task_chunks(4, 0)
    # a GPU keeps the whole batch in one op; a CPU as many tasks as fit the weight budget
    assert device_chunk_size("cuda", 40, 10**9, 1) == 40
    assert device_chunk_size("cpu", 40, 1000, 8000) == 8
    assert device_chunk_size("cpu", 4, 1000, 8000) == 4
    assert device_chunk_size("cpu", 40, 10**9, 8000) == 1


def test_model_step_and_buffer_sample_of_a_slice_equal_the_whole_rows():
    torch.manual_seed(0)
    model = DynamicsEnsemble(3, 2, 2, ensemble=3, elites=2, hidden=8, hidden_layers=1)
    obs, act = torch.randn(3, 7, 2), torch.rand(3, 7, 2) * 2 - 1
    whole = model.step(obs, act, generator=torch.Generator().manual_seed(1))
    buffer = ModelBuffer(3, 16, 2, 2)
    buffer.push(TransitionBatch(obs, act, torch.randn(3, 7), obs + 1, torch.zeros(3, 7)))
    rows = buffer.sample(5, torch.Generator().manual_seed(2))
    for lo, hi in SLICES:
        part_model = model.empty_like(hi - lo)
        part_model.copy_from_(model, torch.arange(lo, hi))
        cut = TaskSlice(lo, hi, 3)
        nxt, rew = part_model.step(
            obs[lo:hi], act[lo:hi], generator=torch.Generator().manual_seed(1), task_slice=cut
        )
        torch.testing.assert_close(nxt, whole[0][lo:hi], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(rew, whole[1][lo:hi], rtol=1e-6, atol=1e-6)
        part_buffer = ModelBuffer(hi - lo, 16, 2, 2)
        part_buffer.push(TransitionBatch(*(f[lo:hi] for f in (
            obs, act, buffer.rewards[:, :7], obs + 1, torch.zeros(3, 7)))))
        part_rows = part_buffer.sample(5, torch.Generator().manual_seed(2), task_slice=cut)
        assert torch.equal(part_rows.observations, rows.observations[lo:hi])
        assert torch.equal(part_rows.rewards, rows.rewards[lo:hi])


def test_rac_updates_of_slices_equal_the_whole_batch(point_robot_store):
    from merpo_data import TaskSampler
    from merpo_envs import get_meta_info

    sampler = TaskSampler(PRW, tasks=[0, 1, 2, 3], quality="medium", preset="test")
    info = get_meta_info(PRW)
    obs_dim, act_dim = sampler.obs_dim, sampler.act_dim
    rac = RACConfig(hidden=16, hidden_layers=1, batch_size=16, cql_uniform_actions=2,
                    cql_policy_actions=2)
    rollout_cfg = RolloutConfig(length=2, batch_size=4, every=1, capacity=64)
    torch.manual_seed(0)
    meta = MetaLearner(rac, obs_dim, act_dim)
    models = DynamicsEnsemble(3, obs_dim, act_dim, ensemble=3, elites=2, hidden=8,
                              hidden_layers=1)
    bc = BehaviorCloning(3, obs_dim, act_dim, hidden=8, hidden_layers=1)
    batch = torch.tensor([3, 0, 2])  # the task batch: positions in the sampler

    def run(lo: int, hi: int):
        learners = TaskLearners(rac, obs_dim, act_dim, hi - lo,
                                generator=torch.Generator().manual_seed(11))
        learners.init_from_meta(meta.policy, meta.q)
        part = models.empty_like(hi - lo)
        part.copy_from_(models, torch.arange(lo, hi))
        cut = None if (lo, hi) == (0, 3) else TaskSlice(lo, hi, 3)
        data = TaskData(sampler, batch, part, info.terminated_torch, task_slice=cut)
        buffer = ModelBuffer(hi - lo, 64, obs_dim, act_dim)
        metrics, last = rac_updates(
            learners, data, buffer, 3, rollout_cfg, meta.policy, bc.select(torch.arange(lo, hi)),
            torch.Generator().manual_seed(5),
        )
        return learners, metrics, last

    whole, whole_metrics, whole_last = run(0, 3)
    for lo, hi in SLICES:
        part, metrics, last = run(lo, hi)
        torch.testing.assert_close(last.observations, whole_last.observations[lo:hi])
        for name in ("critic_loss", "actor_loss", "lam", "beta"):
            torch.testing.assert_close(metrics[name], whole_metrics[name][lo:hi], msg=name)
        for (name, p), q in zip(part.actor.named_parameters(), whole.actor.parameters(),
                                strict=True):
            torch.testing.assert_close(p, q[lo:hi], rtol=1e-5, atol=1e-6, msg=name)
        # and the learners moved: the comparison is not of untouched copies of pi_c
        assert not torch.allclose(part.actor.trunk.net[0].weight,
                                  meta.policy.trunk.net[0].weight.expand(hi - lo, -1, -1))
