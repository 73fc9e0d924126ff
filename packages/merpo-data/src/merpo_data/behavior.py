"""Behavior policies: train the per-task SAC policies of an env once, keep their checkpoints.

App. A.2.2 of the paper: each task's data comes from a stochastic SAC policy trained on
that task, with checkpoints saved along the way; different checkpoints give different
dataset qualities. This module owns the checkpoint files and the resume logic:

- ``task-NN.pt`` (one per finished task): the actor's parameters at every checkpoint,
  stacked on a leading checkpoint axis ``(C, ...)``, the env steps and evaluated
  stochastic return of each checkpoint, and the uniform-random policy's return.
  A task with this file is finished and is never trained again (unless ``--retrain``).
- Tasks train in the fixed groups of their preset (``DataPreset.task_groups``); where
  merpo-data ships an env's policies (``merpo_data.shipped``) they are used instead of
  training.
- ``train-state.pt`` (while a group of tasks trains): the full SAC state (networks,
  optimizers, replay buffer, RNG, the episodes in flight) plus the checkpoints so far,
  rewritten atomically at every checkpoint; an interrupted run resumes from it exactly (the
  same policies and datasets as an uninterrupted run), or, where it cannot, starts the
  group again with one line saying so. Under torchrun rank ``r > 0`` keeps its
  own ``train-state-rank<r>.pt`` (ranks train disjoint task groups side by side; a restart
  with the same number of processes resumes each rank's group).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import numpy as np
import torch
from merpo_envs import format_tasks, get_meta_info

from merpo_data.networks import StackedTanhGaussianPolicy
from merpo_data.presets import DataPreset
from merpo_data.progress import progress_bar
from merpo_data.rollouts import collect_episodes, make_task_vector_env, uniform_act_fn
from merpo_data.sac import InexactResume, SACTrainer, mean_returns
from merpo_data.shipped import load_shipped, shipped_path
from merpo_data.store import (  # the record helpers' home is the store; re-exported here
    BehaviorRecord,
    atomic_torch_save,
    behavior_dir,
    load_record,
    task_file,
    torch_load,
)

TRAIN_STATE = "train-state.pt"


def state_name(rank: int = 0) -> str:
    """The resume file of rank ``rank``'s training group (``TRAIN_STATE`` for rank 0)."""
    return TRAIN_STATE if rank == 0 else f"train-state-rank{int(rank)}.pt"


def stacked_actor(
    records: Sequence[BehaviorRecord],
    checkpoint: Sequence[int],
    preset: DataPreset,
    obs_dim: int,
    act_dim: int,
    device="cpu",
) -> StackedTanhGaussianPolicy:
    """A ``(T,)`` actor whose task ``i`` is checkpoint ``checkpoint[i]`` of ``records[i]``."""
    actor = StackedTanhGaussianPolicy(
        (len(records),), obs_dim, act_dim, preset.sac.hidden, preset.sac.hidden_layers
    )
    state = {
        name: torch.stack([rec.actor[name][c] for rec, c in zip(records, checkpoint, strict=True)])
        for name in actor.state_dict()
    }
    actor.load_state_dict(state)
    return actor.to(device)


def ensure_behavior_policies(
    env_id: str,
    tasks: Sequence[int],
    preset: DataPreset,
    seed: int = 0,
    device="cpu",
    progress: bool = True,
    state_file: str = TRAIN_STATE,
    retrain: bool = False,
) -> dict[int, BehaviorRecord]:
    """Every requested task's record, from its task group's policies.

    A task's policies come from its fixed task group (``preset.task_groups``), whatever
    else was asked for: the group's finished checkpoint files if any (trained in that very
    group; files that do not say so are not used); else the policies
    shipped with merpo-data for (env, preset, seed) (:mod:`merpo_data.shipped`); else the
    whole group trains as one stacked SAC. ``retrain`` ignores the shipped policies and
    the finished files and trains the groups again. A leftover ``train-state.pt`` of the
    same group is resumed; one of another group is set aside (and replaced).
    ``state_file``: the resume file's name in the checkpoint folder (one per torchrun rank).
    """
    info = get_meta_info(env_id)
    directory = behavior_dir(info.slug, preset.policy_preset, seed)
    groups = list(dict.fromkeys(preset.group_of(t, info.num_tasks) for t in tasks))
    state_path = directory / state_file
    shipped = None if retrain else shipped_path(info.slug, preset.policy_preset, seed)
    records: dict[int, BehaviorRecord] = {}
    for group in groups:
        if retrain:
            for task in group:
                task_file(directory, task).unlink(missing_ok=True)
        if all(task_file(directory, t).exists() for t in group):
            cached = {t: load_record(directory, t) for t in group}
            # Files from another grouping (older merpo-data) would break the recipe.
            if all(rec.group == tuple(group) for rec in cached.values()):
                records.update(cached)
                continue
        if shipped is not None and shipped.exists():
            records.update(load_shipped(shipped, group))
            continue
        state = None
        if state_path.exists():
            # On the CPU: generator states stay CPU ByteTensors; load_state_dict moves the rest.
            state = torch_load(state_path)
            if tuple(int(t) for t in state["trainer"]["tasks"]) != tuple(group):
                state = None
        _train_group(env_id, group, preset, seed, device, directory, state, progress, state_path)
        records.update({t: load_record(directory, t) for t in group})
    return {t: records[t] for t in tasks}


def _train_group(
    env_id, tasks, preset, seed, device, directory, state, progress, state_path=None
) -> None:
    sac = preset.sac
    state_path = directory / TRAIN_STATE if state_path is None else state_path
    # The seed of a group depends on its tasks. Within a group one generator draws every
    # task's noise as one (T, ...) tensor per call, so a task's run depends on its group:
    # per-task streams would cost a generator call per task and step (a Python loop over
    # tasks on the hot path). Groups are fixed by the preset (DataPreset.task_groups), so
    # a task always trains in the same group: any request, chunking or torchrun sharding
    # gives the same policies.
    group_seed = seed * 1_000_003 + sum((t + 1) * 7919 for t in tasks)
    trainer = SACTrainer(env_id, tasks, sac, device=device, seed=group_seed)
    history: dict = {"steps": [], "returns": [], "actor": []}
    if state is not None:
        try:
            trainer.load_state_dict(state["trainer"])
            history = state["history"]
            random_return = state["random_return"].numpy()
        except InexactResume as err:
            # Resuming inexactly would change the datasets: train the group afresh instead.
            print(
                f"merpo-data: {state_path.name}: {err}; training tasks "
                f"{format_tasks(tasks)} from the start",
                file=sys.stderr, flush=True,
            )
            trainer.close()
            trainer = SACTrainer(env_id, tasks, sac, device=device, seed=group_seed)
            state = None
    if state is None:
        random_return = _random_returns(env_id, tasks, preset, group_seed)

    def on_checkpoint(iteration: int, returns: np.ndarray) -> None:
        history["steps"].append(iteration * sac.envs_per_task)
        history["returns"].append(torch.as_tensor(returns, dtype=torch.float32))
        history["actor"].append(
            {k: v.detach().clone().cpu() for k, v in trainer.model.actor.state_dict().items()}
        )
        if iteration < sac.iterations:
            atomic_torch_save(
                {
                    "trainer": trainer.state_dict(),
                    "history": history,
                    "random_return": torch.as_tensor(random_return),
                },
                state_path,
            )
        if bar is not None:
            bar.set_postfix(mean_return=f"{float(np.mean(returns)):.2f}")

    bar = None
    if progress:
        label = f"SAC {get_meta_info(env_id).slug} tasks {format_tasks(tasks)}"
        bar = progress_bar(sac.iterations, label, "it", initial=trainer.iteration)
    try:
        trainer.train(on_checkpoint, progress=bar)
    finally:
        trainer.close()
        if bar is not None:
            bar.close()
    returns = torch.stack(history["returns"])  # (C, T)
    for pos, task in enumerate(tasks):
        atomic_torch_save(
            {
                "task": task,
                "steps": torch.tensor(history["steps"]),
                "returns": returns[:, pos].clone(),
                "random_return": torch.tensor(float(random_return[pos])),
                "actor": {
                    k: torch.stack([a[k][pos] for a in history["actor"]])
                    for k in history["actor"][0]
                },
                "preset": preset.policy_preset,
                "group": torch.tensor(tasks),
            },
            task_file(directory, task),
        )
    state_path.unlink(missing_ok=True)


def _random_returns(env_id, tasks, preset: DataPreset, seed: int) -> np.ndarray:
    envs = make_task_vector_env(env_id, tasks, preset.sac.eval_envs_per_task)
    try:
        act = uniform_act_fn(envs.single_action_space, seed)
        return mean_returns(
            collect_episodes(envs, len(tasks), act, preset.random_eval_episodes, seed)
        )
    finally:
        envs.close()
