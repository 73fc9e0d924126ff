"""RAC's loop (Alg. 1 lines 2-6; Alg. 2 lines 11-15) for T task slots at once.

Each step: every ``rollout.every`` updates, roll the current task policies out in the task
models from ``rollout.batch_size`` dataset states per task and push the transitions into
the FIFO model buffer (line 3); then one ``TaskLearners.update`` on a batch of
``f * batch_size`` dataset rows and ``(1 - f) * batch_size`` model-buffer rows per task
(lines 4-5: Eq. 1 and Eq. 9). Used by meta-training (J inner steps per meta-iteration) and
by the meta-test (the testing adaptation steps).

Action units: the dataset, the dynamics models and the environment use the env's action box;
RAC's tanh policies use [-1, 1] (``action_scaling``). Dataset batches are mapped to unit
actions here; the rollout policy maps its unit actions to env units for the model, and the
rollout's actions are mapped back before they enter the buffer.

Everything stays on the device: no ``.item()``, no host copy; the returned metrics are the
last update's detached (T,) tensors.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from merpo_agent.action_scaling import from_unit_actions, to_unit_actions
from merpo_agent.config import RolloutConfig
from merpo_agent.dynamics import DynamicsEnsemble
from merpo_agent.model_buffer import ModelBuffer
from merpo_agent.rollout import rollout
from merpo_agent.task_learners import TaskLearners
from merpo_agent.transitions import TransitionBatch


@dataclass
class TaskData:
    """What RAC needs of the tasks in the slots: their data and their models.

    ``sampler``: a ``merpo_data.TaskSampler``; ``task_indices`` (T,) positions in it of the
    slots' tasks; ``models``: a ``DynamicsEnsemble`` with T tasks (slot order), or None for
    the model-free variant; ``terminated_fn``: the env's ``terminated_torch``.
    """

    sampler: object
    task_indices: torch.Tensor
    models: DynamicsEnsemble | None
    terminated_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def unit_batch(batch: TransitionBatch, low: torch.Tensor, high: torch.Tensor) -> TransitionBatch:
    """The same transitions with actions mapped from the env's box to [-1, 1]."""
    return batch._replace(actions=to_unit_actions(batch.actions, low, high))


def buffer_capacity(steps: int, rollout_cfg: RolloutConfig) -> int:
    """Rows per task that hold every rollout of ``steps`` RAC updates (no eviction)."""
    refreshes = (steps + rollout_cfg.every - 1) // rollout_cfg.every
    return max(1, refreshes * rollout_cfg.batch_size * rollout_cfg.length)


def refresh_model_buffer(
    learners: TaskLearners,
    data: TaskData,
    buffer: ModelBuffer,
    rollout_cfg: RolloutConfig,
    generator: torch.Generator,
) -> None:
    """Alg. 1 line 3: roll pi_n out in the task models from dataset states; push to D_model."""
    sampler = data.sampler
    low, high = sampler.action_low, sampler.action_high
    start = sampler.sample(rollout_cfg.batch_size, data.task_indices, generator).observations

    def policy(obs: torch.Tensor) -> torch.Tensor:
        return from_unit_actions(learners.act(obs, generator=generator), low, high)

    batch = rollout(data.models, policy, start, rollout_cfg.length, data.terminated_fn, generator)
    buffer.push(unit_batch(batch, low, high))


def rac_updates(
    learners: TaskLearners,
    data: TaskData,
    buffer: ModelBuffer | None,
    steps: int,
    rollout_cfg: RolloutConfig,
    meta_policy: nn.Module | None,
    bc_policy: nn.Module | None,
    generator: torch.Generator,
    on_update: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> tuple[dict[str, torch.Tensor], TransitionBatch | None]:
    """``steps`` RAC updates of every slot; returns the last metrics and the last mixed batch
    (its states serve as rho_n of Eq. 10). ``on_update(metrics)`` sees every update's metrics
    (device tensors; the trainer accumulates a non-finite flag there)."""
    config = learners.config
    sampler = data.sampler
    low, high = sampler.action_low, sampler.action_high
    metrics: dict[str, torch.Tensor] = {}
    last_batch: TransitionBatch | None = None
    for step in range(steps):
        model_batch = None
        if config.use_model:
            if buffer is None or data.models is None:
                raise ValueError("RAC with use_model=True needs task models and a model buffer")
            if step % rollout_cfg.every == 0:
                refresh_model_buffer(learners, data, buffer, rollout_cfg, generator)
            model_batch = buffer.sample(config.model_batch_size, generator)
        real = unit_batch(
            sampler.sample(config.real_batch_size, data.task_indices, generator), low, high
        )
        metrics = learners.update(real, model_batch, meta_policy, bc_policy)
        if on_update is not None:
            on_update(metrics)
        if model_batch is None:
            last_batch = real
        else:
            last_batch = TransitionBatch(
                *(torch.cat([r, m], dim=1) for r, m in zip(real, model_batch, strict=True))
            )
    return metrics, last_batch


__all__ = [
    "TaskData",
    "buffer_capacity",
    "rac_updates",
    "refresh_model_buffer",
    "unit_batch",
]
