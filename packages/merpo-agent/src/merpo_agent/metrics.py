"""Run metrics: one JSON object per line in ``metrics.jsonl``, mirrored to TensorBoard.

Each record is ``{"iteration": k, "phase": "...", "<name>": value, ...}``. The training loop
keeps metric tensors on the device and hands them here once per log interval
(:meth:`MetricsWriter.log` does the only host copy). ``metrics.jsonl`` is rewritten through a
temporary file and ``os.replace`` on every write (``merpo_data.atomic``): the file
is small (one line per log interval) and a kill never leaves a torn line. On resume,
:meth:`MetricsWriter.truncate_after` drops records newer than the checkpoint, so a resumed
run's log reads like an uninterrupted one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from merpo_agent.checkpoint import atomic_write_text

METRICS_FILE = "metrics.jsonl"


def to_host(values: Mapping[str, Any]) -> dict[str, float]:
    """Tensors (scalar or not) -> plain floats (means), in one host transfer."""
    names = list(values)
    tensors = []
    plain: dict[str, float] = {}
    for name in names:
        value = values[name]
        if isinstance(value, torch.Tensor):
            tensors.append((name, value.detach().float().mean()))
        else:
            plain[name] = float(value)
    if tensors:
        stacked = torch.stack([t for _, t in tensors]).cpu().tolist()
        plain.update({name: v for (name, _), v in zip(tensors, stacked, strict=True)})
    return {name: plain[name] for name in names}


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            records.append(json.loads(line))
    return records


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf; keep the line valid JSON
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


class MetricsWriter:
    """Appends records to ``metrics.jsonl`` (atomically) and TensorBoard scalars."""

    def __init__(
        self, run_dir: str | Path, tensorboard: bool = True, purge_step: int | None = None
    ):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self._lines = self.path.read_text().splitlines() if self.path.is_file() else []
        self._lines = [line for line in self._lines if line.strip()]
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(
                log_dir=str(self.run_dir / "tensorboard"), purge_step=purge_step
            )

    def truncate_after(self, iteration: int) -> None:
        """Drop records with ``iteration`` greater than ``iteration`` (resume)."""
        kept = [line for line in self._lines if json.loads(line).get("iteration", 0) <= iteration]
        if len(kept) != len(self._lines):
            self._lines = kept
            self._flush()

    def drop_phase(self, phase: str) -> None:
        """Drop every record of ``phase`` (e.g. a shorter run's final table, on resume)."""
        kept = [line for line in self._lines if json.loads(line).get("phase") != phase]
        if len(kept) != len(self._lines):
            self._lines = kept
            self._flush()

    def has(self, iteration: int, phase: str) -> bool:
        """Whether a record of ``phase`` at ``iteration`` is already in the file."""
        for line in self._lines:
            record = json.loads(line)
            if record.get("iteration") == iteration and record.get("phase") == phase:
                return True
        return False

    def log(self, iteration: int, phase: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Record ``values`` (tensors or numbers) at ``iteration``; returns the host record."""
        host = to_host(values)
        record = {"iteration": int(iteration), "phase": phase, **host}
        self._lines.append(json.dumps(_json_safe(record)))
        self._flush()
        if self._tb is not None:
            for name, value in host.items():
                if math.isfinite(value):
                    self._tb.add_scalar(f"{phase}/{name}", value, global_step=int(iteration))
            self._tb.flush()
        return record

    def log_record(self, record: Mapping[str, Any]) -> None:
        """Write a ready-made JSON-able record (e.g. a per-task meta-test table)."""
        self._lines.append(json.dumps(_json_safe(dict(record))))
        self._flush()

    def _flush(self) -> None:
        atomic_write_text(self.path, "".join(line + "\n" for line in self._lines))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
