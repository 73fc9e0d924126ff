"""TaskSampler: shapes, dtypes, devices, rows from the right task, whole episodes, errors."""

from __future__ import annotations

import minari
import numpy as np
import pytest
import torch
from merpo_data import QUALITIES, TaskSampler, TransitionBatch, dataset_id

ENV = "merpo/PointRobotWind-v0"
TASKS = [0, 1, 2, 3, 40, 41]


@pytest.fixture(scope="module")
def sampler(point_robot_store):
    return TaskSampler(ENV, tasks=TASKS, quality="medium", preset="test")


def test_attributes(sampler, point_robot_store):
    assert sampler.env_id == ENV
    assert sampler.tasks == tuple(TASKS)
    assert sampler.num_tasks == 6 and sampler.obs_dim == 2 and sampler.act_dim == 2
    assert sampler.device == torch.device("cpu")
    assert sampler.action_low.dtype == torch.float32
    assert torch.allclose(sampler.action_low, torch.tensor([-0.1, -0.1]))
    assert torch.allclose(sampler.action_high, torch.tensor([0.1, 0.1]))
    # 100 episodes x 25 steps per task with the "test" preset
    assert sampler.sizes.tolist() == [2500] * 6
    assert sampler.offsets.tolist() == [0, 2500, 5000, 7500, 10000, 12500]
    for name in ("observations", "actions", "rewards", "next_observations", "terminations"):
        tensor = getattr(sampler, name)
        assert tensor.dtype == torch.float32 and tensor.shape[0] == 15000
    assert sampler.dataset_returns.shape == (6,) and sampler.dataset_returns.dtype == torch.float32


def test_sample_shapes_dtypes_and_subset(sampler):
    batch = sampler.sample(32)
    assert isinstance(batch, TransitionBatch)
    assert batch.observations.shape == (6, 32, 2)
    assert batch.actions.shape == (6, 32, 2)
    assert batch.rewards.shape == (6, 32)
    assert batch.next_observations.shape == (6, 32, 2)
    assert batch.terminations.shape == (6, 32)
    assert all(x.dtype == torch.float32 and x.device.type == "cpu" for x in batch)
    sub = sampler.sample(5, task_indices=torch.tensor([4, 1]))
    assert sub.observations.shape == (2, 5, 2)


def _rows(batch: TransitionBatch) -> np.ndarray:
    """Each transition as one row (obs, act, reward, next_obs, term)."""
    parts = [
        batch.observations,
        batch.actions,
        batch.rewards[..., None],
        batch.next_observations,
        batch.terminations[..., None],
    ]
    return torch.cat(parts, dim=-1).numpy()


def test_batch_rows_come_from_the_right_task(sampler):
    """Every sampled row is a transition of its own task's dataset and of no other task's."""
    task_sets = [{tuple(r) for r in _rows(sampler.task_transitions(i))} for i in range(6)]
    gen = torch.Generator().manual_seed(0)
    batch = sampler.sample(64, task_indices=torch.tensor([5, 0, 3]), generator=gen)
    for row_pos, task_pos in enumerate([5, 0, 3]):
        rows = _rows(batch)[row_pos]
        assert all(tuple(r) in task_sets[task_pos] for r in rows)
        other = [s for i, s in enumerate(task_sets) if i != task_pos]
        assert not any(tuple(r) in s for r in rows for s in other)


def test_task_transitions_match_minari(sampler):
    """task_transitions(i) are exactly the dataset's episodes, flattened (next obs shifted)."""
    ds = minari.load_dataset(dataset_id(ENV, 40, "medium", "test"))
    episodes = list(ds.iterate_episodes())
    obs = np.concatenate([e.observations[:-1] for e in episodes])
    nxt = np.concatenate([e.observations[1:] for e in episodes])
    trans = sampler.task_transitions(4)
    np.testing.assert_allclose(trans.observations.numpy(), obs, rtol=1e-6)
    np.testing.assert_allclose(trans.next_observations.numpy(), nxt, rtol=1e-6)
    np.testing.assert_allclose(
        trans.actions.numpy(), np.concatenate([e.actions for e in episodes]), rtol=1e-6
    )
    assert len(sampler.episodes(4)) == len(episodes) == 100
    mean_return = np.mean([e.rewards.sum() for e in episodes])
    assert sampler.dataset_returns[4].item() == pytest.approx(mean_return, rel=1e-5)


def test_sampling_is_uniform_over_a_task(sampler):
    gen = torch.Generator().manual_seed(1)
    batch = sampler.sample(20000, task_indices=torch.tensor([2]), generator=gen)
    # The mean sampled reward matches the dataset's mean reward (uniform sampling).
    data = sampler.task_transitions(2).rewards
    assert batch.rewards.mean().item() == pytest.approx(data.mean().item(), abs=0.02)


def test_generator_makes_batches_reproducible(sampler):
    a = sampler.sample(8, generator=torch.Generator().manual_seed(3))
    b = sampler.sample(8, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_quality_per_task_and_order(point_robot_store):
    qualities = ["random", "expert", "mixed", "medium", "expert", "random"]
    s = TaskSampler(ENV, tasks=TASKS, quality=qualities, preset="test")
    assert s.qualities == tuple(qualities)
    expert = TaskSampler(ENV, tasks=[1], quality="expert", preset="test")
    assert torch.equal(s.task_transitions(1).observations, expert.task_transitions(0).observations)


def test_split_names_need_all_tasks(point_robot_store):
    with pytest.raises(ValueError, match="merpo-data generate merpo/PointRobotWind-v0"):
        TaskSampler(ENV, tasks="test", quality="medium", preset="test")


def test_missing_dataset_names_generate_command(point_robot_store):
    with pytest.raises(
        ValueError,
        match=r"merpo-data generate merpo/PointRobotWind-v0 --tasks 7 --qualities expert",
    ):
        TaskSampler(ENV, tasks=[0, 7], quality="expert", preset="test")


def test_missing_datasets_message_gives_ranges_and_the_cli_form_of_build_missing(
    point_robot_store,
):
    # tasks 0-3 and 40-41 are in the store: 4-9 and 42-44 are missing, in --tasks form
    with pytest.raises(ValueError) as info:
        TaskSampler(ENV, tasks=[*range(10), 40, 41, 42, 43, 44], quality="medium", preset="test")
    message = str(info.value)
    assert "--tasks 4-9,42-44 --qualities medium --preset test`" in message
    assert "--set data.build_missing=true" in message


def test_missing_datasets_are_all_named_with_one_command_that_builds_them(point_robot_store):
    from merpo_data import ensure_datasets

    # 0-3 and 40-41 are in the store; of the rest, every dataset is named, in one line.
    with pytest.raises(ValueError) as info:
        TaskSampler(ENV, tasks=[0, 5, 6, 7, 40, 44], quality="expert", preset="test")
    assert str(info.value).startswith(
        "4 dataset(s) missing: merpo/point-robot-wind/task-NN-expert-test-v0 for NN in 5-7,44; "
        "build them all with `merpo-data generate merpo/PointRobotWind-v0 --tasks 5-7,44 "
        "--qualities expert --preset test`"
    )
    # Pairs of several samplers (a run's train and test splits, qualities apart): one line.
    pairs = [(1, "medium"), (8, "medium"), (2, "expert"), (45, "random"), (46, "random")]
    with pytest.raises(ValueError) as info:
        ensure_datasets(ENV, pairs, preset="test")
    message = str(info.value)
    assert message.startswith(
        "3 dataset(s) missing: merpo/point-robot-wind/task-45-random-test-v0, "
        "merpo/point-robot-wind/task-46-random-test-v0, "
        "merpo/point-robot-wind/task-08-medium-test-v0; build them all with "
        "`merpo-data generate merpo/PointRobotWind-v0 --tasks 8,45-46 "
        "--qualities random,medium --preset test`"
    )
    assert "\n" not in message
    ensure_datasets(ENV, [(0, "medium"), (41, "mixed")], preset="test")  # all there: no error


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"tasks": [0], "quality": "great"}, "unknown quality"),
        ({"tasks": [99], "quality": "medium"}, "out of range"),
        ({"tasks": [0, 1], "quality": ["medium"]}, "one per task"),
        ({"tasks": "val", "quality": "medium"}, "'train', 'test'"),
        ({"tasks": [], "quality": "medium"}, "empty task list"),
        ({"tasks": [0, 0], "quality": "medium"}, r"tasks \[0\] listed more than once"),
    ],
)
def test_bad_arguments(point_robot_store, kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TaskSampler(ENV, **kwargs, preset="test")


def test_unknown_env():
    with pytest.raises(ValueError, match="unknown env id"):
        TaskSampler("merpo/Nope-v0", tasks=[0])


def test_all_qualities_load(point_robot_store):
    for q in QUALITIES:
        assert TaskSampler(ENV, tasks=[41], quality=q, preset="test").sizes.tolist() == [2500]


@pytest.mark.gpu
def test_cuda_device(point_robot_store):
    s = TaskSampler(ENV, tasks=[0, 1], quality="medium", device="cuda", preset="test")
    batch = s.sample(4, generator=torch.Generator(device="cuda").manual_seed(0))
    assert all(x.device.type == "cuda" for x in batch)
    assert s.action_low.device.type == "cuda" and s.offsets.device.type == "cuda"


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((-4,), {}, "batch_size must be an integer >= 1, got -4"),
        ((0,), {}, "batch_size must be an integer >= 1, got 0"),
        ((8,), {"task_indices": [6]}, r"positions 0..5 in sampler.tasks .*, got \[6\]"),
        ((8,), {"task_indices": torch.tensor([-1])}, r"got \[-1\]"),
        ((8,), {"task_indices": torch.tensor([[0]])}, "1-D LongTensor"),
    ],
)
def test_bad_draws_are_one_line_value_errors_not_torch_errors(sampler, args, kwargs, match):
    with pytest.raises(ValueError, match=match) as info:
        sampler.sample(*args, **kwargs)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match=match):
        sampler.sample_episodes(*args, **kwargs)
    assert sampler.sample(3, task_indices=[5, 0]).rewards.shape == (2, 3)  # a list is fine
