"""``merpo-agent reproduce --quick``: every run trained, a report with every section."""

from __future__ import annotations

import json

import pytest
from merpo_agent import cli
from merpo_agent.config import ConfigError, check_task_split
from merpo_agent.report import combine, compare, curve_label, plateau
from merpo_agent.reproduce import (
    experiments,
    only_methods,
    resolved_config,
    sizes_for,
    train_command,
    with_budget,
)

PRW = "merpo/PointRobotWind-v0"


def test_compare_and_combine_read_confidence_intervals():
    assert compare((2.0, 1.5, 2.5), (1.0, 0.5, 1.4)) == "holds"
    assert compare((1.0, 0.5, 1.4), (2.0, 1.5, 2.5)) == "fails"
    assert compare((2.0, 1.0, 2.5), (1.5, 0.5, 1.8)) == "ties"
    assert combine(["holds", "holds"]) == "holds"
    assert combine(["holds", "ties"]) == "ties"
    assert combine(["holds", "fails"]) == "fails"


def test_plateau_rule_tells_a_flat_curve_from_a_rising_one():
    # two seeds, evaluated every 1000 steps; the tasks' reference range is 20 (return units)
    flat = [[[1000, -20.0], [2000, -15.0], [3000, -12.0], [4000, -11.9]],
            [[1000, -21.0], [2000, -16.0], [3000, -12.2], [4000, -12.0]]]
    at75, at100, gain, is_flat = plateau(flat, 20.0)
    assert (at75, at100) == pytest.approx((-12.1, -11.95)) and is_flat
    assert gain == pytest.approx(100 * 0.15 / 20)
    rising = [[[1000, -20.0], [2000, -16.0], [3000, -14.0], [4000, -12.0]]]
    assert plateau(rising, 20.0)[3] is False  # +10 normalized points in the last quarter
    assert plateau([[[4000, -12.0]]], 20.0) is None


def test_a_curve_that_lost_the_plateau_margin_is_reported_falling_not_flat():
    # a run that peaked at 3000 steps and lost 13 normalized points by its end
    peaked = [[[1000, 100.0], [2000, 140.0], [3000, 144.0], [4000, 90.0]]]
    gain = plateau(peaked, 400.0)[2]
    assert gain == pytest.approx(-13.5)
    assert curve_label(gain) == "**falling**"
    assert curve_label(1.9) == curve_label(-1.9) == "flat"
    assert curve_label(2.0) == "**still rising**"


def test_every_experiment_compares_its_methods_on_shared_runs():
    table = experiments()
    assert set(table) == {"fig4", "fig5", "fig6", "fig7"}
    for experiment in table.values():
        keys = {run.key for run in experiment.runs}
        assert all(row.run in keys for row in experiment.rows), experiment.name
    fig6 = {row.label for row in table["fig6"].rows}
    assert {"MerPO", "MerPO-Adp", "FOCAL", "Contextual BCQ"} <= fig6


def test_steps_sets_every_methods_budget_alike(tmp_path):
    sizes = with_budget(sizes_for(PRW, quick=False), 12000)
    assert sizes.budget == 12000 and sizes.iterations == 1200
    fig6 = experiments()["fig6"]
    for run in fig6.runs:  # MerPO (meta-iterations x inner steps) and baselines alike
        command = train_command(PRW, fig6, run, 0, "medium", sizes, tmp_path / run.key)
        assert "run.steps=12000" in command, run.algo
    assert with_budget(sizes_for(PRW, quick=False), None) == sizes_for(PRW, quick=False)
    for bad in (15, 0, -10):
        with pytest.raises(ConfigError, match="--steps must be a positive multiple of"):
            with_budget(sizes_for(PRW, quick=False), bad)


def test_methods_keeps_only_the_named_runs_and_their_rows():
    from merpo_agent.reproduce import with_settings

    fig6 = with_settings(experiments()["fig6"], "validated", PRW)
    subset = only_methods(fig6, "merpo-adp, merpo-first-read")
    assert [run.key for run in subset.runs] == ["merpo-adp", "merpo-first-read"]
    labels = {row.label: row.run for row in subset.rows}
    assert set(labels) == {"MerPO-Adp", "MerPO (Table 2 as first read)", "behavior"}
    # the behavior policy is read from a run that trains (MerPO's own run does not)
    assert labels["behavior"] == "merpo-adp"
    assert only_methods(fig6, ",".join(run.key for run in fig6.runs)) == fig6
    for bad in ("nope", "merpo-adp,nope", " , "):
        with pytest.raises(ConfigError, match="--methods .*name one or more of them"):
            only_methods(fig6, bad)


def test_a_bad_methods_list_is_one_line_before_anything_trains(tmp_path, capsys):
    code = cli.main(["reproduce", "fig6", "--env", PRW, "--methods", "merpo-adpp",
                     "--out", str(tmp_path / "repro")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "merpo-adp" in err[0]
    assert not (tmp_path / "repro").exists()


@pytest.mark.parametrize("env_id", ["merpo/HalfCheetahFwdBack-v0", "merpo/AntFwdBack-v0",
                                    "merpo/Walker2dParams-v0", PRW])
def test_every_fig6_command_of_every_env_is_one_that_train_accepts(env_id, tmp_path):
    # Half-Cheetah and Ant have no unseen task (train = test = 0-1, the paper's Fig. 6):
    # their runs meta-test on their training tasks, which a split check must not refuse
    fig6 = experiments()["fig6"]
    for run in fig6.runs:
        command = train_command(env_id, fig6, run, 0, "medium", sizes_for(env_id, False),
                                tmp_path / run.key)
        assert resolved_config(command), run.algo


def test_an_overlap_outside_the_envs_own_split_is_still_refused():
    check_task_split("merpo/HalfCheetahFwdBack-v0", None, None)  # the env's split: accepted
    check_task_split("merpo/AntFwdBack-v0", (0, 1), (1,))
    with pytest.raises(ConfigError, match="task.s. 20 are both training and test tasks"):
        check_task_split("merpo/Walker2dParams-v0", (0, 1, 20), (20, 21))


@pytest.mark.slow
def test_reproduce_quick_writes_a_report_with_every_section(point_robot_store, tmp_path, capsys):
    out = tmp_path / "repro"
    code = cli.main(["reproduce", "fig6", "--env", PRW, "--seeds", "2", "--quick",
                     "--out", str(out), "--jobs", "2"])
    assert code == 0
    report = (out / "fig6" / "report.md").read_text()
    for section in ("- command:", "- commit:", "- wall time:", "- budget:", "| MerPO |",
                    "| MerPO-Adp |", "| FOCAL |", "| Contextual BCQ |", "## Per task",
                    "## The paper's claims", "## Budget: flat or still rising",
                    "## Learning curves"):
        assert section in report, section
    for claim in ("C3", "C7"):
        line = next(x for x in report.splitlines() if x.startswith(f"- {claim}:"))
        assert any(v in line for v in ("**holds**", "**ties**", "**fails**")), line
    assert (out / "fig6" / "curves.png").stat().st_size > 1000
    stats = json.loads((out / "fig6" / "stats.json").read_text())
    lo, hi = stats["returns"]["MerPO"]["mean"][1:]
    assert lo <= stats["returns"]["MerPO"]["mean"][0] <= hi
    # every method got the same budget of gradient steps
    results = [json.loads(p.read_text()) for p in (out / "fig6").glob("*/seed-*/result.json")]
    assert len(results) == 2 * len(experiments()["fig6"].runs)
    merpo = [r for r in results if r["algo"] == "merpo"][0]
    assert "run.steps=8" in merpo["command"] and "meta.inner_steps=2" in merpo["command"]
    focal = [r for r in results if r["algo"] == "focal"][0]
    assert "run.steps=8" in focal["command"] and "--preset" in focal["command"]
    # a second call reuses every finished run (nothing retrained)
    mtimes = {p: p.stat().st_mtime for p in (out / "fig6").glob("*/seed-*/result.json")}
    assert cli.main(["reproduce", "fig6", "--env", PRW, "--seeds", "2", "--quick",
                     "--out", str(out)]) == 0
    assert all(p.stat().st_mtime == t for p, t in mtimes.items())


@pytest.mark.slow
def test_reproduce_methods_trains_and_reports_only_those_runs(point_robot_store, tmp_path):
    out = tmp_path / "repro"
    assert cli.main(["reproduce", "fig6", "--env", PRW, "--seeds", "1", "--quick",
                     "--out", str(out), "--methods", "merpo-adp,focal"]) == 0
    trained = sorted(p.parent.parent.name for p in (out / "fig6").glob("*/seed-*/result.json"))
    assert trained == ["focal", "merpo-adp"]
    report = (out / "fig6" / "report.md").read_text()
    assert "--methods merpo-adp,focal" in report
    assert "| MerPO-Adp |" in report and "| FOCAL |" in report and "| behavior |" in report
    assert "| MerPO |" not in report and "| MBML |" not in report
    c3 = next(x for x in report.splitlines() if x.startswith("- C3:"))
    assert c3.startswith("- C3: **not run**")  # MerPO, the claim's pivot, did not run


def test_single_task_runs_plot_their_own_task_returns(tmp_path):
    """Fig. 4 and 5 are single-task RAC: their curves are each learner's return on its own
    training task, not the meta-test's unseen tasks."""
    from merpo_agent.reproduce import read_result

    (tmp_path / "config.yaml").write_text("meta:\n  inner_steps: 10\n")
    records = [
        {"iteration": 5, "phase": "meta_test", "adapted_return": -30.0},
        {"iteration": 5, "phase": "meta_test_tasks", "tasks": [40], "adapted_return": [-30.0]},
        {"iteration": 5, "phase": "own_tasks", "tasks": [0, 1], "own_task_return": [-8.0, -12.0],
         "behavior_return": [-20.0, -20.0]},
        {"iteration": 9, "phase": "own_tasks", "tasks": [0, 1], "own_task_return": [-6.0, -8.0],
         "behavior_return": [-20.0, -20.0]},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    result = read_result(tmp_path, "combo")
    assert result["curve"] == [[50, -10.0], [90, -7.0]]
    assert result["own_task"] == [-6.0, -8.0]


def test_a_finished_run_is_retrained_when_its_settings_changed(tmp_path, monkeypatch):
    """Same command line, other resolved settings (a preset changed since): retrain."""
    from merpo_agent import reproduce

    command = ["python", "-m", "merpo_agent", "train", "--env", PRW, "--algo", "merpo",
               "--seed", "0", "--run-dir", str(tmp_path), "--preset", "small"]
    trained = []
    monkeypatch.setattr(reproduce.subprocess, "run",
                        lambda *a, **k: trained.append(1) or type("R", (), {"returncode": 0}))
    monkeypatch.setattr(reproduce, "read_result", lambda run_dir, algo: {"tasks": [40]})
    first = reproduce.run_one(command, tmp_path, "merpo", log=lambda _: None)
    assert trained == [1] and first["config"]["preset"] == "small"
    assert reproduce.run_one(command, tmp_path, "merpo", log=lambda _: None) == first
    assert trained == [1]  # reused
    real = reproduce.resolved_config
    monkeypatch.setattr(reproduce, "resolved_config", lambda c: {**real(c), "seed": 7})
    reproduce.run_one(command, tmp_path, "merpo", log=lambda _: None)
    assert trained == [1, 1]  # retrained
    # a field the code gained after the run was trained counts as unchanged
    monkeypatch.setattr(reproduce, "resolved_config", lambda c: {**real(c), "new_field": 1})
    saved = json.loads((tmp_path / "result.json").read_text())
    saved["config"] = real(command)
    (tmp_path / "result.json").write_text(json.dumps(saved))
    reproduce.run_one(command, tmp_path, "merpo", log=lambda _: None)
    assert trained == [1, 1]
