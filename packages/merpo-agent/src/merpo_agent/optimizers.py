"""Adam as the hot paths build it: the fused kernel where the device has one.

Fused Adam is one kernel per optimizer step for all parameters (instead of a few per
parameter), and keeps its step counts on the device (no per-step host tensors); it applies
the same update rule as the reference Adam. ``capturable`` for CUDA-graph capture.
"""

from __future__ import annotations

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


__all__ = ["adam_options"]
