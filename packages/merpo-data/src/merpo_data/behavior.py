"""Behavior policies: train the per-task SAC policies of an env once, keep their checkpoints.

App. A.2.2 of the paper: each task's data comes from a stochastic SAC policy trained on
that task, with checkpoints saved along the way; different checkpoints give different
dataset qualities. This module owns the checkpoint files and the resume logic:

- ``task-NN.pt`` (one per finished task): the actor's parameters at every checkpoint,
  stacked on a leading checkpoint axis ``(C, ...)``, the env steps and evaluated
  stochastic return of each checkpoint, and the uniform-random policy's return.
  A task with this file is finished and is never trained again.
- ``train-state.pt`` (while a group of tasks trains): the full SAC state (networks,
  optimizers, replay buffer, RNG) plus the checkpoints so far, rewritten atomically at every
  checkpoint; an interrupted run resumes from it. Under torchrun rank ``r > 0`` keeps its
  own ``train-state-rank<r>.pt`` (ranks train disjoint task shards side by side; a restart
  with the same number of processes resumes each rank's group).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from merpo_envs import format_tasks, get_meta_info
from tqdm.auto import tqdm

from merpo_data.networks import StackedTanhGaussianPolicy
from merpo_data.presets import DataPreset
from merpo_data.rollouts import collect_episodes, make_task_vector_env, uniform_act_fn
from merpo_data.sac import SACTrainer, mean_returns
from merpo_data.store import atomic_torch_save, behavior_dir, torch_load

TRAIN_STATE = "train-state.pt"


def state_name(rank: int = 0) -> str:
    """The resume file of rank ``rank``'s training group (``TRAIN_STATE`` for rank 0)."""
    return TRAIN_STATE if rank == 0 else f"train-state-rank{int(rank)}.pt"


@dataclass
class BehaviorRecord:
    """One task's behavior-policy checkpoints (see the module docstring)."""

    task: int
    steps: np.ndarray  # (C,) env steps of the task at each checkpoint
    returns: np.ndarray  # (C,) evaluated stochastic return of each checkpoint
    random_return: float  # mean return of uniform actions (ref_min_score)
    actor: dict[str, torch.Tensor]  # parameter name -> (C, ...)

    @property
    def num_checkpoints(self) -> int:
        return len(self.steps)

    @property
    def expert_index(self) -> int:
        """The best checkpoint (``expert`` quality)."""
        return int(np.argmax(self.returns))

    @property
    def medium_index(self) -> int:
        """The checkpoint closest to halfway between random and expert (``medium`` quality)."""
        halfway = 0.5 * (self.random_return + float(self.returns[self.expert_index]))
        return int(np.argmin(np.abs(self.returns - halfway)))


def task_file(directory: Path, task: int) -> Path:
    return directory / f"task-{task:02d}.pt"


def load_record(directory: Path, task: int) -> BehaviorRecord:
    state = torch_load(task_file(directory, task))
    return BehaviorRecord(
        task=int(state["task"]),
        steps=state["steps"].numpy(),
        returns=state["returns"].numpy(),
        random_return=float(state["random_return"]),
        actor=state["actor"],
    )


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
) -> dict[int, BehaviorRecord]:
    """Train the tasks that have no finished checkpoint file yet; return every task's record.

    Tasks train in chunks of ``preset.tasks_per_chunk`` (one stacked SAC per chunk). A
    leftover ``train-state.pt`` whose tasks all still need training is resumed first;
    one whose tasks are finished or not requested is set aside (and replaced later).
    ``state_file``: the resume file's name in the checkpoint folder (one per torchrun rank).
    """
    info = get_meta_info(env_id)
    directory = behavior_dir(info.slug, preset.name, seed)
    missing = [t for t in tasks if not task_file(directory, t).exists()]
    state_path = directory / state_file
    groups: list[tuple[tuple[int, ...], dict | None]] = []
    if missing and state_path.exists():
        # On the CPU: generator states must stay CPU ByteTensors; load_state_dict moves the rest.
        state = torch_load(state_path)
        state_tasks = tuple(int(t) for t in state["trainer"]["tasks"])
        if set(state_tasks) <= set(missing):
            groups.append((state_tasks, state))
            missing = [t for t in missing if t not in state_tasks]
    for start in range(0, len(missing), preset.tasks_per_chunk):
        groups.append((tuple(missing[start : start + preset.tasks_per_chunk]), None))
    for group_tasks, state in groups:
        _train_group(
            env_id, group_tasks, preset, seed, device, directory, state, progress, state_path
        )
    return {t: load_record(directory, t) for t in tasks}


def _train_group(
    env_id, tasks, preset, seed, device, directory, state, progress, state_path=None
) -> None:
    sac = preset.sac
    state_path = directory / TRAIN_STATE if state_path is None else state_path
    # The seed of a group depends on its tasks, so a task trained alone or in a group of
    # the same tasks gets the same run. Within a group one generator draws every task's
    # noise as one (T, ...) tensor per call, so a task's run also depends on its group:
    # per-task streams would cost a generator call per task and step (a Python loop over
    # tasks on the hot path). Hence torchrun shards (other groups) give equivalent
    # behavior policies (same budget, recipe and checkpoints), not bit-identical ones.
    group_seed = seed * 1_000_003 + sum((t + 1) * 7919 for t in tasks)
    trainer = SACTrainer(env_id, tasks, sac, device=device, seed=group_seed)
    history: dict = {"steps": [], "returns": [], "actor": []}
    if state is None:
        random_return = _random_returns(env_id, tasks, preset, group_seed)
    else:
        trainer.load_state_dict(state["trainer"])
        history = state["history"]
        random_return = state["random_return"].numpy()

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
        bar = tqdm(total=sac.iterations, initial=trainer.iteration, desc=label, unit="it")
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
                "preset": preset.name,
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
