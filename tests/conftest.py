"""Shared test fixtures.

``one_torch_thread`` (autouse): each test runs on one torch thread. ``umask_022``: the usual
umask for the tests of file modes.

``point_robot_store``: a temporary Minari store holding the Point-Robot-Wind datasets of
tasks 0, 1, 2, 3, 40, 41 in every quality, built once per test session with the "test"
preset (tens of seconds on 2 CPU cores). ``MINARI_DATASETS_PATH`` points at it for the
rest of the session, so ``minari.load_dataset`` and ``merpo_data.TaskSampler`` find them.
"""

from __future__ import annotations

import os

import pytest

POINT_ROBOT_ENV = "merpo/PointRobotWind-v0"
POINT_ROBOT_TASKS = (0, 1, 2, 3, 40, 41)


def pytest_configure(config):
    # The test networks are tiny: with 2 intra-op threads on a 2-core machine each small
    # matmul waits on thread hand-offs (measured ~10x slower), so the suite runs on one.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Every test starts on one torch thread, whatever the test before it set (the one
    place for it: no test file needs its own copy)."""
    import torch

    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


@pytest.fixture(scope="session", autouse=True)
def isolated_minari_store(tmp_path_factory):
    """No test ever writes into the user's own Minari store (~/.minari/datasets)."""
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(tmp_path_factory.mktemp("isolated-store"))
    yield
    if before is None:
        os.environ.pop("MINARI_DATASETS_PATH", None)
    else:
        os.environ["MINARI_DATASETS_PATH"] = before


@pytest.fixture
def disk_full_at_second_save(monkeypatch):
    """``torch.save`` fails with ENOSPC on its second call (a disk that fills mid-run):
    use ``with disk_full_at_second_save(): ...``; outside the block saves work again."""
    import contextlib
    import errno

    import torch

    real_save = torch.save

    @contextlib.contextmanager
    def full_disk():
        calls = {"n": 0}

        def second_write_fills_the_disk(obj, f, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 2:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real_save(obj, f, *args, **kwargs)

        with monkeypatch.context() as m:
            m.setattr(torch, "save", second_write_fills_the_disk)
            yield

    return full_disk


@pytest.fixture
def umask_022():
    """The usual umask 022 for one test (file-mode tests), whatever the shell's."""
    before = os.umask(0o022)
    yield
    os.umask(before)


@pytest.fixture(scope="session")
def point_robot_store(tmp_path_factory):
    """Path of a Minari store with Point-Robot-Wind test datasets (env var set for the session)."""
    import merpo_data

    root = tmp_path_factory.mktemp("minari-store")
    before = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        merpo_data.generate(
            POINT_ROBOT_ENV, tasks=list(POINT_ROBOT_TASKS), preset="test", progress=False
        )
        yield root
    finally:
        if before is None:
            os.environ.pop("MINARI_DATASETS_PATH", None)
        else:
            os.environ["MINARI_DATASETS_PATH"] = before
