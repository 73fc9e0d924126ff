"""The baselines' run directories (``merpo-agent train --algo focal|cbcq|mbml|batch-pearl``):
the layout MerPO's runs have, ``evaluate`` and ``plot`` on them, typed overrides, resume
equal to an uninterrupted run on CPU, the NaN stop."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from merpo_agent.baselines.run import BASELINES, build_baseline, train_baseline_run
from merpo_agent.checkpoint import load_checkpoint
from merpo_agent.cli import main
from merpo_agent.config import ConfigError
from merpo_agent.trainer import TrainingDiverged

ENV = "merpo/PointRobotWind-v0"
SUBSET = ["data.train_tasks=[0,1,2,3]", "data.test_tasks=[40,41]"]


def records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("algo", ["mbml", "batch-pearl"])
def test_smoke_train_evaluate_plot_through_the_cli(algo, point_robot_store, tmp_path, capsys):
    run_dir = tmp_path / algo
    code = main([
        "train", "--env", ENV, "--algo", algo, "--preset", "smoke", "--seed", "0",
        "--run-dir", str(run_dir), "--no-progress", "--threads", "1",
        *[x for item in SUBSET for x in ("--set", item)],
        "--set", "run.steps=40", "--set", "eval.every=20", "--set", "run.log_every=20",
    ])
    assert code == 0
    out = capsys.readouterr().out
    label = BASELINES[algo].label
    assert f"{label} beats the behavior policy on" in out
    # MerPO's layout: config.yaml, metrics.jsonl, TensorBoard, checkpoints/latest.pt, plots
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["algo"] == algo and config["label"] == label and config["env"] == ENV
    assert config["run"]["steps"] == 40 and config["data"]["test_tasks"] == [40, 41]
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    assert list((run_dir / "tensorboard").iterdir())
    tests = [r for r in records(run_dir) if r["phase"] == "meta_test"]
    assert [r["iteration"] for r in tests] == [20, 40]
    assert all(math.isfinite(r["baseline_return"]) for r in tests)
    final = [r for r in records(run_dir) if r["phase"] == "final"]
    assert len(final) == 1 and set(final[0]["tasks"]) == {"40", "41"}
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]

    # evaluate: the saved agent's table, the same numbers as the end of training
    assert main(["evaluate", str(run_dir)]) == 0
    table = capsys.readouterr().out
    for task, row in final[0]["tasks"].items():
        assert f"{row[algo]:.2f}" in table and task in table
    # plot: the meta-test curve has the baseline's line and the behavior reference
    assert main(["plot", str(run_dir)]) == 0
    paths = capsys.readouterr().out.split()
    assert paths[0].endswith("meta_test_return.png") and len(paths) == 2


def test_plot_draws_the_baseline_curve(tmp_path):
    """A baseline run directory's meta-test plot is not empty axes (a line per series)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from merpo_agent import plots

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump({"algo": "mbml", "label": "MBML"}))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"iteration": 10, "phase": "meta_test", "baseline_return": -3.0,
         "behavior_return": -5.0},
        {"iteration": 20, "phase": "meta_test", "baseline_return": -2.0,
         "behavior_return": -5.0},
    ]))
    drawn = []
    original = plots.save_figure

    def keep(fig, path):
        drawn.append([(line.get_label(), list(line.get_ydata())) for line in fig.axes[0].lines])
        original(fig, path)

    plots.save_figure = keep
    try:
        plots.plot_run(run_dir)
    finally:
        plots.save_figure = original
        plt.close("all")
    assert drawn[0][0] == ("MBML", [-3.0, -2.0])
    assert drawn[0][1][0] == "behavior (dataset)"


def test_set_parses_lists_ints_and_numbers_for_every_baseline():
    for algo in BASELINES:
        run, config = build_baseline(algo, ENV, "smoke", [
            "data.train_tasks=[0, 1,2]", "data.test_tasks=41", "run.steps=1e3", "critic_lr=3e-4",
            "latent_dim=7", "run.log_every=50",
        ])
        assert run.data.train_tasks == (0, 1, 2) and run.data.test_tasks == (41,)
        assert run.run.steps == 1000 and isinstance(run.run.steps, int)
        assert config.critic_lr == pytest.approx(3e-4) and isinstance(config.critic_lr, float)
        assert config.latent_dim == 7 and config.log_every == 50
        run, config = build_baseline(algo, ENV, "smoke", ["task_batch_size=none"])
        assert config.task_batch_size is None


@pytest.mark.parametrize(
    "algo, item, message",
    [
        ("focal", "run.steps=1.5", "expected an integer"),
        ("cbcq", "critic_lr=fast", "expected a number"),
        ("mbml", "data.train_tasks=[0,a]", "bad task range"),
        ("batch-pearl", "tune_entropy=maybe", "expected true or false"),
        ("batch-pearl", "kl_lamda=1", "did you mean kl_lambda"),
        ("mbml", "task_batch_size=1", "bad MBML setting"),
    ],
)
def test_bad_overrides_are_one_line_config_errors(algo, item, message):
    with pytest.raises(ConfigError, match=message) as info:
        build_baseline(algo, ENV, "smoke", [item])
    assert "\n" not in str(info.value)


def test_config_file_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  steps: 30\nkl_lambda: 0.5\ndata:\n  train_tasks: [1, 2]\n")
    run, config = build_baseline("batch-pearl", ENV, "smoke", ["run.steps=40"], path)
    assert run.run.steps == 40 and config.kl_lambda == 0.5 and run.data.train_tasks == (1, 2)


def test_every_algorithm_shares_one_schema_and_the_presets_data():
    """data / run / eval are the same sections for MerPO and every baseline, and a preset
    name means the same tasks and data for each (smoke: 0-3 / 40-41 on the test datasets)."""
    from merpo_agent.presets import build_config

    merpo = build_config(ENV, "smoke")
    for algo in BASELINES:
        for preset in ("smoke", "small", "repro", "table2"):
            run, _ = build_baseline(algo, ENV, preset, [])
            assert run.data == build_config(ENV, preset).data, (algo, preset)
        run, config = build_baseline(algo, ENV, "smoke", [
            "data.train_tasks=0-2,5", "method.critic_lr=2e-3", "eval.episodes=3",
        ])
        assert run.data.train_tasks == (0, 1, 2, 5) and config.critic_lr == 2e-3
        assert run.eval.episodes == 3
    assert merpo.data.train_tasks == (0, 1, 2, 3) and merpo.data.test_tasks == (40, 41)
    assert {"data", "run", "eval"} <= set(merpo.to_dict())


@pytest.mark.parametrize("item, new", [
    ("steps=10", "run.steps"), ("train_tasks=[1]", "data.train_tasks"),
    ("quality=expert", "data.quality"), ("eval_every=5", "eval.every"),
    ("data_preset=test", "data.preset"), ("method.log_every=5", "run.log_every"),
])
def test_old_baseline_keys_name_their_new_key(item, new):
    with pytest.raises(ConfigError, match=f"use {new}") as info:
        build_baseline("focal", ENV, "smoke", [item])
    assert "\n" not in str(info.value)


def test_an_empty_task_list_is_an_error_not_the_whole_split():
    for item in ("data.train_tasks=[]", "data.test_tasks="):
        with pytest.raises(ConfigError, match="empty"):
            build_baseline("cbcq", ENV, "smoke", [item])


# ---- resume ----------------------------------------------------------------------------


def learner_state(run_dir):
    return load_checkpoint(run_dir / "checkpoints" / "latest.pt")["learner"]


@pytest.mark.parametrize("algo", list(BASELINES))
def test_resume_equals_an_uninterrupted_run(algo, point_robot_store, tmp_path):
    """Stopped after 20 updates (its checkpoint) and resumed to 40, a run ends with exactly
    the parameters, optimizer states and generator of a run of 40 in one go (CPU)."""
    common = [*SUBSET, "eval.every=20", "run.log_every=10", "run.checkpoint_every=10",
              "eval.episodes=1", "task_batch_size=2"]
    whole, split = tmp_path / "whole", tmp_path / "split"
    train_baseline_run(algo, ENV, "smoke", [*common, "run.steps=40"], 3, "cpu", whole,
                       progress=False)
    train_baseline_run(algo, ENV, "smoke", [*common, "run.steps=20"], 3, "cpu", split,
                       progress=False)
    assert load_checkpoint(split / "checkpoints" / "latest.pt")["step"] == 20
    train_baseline_run(algo, ENV, "smoke", [*common, "run.steps=40"], 3, "cpu", split,
                       progress=False)
    a, b = learner_state(whole), learner_state(split)
    assert a["module"].keys() == b["module"].keys()
    for name in a["module"]:
        assert torch.equal(a["module"][name], b["module"][name]), name
    assert torch.equal(a["generator"], b["generator"])
    for name, opt in a["optimizers"].items():
        for key, value in opt["state"].items():
            for field in value:
                assert torch.equal(torch.as_tensor(value[field]),
                                   torch.as_tensor(b["optimizers"][name]["state"][key][field]))
    # the resumed log reads like the uninterrupted one (same steps, same losses; the
    # wall-clock fields differ)
    def train_records(run_dir):
        return [{k: v for k, v in r.items() if k not in ("time", "wall_s")}
                for r in records(run_dir) if r["phase"] == "train"]

    train_a, train_b = train_records(whole), train_records(split)
    assert [r["iteration"] for r in train_a] == [r["iteration"] for r in train_b]
    assert train_a == train_b
    finals = [r for r in records(split) if r["phase"] == "final"]
    assert [r["iteration"] for r in finals] == [40]  # the shorter run's table is gone


def test_resume_with_other_settings_is_refused(point_robot_store, tmp_path):
    run_dir = tmp_path / "r"
    train_baseline_run("batch-pearl", ENV, "smoke", [*SUBSET, "run.steps=5", "eval.every=5"], 0,
                       "cpu", run_dir, progress=False)
    with pytest.raises(ConfigError, match="other settings .*method.latent_dim"):
        train_baseline_run("batch-pearl", ENV, "smoke",
                           [*SUBSET, "run.steps=5", "eval.every=5", "latent_dim=3"], 0, "cpu",
                           run_dir, progress=False)


def test_nan_loss_stops_with_one_line_and_keeps_the_last_good_checkpoint(
    point_robot_store, tmp_path, capsys, monkeypatch
):
    from merpo_agent.baselines.mbml import MBMLLearner

    original = MBMLLearner.step
    calls = {"n": 0}

    def poisoned(self, sampler, task_indices):
        metrics = original(self, sampler, task_indices)
        calls["n"] += 1
        if calls["n"] >= 13:  # from update 13 on, a NaN critic loss
            metrics["critic_loss"] = torch.tensor(float("nan"))
        return metrics

    monkeypatch.setattr(MBMLLearner, "step", poisoned)
    run_dir = tmp_path / "r"
    with pytest.raises(TrainingDiverged, match="update 15.*last good checkpoint at update 10"):
        train_baseline_run("mbml", ENV, "smoke",
                           [*SUBSET, "run.steps=40", "run.log_every=5", "run.checkpoint_every=10",
                            "eval.every=40"], 0, "cpu", run_dir, progress=False)
    assert load_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"] == 10
    calls["n"] = 0
    code = main(["train", "--env", ENV, "--algo", "mbml", "--preset", "smoke",
                 "--run-dir", str(tmp_path / "cli"), "--no-progress",
                 *[x for item in SUBSET for x in ("--set", item)], "--set", "run.steps=20",
                 "--set", "run.log_every=5", "--set", "eval.every=20"])
    err = capsys.readouterr().err
    assert code == 1 and "non-finite loss" in err and len(err.strip().splitlines()) == 1


def test_evaluate_refuses_a_directory_that_is_no_run(tmp_path, capsys):
    (tmp_path / "config.yaml").write_text("algo: mbml\n")  # no method section, no checkpoint
    assert main(["evaluate", str(tmp_path)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
