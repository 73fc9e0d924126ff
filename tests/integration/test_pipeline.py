"""End to end at smoke size on the ``point_robot_store`` datasets (tasks 0-3 train, 40-41 test):
the quickstart pipeline, every algorithm, exact resume, and the NaN stop."""

from __future__ import annotations

import json
import math

import pytest
import torch
from merpo_agent import cli, quickstart
from merpo_agent.checkpoint import load_checkpoint
from merpo_agent.config import ALGOS, ConfigError
from merpo_agent.presets import build_config
from merpo_agent.task_learners import TaskLearners
from merpo_agent.trainer import MetaTrainer, TrainingDiverged

PRW = "merpo/PointRobotWind-v0"


def _smoke(*overrides, algo="merpo"):
    return build_config(PRW, "smoke", algo, overrides=list(overrides))


def test_quickstart_pipeline_at_smoke_size(point_robot_store, tmp_path, capsys):
    run_dir = tmp_path / "quickstart"
    code = quickstart.main(["--preset", "smoke", "--data-preset", "test", "--run-dir",
                            str(run_dir), "--no-progress"])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert out[-1] == str(run_dir / "plots" / "meta_test_return.png")
    assert (run_dir / "plots" / "meta_test_return.png").is_file()
    assert any(line.startswith("safe improvement on ") and line.endswith(" of 2 tasks")
               for line in out)
    assert any("held-out MSE adapted" in line and "from scratch" in line for line in out)

    for name in ("config.yaml", "metrics.jsonl", "checkpoints/latest.pt"):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tensorboard").iterdir())
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all("iteration" in r and "phase" in r for r in records)
    train = [r for r in records if r["phase"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4]
    assert all(math.isfinite(r["critic_loss"]) and math.isfinite(r["actor_loss"]) for r in train)
    tests = [r for r in records if r["phase"] == "meta_test"]
    assert [r["iteration"] for r in tests] == [2, 4]
    for key in ("behavior_return", "meta_policy_return", "adapted_return", "combo_return",
                "beha_only_return"):
        assert math.isfinite(tests[-1][key]), key
    dynamics = [r for r in records if r["phase"] == "dynamics_test"]
    assert {"heldout_mse_adapted", "heldout_mse_scratch"} <= dynamics[0].keys()
    per_task = [r for r in records if r["phase"] == "meta_test_tasks"][-1]
    assert per_task["tasks"] == [40, 41] and len(per_task["safe"]) == 2

    # evaluate reproduces the run's last meta-test; plot rewrites the PNGs
    assert cli.main(["evaluate", str(run_dir)]) == 0
    table = capsys.readouterr().out
    assert f"{tests[-1]['adapted_return']:.2f}" in table
    assert "safe improvement on" in table and "COMBO" in table
    (run_dir / "plots" / "training.png").unlink()
    assert cli.main(["plot", str(run_dir)]) == 0
    assert (run_dir / "plots" / "training.png").stat().st_size > 1000

    # a finished run: `quickstart` again only re-evaluates (no training step is added)
    assert quickstart.main(["--preset", "smoke", "--data-preset", "test", "--run-dir",
                            str(run_dir), "--no-progress"]) == 0
    again = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in again if r["phase"] == "train"] == [1, 2, 3, 4]
    assert [r["iteration"] for r in again if r["phase"] == "meta_test"] == [2, 4]


def _all_tensors(tree, prefix=""):
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, dict):
        for key, value in tree.items():
            yield from _all_tensors(value, f"{prefix}/{key}")
    elif isinstance(tree, list | tuple):
        for i, value in enumerate(tree):
            yield from _all_tensors(value, f"{prefix}/{i}")


def test_resume_ends_with_the_same_parameters(point_robot_store, tmp_path):
    quiet = ["test.compare_combo=false", "test.compare_beha_only=false", "eval.every=0"]
    whole = MetaTrainer(_smoke(*quiet), tmp_path / "whole", progress=False, say=lambda _: None,
                        tensorboard=False)
    whole.train()
    half = MetaTrainer(_smoke(*quiet, "run.steps=4"), tmp_path / "split",
                       progress=False, say=lambda _: None, tensorboard=False)
    half.train()
    assert load_checkpoint(tmp_path / "split/checkpoints/latest.pt")["iteration"] == 2
    resumed = MetaTrainer(_smoke(*quiet), tmp_path / "split", progress=False,
                          say=lambda _: None, tensorboard=False)
    resumed.train()

    a = load_checkpoint(tmp_path / "whole/checkpoints/latest.pt")
    b = load_checkpoint(tmp_path / "split/checkpoints/latest.pt")
    assert a["iteration"] == b["iteration"] == 4
    tensors_a, tensors_b = dict(_all_tensors(a)), dict(_all_tensors(b))
    assert tensors_a.keys() == tensors_b.keys()
    assert any("meta/module/policy" in k for k in tensors_a)
    for key, value in tensors_a.items():
        assert torch.equal(value, tensors_b[key]), key
    # a run directory refuses other settings (but takes more iterations)
    with pytest.raises(ConfigError, match=r"other settings \(rac.actor_lr\)"):
        MetaTrainer(_smoke(*quiet, "rac.actor_lr=0.01"), tmp_path / "split")
    MetaTrainer(_smoke(*quiet, "run.steps=12"), tmp_path / "split")
    # and training moved the meta-policy: the equality is not of untouched initial weights
    policy_keys = [k for k in tensors_a if k.startswith("/meta/module/policy")]
    first = MetaTrainer(_smoke(*quiet), tmp_path / "whole", progress=False, tensorboard=False)
    first.build()
    initial = dict(first.meta.named_parameters())
    assert any(not torch.equal(tensors_a[k], initial[k.removeprefix("/meta/module/")])
               for k in policy_keys)


@pytest.mark.parametrize("algo", ALGOS)
def test_every_algorithm_runs(point_robot_store, tmp_path, algo):
    cfg = _smoke("run.steps=4", "eval.every=0", "test.adaptation_steps=2", algo=algo)
    trainer = MetaTrainer(cfg, tmp_path / algo, progress=False, say=lambda _: None,
                          tensorboard=False)
    result = trainer.train()
    assert result.iteration == 2
    for name, returns in result.returns.items():
        assert returns.shape == (2,) and all(math.isfinite(x) for x in returns), name
    assert ("beha_only" in result.returns) == (algo != "combo")
    duals = trainer.table.duals()  # (4, N): log ent temp, log beta, lam, alpha
    visited = trainer.table.learners.critic_optimizer.steps > 0  # persistent per task
    steps = trainer.table.learners.critic_optimizer.steps
    assert visited.any() and torch.all(steps[visited] % 2 == 0)  # J = 2 per visit
    if algo == "combo":
        assert torch.all(duals[2] == 0.0)
    elif algo == "beha-only":
        assert torch.all(duals[3] == 1.0)
    elif algo == "combo3":
        assert torch.all(duals[3] == 0.0)
    elif algo == "merpo-adp":
        assert torch.all(duals[3, visited] != 0.4)  # Eq. 11 moved the visited tasks
        assert torch.all(duals[3, ~visited] == 0.4)
        assert torch.all((duals[3] >= 0.1) & (duals[3] <= 0.5))
    if algo == "cql":
        assert trainer.buffer is None


def test_nan_stops_training_and_keeps_the_last_checkpoint(
    point_robot_store, tmp_path, monkeypatch, capsys
):
    real_update = TaskLearners.update
    calls = {"n": 0}

    def update_that_diverges(self, *args, **kwargs):
        metrics = real_update(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] > 2 * 2:  # smoke: 2 inner steps; diverge in meta-iteration 3
            metrics["critic_loss"] = metrics["critic_loss"] * float("nan")
        return metrics

    monkeypatch.setattr(TaskLearners, "update", update_that_diverges)
    run_dir = tmp_path / "nan"
    code = cli.main(["train", "--env", PRW, "--preset", "smoke", "--run-dir", str(run_dir),
                     "--no-progress", "--set", "run.checkpoint_every=2",
                     "--set", "eval.every=0"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1 and "non-finite loss" in err and "meta-iteration 2" in err
    assert load_checkpoint(run_dir / "checkpoints/latest.pt")["iteration"] == 2
    assert not list((run_dir / "checkpoints").glob(".*tmp"))

    trainer = MetaTrainer(_smoke("run.checkpoint_every=2", "eval.every=0"), run_dir,
                          progress=False, say=lambda _: None, tensorboard=False)
    with pytest.raises(TrainingDiverged):
        trainer.train()  # resumes at 2 and diverges again; the checkpoint is still 2
    assert load_checkpoint(run_dir / "checkpoints/latest.pt")["iteration"] == 2

    # the checkpoint before it is kept; a damaged latest.pt resumes from it, saying so
    assert load_checkpoint(run_dir / "checkpoints/previous.pt")["iteration"] == 1
    latest = run_dir / "checkpoints/latest.pt"
    latest.write_bytes(latest.read_bytes()[:1000])
    capsys.readouterr()
    resumed = MetaTrainer(_smoke("run.checkpoint_every=2", "eval.every=0"), run_dir,
                          progress=False, say=lambda _: None, tensorboard=False)
    resumed.build()
    resumed.load()
    assert resumed.iteration == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is damaged; resuming from" in err[0] and "previous.pt" in err[0]
