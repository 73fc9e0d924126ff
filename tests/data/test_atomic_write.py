"""merpo_data.atomic: the repository's one atomic write (mode, failure, torch.save)."""

from __future__ import annotations

import os

import pytest
import torch
from merpo_data.atomic import atomic_torch_save, atomic_write, atomic_write_text


def test_files_get_the_mode_open_gives_not_mkstemps(tmp_path, umask_022):
    atomic_write_text(tmp_path / "a" / "b.txt", "hello")
    atomic_torch_save({"x": torch.ones(2)}, tmp_path / "c.pt")
    assert (tmp_path / "a" / "b.txt").read_text() == "hello"
    assert torch.load(tmp_path / "c.pt", weights_only=True)["x"].sum() == 2
    for name in ("a/b.txt", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644
    os.umask(0o077)  # a stricter umask is respected, as open() respects it
    atomic_write_text(tmp_path / "private.txt", "x")
    assert (tmp_path / "private.txt").stat().st_mode & 0o777 == 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")

    def crash(handle):
        handle.write(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, crash)
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.txt"]
