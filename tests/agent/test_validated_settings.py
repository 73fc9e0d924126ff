"""``--settings validated|DIR``: the settings merpo's studies chose, shipped with the agent.

Point-Robot-Wind's MerPO settings are a study's ``best.yaml``; the envs without a study of
their own ship only the readings chosen there (never a learning rate), and every command
that takes ``--settings`` reads them the same way.
"""

from __future__ import annotations

import pytest
import yaml
from merpo_agent.arguments import build_parser, resolve_settings
from merpo_agent.config import ConfigError
from merpo_agent.presets import build_config
from merpo_agent.reproduce import FIRST_READ, experiments, with_settings
from merpo_agent.search_spaces import SEARCH_SPACES
from merpo_agent.validated_settings import (
    BEST_FILE,
    READING_KEYS,
    SHIPPED_DIR,
    readings_of,
    required_settings_file,
    settings_file,
)

PRW = "merpo/PointRobotWind-v0"
HC = "merpo/HalfCheetahFwdBack-v0"
WALKER = "merpo/Walker2dParams-v0"
TRANSFERRED = ("half-cheetah-fwd-back", "ant-fwd-back", "walker-2d-params")


def _load(path) -> dict:
    return yaml.safe_load(path.read_text())


def test_reading_keys_are_the_papers_readings_and_no_learning_rate():
    assert {"meta.learner_init", "meta.policy_steps", "rac.behavior_divergence",
            "rac.divergence_units", "rac.beta_sharing", "rac.lambda_max"} <= READING_KEYS
    assert not [key for key in READING_KEYS if key.endswith("lr")]
    # every reading is a key some method's search space sets
    space_keys = {item.split("=", 1)[0] for space in SEARCH_SPACES.values()
                  for choice in space for option in choice.options.values() for item in option}
    assert READING_KEYS <= space_keys


def test_point_robot_winds_validated_merpo_is_a_study_result_that_train_accepts():
    path = required_settings_file("validated", PRW, "merpo")
    assert path == SHIPPED_DIR / "point-robot-wind" / "merpo" / BEST_FILE
    assert "chosen by `merpo-agent tune`" in path.read_text().splitlines()[0]
    tuned = build_config(PRW, "repro", "merpo", path)
    first = build_config(PRW, "repro", "merpo")
    chosen = _load(path)
    assert tuned.meta.learner_init == chosen["meta"]["learner_init"]
    assert tuned.meta.policy_steps == chosen["meta"]["policy_steps"]
    assert tuned.rac.actor_lr == pytest.approx(chosen["rac"]["actor_lr"])
    assert tuned != first  # the study did not choose the first reading
    # MerPO's ablations read MerPO's settings
    assert settings_file("validated", PRW, "combo") == path
    assert settings_file("validated", PRW, "beha-only") == path


STUDIED = sorted(p.parent.name for p in (SHIPPED_DIR / "point-robot-wind").glob(f"*/{BEST_FILE}"))
# the methods with readings of the paper to carry over (a baseline's space is rates and
# loss weights: on an env without a study it keeps its own defaults)
WITH_READINGS = [a for a in STUDIED if any(c.reading for c in SEARCH_SPACES[a])]


@pytest.mark.parametrize("slug", TRANSFERRED)
@pytest.mark.parametrize("algo", WITH_READINGS)
def test_envs_without_a_study_take_point_robot_winds_readings_and_keep_their_rates(slug, algo):
    prw = _load(SHIPPED_DIR / "point-robot-wind" / algo / BEST_FILE)
    shipped = _load(SHIPPED_DIR / slug / algo / BEST_FILE)
    assert shipped == readings_of(prw)
    assert "actor_lr" in prw["rac"] and "actor_lr" not in shipped["rac"]


def test_merpo_and_merpo_adp_were_studied_and_baselines_carry_nothing_over():
    assert {"merpo", "merpo-adp"} <= set(WITH_READINGS)
    for slug in TRANSFERRED:
        shipped = {p.parent.name for p in (SHIPPED_DIR / slug).glob(f"*/{BEST_FILE}")}
        assert shipped == set(WITH_READINGS), slug


def test_transferred_readings_leave_table2s_learning_rates():
    path = required_settings_file("validated", WALKER, "merpo")
    tuned, first = build_config(WALKER, "table2", "merpo", path), build_config(WALKER, "table2")
    assert tuned.rac.actor_lr == first.rac.actor_lr and tuned.rac.critic_lr == first.rac.critic_lr
    assert (tuned.meta.learner_init, tuned.meta.policy_steps) == ("reinit", 10)
    assert (first.meta.learner_init, first.meta.policy_steps) == ("persistent", 1)


def _train_args(*extra: str):
    return build_parser().parse_args(["train", "--env", HC, *extra])


def test_train_settings_becomes_the_config_file():
    args = _train_args("--settings", "validated")
    resolve_settings(args)
    assert args.config == str(SHIPPED_DIR / "half-cheetah-fwd-back" / "merpo" / BEST_FILE)


@pytest.mark.parametrize("extra, match", [
    (("--settings", "validated", "--config", "x.yaml"), "pass one of them"),
    # nothing can be held out on Half-Cheetah: no baseline is tuned there
    (("--settings", "validated", "--algo", "focal"), "no settings for focal on"),
    (("--settings", "/no/such/folder"), "no such folder; pass `validated`"),
])
def test_train_settings_bad_input_is_one_line(extra, match):
    args = _train_args(*extra)
    with pytest.raises(ConfigError, match=match) as err:
        resolve_settings(args)
    assert "\n" not in str(err.value)


def test_an_env_with_nothing_shipped_is_one_line(monkeypatch, tmp_path):
    import merpo_agent.validated_settings as validated

    monkeypatch.setattr(validated, "SHIPPED_DIR", tmp_path)
    with pytest.raises(ConfigError,
                       match="ships no validated settings for .* `merpo-agent tune --env"):
        validated.settings_dir("validated", PRW)


def test_reproduce_validated_keeps_the_first_reading_beside_merpo():
    fig6 = with_settings(experiments()["fig6"], "validated", HC)
    configs = {run.key: run.config for run in fig6.runs}
    assert configs["merpo"] == str(SHIPPED_DIR / "half-cheetah-fwd-back" / "merpo" / BEST_FILE)
    assert configs[FIRST_READ] is None  # the untuned presets
    assert configs["focal"] is None  # no baseline settings there: its own defaults
    labels = [row.label for row in fig6.rows]
    assert labels[labels.index("MerPO") + 1] == "MerPO (Table 2 as first read)"


def test_a_report_names_the_methods_that_ran_on_their_presets():
    from merpo_agent.report import untuned_rows

    fig6 = experiments()["fig6"]
    # Half-Cheetah ships MerPO's readings only: the baselines run as written, and say so
    on_half_cheetah = with_settings(fig6, "validated", "merpo/HalfCheetahFwdBack-v0")
    assert untuned_rows(on_half_cheetah) == ["FOCAL", "Contextual BCQ", "MBML", "Batch PEARL"]
    assert untuned_rows(with_settings(fig6, "validated", "merpo/PointRobotWind-v0")) == []
