"""Training the dynamics ensembles: the optimisation shared by the meta-model (Eq. 3, Alg. 2
lines 3-6), task adaptation (Eq. 4, line 8) and from-scratch training (Table 1).

:func:`proximal_penalty` (Eq. 3-4's eta term), :func:`train_step`, :class:`ChunkedTrainer`
(tasks in chunks of C, each chunk one set of batched ops; every task's objective is its own,
so the result does not depend on C), :func:`train_models` and :func:`train_from_scratch`.
``merpo_agent.meta_model`` builds on these.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merpo_agent.dynamics import DynamicsEnsemble
from merpo_agent.dynamics_config import DynamicsConfig
from merpo_agent.holdout import HoldoutSplit
from merpo_agent.optimizers import adam_options
from merpo_agent.task_slice import TaskSlice, task_chunks
from merpo_agent.transitions import TransitionBatch


def proximal_penalty(
    model: DynamicsEnsemble, anchor: Sequence[torch.Tensor] | DynamicsEnsemble
) -> torch.Tensor:
    """``||theta_n - phi||_2^2`` per task (T,), summed over every parameter (Eq. 3-4).

    ``anchor``: the meta-model (T = 1, broadcast) or per-task anchors; used detached.
    """
    if isinstance(anchor, DynamicsEnsemble):
        anchor = list(anchor.parameters())
    total = torch.zeros(model.num_tasks, device=model.device)
    for p, a in zip(model.parameters(), anchor, strict=True):
        total = total + (p - a.detach()).square().flatten(1).sum(dim=1)
    return total


def train_step(
    model: DynamicsEnsemble,
    optimizer: torch.optim.Optimizer,
    batch: TransitionBatch,
    eta: float = 0.0,
    anchor: Sequence[torch.Tensor] | DynamicsEnsemble | None = None,
) -> torch.Tensor:
    """One gradient step on ``sum_n [NLL_n(theta_n) + eta * ||theta_n - anchor||^2]``.

    Summing over tasks (not averaging) gives each task's parameters exactly the gradient of its
    own objective, so T stacked task models step as T separate ones would. Returns the detached
    per-task objective (T,).
    """
    loss = model.nll_loss(batch)
    if anchor is not None and eta != 0.0:
        loss = loss + eta * proximal_penalty(model, anchor)
    optimizer.zero_grad(set_to_none=True)
    loss.sum().backward()
    optimizer.step()
    return loss.detach()


class ChunkedTrainer:
    """Adam on a model's T tasks, C tasks per batched op (Eq. 3 inner steps, Eq. 4).

    The tasks are cut into chunks of ``model.chunk_size(task_chunk)`` tasks
    (``task_slice.task_chunks``); each chunk is a :meth:`DynamicsEnsemble.task_rows` view
    of the model with its own Adam, so training a chunk trains the model's rows in place
    and nothing is copied back. :meth:`step` takes one batch of all T tasks (drawn once,
    with the generator as whole-batch training draws it) and gives each chunk its rows:
    each task's objective and Adam state are its own, so the parameters after any number
    of steps do not depend on C. One chunk (a GPU's choice) is the model itself.
    """

    def __init__(self, model: DynamicsEnsemble, lr: float, task_chunk: int = 0):
        size = model.chunk_size(task_chunk)
        self.chunks: list[TaskSlice | None] = (
            [None] if size >= model.num_tasks else task_chunks(model.num_tasks, size)
        )
        self.parts = [model if c is None else model.task_rows(c) for c in self.chunks]
        options = adam_options(model.device)
        self.optimizers = [torch.optim.Adam(p.parameters(), lr=lr, **options) for p in self.parts]

    def step(
        self,
        batch: TransitionBatch,
        eta: float = 0.0,
        anchor: Sequence[torch.Tensor] | DynamicsEnsemble | None = None,
    ) -> torch.Tensor:
        """One :func:`train_step` of every chunk on its rows of ``batch`` (fields (T, ...))
        and of per-task anchors (a T = 1 anchor is shared); the per-task objective (T,)."""
        if isinstance(anchor, DynamicsEnsemble):
            anchor = list(anchor.parameters())
        losses = []
        for chunk, part, optimizer in zip(self.chunks, self.parts, self.optimizers, strict=True):
            rows, rows_anchor = batch, anchor
            if chunk is not None:
                rows = TransitionBatch(*(chunk.take(x) for x in batch))
                if anchor is not None:
                    rows_anchor = [a if a.shape[0] == 1 else chunk.take(a) for a in anchor]
            losses.append(train_step(part, optimizer, rows, eta, rows_anchor))
        return losses[0] if len(losses) == 1 else torch.cat(losses)


def train_models(
    model: DynamicsEnsemble,
    split: HoldoutSplit,
    steps: int,
    lr: float,
    batch_size: int,
    task_indices: torch.Tensor | None = None,
    eta: float = 0.0,
    anchor: Sequence[torch.Tensor] | DynamicsEnsemble | None = None,
    generator: torch.Generator | None = None,
    task_chunk: int = 0,
) -> torch.Tensor:
    """``steps`` Adam steps of :func:`train_step` on the tasks ``task_indices`` of ``split``.

    A fresh Adam each call (each call is a new optimisation problem). Each member gets its own
    batch of ``batch_size`` training transitions per step. The tasks train in chunks of
    ``model.chunk_size(task_chunk)`` (:class:`ChunkedTrainer`; 0 = the device's choice), with
    the same result for every chunk size. Returns the last per-task objective.
    """
    trainer = ChunkedTrainer(model, lr, task_chunk)
    last = torch.full((model.num_tasks,), float("nan"), device=model.device)
    for _ in range(steps):
        batch = split.sample_train(
            batch_size, task_indices, members=model.ensemble, generator=generator
        )
        last = trainer.step(batch, eta, anchor)
    return last


def train_from_scratch(
    split: HoldoutSplit,
    cfg: DynamicsConfig,
    task_indices: torch.Tensor | None = None,
    steps: int | None = None,
    lr: float | None = None,
    generator: torch.Generator | None = None,
    seed: int | None = None,
) -> tuple[DynamicsEnsemble, torch.Tensor]:
    """Task models trained without the meta-model (per-task normalizer, elites selected).

    Defaults: ``cfg.scratch_steps`` steps at ``cfg.scratch_lr``. Returns the model and its
    elites' held-out MSE per task (T,).
    """
    sampler = split.sampler
    tasks = split._all(task_indices)
    model = DynamicsEnsemble.from_config(
        tasks.shape[0], sampler.obs_dim, sampler.act_dim, cfg, device=split.device, seed=seed
    )
    model.set_normalizer_stats(*split.input_stats(tasks))
    train_models(
        model,
        split,
        cfg.scratch_steps if steps is None else steps,
        cfg.scratch_lr if lr is None else lr,
        cfg.batch_size,
        tasks,
        generator=generator,
        task_chunk=cfg.task_chunk,
    )
    val, mask = split.validation(tasks)
    model.select_elites(val, mask)
    return model, model.heldout_mse(val, mask)


__all__ = ["ChunkedTrainer", "proximal_penalty", "train_from_scratch", "train_models",
           "train_step"]
