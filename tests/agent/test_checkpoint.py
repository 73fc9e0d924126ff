"""Checkpoints: atomic writes, weights_only round trip, RNG state restore, bad files."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch
from merpo_agent import checkpoint as ckpt
from merpo_agent.metrics import MetricsWriter, read_metrics


def _state():
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    return {"net": net.state_dict(), "opt": opt.state_dict(), "iteration": 7,
            "nested": {"xs": [1, 2.5, "a"], "flag": True}}


def test_round_trip_with_weights_only(tmp_path):
    state = _state()
    path = tmp_path / "checkpoints" / "latest.pt"
    ckpt.save_checkpoint(path, state)
    loaded = ckpt.load_checkpoint(path)
    assert loaded["iteration"] == 7 and loaded["nested"] == state["nested"]
    for key, value in state["net"].items():
        assert torch.equal(loaded["net"][key], value)
    assert loaded["opt"]["state"][0]["exp_avg"].shape == (2, 3)
    assert [p.name for p in path.parent.iterdir()] == ["latest.pt"]  # no temp files left


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    ckpt.save_checkpoint(path, {"iteration": 1})

    def crash(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, {"iteration": 2})
    monkeypatch.undo()
    assert ckpt.load_checkpoint(path)["iteration"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        torch.save({"x": _Evil()}, handle, pickle_module=pickle)
    with pytest.raises(ckpt.CheckpointError, match="cannot be loaded") as info:
        ckpt.load_checkpoint(path)
    assert "\n" not in str(info.value)


def test_missing_and_corrupt_checkpoints(tmp_path):
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(ckpt.CheckpointError, match="delete it"):
        ckpt.load_checkpoint(bad)


def test_rng_states_restore_every_stream(tmp_path):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(4)
    ckpt.save_checkpoint(tmp_path / "rng.pt", {"rng": ckpt.rng_state({"data": gen})})
    expected = (torch.rand(3), torch.rand(3, generator=gen), np.random.rand(3), random.random())
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    gen.manual_seed(99)
    ckpt.set_rng_state(ckpt.load_checkpoint(tmp_path / "rng.pt")["rng"], {"data": gen})
    again = (torch.rand(3), torch.rand(3, generator=gen), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0]) and torch.equal(expected[1], again[1])
    assert np.array_equal(expected[2], again[2]) and expected[3] == again[3]


def test_metrics_jsonl_is_rewritten_atomically_and_truncated_on_resume(tmp_path):
    writer = MetricsWriter(tmp_path, tensorboard=False)
    for k in range(1, 5):
        writer.log(k, "train", {"loss": torch.tensor([1.0, 3.0]) * k, "lr": 0.1})
    writer.log(5, "train", {"loss": torch.tensor(float("nan"))})
    records = read_metrics(tmp_path)
    assert [r["iteration"] for r in records] == [1, 2, 3, 4, 5]
    assert records[1]["loss"] == 4.0 and records[1]["lr"] == 0.1  # mean over tasks
    assert records[-1]["loss"] == "nan"  # still valid JSON
    resumed = MetricsWriter(tmp_path, tensorboard=False)
    resumed.truncate_after(2)
    assert [r["iteration"] for r in read_metrics(tmp_path)] == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl"]


def test_saving_over_latest_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / ckpt.LATEST
    for k in (1, 2, 3):
        ckpt.save_checkpoint(path, {"iteration": k})
    assert sorted(p.name for p in tmp_path.iterdir()) == [ckpt.LATEST, ckpt.PREVIOUS]
    assert ckpt.load_checkpoint(path)["iteration"] == 3
    assert ckpt.load_checkpoint(tmp_path / ckpt.PREVIOUS)["iteration"] == 2


def test_a_damaged_latest_falls_back_to_the_previous_with_one_line(tmp_path):
    path = tmp_path / ckpt.LATEST
    ckpt.save_checkpoint(path, {"iteration": 1})
    ckpt.save_checkpoint(path, {"iteration": 2})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # a torn copy, a full disk
    lines = []
    assert ckpt.load_checkpoint(path, say=lines.append)["iteration"] == 1
    assert len(lines) == 1 and str(path) in lines[0] and ckpt.PREVIOUS in lines[0]
    # a damaged latest is never kept as the previous one: the good one stays
    ckpt.save_checkpoint(path, {"iteration": 3})
    assert ckpt.load_checkpoint(tmp_path / ckpt.PREVIOUS)["iteration"] == 1
    assert ckpt.load_checkpoint(path)["iteration"] == 3


def test_fallback_line_goes_to_stderr_by_default_and_both_damaged_is_an_error(
    tmp_path, capsys
):
    path = tmp_path / ckpt.LATEST
    ckpt.save_checkpoint(path, {"iteration": 1})
    ckpt.save_checkpoint(path, {"iteration": 2})
    path.write_bytes(b"junk")
    assert ckpt.load_checkpoint(path)["iteration"] == 1
    assert "resuming from" in capsys.readouterr().err
    (tmp_path / ckpt.PREVIOUS).write_bytes(b"junk")
    with pytest.raises(ckpt.CheckpointError, match="damaged too") as info:
        ckpt.load_checkpoint(path)
    assert str(path) in str(info.value) and "delete it" in str(info.value)


def test_load_errors_name_the_file_and_never_advise_weights_only_false(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"x": _Evil()}, evil)
    truncated = tmp_path / "truncated.pt"
    ckpt.save_checkpoint(truncated, {"x": torch.zeros(1000)})
    truncated.write_bytes(truncated.read_bytes()[:-200])
    for path in (evil, truncated):
        with pytest.raises(ckpt.CheckpointError) as info:
            ckpt.load_checkpoint(path)
        message = str(info.value)
        assert str(path) in message and "delete it" in message and "\n" not in message
        assert "weights_only" not in message and "False" not in message
    with pytest.raises(ckpt.CheckpointError, match="pickled Python code"):
        ckpt.load_checkpoint(evil)


def test_written_files_are_group_readable(tmp_path, umask_022):
    from merpo_agent.plots import plot_run

    ckpt.save_checkpoint(tmp_path / ckpt.LATEST, {"iteration": 1})
    ckpt.save_checkpoint(tmp_path / ckpt.LATEST, {"iteration": 2})
    ckpt.atomic_write_text(tmp_path / "config.yaml", "seed: 0\n")
    writer = MetricsWriter(tmp_path, tensorboard=False)
    writer.log(1, "meta_test", {"adapted_return": 1.0})
    writer.log(2, "meta_test", {"adapted_return": 2.0})
    plot_run(tmp_path)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in files} >= {"latest.pt", "previous.pt", "config.yaml",
                                       "metrics.jsonl", "meta_test_return.png"}
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o644, p
