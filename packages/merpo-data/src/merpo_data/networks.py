"""Stacked networks: many independent MLPs evaluated as one set of batched matmuls.

Every parameter carries leading "stack" axes, e.g. ``(T,)`` for one network per task or
``(T, E)`` for an ensemble of E members per task (E = 2 twin critics, E = 7 dynamics
members). A forward pass over inputs ``(*stack, N, in)`` is one ``baddbmm`` per layer, never
a Python loop over tasks or members.

Shared by the behavior-policy SAC of merpo-data and by merpo-agent (RAC, dynamics).
Also holds the tanh-squashed Gaussian policy math both of them use.

Seed blocks: merpo-agent trains several random seeds of a run as one more batch axis, the
seeds' slots laid out seed-major along the leading axis (``seeds`` equal blocks). Every op
here computes each row on its own, so a block's values equal those of the same rows
computed alone, with two exceptions on the CPU (measured with MKL; one torch thread):

- a few element-wise kernels (softplus, atanh, SiLU, sigmoid and their gradients) round the
  vectorized part of a contiguous run and its scalar tail differently, so an element's
  value depends on where the run ends: :func:`by_seed` runs them block by block, each
  block a run of its own as it is alone;
- MKL's matmul kernels for an output 5 to 11 columns wide round by the output's memory
  alignment, which a seed's block of a batched output does not keep: :func:`seed_baddbmm`
  runs such layers seed by seed, each output allocated as alone (``StackedLinear`` does
  where its ``seed_block`` says how many stack entries a seed has).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0
# Dataset actions at the bound would give atanh(+-1) = inf: clip them inside (-1, 1).
ATANH_EPS = 1e-6


class StackedLinear(nn.Module):
    """``y = x @ W + b`` with independent ``W (*stack, in, out)`` and ``b (*stack, 1, out)``.

    Initialised like ``nn.Linear`` (uniform in +-1/sqrt(in)), independently per stack entry.
    ``seed_block``: entries of the leading stack axis per seed where the stack holds several
    seeds' networks (:func:`set_seed_block`; None: one seed).
    """

    seed_block: int | None = None

    def __init__(self, stack_shape: Sequence[int], in_features: int, out_features: int):
        super().__init__()
        self.stack_shape = tuple(int(s) for s in stack_shape)
        self.in_features = in_features
        self.out_features = out_features
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(
            torch.empty(*self.stack_shape, in_features, out_features).uniform_(-bound, bound)
        )
        self.bias = nn.Parameter(
            torch.empty(*self.stack_shape, 1, out_features).uniform_(-bound, bound)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the stack of the weight itself (not ``stack_shape``): a view of some of its rows
        # (``torch.func.functional_call`` with ``weight[a:b]``) runs as a smaller stack
        stack = self.weight.shape[:-2]
        n = x.shape[-2]
        flat_x = x.reshape(-1, n, self.in_features)
        flat_w = self.weight.reshape(-1, self.in_features, self.out_features)
        flat_b = self.bias.reshape(-1, 1, self.out_features)
        seeds = 1 if self.seed_block is None else stack[0] // self.seed_block
        out = seed_baddbmm(flat_b, flat_x, flat_w, seeds)
        return out.reshape(*stack, n, self.out_features)

    def extra_repr(self) -> str:
        return f"stack={self.stack_shape}, in={self.in_features}, out={self.out_features}"


class StackedMLP(nn.Module):
    """``hidden_layers`` hidden layers of width ``hidden``, then a linear output layer."""

    def __init__(
        self,
        stack_shape: Sequence[int],
        in_features: int,
        out_features: int,
        hidden: int,
        hidden_layers: int,
        activation: type[nn.Module] = nn.ReLU,
    ):
        super().__init__()
        sizes = [in_features] + [hidden] * hidden_layers + [out_features]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            layers.append(StackedLinear(stack_shape, n_in, n_out))
            if i < len(sizes) - 2:
                layers.append(activation())
        self.net = nn.Sequential(*layers)
        self.stack_shape = tuple(stack_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class StackedTanhGaussianPolicy(nn.Module):
    """A tanh-squashed Gaussian policy per stack entry; actions in (-1, 1) (rescale outside).

    ``forward`` returns the pre-tanh ``mean`` and clamped ``log_std`` of shape (*stack, N, act_dim).
    """

    def __init__(
        self,
        stack_shape: Sequence[int],
        obs_dim: int,
        act_dim: int,
        hidden: int,
        hidden_layers: int,
    ):
        super().__init__()
        self.act_dim = act_dim
        self.trunk = StackedMLP(stack_shape, obs_dim, 2 * act_dim, hidden, hidden_layers)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.trunk(obs).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def sample(
        self, obs: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised sample and its log-probability (summed over action dims)."""
        mean, log_std = self(obs)
        return tanh_gaussian_sample(mean, log_std, generator)

    def deterministic(self, obs: torch.Tensor) -> torch.Tensor:
        mean, _ = self(obs)
        return torch.tanh(mean)


def tanh_gaussian_sample(
    mean: torch.Tensor, log_std: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``a = tanh(mean + std * eps)`` (reparameterised) and ``log pi(a)`` with the tanh log-det."""
    noise = torch.randn(mean.shape, device=mean.device, dtype=mean.dtype, generator=generator)
    pre_tanh = mean + log_std.exp() * noise
    log_prob = _normal_log_prob(pre_tanh, mean, log_std) - _tanh_log_det(pre_tanh)
    return torch.tanh(pre_tanh), log_prob.sum(-1)


def tanh_gaussian_log_prob(
    mean: torch.Tensor, log_std: torch.Tensor, action: torch.Tensor, seeds: int = 1
) -> torch.Tensor:
    """``log pi(a)`` of given actions in [-1, 1] (e.g. dataset actions), summed over dims.

    Actions are clipped to (-1 + eps, 1 - eps) before ``atanh`` so that actions at the
    bound give a finite log-probability (the behavior term of Eq. 9). ``seeds``: the seed
    blocks of the leading axis (:func:`by_seed`).
    """
    clipped = action.clamp(-1.0 + ATANH_EPS, 1.0 - ATANH_EPS)
    pre_tanh = by_seed(torch.atanh, clipped, seeds)
    log_prob = _normal_log_prob(pre_tanh, mean, log_std) - _tanh_log_det(pre_tanh, seeds)
    return log_prob.sum(-1)


def _normal_log_prob(x: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - mean) * torch.exp(-log_std)) ** 2 - log_std - 0.5 * math.log(2 * math.pi)


def _tanh_log_det(pre_tanh: torch.Tensor, seeds: int = 1) -> torch.Tensor:
    # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)), numerically stable for large |u|.
    # (The ops in this order: autograd sums a tensor's gradients in the reverse order of the
    # ops that used it, so another order would round pre_tanh's gradient differently.)
    shifted = math.log(2.0) - pre_tanh
    return 2.0 * (shifted - by_seed(nn.functional.softplus, -2.0 * pre_tanh, seeds))


def tanh_gaussian_rsample(
    mean: torch.Tensor, log_std: torch.Tensor, noise: torch.Tensor, seeds: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``tanh_gaussian_sample`` with the standard-normal ``noise`` given by the caller.

    Lets a learner draw all its noise up front (one generator call per update, or noise
    injected by a test) while keeping the exact log-probability of the pre-tanh sample.
    ``seeds``: the seed blocks of the leading axis (:func:`by_seed`).
    """
    pre_tanh = mean + log_std.exp() * noise
    log_prob = _normal_log_prob(pre_tanh, mean, log_std) - _tanh_log_det(pre_tanh, seeds)
    return torch.tanh(pre_tanh), log_prob.sum(-1)


# Matmul widths (output columns, or input features for the gradient of the input) whose
# MKL kernels round by the output's alignment (measured: 5 to 11 columns, any rows and
# depth of 16 and more; 16-byte aligned outputs agree).
ALIGNMENT_SENSITIVE_WIDTHS = range(5, 12)


def alignment_sensitive(x: torch.Tensor, in_features: int, out_features: int) -> bool:
    """Whether a CPU matmul of ``x`` into ``out_features`` (or its input's gradient, of
    ``in_features``, when ``x`` takes one) rounds by where its output lands."""
    if x.device.type != "cpu":
        return False
    input_grad = x.requires_grad and torch.is_grad_enabled()
    return out_features in ALIGNMENT_SENSITIVE_WIDTHS or (
        input_grad and in_features in ALIGNMENT_SENSITIVE_WIDTHS)


def seed_baddbmm(bias: torch.Tensor, x: torch.Tensor, w: torch.Tensor,
                 seeds: int) -> torch.Tensor:
    """``torch.baddbmm(bias, x, w)`` over ``seeds`` equal seed blocks of the batch: one call,
    or where the matmul is alignment-sensitive (:func:`alignment_sensitive`) one per seed,
    so that every seed's output is laid out as it is alone."""
    if seeds == 1 or not alignment_sensitive(x, w.shape[-2], w.shape[-1]):
        return torch.baddbmm(bias, x, w)
    parts = zip(bias.chunk(seeds), x.chunk(seeds), w.chunk(seeds), strict=True)
    return torch.cat([torch.baddbmm(b, xs, ws) for b, xs, ws in parts])


class _SeedLinearFn(torch.autograd.Function):
    """``nn.Linear`` of every seed as batched matmuls, forward and backward the very matmuls
    of ``nn.Linear``'s own (``addmm(b, x, W^T)``; ``g W`` and ``g^T x``), one per seed
    in a batch."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight = ctx.saved_tensors
        grad_x = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(grad.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        grad_b = grad.sum(1) if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b


class SeedLinear(nn.Module):
    """``nn.Linear(in, out)`` of ``seeds`` seeds: ``weight (seeds, out, in)`` and ``bias
    (seeds, out)``, each seed's block of the input's leading axis (seed-major) through its
    own. Each seed computes what its ``nn.Linear`` computes alone: one batched op, or one
    ``nn.Linear`` call per seed where a batched matmul would not round as ``nn.Linear``
    does (a narrow layer, ``ALIGNMENT_SENSITIVE_WIDTHS``; or under 400 multiply-adds, where
    a batched matmul takes another kernel). Parameters are set by the caller."""

    def __init__(self, seeds: int, in_features: int, out_features: int):
        super().__init__()
        self.seeds, self.in_features, self.out_features = seeds, in_features, out_features
        self.weight = nn.Parameter(torch.empty(seeds, out_features, in_features))
        self.bias = nn.Parameter(torch.empty(seeds, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        flat = x.reshape(self.seeds, -1, self.in_features)
        narrow = alignment_sensitive(x, self.in_features, self.out_features)
        small = flat.shape[1] * self.in_features * self.out_features < 400
        if x.device.type == "cpu" and (narrow or small):
            # each seed's operands copied to memory of its own, aligned as alone (MKL's
            # small kernels round by their operands' alignment too)
            parts = [nn.functional.linear(xs.clone(), w.clone(), b.clone()) for xs, w, b in zip(
                x.chunk(self.seeds), self.weight, self.bias, strict=True)]
            return torch.cat(parts)
        out = _SeedLinearFn.apply(flat, self.weight, self.bias)
        return out.reshape(*lead, self.out_features)

    def extra_repr(self) -> str:
        return f"seeds={self.seeds}, in={self.in_features}, out={self.out_features}"


def set_seed_block(module: nn.Module, block: int | None) -> nn.Module:
    """Mark every ``StackedLinear`` of ``module`` as holding seeds of ``block`` leading
    stack entries each (None: one seed); returns ``module``."""
    for layer in module.modules():
        if isinstance(layer, StackedLinear):
            layer.seed_block = block
    return module


def by_seed(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, seeds: int
) -> torch.Tensor:
    """``fn(x)`` for an element-wise ``fn`` whose CPU kernel rounds its vectorized part and
    its scalar tail differently (see the module docstring), computed block by block for
    ``seeds`` equal seed blocks of the leading axis: each block exactly as alone, its
    gradient too. One call where there is one block or off the CPU (a GPU kernel computes
    every element the same way)."""
    if seeds == 1 or x.device.type != "cpu":
        return fn(x)
    return torch.cat([fn(block) for block in x.chunk(seeds)])
