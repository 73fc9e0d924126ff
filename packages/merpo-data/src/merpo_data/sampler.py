"""The task sampler: the only way the agent reads data.

Loads the transitions of T tasks once onto a torch device as flat tensors with per-task
offsets, and draws batches with a leading task axis, indices drawn on the device:
``observations (T, B, obs_dim)``, ``actions``, ``rewards``, ``next_observations``,
``terminations``. It knows nothing of MerPO.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import minari
import numpy as np
import torch
from merpo_envs import format_tasks, get_meta_info

from merpo_data.datasets import generate, is_local
from merpo_data.ids import QUALITIES, check_quality, dataset_id


class TransitionBatch(NamedTuple):
    """Transitions with optional leading axes (``(T, B, ...)`` from ``sample``), float32."""

    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    terminations: torch.Tensor


class TaskSampler:
    """Transitions of several tasks of one env, on one device, sampled with a task axis.

    Args:
        env_id: a merpo env id, e.g. ``"merpo/PointRobotWind-v0"``.
        tasks: ``"train"``, ``"test"`` or a sequence of task indices (in that order).
        quality: one quality for all tasks, or one per task.
        device: where the tensors live.
        build_missing: build missing datasets (``merpo_data.generate``) instead of raising.

    Dataset actions are in env units (not rescaled); ``action_low``/``action_high`` give
    the env's action box.
    """

    def __init__(
        self,
        env_id: str,
        tasks: str | Sequence[int] = "train",
        quality: str | Sequence[str] = "medium",
        device: str | torch.device = "cpu",
        build_missing: bool = False,
    ):
        info = get_meta_info(env_id)
        self.env_id = info.env_id
        if isinstance(tasks, str):
            if tasks not in ("train", "test"):
                raise ValueError(
                    f"tasks must be 'train', 'test' or a list of task indices, got {tasks!r}"
                )
            task_list = info.train_tasks if tasks == "train" else info.test_tasks
        else:
            task_list = tuple(info.check_task(t) for t in tasks)
        if not task_list:
            raise ValueError(f"{env_id}: empty task list; pass 'train', 'test' or task indices")
        self.tasks: tuple[int, ...] = tuple(int(t) for t in task_list)
        qualities = [quality] * len(self.tasks) if isinstance(quality, str) else list(quality)
        if len(qualities) != len(self.tasks):
            raise ValueError(
                f"got {len(qualities)} qualities for {len(self.tasks)} tasks; "
                "pass one or one per task"
            )
        self.qualities: tuple[str, ...] = tuple(check_quality(q) for q in qualities)
        self.device = torch.device(device)
        self.num_tasks = len(self.tasks)
        self.obs_dim, self.act_dim = info.obs_dim, info.act_dim
        self.dataset_ids = tuple(
            dataset_id(env_id, t, q) for t, q in zip(self.tasks, self.qualities, strict=True)
        )
        self._ensure_local(build_missing)

        self.datasets = [minari.load_dataset(i) for i in self.dataset_ids]
        space = self.datasets[0].action_space
        self.action_low = torch.as_tensor(
            np.asarray(space.low), dtype=torch.float32, device=self.device
        )
        self.action_high = torch.as_tensor(
            np.asarray(space.high), dtype=torch.float32, device=self.device
        )

        parts = [_flatten(ds) for ds in self.datasets]
        sizes = [len(p["rewards"]) for p in parts]
        self.sizes = torch.tensor(sizes, dtype=torch.long, device=self.device)
        self.offsets = torch.tensor(
            np.concatenate([[0], np.cumsum(sizes)[:-1]]), dtype=torch.long, device=self.device
        )
        self._size_list, self._offset_list = sizes, [int(o) for o in self.offsets.cpu()]

        def cat(name: str) -> torch.Tensor:
            return torch.as_tensor(
                np.concatenate([p[name] for p in parts]), dtype=torch.float32, device=self.device
            )

        self.observations = cat("observations")
        self.actions = cat("actions")
        self.rewards = cat("rewards")
        self.next_observations = cat("next_observations")
        self.terminations = cat("terminations")
        self.dataset_returns = torch.tensor(
            [p["mean_return"] for p in parts], dtype=torch.float32, device=self.device
        )
        # every dataset episode's return, per task (numpy, on the host): the spread of the
        # behavior policy beside a meta-test's
        self.dataset_episode_returns: tuple[np.ndarray, ...] = tuple(
            p["episode_returns"] for p in parts
        )

    def _ensure_local(self, build_missing: bool) -> None:
        missing = [
            (t, q)
            for t, q, i in zip(self.tasks, self.qualities, self.dataset_ids, strict=True)
            if not is_local(i)
        ]
        if not missing:
            return
        if not build_missing:
            tasks = format_tasks(t for t, _ in missing)
            quals = ",".join(q for q in QUALITIES if q in {q for _, q in missing})
            raise ValueError(
                f"{len(missing)} dataset(s) missing, e.g. "
                f"{dataset_id(self.env_id, *missing[0])}; run "
                f"`merpo-data generate {self.env_id} --tasks {tasks} --qualities {quals}`, "
                "or let training build them with `--set data.build_missing=true` "
                "(build_missing=True in Python)"
            )
        for quality in sorted({q for _, q in missing}):
            generate(
                self.env_id, tasks=[t for t, q in missing if q == quality], qualities=[quality]
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
        if task_indices is None:
            sizes, offsets = self.sizes, self.offsets
        else:
            task_indices = task_indices.to(self.device)
            sizes, offsets = self.sizes[task_indices], self.offsets[task_indices]
        u = torch.rand((sizes.shape[0], batch_size), device=self.device, generator=generator)
        # min(): u * size can round up to size in float32 for large sizes.
        local = torch.minimum((u * sizes.unsqueeze(1)).long(), (sizes - 1).unsqueeze(1))
        index = local + offsets.unsqueeze(1)
        return TransitionBatch(
            self.observations[index],
            self.actions[index],
            self.rewards[index],
            self.next_observations[index],
            self.terminations[index],
        )

    def task_transitions(self, i: int) -> TransitionBatch:
        """All transitions of task position ``i`` (leading axis ``N_i``, no task axis)."""
        start, size = self._offset_list[i], self._size_list[i]
        sl = slice(start, start + size)
        return TransitionBatch(
            self.observations[sl],
            self.actions[sl],
            self.rewards[sl],
            self.next_observations[sl],
            self.terminations[sl],
        )

    def episodes(self, i: int) -> list:
        """The whole episodes (``minari`` EpisodeData) of task position ``i``."""
        return list(self.datasets[i].iterate_episodes())

    def __repr__(self) -> str:
        return (
            f"TaskSampler({self.env_id!r}, tasks={list(self.tasks)}, "
            f"qualities={sorted(set(self.qualities))}, "
            f"transitions={int(self.sizes.sum())}, device={self.device})"
        )


def _flatten(dataset: minari.MinariDataset) -> dict[str, np.ndarray]:
    """Concatenate a dataset's episodes into transition arrays (next obs = obs shifted by one)."""
    obs, act, rew, nxt, term, returns = [], [], [], [], [], []
    for ep in dataset.iterate_episodes():
        o = np.asarray(ep.observations)
        obs.append(o[:-1])
        nxt.append(o[1:])
        act.append(np.asarray(ep.actions))
        rew.append(np.asarray(ep.rewards))
        term.append(np.asarray(ep.terminations))
        returns.append(float(np.sum(ep.rewards)))
    return {
        "observations": np.concatenate(obs),
        "actions": np.concatenate(act),
        "rewards": np.concatenate(rew),
        "next_observations": np.concatenate(nxt),
        "terminations": np.concatenate(term),
        "mean_return": float(np.mean(returns)),
        "episode_returns": np.asarray(returns, dtype=np.float64),
    }
