"""Random seeds as one more batch axis: what MerPO's seed batch (``seed_batch``) and the
baselines' (``baselines.run``) share.

``merpo-agent train --seeds 0-4`` (``arguments.parse_seeds``) trains S seeds of one setting
in one process. Each seed has its own run directory (``<run-dir>/seed-<s>``, the layout
``reproduce`` and ``tune`` use: ``run_layout.seed_run_dir``), written exactly as a run of
that seed alone writes it, so ``evaluate``, ``plot``, ``load_policy`` and a resume read it
as they read any run.

The seeds are first built one by one, each exactly as alone (its own seeded networks, data
generator and setup), as "members"; their training state is then stacked into modules
with a seed axis (:func:`stack_state`: every tensor of seed s is block s of the stacked
tensor along its leading axis), trained as one batch, and cut back into the members
(:func:`unstack_state`) whenever a member saves or is evaluated.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

# ---- stacking the members' states --------------------------------------------------------


def _stack(parts: list[torch.Tensor], like: torch.Tensor) -> torch.Tensor:
    """The seeds' tensors as one of ``like``'s shape (seed-major). A scalar that stays a
    scalar (an optimizer's step count) is one value for every seed: the seeds step
    together."""
    if like.dim() == 0 and parts[0].dim() == 0:
        if any(not torch.equal(p, parts[0]) for p in parts[1:]):
            raise ValueError("stack_state: the seeds' step counts differ; train seeds "
                             "that stand at the same step together")
        return parts[0].clone()
    return torch.stack([p.to(like.device) for p in parts]).reshape(like.shape)


def stack_state(own: Any, parts: list[Any]) -> Any:
    """The members' nested states (dicts, lists, tensors: a ``state_dict`` or a training
    state) stacked into the shapes of ``own``, the seed-stacked module's own state of the
    same structure. Other leaves (numbers, strings) are the first member's."""
    if isinstance(own, torch.Tensor):
        return _stack(parts, own)
    if isinstance(own, dict):
        return {k: stack_state(own[k], [p[k] for p in parts]) for k in own}
    if isinstance(own, (list, tuple)):
        return type(own)(stack_state(o, [p[i] for p in parts]) for i, o in enumerate(own))
    return parts[0]


def unstack_state(stacked: Any, seeds: int, seed: int, like: Any) -> Any:
    """Seed ``seed``'s part of a state :func:`stack_state` made, in the shapes of ``like``
    (a member's state of the same structure); tensors are copies."""
    if isinstance(stacked, torch.Tensor):
        if stacked.dim() == 0 and like.dim() == 0:
            return stacked.clone()
        return stacked.reshape(seeds, *like.shape)[seed].clone()
    if isinstance(stacked, dict):
        return {k: unstack_state(stacked[k], seeds, seed, like[k]) for k in stacked}
    if isinstance(stacked, (list, tuple)):
        return type(stacked)(unstack_state(v, seeds, seed, like[i])
                             for i, v in enumerate(stacked))
    return stacked


def optimizer_state_like(optimizer: torch.optim.Optimizer, member_state: dict) -> dict:
    """A ``torch.optim`` state dict shaped for ``optimizer`` (its parameters' stacked shapes)
    with the structure of a member's ``member_state``: what :func:`stack_state` stacks into
    (the stacked optimizer holds no state before it is loaded)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    state = {
        index: {name: (value if value.dim() == 0 else params[index].detach())
                for name, value in entry.items()}
        for index, entry in member_state["state"].items()
    }
    return {"state": state, "param_groups": member_state["param_groups"]}


class StackedView:
    """A module run on other parameters of its layout (``torch.func.functional_call``): some
    seeds' rows of a seed-stacked module (:meth:`rows`), or modules of one layout with their
    parameters concatenated along the leading (stack) axis (:meth:`cat`)."""

    def __init__(self, module: nn.Module, params: dict[str, torch.Tensor]):
        self.module, self.params = module, params

    @classmethod
    def rows(cls, module: nn.Module, start: int, stop: int) -> StackedView:
        return cls(module, {name: p[start:stop] for name, p in module.named_parameters()})

    @classmethod
    def cat(cls, modules: list[nn.Module]) -> StackedView:
        named = [dict(m.named_parameters()) for m in modules]
        return cls(modules[0], {name: torch.cat([n[name] for n in named]) for name in named[0]})

    def parameters(self) -> Iterator[torch.Tensor]:
        return iter(self.params.values())

    def __call__(self, *args: Any) -> Any:
        return functional_call(self.module, self.params, args)


__all__ = ["StackedView", "optimizer_state_like", "stack_state", "unstack_state"]
