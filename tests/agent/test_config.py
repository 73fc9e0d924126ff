"""Config presets, algorithm settings, overrides (--set, YAML/TOML files) and bad values."""

from __future__ import annotations

import math

import pytest
from merpo_agent.config import ALGOS, Config, config_from_dict
from merpo_agent.overrides import ConfigError
from merpo_agent.presets import PRESETS, build_config, make_preset

PRW = "merpo/PointRobotWind-v0"
ENVS = ("merpo/PointRobotWind-v0", "merpo/HalfCheetahFwdBack-v0", "merpo/AntFwdBack-v0",
        "merpo/Walker2dParams-v0")


# Table 2 of the paper (table2.yaml), per environment.
TABLE2 = {
    "merpo/Walker2dParams-v0": (0.99, 8, 1e-3, 1e-3, 5, 5),
    "merpo/HalfCheetahFwdBack-v0": (0.99, 2, 1e-3, 5e-4, 100, 10),
    "merpo/AntFwdBack-v0": (0.99, 2, 8e-4, 5e-4, 100, 10),
    "merpo/PointRobotWind-v0": (0.9, 8, 1e-3, 1e-3, 5, 10),
}


@pytest.mark.parametrize("env", ENVS)
def test_table2_matches_the_paper(env):
    cfg = make_preset(env, "table2")
    discount, task_batch, critic_lr, actor_lr, lam0, tau = TABLE2[env]
    assert (cfg.rac.discount, cfg.meta.task_batch_size) == (discount, task_batch)
    assert (cfg.rac.critic_lr, cfg.rac.actor_lr) == (critic_lr, actor_lr)
    assert (cfg.rac.lambda_initial, cfg.rac.q_difference_threshold) == (lam0, tau)
    # common rows
    assert cfg.rac.batch_size == 256 and cfg.rac.real_data_ratio == 0.5
    assert cfg.rollout.length == 1 and cfg.meta.inner_steps == 10
    assert cfg.rac.outer_actor_lr == 1e-3 and cfg.rac.meta_q_lr == 1e-3
    assert cfg.dynamics.task_model_lr == 1e-4 and cfg.dynamics.meta_model_lr == 5e-2
    assert cfg.dynamics.adaptation_steps == 25
    assert (cfg.dynamics.ensemble, cfg.dynamics.elites) == (7, 5)
    assert cfg.rac.lambda_lr == 1.0 and cfg.rac.target_divergence == 0.05
    assert cfg.rac.log_beta_lr == 1e-3 and cfg.rac.log_beta_initial == 0.0
    assert cfg.rac.auto_tune_beta and cfg.rac.auto_tune_lambda and cfg.rac.max_entropy
    assert cfg.rac.alpha == 0.4 and cfg.rac.alpha_adp_lr == 1e-4
    assert cfg.test.adaptation_steps == 100 and cfg.test.lr == 8e-5
    assert cfg.rac.hidden == 300
    assert cfg.data.train_tasks is None and cfg.data.test_tasks is None  # the env's full split


def test_table1_is_single_task_rac():
    cfg = make_preset("merpo/Walker2dParams-v0", "table1")
    assert (cfg.rollout.length, cfg.rac.critic_lr, cfg.rac.actor_lr) == (1, 1e-4, 1e-5)
    assert math.isclose(math.exp(cfg.rac.log_beta_initial), 10.0)
    assert not cfg.rac.auto_tune_beta and not cfg.rac.auto_tune_lambda
    assert cfg.rac.lambda_initial == 1.0 and cfg.rac.discount == 0.99
    assert (cfg.rac.hidden, cfg.rac.hidden_layers) == (256, 4)
    cheetah = make_preset("merpo/HalfCheetahFwdBack-v0", "table1")
    assert (cheetah.rollout.length, cheetah.rac.critic_lr, cheetah.rac.actor_lr) == (5, 3e-4, 1e-4)


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("algo", ALGOS)
def test_every_preset_and_algo_builds_and_round_trips(preset, algo):
    cfg = build_config(PRW, preset, algo)
    assert cfg.algo == algo and cfg.preset == preset
    assert config_from_dict(cfg.to_dict()) == cfg


def test_algorithms_map_to_the_ablation_settings():
    def rac(algo):
        return build_config(PRW, "smoke", algo).rac

    assert rac("merpo").alpha == 0.4 and not rac("merpo").adaptive_alpha
    assert rac("merpo-adp").adaptive_alpha
    combo = rac("combo")
    assert not combo.use_meta_regularizer and combo.lambda_initial == 0.0
    assert rac("beha-only").alpha == 1.0
    assert rac("combo3").alpha == 0.0
    cql = rac("cql")
    assert not cql.use_model and cql.real_data_ratio == 1.0


def test_smaller_presets_are_smaller():
    table2, small, smoke = (make_preset(PRW, p) for p in ("table2", "small", "smoke"))
    assert smoke.rac.hidden < small.rac.hidden < table2.rac.hidden
    assert smoke.iterations < small.iterations < table2.iterations
    assert small.data.train_tasks == tuple(range(8)) and small.data.test_tasks == (40, 41, 42, 43)
    assert smoke.data.train_tasks == (0, 1, 2, 3) and smoke.data.test_tasks == (40, 41)


def test_set_overrides_are_typed():
    cfg = build_config(
        PRW, "smoke",
        overrides=["rac.actor_lr=3e-4", "run.steps=14", "rac.use_model=false",
                   "rac.real_data_ratio=1", "data.train_tasks=0,2",
                   "dynamics.meta_task_batch_size=2", "test.compare_combo=no"],
        seed=5,
    )
    assert cfg.rac.actor_lr == 3e-4 and isinstance(cfg.iterations, int)
    assert cfg.iterations == 7 and cfg.rac.use_model is False
    assert cfg.data.train_tasks == (0, 2) and cfg.dynamics.meta_task_batch_size == 2
    assert cfg.test.compare_combo is False and cfg.seed == 5
    none = build_config(PRW, "smoke", overrides=["dynamics.meta_task_batch_size=none"])
    assert none.dynamics.meta_task_batch_size is None


def test_config_files_yaml_and_toml(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("algo: combo3\nrac:\n  actor_lr: 2.0e-4\nrun:\n  steps: 18\n")
    cfg = build_config(PRW, "smoke", config_file=yaml_file)
    assert cfg.algo == "combo3" and cfg.rac.alpha == 0.0
    assert cfg.rac.actor_lr == 2e-4 and cfg.iterations == 9
    toml_file = tmp_path / "c.toml"
    toml_file.write_text("[rac]\nactor_lr = 5e-4\n[data]\ntest_tasks = [40]\n")
    cfg = build_config(PRW, "smoke", config_file=toml_file, overrides=["rac.actor_lr=1e-4"])
    assert cfg.rac.actor_lr == 1e-4  # --set wins over the file
    assert cfg.data.test_tasks == (40,)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (["rac.actr_lr=1"], "unknown config key 'rac.actr_lr'; did you mean rac.actor_lr"),
        (["actor_lr=1"], "did you mean rac.actor_lr"),
        (["rac.actor_lr=fast"], "expected a number"),
        (["run.steps=1.5"], "expected an integer"),
        (["rac.use_model=maybe"], "expected true or false"),
        (["rac.alpha=2"], "alpha must be in"),
        (["run.steps=0"], "steps=0 must be >= 1"),
        (["run.steps=7"], "not a multiple of meta.inner_steps=2"),
        (["meta.iterations=4"], "use run.steps"),
        (["meta.eval_every=4"], "use eval.every"),
        (["test.episodes=4"], "use eval.episodes"),
        (["data.train_tasks=[]"], "empty"),
        (["data.test_tasks=50-40"], "bad task range"),
        (["dynamics.task_chunk=-1"], "task_chunk=-1 must be >= 0"),
        (["data.quality=great"], "not one of"),
        (["rac"], "key=value"),
        (["rac=1"], "is a section"),
        (["env=x"], "--env"),
        (["rac.actor_lr=nan"], "finite"),
    ],
)
def test_bad_overrides_give_one_line(overrides, match):
    with pytest.raises(ConfigError, match=match) as info:
        build_config(PRW, "smoke", overrides=overrides)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(env="merpo/Nope-v0"), "unknown env id"),
        (dict(preset="huge"), "unknown preset 'huge'"),
        (dict(algo="ppo"), "unknown algo 'ppo'"),
        (dict(device="tpu"), "device"),
    ],
)
def test_bad_names_give_one_line(kwargs, match):
    args = dict(env=PRW, preset="smoke") | kwargs
    with pytest.raises(ConfigError, match=match):
        build_config(**args)


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(PRW, "smoke", config_file=tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rac: [unclosed\n")
    with pytest.raises(ConfigError, match="does not parse"):
        build_config(PRW, "smoke", config_file=bad)
    other = tmp_path / "c.ini"
    other.write_text("x=1")
    with pytest.raises(ConfigError, match="unknown format"):
        build_config(PRW, "smoke", config_file=other)
    typo = tmp_path / "typo.toml"
    typo.write_text("[run]\nstep = 3\n")
    with pytest.raises(ConfigError, match="did you mean run.steps"):
        build_config(PRW, "smoke", config_file=typo)


def test_default_config_is_table2_point_robot():
    assert Config().rac.discount == make_preset(PRW, "table2").rac.discount


def test_task_lists_take_ranges_as_the_cli_does():
    cfg = build_config(PRW, "smoke", overrides=["data.train_tasks=0-34", "data.test_tasks=40,42"])
    assert cfg.data.train_tasks == tuple(range(35)) and cfg.data.test_tasks == (40, 42)


def test_a_saved_config_of_the_former_schema_still_loads():
    """Old run directories (meta-iterations, test.episodes, [] for the split) resume."""
    from merpo_agent.config import config_from_dict

    old = make_preset(PRW, "smoke").to_dict()
    for key in ("run", "eval"):
        del old[key]
    old["meta"].update(iterations=4, eval_every=2, log_every=1, checkpoint_every=2)
    old["test"]["episodes"] = 2
    old["data"].update(train_tasks=[], test_tasks=[])
    cfg = config_from_dict(old)
    assert cfg.run == make_preset(PRW, "smoke").run and cfg.eval.episodes == 2
    assert cfg.data.train_tasks is None and cfg.iterations == 4
