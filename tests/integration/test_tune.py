"""``merpo-agent tune``: studies on validation tasks that resume after a kill, and
``reproduce --settings`` reading what they chose."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from merpo_agent.config import ConfigError
from merpo_agent.presets import build_config
from merpo_agent.reproduce import FIRST_READ, experiments, train_command, with_settings
from merpo_agent.search_spaces import SEARCH_SPACES, grid_size, overrides_of
from merpo_agent.tune import FIG6_ALGOS, VALIDATION_SPLITS, config_file_data, validation_split

PRW = "merpo/PointRobotWind-v0"


def test_validation_tasks_are_training_tasks_and_fwd_back_envs_cannot_be_tuned():
    from merpo_envs import get_meta_info

    for env, (train, valid) in VALIDATION_SPLITS.items():
        info = get_meta_info(env)
        assert set(train) | set(valid) <= set(info.train_tasks)
        assert not set(valid) & set(train) and not set(valid) & set(info.test_tasks)
    assert validation_split(PRW) == (tuple(range(35)), tuple(range(35, 40)))
    with pytest.raises(ConfigError, match="nothing may be tuned"):
        validation_split("merpo/HalfCheetahFwdBack-v0")


def test_every_fig6_method_has_a_search_space_whose_settings_its_train_accepts():
    assert set(FIG6_ALGOS) == set(SEARCH_SPACES)
    from merpo_agent.baselines.run import build_baseline

    for algo in FIG6_ALGOS:
        assert grid_size(algo) > 1
        for index in range(3):  # the first, second and third option of every choice
            labels = {c.name: list(c.options)[min(index, len(c.options) - 1)]
                      for c in SEARCH_SPACES[algo]}
            overrides = list(overrides_of(algo, labels))
            if algo.startswith("merpo"):
                build_config(PRW, "repro", algo, overrides=overrides)
            else:
                build_baseline(algo, PRW, "small", overrides)


def test_every_methods_default_trial_is_its_papers_setting_on_the_env():
    # a study's first trial is the method as its paper sets it on THIS env (MerPO: the first
    # reading; a baseline: its paper's values, Batch PEARL's reward scale 100 on the point
    # robot, not the locomotion 5)
    from merpo_agent.baselines.run import build_baseline, settings_record
    from merpo_agent.search_spaces import default_labels

    for algo in FIG6_ALGOS:
        overrides = list(overrides_of(algo, default_labels(algo, PRW), PRW))
        if algo.startswith("merpo"):
            assert build_config(PRW, "repro", algo, overrides=overrides) == build_config(
                PRW, "repro", algo), algo
        else:  # the paper's values (its full-size preset) of every key the space tunes
            paper = settings_record(*build_baseline(algo, PRW, "table2", []))["method"]
            for item in overrides:
                key, value = item.split("=", 1)
                assert float(value) == pytest.approx(paper[key]), (algo, key)
    assert "reward_scale=100" in overrides_of(
        "batch-pearl", default_labels("batch-pearl", PRW), PRW)
    assert "reward_scale=5" in overrides_of(  # a locomotion env: PEARL's 5
        "batch-pearl", default_labels("batch-pearl", "merpo/Walker2dParams-v0"),
        "merpo/Walker2dParams-v0")


def test_docs_print_every_search_space_as_the_code_has_it():
    from merpo_agent.search_spaces import markdown_table

    docs = (Path(__file__).parents[2] / "docs" / "tuning.md").read_text()
    for algo in SEARCH_SPACES:
        assert markdown_table(algo) in docs, algo


def test_reproduce_with_settings_reads_each_methods_best_file_and_keeps_the_first_read(
        tmp_path):
    for algo in ("merpo", "focal"):
        (tmp_path / algo).mkdir()
        labels = {c.name: next(iter(c.options)) for c in SEARCH_SPACES[algo]}
        import yaml

        (tmp_path / algo / "best.yaml").write_text(
            yaml.safe_dump(config_file_data(algo, overrides_of(algo, labels))))
    fig6 = with_settings(experiments()["fig6"], tmp_path, PRW)
    configs = {run.key: run.config for run in fig6.runs}
    assert configs["merpo"].endswith("merpo/best.yaml")
    assert configs["focal"].endswith("focal/best.yaml")
    assert configs["cbcq"] is None and configs[FIRST_READ] is None  # untuned: presets
    labels = [row.label for row in fig6.rows]
    assert labels.index("MerPO (Table 2 as first read)") == labels.index("MerPO") + 1
    from merpo_agent.reproduce import sizes_for

    run = next(r for r in fig6.runs if r.key == "merpo")
    command = train_command(PRW, fig6, run, 0, "medium", sizes_for(PRW, True), tmp_path / "r")
    at = command.index("--config")
    assert command[at + 1] == configs["merpo"] and at < command.index("--set")
    (tmp_path / "nothing-here").mkdir()
    with pytest.raises(ConfigError, match="merpo-agent tune"):
        with_settings(experiments()["fig6"], tmp_path / "nothing-here", PRW)
    with pytest.raises(ConfigError, match="no such folder; pass `validated`"):
        with_settings(experiments()["fig6"], tmp_path / "missing", PRW)


@pytest.mark.slow
def test_tune_resumes_after_a_kill_never_reads_a_test_task_and_writes_a_config(
        point_robot_store, tmp_path):
    out = tmp_path / "tune"
    command = [sys.executable, "-m", "merpo_agent", "tune", "--algo", "merpo", "--quick",
               "--trials", "2", "--seeds", "1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while not list(out.glob("merpo/trial-*/seed-0/checkpoints/latest.pt")):
        assert first.poll() is None and time.time() < deadline, "tune ended before a checkpoint"
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)  # tune and its training run, mid-trial
    first.wait()
    killed_run = next(out.glob("merpo/trial-*/seed-0"))
    assert not (killed_run / "result.json").exists()

    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "was killed; its settings run again" in done.stdout

    import optuna

    study = optuna.load_study(study_name=f"merpo@{PRW}-quick",
                              storage=f"sqlite:///{out / 'merpo' / 'study.db'}")
    states = [t.state.name for t in study.trials]
    assert states.count("FAIL") == 1
    failed = next(t for t in study.trials if t.state.name == "FAIL")
    rerun = [t for t in study.trials if t.state.name == "COMPLETE" and t.params == failed.params]
    assert rerun, "the killed trial's settings ran again"
    # a resumed study draws on, it does not replay its first draws: two distinct settings
    finished = [json.dumps(t.params, sort_keys=True) for t in study.trials
                if t.state.name == "COMPLETE"]
    assert len(set(finished)) == 2
    # ... and its run resumed from its checkpoint instead of starting over
    sessions = json.loads((killed_run / "run.json").read_text())["sessions"]
    assert len(sessions) == 2
    # every scored run was evaluated on the validation task alone, never a test task
    results = [json.loads(p.read_text()) for p in out.glob("merpo/trial-*/seed-*/result.json")]
    assert len(results) == 2 and all(r["tasks"] == [3] for r in results)
    assert all("data.train_tasks=0-2" in r["command"] for r in results)
    trials_md, curves_md = (out / "merpo" / "trials.md").read_text().split(
        "## Validation curves")
    rows = [line for line in trials_md.splitlines() if line[:3].strip("| ").isdigit()]
    assert len(rows) == 2  # the two finished trials (the killed one ran again)
    assert "1 seeds per trial" in trials_md
    # each trial's validation curve, with the plateau rule's verdict on it
    curve_rows = [line for line in curves_md.splitlines() if line[:3].strip("| ").isdigit()]
    assert len(curve_rows) == 2
    verdicts = ("| flat |", "| **still rising** |", "| **falling** |")
    assert all(row.endswith(verdicts) for row in curve_rows)
    # the chosen settings are a config file that train accepts, those of the best trial
    best = out / "merpo" / "best.yaml"
    assert Path(best).read_text().startswith("# merpo on merpo/PointRobotWind-v0")
    cfg = build_config(PRW, "smoke", "merpo", config_file=best)
    winner = max((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert cfg.meta.learner_init == winner.params["meta.learner_init"]
    assert cfg.test.adaptation_steps == int(winner.params["test.adaptation_steps"])
