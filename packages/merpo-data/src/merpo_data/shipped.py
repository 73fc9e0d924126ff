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
header's metadata names the env, preset, seed and network size, and records what the
maintainer's build from these very policies gave (``datasets``: each dataset id's content
hash, the hash of each of its arrays and its mean return), the ``versions`` of the
packages that built it, and an ``arithmetic`` fingerprint of the machine that built them
(:func:`arithmetic_fingerprint`). A machine with the same fingerprint rounds the policies'
floats the same way, so its rebuild must match those hashes bit for bit (the envs keep
their own arithmetic off BLAS, whose kernels differ by CPU, and ``mujoco``, ``gymnasium``
and ``numpy`` are pinned in the packages' requirements); :func:`describe_mismatch` names
the arrays and the versions that differ when it does not. Elsewhere a rebuild is the same
recipe up to float rounding (MuJoCo amplifies a last-bit difference of an action into
another trajectory), so only its statistics can be compared.

Shipped today, default preset, seed 0: Point-Robot-Wind (all 50 tasks), Half-Cheetah-Fwd-Back
and Ant-Fwd-Back (both tasks each) and Walker-2D-Params (all 25 tasks; its file also records
the ``test`` preset's datasets, which roll out the same policies).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from merpo_data.atomic import atomic_write_bytes
from merpo_data.store import (
    RECIPE_KEY,
    BehaviorRecord,
    behavior_dir,
    installed_versions,
    is_local,
    load_record,
    task_file,
)

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


def shipped_metadata(path: Path) -> dict:
    """The header of a shipped file: env, preset, seed, ``datasets`` (id -> content hash and
    mean return of the maintainer's build) and ``arithmetic`` (its machine's fingerprint)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        header = dict(handle.metadata() or {})
    if header.get("format") != FORMAT:
        raise ValueError(f"{path} is not a merpo-data policy file; reinstall merpo-data")
    header["datasets"] = json.loads(header.get("datasets", "{}"))
    header["versions"] = json.loads(header.get("versions", "{}"))
    return header


def blas_kernel() -> str:
    """The kernel family numpy's OpenBLAS picked for this CPU (e.g. ``SkylakeX``,
    ``Haswell``), or ``unknown``: what a dataset must not depend on, named in reports."""
    import ctypes
    import glob
    import os

    libs = glob.glob(os.path.join(os.path.dirname(np.__file__) + ".libs", "*openblas*.so*"))
    for path in libs:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                     "openblas_get_corename"):  # fmt: skip
            func = getattr(lib, name, None)
            if func is not None:
                func.restype = ctypes.c_char_p
                return func().decode()
    return "unknown"


def numpy_simd() -> str:
    """The SIMD targets numpy dispatches its own loops to on this CPU (e.g. ``X86_V3``,
    ``X86_V4``): another thing a dataset must not depend on, named in reports."""
    try:
        from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    except ImportError:  # a numpy that keeps them elsewhere
        return "unknown"
    return " ".join(t for t in __cpu_dispatch__ if __cpu_features__.get(t)) or "none"


def describe_mismatch(ds_id: str, content_hash: str, fields: dict[str, str], header: dict) -> str:
    """One line on a rebuilt dataset whose content hash differs from the recorded one: the
    arrays that differ and the recorded package versions that differ from the installed."""
    recorded = header["datasets"][ds_id]
    before = recorded.get("fields", {})
    if before:
        names = sorted(set(before) | set(fields))
        differ = [n for n in names if before.get(n) != fields.get(n)]
        arrays = f"arrays that differ: {', '.join(differ) or 'none (only their order)'}"
    else:
        arrays = "no per-array hashes recorded"
    installed = installed_versions()
    versions = header.get("versions", {})
    changed = [
        f"{name} {versions[name]} recorded, {installed.get(name, 'not installed')} installed"
        for name in sorted(versions)
        if versions[name] != installed.get(name)
    ]
    if changed:
        why = f"versions that differ: {'; '.join(changed)}"
    elif versions:
        why = (
            "every recorded version is installed, so the code or the arithmetic outside "
            f"torch that computes those arrays differs (numpy's BLAS kernel here: "
            f"{blas_kernel()}, at export: {header.get('blas', 'not recorded')}; its SIMD "
            f"targets here: {numpy_simd()}, at export: {header.get('numpy_simd', 'not recorded')})"
        )
    else:
        why = "no versions recorded"
    return (
        f"{ds_id}: content hash {content_hash[:12]} != recorded "
        f"{recorded['content_hash'][:12]}; {arrays}; {why}"
    )


def arithmetic_fingerprint() -> str:
    """A hash of how this machine's torch rounds a stacked policy's sampling on the CPU.

    The same ops a rollout runs (batched matmuls, ReLU, exp, tanh, log, Gaussian noise from
    a seeded generator) on fixed inputs, with one intra-op thread as data generation uses.
    Where it equals the build machine's, a rebuild from the shipped policies is expected to
    give the recorded content hashes bit for bit (the test suite checks it); a different
    one means other CPU kernels, and only the datasets' statistics can agree.
    """
    from merpo_data.networks import StackedTanhGaussianPolicy
    from merpo_data.store import small_op_threads

    with small_op_threads("cpu"), torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        policy = StackedTanhGaussianPolicy((2,), 27, 8, 128, 2)
        for param in policy.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.3)
        obs = torch.randn(2, 64, 27, generator=gen)
        action, logp = policy.sample(obs, gen)
    digest = hashlib.sha256(action.numpy().tobytes())
    digest.update(logp.numpy().tobytes())
    return digest.hexdigest()[:16]


def rollout_presets(env_id: str, preset: str) -> list[str]:
    """The presets of ``env_id`` that roll out ``preset``'s behavior policies (itself first)."""
    from merpo_data.ids import PRESET_NAMES
    from merpo_data.presets import get_preset

    return [preset] + [
        n for n in PRESET_NAMES if n != preset and get_preset(env_id, n).policy_preset == preset
    ]


def _built_datasets(env_id: str, preset: str, seed: int, tasks: Sequence[int]) -> dict:
    """``dataset id -> {content_hash, mean_return}`` of the local datasets of ``tasks``
    built with (preset, seed); every quality must be there (export after ``generate``)."""
    from merpo_data.ids import QUALITIES, dataset_id
    from merpo_data.integrity import content_hash, field_hashes, open_dataset, read_episodes

    out = {}
    for task in tasks:
        for quality in QUALITIES:
            ds_id = dataset_id(env_id, task, quality, preset)
            if not is_local(ds_id):
                raise FileNotFoundError(
                    f"{ds_id} is not in the local store; run `merpo-data generate {env_id} "
                    f"--preset {preset} --seed {seed}` before exporting its policies"
                )
            dataset = open_dataset(ds_id)
            found = json.loads(dataset.storage.metadata.get(RECIPE_KEY) or "{}")
            if int(found.get("seed", seed)) != int(seed):
                raise ValueError(f"{ds_id} was built with seed {found['seed']}, not {seed}")
            episodes = read_episodes(dataset, ds_id)
            out[ds_id] = {
                "content_hash": content_hash(episodes),
                "fields": field_hashes(episodes),
                "mean_return": float(np.mean([np.sum(ep.rewards) for ep in episodes])),
            }
    return out


def export_shipped(
    env_id: str, preset: str = "default", seed: int = 0, tasks: Sequence[int] | None = None
) -> Path:
    """Write the cached behavior policies of (env, preset, seed) to :func:`shipped_path`:
    every task's, or those of ``tasks`` (a maintainer's step, after ``merpo-data generate
    ENV --retrain``), with the content hashes of the datasets that build gave (every
    quality of those tasks must be in the local store, for ``preset`` and for every preset
    that rolls out its policies, :func:`rollout_presets`) and this machine's
    :func:`arithmetic_fingerprint`, the installed versions, numpy's BLAS kernel and SIMD
    targets."""
    from merpo_envs import get_meta_info

    from merpo_data.presets import get_preset

    info = get_meta_info(env_id)
    data_preset = get_preset(env_id, preset)
    if data_preset.policy_preset != data_preset.name:
        raise ValueError(
            f"preset {preset!r} of {env_id} rolls out the {data_preset.policy_preset!r} "
            f"preset's policies; export that one"
        )
    directory = behavior_dir(info.slug, data_preset.name, seed)
    tasks = info.tasks if tasks is None else tuple(tasks)
    missing = [t for t in tasks if not task_file(directory, t).exists()]
    shipped = shipped_path(info.slug, data_preset.name, seed)
    if missing and shipped.exists():
        # Re-exporting what is shipped (to record its datasets' hashes): same weights.
        records = list(load_shipped(shipped, tasks).values())
    elif missing:
        raise FileNotFoundError(
            f"{len(missing)} task(s) of {env_id} have no finished policies in {directory}; "
            f"run `merpo-data generate {env_id} --preset {preset} --seed {seed} --retrain` first"
        )
    else:
        records = [load_record(directory, t) for t in tasks]
    # Every preset that rolls out these policies (the default and, where it has one, the
    # test preset of a few episodes) records its build: a cheap rebuild can be checked too.
    built: dict = {}
    for name in rollout_presets(env_id, data_preset.name):
        built.update(_built_datasets(env_id, name, seed, tasks))
    metadata = {
        "env_id": env_id,
        "preset": data_preset.name,
        "seed": seed,
        "hidden": data_preset.sac.hidden,
        "hidden_layers": data_preset.sac.hidden_layers,
        "datasets": json.dumps(built),
        "arithmetic": arithmetic_fingerprint(),
        "versions": json.dumps(installed_versions()),
        "blas": blas_kernel(),
        "numpy_simd": numpy_simd(),
    }
    return save_shipped(records, shipped, metadata)
