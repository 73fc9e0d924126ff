"""TaskSampler for other offline meta-RL methods: contexts, whole episodes, returns-to-go and
i.i.d. draws disjoint from an RL batch, on hand-made datasets whose every value is known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from merpo_data import TaskSampler
from merpo_data.behavior import BehaviorRecord
from merpo_data.datasets import ensure_namespaces, write_dataset
from merpo_data.presets import get_preset
from merpo_data.rollouts import Episode

ENV = "merpo/PointRobotWind-v0"
# task -> episode lengths; rewards are 100 * task + 10 * episode + step, so every
# transition is recognisable and every return-to-go can be written down.
LENGTHS = {5: (3, 5, 2), 6: (4, 1)}


def _episode(task: int, episode: int, length: int) -> Episode:
    steps = np.arange(length)
    obs = np.stack([np.full(length + 1, task), np.arange(length + 1)], axis=1).astype(float)
    obs[:, 0] += episode / 10
    return Episode(
        observations=obs,
        actions=np.zeros((length, 2), dtype=np.float32),
        rewards=(100 * task + 10 * episode + steps).astype(float),
        terminations=steps == length - 1,
        truncations=np.zeros(length, dtype=bool),
        infos={"sparse_reward": -steps.astype(float)},
    )


@pytest.fixture(scope="module")
def sampler(tmp_path_factory):
    import os

    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path_factory.mktemp("hand-made"))
    try:
        ensure_namespaces(ENV)
        rec = BehaviorRecord(0, np.array([0, 1]), np.array([-30.0, -8.0]), -31.0, {})
        for task, lengths in LENGTHS.items():
            episodes = [_episode(task, e, n) for e, n in enumerate(lengths)]
            write_dataset(ENV, task, "medium", episodes, rec, get_preset(ENV, "test"), 0)
        yield TaskSampler(ENV, tasks=list(LENGTHS), quality="medium", preset="test")
    finally:
        if before is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = before


def _decode(reward: float) -> tuple[int, int, int]:
    """(task, episode, step) of a hand-made reward."""
    r = int(round(float(reward)))
    return r // 100, (r % 100) // 10, r % 10


def test_returns_to_go_and_infos_per_transition(sampler):
    expected = []
    for task, lengths in LENGTHS.items():
        for e, n in enumerate(lengths):
            rewards = 100 * task + 10 * e + np.arange(n)
            expected.extend(rewards[::-1].cumsum()[::-1])
    np.testing.assert_allclose(sampler.returns_to_go.numpy(), expected)
    assert sampler.infos["sparse_reward"].shape == sampler.rewards.shape
    steps = sampler.timesteps.numpy()
    np.testing.assert_array_equal(sampler.infos["sparse_reward"].numpy(), -steps)


def test_contexts_are_consecutive_steps_of_one_episode_masked_at_its_end(sampler):
    g = torch.Generator().manual_seed(0)
    ctx = sampler.sample_contexts(64, 4, generator=g)
    assert ctx.observations.shape == (2, 64, 4, 2) and ctx.actions.shape == (2, 64, 4, 2)
    for name in ("rewards", "terminations", "returns_to_go", "timesteps", "mask"):
        assert getattr(ctx, name).shape == (2, 64, 4), name
    assert ctx.episode_ids.shape == (2, 64) and ctx.mask.dtype == torch.bool
    seen_partial = False
    for pos, task in enumerate(LENGTHS):
        for row in range(64):
            episode = int(ctx.episode_ids[pos, row])
            length = LENGTHS[task][episode]
            t0 = int(ctx.timesteps[pos, row, 0])
            mask = ctx.mask[pos, row].tolist()
            assert mask == [t0 + j < length for j in range(4)]
            seen_partial |= not all(mask)
            for j in range(4):
                if mask[j]:
                    assert _decode(ctx.rewards[pos, row, j]) == (task, episode, t0 + j)
                    assert int(ctx.timesteps[pos, row, j]) == t0 + j
                    # the observation of that very step of that episode
                    assert ctx.observations[pos, row, j].tolist() == pytest.approx(
                        [task + episode / 10, t0 + j]
                    )
                    rtg = sum(100 * task + 10 * episode + k for k in range(t0 + j, length))
                    assert float(ctx.returns_to_go[pos, row, j]) == pytest.approx(rtg)
                else:
                    assert ctx.rewards[pos, row, j] == 0 and ctx.returns_to_go[pos, row, j] == 0
    assert seen_partial  # episodes of 1-5 steps: some windows run past the end


def test_whole_episodes_with_returns_to_go(sampler):
    g = torch.Generator().manual_seed(1)
    batch = sampler.sample_episodes(32, task_indices=torch.tensor([1, 0]), generator=g)
    assert sampler.max_episode_length == 5
    assert batch.observations.shape == (2, 32, 5, 2) and batch.mask.shape == (2, 32, 5)
    for pos, task in enumerate((6, 5)):
        ids = batch.episode_ids[pos]
        assert set(ids.tolist()) == set(range(len(LENGTHS[task])))  # 32 draws hit them all
        for row, episode in enumerate(ids.tolist()):
            length = LENGTHS[task][episode]
            assert batch.mask[pos, row].tolist() == [j < length for j in range(5)]
            rewards = 100 * task + 10 * episode + np.arange(length)
            assert float(batch.returns_to_go[pos, row, 0]) == pytest.approx(rewards.sum())
            np.testing.assert_allclose(batch.rewards[pos, row, :length].numpy(), rewards)
            assert batch.timesteps[pos, row, :length].tolist() == list(range(length))
            assert bool(batch.terminations[pos, row, length - 1])


def test_iid_draws_disjoint_from_an_rl_batch(sampler):
    g = torch.Generator().manual_seed(2)
    sizes = sampler.sizes.tolist()  # (10, 5)
    rl = sampler.draw_indices(3, generator=g)
    # duplicates in the excluded batch are fine
    rl = torch.cat([rl, rl[:, :1]], dim=1)
    context = sampler.draw_indices(4000, generator=g, exclude=rl)
    assert context.shape == (2, 4000)
    for pos in range(2):
        offset = int(sampler.offsets[pos])
        allowed = set(range(offset, offset + sizes[pos])) - set(rl[pos].tolist())
        # never an excluded transition, every other one of the task drawn
        assert set(context[pos].tolist()) == allowed
    batch = sampler.gather(context)
    assert batch.observations.shape == (2, 4000, 2)
    # plain draws are sample()'s draws
    a = sampler.sample(8, generator=torch.Generator().manual_seed(3))
    b = sampler.gather(sampler.draw_indices(8, generator=torch.Generator().manual_seed(3)))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_exclude_must_leave_something(sampler):
    everything = torch.arange(5).view(1, 5) + sampler.offsets[1]
    with pytest.raises(ValueError, match="covers every transition"):
        sampler.draw_indices(2, task_indices=torch.tensor([1]), exclude=everything)
    with pytest.raises(ValueError, match="other tasks"):
        sampler.draw_indices(2, task_indices=torch.tensor([0]), exclude=everything)
