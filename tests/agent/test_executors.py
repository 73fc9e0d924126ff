"""Executors of ``reproduce`` / ``tune``: what a Ray task claims, how failures surface, and
the one line a missing Ray gives."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from merpo_agent import cli, reproduce
from merpo_agent.config import ConfigError
from merpo_agent.executors import LocalExecutor, gpus_of, make_executor, resources_of
from merpo_agent.trainer import RunError


def test_a_run_claims_one_cpu_and_a_gpu_only_when_it_trains_on_cuda():
    base = ["python", "-m", "merpo_agent", "train", "--algo", "merpo", "--threads", "1"]
    assert resources_of(base) == {"num_cpus": 1, "num_gpus": 0}
    assert resources_of([*base, "--device", "cpu"]) == {"num_cpus": 1, "num_gpus": 0}
    assert resources_of([*base, "--device", "cuda"]) == {"num_cpus": 1, "num_gpus": 1}
    assert gpus_of([*base, "--device", "cuda:1"]) == 1
    assert gpus_of([*base, "--device=cuda"]) == 1
    assert gpus_of([*base, "--set", "cuda"]) == 0  # a value elsewhere is not a device


def test_local_executor_tries_every_job_then_raises_the_first_failure(monkeypatch, tmp_path):
    tried = []

    def fake_run_job(job, log):
        names = [run_dir.name for _, run_dir, _ in job]
        tried.append(names)
        if set(names) & {"b", "c"}:
            raise RunError(f"run {names[0]} failed")
        return [{"run": name} for name in names]

    monkeypatch.setattr(reproduce, "run_job", fake_run_job)
    jobs = [[(["python"], tmp_path / name, "merpo")] for name in "abcd"]
    with pytest.raises(RunError, match="run b failed"):
        LocalExecutor(jobs=1).map(jobs, log=lambda _: None)
    assert tried == [["a"], ["b"], ["c"], ["d"]]
    ok = [[(["python"], tmp_path / name, "merpo") for name in "ad"],
          [(["python"], tmp_path / "e", "merpo")]]
    # every job's runs' results, in the jobs' and the runs' order
    assert LocalExecutor(jobs=2).map(ok) == [{"run": "a"}, {"run": "d"}, {"run": "e"}]


def test_bad_executor_settings_are_one_line_errors():
    with pytest.raises(ConfigError, match="--executor must be one of local, ray"):
        make_executor("dask")
    with pytest.raises(ConfigError, match="--ray-address needs --executor ray"):
        make_executor("local", None, "auto")
    with pytest.raises(ConfigError, match="--jobs must be >= 1"):
        make_executor("local", 0)


@pytest.mark.parametrize("command", [
    ["reproduce", "fig6", "--quick", "--seeds", "1"],
    ["tune", "--algo", "merpo", "--quick"],
])
def test_executor_ray_without_ray_is_one_line_naming_the_extra(monkeypatch, capsys, tmp_path,
                                                               command):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    out = tmp_path / "runs"
    code = cli.main([*command, "--out", str(out), "--executor", "ray"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_BAD_INPUT
    assert err.strip().splitlines() == [
        "merpo-agent: error: --executor ray needs Ray: pip install merpo-agent[ray]"]
    assert not out.exists()  # nothing trained, no dataset built


def test_an_unknown_executor_on_the_command_line_is_one_line(capsys, tmp_path):
    code = cli.main(["reproduce", "fig6", "--quick", "--out", str(tmp_path / "runs"),
                     "--executor", "slurm"])
    assert code == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip().splitlines() == [
        "merpo-agent: error: --executor must be one of local, ray, got 'slurm'"]
    assert not Path(tmp_path / "runs").exists()


def test_a_tuning_trial_trains_its_seeds_through_the_executor_it_was_given(tmp_path):
    from merpo_agent.search_spaces import default_labels
    from merpo_agent.tune import Tuner

    class Recording:
        def __init__(self):
            self.jobs = []

        def map(self, jobs, log=print):
            self.jobs += jobs
            runs = [run for job in jobs for run in job]
            return [{"tasks": [3], "adapted": [float(i)], "wall_s": 1.0}
                    for i in range(len(runs))]

    labels = default_labels("merpo")
    for seed_batch, jobs in ((None, 1), (1, 2)):  # a trial's seeds in one job, or apart
        executor = Recording()
        executor.jobs = []
        tuner = Tuner("merpo", "merpo/PointRobotWind-v0", tmp_path, seeds=2, quick=True,
                      executor=executor, seed_batch=seed_batch)
        scored = tuner.score(labels)
        assert len(executor.jobs) == jobs
        assert [run for job in executor.jobs for run in job] == [
            (command, run_dir, "merpo") for run_dir, command in tuner.commands(labels)]
        assert scored["per_seed"] == [0.0, 1.0]


def test_a_ray_address_with_no_cluster_is_one_line_before_any_dataset(monkeypatch, capsys,
                                                                       tmp_path):
    ray = pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty"))
    out = tmp_path / "runs"
    code = cli.main(["reproduce", "fig6", "--quick", "--out", str(out), "--executor", "ray",
                     "--ray-address", "auto"])
    assert not ray.is_initialized()
    assert code == cli.EXIT_BAD_INPUT
    line, = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("merpo-agent: error: --ray-address auto: Could not find any "
                           "running Ray instance") and "ray start --head" in line
    assert not out.exists() and not (tmp_path / "empty").exists()
