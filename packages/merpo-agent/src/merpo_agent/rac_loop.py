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

Under torchrun (``TaskData.task_slice``) the learners, models and buffer hold only this
rank's slots of the task batch, while every random tensor (dataset rows, start states,
rollout policy noise, model noise, buffer rows, the update's noise) is drawn for the whole
batch and cut to those slots (``merpo_agent.task_slice``): each rank computes exactly the
rows that a single process computes for its slots. The same cut runs a chunk of the batch
in one process. With the slots of several seeds (``merpo_agent.seed_batch``) the generator
is a ``task_slice.SeedGenerators``: each seed draws its own slots' randomness from its own
generator, as it does alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from merpo_data.networks import tanh_gaussian_rsample
from torch import nn

from merpo_agent.action_scaling import from_unit_actions, to_unit_actions
from merpo_agent.config import RolloutConfig
from merpo_agent.dynamics import DynamicsEnsemble
from merpo_agent.model_buffer import ModelBuffer
from merpo_agent.rollout import rollout
from merpo_agent.task_learners import TaskLearners
from merpo_agent.task_slice import Generators, TaskSlice, draw_slots, sample_tasks
from merpo_agent.transitions import TransitionBatch


@dataclass
class TaskData:
    """What RAC needs of the tasks in the slots: their data and their models.

    ``sampler``: a ``merpo_data.TaskSampler``; ``task_indices`` (T,) positions in it of the
    slots' tasks; ``models``: a ``DynamicsEnsemble`` with T tasks (slot order), or None for
    the model-free variant; ``terminated_fn``: the env's ``terminated_torch``.

    ``task_slice`` (torchrun): the learners, ``models`` and the buffer hold only the slots
    ``[start, stop)`` of the batch; ``task_indices`` still lists the WHOLE batch's tasks
    (randomness is drawn for all of them, see the module docstring). In a seed batch
    ``task_indices`` holds every seed's tasks, seed-major.
    """

    sampler: object
    task_indices: torch.Tensor
    models: DynamicsEnsemble | None
    terminated_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
    task_slice: TaskSlice | None = None

    @property
    def local_task_indices(self) -> torch.Tensor:
        """Positions in the sampler of the tasks this process's slots hold."""
        return self.task_indices if self.task_slice is None else self.task_slice.take(
            self.task_indices
        )

    def sample(self, batch_size: int, generator: Generators) -> TransitionBatch:
        """``batch_size`` dataset rows per local slot (drawn for the whole batch, each seed's
        tasks from its own generator, then cut)."""
        batch = sample_tasks(self.sampler, batch_size, self.task_indices, generator)
        if self.task_slice is None:
            return batch
        return TransitionBatch(*(self.task_slice.take(field) for field in batch))


class _SlicedModel:
    """A task model that holds a slice of the batch, for ``rollout``: its ``step`` draws the
    whole batch's randomness (``DynamicsEnsemble.step(task_slice=...)``)."""

    def __init__(self, model: DynamicsEnsemble, task_slice: TaskSlice):
        self.model, self.task_slice = model, task_slice

    @property
    def num_tasks(self) -> int:
        return self.model.num_tasks

    def step(self, obs: torch.Tensor, act: torch.Tensor, generator=None):
        return self.model.step(obs, act, generator=generator, task_slice=self.task_slice)


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
    generator: Generators,
) -> None:
    """Alg. 1 line 3: roll pi_n out in the task models from dataset states; push to D_model."""
    sampler = data.sampler
    low, high = sampler.action_low, sampler.action_high
    start = data.sample(rollout_cfg.batch_size, generator).observations
    task_slice = data.task_slice

    def policy(obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # learners.act's sample, its noise drawn for the slots
            mean, log_std = learners.actor(obs)
            noise = draw_slots(
                generator,
                lambda shape, g: torch.randn(shape, device=mean.device, dtype=mean.dtype,
                                             generator=g),
                mean.shape, task_slice,
            )
            action = tanh_gaussian_rsample(mean, log_std, noise, learners.seeds)[0]
        return from_unit_actions(action, low, high)

    models = data.models if task_slice is None else _SlicedModel(data.models, task_slice)
    batch = rollout(models, policy, start, rollout_cfg.length, data.terminated_fn, generator)
    buffer.push(unit_batch(batch, low, high))


def rac_updates(
    learners: TaskLearners,
    data: TaskData,
    buffer: ModelBuffer | None,
    steps: int,
    rollout_cfg: RolloutConfig,
    meta_policy: Callable | None,
    bc_policy: nn.Module | None,
    generator: Generators,
    on_update: Callable[[dict[str, torch.Tensor]], None] | None = None,
) -> tuple[dict[str, torch.Tensor], TransitionBatch | None]:
    """``steps`` RAC updates of every slot; returns the last metrics and the last mixed batch
    (its states serve as rho_n of Eq. 10). ``on_update(metrics)`` sees every update's metrics
    (device tensors; the trainer accumulates a non-finite flag there). ``generator`` draws
    the data, rollouts and buffer rows; the update's noise comes from ``learners.generator``
    (each a ``SeedGenerators`` in a seed batch)."""
    config = learners.config
    low, high = data.sampler.action_low, data.sampler.action_high
    metrics: dict[str, torch.Tensor] = {}
    real: TransitionBatch | None = None
    model_batch: TransitionBatch | None = None
    for step in range(steps):
        model_batch = None
        if config.use_model:
            if buffer is None or data.models is None:
                raise ValueError("RAC with use_model=True needs task models and a model buffer")
            if step % rollout_cfg.every == 0:
                refresh_model_buffer(learners, data, buffer, rollout_cfg, generator)
            model_batch = buffer.sample(config.model_batch_size, generator, data.task_slice)
        real = unit_batch(data.sample(config.real_batch_size, generator), low, high)
        noise = learners.draw_noise(real, model_batch, data.task_slice)
        metrics = learners.update(real, model_batch, meta_policy, bc_policy, noise=noise)
        if on_update is not None:
            on_update(metrics)
    if real is None or model_batch is None:  # no step, or the model-free variant
        return metrics, real
    # only the last step's mixed batch is returned: concatenate it once, after the loop
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
