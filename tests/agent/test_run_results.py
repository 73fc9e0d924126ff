"""What a researcher cites from a run: normalized scores and spreads in every meta-test
record and table, ``evaluate``'s files and flags (MerPO and every baseline), ``run.json``,
the TensorBoard tags, ``--wandb``, ``load_policy`` and readable plots.

One MerPO smoke run (tasks 0-3 train, 40-41 test) is shared by the tests of this module."""

from __future__ import annotations

import csv
import json
import math
import stat
import sys

import gymnasium as gym
import merpo_agent
import numpy as np
import pytest
import torch
import yaml
from agent_helpers import DEVICES
from merpo_agent import evaluation
from merpo_agent.baselines.run import BASELINES
from merpo_agent.checkpoint import load_checkpoint
from merpo_agent.cli import main
from merpo_agent.meta_policy import MetaPolicy
from merpo_agent.metrics import read_metrics
from merpo_agent.policy import PolicyError

ENV = "merpo/PointRobotWind-v0"
BASELINE_SUBSET = ["data.train_tasks=[0,1,2,3]", "data.test_tasks=[40,41]", "run.steps=20",
                   "eval.every=20", "run.log_every=10"]


def _references(tasks, quality="medium"):
    """The test-preset datasets' reference scores, read straight from Minari (not through
    merpo)."""
    import minari

    lows, highs = [], []
    for task in tasks:
        meta = minari.load_dataset(
            f"merpo/point-robot-wind/task-{task:02d}-{quality}-test-v0").storage.metadata
        lows.append(meta["ref_min_score"])
        highs.append(meta["ref_max_score"])
    return np.array(lows), np.array(highs)


@pytest.fixture(scope="module")
def merpo_run(point_robot_store, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("results") / "merpo"
    code = main(["train", "--env", ENV, "--preset", "smoke", "--run-dir", str(run_dir),
                 "--no-progress", "--threads", "1"])
    assert code == 0
    return run_dir


def _train_baseline(algo, run_dir, *extra):
    code = main(["train", "--env", ENV, "--algo", algo, "--preset", "smoke", "--seed", "0",
                 "--run-dir", str(run_dir), "--no-progress", "--threads", "1",
                 *[x for item in BASELINE_SUBSET for x in ("--set", item)], *extra])
    assert code == 0


class _Spy:
    """Records the arguments of every real-env evaluation (and still runs it)."""

    def __init__(self, monkeypatch, module):
        self.calls = []
        real = module.evaluate_in_env

        def spy(env_id, tasks, policies, episodes, seed, device, **kwargs):
            self.calls.append({"tasks": list(tasks), "episodes": episodes, "seed": seed})
            return real(env_id, tasks, policies, episodes, seed, device, **kwargs)

        monkeypatch.setattr(module, "evaluate_in_env", spy)


# ---- normalized scores and spread --------------------------------------------------------


def test_meta_test_records_give_normalized_scores_and_spread(merpo_run):
    records = read_metrics(merpo_run)
    low, high = _references([40, 41])
    tests = [r for r in records if r["phase"] == "meta_test"]
    assert [r["iteration"] for r in tests] == [2, 4]
    per_task = [r for r in records if r["phase"] == "meta_test_tasks"]
    for mean, tasks in zip(tests, per_task, strict=True):
        for column in ("behavior", "meta_policy", "adapted", "beha_only"):
            returns = np.array(tasks[f"{column}_return"])
            expected = 100 * (returns - low) / (high - low)  # each task its own refs
            assert np.allclose(tasks[f"{column}_normalized"], expected), column
            assert mean[f"{column}_normalized"] == pytest.approx(expected.mean())
            assert mean[f"{column}_return_std"] >= 0 and mean[f"{column}_normalized_std"] >= 0
    # the behavior column's spread is over the datasets' episodes of both tasks
    assert tests[0]["behavior_return_std"] > 0
    assert "combo_normalized" in tests[-1]  # the final meta-test's COMBO column too


def test_meta_test_table_prints_the_normalized_rows():
    result = evaluation.MetaTestResult(
        ENV, (40, 41), 3,
        {"behavior": np.array([-10.0, -20.0]), "meta_policy": np.array([-8.0, -15.0]),
         "adapted": np.array([-6.0, -12.0])},
        episodes={"adapted": [np.array([-5.0, -7.0]), np.array([-12.0, -12.0])]},
        ref_min=np.array([-30.0, -40.0]), ref_max=np.array([-5.0, -10.0]),
    )
    means = result.means()
    assert means["adapted_normalized"] == pytest.approx((96.0 + 93.33333) / 2, rel=1e-4)
    assert means["adapted_return_std"] == pytest.approx(np.std([-5, -7, -12, -12]))
    table = result.table()
    assert "normalized" in table and f"{means['adapted_normalized']:.1f}" in table
    assert f"{means['adapted_return_std']:.2f}" in table


# ---- evaluate ----------------------------------------------------------------------------


def test_evaluate_writes_json_and_csv_and_honours_episodes_tasks_seed(
    merpo_run, capsys, monkeypatch, umask_022
):
    spy = _Spy(monkeypatch, evaluation)
    assert main(["evaluate", str(merpo_run), "--episodes", "3", "--tasks", "41",
                 "--seed", "5"]) == 0
    out = capsys.readouterr().out
    assert spy.calls == [{"tasks": [41], "episodes": 3, "seed": 5}]
    data = json.loads((merpo_run / "evaluation.json").read_text())
    assert data["tasks"] == [41] and data["episodes"] == 3 and data["seed"] == 5
    assert data["summary"]["adapted_return"] == pytest.approx(data["rows"][0]["adapted_return"])
    low, high = _references([41])
    assert data["rows"][0]["adapted_normalized"] == pytest.approx(
        100 * (data["rows"][0]["adapted_return"] - low[0]) / (high[0] - low[0]))
    with open(merpo_run / "evaluation.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["task"] for row in rows] == ["41"]
    assert float(rows[0]["adapted_return"]) == pytest.approx(data["rows"][0]["adapted_return"])
    assert {"adapted_return_std", "adapted_normalized", "combo_normalized"} <= rows[0].keys()
    for name in ("evaluation.json", "evaluation.csv"):
        assert stat.S_IMODE((merpo_run / name).stat().st_mode) == 0o644
        assert str(merpo_run / name) in out
    assert not list(merpo_run.glob(".*.tmp"))

    # the defaults: the run's test tasks, its episodes and its own meta-test seed
    spy.calls.clear()
    assert main(["evaluate", str(merpo_run)]) == 0
    cfg = yaml.safe_load((merpo_run / "config.yaml").read_text())
    seed = cfg["seed"] * 1_000_003 + 4
    assert spy.calls == [{"tasks": [40, 41], "episodes": cfg["eval"]["episodes"], "seed": seed}]
    data = json.loads((merpo_run / "evaluation.json").read_text())
    assert data["seed"] == seed and data["episodes"] == cfg["eval"]["episodes"]


@pytest.mark.parametrize("argv, message", [
    (["--tasks", "0"], "not test tasks of this run (40-41)"),
    (["--tasks", "4x"], "bad task range"),
    (["--episodes", "0"], "--episodes must be >= 1"),
])
def test_evaluate_bad_flags_are_one_line(merpo_run, capsys, argv, message):
    assert main(["evaluate", str(merpo_run), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


@pytest.mark.parametrize("algo", list(BASELINES))
def test_evaluate_and_plot_read_every_baseline_run(algo, point_robot_store, tmp_path, capsys,
                                                   monkeypatch):
    from merpo_agent.baselines import context

    run_dir = tmp_path / algo
    _train_baseline(algo, run_dir)
    records = read_metrics(run_dir)
    test = [r for r in records if r["phase"] == "meta_test"][-1]
    low, high = _references([40, 41])
    per_task = [r for r in records if r["phase"] == "meta_test_tasks"][-1]
    assert per_task["tasks"] == [40, 41]
    expected = 100 * (np.array(per_task["baseline_return"]) - low) / (high - low)
    assert np.allclose(per_task["baseline_normalized"], expected)
    assert test["baseline_normalized"] == pytest.approx(expected.mean())
    assert {"baseline_return_std", "behavior_normalized", "time", "wall_s"} <= test.keys()
    capsys.readouterr()

    spy = _Spy(monkeypatch, context)
    assert main(["evaluate", str(run_dir), "--tasks", "41", "--episodes", "2",
                 "--seed", "3"]) == 0
    assert spy.calls == [{"tasks": [41], "episodes": 2, "seed": 3}]
    data = json.loads((run_dir / "evaluation.json").read_text())
    assert data["algo"] == algo and data["tasks"] == [41] and len(data["rows"]) == 1
    assert data["episodes"] == 2 and data["seed"] == 3
    assert data["rows"][0][f"{algo}_normalized"] == pytest.approx(
        100 * (data["rows"][0][algo] - low[1]) / (high[1] - low[1]))
    assert "baseline_normalized_std" in data["summary"]
    assert (run_dir / "evaluation.csv").read_text().splitlines()[0].startswith("task,")
    assert main(["plot", str(run_dir)]) == 0
    paths = capsys.readouterr().out.split()
    assert paths[-2].endswith("meta_test_return.png") and paths[-1].endswith("training.png")


# ---- provenance --------------------------------------------------------------------------


def test_run_json_and_metrics_record_when_and_how_the_run_ran(merpo_run, monkeypatch):
    from merpo_agent import provenance

    data = json.loads((merpo_run / "run.json").read_text())
    (session,) = data["sessions"]
    for name in ("merpo-envs", "merpo-data", "merpo-agent", "torch", "gymnasium", "minari",
                 "mujoco", "numpy"):
        assert session["versions"][name], name
    assert session["versions"]["torch"] == torch.__version__
    assert session["device"]["type"] == "cpu" and session["device"]["cpu_cores"] >= 1
    assert len(session["git_commit"]) == 40  # the tests run from a git checkout
    assert session["started"].endswith("+00:00")
    assert session["command"][:2] == ["merpo-agent", "train"]
    records = read_metrics(merpo_run)
    times = [r["time"] for r in records]
    assert all(isinstance(r["wall_s"], float) for r in records)
    assert times == sorted(times) and times[0] >= session["started_unix"] - 1

    # outside a git checkout the commit is quietly absent
    monkeypatch.setattr(provenance, "git_commit", lambda: None)
    assert "git_commit" not in provenance.session_record("cpu")


def test_a_resumed_run_adds_a_session(point_robot_store, tmp_path):
    run_dir = tmp_path / "r"
    _train_baseline("focal", run_dir)
    _train_baseline("focal", run_dir, "--set", "run.steps=40")
    sessions = json.loads((run_dir / "run.json").read_text())["sessions"]
    assert len(sessions) == 2 and sessions[0]["started_unix"] <= sessions[1]["started_unix"]


# ---- TensorBoard -------------------------------------------------------------------------


def test_tensorboard_tags(merpo_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(merpo_run / "tensorboard"))
    acc.Reload()
    tags = acc.Tags()["scalars"]
    assert not [t for t in tags if t.startswith("meta_model/meta_model/")]
    assert not [t for t in tags if t.endswith("/step")]
    # the meta-model's points at their own iterations (Eq. 3), not all at step 0
    assert [e.step for e in acc.Scalars("meta_model/inner_objective")] == [1, 2, 3]
    # per test task, at every meta-test
    for task in (40, 41):
        assert [e.step for e in acc.Scalars(f"meta_test_tasks/adapted_return/task_{task}")] \
            == [2, 4]
    assert "meta_test/adapted_normalized" in tags
    # the hyperparameters (HParams), with the meta-test return as their metric
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    assert start.session_start_info.hparams["rac.alpha"].number_value == pytest.approx(0.4)
    assert start.session_start_info.hparams["env"].string_value == ENV
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    assert "meta_test/adapted_return" in [m.name.tag for m in experiment.experiment.metric_infos]


# ---- Weights & Biases --------------------------------------------------------------------


def test_wandb_flag_without_wandb_is_one_line_and_trains_nothing(tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if not installed
    for algo in ("merpo", "focal"):
        run_dir = tmp_path / algo
        code = main(["train", "--env", ENV, "--algo", algo, "--preset", "smoke", "--run-dir",
                     str(run_dir), "--no-progress", "--wandb", "proj/group"])
        err = capsys.readouterr().err
        assert code == 2 and "pip install wandb" in err and err.count("\n") == 1
        assert not run_dir.exists()


FAKE_WANDB = '''
calls = []


class Run:
    def log(self, data):
        calls.append(("log", dict(data)))

    def finish(self):
        calls.append(("finish",))


def init(**kwargs):
    calls.append(("init", kwargs))
    return Run()
'''


def test_wandb_is_imported_only_with_the_flag(point_robot_store, tmp_path, monkeypatch):
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "wandb.py").write_text(FAKE_WANDB)
    monkeypatch.syspath_prepend(str(tmp_path / "fake"))
    monkeypatch.setitem(sys.modules, "wandb", None)  # restored (removed) after the test
    del sys.modules["wandb"]
    argv = ["train", "--env", ENV, "--preset", "smoke", "--no-progress", "--threads", "1",
            "--set", "run.steps=4", "--set", "test.compare_combo=false"]
    assert main([*argv, "--run-dir", str(tmp_path / "off")]) == 0
    assert "wandb" not in sys.modules  # off by default: never imported

    assert main([*argv, "--run-dir", str(tmp_path / "on"), "--wandb", "proj/grp"]) == 0
    calls = sys.modules["wandb"].calls
    kind, kwargs = calls[0]
    assert kind == "init" and kwargs["project"] == "proj" and kwargs["group"] == "grp"
    assert kwargs["config"]["rac.alpha"] == pytest.approx(0.4)
    logged = [c[1] for c in calls if c[0] == "log"]
    assert any("meta_test/adapted_normalized" in d and d["iteration"] == 2 for d in logged)
    assert any("meta_test_tasks/adapted_return/task_40" in d for d in logged)
    assert calls[-1] == ("finish",)


# ---- load_policy -------------------------------------------------------------------------


def _checkpoint_meta_policy(run_dir):
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    policy = MetaPolicy(2, 2, cfg["rac"]["hidden"], cfg["rac"]["hidden_layers"])
    module = load_checkpoint(run_dir / "checkpoints" / "latest.pt")["meta"]["module"]
    policy.load_state_dict({k.removeprefix("policy."): v for k, v in module.items()
                            if k.startswith("policy.")})
    return policy, cfg


@pytest.mark.parametrize("device", DEVICES)
def test_load_policy_gives_the_checkpoints_policies_in_the_action_space(merpo_run, device):
    env = gym.make(ENV, task=40)
    obs, _ = env.reset(seed=0)
    low, high = env.action_space.low, env.action_space.high
    batch = np.random.default_rng(0).normal(size=(5, 2))

    meta = merpo_agent.load_policy(merpo_run, device=device)
    action = meta(obs)
    assert isinstance(action, np.ndarray) and env.action_space.contains(action)
    reference, cfg = _checkpoint_meta_policy(merpo_run)
    with torch.no_grad():
        unit = reference.deterministic(torch.as_tensor(batch, dtype=torch.float32)).numpy()
    assert np.allclose(meta(batch), low + (unit + 1) / 2 * (high - low), atol=1e-6)
    tensor = meta(torch.as_tensor(batch, dtype=torch.float32))
    assert isinstance(tensor, torch.Tensor) and tensor.shape == (5, 2)
    assert np.allclose(tensor.numpy(), meta(batch), atol=1e-6)

    # task=j: the adapted policy of the final meta-test, not the meta-policy
    adapted = merpo_agent.load_policy(merpo_run, task=41, device=device)
    state = load_checkpoint(merpo_run / "checkpoints" / "adapted.pt")
    row = state["tasks"].index(41)
    reference.load_state_dict({k: v[row : row + 1] for k, v in state["actor"].items()})
    with torch.no_grad():
        unit = reference.deterministic(torch.as_tensor(batch, dtype=torch.float32)).numpy()
    assert np.allclose(adapted(batch), low + (unit + 1) / 2 * (high - low), atol=1e-6)
    assert not np.allclose(adapted(batch), meta(batch), atol=1e-9)
    obs, reward, *_ = env.step(adapted(obs))
    assert math.isfinite(reward)


def test_load_policy_says_what_to_run(merpo_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(merpo_run, copy)
    (copy / "checkpoints" / "adapted.pt").unlink()
    with pytest.raises(PolicyError, match=r"run `merpo-agent evaluate .*copy`"):
        merpo_agent.load_policy(copy, task=40)
    with pytest.raises(PolicyError, match="not a test task"):
        merpo_agent.load_policy(merpo_run, task=0)
    with pytest.raises(PolicyError, match="not a run directory"):
        merpo_agent.load_policy(tmp_path / "nothing")


def test_load_policy_of_a_baseline_run_needs_a_task(point_robot_store, tmp_path):
    run_dir = tmp_path / "focal"
    _train_baseline("focal", run_dir)
    with pytest.raises(PolicyError, match="pass task=j"):
        merpo_agent.load_policy(run_dir)
    policy = merpo_agent.load_policy(run_dir, task=40)
    env = gym.make(ENV, task=40)
    obs, _ = env.reset(seed=0)
    assert env.action_space.contains(policy(obs))


# ---- plots -------------------------------------------------------------------------------


def test_plots_are_readable(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    from merpo_agent import plots

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    same = {"adapted_return": -3.0, "meta_policy_return": -3.0, "combo_return": -3.0,
            "beha_only_return": -3.0, "behavior_return": -5.0}
    records = [{"iteration": k, "phase": "meta_test", **same} for k in (1, 2, 3)]
    records += [{"iteration": k, "phase": "train", "lam": 1.0 * k, "alpha": 0.4,
                 "critic_loss": 2.0, "time": 1e9 + k, "wall_s": float(k)} for k in (1, 2, 3)]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    figures = []
    original = plots.save_figure

    def keep(fig, path):
        fig.canvas.draw()
        figures.append([
            {"title": ax.get_title(), "ticks": list(ax.get_xticks()),
             "lines": [(line.get_linestyle(), line.get_marker()) for line in ax.lines
                       if len(line.get_xdata()) > 2]}
            for ax in fig.axes if ax.axison
        ])
        original(fig, path)

    monkeypatch.setattr(plots, "save_figure", keep)
    plots.plot_run(run_dir)
    curves = figures[0][0]["lines"]
    assert len(curves) == 4 and len(set(curves)) == 4  # overlapping, yet distinguishable
    for panels in figures:
        for panel in panels:
            assert all(float(t).is_integer() for t in panel["ticks"]), panel["title"]
    titles = [panel["title"] for panel in figures[1]]
    assert "lambda (Eq. 9)" in titles and "critic loss (Eq. 1)" in titles
    assert not [t for t in titles if t in ("time", "wall_s", "wall s")]
