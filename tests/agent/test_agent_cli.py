"""``merpo-agent`` bad input: one clear line on stderr, exit status 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from merpo_agent.cli import build_parser, main, train_config

PRW = "merpo/PointRobotWind-v0"


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.err


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["train", "--env", "merpo/Nope-v0"], "unknown env id 'merpo/Nope-v0'"),
        (["train", "--env", PRW, "--algo", "ppo"], "unknown algo 'ppo'; choose one of merpo"),
        (["train", "--env", PRW, "--algo", "ppo"], "cql, focal, cbcq, mbml, batch-pearl"),
        (["train", "--env", PRW, "--preset", "huge"], "unknown preset 'huge'"),
        (["train", "--env", PRW, "--set", "rac.actr_lr=1"], "did you mean rac.actor_lr"),
        (["train", "--env", PRW, "--set", "run.steps=many"], "expected an integer"),
        (["train", "--env", PRW, "--set", "novalue"], "key=value"),
        (["train", "--env", PRW, "--config", "/nonexistent/c.yaml"], "does not exist"),
        (["train", "--env", PRW, "--device", "tpu"], "device"),
        (["train", "--env", PRW, "--cuda-graphs"], "--cuda-graphs (rac.cuda_graphs) needs"),
    ],
)
def test_bad_train_input(capsys, tmp_path, argv, expected):
    code, err = _run(capsys, [*argv, "--run-dir", str(tmp_path / "run")])
    assert code == 2
    assert expected in err
    assert err.count("\n") == 1 and err.startswith("merpo-agent: error: ")
    assert not (tmp_path / "run").exists()


def test_cuda_without_cuda(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, err = _run(capsys, ["train", "--env", PRW, "--device", "cuda", "--run-dir",
                              str(tmp_path / "run")])
    assert code == 2 and "CUDA is not available" in err and err.count("\n") == 1


def test_missing_dataset_names_the_generate_command(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty-store"))
    code, err = _run(capsys, ["train", "--env", PRW, "--preset", "smoke", "--run-dir",
                              str(tmp_path / "run"), "--no-progress"])
    assert code == 2
    assert "merpo-data generate merpo/PointRobotWind-v0" in err and err.count("\n") == 1
    assert "--set data.build_missing=true" in err  # the CLI form, not a Python keyword
    assert not (tmp_path / "run").exists()  # a failed start leaves no empty run directory
    code, err = _run(capsys, ["train", "--env", PRW, "--preset", "smoke", "--algo", "focal",
                              "--run-dir", str(tmp_path / "focal"), "--no-progress"])
    assert code == 2 and "merpo-data generate" in err and not (tmp_path / "focal").exists()


def test_missing_train_and_test_datasets_share_one_generate_command(capsys, tmp_path, monkeypatch):
    # The smoke preset trains on tasks 0-3 and meta-tests on 40-41 (the test preset's data):
    # the one line names both splits' datasets and one command that builds them all.
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty-store"))
    code, err = _run(capsys, ["train", "--env", PRW, "--preset", "smoke", "--run-dir",
                              str(tmp_path / "run"), "--no-progress"])
    assert code == 2 and err.count("\n") == 1
    assert "6 dataset(s) missing: merpo/point-robot-wind/task-NN-medium-test-v0 for NN in " \
        "0-3,40-41;" in err
    assert "`merpo-data generate merpo/PointRobotWind-v0 --tasks 0-3,40-41 --qualities " \
        "medium --preset test`" in err


def test_evaluate_and_plot_of_a_non_run(capsys, tmp_path):
    code, err = _run(capsys, ["evaluate", str(tmp_path)])
    assert code == 2 and "not a run directory" in err and err.count("\n") == 1
    code, err = _run(capsys, ["plot", str(tmp_path / "nothing")])
    assert code == 2 and "no run directory" in err
    code, err = _run(capsys, ["plot", str(tmp_path)])
    assert code == 2 and "no metrics.jsonl" in err


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train"])
    assert info.value.code == 2
    assert "--env" in capsys.readouterr().err


def test_console_entry_point_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "merpo_agent", "train", "--env", PRW, "--algo", "nope",
         "--run-dir", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "merpo-agent: error: unknown algo 'nope'; choose one of merpo, merpo-adp, combo, "
        "beha-only, combo3, cql, focal, cbcq, mbml, batch-pearl"
    ]
    assert "Traceback" not in result.stderr


def test_compile_and_cuda_graph_flags_set_the_rac_config():
    plain = train_config(build_parser().parse_args(["train", "--env", PRW, "--preset", "smoke"]))
    assert not plain.rac.compile and not plain.rac.cuda_graphs
    args = build_parser().parse_args(["train", "--env", PRW, "--preset", "smoke", "--compile"])
    assert train_config(args).rac.compile



@pytest.mark.parametrize(
    "cli, dist, first_dependency",
    [
        ("merpo_agent.cli", "merpo-agent", "merpo-data"),
        ("merpo_data.cli", "merpo-data", "merpo-envs"),
    ],
)
def test_version_of_both_clis_names_the_package_and_its_dependencies(
    capsys, cli, dist, first_dependency
):
    import importlib
    from importlib.metadata import version

    with pytest.raises(SystemExit) as info:
        importlib.import_module(cli).main(["--version"])
    assert info.value.code == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{dist} {version(dist)} ({first_dependency} ")
    assert "torch " in line and "python " in line and "\n" not in line
