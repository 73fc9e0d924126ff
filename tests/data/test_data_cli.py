"""The ``merpo-data`` command line: happy paths and one-line errors."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from merpo_data.cli import main

ENV = "merpo/PointRobotWind-v0"


def test_list_info_plot(point_robot_store, capsys, tmp_path):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "merpo/point-robot-wind/task-41-mixed-test-v0\t100 episodes\t2500 steps" in out
    assert main(["info", "merpo/point-robot-wind/task-03-expert-test-v0"]) == 0
    out = capsys.readouterr().out
    assert "episodes:     100" in out and "transitions:  2500" in out
    # normalized on merpo-agent's 0-100 scale: 100 x minari.get_normalized_score
    import minari
    import numpy as np

    ds = minari.load_dataset("merpo/point-robot-wind/task-03-expert-test-v0")
    returns = np.array([ep.rewards.sum() for ep in ds.iterate_episodes()])
    expected = 100 * minari.get_normalized_score(ds, returns).mean()
    assert f"normalized:   {expected:.1f} / 100" in out
    png = tmp_path / "returns.png"
    assert main(["plot", ENV, "--output", str(png), "--preset", "test"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["download", "merpo/point-robot-wind/task-00-random-test-v0"]) == 0
    assert "100 episodes" in capsys.readouterr().out


def test_download_builds_offline_and_list_says_how_datasets_are_obtained(
    tmp_path, monkeypatch, capsys
):
    """No network, no huggingface_hub: ``download`` builds the dataset here (Half-Cheetah's
    test preset, from the shipped policies: seconds), and ``list`` says how to get one."""
    import minari

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "no merpo datasets in the local store" in out
    assert "`merpo-data generate ENV` builds an env's" in out

    def offline(dataset_id, *args, **kwargs):  # what Minari raises on this machine
        raise ImportError('huggingface_hub is not installed. Please install it using `pip ...`')

    monkeypatch.setattr(minari, "download_dataset", offline)
    monkeypatch.setenv("MINARI_REMOTE", "hf://merpo")
    ds_id = "merpo/half-cheetah-fwd-back/task-01-random-test-v0"
    assert main(["download", ds_id]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{ds_id}: 4 episodes, 800 transitions\n"
    assert captured.err.startswith(
        f"merpo-data: {ds_id} not fetched from MINARI_REMOTE=hf://merpo (ImportError: "
        "huggingface_hub is not installed."
    )
    assert minari.load_dataset(ds_id).total_episodes == 4
    assert main(["list"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"{ds_id}\t4 episodes\t800 steps\n"  # scripts read stdout
    assert "merpo datasets are built on this machine, not downloaded" in captured.err


def test_generate_existing_is_quick_and_reports_ids(point_robot_store, capsys):
    assert (
        main(
            [
                "generate",
                ENV,
                "--tasks",
                "0-1",
                "--qualities",
                "expert,medium",
                "--preset",
                "test",
                "--quiet",
            ]
        )
        == 0
    )
    assert "4 datasets ready" in capsys.readouterr().out  # 2 tasks x 2 qualities


@pytest.mark.parametrize(
    "argv, message",
    [
        (["generate", "merpo/Nope-v0"], "unknown env id 'merpo/Nope-v0'; valid ids:"),
        (["generate", ENV, "--tasks", "9-3"], "bad task range"),
        (["generate", ENV, "--tasks", "0-60"], "out of range"),
        (["generate", ENV, "--qualities", "great"], "unknown quality"),
        (["generate", ENV, "--qualities", "medium,great"], "unknown quality 'great'"),
        (["generate", ENV, "--preset", "huge"], "unknown preset"),
        (["generate", ENV, "--seed", "-1"], "seed must be an integer >= 0, got -1"),
        (["generate", ENV, "--threads", "0"], "--threads must be >= 1, got 0"),
        (["info", "merpo/point-robot-wind/task-3-medium-v0"], "did you mean"),
        (["info", "cartpole"], "bad dataset id"),
        (["plot", "merpo/Nope-v0"], "unknown env id"),
    ],
)
def test_bad_input_is_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_info_of_missing_dataset_names_the_command(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert main(["info", "merpo/point-robot-wind/task-05-medium-v0"]) == 2
    assert (
        "merpo-data generate merpo/PointRobotWind-v0 --tasks 5 --qualities medium"
        in capsys.readouterr().err
    )


def test_console_script_is_installed(tmp_path):
    exe = shutil.which("merpo-data")
    assert exe is not None
    result = subprocess.run(
        [exe, "generate", "merpo/Nope-v0"],
        capture_output=True,
        text=True,
        env={"MINARI_DATASETS_PATH": str(tmp_path), "PATH": ""},
    )
    assert result.returncode == 2
    assert result.stderr.strip().startswith("merpo-data generate: error: unknown env id")



@pytest.mark.parametrize("env_id", ["merpo/HalfCheetahFwdBack-v0", ENV])
def test_the_returns_plot_has_integer_task_ticks_and_its_whole_title(env_id):
    import matplotlib.pyplot as plt
    from merpo_data.plot import returns_figure
    from merpo_envs import get_meta_info

    info = get_meta_info(env_id)
    returns = {"medium": {t: -float(t) for t in info.tasks}, "expert": {}}
    fig = returns_figure(env_id, returns)
    ax = fig.axes[0]
    fig.canvas.draw()
    ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
    assert ticks and all(float(t).is_integer() for t in ticks), ticks
    title = ax.title.get_window_extent()
    figure = fig.bbox
    assert title.x0 >= figure.x0 and title.x1 <= figure.x1 and title.y1 <= figure.y1
    plt.close(fig)


def test_threads_reach_the_sac_training_only(tmp_path, monkeypatch):
    """``--threads 2`` trains on two threads; every rollout that writes a dataset runs on
    one, so the datasets of given policies never depend on --threads."""
    import merpo_data.datasets as datasets
    import torch

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    seen = {"train": [], "rollout": []}
    train, rollout = datasets.ensure_behavior_policies, datasets.collect_quality_episodes

    def spy_train(*args, **kwargs):
        seen["train"].append(torch.get_num_threads())
        return train(*args, **kwargs)

    def spy_rollout(*args, **kwargs):
        seen["rollout"].append(torch.get_num_threads())
        return rollout(*args, **kwargs)

    monkeypatch.setattr(datasets, "ensure_behavior_policies", spy_train)
    monkeypatch.setattr(datasets, "collect_quality_episodes", spy_rollout)
    before = torch.get_num_threads()
    argv = ["generate", "merpo/HalfCheetahFwdBack-v0", "--preset", "test", "--qualities",
            "medium", "--threads", "2", "--quiet"]
    assert main(argv) == 0
    assert seen["train"] == [2] and seen["rollout"] and set(seen["rollout"]) == {1}
    assert torch.get_num_threads() == before  # restored
