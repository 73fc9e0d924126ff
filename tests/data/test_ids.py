"""Dataset ids, task ranges and presets: the names, and one-line errors for bad ones."""

from __future__ import annotations

import pytest
from merpo_data import QUALITIES, dataset_id, parse_dataset_id, parse_qualities, parse_tasks
from merpo_data.presets import get_preset
from merpo_envs import format_tasks, get_meta_info

ENV = "merpo/PointRobotWind-v0"
INFO = get_meta_info(ENV)


def test_dataset_id_round_trip():
    assert QUALITIES == ("random", "medium", "expert", "mixed")
    for task in (0, 7, 49):
        for q in QUALITIES:
            assert parse_dataset_id(dataset_id(ENV, task, q)) == (ENV, task, q)
    assert dataset_id(ENV, 3, "medium") == "merpo/point-robot-wind/task-03-medium-v0"


@pytest.mark.parametrize(
    "bad, match",
    [
        ("point-robot-wind/task-03-medium-v0", "expected merpo/<env>/task-<NN>-<quality>-v0"),
        ("merpo/point-robot-wind/task-03-medium-v1", "expected"),
        (
            "merpo/point-robot-wind/task-3-medium-v0",
            "did you mean 'merpo/point-robot-wind/task-03-medium-v0'",
        ),
        ("merpo/point-robot-wind/task-03-great-v0", "unknown quality"),
        ("merpo/point-robot-wind/task-77-medium-v0", "out of range"),
        ("merpo/no-such-env/task-03-medium-v0", "unknown env 'no-such-env'"),
    ],
)
def test_bad_dataset_ids(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_dataset_id(bad)


def test_dataset_id_bad_inputs():
    with pytest.raises(ValueError, match="unknown env id"):
        dataset_id("merpo/Nope-v0", 0, "medium")
    with pytest.raises(ValueError, match="out of range"):
        dataset_id(ENV, 50, "medium")
    with pytest.raises(ValueError, match="unknown quality"):
        dataset_id(ENV, 0, "best")


def test_task_ranges():
    assert parse_tasks("0-9,40-49", INFO) == tuple(range(10)) + tuple(range(40, 50))
    assert parse_tasks("3,1,1-2", INFO) == (1, 2, 3)
    assert parse_tasks(None, INFO) == tuple(range(50))
    assert parse_tasks("train", INFO) == tuple(range(40))
    assert parse_tasks("test", INFO) == tuple(range(40, 50))
    assert parse_tasks([5, 4], INFO) == (4, 5)


@pytest.mark.parametrize(
    "bad, match",
    [
        ("1-", "bad task range"),
        ("a", "bad task range"),
        ("5-2", "5"),
        ("0-50", "out of range"),
        ([], "empty"),
    ],
)
def test_bad_task_ranges(bad, match):
    with pytest.raises(ValueError, match=match):
        parse_tasks(bad, INFO)


def test_presets():
    default = get_preset(ENV)
    assert default.episodes == 200 and default.name == "default"
    assert get_preset(ENV, "test").sac.iterations < default.sac.iterations
    # A new env id gets a generic preset: GPU scale by default, tiny for tests.
    import merpo_data.presets as presets

    big, small = (
        presets._generic_mujoco("merpo/Walker2dParams-v0", "default"),
        presets._generic_mujoco("merpo/Walker2dParams-v0", "test"),
    )
    assert big.sac.hidden == 256 and big.sac.iterations * big.sac.envs_per_task >= 1_000_000
    assert small.sac.iterations * small.sac.envs_per_task <= 1000
    assert big.policy_preset == "default" and small.policy_preset == "test"
    # Walker-2D-Params: a CPU default, all 25 tasks as one batched SAC of small networks
    walker = get_preset("merpo/Walker2dParams-v0")
    assert walker.sac.hidden == 64 and walker.tasks_per_group == 25
    assert walker.sac.iterations * walker.sac.envs_per_task == 200_000
    # Half-Cheetah and Ant: a CPU-sized default of 128x2 networks, two tasks per group.
    for env_id in ("merpo/HalfCheetahFwdBack-v0", "merpo/AntFwdBack-v0"):
        cpu = get_preset(env_id)
        assert cpu.sac.hidden == 128 and cpu.tasks_per_group == 2
        assert 200_000 <= cpu.sac.iterations * cpu.sac.envs_per_task <= 300_000
    # Every MuJoCo env's test preset rolls out its default's shipped policies.
    for env_id in ("merpo/HalfCheetahFwdBack-v0", "merpo/AntFwdBack-v0", "merpo/Walker2dParams-v0"):
        cpu, small = get_preset(env_id), get_preset(env_id, "test")
        assert small.policy_preset == "default" and small.sac == cpu.sac
        assert small.episodes < cpu.episodes and small.name == "test"
    with pytest.raises(ValueError, match="unknown preset 'huge'; valid presets: default, test"):
        get_preset(ENV, "huge")


def test_qualities_take_commas_as_tasks_do():
    assert parse_qualities("medium,expert") == ("medium", "expert")
    assert parse_qualities(["medium", "expert"]) == ("medium", "expert")
    mixed = parse_qualities(["random,medium", "medium", " expert "])
    assert mixed == ("random", "medium", "expert")
    assert parse_qualities(None) == parse_qualities("all") == QUALITIES
    with pytest.raises(ValueError, match="unknown quality 'great'; valid qualities"):
        parse_qualities("medium,great")
    with pytest.raises(ValueError, match="empty quality list; use e.g. medium,expert"):
        parse_qualities(",")


@pytest.mark.parametrize(
    "tasks, text",
    [([0, 1, 2, 3, 40, 41], "0-3,40-41"), ([5], "5"), ([9, 3, 4, 3], "3-4,9"), (range(40), "0-39")],
)
def test_format_tasks_is_what_parse_tasks_reads(tasks, text):
    assert format_tasks(tasks) == text
    assert parse_tasks(text, INFO) == tuple(sorted(set(tasks)))


def test_the_readme_names_dataset_id_and_its_examples_hold():
    """The README shows how to build a task's dataset id (no need for ``dir()``)."""
    import re
    from pathlib import Path

    import merpo_data

    readme = (Path(__file__).resolve().parents[2] / "packages/merpo-data/README.md").read_text()
    examples = re.findall(r'^(dataset_id\(.*?\))\s+# "([^"]+)"$', readme, flags=re.M)
    assert examples, "the README shows no dataset_id example"
    for call, expected in examples:
        assert eval(call, vars(merpo_data)) == expected
