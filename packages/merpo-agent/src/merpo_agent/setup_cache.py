"""A cache of the meta-training setup (Alg. 2 lines 2-8) for runs that compute the same one.

The setup of a MerPO run (the offline meta-model of Eq. 3, the task models adapted by Eq. 4
and the behavior clones of the lambda dual) depends on the data, the dynamics settings,
the behavior-cloning settings and the random state it starts from, and on nothing that a
tuning study or a figure varies between its runs of one seed (the readings of §4.2-4.3,
the learning rates of RAC, alpha). On a CPU it is a large part of a run, so ``tune`` and
``reproduce`` pass ``train --setup-cache DIR`` and the runs of a seed compute it once.

An entry is keyed by everything the setup reads (``setup_key``), including the state of
the two random streams it starts from (torch's global RNG and the run's data generator),
so a run whose earlier steps drew differently can never get another run's setup. It holds
the modules' states, both random streams as the setup leaves them and the metric records
it logged, so a run that reuses an entry continues exactly as if it had computed it (a
test compares the checkpoints bit for bit). Entries are written atomically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from merpo_agent.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

# Bump when the setup's code changes what it computes: older entries are then not used.
SETUP_FORMAT = 1
MODULES = ("meta_model", "task_models", "test_models", "bc_train", "bc_test")


def setup_key(cfg, generator: torch.Generator) -> str:
    """A hash of what the setup of run ``cfg`` reads, and of the random state it starts at."""
    from merpo_agent.overrides import to_dict

    rac = to_dict(cfg.rac)
    reads = {
        "format": SETUP_FORMAT, "torch": torch.__version__, "env": cfg.env, "seed": cfg.seed,
        "device": cfg.device, "data": to_dict(cfg.data), "dynamics": to_dict(cfg.dynamics),
        "use_model": rac["use_model"], "bc": {k: v for k, v in rac.items() if k.startswith("bc_")},
    }
    digest = hashlib.sha256(json.dumps(reads, sort_keys=True, default=str).encode())
    digest.update(torch.get_rng_state().numpy().tobytes())
    digest.update(generator.get_state().cpu().numpy().tobytes())
    return digest.hexdigest()[:24]


class RecordingWriter:
    """Forwards ``log`` to a metrics writer and keeps each call, to be replayed later."""

    def __init__(self, writer):
        self.writer = writer
        self.calls: list[dict[str, Any]] = []

    def log(self, iteration: int, phase: str, values, step: int | None = None) -> dict:
        record = self.writer.log(iteration, phase, values, step=step)
        host = {k: v for k, v in record.items()
                if k not in ("iteration", "phase", "step", "time", "wall_s")}
        self.calls.append({"iteration": int(iteration), "phase": phase, "values": host,
                           "step": step})
        return record


def replay(writer, calls: list[dict[str, Any]]) -> None:
    for call in calls:
        writer.log(call["iteration"], call["phase"], call["values"], step=call["step"])


def load_entry(cache: Path, key: str, device: torch.device) -> dict | None:
    """The cached setup of ``key``, or None (missing or unreadable: computed again)."""
    path = cache / f"{key}.pt"
    if not path.is_file():
        return None
    try:
        entry = load_checkpoint(path, map_location=device)
    except CheckpointError:
        return None
    return entry if entry.get("format") == SETUP_FORMAT and entry.get("key") == key else None


def save_entry(cache: Path, key: str, modules: dict[str, torch.nn.Module],
               generator: torch.Generator, calls: list[dict[str, Any]]) -> None:
    cache.mkdir(parents=True, exist_ok=True)
    save_checkpoint(cache / f"{key}.pt", {
        "format": SETUP_FORMAT, "key": key,
        "modules": {name: module.state_dict() for name, module in modules.items()},
        "torch_rng": torch.get_rng_state(), "generator": generator.get_state(),
        "calls": json.dumps(calls),
    }, keep_previous=False)


def restore(entry: dict, modules: dict[str, torch.nn.Module],
            generator: torch.Generator) -> list[dict[str, Any]]:
    """Load an entry into the run's modules and random streams; returns the calls to replay."""
    for name, module in modules.items():
        module.load_state_dict(entry["modules"][name])
    torch.set_rng_state(entry["torch_rng"].cpu())
    generator.set_state(entry["generator"].cpu())
    return json.loads(entry["calls"])


def cached_setup(cache: Path | None, cfg, modules: dict[str, torch.nn.Module],
                 generator: torch.Generator, device: torch.device, writer,
                 compute: Callable[[Any], None], say: Callable[[str], None]) -> None:
    """Run ``compute(writer)`` (the setup), or restore its result from ``cache``."""
    if cache is None:
        compute(writer)
        return
    key = setup_key(cfg, generator)
    entry = load_entry(cache, key, device)
    if entry is not None:
        replay(writer, restore(entry, modules, generator))
        say(f"setup: reused {cache / key}.pt (the same data, dynamics, behavior cloning, "
            "seed and random state)")
        return
    recorder = RecordingWriter(writer)
    compute(recorder)
    save_entry(cache, key, modules, generator, recorder.calls)


__all__ = ["SETUP_FORMAT", "cached_setup", "setup_key"]
