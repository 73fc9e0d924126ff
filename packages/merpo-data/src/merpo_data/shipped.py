"""Behavior policies shipped with merpo-data, so datasets rebuild without training.

The paper's datasets come from per-task SAC policies and their checkpoints (App. A.2.2,
"Data collection"). Training them is the slow part of ``merpo-data generate``; what a
dataset needs from them is small: each checkpoint's actor weights, and the evaluated
returns that pick the ``medium`` and ``expert`` checkpoints. merpo-data ships exactly that
for an (env, preset, seed) in ``merpo_data/policies/<slug>-<preset>-seed<S>.safetensors``
(package data, no pickle: safetensors holds plain tensors). ``generate`` uses the shipped
policies when it has no finished checkpoint files of its own, so a fresh machine rebuilds
the same datasets bit for bit; ``--retrain`` trains from scratch instead.

Tensors of task ``NN`` are ``task-NN/steps`` ``(C,)``, ``task-NN/returns`` ``(C,)``,
``task-NN/random_return`` ``()`` and ``task-NN/actor/<parameter>`` ``(C, ...)``; the
header's metadata names the env, preset, seed and network size.

Shipped today: Point-Robot-Wind, default preset, seed 0 (all 50 tasks). The MuJoCo envs'
policies (1M env steps per task) are not shipped yet: see merpo-data's README.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from merpo_data.atomic import atomic_write_bytes

POLICY_DIR = Path(__file__).resolve().parent / "policies"
FORMAT = "merpo-behavior-policies-v1"


def shipped_path(slug: str, preset: str, seed: int) -> Path:
    """Where the shipped policies of an env slug, preset and seed are (if shipped)."""
    return POLICY_DIR / f"{slug}-{preset}-seed{int(seed)}.safetensors"


def save_shipped(records: Iterable, path: Path, metadata: dict[str, str]) -> Path:
    """Write ``BehaviorRecord``s (actor weights, steps, returns) as one safetensors file."""
    from safetensors.torch import save

    tensors: dict[str, torch.Tensor] = {}
    for rec in records:
        key = f"task-{rec.task:02d}"
        tensors[f"{key}/steps"] = torch.as_tensor(np.asarray(rec.steps)).clone()
        tensors[f"{key}/returns"] = torch.as_tensor(np.asarray(rec.returns)).clone()
        tensors[f"{key}/random_return"] = torch.tensor(float(rec.random_return))
        for name, value in rec.actor.items():
            tensors[f"{key}/actor/{name}"] = value.detach().cpu().contiguous()
    header = {"format": FORMAT, **{k: str(v) for k, v in metadata.items()}}
    return atomic_write_bytes(path, save(tensors, metadata=header))


def load_shipped(path: Path, tasks: Sequence[int]) -> dict:
    """The ``BehaviorRecord`` of each of ``tasks`` from a shipped file (one-line errors)."""
    from safetensors import safe_open

    from merpo_data.behavior import BehaviorRecord

    with safe_open(str(path), framework="pt") as handle:
        if (handle.metadata() or {}).get("format") != FORMAT:
            raise ValueError(f"{path} is not a merpo-data policy file; reinstall merpo-data")
        names = set(handle.keys())
        out = {}
        for task in tasks:
            key = f"task-{int(task):02d}"
            if f"{key}/steps" not in names:
                raise ValueError(
                    f"{path.name} ships no policies of task {task}; pass --retrain to train them"
                )
            prefix = f"{key}/actor/"
            out[int(task)] = BehaviorRecord(
                task=int(task),
                steps=handle.get_tensor(f"{key}/steps").numpy(),
                returns=handle.get_tensor(f"{key}/returns").numpy(),
                random_return=float(handle.get_tensor(f"{key}/random_return")),
                actor={
                    n[len(prefix) :]: handle.get_tensor(n)
                    for n in sorted(names)
                    if n.startswith(prefix)
                },
            )
    return out


def export_shipped(
    env_id: str, preset: str = "default", seed: int = 0, tasks: Sequence[int] | None = None
) -> Path:
    """Write the cached behavior policies of (env, preset, seed) to :func:`shipped_path`:
    every task's, or those of ``tasks`` (a maintainer's step, after ``merpo-data generate
    ENV --retrain``)."""
    from merpo_envs import get_meta_info

    from merpo_data.behavior import load_record, task_file
    from merpo_data.presets import get_preset
    from merpo_data.store import behavior_dir

    info = get_meta_info(env_id)
    data_preset = get_preset(env_id, preset)
    directory = behavior_dir(info.slug, data_preset.name, seed)
    tasks = info.tasks if tasks is None else tuple(tasks)
    missing = [t for t in tasks if not task_file(directory, t).exists()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} task(s) of {env_id} have no finished policies in {directory}; "
            f"run `merpo-data generate {env_id} --preset {preset} --seed {seed} --retrain` first"
        )
    metadata = {
        "env_id": env_id,
        "preset": data_preset.name,
        "seed": seed,
        "hidden": data_preset.sac.hidden,
        "hidden_layers": data_preset.sac.hidden_layers,
    }
    records = [load_record(directory, t) for t in tasks]
    return save_shipped(records, shipped_path(info.slug, data_preset.name, seed), metadata)
