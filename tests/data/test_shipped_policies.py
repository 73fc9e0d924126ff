"""The behavior policies shipped with merpo-data rebuild the maintainer's datasets.

Each shipped file (Point-Robot-Wind, Half-Cheetah-Fwd-Back, Ant-Fwd-Back; default preset,
seed 0) records the content hash and mean return of every dataset its build gave, and
the float fingerprint of the machine that built it. A fresh store rebuilds the datasets
from the shipped policies alone (no SAC); where this machine rounds as the build machine
did, every dataset must be bit-identical to the recorded hash, elsewhere its mean return
must agree with the recorded one (MuJoCo turns a last-bit change of an action into another
trajectory, so bits cannot be asked for). Then the qualities must mean what they say.
"""

from __future__ import annotations

import numpy as np
import pytest
from merpo_data import dataset_id, generate
from merpo_data.datasets import existing_recipe
from merpo_data.ids import QUALITIES
from merpo_data.integrity import open_dataset, read_episodes
from merpo_data.shipped import arithmetic_fingerprint, shipped_metadata, shipped_path
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
    """``(env id, tasks, {dataset id: episode returns}, shipped header)`` of a fresh rebuild."""
    import merpo_data.behavior as behavior

    env_id = request.param
    tasks, _ = SHIPPED[env_id]

    def no_training(*args, **kwargs):
        raise AssertionError("a shipped preset must rebuild without training")

    monkeypatch_module.setattr(behavior, "_train_group", no_training)
    monkeypatch_module.setenv("MINARI_DATASETS_PATH", str(tmp_path_factory.mktemp("rebuild")))
    ids = generate(env_id, tasks=list(tasks), progress=False)
    returns = {}
    for ds_id in ids:
        episodes = read_episodes(open_dataset(ds_id), ds_id)
        returns[ds_id] = np.array([float(np.sum(ep.rewards)) for ep in episodes])
    header = shipped_metadata(shipped_path(get_meta_info(env_id).slug, "default", 0))
    yield env_id, tasks, returns, header


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def test_rebuild_matches_the_recorded_build(rebuilt):
    env_id, tasks, returns, header = rebuilt
    assert header["env_id"] == env_id and header["preset"] == "default"
    recorded = header["datasets"]
    same_arithmetic = header["arithmetic"] == arithmetic_fingerprint()
    for ds_id, rets in returns.items():
        want = recorded[ds_id]
        if same_arithmetic:
            assert existing_recipe(ds_id)["content_hash"] == want["content_hash"], ds_id
            assert rets.mean() == pytest.approx(want["mean_return"], rel=1e-9, abs=1e-9)
        else:
            # Another float rounding: the same recipe, so the same return statistics.
            spread = rets.std() / np.sqrt(len(rets))
            assert abs(rets.mean() - want["mean_return"]) <= 4 * spread + 0.02 * abs(
                want["mean_return"]
            ), ds_id


def test_qualities_mean_what_they_say(rebuilt):
    """random < medium < expert on every task; medium 30-70% of the way from random to
    expert; mixed spans both; the expert reaches the env's target return."""
    env_id, tasks, returns, _ = rebuilt
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
