"""Meta-training with persistent task learners (Alg. 2 line 1), through the trainer."""

from __future__ import annotations

import pytest
import torch
from merpo_agent.presets import build_config
from merpo_agent.trainer import MetaTrainer

PRW = "merpo/PointRobotWind-v0"


def _train(tmp_path, algo: str, *overrides: str) -> MetaTrainer:
    cfg = build_config(PRW, "smoke", algo, overrides=["eval.every=0", *overrides])
    trainer = MetaTrainer(cfg, tmp_path / algo, progress=False, say=lambda _: None,
                          tensorboard=False)
    trainer.train()
    return trainer


def _initial(tmp_path, algo: str) -> MetaTrainer:
    cfg = build_config(PRW, "smoke", algo, overrides=["eval.every=0"])
    fresh = MetaTrainer(cfg, tmp_path / f"{algo}-fresh", progress=False, tensorboard=False)
    fresh.build()
    return fresh


@pytest.mark.parametrize("algo", ["combo", "beha-only"])
def test_combo_and_beha_only_task_learners_learn_while_pi_c_stays(point_robot_store, tmp_path,
                                                                   algo):
    trainer = _train(tmp_path, algo)
    fresh = _initial(tmp_path, algo)
    # every Eq. 10 weight lam (1 - alpha) is zero: pi_c never moves
    for name, p in trainer.meta.policy.named_parameters():
        assert torch.equal(p, dict(fresh.meta.policy.named_parameters())[name]), name
    # ... but the task learners do: their actors left the (shared) initial pi_c
    table = trainer.table.learners
    steps = table.actor_optimizer.steps
    assert steps.sum() == trainer.cfg.run.steps * 2
    visited = steps > 0
    obs = torch.zeros(table.num_slots, 8, 2)
    moved = (table.actor(obs)[0] - fresh.meta.policy(obs)[0]).abs().amax(dim=(1, 2))
    assert torch.all(moved[visited] > 1e-3) and torch.all(moved[~visited] == 0)


def test_meta_test_combo_gets_its_full_budget(point_robot_store, tmp_path):
    trainer = _train(tmp_path, "merpo", "run.steps=12", "test.adaptation_steps=3")
    cfg = trainer.cfg
    # one training task's expected updates: run.steps x B / N = 12 x 2 / 4 = 6
    expected = cfg.test.combo_budget(cfg.run.steps, cfg.meta, trainer.num_train)
    assert expected == 6
    result = trainer.last_result
    assert result.updates == {"adapted": 3, "combo": expected, "beha_only": 3}
    # an explicit budget wins
    again = trainer.evaluate()
    assert again.updates["combo"] == expected
    assert cfg.test.combo_budget(cfg.run.steps, cfg.meta, 1) == 12 * 2


def test_merpo_adp_adapts_alpha_at_meta_test(point_robot_store, tmp_path, monkeypatch):
    from merpo_agent import task_learners

    seen = []
    real = task_learners.TaskLearners.adapt_alpha

    def spy(self, d_beta_prime, d_meta):
        out = real(self, d_beta_prime, d_meta)
        seen.append((self.config.critic_lr, self.config.adaptive_alpha, out.clone()))
        return out

    monkeypatch.setattr(task_learners.TaskLearners, "adapt_alpha", spy)
    _train(tmp_path, "merpo-adp", "test.adaptation_steps=4", "test.compare_combo=false",
           "test.compare_beha_only=false", "rac.alpha_adp_lr=0.05")
    # the meta-test's learners (lr 8e-5): one Eq. 11 step per J = 2 of its 4 adaptation
    # steps at the run's one (final) meta-test, and alpha really moved
    test_steps = [alpha for lr, adaptive, alpha in seen if lr == 8e-5 and adaptive]
    assert len(test_steps) == 2
    assert all(not torch.allclose(a, torch.full_like(a, 0.4)) for a in test_steps)


def test_chunks_of_the_task_batch_compute_what_the_whole_batch_computes(point_robot_store,
                                                                        tmp_path):
    """meta.task_chunk = 1 and dynamics.task_chunk = 1 (a CPU's choice for big networks) run
    the batch's tasks one by one, each drawing the whole batch's randomness: the same task
    models (Eq. 3-4) and learners as one batched op."""
    whole = _train(tmp_path / "whole", "merpo")
    chunked = _train(tmp_path / "chunked", "merpo", "meta.task_chunk=1", "dynamics.task_chunk=1")
    assert [c.size for c in chunked.chunks] == [1, 1] and whole.chunks == [None]
    assert whole.task_models.chunk_size() == whole.num_train  # smoke ensembles: one op
    for name in ("meta_model", "task_models", "test_models"):
        for (key, a), b in zip(getattr(whole, name).state_dict().items(),
                               getattr(chunked, name).state_dict().values(), strict=True):
            assert torch.equal(b, a), f"{name}.{key}"
    for a, b in zip(whole.table.learners.persistent_tensors(),
                    chunked.table.learners.persistent_tensors(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5)
    for (name, a), b in zip(whole.meta.state_dict().items(),
                            chunked.meta.state_dict().values(), strict=True):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
    assert not torch.equal(whole.meta.policy.trunk.net[0].weight,
                           _initial(tmp_path, "merpo").meta.policy.trunk.net[0].weight)
