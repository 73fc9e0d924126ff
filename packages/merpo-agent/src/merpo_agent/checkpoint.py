"""Checkpoints: atomic writes, ``weights_only=True`` loads, the previous one kept, RNG states.

A checkpoint is a plain nested dict of tensors, numbers, strings, lists and dicts (module and
optimizer ``state_dict``s, RNG states as uint8 tensors): everything
``torch.load(weights_only=True)`` accepts, so loading a checkpoint someone hands you runs no
pickled code.

Writes go through :func:`merpo_data.atomic.atomic_write` (a temporary file in the same
folder, flushed, renamed over the target): a kill at any moment leaves either the old or the
new checkpoint, never a torn one. Saving over ``latest.pt`` first keeps the checkpoint it
replaces as ``previous.pt`` (a hard link renamed into place, so both names always hold a
complete file); a ``latest.pt`` damaged later (a full disk, a bad copy) is then replaced by
``previous.pt`` on load, with one line saying so. Damage inside a complete archive is
found by the CRC-32 of every member, checked on load, and treated the same way. A state
holding a NaN or inf is never saved (:class:`NonFiniteState`).
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from merpo_data.atomic import atomic_write, atomic_write_bytes, atomic_write_text

LATEST = "latest.pt"
PREVIOUS = "previous.pt"

__all__ = [
    "LATEST",
    "PREVIOUS",
    "CheckpointError",
    "NonFiniteState",
    "atomic_write_bytes",
    "atomic_write_text",
    "load_checkpoint",
    "nonfinite_entry",
    "previous_path",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read; the message names the file and the fix."""


class NonFiniteState(CheckpointError):
    """A state to save holds a NaN or inf tensor; nothing was written (``where``: its key)."""

    def __init__(self, path: Path, where: str):
        super().__init__(f"not saving {path}: {where} holds a NaN or inf")
        self.path, self.where = path, where


def nonfinite_entry(state: Any, prefix: str = "") -> str | None:
    """The key path of the first floating-point tensor of ``state`` with a NaN or inf."""
    if isinstance(state, torch.Tensor):
        if state.is_floating_point() or state.is_complex():
            return None if bool(torch.isfinite(state).all()) else prefix or "the state"
        return None
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return None
    for key, value in items:
        found = nonfinite_entry(value, f"{prefix}.{key}" if prefix else str(key))
        if found is not None:
            return found
    return None


def previous_path(path: str | Path) -> Path:
    """Where the checkpoint before ``path`` is kept: ``previous.pt`` beside ``latest.pt``,
    ``NAME.previous.pt`` beside any other ``NAME.pt``."""
    path = Path(path)
    if path.name == LATEST:
        return path.with_name(PREVIOUS)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def save_checkpoint(
    path: str | Path, state: dict[str, Any], keep_previous: bool | None = None
) -> None:
    """``torch.save`` ``state`` atomically to ``path``.

    ``keep_previous`` (default: when ``path`` is ``latest.pt``) first keeps the checkpoint
    being replaced at :func:`previous_path`, if it is a complete torch archive.

    A state with a NaN or inf tensor is never written (:class:`NonFiniteState`): the
    checkpoint on disk stays the last good one, the one a resume needs.
    """
    path = Path(path)
    where = nonfinite_entry(state)
    if where is not None:
        raise NonFiniteState(path, where)
    if keep_previous is None:
        keep_previous = path.name == LATEST

    def write(handle) -> None:
        torch.save(state, handle)

    def keep() -> None:
        if path.is_file() and zipfile.is_zipfile(path):
            _link_over(path, previous_path(path))

    atomic_write(path, write, before_replace=keep if keep_previous else None)


def _link_over(src: Path, dest: Path) -> None:
    """Make ``dest`` name the file ``src`` names, atomically (``dest`` is never missing)."""
    tmp = dest.with_name(f".{dest.name}.link")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.link(src, tmp)
    except OSError:  # a filesystem without hard links: a copy, still renamed into place
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    say: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code from the file).

    When ``path`` is damaged and the checkpoint kept before it (:func:`previous_path`) loads,
    that one is returned and ``say`` (default: standard error) gets one line saying so.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; train first with `merpo-agent train`")
    try:
        return _load(path, map_location)
    except CheckpointError as err:
        previous = previous_path(path)
        if not previous.is_file():
            raise
        try:
            state = _load(previous, map_location)
        except CheckpointError:
            raise CheckpointError(
                f"{err} (the one before it, {previous.name}, is damaged too)"
            ) from None
        (say or _to_stderr)(
            f"checkpoint {path} is damaged; resuming from {previous} (one save older)"
        )
        return state


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


_FRESH_START = "delete it to start the run afresh"


def _load(path: Path, map_location: str | torch.device) -> dict[str, Any]:
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"checkpoint {path} is damaged or not a torch checkpoint (no complete archive); "
            f"{_FRESH_START}"
        )
    try:
        with zipfile.ZipFile(path) as archive:
            # torch.load does not check the members' CRC-32: bytes damaged inside the archive
            # would load as wrong weights (NaN actions, a silent change) instead of failing.
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as err:
        bad = f"unreadable archive: {_reason(err)}"
    if bad is not None:
        raise CheckpointError(
            f"checkpoint {path} is damaged (checksum mismatch in {bad}); {_FRESH_START}"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or foreign file
        text = str(err)
        code = re.search(r"GLOBAL (\S+)", text)
        if code:
            raise CheckpointError(
                f"checkpoint {path} cannot be loaded: it holds pickled Python code "
                f"({code.group(1)}), which merpo never writes and never runs; use a "
                f"checkpoint merpo-agent wrote, or {_FRESH_START}"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} cannot be loaded ({_reason(err)}); {_FRESH_START}"
        ) from None


def _reason(err: Exception) -> str:
    """torch's message without its advice to load with ``weights_only`` off."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    lines = [line for line in lines if "weights_only" not in line and "Weights only" not in line]
    return lines[0][:200] if lines else type(err).__name__


# ---- RNG states -------------------------------------------------------------------------


def rng_state(generators: dict[str, torch.Generator] | None = None) -> dict[str, Any]:
    """Every RNG a training step may touch, as weights_only-safe data."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": _python_state_to_data(random.getstate()),
        "generators": {
            name: gen.get_state() for name, gen in (generators or {}).items()
        },
    }
    if torch.cuda.is_available():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(
    state: dict[str, Any], generators: dict[str, torch.Generator] | None = None
) -> None:
    """Restore what :func:`rng_state` saved (generators by name, in place)."""
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            np_state["keys"].numpy().astype(np.uint32),
            np_state["pos"],
            np_state["has_gauss"],
            np_state["cached_gaussian"],
        )
    )
    random.setstate(_python_state_from_data(state["python"]))
    for name, gen in (generators or {}).items():
        if name in state["generators"]:
            gen.set_state(state["generators"][name].cpu())
    if "cuda" in state and torch.cuda.is_available():
        saved = state["cuda"]
        if len(saved) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([s.cpu() for s in saved])


def _python_state_to_data(state: tuple) -> dict[str, Any]:
    version, internal, gauss = state
    return {"version": version, "internal": list(internal), "gauss": gauss}


def _python_state_from_data(data: dict[str, Any]) -> tuple:
    return (data["version"], tuple(data["internal"]), data["gauss"])
