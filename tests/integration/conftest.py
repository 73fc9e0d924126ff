"""Integration-test helpers: one torch thread (the smoke networks are tiny, and intra-op
threads only slow them down when other processes share the CPU)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
