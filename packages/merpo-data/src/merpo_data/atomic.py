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
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_text", "atomic_torch_save"]


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
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)
    return path


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
