"""Minari datasets per task and quality, built from the behavior-policy checkpoints.

Qualities (the paper's App. A.2.2, "Data collection"):
- ``random``: uniform actions in the action box;
- ``medium``: the checkpoint whose evaluated return is closest to halfway between the
  random policy's and the expert checkpoint's;
- ``expert``: the best checkpoint (highest evaluated return);
- ``mixed``: episodes from every checkpoint, spread evenly.
Rollouts are stochastic (a ~ pi(.|s)) and keep whole episodes, terminations and
truncations apart. Each dataset is written with ``minari.create_dataset_from_buffers`` from
whole-episode numpy arrays into a temporary store, then renamed into Minari's store.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import gymnasium as gym
import minari
import numpy as np
from merpo_envs import format_tasks, get_meta_info
from minari.data_collector.episode_buffer import EpisodeBuffer
from minari.namespace import create_namespace, list_local_namespaces
from tqdm.auto import tqdm

from merpo_data.behavior import (
    BehaviorRecord,
    ensure_behavior_policies,
    stacked_actor,
    state_name,
)
from merpo_data.distributed import shard_bounds
from merpo_data.ids import (
    NAMESPACE,
    QUALITIES,
    dataset_id,
    env_namespace,
    parse_dataset_id,
    parse_qualities,
    parse_tasks,
)
from merpo_data.presets import DataPreset, get_preset
from merpo_data.rollouts import Episode, collect_episodes, make_task_vector_env, uniform_act_fn
from merpo_data.sac import make_act_fn
from merpo_data.store import move_into_store, small_op_threads, store_root, temporary_store

AUTHOR = "merpo contributors"
CODE_PERMALINK = "https://github.com/merpo/merpo/tree/main/packages/merpo-data"
ALGORITHM = "SAC behavior policies (per-task checkpoints), merpo-data"
RECIPE_KEY = "merpo_recipe"


def task_env_spec(env_id: str, task: int) -> gym.envs.registration.EnvSpec:
    """The registered spec of ``env_id`` with ``task`` fixed in its kwargs.

    Stored as the dataset's env and eval-env spec, so ``recover_environment()`` makes
    exactly this task.
    """
    spec = gym.spec(env_id)
    return dataclasses.replace(spec, kwargs={**spec.kwargs, "task": int(task)})


def is_local(dataset_id_: str) -> bool:
    return (store_root() / dataset_id_ / "data").exists()


def recipe(env_id: str, task: int, quality: str, preset: DataPreset, seed: int) -> dict:
    """The seeded recipe of a dataset: same recipe, same data."""
    return {
        "env_id": env_id,
        "task": task,
        "quality": quality,
        "preset": preset.name,
        "episodes": preset.episodes,
        "seed": seed,
    }


def existing_recipe(dataset_id_: str) -> dict | None:
    metadata = minari.load_dataset(dataset_id_).storage.metadata
    raw = metadata.get(RECIPE_KEY)
    return json.loads(raw) if raw else None


def generate(
    env_id: str,
    tasks: str | Sequence[int] | None = None,
    qualities: str | Sequence[str] | None = None,
    preset: str = "default",
    force: bool = False,
    episodes: int | None = None,
    progress: bool = True,
    seed: int = 0,
    device: str = "cpu",
    *,
    rank: int = 0,
    world_size: int = 1,
) -> list[str]:
    """Build the datasets of ``tasks`` x ``qualities`` of an env; return their ids.

    Existing datasets with the same recipe (preset, episodes, seed) are kept and returned
    (so an interrupted run picks up where it stopped); one with another recipe is an error
    unless ``force``, which rebuilds every requested dataset. Behavior policies are trained
    once per (env, preset, seed) and reused.

    ``rank`` / ``world_size`` (``merpo-data generate`` under torchrun, see
    ``merpo_data.distributed``): every rank checks the whole request (so bad input fails
    the same way everywhere, before anything is written), then builds only its contiguous
    shard of the task list and returns the ids of the whole request; the other shards'
    datasets exist once every rank has returned (the CLI waits at a barrier). No collective
    is called here. A shard's behavior policies train as their own SAC group, so its
    datasets are equivalent to a single-process run's (same ids, recipes, episode counts
    and training budgets), not bit-identical: see :func:`merpo_data.behavior._train_group`.
    """
    info = get_meta_info(env_id)
    task_list = parse_tasks(tasks, info)
    start, stop = shard_bounds(len(task_list), rank, world_size)
    my_tasks = set(task_list[start:stop])
    quality_list = parse_qualities(qualities)
    data_preset = get_preset(env_id, preset)
    if episodes is not None:
        if int(episodes) < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        data_preset = dataclasses.replace(data_preset, episodes=int(episodes))
    ensure_namespaces(env_id)

    todo: dict[str, list[int]] = {q: [] for q in quality_list}
    for q in quality_list:
        for t in task_list:
            ds_id = dataset_id(env_id, t, q)
            if is_local(ds_id) and not force:
                found = existing_recipe(ds_id)
                wanted = recipe(env_id, t, q, data_preset, seed)
                if found is not None and found != wanted:
                    raise ValueError(
                        f"{ds_id} exists with another recipe {found}; pass --force "
                        f"(force=True) to rebuild it with {wanted}"
                    )
                continue
            if t in my_tasks:
                todo[q].append(t)
    need = sorted({t for ts in todo.values() for t in ts})
    with small_op_threads(device):
        for start in range(0, len(need), data_preset.tasks_per_chunk):
            chunk = need[start : start + data_preset.tasks_per_chunk]
            records = ensure_behavior_policies(
                env_id, chunk, data_preset, seed, device, progress, state_file=state_name(rank)
            )
            for q in quality_list:
                chunk_tasks = [t for t in chunk if t in todo[q]]
                if chunk_tasks:
                    _build_quality(
                        env_id, chunk_tasks, q, records, data_preset, seed, force, device, progress
                    )
    return [dataset_id(env_id, t, q) for t in task_list for q in quality_list]


def _build_quality(
    env_id, tasks, quality, records, preset: DataPreset, seed, force, device, progress
):
    """Roll out ``quality``'s policy for all ``tasks`` at once, then write one dataset per task."""
    recs = [records[t] for t in tasks]
    episodes = collect_quality_episodes(env_id, tasks, quality, recs, preset, seed, device)
    bar = tqdm(total=len(tasks), desc=f"write {quality}", unit="dataset", disable=not progress)
    for pos, task in enumerate(tasks):
        write_dataset(env_id, task, quality, episodes[pos], recs[pos], preset, seed, force)
        bar.update(1)
    bar.close()


def collect_quality_episodes(
    env_id,
    tasks,
    quality,
    recs: Sequence[BehaviorRecord],
    preset: DataPreset,
    seed: int,
    device="cpu",
) -> list[list[Episode]]:
    """``preset.episodes`` stochastic whole episodes per task of the quality's policy."""
    info = get_meta_info(env_id)
    envs = make_task_vector_env(env_id, tasks, preset.rollout_envs_per_task)
    space = envs.single_action_space
    quality_seed = seed * 1_000_003 + 104_729 * (QUALITIES.index(quality) + 1) + 7919 * tasks[0]
    center = ((space.high + space.low) / 2).astype(np.float32)
    scale = ((space.high - space.low) / 2).astype(np.float32)
    import torch  # local: the random quality needs no torch

    gen = torch.Generator(device=device).manual_seed(quality_seed)
    center_t, scale_t = torch.tensor(center, device=device), torch.tensor(scale, device=device)

    def policy(checkpoints: Sequence[int]):
        actor = stacked_actor(recs, checkpoints, preset, info.obs_dim, info.act_dim, device)
        return make_act_fn(actor, center_t, scale_t, gen)

    try:
        if quality == "random":
            act = uniform_act_fn(space, quality_seed)
            return collect_episodes(envs, len(tasks), act, preset.episodes, quality_seed)
        if quality in ("expert", "medium"):
            checkpoints = [r.expert_index if quality == "expert" else r.medium_index for r in recs]
            return collect_episodes(
                envs, len(tasks), policy(checkpoints), preset.episodes, quality_seed
            )
        # mixed: every checkpoint gets an even share of the episodes (earlier ones get the
        # remainder), one batched rollout per checkpoint index across all tasks.
        num_ckpt = min(r.num_checkpoints for r in recs)
        shares = [
            preset.episodes // num_ckpt + (c < preset.episodes % num_ckpt) for c in range(num_ckpt)
        ]
        out: list[list[Episode]] = [[] for _ in tasks]
        for c, share in enumerate(shares):
            if share == 0:
                continue
            part = collect_episodes(
                envs, len(tasks), policy([c] * len(tasks)), share, quality_seed + 31 * c
            )
            for pos in range(len(tasks)):
                out[pos].extend(part[pos])
        return out
    finally:
        envs.close()


def describe_task(env_id: str, task: int, quality: str, rec: BehaviorRecord) -> str:
    info = get_meta_info(env_id)
    params = json.dumps(info.task_params(task))
    split = "meta-train" if task in info.train_tasks else "meta-test"
    how = {
        "random": "uniform random actions in the action box",
        "medium": f"the SAC checkpoint closest to halfway between random and expert "
        f"(checkpoint {rec.medium_index}, {int(rec.steps[rec.medium_index])} env steps)",
        "expert": f"the best SAC checkpoint (checkpoint {rec.expert_index}, "
        f"{int(rec.steps[rec.expert_index])} env steps)",
        "mixed": f"all {rec.num_checkpoints} SAC checkpoints, episodes spread evenly",
    }[quality]
    return (
        f"{info.env_id} task {task} ({split}), task parameters {params}. "
        f"Quality '{quality}': stochastic whole-episode rollouts of {how}. "
        f"Built by merpo-data (MerPO, ICLR 2022, App. A.2.2)."
    )


def write_dataset(
    env_id: str,
    task: int,
    quality: str,
    episodes: Sequence[Episode],
    rec: BehaviorRecord,
    preset: DataPreset,
    seed: int,
    force: bool = False,
) -> str:
    """Write one Minari dataset atomically: build in a temporary store, then rename in.

    A kill at any moment leaves either no dataset under the id or a complete one.
    Re-creating an existing id raises unless ``force``.
    """
    ds_id = dataset_id(env_id, task, quality)
    if is_local(ds_id) and not force:
        raise FileExistsError(
            f"dataset {ds_id} already exists; pass --force (force=True) to rebuild it"
        )
    spec = task_env_spec(env_id, task)
    buffers = [
        EpisodeBuffer(
            id=i,
            observations=ep.observations,
            actions=ep.actions,
            rewards=ep.rewards,
            terminations=ep.terminations,
            truncations=ep.truncations,
        )
        for i, ep in enumerate(episodes)
    ]
    root = store_root()
    with temporary_store() as tmp:
        dataset = minari.create_dataset_from_buffers(
            dataset_id=ds_id,
            buffer=buffers,
            env=spec,
            eval_env=spec,
            algorithm_name=ALGORITHM,
            author=AUTHOR,
            author_email="merpo@users.noreply.github.com",
            code_permalink=CODE_PERMALINK,
            ref_min_score=float(rec.random_return),
            ref_max_score=float(rec.returns[rec.expert_index]),
            description=describe_task(env_id, task, quality, rec),
            requirements=["merpo-envs"],
        )
        dataset.storage.update_metadata(
            {RECIPE_KEY: json.dumps(recipe(env_id, task, quality, preset, seed))}
        )
        del dataset
        built = tmp / ds_id
        move_into_store(built, ds_id, force, root)
    return ds_id


def ensure_namespaces(env_id: str) -> None:
    """Create the ``merpo`` and ``merpo/<env>`` namespaces with descriptions (once).

    Under torchrun the CLI lets rank 0 create them before the other ranks start.
    """
    info = get_meta_info(env_id)
    local = list_local_namespaces()
    if NAMESPACE not in local:
        create_namespace(
            NAMESPACE,
            description="Offline meta-RL datasets for MerPO (ICLR 2022): one dataset per task and "
            "quality (random, medium, expert, mixed) of each merpo meta-environment.",
        )
    ns = env_namespace(env_id)
    if ns not in local:
        create_namespace(
            ns,
            description=f"{info.env_id}: {info.num_tasks} tasks "
            f"(meta-train {format_tasks(info.train_tasks)}, "
            f"meta-test {format_tasks(info.test_tasks)}), horizon {info.max_episode_steps}. "
            f"Datasets task-<NN>-<quality>-v0; install merpo-envs to recreate the envs.",
        )


def load_dataset(dataset_id_: str, download: bool = True) -> minari.MinariDataset:
    """The local dataset; else one from a configured Minari remote; else built locally.

    With ``download=True`` a missing dataset is first fetched from the Minari remote named
    by ``MINARI_REMOTE`` (if that variable is set; a failure falls through quietly), then
    built with its seeded recipe (``generate`` with the default preset) — the ``minari
    download`` experience without a server. With ``download=False`` a missing dataset is
    a one-line error naming the command that builds it.
    """
    env_id, task, quality = parse_dataset_id(dataset_id_)
    if not is_local(dataset_id_):
        if not download:
            raise FileNotFoundError(
                f"dataset {dataset_id_} is not in {store_root()}; build it with "
                f"`merpo-data generate {env_id} --tasks {task} --qualities {quality}`"
            )
        if os.environ.get("MINARI_REMOTE"):
            try:
                minari.download_dataset(dataset_id_)
            except Exception:  # noqa: BLE001  no remote, no copy there, no network: build it
                pass
        if not is_local(dataset_id_):
            generate(env_id, tasks=[task], qualities=[quality])
    return minari.load_dataset(dataset_id_)
