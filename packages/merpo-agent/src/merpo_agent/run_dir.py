"""Claiming a run directory: one trainer at a time, and no empty leftovers.

Two ``merpo-agent train`` on one run directory would both write its checkpoints and
metrics, each overwriting the other's. :func:`claim_run_dir` holds an exclusive lock on the
directory for the whole run (``merpo_data.lock.hold_lock``: released by the kernel when the
process dies, so a killed run never blocks the next); a second trainer gets one line naming
the holder. A ``train`` that fails before its first checkpoint (missing data, a setting
found bad only once the data is loaded) removes the directory if it created it, so a bad
command leaves nothing behind to mistake for a run.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path

from merpo_data.lock import hold_lock

from merpo_agent.run_layout import RunError

LOCK_FILE = ".merpo-agent.lock"

__all__ = ["LOCK_FILE", "check_run_dir", "claim_run_dir"]


def check_run_dir(run_dir: Path) -> None:
    """One line for a ``--run-dir`` that names an existing file (not a directory)."""
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--run-dir {run_dir} is an existing file, not a directory; "
                       "pass a directory path")


@contextlib.contextmanager
def claim_run_dir(run_dir: str | Path, checkpoint: str | Path, lock: bool = True
                  ) -> Iterator[None]:
    """Create and lock ``run_dir`` for the ``with`` body (``lock=False``: torchrun's other
    ranks, whose rank 0 holds it); on failure remove it if this call created it and no
    ``checkpoint`` was written (a run that trained anything is always kept)."""
    run_dir = Path(run_dir)
    check_run_dir(run_dir)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        holder = hold_lock(run_dir / LOCK_FILE, f"run directory {run_dir}")
        with holder if lock else contextlib.nullcontext():
            yield
    except BaseException:
        if created and lock and not Path(checkpoint).is_file():
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
