"""``merpo-agent reproduce --executor ray``: the same runs as local processes, trained as
Ray tasks on a local Ray instance, give the same results and the same report."""

from __future__ import annotations

import json
import time

import pytest
from merpo_agent import cli, reproduce
from merpo_agent.trainer import RunError

PRW = "merpo/PointRobotWind-v0"
ARGS = ["reproduce", "fig6", "--env", PRW, "--seeds", "1", "--quick"]


def _results(base) -> dict[str, dict]:
    """Each run's result.json, less what depends on where and how fast it ran."""
    out = {}
    for path in sorted(base.glob("*/seed-*/result.json")):
        result = json.loads(path.read_text())
        for key in ("wall_s", "command", "config"):  # commands name their own run folders
            result.pop(key)
        out[str(path.relative_to(base))] = result
    return out


def _table_rows(report: str) -> list[str]:
    return [line for line in report.splitlines() if line.startswith("| ")]


@pytest.mark.slow
def test_reproduce_on_ray_gives_the_local_results_and_report(point_robot_store, tmp_path,
                                                            monkeypatch):
    ray = pytest.importorskip("ray")
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    assert cli.main([*ARGS, "--out", str(local), "--jobs", "2"]) == 0

    # The executor starts a local Ray instance (no --ray-address) of --jobs CPUs, its workers
    # with another (empty) Minari store in their environment: the runs find the test
    # datasets only if the executor forwards MINARI_DATASETS_PATH to its tasks.
    started = []
    real_init = ray.init

    def init_elsewhere(*args, **kwargs):
        started.append(kwargs)
        with monkeypatch.context() as env:
            env.setenv("MINARI_DATASETS_PATH", str(tmp_path / "empty-store"))
            return real_init(*args, **kwargs)

    def not_here(*args, **kwargs):
        raise RunError("a run trained in the driver, not in a Ray task")

    monkeypatch.setattr(ray, "init", init_elsewhere)
    # the workers import their own run_job and run_one: one called here would be the
    # driver's
    monkeypatch.setattr(reproduce, "run_job", not_here)
    monkeypatch.setattr(reproduce, "run_one", not_here)
    start = time.perf_counter()
    try:
        code = cli.main([*ARGS, "--out", str(on_ray), "--executor", "ray", "--jobs", "2"])
    finally:
        ray.shutdown()
    print(f"reproduce on Ray: {time.perf_counter() - start:.0f} s")
    assert code == 0
    assert [kwargs.get("num_cpus") for kwargs in started] == [2]

    expected = _results(local / "fig6")
    assert len(expected) == len(reproduce.experiments()["fig6"].runs)
    assert _results(on_ray / "fig6") == expected
    stats = [json.loads((base / "fig6" / "stats.json").read_text()) for base in (local, on_ray)]
    assert stats[1] == stats[0]
    reports = [(base / "fig6" / "report.md").read_text() for base in (local, on_ray)]
    assert _table_rows(reports[1]) == _table_rows(reports[0])
    assert "| MerPO |" in reports[1]
