"""torchrun: a 2-process Gloo run on CPU meta-trains exactly what one process does.

Both runs go through the CLI as ``python -m merpo_agent train`` (the torchrun module entry)
at smoke size on the ``point_robot_store`` datasets, with a task batch of 3 so that the two
ranks hold uneven shares (2 and 1 slots): a plain (unweighted) mean over ranks, a missing
gradient all-reduce, a missing meta-Q all-reduce or a rank drawing its own randomness
would each move the meta-policy by about a learning rate, far beyond the tolerance.
What differs is only the order of float additions in the all-reduced means (~1e-7).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from merpo_agent import cli
from merpo_agent.checkpoint import load_checkpoint
from merpo_agent.presets import build_config
from merpo_agent.trainer import MetaTrainer

PRW = "merpo/PointRobotWind-v0"
OVERRIDES = [
    "run.steps=6",
    "meta.task_batch_size=3",
    "eval.every=0",  # the meta-test runs once, at the end
    "run.checkpoint_every=6",
    "test.compare_combo=false",  # COMBO's random init is drawn per rank's shapes
    # Reptile's full meta-Q step (the `small` preset's): Q_meta is the batch's mean critic,
    # so a wrong meta-Q average shows (with 1e-3 it would move Q_meta by only ~1e-6)
    "rac.meta_q_lr=1.0",
]
# float32 rounding of the all-reduced means, carried through 3 meta-iterations of Adam
ATOL = 1e-5


def _train(run_dir, nproc: int) -> subprocess.CompletedProcess:
    args = ["-m", "merpo_agent", "train", "--env", PRW, "--preset", "smoke",
            "--run-dir", str(run_dir), "--no-progress", "--threads", "1"]
    for item in OVERRIDES:
        args += ["--set", item]
    if nproc > 1:
        launcher = ["-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                    "--standalone"]
        args = launcher + args
    env = dict(os.environ, OMP_NUM_THREADS="1")  # MINARI_DATASETS_PATH: the store fixture
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


def _records(run_dir, phase):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["phase"] == phase]


def test_two_gloo_processes_match_one_process(point_robot_store, tmp_path, capsys):
    single_dir, dist_dir = tmp_path / "single", tmp_path / "torchrun"
    single = _train(single_dir, 1)
    dist = _train(dist_dir, 2)

    a = load_checkpoint(single_dir / "checkpoints/latest.pt")
    b = load_checkpoint(dist_dir / "checkpoints/latest.pt")
    assert a["iteration"] == b["iteration"] == 3
    meta_a, meta_b = a["meta"]["module"], b["meta"]["module"]
    assert meta_a.keys() == meta_b.keys()
    assert any(k.startswith("policy.") for k in meta_a) and any(k.startswith("q.") for k in meta_a)
    for key in meta_a:
        torch.testing.assert_close(meta_b[key], meta_a[key], rtol=0, atol=ATOL, msg=key)
    # every task's persistent learner (networks, duals, Adam) merged from both ranks: the
    # same table as one process
    table_a, table_b = a["table"]["module"], b["table"]["module"]
    for key in table_a:
        torch.testing.assert_close(table_b[key], table_a[key], rtol=0, atol=ATOL, msg=key)
    for name, state in a["table"]["optimizers"].items():
        torch.testing.assert_close(b["table"]["optimizers"][name]["steps"], state["steps"])

    # the comparison means something: meta-training moved pi_c far beyond the tolerance
    cfg = build_config(PRW, "smoke", "merpo", overrides=OVERRIDES)
    fresh = MetaTrainer(cfg, tmp_path / "fresh", progress=False, tensorboard=False)
    fresh.build()
    moved = max(
        (meta_a[name] - p.detach()).abs().max().item()
        for name, p in fresh.meta.named_parameters() if name.startswith("policy.")
    )
    assert moved > 100 * ATOL

    # rank 0 logged the whole batch's metrics once per iteration, and printed one table
    train_a, train_b = _records(single_dir, "train"), _records(dist_dir, "train")
    assert [r["iteration"] for r in train_b] == [1, 2, 3]
    for ra, rb in zip(train_a, train_b, strict=True):
        for key in ("critic_loss", "actor_loss", "lam", "meta_policy_loss"):
            assert rb[key] == pytest.approx(ra[key], rel=1e-4, abs=1e-5), key
    assert dist.stdout.count("safe improvement on") == 1
    # the meta-test, split over the ranks (one test task each), gathers the same table
    test_a, test_b = _records(single_dir, "meta_test"), _records(dist_dir, "meta_test")
    assert len(test_a) == len(test_b) == 1
    for key in ("behavior_return", "meta_policy_return", "adapted_return",
                "beha_only_return"):
        assert test_b[0][key] == pytest.approx(test_a[0][key], abs=1e-3), key
    assert "safe improvement on" in single.stdout

    # the torchrun checkpoint (rank 0's 2 slots) loads in one process (3 slots): evaluate
    assert cli.main(["evaluate", str(dist_dir)]) == 0
    assert f"{test_b[0]['meta_policy_return']:.2f}" in capsys.readouterr().out
