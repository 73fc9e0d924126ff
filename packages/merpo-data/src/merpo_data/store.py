"""Where merpo-data writes, and how: atomic files and directories inside Minari's store.

Datasets live in Minari's local store (``MINARI_DATASETS_PATH``, default
``~/.minari/datasets``). Behavior-policy checkpoints and half-built datasets live in the
hidden folder ``.merpo-data`` of the same store: hidden, so ``minari list local`` skips it;
on the same filesystem, so moving a finished dataset into place is one ``rename``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from minari.storage import get_dataset_path

from merpo_data.atomic import atomic_torch_save
from merpo_data.lock import hold_lock, process_gone

__all__ = ["RECIPE_KEY", "REQUIREMENTS", "BehaviorRecord", "atomic_torch_save", "behavior_dir",
           "installed_versions", "is_local", "load_record", "remove_stale_temporaries",
           "store_lock", "store_root", "task_file", "work_root"]

# The metadata key of a dataset's recipe (``datasets.recipe``).
RECIPE_KEY = "merpo_recipe"
# The packages a dataset's content depends on (recorded in recipes and shipped headers).
REQUIREMENTS = ("merpo-envs", "merpo-data", "minari", "gymnasium", "mujoco", "numpy", "torch")


def installed_versions() -> dict[str, str]:
    """The installed version of each package a dataset's content depends on."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in REQUIREMENTS:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def store_root() -> Path:
    """Minari's local dataset store (honours ``MINARI_DATASETS_PATH``)."""
    return Path(get_dataset_path())


def work_root() -> Path:
    path = store_root() / ".merpo-data"
    path.mkdir(parents=True, exist_ok=True)
    return path


def behavior_dir(slug: str, preset: str, seed: int) -> Path:
    """Behavior-policy checkpoints of one env, preset and seed."""
    path = work_root() / "behavior" / slug / f"{preset}-seed{seed}"
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def small_op_threads(device, threads: int = 1) -> Iterator[None]:
    """``threads`` intra-op CPU threads (default one) while generating data (restored after).

    The behavior-policy nets are small batched matmuls: on CPU, a second intra-op thread
    usually only adds synchronisation (measured: ~10x slower per ``baddbmm`` on 2 cores for
    Point-Robot-Wind's nets, far worse when other processes share the cores). A large
    group pays for it: Walker-2D's 25 tasks of 64x2 at batch 256 update 1.65x faster on two
    threads than on one (36.7 ms against 22.3 ms per gradient step, a quiet 2-core CPU).
    No effect on CUDA.
    """
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    before = torch.get_num_threads()
    if torch.device(device).type == "cpu":
        torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_load(path: Path, device="cpu"):
    return torch.load(path, map_location=device, weights_only=True)


@contextlib.contextmanager
def temporary_store() -> Iterator[Path]:
    """A fresh, empty Minari store inside ``.merpo-data/tmp``; Minari writes there meanwhile.

    Minari reads ``MINARI_DATASETS_PATH`` on every call, so pointing it at the temporary
    store makes ``create_dataset_from_buffers`` write there; the real value is restored
    on exit and the temporary store is removed whatever happens.
    """
    real = os.environ.get("MINARI_DATASETS_PATH")
    root = store_root()
    tmp = work_root() / "tmp" / _owned_name()
    tmp.mkdir(parents=True)
    os.environ["MINARI_DATASETS_PATH"] = str(tmp)
    try:
        yield tmp
    finally:
        if real is None:
            # Keep writing to the same store as before, default location included.
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = real
        assert store_root() == root
        shutil.rmtree(tmp, ignore_errors=True)


def move_into_store(src: Path, dataset_id: str, force: bool, root: Path) -> None:
    """Rename a finished dataset folder to its id in the store ``root`` (replacing only if force).

    With ``force`` the old dataset is first renamed aside, then the new one renamed in: a
    kill in between leaves no dataset under the id, never a half-written one.
    """
    dest = root / dataset_id
    dest.parent.mkdir(parents=True, exist_ok=True)
    trash = None
    if dest.exists():
        if not force:
            raise FileExistsError(
                f"dataset {dataset_id} already exists; pass force=True (--force) to rebuild it"
            )
        trash = root / ".merpo-data" / "tmp" / f"old~{_owned_name()}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        os.rename(dest, trash)
    os.rename(src, dest)
    if trash is not None:
        shutil.rmtree(trash, ignore_errors=True)


# Names of temporary folders: "<pid>~<host>~<random>" (an old dataset set aside: "old~..."),
# so that a later run can tell a dead process's leftover from a live one's.
_SEP = "~"


def _owned_name() -> str:
    return _SEP.join((str(os.getpid()), socket.gethostname(), uuid.uuid4().hex))


def remove_stale_temporaries(root: Path | None = None) -> list[Path]:
    """Remove the temporary stores of ``.merpo-data/tmp`` whose writer is dead; return them.

    A ``kill -9`` during a dataset write leaves its temporary store behind (the ``finally``
    that removes it never runs). Only folders whose owning process is gone from this host
    are removed: a live writer's, another host's, and unnamed (older) ones are kept.
    """
    folder = (root if root is not None else store_root()) / ".merpo-data" / "tmp"
    removed = []
    for path in sorted(folder.glob("*")) if folder.is_dir() else []:
        parts = path.name.removeprefix(f"old{_SEP}").split(_SEP)
        if len(parts) != 3 or not parts[0].isdigit():
            continue
        if process_gone(int(parts[0]), parts[1]):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


@contextlib.contextmanager
def store_lock(root: Path | None = None) -> Iterator[None]:
    """Hold the store's writer lock (``.merpo-data/generate.lock``): one ``generate`` at a time.

    A second ``generate`` into the same store fails at once with one line naming the
    holder, instead of failing half-way on datasets the first one is writing.
    """
    root = root if root is not None else store_root()
    with hold_lock(root / ".merpo-data" / "generate.lock", f"dataset store {root}"):
        yield


def is_local(dataset_id_: str) -> bool:
    """Whether the dataset is in the local Minari store."""
    return (store_root() / dataset_id_ / "data").exists()


# ---- behavior-policy records: the files ``behavior`` writes and ``shipped`` reads ----------


@dataclass
class BehaviorRecord:
    """One task's behavior-policy checkpoints (see the module docstring)."""

    task: int
    steps: np.ndarray  # (C,) env steps of the task at each checkpoint
    returns: np.ndarray  # (C,) evaluated stochastic return of each checkpoint
    random_return: float  # mean return of uniform actions (places the medium checkpoint)
    actor: dict[str, torch.Tensor]  # parameter name -> (C, ...)
    group: tuple[int, ...] | None = None  # the task group it trained in (None: not recorded)

    @property
    def num_checkpoints(self) -> int:
        return len(self.steps)

    @property
    def expert_index(self) -> int:
        """The best checkpoint (``expert`` quality)."""
        return int(np.argmax(self.returns))

    @property
    def medium_index(self) -> int:
        """The checkpoint closest to halfway between random and expert (``medium`` quality)."""
        halfway = 0.5 * (self.random_return + float(self.returns[self.expert_index]))
        return int(np.argmin(np.abs(self.returns - halfway)))


def task_file(directory: Path, task: int) -> Path:
    return directory / f"task-{task:02d}.pt"


def load_record(directory: Path, task: int) -> BehaviorRecord:
    state = torch_load(task_file(directory, task))
    return BehaviorRecord(
        task=int(state["task"]),
        steps=state["steps"].numpy(),
        returns=state["returns"].numpy(),
        random_return=float(state["random_return"]),
        actor=state["actor"],
        group=tuple(int(t) for t in state["group"]) if "group" in state else None,
    )
