"""`merpo-agent train --algo focal|cbcq`: the FOCAL and contextual BCQ baselines (CLI)."""

import json

import pytest
import yaml
from merpo_agent.cli import main

ENV = "merpo/PointRobotWind-v0"


def test_focal_cli_trains_and_writes_a_run_directory(point_robot_store, tmp_path, capsys):
    run_dir = tmp_path / "focal"
    code = main([
        "train", "--env", ENV, "--algo", "focal", "--preset", "smoke", "--seed", "0",
        "--run-dir", str(run_dir), "--no-progress",
        "--set", "data.train_tasks=[0,1,2,3]", "--set", "data.test_tasks=[40,41]",
        "--set", "run.steps=50", "--set", "eval.every=25",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "FOCAL beats the behavior policy on" in out
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["run"]["steps"] == 50 and config["method"]["hidden"] == 32
    assert config["data"]["train_tasks"] == [0, 1, 2, 3] and config["algo"] == "focal"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["phase"] == "final"]
    assert len(final) == 1 and set(final[0]["tasks"]) == {"40", "41"}
    assert any(r["phase"] == "meta_test" for r in records)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "no_such_field=1"], "unknown FOCAL override 'no_such_field'"),
        (["--set", "steps"], "is not KEY=VALUE"),
        (["--preset", "huge"], "FOCAL has presets"),
        (["--set", "latent_dim=-3"], "bad FOCAL setting"),
    ],
)
def test_focal_cli_bad_input_is_one_line(extra, message, tmp_path, capsys):
    code = main(["train", "--env", ENV, "--algo", "focal", "--run-dir", str(tmp_path / "r"),
                 *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_focal_cli_missing_dataset_names_the_generate_command(tmp_path, capsys):
    code = main(["train", "--env", ENV, "--algo", "focal", "--preset", "smoke",
                 "--run-dir", str(tmp_path / "r"), "--set", "data.train_tasks=[7]",
                 "--set", "data.test_tasks=[48]"])
    err = capsys.readouterr().err
    assert code == 2 and "merpo-data generate" in err


# ---- the same run-directory code path for contextual BCQ (--algo cbcq) ------------------


def test_cbcq_cli_trains_and_writes_a_run_directory(point_robot_store, tmp_path, capsys):
    run_dir = tmp_path / "cbcq"
    code = main([
        "train", "--env", ENV, "--algo", "cbcq", "--preset", "smoke", "--seed", "0",
        "--run-dir", str(run_dir), "--no-progress",
        "--set", "data.train_tasks=[0,1,2,3]", "--set", "data.test_tasks=[40,41]",
        "--set", "run.steps=50", "--set", "eval.every=25", "--set", "num_samples=5",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert "Contextual BCQ beats the behavior policy on" in out
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert config["run"]["steps"] == 50 and config["method"]["hidden"] == 32
    assert config["method"]["num_samples"] == 5 and config["algo"] == "cbcq"
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in records if r["phase"] == "final"]
    assert len(final) == 1 and set(final[0]["tasks"]) == {"40", "41"}
    assert set(final[0]["tasks"]["40"]) == {"cbcq", "behavior", "cbcq_normalized",
                                            "behavior_normalized", "cbcq_std"}
    assert [r["iteration"] for r in records if r["phase"] == "meta_test"] == [25, 50]
    assert not [p for p in run_dir.rglob("*") if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "behavior_steps=5"], "unknown Contextual BCQ override 'behavior_steps'"),
        (["--preset", "table1"], "Contextual BCQ has presets"),
        (["--set", "lam=2"], "bad Contextual BCQ setting"),
    ],
)
def test_cbcq_cli_bad_input_is_one_line(extra, message, tmp_path, capsys):
    code = main(["train", "--env", ENV, "--algo", "cbcq", "--run-dir", str(tmp_path / "r"),
                 *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_cli_baseline_names_match_the_run_table():
    from merpo_agent.baselines.run import BASELINES
    from merpo_agent.cli import BASELINE_ALGOS

    assert set(BASELINE_ALGOS) == set(BASELINES)
