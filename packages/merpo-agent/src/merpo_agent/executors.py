"""Where the runs of ``reproduce`` and ``tune`` train: local processes or a Ray cluster.

Both commands hand a list of jobs to an executor's ``map`` and get the results of their
runs back in order. A job is the seeds of one setting, each seed a run ``(command, run_dir,
algo)`` (its ``merpo-agent train --seed`` arguments), which ``reproduce.run_job`` trains
together in one ``train --seeds`` process (seeds as one more batch axis; a job of one run
is that run's own process). ``run_job`` already makes a job safe to repeat (a finished
run's ``result.json`` is reused, a killed one resumes from its checkpoints), so an executor
only decides WHERE a job runs:

- ``LocalExecutor``: ``--jobs`` threads on this machine, each waiting on its job's
  ``merpo-agent train`` process (the default);
- ``RayExecutor``: each job a Ray task declaring 1 CPU (and 1 GPU when its command trains
  on ``--device cuda``), so a cluster's scheduler packs jobs onto its machines. The run
  folders must be on a filesystem every machine mounts at the same path, and every machine
  needs merpo-agent installed: a task calls ``run_job`` there, which writes the run folders
  the driver then reads.

Whatever the executor, a failing job does not stop the others: every job is tried, then
the first failure (in the jobs' order) is raised, as a local pool does.
"""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from merpo_agent.config import ConfigError

# (the ``merpo-agent train`` command, its run directory, its algo): ``run_one``'s arguments
Run = tuple[list[str], Path, str]
# the runs of one setting's seeds, trained together (``reproduce.run_job``)
Job = list[Run]
EXECUTORS = ("local", "ray")
# Environment the Ray workers must share with the driver: where the Minari datasets are
# (a worker started before it was set, or on another machine, would look elsewhere).
FORWARDED_ENV = ("MINARI_DATASETS_PATH",)
RAY_MISSING = "--executor ray needs Ray: pip install merpo-agent[ray]"


class LocalExecutor:
    """``jobs`` jobs at once on this machine (default: one per CPU core, at most one per
    job)."""

    def __init__(self, jobs: int | None = None):
        self.jobs = jobs

    def workers(self, jobs: int) -> int:
        return self.jobs or max(1, min(jobs, os.cpu_count() or 1))

    def describe(self, jobs: int) -> str:
        return f"{self.workers(jobs)} at a time"

    def map(self, jobs: Sequence[Job], log: Callable[[str], None] = print) -> list[dict]:
        """Every job's runs' results, in order."""
        from merpo_agent.reproduce import run_job

        with ThreadPoolExecutor(max_workers=self.workers(len(jobs))) as pool:
            futures = [pool.submit(run_job, job, log) for job in jobs]
            outcomes = []
            for future in futures:
                try:
                    outcomes.append(future.result())
                except Exception as err:  # the others still run; the first failure is raised
                    outcomes.append(err)
        return _results(outcomes)


def _results(outcomes: list) -> list[dict]:
    """The jobs' results flattened in order, or the first failure raised."""
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return [result for results in outcomes for result in results]


def gpus_of(command: Sequence[str]) -> int:
    """GPUs a ``merpo-agent train`` command claims: 1 with ``--device cuda[:N]``, else 0."""
    for i, arg in enumerate(command):
        device = command[i + 1] if arg == "--device" and i + 1 < len(command) else (
            arg.removeprefix("--device=") if arg.startswith("--device=") else None)
        if device is not None and device.startswith("cuda"):
            return 1
    return 0


def resources_of(command: Sequence[str]) -> dict[str, int]:
    """The Ray resources of one job: one CPU (``train --threads 1``), and its GPU if any."""
    return {"num_cpus": 1, "num_gpus": gpus_of(command)}


def forwarded_env() -> dict[str, str]:
    return {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}


def run_on_worker(job: Job, cwd: str) -> tuple:
    """One job inside a Ray task: ``run_job`` on this worker, returning ``(its results or
    its error, its log lines)`` (an error travels as a value, so the driver raises the same
    one-line error as a local run, not Ray's traceback of the worker).

    The commands' interpreter is this worker's (a machine's venv may live elsewhere; results
    record the command without it), and relative run folders are the driver's: the task runs
    in the driver's working directory, which must be on the shared filesystem."""
    from merpo_agent.reproduce import run_job
    from merpo_agent.trainer import RunError

    lines: list[str] = []
    host = socket.gethostname()
    if not Path(cwd).is_dir():
        error = RunError(f"{host}: no folder {cwd} here; the run folders must be on a "
                         "filesystem every Ray machine mounts at the same path (use an "
                         "absolute --out there)")
        return error, lines
    os.chdir(cwd)
    folder = job[0][1].parent
    if not folder.is_dir():
        error = RunError(f"{host}: no folder {folder.resolve()} here; the run folders must be "
                         "on a filesystem every Ray machine mounts at the same path")
        return error, lines
    here = [([sys.executable, *command[1:]], run_dir, algo) for command, run_dir, algo in job]
    try:
        results = run_job(here, lines.append)
    except Exception as err:  # noqa: BLE001 - any run error, raised on the driver
        return err, lines
    return results, lines


class RayExecutor:
    """Each run a Ray task on the cluster at ``address`` (``auto``: the one this machine
    joined with ``ray start``; ``HOST:PORT``: that head), or on a local Ray instance of
    ``jobs`` CPUs when ``address`` is None. An instance this process already started
    (``ray.init``) is used as it is. It connects when made, so that a cluster that is not
    there is one line before any dataset is built or run trained."""

    def __init__(self, jobs: int | None = None, address: str | None = None):
        try:
            import ray
        except ImportError:
            raise ConfigError(RAY_MISSING) from None
        self.ray, self.jobs, self.address = ray, jobs, address
        self._connect()

    def _connect(self) -> None:
        if self.ray.is_initialized():
            return
        options = {"include_dashboard": False, "log_to_driver": False}
        try:
            if self.address is None:
                self.ray.init(num_cpus=self.jobs or os.cpu_count() or 1, **options)
            else:
                self.ray.init(address=self.address, **options)
        except ConnectionError as err:  # no cluster at that address
            raise ConfigError(f"--ray-address {self.address}: {str(err).strip().splitlines()[0]}"
                              "; start one with `ray start --head`") from None

    def describe(self, jobs: int) -> str:
        where = "a local Ray instance" if self.address is None else f"Ray at {self.address}"
        return f"as Ray tasks on {where}"

    def map(self, jobs: Sequence[Job], log: Callable[[str], None] = print) -> list[dict]:
        """Every job's runs' results, in order."""
        task = self.ray.remote(max_retries=3)(run_on_worker)  # a lost worker: jobs resume
        runtime_env = {"env_vars": forwarded_env()}
        cwd = os.getcwd()
        refs = []
        for job in jobs:
            job[0][1].parent.mkdir(parents=True, exist_ok=True)  # workers check they see it
            refs.append(task.options(runtime_env=runtime_env, **resources_of(job[0][0]))
                        .remote(job, cwd))
        index = {ref: i for i, ref in enumerate(refs)}
        outcomes: list = [None] * len(refs)
        pending = list(refs)
        while pending:  # log each job as it finishes, not in the jobs' order
            ready, pending = self.ray.wait(pending, num_returns=1)
            value, lines = self.ray.get(ready[0])
            for line in lines:
                log(line)
            outcomes[index[ready[0]]] = value
        return _results(outcomes)


def make_executor(name: str = "local", jobs: int | None = None,
                  address: str | None = None) -> LocalExecutor | RayExecutor:
    """The executor of ``--executor NAME [--jobs N] [--ray-address ADDRESS]``; a bad name,
    or Ray asked for and not installed, is a one-line ``ConfigError`` before any run."""
    if name not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, got {name!r}")
    if jobs is not None and jobs < 1:
        raise ConfigError(f"--jobs must be >= 1 (runs trained at once), got {jobs}")
    if name == "local":
        if address is not None:
            raise ConfigError("--ray-address needs --executor ray")
        return LocalExecutor(jobs)
    return RayExecutor(jobs, address)


__all__ = ["EXECUTORS", "Job", "LocalExecutor", "RayExecutor", "gpus_of", "make_executor",
           "resources_of"]
