"""Adam as the hot paths build it.

- :func:`adam_options`: keyword arguments for ``torch.optim.Adam`` (the fused kernel where the
  device has one: one kernel per step for all parameters, step counts on the device).
- :class:`TaskAdam`: Adam over STACKED per-task parameters (leading task axis) with one step
  count per task. RAC's task learners persist across meta-iterations (Alg. 2 line 1) and a
  task is visited a varying number of times, so each task needs its own bias correction;
  ``torch.optim.Adam`` keeps one step count per parameter tensor, shared by every task of a
  stack. The moments and step counts are plain tensors with the task axis first, so a
  learner table gathers and scatters them with the parameters (``learner_table``), and their
  addresses never change (CUDA-graph capture reads them in place).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def adam_options(device: torch.device | str, capturable: bool = False) -> dict:
    """Adam keyword arguments: ``fused=True`` where torch has a fused kernel for the device
    (CPU, CUDA, ...), else ``foreach=True``; ``capturable`` for CUDA-graph capture."""
    device = torch.device(device)
    options: dict = {"capturable": True} if capturable else {}
    if device.type in _fused_adam_devices():
        options["fused"] = True
    else:
        options["foreach"] = True
    return options


def _fused_adam_devices() -> list[str]:
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
    except ImportError:  # an older torch: fused Adam on CUDA only
        return ["cuda"]
    return list(_get_fused_kernels_supported_devices())


class TaskAdam:
    """Adam (Kingma & Ba 2015, torch's update rule) with a step count per task.

    Every parameter has the task axis first (``(T, ...)``). For task n after its k-th step:
    ``m <- b1 m + (1 - b1) g``, ``v <- b2 v + (1 - b2) g^2``,
    ``p <- p - lr / (1 - b1^k) * m / (sqrt(v) / sqrt(1 - b2^k) + eps)``, with k counted per
    task, so a task's trajectory does not depend on which other tasks shared its batch.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        num_tasks: int,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ):
        self.params = list(params)
        for p in self.params:
            if p.shape[0] != num_tasks:
                raise ValueError(
                    f"TaskAdam: parameter of shape {tuple(p.shape)} has no leading task axis "
                    f"of size {num_tasks}"
                )
        self.lr, (self.beta1, self.beta2), self.eps = lr, betas, eps
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]
        device = self.params[0].device
        self.steps = torch.zeros(num_tasks, dtype=torch.float32, device=device)

    def state_tensors(self) -> list[torch.Tensor]:
        """Every state tensor, task axis first: moments then the step counts."""
        return [*self.exp_avg, *self.exp_avg_sq, self.steps]

    def reset(self) -> None:
        """Zero moments and step counts in place (equal to a fresh optimizer)."""
        for tensor in self.state_tensors():
            tensor.zero_()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.zero_()

    @torch.no_grad()
    def step(self) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        self.steps.add_(1.0)
        torch._foreach_lerp_(self.exp_avg, grads, 1.0 - self.beta1)
        torch._foreach_mul_(self.exp_avg_sq, self.beta2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, value=1.0 - self.beta2)
        step_size = self.lr / (1.0 - torch.pow(self.beta1, self.steps))
        bias2_sqrt = (1.0 - torch.pow(self.beta2, self.steps)).sqrt()
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True):
            shape = (-1,) + (1,) * (p.dim() - 1)
            denom = (v.sqrt() / bias2_sqrt.view(shape)).add_(self.eps)
            p.sub_(m * step_size.view(shape) / denom)

    def state_dict(self) -> dict:
        return {"exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq, "steps": self.steps}

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Copy a saved state in place (the tensors keep their addresses)."""
        dst = self.state_tensors()
        src = [*state["exp_avg"], *state["exp_avg_sq"], state["steps"]]
        if len(dst) != len(src) or any(d.shape != s.shape for d, s in zip(dst, src, strict=True)):
            raise ValueError("TaskAdam.load_state_dict: the saved state has other shapes")
        for d, s in zip(dst, src, strict=True):
            d.copy_(s)


__all__ = ["TaskAdam", "adam_options"]
