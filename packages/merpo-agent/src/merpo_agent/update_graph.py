"""``TaskLearners.update`` as one CUDA graph (``RACConfig.cuda_graphs``), replayed each step.

A RAC step for T tasks is a few hundred small kernels (three networks forward and back,
five Adam steps, duals, Polyak); on a GPU launching them costs more than running them.
Captured once, the whole step (losses, backward passes, fused capturable Adam steps, dual
projections, target update, dual table) is one ``graph.replay()``.

How the capture keeps the eager results (a ``gpu`` test compares them):

- Warmup: the first ``warmup_steps`` updates run eagerly on a side stream. They are real
  updates (nothing is replayed or undone), and they create the lazily built state (Adam
  moments and step counts, cuBLAS workspaces, autograd's buffers) before the capture.
- Static inputs: the batches, the noise (drawn eagerly from the learners' generator, as in
  eager mode) and the parameters of ``meta_policy`` / ``bc_policy`` are copied into
  buffers the graph reads. The policies are copied (one foreach copy each), not referenced:
  ``BehaviorCloning.select`` returns a new module every meta-iteration.
- The capture records without running; it is replayed at once for the capturing call.
- The optimizers are captured by address: ``TaskLearners.reset_optimizers`` zeroes their
  states in place once a graph exists (equal to fresh Adams); ``load_training_state``
  drops the graph (recaptured at the next update).
- One graph per input signature (shapes, and which of model / meta / bc are given).
- Metrics: the graph writes them into one static (13, T) tensor; each call returns clones.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import nn

from merpo_agent.transitions import TransitionBatch

if TYPE_CHECKING:
    from merpo_agent.task_learners import TaskLearners, UpdateNoise


def _static_module(module: nn.Module | None) -> nn.Module | None:
    return None if module is None else copy.deepcopy(module).requires_grad_(False)


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return [*module.parameters(), *module.buffers()]


class _Captured:
    """One captured graph and the static tensors it reads and writes."""

    def __init__(self, learners: TaskLearners, real, model, meta_policy, bc_policy, noise):
        self.real = TransitionBatch(*(x.clone() for x in real))
        self.model = None if model is None else TransitionBatch(*(x.clone() for x in model))
        self.noise = type(noise)(*(x.clone() for x in noise))
        self.meta_policy = _static_module(meta_policy)
        self.bc_policy = _static_module(bc_policy)
        for name in learners._optimizer_names:  # .grad is (re)allocated inside the capture
            getattr(learners, name).zero_grad(set_to_none=True)
        torch.cuda.synchronize(learners.device)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            metrics = learners._update(
                self.real, self.model, self.meta_policy, self.bc_policy, self.noise
            )
            self.names = list(metrics)
            self.metrics = torch.stack([metrics[name] for name in self.names])

    def __call__(self, real, model, meta_policy, bc_policy, noise) -> dict[str, torch.Tensor]:
        dst = [*self.real, *self.noise]
        src = [*real, *noise]
        if model is not None:
            dst += list(self.model)
            src += list(model)
        for static, given in ((self.meta_policy, meta_policy), (self.bc_policy, bc_policy)):
            if static is not None:
                dst += _tensors(static)
                src += _tensors(given)
        torch._foreach_copy_(dst, src)
        self.graph.replay()
        return dict(zip(self.names, self.metrics.clone().unbind(0), strict=True))


class UpdateGraph:
    """Runs ``learners._update`` eagerly ``warmup_steps`` times, then as CUDA graphs."""

    def __init__(self, learners: TaskLearners, warmup_steps: int = 3):
        if learners.device.type != "cuda":
            raise ValueError(
                f"RACConfig.cuda_graphs=True needs a CUDA device, got {learners.device}: "
                "pass device='cuda' or set cuda_graphs=False"
            )
        self.learners = learners
        self.warmup_left = warmup_steps
        self.graphs: dict[tuple, _Captured] = {}

    @property
    def captured(self) -> bool:
        return bool(self.graphs)

    @staticmethod
    def _signature(real, model, meta_policy, bc_policy, noise) -> tuple:
        def shapes(fields) -> tuple:
            return None if fields is None else tuple(tuple(x.shape) for x in fields)

        def params(module) -> tuple | None:
            return None if module is None else tuple(tuple(x.shape) for x in _tensors(module))

        return (
            shapes(real), shapes(model), shapes(noise), params(meta_policy), params(bc_policy),
            type(meta_policy), type(bc_policy),
        )

    def __call__(
        self,
        real: TransitionBatch,
        model: TransitionBatch | None,
        meta_policy: nn.Module | None,
        bc_policy: nn.Module | None,
        noise: UpdateNoise,
    ) -> dict[str, torch.Tensor]:
        learners = self.learners
        if self.warmup_left > 0:
            side = torch.cuda.Stream(learners.device)
            side.wait_stream(torch.cuda.current_stream(learners.device))
            with torch.cuda.stream(side):
                metrics = learners._update(real, model, meta_policy, bc_policy, noise)
            torch.cuda.current_stream(learners.device).wait_stream(side)
            self.warmup_left -= 1
            return metrics
        key = self._signature(real, model, meta_policy, bc_policy, noise)
        if key not in self.graphs:
            self.graphs[key] = _Captured(learners, real, model, meta_policy, bc_policy, noise)
        return self.graphs[key](real, model, meta_policy, bc_policy, noise)


__all__ = ["UpdateGraph"]
