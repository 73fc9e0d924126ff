"""The task sampler: the only way the agent reads data, and a way in for other methods.

Loads the transitions of T tasks once onto a torch device as flat tensors with per-task
offsets, and draws batches with a leading task axis, indices drawn on the device:
``observations (T, B, obs_dim)``, ``actions``, ``rewards``, ``next_observations``,
``terminations``. It knows nothing of MerPO.

For other offline meta-RL methods (context encoders such as FOCAL's, sequence models,
advantage-weighted regression) it also keeps each transition's episode and timestep, so
the same datasets (App. A.2.2, "Data collection": whole episodes) give, still as one
batched gather per call:

- :meth:`TaskSampler.sample_contexts`: ``L`` consecutive transitions of one episode per
  row, ``(T, B, L, ...)``, with the episode id, timesteps and a mask past the episode's end;
- :meth:`TaskSampler.sample_episodes`: whole episodes, padded to the longest one;
- ``returns_to_go`` in both, and per transition (:attr:`TaskSampler.returns_to_go`);
- i.i.d. transitions disjoint from a given RL batch (``exclude=`` of
  :meth:`TaskSampler.draw_indices`), for a context that must not overlap it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import numpy as np
import torch
from merpo_envs import get_meta_info

from merpo_data.datasets import generate, is_local
from merpo_data.distributed import check_device
from merpo_data.flat_cache import load_flat
from merpo_data.ids import (
    check_preset,
    check_quality,
    dataset_id,
    missing_datasets_message,
    parse_tasks,
    repeated_tasks,
)
from merpo_data.integrity import open_dataset, read_episodes


class TransitionBatch(NamedTuple):
    """Transitions with optional leading axes (``(T, B, ...)`` from ``sample``), float32."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    terminations: torch.Tensor


class SequenceBatch(NamedTuple):
    """Rows of consecutive transitions of one episode each: ``(T, B, L, ...)``.

    ``mask`` (bool) is False past the episode's end; there the transition fields repeat
    the episode's last transition and ``rewards`` and ``returns_to_go`` are 0.
    ``returns_to_go[..., l]`` is the undiscounted sum of the episode's rewards from that
    step to its end; ``timesteps`` the step within the episode; ``episode_ids`` ``(T, B)``
    the row's episode (its index in the task's Minari dataset).
    """

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    terminations: torch.Tensor
    returns_to_go: torch.Tensor
    timesteps: torch.Tensor
    mask: torch.Tensor
    episode_ids: torch.Tensor


def ensure_datasets(
    env_id: str,
    pairs: Iterable[tuple[int, str]],
    preset: str = "default",
    build_missing: bool = False,
) -> None:
    """Make sure the datasets of ``(task, quality)`` pairs are in the local store.

    A caller that needs several samplers (a run's train and test tasks) passes all their
    pairs at once, so a missing-data error names every missing dataset, with one
    ``merpo-data generate`` command that builds them all (a ``ValueError``). With
    ``build_missing`` they are built instead (one ``generate`` per quality).
    """
    unique = dict.fromkeys((int(t), q) for t, q in pairs)
    missing = [(t, q) for t, q in unique if not is_local(dataset_id(env_id, t, q, preset))]
    if not missing:
        return
    if not build_missing:
        raise ValueError(missing_datasets_message(env_id, missing, preset))
    for quality in sorted({q for _, q in missing}):
        tasks = [t for t, q in missing if q == quality]
        generate(env_id, tasks=tasks, qualities=[quality], preset=preset)


class TaskSampler:
    """Transitions of several tasks of one env, on one device, sampled with a task axis.

    Args:
        env_id: a merpo env id, e.g. ``"merpo/PointRobotWind-v0"``.
        tasks: a task spec as the CLI takes it (``"train"``, ``"test"``, ``"all"``,
            ``"0-7,40-43"``; :func:`merpo_data.ids.parse_tasks`) or a sequence of task
            indices (kept in that order).
        quality: one quality for all tasks, or one per task.
        device: where the tensors live (``cuda`` without CUDA is a one-line error).
        build_missing: build missing datasets (``merpo_data.generate``) instead of raising.
        preset: the data preset that built the datasets (``"test"``: the cheap test
            datasets, ``task-NN-<quality>-test-v0``).
        cache: load each dataset's flat arrays from the cache beside the store
            (:mod:`merpo_data.flat_cache`: built on first use, checked against the
            dataset's content hash and HDF5 file, bit-identical to reading through Minari);
            ``False`` reads every episode through Minari and leaves the cache alone.

    Dataset actions are in env units (not rescaled); ``action_low``/``action_high`` give
    the env's action box. A damaged dataset is one ``DamagedDatasetError`` line naming
    it and the ``merpo-data generate ... --force`` that rebuilds it. ``infos`` holds the
    numeric step infos every dataset stores (``sparse_reward`` on Point-Robot-Wind), flat
    like ``rewards``: index them with :meth:`draw_indices`'s indices.
    """

    def __init__(
        self,
        env_id: str,
        tasks: str | Sequence[int] = "train",
        quality: str | Sequence[str] = "medium",
        device: str | torch.device = "cpu",
        build_missing: bool = False,
        preset: str = "default",
        cache: bool = True,
    ):
        info = get_meta_info(env_id)
        self.env_id = info.env_id
        if isinstance(tasks, str):
            task_list = parse_tasks(tasks, info)
        else:
            task_list = tuple(info.check_task(t) for t in tasks)
        if not task_list:
            raise ValueError(f"{env_id}: empty task list; pass 'train', 'test' or task indices")
        _check_distinct(task_list)
        self.tasks: tuple[int, ...] = tuple(int(t) for t in task_list)
        qualities = [quality] * len(self.tasks) if isinstance(quality, str) else list(quality)
        if len(qualities) != len(self.tasks):
            raise ValueError(
                f"got {len(qualities)} qualities for {len(self.tasks)} tasks; "
                "pass one or one per task"
            )
        self.qualities: tuple[str, ...] = tuple(check_quality(q) for q in qualities)
        self.preset = check_preset(preset)
        self.device = check_device(device)
        self.num_tasks = len(self.tasks)
        self.obs_dim, self.act_dim = info.obs_dim, info.act_dim
        self.dataset_ids = tuple(
            dataset_id(env_id, t, q, preset)
            for t, q in zip(self.tasks, self.qualities, strict=True)
        )
        self._ensure_local(build_missing)

        self.datasets = [open_dataset(i) for i in self.dataset_ids]
        space = self.datasets[0].action_space
        self.action_low = torch.as_tensor(
            np.asarray(space.low), dtype=torch.float32, device=self.device
        )
        self.action_high = torch.as_tensor(
            np.asarray(space.high), dtype=torch.float32, device=self.device
        )

        flat = (lambda ds, i: load_flat(ds, i, _flatten)) if cache else _flatten
        parts = [flat(ds, i) for ds, i in zip(self.datasets, self.dataset_ids, strict=True)]
        sizes = [len(p["rewards"]) for p in parts]
        self.sizes = torch.tensor(sizes, dtype=torch.long, device=self.device)
        self.offsets = torch.tensor(
            np.concatenate([[0], np.cumsum(sizes)[:-1]]), dtype=torch.long, device=self.device
        )
        self._size_list, self._offset_list = sizes, [int(o) for o in self.offsets.cpu()]

        def cat(name: str, dtype=torch.float32, shift=None) -> torch.Tensor:
            arrays = [p[name] + (0 if shift is None else shift[k]) for k, p in enumerate(parts)]
            return torch.as_tensor(np.concatenate(arrays), dtype=dtype, device=self.device)

        self.observations = cat("observations")
        self.actions = cat("actions")
        self.rewards = cat("rewards")
        self.next_observations = cat("next_observations")
        self.terminations = cat("terminations")
        self.returns_to_go = cat("returns_to_go")
        self.dataset_returns = torch.tensor(
            [p["mean_return"] for p in parts], dtype=torch.float32, device=self.device
        )
        # every dataset episode's return, per task (numpy, on the host): the spread of the
        # behavior policy beside a meta-test's
        self.dataset_episode_returns: tuple[np.ndarray, ...] = tuple(
            p["episode_returns"] for p in parts
        )
        shared = set.intersection(*(set(p["infos"]) for p in parts))
        self.infos: dict[str, torch.Tensor] = {
            key: torch.as_tensor(
                np.concatenate([p["infos"][key] for p in parts]), device=self.device
            )
            for key in sorted(shared)
        }
        # Per transition: its timestep, its episode's id, first flat index and length.
        self.timesteps = cat("timesteps", torch.long)
        self.episode_ids = cat("episode_ids", torch.long)
        self._episode_first = cat("episode_first", torch.long, self._offset_list)
        self._episode_length = cat("episode_length", torch.long)
        # Per episode (flat over tasks, task-major): first flat index and length.
        counts = [len(p["first"]) for p in parts]
        self.num_episodes = torch.tensor(counts, dtype=torch.long, device=self.device)
        self._episode_offsets = torch.tensor(
            np.concatenate([[0], np.cumsum(counts)[:-1]]), dtype=torch.long, device=self.device
        )
        self._first = cat("first", torch.long, self._offset_list)
        self._length = cat("length", torch.long)
        self.max_episode_length = int(self._length.max())

    def _ensure_local(self, build_missing: bool) -> None:
        pairs = list(zip(self.tasks, self.qualities, strict=True))
        ensure_datasets(self.env_id, pairs, self.preset, build_missing)

    def _task_rows(self, task_indices: torch.Tensor | None):
        if task_indices is None:
            return None, self.sizes, self.offsets
        task_indices = task_indices.to(self.device)
        return task_indices, self.sizes[task_indices], self.offsets[task_indices]

    def draw_indices(
        self,
        batch_size: int,
        task_indices: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        exclude: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Flat indices ``(T', batch_size)`` of transitions drawn uniformly per task.

        Index the sampler's flat tensors with them (:meth:`gather`, ``returns_to_go``,
        ``infos[...]``). ``exclude`` (``(T', K)`` flat indices of the same tasks, e.g. an
        RL batch's) draws i.i.d. among the task's other transitions only: the result never
        holds an excluded transition. Without ``exclude`` this is exactly :meth:`sample`'s
        draw: ``floor(u * size_i) + offset_i``.
        """
        task_indices = _checked_draw(self, batch_size, task_indices)
        _, sizes, offsets = self._task_rows(task_indices)
        if exclude is not None:
            return self._draw_excluding(batch_size, sizes, offsets, exclude, generator)
        u = torch.rand((sizes.shape[0], batch_size), device=self.device, generator=generator)
        # min(): u * size can round up to size in float32 for large sizes.
        local = torch.minimum((u * sizes.unsqueeze(1)).long(), (sizes - 1).unsqueeze(1))
        return local + offsets.unsqueeze(1)

    def _draw_excluding(self, batch_size, sizes, offsets, exclude, generator) -> torch.Tensor:
        """Uniform over each task's transitions outside ``exclude`` (one sort, one search).

        With ``e_0 < e_1 < ...`` the task's distinct excluded local indices, the ``r``-th
        kept transition (``r`` uniform in ``[0, size - k)``) is ``r + #{j : e_j - j <= r}``.
        """
        exclude = exclude.to(self.device)
        if exclude.dim() != 2 or exclude.shape[0] != sizes.shape[0]:
            raise ValueError(
                f"exclude must be (T', K) flat indices of the same {sizes.shape[0]} tasks, "
                f"got shape {tuple(exclude.shape)}: pass draw_indices(...) of that batch"
            )
        local = (exclude - offsets.unsqueeze(1)).sort(dim=1).values
        if ((local < 0) | (local >= sizes.unsqueeze(1))).any():
            raise ValueError("exclude holds indices of other tasks: pass the same task_indices")
        repeat = torch.zeros_like(local, dtype=torch.bool)
        repeat[:, 1:] = local[:, 1:] == local[:, :-1]
        kept = sizes - (~repeat).sum(dim=1)
        if (kept < 1).any():
            raise ValueError("exclude covers every transition of a task: nothing left to draw")
        never = int(sizes.max()) + local.shape[1] + 1  # above every r: never counted
        steps = torch.arange(local.shape[1], device=self.device)
        adjusted = torch.where(repeat, torch.full_like(local, never), local)
        adjusted = adjusted.sort(dim=1).values
        unique_count = (~repeat).sum(dim=1, keepdim=True)
        adjusted = torch.where(steps < unique_count, adjusted - steps, never)
        u = torch.rand((sizes.shape[0], batch_size), device=self.device, generator=generator)
        r = torch.minimum((u * kept.unsqueeze(1)).long(), (kept - 1).unsqueeze(1))
        skipped = torch.searchsorted(adjusted.contiguous(), r.contiguous(), right=True)
        return r + skipped + offsets.unsqueeze(1)

    def gather(self, index: torch.Tensor) -> TransitionBatch:
        """The transitions at flat indices ``index`` (any shape): fields ``(*index.shape, ...)``."""
        return TransitionBatch(
            self.observations[index],
            self.actions[index],
            self.rewards[index],
            self.next_observations[index],
            self.terminations[index],
        )

    def sample(
        self,
        batch_size: int,
        task_indices: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> TransitionBatch:
        """``batch_size`` transitions per task, uniformly from each task's data.

        ``task_indices`` (LongTensor (T',), positions in ``self.tasks``) picks the tasks;
        default all. Indices are drawn on the device: ``floor(u * size_i) + offset_i``.
        """
        return self.gather(self.draw_indices(batch_size, task_indices, generator))

    def sample_contexts(
        self,
        batch_size: int,
        length: int,
        task_indices: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SequenceBatch:
        """``batch_size`` rows per task of ``length`` consecutive transitions of one episode.

        A row starts at a transition drawn uniformly from the task's data and runs on in
        its episode; steps past the episode's end are masked (``mask`` False). Fields are
        ``(T', batch_size, length, ...)``.
        """
        if length < 1:
            raise ValueError(f"context length must be >= 1, got {length}")
        start = self.draw_indices(batch_size, task_indices, generator)
        steps = torch.arange(length, device=self.device)
        length_ = self._episode_length[start]
        mask = self.timesteps[start].unsqueeze(-1) + steps < length_.unsqueeze(-1)
        last = self._episode_first[start] + length_ - 1
        index = torch.where(mask, start.unsqueeze(-1) + steps, last.unsqueeze(-1))
        return self._sequence(index, mask, self.episode_ids[start])

    def sample_episodes(
        self,
        batch_size: int,
        task_indices: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> SequenceBatch:
        """``batch_size`` whole episodes per task, drawn uniformly among the task's episodes.

        Fields are ``(T', batch_size, max_episode_length, ...)``; ``mask`` is False past
        each episode's end.
        """
        task_indices = _checked_draw(self, batch_size, task_indices)
        rows, _, _ = self._task_rows(task_indices)
        counts = self.num_episodes if rows is None else self.num_episodes[rows]
        first = self._episode_offsets if rows is None else self._episode_offsets[rows]
        u = torch.rand((counts.shape[0], batch_size), device=self.device, generator=generator)
        episode = torch.minimum((u * counts.unsqueeze(1)).long(), (counts - 1).unsqueeze(1))
        flat = episode + first.unsqueeze(1)
        start, size = self._first[flat], self._length[flat]
        steps = torch.arange(self.max_episode_length, device=self.device)
        mask = steps < size.unsqueeze(-1)
        index = start.unsqueeze(-1) + torch.minimum(steps, (size - 1).unsqueeze(-1))
        return self._sequence(index, mask, episode)

    def _sequence(self, index, mask, episode_ids) -> SequenceBatch:
        batch = self.gather(index)
        zero = torch.zeros((), device=self.device)
        return SequenceBatch(
            observations=batch.observations,
            actions=batch.actions,
            rewards=torch.where(mask, batch.rewards, zero),
            next_observations=batch.next_observations,
            terminations=torch.where(mask, batch.terminations, zero),
            returns_to_go=torch.where(mask, self.returns_to_go[index], zero),
            timesteps=self.timesteps[index],
            mask=mask,
            episode_ids=episode_ids,
        )

    def task_transitions(self, i: int) -> TransitionBatch:
        """All transitions of task position ``i`` (leading axis ``N_i``, no task axis)."""
        start, size = self._offset_list[i], self._size_list[i]
        return self.gather(slice(start, start + size))

    def episodes(self, i: int) -> list:
        """The whole episodes (``minari`` EpisodeData) of task position ``i``."""
        return read_episodes(self.datasets[i], self.dataset_ids[i])

    def __repr__(self) -> str:
        return (
            f"TaskSampler({self.env_id!r}, tasks={list(self.tasks)}, "
            f"qualities={sorted(set(self.qualities))}, "
            f"transitions={int(self.sizes.sum())}, device={self.device})"
        )


def _flatten(dataset, dataset_id_: str) -> dict:
    """A dataset's episodes as transition arrays (next obs = obs shifted by one), with each
    transition's timestep, episode id, its episode's first index and length, the
    undiscounted returns-to-go and the numeric step infos; and per episode its first
    index and length."""
    keys = ("observations", "next_observations", "actions", "rewards", "terminations")
    out: dict[str, list] = {k: [] for k in (*keys, "returns_to_go", "timesteps", "episode_ids")}
    out.update(episode_first=[], episode_length=[], first=[], length=[])
    infos: dict[str, list] | None = None
    returns, position = [], 0
    for ep in read_episodes(dataset, dataset_id_):
        o = np.asarray(ep.observations)
        rewards = np.asarray(ep.rewards)
        n = len(rewards)
        out["observations"].append(o[:-1])
        out["next_observations"].append(o[1:])
        out["actions"].append(np.asarray(ep.actions))
        out["rewards"].append(rewards)
        out["terminations"].append(np.asarray(ep.terminations))
        out["returns_to_go"].append(np.cumsum(rewards[::-1])[::-1])
        out["timesteps"].append(np.arange(n))
        out["episode_ids"].append(np.full(n, int(ep.id)))
        out["episode_first"].append(np.full(n, position))
        out["episode_length"].append(np.full(n, n))
        out["first"].append([position])
        out["length"].append([n])
        step_infos = _numeric_step_infos(ep.infos, n)
        infos = step_infos if infos is None else infos
        for key in list(infos):
            if key in step_infos and infos is not step_infos:
                infos[key].extend(step_infos[key])
            elif key not in step_infos:
                del infos[key]
        returns.append(float(rewards.sum()))
        position += n
    flat = {k: np.concatenate([np.asarray(x) for x in v]) for k, v in out.items()}
    flat["infos"] = {k: np.concatenate(v) for k, v in (infos or {}).items()}
    flat["mean_return"] = float(np.mean(returns))
    flat["episode_returns"] = np.asarray(returns, dtype=np.float64)
    return flat


def _numeric_step_infos(infos, steps: int) -> dict[str, list]:
    """The step infos of one episode that are one number per step (``{key: [array]}``)."""
    found: dict[str, list] = {}
    for key, value in (infos or {}).items():
        array = np.asarray(value) if not isinstance(value, dict) else None
        if array is not None and array.shape == (steps,) and array.dtype.kind in "biuf":
            found[key] = [array]
    return found


def _check_distinct(tasks) -> None:
    """A task listed twice would be sampled twice as often, silently: refuse it."""
    twice = repeated_tasks(tasks)
    if twice:
        raise ValueError(f"tasks {twice} listed more than once; list each task once")


def _checked_draw(sampler: TaskSampler, batch_size, task_indices):
    """One ``ValueError`` line for a bad batch size or task positions, not a torch error.

    Positions on a CUDA device are not range-checked here (that would wait for the device
    on every draw); a list, tuple or CPU tensor is.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or (
        batch_size < 1
    ):
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if task_indices is None:
        return None
    rows = torch.as_tensor(task_indices)
    if rows.dim() != 1 or rows.dtype not in (torch.int64, torch.int32) or len(rows) == 0:
        raise ValueError(
            f"task_indices must be a 1-D LongTensor of positions in sampler.tasks, got "
            f"{task_indices!r}"
        )
    if rows.device.type == "cpu" and (
        int(rows.min()) < 0 or int(rows.max()) >= sampler.num_tasks
    ):
        raise ValueError(
            f"task_indices are positions 0..{sampler.num_tasks - 1} in sampler.tasks "
            f"{list(sampler.tasks)}, got {rows.tolist()}"
        )
    return rows.long()
