"""Minari datasets per task and quality, built from the behavior-policy checkpoints.

Qualities (the paper's App. A.2.2, "Data collection"):
- ``random``: uniform actions in the action box;
- ``medium``: the checkpoint whose evaluated return is closest to halfway between the
  random policy's and the expert checkpoint's;
- ``expert``: the best checkpoint (highest evaluated return);
- ``mixed``: episodes from every checkpoint, spread evenly.
Rollouts are stochastic (a ~ pi(.|s)) and keep whole episodes, terminations and
truncations apart, with the numeric step infos (Point-Robot-Wind's sparse reward, the
MuJoCo envs' reward components). Each dataset is written with
``minari.create_dataset_from_buffers`` from whole-episode numpy arrays into a temporary
store, then renamed into Minari's store.

- Reference scores (:func:`reference_scores`): ``ref_max_score`` is the expert
  checkpoint's mean return over ``reference_episodes`` (100) episodes collected as its
  dataset is, ``ref_min_score`` the uniform policy's; an expert that does not beat the
  uniform policy stops generation with one line.
- A dataset is a pure function of its recipe: tasks are trained and rolled out in the
  fixed task groups of their preset (``DataPreset.task_groups``), whatever was asked for.
  The recipe (preset, seed, task group, package versions, content hash) is stored under
  ``RECIPE_KEY``; ``requirements`` pin the versions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
from collections.abc import Sequence

import gymnasium as gym
import minari
import numpy as np
from merpo_envs import format_tasks, get_meta_info
from minari.data_collector.episode_buffer import EpisodeBuffer
from minari.namespace import create_namespace, list_local_namespaces

from merpo_data.behavior import (
    BehaviorRecord,
    ensure_behavior_policies,
    stacked_actor,
    state_name,
)
from merpo_data.distributed import check_device, shard_bounds
from merpo_data.ids import (
    NAMESPACE,
    QUALITIES,
    check_seed,
    dataset_id,
    env_namespace,
    generate_command,
    parse_dataset_recipe,
    parse_qualities,
    parse_tasks,
)
from merpo_data.integrity import content_hash, dataset_problem, open_dataset, read_episodes
from merpo_data.presets import DataPreset, get_preset
from merpo_data.progress import progress_bar
from merpo_data.rollouts import Episode, collect_episodes, make_task_vector_env, uniform_act_fn
from merpo_data.sac import make_act_fn, mean_returns
from merpo_data.store import (
    RECIPE_KEY,
    REQUIREMENTS,  # noqa: F401 (re-exported: its former home)
    installed_versions,
    is_local,
    move_into_store,
    remove_stale_temporaries,
    small_op_threads,
    store_lock,
    store_root,
    temporary_store,
)

AUTHOR = "merpo contributors"
CODE_PERMALINK = "https://github.com/merpo/merpo/tree/main/packages/merpo-data"
ALGORITHM = "SAC behavior policies (per-task checkpoints), merpo-data"


def task_env_spec(env_id: str, task: int) -> gym.envs.registration.EnvSpec:
    """The registered spec of ``env_id`` with ``task`` fixed in its kwargs.

    Stored as the dataset's env and eval-env spec, so ``recover_environment()`` makes
    exactly this task.
    """
    spec = gym.spec(env_id)
    return dataclasses.replace(spec, kwargs={**spec.kwargs, "task": int(task)})


RECIPE_FIELDS = ("env_id", "task", "quality", "preset", "episodes", "seed")
# Salt of the reference-score rollouts' seeds: their own streams, apart from the datasets'.
REFERENCE_SALT = 15_485_863


def recipe(env_id: str, task: int, quality: str, preset: DataPreset, seed: int) -> dict:
    """The seeded recipe of a dataset: same recipe, same data (see ``DataPreset.task_groups``)."""
    return {
        "env_id": env_id,
        "task": task,
        "quality": quality,
        "preset": preset.name,
        "episodes": preset.episodes,
        "seed": seed,
    }


def existing_recipe(dataset_id_: str) -> dict | None:
    """The stored recipe of a local dataset (``None`` for one written without a recipe)."""
    metadata = open_dataset(dataset_id_).storage.metadata
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
    retrain: bool = False,
    rank: int = 0,
    world_size: int = 1,
    threads: int = 1,
) -> list[str]:
    """Build the datasets of ``tasks`` x ``qualities`` of an env; return their ids.

    Existing datasets with the same recipe (preset, episodes, seed) that read whole (every
    episode, and the content hash of their recipe) are kept and returned, so an
    interrupted run picks up where it stopped; a damaged one is rebuilt, with one line on
    stderr saying so. One with another recipe is an error unless ``force``, which
    rebuilds every requested dataset.

    A dataset's content is a function of its recipe alone: every task is trained and
    rolled out within its fixed task group (``DataPreset.task_groups``), so asking for
    tasks 0-3 or 0-49, in one call or several, gives bit-identical datasets (on the CPU).
    Behavior policies come from the cache, else the shipped ones
    (:mod:`merpo_data.shipped`), else training; ``retrain`` trains them from scratch.

    ``rank`` / ``world_size`` (``merpo-data generate`` under torchrun, see
    ``merpo_data.distributed``): every rank checks the whole request (so bad input fails
    the same way everywhere, before anything is written), then builds only its contiguous
    share of the task groups to build and returns the ids of the whole request; the other
    shares' datasets exist once every rank has returned (the CLI waits at a barrier). No
    collective is called here, and the datasets are the ones one process would build.

    ``threads``: intra-op CPU threads of the behavior policies' SAC training
    (:func:`merpo_data.store.small_op_threads`); the rollouts always run on one, so the
    datasets of given (shipped or cached) policies are the same whatever ``threads`` is.
    (SAC trained on another number of threads sums in another order: other policies.)

    One ``generate`` writes a store at a time (:func:`merpo_data.store.store_lock`: a
    second one is a one-line :class:`merpo_data.lock.LockHeld`), and it first removes the
    temporary stores that killed runs left behind.
    """
    check_device(device)
    seed = check_seed(seed)
    info = get_meta_info(env_id)
    task_list = parse_tasks(tasks, info)
    quality_list = parse_qualities(qualities)
    data_preset = get_preset(env_id, preset)
    if episodes is not None:
        if int(episodes) < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes}")
        data_preset = dataclasses.replace(data_preset, episodes=int(episodes))
    # Under torchrun rank 0 holds the store's lock for the ranks (they share the work).
    lock = store_lock() if rank == 0 else contextlib.nullcontext()
    with lock:
        remove_stale_temporaries()
        return _generate_locked(
            env_id, task_list, quality_list, data_preset, force, progress, seed, device,
            retrain, rank, world_size, threads,
        )  # fmt: skip


def _generate_locked(
    env_id, task_list, quality_list, data_preset, force, progress, seed, device, retrain,
    rank, world_size, threads,
) -> list[str]:  # fmt: skip
    info = get_meta_info(env_id)
    ensure_namespaces(env_id)

    todo: dict[str, list[int]] = {q: [] for q in quality_list}
    replace_ids: set[str] = set()
    for q in quality_list:
        for t in task_list:
            ds_id = dataset_id(env_id, t, q, data_preset.name)
            if is_local(ds_id) and not force:
                problem = dataset_problem(ds_id, RECIPE_KEY)
                if problem is None:
                    found = existing_recipe(ds_id)
                    found = None if found is None else {k: found.get(k) for k in RECIPE_FIELDS}
                    wanted = recipe(env_id, t, q, data_preset, seed)
                    if found is not None and found != wanted:
                        raise ValueError(
                            f"{ds_id} exists with another recipe {found}; pass --force "
                            f"(force=True) to rebuild it with {wanted}"
                        )
                    continue
                if rank == 0:
                    print(f"merpo-data: rebuilding: {problem}", file=sys.stderr, flush=True)
                replace_ids.add(ds_id)
            todo[q].append(t)
    need = {t for ts in todo.values() for t in ts}
    groups = [g for g in data_preset.task_groups(info.num_tasks) if need.intersection(g)]
    start, stop = shard_bounds(len(groups), rank, world_size)
    with small_op_threads(device):
        for group in groups[start:stop]:
            # Only the SAC runs on ``threads`` threads: the rollouts that write datasets
            # stay on one, so a dataset's bits never depend on --threads.
            with small_op_threads(device, threads):
                records = ensure_behavior_policies(
                    env_id, group, data_preset, seed, device, progress,
                    state_file=state_name(rank), retrain=retrain,
                )  # fmt: skip
            refs = reference_scores(env_id, group, records, data_preset, seed, device)
            for q in quality_list:
                write = [t for t in group if t in todo[q]]
                if write:
                    _build_quality(
                        env_id, group, write, q, records, refs, data_preset, seed,
                        force, replace_ids, device, progress,
                    )  # fmt: skip
    return [dataset_id(env_id, t, q, data_preset.name) for t in task_list for q in quality_list]


def reference_scores(
    env_id: str,
    group: Sequence[int],
    records: dict[int, BehaviorRecord],
    preset: DataPreset,
    seed: int,
    device="cpu",
) -> dict[int, tuple[float, float]]:
    """``task -> (ref_min_score, ref_max_score)`` of a task group (App. A.2.2 qualities).

    ``ref_max_score``: the expert checkpoint's mean return over ``preset.reference_episodes``
    episodes collected as its dataset is (stochastic, whole episodes, same vector env);
    ``ref_min_score``: the uniform policy's over as many. Both on streams of their own.
    A task whose expert does not beat the uniform policy is a one-line error: its scores
    could not normalize anything.
    """
    recs = [records[t] for t in group]
    ref = dataclasses.replace(preset, episodes=preset.reference_episodes)
    low, high = (
        mean_returns(
            collect_quality_episodes(env_id, group, q, recs, ref, seed, device, REFERENCE_SALT)
        )
        for q in ("random", "expert")
    )
    bad = [(t, lo, hi) for t, lo, hi in zip(group, low, high, strict=True) if not lo < hi]
    if bad:
        t, lo, hi = bad[0]
        raise ValueError(
            f"{env_id} task {t}: the expert policy's mean return {hi:.3f} is not above the "
            f"uniform policy's {lo:.3f} over {preset.reference_episodes} episodes "
            f"(preset {preset.name!r}, seed {seed}; {len(bad)} task(s) so); train longer "
            f"(another preset) or try --retrain with another --seed"
        )
    return {t: (float(lo), float(hi)) for t, lo, hi in zip(group, low, high, strict=True)}


def _build_quality(
    env_id, group, tasks, quality, records, refs, preset: DataPreset, seed, force,
    replace_ids, device, progress,
):  # fmt: skip
    """Roll out ``quality``'s policy for the whole task ``group`` at once (so the data of a
    task never depends on what else was asked for), then write the datasets of ``tasks``."""
    recs = [records[t] for t in group]
    episodes = collect_quality_episodes(env_id, group, quality, recs, preset, seed, device)
    bar = progress_bar(len(tasks), f"write {quality}", "dataset", disable=not progress)
    for pos, task in enumerate(group):
        if task in tasks:
            ds_id = dataset_id(env_id, task, quality, preset.name)
            write_dataset(
                env_id, task, quality, episodes[pos], recs[pos], preset, seed,
                force or ds_id in replace_ids, refs[task],
            )  # fmt: skip
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
    salt: int = 0,
) -> list[list[Episode]]:
    """``preset.episodes`` stochastic whole episodes per task of the quality's policy.

    ``tasks`` is a whole task group; ``salt`` shifts every seed (the reference rollouts').
    """
    info = get_meta_info(env_id)
    envs = make_task_vector_env(env_id, tasks, preset.rollout_envs_per_task)
    space = envs.single_action_space
    quality_seed = (
        seed * 1_000_003 + 104_729 * (QUALITIES.index(quality) + 1) + 7919 * tasks[0] + salt
    )
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
    refs: tuple[float, float] | None = None,
) -> str:
    """Write one Minari dataset atomically: build in a temporary store, then rename in.

    A kill at any moment leaves either no dataset under the id or a complete one.
    Re-creating an existing id raises unless ``force``. ``refs``: ``(ref_min_score,
    ref_max_score)`` from :func:`reference_scores` (default: the behavior record's own
    estimates). The metadata carries the recipe (preset, seed, task group, the versions
    that built it, the content hash of the data) under ``RECIPE_KEY``, and
    ``requirements`` pin those versions.
    """
    ds_id = dataset_id(env_id, task, quality, preset.name)
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
            infos=dict(ep.infos) or None,
        )
        for i, ep in enumerate(episodes)
    ]
    ref_min, ref_max = refs or (float(rec.random_return), float(rec.returns[rec.expert_index]))
    if not ref_min < ref_max:
        raise ValueError(
            f"{ds_id}: ref_min_score {ref_min:.3f} is not below ref_max_score {ref_max:.3f}; "
            "its behavior policies did not learn: train longer (another preset) or --retrain"
        )
    versions = installed_versions()
    info = get_meta_info(env_id)
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
            ref_min_score=float(ref_min),
            ref_max_score=float(ref_max),
            num_episodes_average_score=preset.reference_episodes,
            description=describe_task(env_id, task, quality, rec),
            requirements=[f"{n}=={v}" for n, v in versions.items() if v != "not installed"],
        )
        full_recipe = {
            **recipe(env_id, task, quality, preset, seed),
            "task_group": list(preset.group_of(task, info.num_tasks)),
            "versions": versions,
            "content_hash": content_hash(read_episodes(dataset, ds_id)),
        }
        dataset.storage.update_metadata({RECIPE_KEY: json.dumps(full_recipe)})
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
    env_id, task, quality, preset = parse_dataset_recipe(dataset_id_)
    if not is_local(dataset_id_):
        if not download:
            raise FileNotFoundError(
                f"dataset {dataset_id_} is not in {store_root()}; build it with "
                f"`{generate_command(env_id, [task], [quality], preset)}`"
            )
        remote = os.environ.get("MINARI_REMOTE")
        if remote:
            try:
                minari.download_dataset(dataset_id_)
            except Exception as err:  # noqa: BLE001  no copy there, no network: build it
                reason = (str(err).strip().splitlines() or [""])[0]
                print(
                    f"merpo-data: {dataset_id_} not fetched from MINARI_REMOTE={remote} "
                    f"({type(err).__name__}: {reason}); building it here",
                    file=sys.stderr,
                    flush=True,
                )
        if not is_local(dataset_id_):
            generate(env_id, tasks=[task], qualities=[quality], preset=preset)
    return open_dataset(dataset_id_)
