"""Normalized scores and their spread, the one home of both (meta-test tables, ``reproduce``).

A return R on task j is reported beside its normalized score
``100 (R - ref_min_j) / (ref_max_j - ref_min_j)`` with task j's dataset reference scores
(the uniform-random policy's and the expert policy's returns, the ``ref_min_score`` /
``ref_max_score`` of the dataset metadata that ``minari.get_normalized_score`` uses):
0 is the random policy, 100 the expert. Each task is normalized with its own dataset's
references, as the paper's comparisons (§5, Fig. 4-7) are per task.

The spread of a meta-test (§4.3) is the standard deviation over every episode of every
task (population std, ``ddof = 0``), of the returns and of the normalized scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def reference_scores(env_id: str, tasks: Sequence[int], quality: str | Sequence[str],
                     preset: str = "default") -> tuple[np.ndarray, np.ndarray]:
    """(ref_min, ref_max) per task from the datasets' metadata (one quality or one per task;
    ``preset``: the merpo-data preset that built them)."""
    import merpo_data

    qualities = [quality] * len(tasks) if isinstance(quality, str) else list(quality)
    lows, highs = [], []
    for task, q in zip(tasks, qualities, strict=True):
        dataset = merpo_data.load_dataset(merpo_data.dataset_id(env_id, task, q, preset))
        lows.append(float(dataset.storage.metadata["ref_min_score"]))
        highs.append(float(dataset.storage.metadata["ref_max_score"]))
    return np.array(lows), np.array(highs)


def sampler_reference_scores(sampler) -> tuple[np.ndarray, np.ndarray]:
    """(ref_min, ref_max) per task of a ``merpo_data.TaskSampler`` (its loaded datasets)."""
    metas = [dataset.storage.metadata for dataset in sampler.datasets]
    return (np.array([float(m["ref_min_score"]) for m in metas]),
            np.array([float(m["ref_max_score"]) for m in metas]))


def normalized_score(returns, ref_min, ref_max) -> np.ndarray:
    """``100 (R - ref_min) / (ref_max - ref_min)`` with numpy broadcasting (e.g. a (seeds,
    tasks) matrix against (tasks,) references, or one task's episodes against scalars)."""
    returns = np.asarray(returns, dtype=float)
    low, high = np.asarray(ref_min, dtype=float), np.asarray(ref_max, dtype=float)
    return 100.0 * (returns - low) / (high - low)


def summarize(name: str, episodes: Sequence[np.ndarray], ref_min=None, ref_max=None
              ) -> dict[str, float]:
    """The record fields of one column of a meta-test from its per-task episode returns
    (one array per task, any number of episodes each):

    ``<name>_return`` (mean over tasks of the task means), ``<name>_return_std`` (over every
    episode of every task) and, given the references, ``<name>_normalized`` and
    ``<name>_normalized_std`` (x100, each task with its own references)."""
    per_task = [np.asarray(e, dtype=float).reshape(-1) for e in episodes]
    out = {
        f"{name}_return": float(np.mean([e.mean() for e in per_task])),
        f"{name}_return_std": float(np.std(np.concatenate(per_task))),
    }
    if ref_min is not None and ref_max is not None:
        norm = [normalized_score(e, lo, hi)
                for e, lo, hi in zip(per_task, ref_min, ref_max, strict=True)]
        out[f"{name}_normalized"] = float(np.mean([n.mean() for n in norm]))
        out[f"{name}_normalized_std"] = float(np.std(np.concatenate(norm)))
    return out


__all__ = ["normalized_score", "reference_scores", "sampler_reference_scores", "summarize"]
