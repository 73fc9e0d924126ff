"""The one way merpo writes a file: a temporary file beside it, flushed to disk, renamed over it.

A kill at any moment leaves either the old file or the new one, never a torn one, and no
temporary file once the write has failed. The file gets the mode a plain ``open(path, "w")``
would give (``0o666`` less the umask: ``0644`` under the usual umask ``022``, so the group
can read runs and datasets), not the ``0600`` of :func:`tempfile.mkstemp`.

Every package of the repository writes through :func:`atomic_write` (merpo-agent's
checkpoints, metrics, configs and plots, merpo-data's behavior checkpoints and plots, the
benchmarks' results).
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DISK_FULL",
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "disk_full_line",
]

# A full filesystem (ENOSPC) or an exhausted quota (EDQUOT): the errors a rerun fixes once
# space is freed, reported by both CLIs as one line (:func:`disk_full_line`).
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def atomic_write(
    path: str | Path,
    write: Callable[[IO[bytes]], Any],
    before_replace: Callable[[], Any] | None = None,
) -> Path:
    """Call ``write(handle)`` on a binary handle to a temporary file, then rename it to ``path``.

    ``before_replace`` runs once the new file is complete on disk, just before the rename
    (checkpoints keep the file being replaced there). The parent folder is created when
    missing. Returns ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    # O_EXCL: never reuse a name; 0o666 is narrowed by the umask, as open() does.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in DISK_FULL and err.filename is None:
            # a failed write() names no file: name the one being written
            raise OSError(err.errno, os.strerror(err.errno), str(path)) from err
        raise
    _fsync_dir(path.parent)
    return path


def disk_full_line(err: OSError, rerun: str) -> str:
    """The one line of a full disk: which path, that the work so far is kept, how to resume.

    Every merpo write is atomic (this module), so the file being written when the disk
    filled is simply not there, and everything finished before it is whole.
    """
    where = f" writing {err.filename}" if err.filename else ""
    return (f"no space left on the device{where} ({os.strerror(err.errno)}); the work "
            f"finished so far is kept: free some space and rerun {rerun} to resume")


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj)`` to ``path`` atomically."""
    import torch

    return atomic_write(path, lambda handle: torch.save(obj, handle))


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: some filesystems refuse a folder fsync)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
