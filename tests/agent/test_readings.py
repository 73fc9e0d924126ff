"""The paper's open readings as config options: each changes what it should, and nothing
else (RACConfig: the lambda dual's divergence, its units, a clip on lam, shared beta;
MetaTrainConfig: task-learner init persistent / reinit / reptile, pi_c steps)."""

from __future__ import annotations

import math

import pytest
import torch
from agent_helpers import random_batch, small_config
from merpo_agent.action_scaling import log_action_scale
from merpo_agent.behavior_cloning import BehaviorCloning
from merpo_agent.config import ConfigError
from merpo_agent.meta_policy import MetaLearner
from merpo_agent.presets import build_config
from merpo_agent.rac_config import RACConfig
from merpo_agent.task_learners import TaskLearners

OBS, ACT = 3, 2
PRW = "merpo/PointRobotWind-v0"


def _updates(cfg: RACConfig, steps: int = 1, action_log_scale: float = 0.0):
    """``steps`` RAC updates of 3 tasks on random data whose actions are uniform in [-1, 1]
    (a broad behavior policy); returns the learners and the last metrics."""
    torch.manual_seed(0)
    learners = TaskLearners(cfg, OBS, ACT, num_slots=3, action_log_scale=action_log_scale)
    meta = MetaLearner(cfg, OBS, ACT)
    bc = BehaviorCloning(3, OBS, ACT, hidden=8, hidden_layers=1).select(torch.arange(3))
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        real = random_batch(3, cfg.real_batch_size, g)
        model = random_batch(3, cfg.model_batch_size, g)
        metrics = learners.update(real, model, meta.policy, bc)
    return learners, metrics


def test_log_action_scale_is_the_log_determinant_of_the_unit_to_env_map():
    low, high = torch.tensor([-0.1, -0.1]), torch.tensor([0.1, 0.1])
    assert log_action_scale(low, high) == pytest.approx(2 * math.log(0.1))
    assert log_action_scale(torch.tensor([-1.0]), torch.tensor([1.0])) == 0.0


def test_nll_in_unit_units_drives_lam_up_on_a_broad_behavior_policy_and_env_units_do_not():
    unit_cfg = small_config(behavior_divergence="nll", divergence_units="unit")
    unit, m_unit = _updates(unit_cfg, steps=4)
    # uniform actions on [-1, 1]^2 have entropy 2 log 2: -E log pi_n can't get near 0.05
    assert (m_unit["d_beta_dual"] > 1.0).all()
    assert torch.equal(m_unit["d_beta_dual"], m_unit["d_beta"])
    assert (unit.lam > unit_cfg.lambda_initial + 2.0).all()
    # the same data in env units of a narrow box ([-0.01, 0.01]^2): 2 log 0.01 = -9.2 nats
    scale = 2 * math.log(0.01)
    env_cfg = small_config(behavior_divergence="nll", divergence_units="env")
    env, m_env = _updates(env_cfg, steps=4, action_log_scale=scale)
    assert (env.lam < env_cfg.lambda_initial).all()
    first_unit = _updates(unit_cfg)[1]
    first_env = _updates(env_cfg, action_log_scale=scale)[1]
    assert torch.allclose(first_env["d_beta_dual"], first_unit["d_beta"] + scale)


def test_kl_to_bc_is_the_default_and_the_dual_sees_d_beta_prime():
    assert RACConfig().behavior_divergence == "kl_to_bc"
    _, metrics = _updates(small_config())
    assert torch.equal(metrics["d_beta_dual"], metrics["d_beta_prime"])
    assert not torch.allclose(metrics["d_beta_dual"], metrics["d_beta"])


def test_lambda_max_clips_lam_from_above():
    free, _ = _updates(small_config(behavior_divergence="nll"), steps=4)
    clipped, _ = _updates(small_config(behavior_divergence="nll", lambda_max=6.0), steps=4)
    assert (free.lam > 6.5).all()
    assert torch.equal(clipped.lam.detach(), torch.full((3,), 6.0))


def test_shared_beta_is_one_value_stepped_by_every_task():
    per_task, _ = _updates(small_config(q_difference_threshold=1e3))
    shared, _ = _updates(small_config(q_difference_threshold=1e3, beta_sharing="shared"))
    # the first beta step comes before anything the sharing changes: the shared dual moved
    # by the sum of the three tasks' own steps (log beta starts at 0)
    assert len(set(shared.log_beta.tolist())) == 1
    assert (per_task.log_beta < 0).all()
    assert torch.allclose(shared.log_beta, per_task.log_beta.sum().expand(3))


@pytest.mark.parametrize("field,value", [
    ("behavior_divergence", "kl"), ("divergence_units", "cm"), ("beta_sharing", "global"),
    ("lambda_max", -1.0), ("actor_lr", -1e-3),
])
def test_bad_reading_values_are_one_line_errors(field, value):
    with pytest.raises(ConfigError, match=field.split("_")[0]) as err:
        build_config(PRW, "smoke", overrides=[f"rac.{field}={value}"])
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override", ["meta.learner_init=fresh", "meta.policy_steps=-1",
                                      "meta.reptile_step=0"])
def test_bad_meta_readings_are_one_line_errors(override):
    with pytest.raises(ConfigError, match=override.split("=")[0].split(".")[1]):
        build_config(PRW, "smoke", overrides=[override])


# ---------------------------------------------------------------- through the trainer
def _trainer(tmp_path, *overrides: str, iterations: int = 4):
    from merpo_agent.trainer import MetaTrainer

    cfg = build_config(PRW, "smoke", "merpo",
                       overrides=["eval.every=0", f"run.steps={2 * iterations}",
                                  *overrides])
    return MetaTrainer(cfg, tmp_path / "run", progress=False, say=lambda _: None,
                       tensorboard=False)


def _spy_inner_loop_starts(monkeypatch, trainer) -> list[bool]:
    """For each meta-iteration: did the batch's actors start equal to pi_c?"""
    from merpo_agent import seed_batch as trainer_module  # the meta-iteration's home

    starts: list[bool] = []
    real = trainer_module.rac_updates

    def spy(learners, *args, **kwargs):
        starts.append(all(
            torch.equal(task, meta.expand_as(task)) for task, meta in zip(
                learners.actor.parameters(), trainer.meta.policy.parameters(), strict=True)))
        return real(learners, *args, **kwargs)

    monkeypatch.setattr(trainer_module, "rac_updates", spy)
    return starts


@pytest.mark.parametrize("init", ["persistent", "reinit"])
def test_reinit_restores_pi_n_from_pi_c_at_every_iteration(point_robot_store, tmp_path,
                                                           monkeypatch, init):
    trainer = _trainer(tmp_path, f"meta.learner_init={init}")
    trainer.build()
    starts = _spy_inner_loop_starts(monkeypatch, trainer)
    trainer.train()
    assert len(starts) == 4
    if init == "reinit":
        assert all(starts)
    else:  # persistent: a task sampled again continues its own actor, which left pi_c
        assert starts[0] and not all(starts[1:])
    # either way each task keeps its own duals: visited tasks' lam moved off lam_0
    table = trainer.table.learners
    visited = table.critic_optimizer.steps > 0 if init == "persistent" else (
        table.lam != trainer.cfg.rac.lambda_initial)
    assert visited.any() and (table.lam[visited] != trainer.cfg.rac.lambda_initial).all()


def test_reptile_moves_pi_c_to_the_batch_mean_actor(point_robot_store, tmp_path):
    trainer = _trainer(tmp_path, "meta.learner_init=reptile", "meta.policy_steps=0",
                       "meta.reptile_step=1.0", iterations=1)
    trainer.train()
    # step 1 and no Eq. 10 step: pi_c is the mean of the batch's task actors
    for meta_p, task_p in zip(trainer.meta.policy.parameters(),
                              trainer.learners.actor.parameters(), strict=True):
        assert torch.allclose(meta_p, task_p.mean(0, keepdim=True), atol=1e-6)


def test_policy_steps_is_the_number_of_eq10_steps_per_iteration(point_robot_store, tmp_path):
    trainer = _trainer(tmp_path, "meta.policy_steps=3", iterations=2)
    trainer.train()
    state = trainer.meta.policy_optimizer.state_dict()["state"]
    assert {int(s["step"]) for s in state.values()} == {6}


def test_shared_beta_is_one_value_for_every_training_task(point_robot_store, tmp_path):
    trainer = _trainer(tmp_path, "rac.beta_sharing=shared")
    trainer.train()
    log_beta = trainer.table.learners.log_beta.detach()
    assert len(set(log_beta.tolist())) == 1 and log_beta[0] != 0.0
