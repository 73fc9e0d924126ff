"""The behavior policies shipped with merpo-data rebuild the maintainer's datasets.

Each shipped file (Point-Robot-Wind, Half-Cheetah-Fwd-Back, Ant-Fwd-Back; default preset,
seed 0) records the content hash and mean return of every dataset its build gave, and
the float fingerprint of the machine that built it. A fresh store rebuilds the datasets
from the shipped policies alone (no SAC); where this machine rounds as the build machine
did, every dataset must be bit-identical to the recorded hash, elsewhere its mean return
must agree with the recorded one (MuJoCo turns a last-bit change of an action into another
trajectory, so bits cannot be asked for). A dataset that differs is named with the arrays
that differ and the recorded package versions that differ from the installed ones, every
such dataset in one failure. Then the qualities must mean what they say.
"""

from __future__ import annotations

import numpy as np
import pytest
from merpo_data import dataset_id, generate
from merpo_data.datasets import existing_recipe
from merpo_data.ids import QUALITIES
from merpo_data.integrity import field_hashes, open_dataset, read_episodes
from merpo_data.shipped import (
    arithmetic_fingerprint,
    describe_mismatch,
    shipped_metadata,
    shipped_path,
)
from merpo_envs import get_meta_info

# (env id, tasks rebuilt here, expert mean return over tasks that the data must reach).
# The MuJoCo targets are per 200-step episode, averaged over the two directions: the order
# of the field's published meta-test returns on these bodies.
SHIPPED = {
    "merpo/PointRobotWind-v0": ((0, 1, 40), None),
    "merpo/HalfCheetahFwdBack-v0": ((0, 1), 1000.0),
    "merpo/AntFwdBack-v0": ((0, 1), 400.0),
}


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def rebuilt(request, tmp_path_factory, monkeypatch_module):
    """``(env id, tasks, {dataset id: episode returns}, shipped header, {dataset id: array
    hashes})`` of a fresh rebuild."""
    import merpo_data.behavior as behavior

    env_id = request.param
    tasks, _ = SHIPPED[env_id]

    def no_training(*args, **kwargs):
        raise AssertionError("a shipped preset must rebuild without training")

    monkeypatch_module.setattr(behavior, "_train_group", no_training)
    monkeypatch_module.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("rebuild")))
    ids = generate(env_id, tasks=list(tasks), progress=False)
    returns, fields = {}, {}
    for ds_id in ids:
        episodes = read_episodes(open_dataset(ds_id), ds_id)
        returns[ds_id] = np.array([float(np.sum(ep.rewards)) for ep in episodes])
        fields[ds_id] = field_hashes(episodes)
    header = shipped_metadata(shipped_path(get_meta_info(env_id).slug, "default", 0))
    yield env_id, tasks, returns, header, fields


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_rebuild_matches_the_recorded_build(rebuilt):
    env_id, tasks, returns, header, fields = rebuilt
    assert header["env_id"] == env_id and header["preset"] == "default"
    recorded = header["datasets"]
    if header["arithmetic"] == arithmetic_fingerprint():
        differ = [
            describe_mismatch(ds_id, got, fields[ds_id], header)
            for ds_id in returns
            if (got := existing_recipe(ds_id)["content_hash"]) != recorded[ds_id]["content_hash"]
        ]
        assert not differ, "\n".join(differ)
        for ds_id, rets in returns.items():
            want = recorded[ds_id]["mean_return"]
            assert rets.mean() == pytest.approx(want, rel=1e-9, abs=1e-9), ds_id
        return
    # Another float rounding: the same recipe, so the same return statistics.
    for ds_id, rets in returns.items():
        want = recorded[ds_id]["mean_return"]
        spread = rets.std() / np.sqrt(len(rets))
        assert abs(rets.mean() - want) <= 4 * spread + 0.02 * abs(want), ds_id


def test_qualities_mean_what_they_say(rebuilt):
    """random < medium < expert on every task; medium 30-70% of the way from random to
    expert; mixed spans both; the expert reaches the env's target return."""
    env_id, tasks, returns, _, _ = rebuilt
    _, target = SHIPPED[env_id]
    experts = []
    for task in tasks:
        mean = {q: returns[dataset_id(env_id, task, q)].mean() for q in QUALITIES}
        assert mean["random"] < mean["medium"] < mean["expert"], (task, mean)
        fraction = (mean["medium"] - mean["random"]) / (mean["expert"] - mean["random"])
        assert 0.3 <= fraction <= 0.7, (task, fraction)
        mixed = returns[dataset_id(env_id, task, "mixed")]
        assert mixed.min() <= mean["medium"] <= mixed.max(), (task, mean)
        assert mixed.max() >= mean["random"] + 0.8 * (mean["expert"] - mean["random"]), task
        experts.append(mean["expert"])
    if target is not None:
        assert np.mean(experts) >= target, experts


def test_a_mismatch_names_the_arrays_and_the_versions_that_differ(monkeypatch):
    import merpo_data.shipped as shipped

    ds_id = "merpo/point-robot-wind/task-00-random-v0"
    fields = {"actions": "a1", "infos/sparse_reward": "b2", "rewards": "c3"}
    header = {
        "datasets": {ds_id: {"content_hash": "e" * 64, "fields": fields}},
        "versions": {"gymnasium": "1.4.0", "numpy": "2.3.5", "torch": "2.13.0+cpu"},
        "blas": "SkylakeX",
    }
    installed = {"gymnasium": "1.4.0", "numpy": "2.4.6", "torch": "2.13.0+cpu"}
    monkeypatch.setattr(shipped, "installed_versions", lambda: dict(installed))
    rebuilt = {**fields, "rewards": "ff", "infos/sparse_reward": "ee"}
    line = describe_mismatch(ds_id, "1" * 64, rebuilt, header)
    assert line == (
        f"{ds_id}: content hash 111111111111 != recorded eeeeeeeeeeee; arrays that differ: "
        "infos/sparse_reward, rewards; versions that differ: numpy 2.3.5 recorded, 2.4.6 installed"
    )
    # Every recorded version installed: the line names numpy's BLAS kernel, here and then.
    installed["numpy"] = "2.3.5"
    monkeypatch.setattr(shipped, "blas_kernel", lambda: "Haswell")
    line = describe_mismatch(ds_id, "1" * 64, rebuilt, header)
    assert line.endswith(
        "every recorded version is installed, so the code or the arithmetic outside torch "
        "that computes those arrays differs (numpy's BLAS kernel here: Haswell, at export: "
        "SkylakeX)"
    )
    assert "\n" not in line


def test_every_shipped_file_records_what_a_mismatch_report_needs():
    """Per-array hashes of every dataset, the versions that built them, the BLAS kernel."""
    from merpo_data.datasets import REQUIREMENTS

    for env_id in SHIPPED:
        header = shipped_metadata(shipped_path(get_meta_info(env_id).slug, "default", 0))
        assert set(header["versions"]) == set(REQUIREMENTS), env_id
        assert header["blas"] not in ("", "unknown"), env_id
        assert header["datasets"], env_id
        for ds_id, entry in header["datasets"].items():
            assert {"observations", "actions", "rewards"} <= set(entry["fields"]), ds_id
