"""Offline meta-model (Eq. 3, Alg. 2 lines 2-7) and task-model adaptation (Eq. 4, line 8).

Eq. 3 is solved Reptile-style with a proximal inner problem (Zhou et al. 2019), Section 4.1:

    repeat K times:
        theta_n = phi_m                                  for every training task n (in a batch)
        h Adam steps on NLL_n(theta_n) + eta * ||theta_n - phi_m||^2
        phi_m <- phi_m - xi_1 * (phi_m - mean_n theta_n)

All theta_n of a meta-iteration live in ONE :class:`DynamicsEnsemble` with a task axis, so the
inner solves of all tasks are one set of batched ops (summed objective => per-task gradients).

Eq. 4 adapts phi_m* to tasks j: t Adam steps (lr 1e-4) on NLL_j + eta * ||theta_j - phi_m*||^2,
then elites on the held-out 10%. :func:`adapt` also trains a from-scratch model for the same
steps and lr and reports both held-out errors: the meta-model must make adaptation beat
training from scratch at equal steps (the point of Section 4.1).

Input normalization: phi_m and every theta_n use ONE normalizer pooled over the training
tasks' data (adapted models keep it), because phi's first-layer weights are only meaningful
for the inputs they were trained on; averaging weights that see differently scaled inputs
would average different functions. From-scratch models use their own task's normalizer.

Inner Adam state is fresh for every meta-iteration and every adaptation (each is a new
proximal problem started at phi).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from merpo_agent.dynamics import DynamicsEnsemble
from merpo_agent.dynamics_config import DynamicsConfig
from merpo_agent.holdout import HoldoutSplit
from merpo_agent.model_training import train_from_scratch, train_models

LogFn = Callable[[int, dict[str, float]], None]


@torch.no_grad()
def meta_update_(phi: DynamicsEnsemble, theta: DynamicsEnsemble, xi: float) -> None:
    """Alg. 2 line 6: ``phi <- phi - xi * (phi - mean_n theta_n)`` for every parameter."""
    for p_phi, p_theta in zip(phi.parameters(), theta.parameters(), strict=True):
        p_phi.sub_(xi * (p_phi - p_theta.mean(dim=0, keepdim=True)))


def meta_iteration(
    phi: DynamicsEnsemble,
    theta: DynamicsEnsemble,
    split: HoldoutSplit,
    task_indices: torch.Tensor,
    cfg: DynamicsConfig,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One iteration of Eq. 3 (Alg. 2 lines 3-6) on the tasks ``task_indices`` (positions).

    ``theta`` (T = len(task_indices)) is overwritten with phi, trained for
    ``cfg.meta_inner_steps`` steps, and left in its trained state; ``phi`` (T = 1) is updated
    in place. Returns the last inner objective per task (T,).
    """
    theta.copy_from_(phi)
    last = train_models(
        theta,
        split,
        cfg.meta_inner_steps,
        cfg.meta_inner_lr,
        cfg.batch_size,
        task_indices,
        eta=cfg.eta,
        anchor=phi,
        generator=generator,
        task_chunk=cfg.task_chunk,
    )
    meta_update_(phi, theta, cfg.meta_model_lr)
    return last


def meta_train(
    sampler: Any,
    cfg: DynamicsConfig,
    device: torch.device | str | None = None,
    generator: torch.Generator | None = None,
    *,
    split: HoldoutSplit | None = None,
    task_indices: torch.Tensor | None = None,
    seed: int | None = None,
    log_fn: LogFn | None = None,
    log_every: int = 100,
) -> DynamicsEnsemble:
    """Learn the meta-model phi_m* (Eq. 3) on the sampler's tasks; returns a T = 1 ensemble.

    ``task_indices``: positions in ``sampler.tasks`` to meta-train on (default all of them);
    each of the ``cfg.meta_iterations`` iterations uses all of them, or a random batch of
    ``cfg.meta_task_batch_size`` drawn with ``generator``. ``split`` (held-out rows excluded
    from training) defaults to a fresh :class:`HoldoutSplit`; pass the same one to
    :func:`adapt` so that held-out rows stay unseen. ``log_fn(k, metrics)`` is called every
    ``log_every`` iterations with the mean inner objective (the only host reads).
    """
    split = _check_split(sampler, split, cfg, device, generator)
    tasks = split._all(task_indices)
    num_train = int(tasks.shape[0])
    batch = (
        num_train if cfg.meta_task_batch_size is None else min(cfg.meta_task_batch_size, num_train)
    )
    phi = DynamicsEnsemble.from_config(
        1, sampler.obs_dim, sampler.act_dim, cfg, device=split.device, seed=seed
    )
    phi.set_normalizer_stats(*split.input_stats(tasks, pooled=True))
    theta = phi.empty_like(batch)
    for k in range(cfg.meta_iterations):
        if batch < num_train:
            chosen = tasks[
                torch.randperm(num_train, device=split.device, generator=generator)[:batch]
            ]
        else:
            chosen = tasks
        last = meta_iteration(phi, theta, split, chosen, cfg, generator)
        if log_fn is not None and log_every > 0 and (k + 1) % log_every == 0:
            log_fn(k + 1, {"inner_objective": float(last.mean())})
    return phi


def adapt(
    meta_model: DynamicsEnsemble,
    sampler: Any,
    task_indices: torch.Tensor | None = None,
    steps: int = 25,
    lr: float = 1e-4,
    eta: float = 0.1,
    generator: torch.Generator | None = None,
    *,
    split: HoldoutSplit | None = None,
    cfg: DynamicsConfig | None = None,
    compare_scratch: bool = True,
    seed: int | None = None,
) -> tuple[DynamicsEnsemble, dict[str, torch.Tensor]]:
    """Adapt phi_m* to the tasks ``task_indices`` (positions in ``sampler.tasks``), Eq. 4.

    Starts every task model at ``meta_model``, takes ``steps`` Adam steps (``lr``) on
    NLL_j + ``eta`` * ||theta_j - phi_m*||^2 (batch size ``cfg.batch_size``), and picks each
    task's elites on its held-out data. Metrics, each a (T,) tensor of held-out elite MSE:
    ``heldout_mse_meta`` (phi_m* itself), ``heldout_mse_adapted``, and, with
    ``compare_scratch``, ``heldout_mse_scratch``: a freshly initialised model (its own
    per-task normalizer, initialised with ``seed``) trained for the same steps and lr.
    """
    cfg = cfg or DynamicsConfig(
        ensemble=meta_model.ensemble,
        elites=meta_model.num_elites,
        hidden=meta_model.hidden,
        hidden_layers=meta_model.hidden_layers,
        logvar_bound_weight=meta_model.logvar_bound_weight,
    )
    if meta_model.num_tasks != 1:
        raise ValueError(f"adapt needs a meta-model with 1 task, got {meta_model.num_tasks}")
    split = _check_split(sampler, split, cfg, meta_model.device, generator)
    tasks = split._all(task_indices)
    val, mask = split.validation(tasks)

    model = meta_model.empty_like(int(tasks.shape[0]))
    model.copy_from_(meta_model)
    metrics = {
        "heldout_mse_meta": model.select_elites(val, mask).gather(1, model.elite_idx).mean(1)
    }
    train_models(
        model,
        split,
        steps,
        lr,
        cfg.batch_size,
        tasks,
        eta=eta,
        anchor=meta_model,
        generator=generator,
        task_chunk=cfg.task_chunk,
    )
    model.select_elites(val, mask)
    metrics["heldout_mse_adapted"] = model.heldout_mse(val, mask)
    if compare_scratch:
        _, metrics["heldout_mse_scratch"] = train_from_scratch(
            split, cfg, tasks, steps=steps, lr=lr, generator=generator, seed=seed
        )
    return model, metrics


def _check_split(
    sampler: Any,
    split: HoldoutSplit | None,
    cfg: DynamicsConfig,
    device: torch.device | str | None,
    generator: torch.Generator | None,
) -> HoldoutSplit:
    data_device = sampler.observations.device
    if device is not None and torch.device(device).type != data_device.type:
        raise ValueError(
            f"the task sampler's data is on {data_device} but device={device} was asked for; "
            "build the TaskSampler with the same device"
        )
    if split is None:
        return HoldoutSplit(sampler, cfg.holdout_fraction, cfg.max_holdout, generator)
    if split.sampler is not sampler:
        raise ValueError("split was built for another sampler; build HoldoutSplit(sampler)")
    return split
