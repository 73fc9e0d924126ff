"""``train --setup-cache``: runs that compute the same setup compute it once, and a run
that reuses it ends exactly where it would have ended computing it."""

from __future__ import annotations

import torch
from merpo_agent.checkpoint import load_checkpoint
from merpo_agent.presets import build_config
from merpo_agent.trainer import MetaTrainer

PRW = "merpo/PointRobotWind-v0"


def _train(run_dir, cache, *overrides, seed=0):
    messages: list[str] = []
    cfg = build_config(PRW, "smoke", "merpo", seed=seed,
                       overrides=["eval.every=0", "run.steps=6", *overrides])
    MetaTrainer(cfg, run_dir, progress=False, say=messages.append, tensorboard=False,
                setup_cache=cache).train()
    return load_checkpoint(run_dir / "checkpoints" / "latest.pt"), messages


def _tensors(state, prefix=""):
    if isinstance(state, dict):
        for key, value in state.items():
            yield from _tensors(value, f"{prefix}/{key}")
    elif isinstance(state, torch.Tensor):
        yield prefix, state


def _equal(a, b) -> bool:
    skip = "/rng/numpy"  # numpy's global RNG: untouched and unseeded by training
    ta = {k: v for k, v in _tensors(a) if not k.startswith(skip)}
    tb = {k: v for k, v in _tensors(b) if not k.startswith(skip)}
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_a_reused_setup_gives_the_run_it_would_have_computed(point_robot_store, tmp_path):
    cache = tmp_path / "cache"
    plain, _ = _train(tmp_path / "plain", None, "rac.actor_lr=3e-3")
    first, said = _train(tmp_path / "first", cache)  # another lr: the same setup
    assert len(list(cache.glob("*.pt"))) == 1 and not any("reused" in m for m in said)
    again, said = _train(tmp_path / "again", cache, "rac.actor_lr=3e-3")
    assert any("setup: reused" in m for m in said)
    assert _equal(again, plain)
    # the metric records of the setup are there too
    records = (tmp_path / "again" / "metrics.jsonl").read_text()
    assert '"phase": "dynamics_train"' in records and '"behavior_cloning_test"' in records


def test_another_seed_or_dynamics_setting_does_not_reuse_a_setup(point_robot_store, tmp_path):
    cache = tmp_path / "cache"
    _train(tmp_path / "a", cache)
    _, said = _train(tmp_path / "b", cache, seed=1)
    _, said_dyn = _train(tmp_path / "c", cache, "dynamics.meta_iterations=2")
    assert not any("reused" in m for m in said + said_dyn)
    assert len(list(cache.glob("*.pt"))) == 3
