"""The model-rollout FIFO buffer with a task axis: merpo_agent.model_buffer."""

from __future__ import annotations

import pytest
import torch
from merpo_agent.model_buffer import ModelBuffer
from merpo_agent.transitions import TransitionBatch


def rows(t: int, start: int, n: int) -> TransitionBatch:
    """Row j of task i carries the value 100 * i + (start + j) in every field."""
    ids = 100.0 * torch.arange(t)[:, None] + torch.arange(start, start + n)[None, :]
    return TransitionBatch(ids[..., None].expand(t, n, 2), ids[..., None].expand(t, n, 1), ids,
                           ids[..., None].expand(t, n, 2), ids)


def test_fifo_keeps_the_newest_rows_and_wraps():
    buf = ModelBuffer(num_tasks=2, capacity=5, obs_dim=2, act_dim=1)
    buf.push(rows(2, 0, 3))
    assert len(buf) == 3
    buf.push(rows(2, 3, 4))  # 7 rows into 5 slots: rows 0 and 1 are overwritten
    assert len(buf) == 5
    assert sorted(buf.rewards[0].tolist()) == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert sorted(buf.rewards[1].tolist()) == [102.0, 103.0, 104.0, 105.0, 106.0]
    buf.push(rows(2, 7, 12))  # more than the capacity at once: the newest 5 survive
    assert sorted(buf.rewards[0].tolist()) == [14.0, 15.0, 16.0, 17.0, 18.0]


def test_sample_shapes_task_alignment_and_determinism():
    buf = ModelBuffer(num_tasks=3, capacity=50, obs_dim=2, act_dim=1)
    buf.push(rows(3, 0, 20))
    batch = buf.sample(64, generator=torch.Generator().manual_seed(0))
    assert batch.observations.shape == (3, 64, 2) and batch.actions.shape == (3, 64, 1)
    assert batch.rewards.shape == batch.terminations.shape == (3, 64)
    task = torch.div(batch.rewards, 100, rounding_mode="floor")
    assert torch.equal(task, torch.arange(3.0)[:, None].expand(3, 64))  # rows stay in their task
    assert torch.equal(batch.observations[..., 0], batch.rewards)  # fields stay aligned
    assert (batch.rewards % 100).max() < 20  # only filled rows
    again = buf.sample(64, generator=torch.Generator().manual_seed(0))
    assert torch.equal(batch.rewards, again.rewards)


def test_masked_rows_are_never_sampled():
    buf = ModelBuffer(num_tasks=2, capacity=10, obs_dim=2, act_dim=1)
    valid = torch.tensor([[True, False, True, False], [False, False, False, True]])
    buf.push(rows(2, 0, 4), valid=valid)
    batch = buf.sample(500, generator=torch.Generator().manual_seed(0))
    assert set(batch.rewards[0].tolist()) == {0.0, 2.0}
    assert set(batch.rewards[1].tolist()) == {103.0}


def test_bad_use_is_one_clear_error():
    buf = ModelBuffer(num_tasks=2, capacity=10, obs_dim=2, act_dim=1)
    with pytest.raises(RuntimeError, match="empty"):
        buf.sample(4)
    with pytest.raises(ValueError, match="num_tasks"):
        buf.push(rows(3, 0, 2))


def test_state_dict_round_trip():
    buf = ModelBuffer(num_tasks=2, capacity=6, obs_dim=2, act_dim=1)
    buf.push(rows(2, 0, 4))
    other = ModelBuffer(num_tasks=2, capacity=6, obs_dim=2, act_dim=1)
    other.load_state_dict(buf.state_dict())
    buf.push(rows(2, 4, 3))
    other.push(rows(2, 4, 3))
    assert torch.equal(buf.rewards, other.rewards) and len(buf) == len(other) == 6
