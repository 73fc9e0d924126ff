"""Run metrics: one JSON object per line in ``metrics.jsonl``, mirrored to TensorBoard and,
optionally, to Weights & Biases.

Each record is ``{"iteration": k, "phase": "...", "<name>": value, ..., "time": t,
"wall_s": s}``: ``time`` is the wall clock (seconds since the epoch) when it was written,
``wall_s`` the seconds since this writer opened (one training session; ``run.json`` has
each session's start, ``merpo_agent.provenance``). The training loop
keeps metric tensors on the device and hands them here once per log interval
(:meth:`MetricsWriter.log` does the only host copy). ``metrics.jsonl`` is rewritten through a
temporary file and ``os.replace`` on every write (``merpo_data.atomic``): the file
is small (one line per log interval) and a kill never leaves a torn line. On resume,
:meth:`MetricsWriter.truncate_after` drops records newer than the checkpoint, so a resumed
run's log reads like an uninterrupted one.

TensorBoard: a record of ``phase`` is the scalars ``<phase>/<name>`` at step ``iteration``
(or at the ``step`` given to :meth:`MetricsWriter.log`, e.g. the meta-model's own
iterations of Eq. 3, logged during the setup at meta-iteration 0); a per-task record (one
with a ``tasks`` list, e.g. the meta-test's) is ``<phase>/<name>/task_<j>`` per task j for
its returns and normalized scores; the run's hyperparameters are TensorBoard's HParams
(flattened config, with the meta-test's mean return and normalized score as its metrics).

Weights & Biases (``merpo-agent train --wandb PROJECT[/GROUP]``): the same scalars, with
``iteration`` in every logged dict, and the flattened config as the wandb run's config.
``wandb`` is imported only then (:func:`start_wandb`).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from merpo_agent.checkpoint import atomic_write_text

METRICS_FILE = "metrics.jsonl"
# bookkeeping fields of every record (not metrics: no TensorBoard scalar, no plot panel)
RECORD_FIELDS = ("iteration", "phase", "step", "time", "wall_s")
# per-task lists of a per-task record that become one scalar per task
PER_TASK_SUFFIXES = ("_return", "_normalized")


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


def hparam_values(config: Mapping[str, Any]) -> dict[str, int | float | str | bool]:
    """A nested config as TensorBoard/wandb hyperparameters: dotted keys, lists as text."""
    from merpo_agent.overrides import flatten

    out: dict[str, int | float | str | bool] = {}
    for key, value in flatten(dict(config)).items():
        out[key] = value if isinstance(value, bool | int | float | str) else str(value)
    return out


def check_wandb(spec: str) -> tuple[str, str | None]:
    """``--wandb PROJECT[/GROUP]`` -> (project, group), with a one-line ``ConfigError`` for
    a bad spec or when the ``wandb`` package is missing (nothing is imported here)."""
    import importlib.util

    from merpo_agent.overrides import ConfigError

    project, _, group = spec.partition("/")
    if not project or "/" in group:
        raise ConfigError(f"--wandb takes PROJECT or PROJECT/GROUP, got {spec!r}")
    try:
        found = importlib.util.find_spec("wandb") is not None
    except (ImportError, ValueError):  # a module set to None, or one without a spec
        found = False
    if not found:
        raise ConfigError("--wandb needs the wandb package: pip install wandb (or drop --wandb)")
    return project, group or None


def start_wandb(spec: str, run_dir: Path, config: Mapping[str, Any] | None = None):
    """A wandb run for ``--wandb PROJECT[/GROUP]`` (imports ``wandb`` here, only here)."""
    project, group = check_wandb(spec)
    import wandb

    return wandb.init(project=project, group=group, name=run_dir.name, dir=str(run_dir),
                      config=hparam_values(config or {}))


class MetricsWriter:
    """Appends records to ``metrics.jsonl`` (atomically), TensorBoard scalars and, given
    ``wandb`` (``PROJECT[/GROUP]``), a Weights & Biases run.

    ``hparams``: the run's config (nested dict), written once as TensorBoard HParams with
    ``hparam_metrics`` (scalar tags) as its metrics, and as the wandb run's config.
    """

    def __init__(
        self,
        run_dir: str | Path,
        tensorboard: bool = True,
        purge_step: int | None = None,
        hparams: Mapping[str, Any] | None = None,
        hparam_metrics: Sequence[str] = (),
        wandb: str | None = None,
    ):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / METRICS_FILE
        self._lines = self.path.read_text().splitlines() if self.path.is_file() else []
        self._lines = [line for line in self._lines if line.strip()]
        self._opened = time.time()
        self._wandb = start_wandb(wandb, self.run_dir, hparams) if wandb else None
        self._tb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(
                log_dir=str(self.run_dir / "tensorboard"), purge_step=purge_step
            )
            if hparams is not None:
                self._write_hparams(hparams, hparam_metrics)

    def _write_hparams(self, hparams: Mapping[str, Any], metrics: Sequence[str]) -> None:
        """HParams in the run's own event file (so its scalars are the metrics' values)."""
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        experiment, start, end = hparams_summary(hparam_values(hparams),
                                                 {name: math.nan for name in metrics})
        writer = self._tb._get_file_writer()
        for summary in (experiment, start, end):
            writer.add_summary(summary)

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

    def _times(self) -> dict[str, float]:
        now = time.time()
        return {"time": round(now, 3), "wall_s": round(now - self._opened, 3)}

    def log(self, iteration: int, phase: str, values: Mapping[str, Any],
            step: int | None = None) -> dict[str, Any]:
        """Record ``values`` (tensors or numbers) at ``iteration``; returns the host record.

        ``step`` (e.g. the meta-model's own iteration during the setup): kept in the record
        and used as the TensorBoard step instead of ``iteration``."""
        host = to_host(values)
        record: dict[str, Any] = {"iteration": int(iteration), "phase": phase}
        if step is not None:
            record["step"] = int(step)
        record.update(host)
        record.update(self._times())
        self._lines.append(json.dumps(_json_safe(record)))
        self._flush()
        scalars = {f"{phase}/{name}": value for name, value in host.items()
                   if name not in RECORD_FIELDS and math.isfinite(value)}
        self._mirror(scalars, int(iteration if step is None else step), int(iteration))
        return record

    def log_record(self, record: Mapping[str, Any]) -> None:
        """Write a ready-made JSON-able record (e.g. a per-task meta-test table); a record
        with a ``tasks`` list also gives one scalar per task of each of its per-task
        returns and normalized scores."""
        record = {**dict(record), **self._times()}
        self._lines.append(json.dumps(_json_safe(record)))
        self._flush()
        tasks = record.get("tasks")
        if isinstance(tasks, list) and "phase" in record:
            scalars = {}
            for name, values in record.items():
                if (name.endswith(PER_TASK_SUFFIXES) and isinstance(values, list)
                        and len(values) == len(tasks)):
                    for task, value in zip(tasks, values, strict=True):
                        if isinstance(value, int | float) and math.isfinite(value):
                            scalars[f"{record['phase']}/{name}/task_{task}"] = float(value)
            iteration = int(record.get("iteration", 0))
            self._mirror(scalars, iteration, iteration)

    def _mirror(self, scalars: dict[str, float], tb_step: int, iteration: int) -> None:
        if not scalars:
            return
        if self._tb is not None:
            for tag, value in scalars.items():
                self._tb.add_scalar(tag, value, global_step=tb_step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log({"iteration": iteration, **scalars})

    def _flush(self) -> None:
        atomic_write_text(self.path, "".join(line + "\n" for line in self._lines))

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
