"""One writer at a time: an exclusive lock on a dataset store or a run directory.

Two ``merpo-data generate`` into one store, or two ``merpo-agent train`` on one run
directory, would otherwise both write (the second ``generate`` then fails half-way with
"already exists", two trainers overwrite each other's checkpoints). :func:`hold_lock`
takes ``fcntl.flock`` on a lock file: the kernel drops the lock when its process dies, so
a ``kill -9`` never leaves a stale lock behind. The file records who holds it (pid, host,
since when), so the second process can say so in one line. The lock file itself stays
(removing it would let two processes lock two different files of the same name).

Also the one home of :func:`process_gone`, the test of whether a leftover's owner is dead.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

__all__ = ["LockHeld", "hold_lock", "process_gone"]


class LockHeld(RuntimeError):
    """Another process holds the lock; the message says who and since when (one line)."""


@contextlib.contextmanager
def hold_lock(path: str | Path, what: str) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) for the ``with`` body.

    ``what`` names the locked thing in the error, e.g. ``"run directory runs/x"``. Raises
    :class:`LockHeld` at once (no waiting) when another process holds it. Filesystems
    without ``flock`` (some network mounts) are used unlocked rather than refused.
    """
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        locked = True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise LockHeld(f"{what} is in use by {_holder(fd)}; wait for it to finish "
                               "(or stop it), or use another one") from None
            locked = False  # no flock on this filesystem: go on unlocked
        if locked:
            holder = {"pid": os.getpid(), "host": socket.gethostname(),
                      "since": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
            with contextlib.suppress(OSError):  # the holder's name is a courtesy, not the lock
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            if locked:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        return f"pid {info['pid']} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def process_gone(pid: int, host: str) -> bool:
    """True when process ``pid`` of this host no longer exists (never for another host's)."""
    if host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: alive
        return False
    return False
