"""When and how a run ran: ``run.json`` in the run directory (written atomically).

The paper's tables (§5, Fig. 4-7) are only comparable when a reader knows what produced
each number. Every ``merpo-agent train`` of a run directory (MerPO or a baseline, a fresh
run or a resume) appends one session to ``run.json``:

- ``started`` / ``started_unix``: the wall-clock start (UTC, ISO 8601, and seconds since
  the epoch; every ``metrics.jsonl`` record has its own ``time`` and ``wall_s``);
- ``command``: the command line;
- ``versions``: merpo-envs, merpo-data, merpo-agent, torch, gymnasium, minari, mujoco,
  numpy and python;
- ``git_commit``: the commit of the checkout the code ran from (absent outside a git
  checkout);
- ``device``: the torch device, its name (the CUDA device or the CPU model) and the CPU
  core count; ``host``: the machine's name.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from merpo_agent.checkpoint import atomic_write_text

RUN_FILE = "run.json"
PACKAGES = ("merpo-envs", "merpo-data", "merpo-agent", "torch", "gymnasium", "minari",
            "mujoco", "numpy")


def package_versions() -> dict[str, str | None]:
    """Installed versions of ``PACKAGES`` (None where one is missing) and python's."""
    out: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    out["python"] = platform.python_version()
    return out


def git_commit() -> str | None:
    """The commit of the git checkout this code runs from, or None (not a checkout)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit or None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` where there is one)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model


def device_record(device: str) -> dict[str, Any]:
    """The torch device a run used, its name, and the CPU core count."""
    import torch

    dev = torch.device(device)
    name = cpu_model()
    if dev.type == "cuda" and torch.cuda.is_available():
        name = torch.cuda.get_device_name(dev)
    return {"type": dev.type, "device": str(dev), "name": name,
            "cpu_cores": os.cpu_count() or 1}


def session_record(device: str, command: list[str] | None = None) -> dict[str, Any]:
    """One session of ``run.json`` (see the module docstring)."""
    now = time.time()
    record: dict[str, Any] = {
        "started": datetime.fromtimestamp(now, UTC).isoformat(timespec="seconds"),
        "started_unix": now,
        "command": list(sys.argv if command is None else command),
        "versions": package_versions(),
        "device": device_record(device),
        "host": socket.gethostname(),
    }
    commit = git_commit()
    if commit is not None:
        record["git_commit"] = commit
    return record


def read_run_record(run_dir: str | Path) -> dict[str, Any]:
    """``run.json`` of a run directory (``{"sessions": []}`` when there is none)."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return {"sessions": []}
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {"sessions": []}
    return data if isinstance(data, dict) and isinstance(data.get("sessions"), list) else {
        "sessions": []}


def record_session(run_dir: str | Path, device: str, fresh: bool,
                   command: list[str] | None = None) -> dict[str, Any]:
    """Append this session to ``run_dir/run.json`` (``fresh``: a new run, earlier sessions
    dropped); returns the session."""
    session = session_record(device, command)
    data = {"sessions": []} if fresh else read_run_record(run_dir)
    data["sessions"].append(session)
    atomic_write_text(Path(run_dir) / RUN_FILE, json.dumps(data, indent=1) + "\n")
    return session


__all__ = [
    "PACKAGES",
    "RUN_FILE",
    "cpu_model",
    "device_record",
    "git_commit",
    "package_versions",
    "read_run_record",
    "record_session",
    "session_record",
]
