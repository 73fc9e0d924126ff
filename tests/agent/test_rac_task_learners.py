"""TaskLearners (merpo_agent.task_learners): batched RAC updates, duals, targets, ablations."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
from agent_helpers import random_batch, small_config
from merpo_agent.alpha_adaptation import adaptive_alpha_step
from merpo_agent.behavior_cloning import BehaviorCloning
from merpo_agent.meta_policy import MetaLearner
from merpo_agent.rac_config import ALGO_SETTINGS, RACConfig
from merpo_agent.task_learners import TaskLearners, UpdateNoise, twin_q_values
from merpo_agent.transitions import TransitionBatch
from merpo_data.networks import tanh_gaussian_rsample

OBS, ACT = 3, 2


def batches(cfg: RACConfig, t: int, g: torch.Generator):
    real = random_batch(t, cfg.real_batch_size, g)
    model = random_batch(t, cfg.model_batch_size, g) if cfg.use_model else None
    return real, model


def setup(cfg: RACConfig, t: int = 3, seed: int = 0):
    torch.manual_seed(seed)
    learners = TaskLearners(cfg, OBS, ACT, num_slots=t)
    meta = MetaLearner(cfg, OBS, ACT)
    bc = BehaviorCloning(t, OBS, ACT, hidden=8, hidden_layers=1)
    return learners, meta, bc.select(torch.arange(t))


def slot(state: dict, t: int, num_slots: int) -> dict:
    """Slice slot t out of a TaskLearners state dict (every tensor has the task axis first)."""
    out = {}
    for name, value in state.items():
        assert value.shape[0] == num_slots, name
        out[name] = value[t : t + 1].clone()
    return out


def take(batch: TransitionBatch | None, t: int):
    return None if batch is None else TransitionBatch(*(x[t : t + 1] for x in batch))


@pytest.mark.parametrize("algo", ["merpo", "cql"])
def test_batched_update_equals_separate_single_task_updates(algo):
    cfg = small_config(algo)
    t = 3
    learners, meta, bc = setup(cfg, t)
    singles = []
    for i in range(t):
        single = TaskLearners(cfg, OBS, ACT, num_slots=1)
        single.load_state_dict(slot(learners.state_dict(), i, t))
        singles.append(single)
    bc_single = [BehaviorCloning(1, OBS, ACT, 8, 1) for _ in range(t)]
    for i, b in enumerate(bc_single):
        for dst, src in zip(b.policy.parameters(), bc.parameters(), strict=True):
            dst.data.copy_(src[i : i + 1])
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        real, model = batches(cfg, t, g)
        penalty = cfg.model_batch_size if cfg.use_model else cfg.real_batch_size
        noise = UpdateNoise.draw(t, cfg.batch_size, penalty, ACT, 10, 10, "cpu", g)
        learners.update(real, model, meta.policy, bc, noise=noise)
        for i, single in enumerate(singles):
            single.update(
                take(real, i), take(model, i), meta.policy, bc_single[i].policy,
                noise=UpdateNoise(*(x[i : i + 1] for x in noise)),
            )
    batched_state = learners.state_dict()
    moved = 0.0
    for i, single in enumerate(singles):
        for name, value in single.state_dict().items():
            expected = slot(batched_state, i, t)[name]
            assert torch.allclose(value, expected, atol=1e-5, rtol=1e-4), (i, name)
        moved += (single.actor.trunk.net[0].weight - slot(batched_state, (i + 1) % t, t)[
            "actor.trunk.net.0.weight"]).abs().sum().item()
    assert moved > 0  # slots really differ (the test is not comparing copies of one task)


def test_update_uses_each_states_own_sampled_actions_in_the_cql_gap():
    """The reported Q gap equals a per-state reference: a state's logsumexp runs over ITS
    K = 10 uniform + 10 policy actions (catches a wrong reshape / reduction axis)."""
    cfg = small_config()
    learners, meta, bc = setup(cfg)
    reference = copy.deepcopy(learners)
    g = torch.Generator().manual_seed(3)
    real, model = batches(cfg, 3, g)
    noise = UpdateNoise.draw(3, cfg.batch_size, cfg.model_batch_size, ACT, 10, 10, "cpu", g)
    metrics = learners.update(real, model, meta.policy, bc, noise=noise)
    with torch.no_grad():
        mean, log_std = reference.actor(model.observations)
        lse = []
        for s in range(cfg.model_batch_size):
            pol, pol_lp = tanh_gaussian_rsample(
                mean[:, s : s + 1], log_std[:, s : s + 1], noise.cql_policy[:, s]
            )
            actions = torch.cat([noise.cql_uniform[:, s], pol], dim=1)  # (T, 20, act)
            log_density = torch.cat([torch.full((3, 10), -ACT * math.log(2.0)), pol_lp], dim=1)
            obs = model.observations[:, s : s + 1].expand(-1, 20, -1)
            q = twin_q_values(reference.critic, obs, actions)  # (T, 2, 20)
            # CQL/COMBO convention: logsumexp over the 20 samples, no log K subtracted
            lse.append(torch.log(torch.exp(q - log_density[:, None]).sum(-1)))
        data_q = twin_q_values(reference.critic, real.observations, real.actions).mean(-1)
        gap = (torch.stack(lse, -1).mean(-1) - data_q).mean(1)
    assert torch.allclose(metrics["q_gap"], gap, atol=1e-5)


def test_target_networks_move_by_exactly_tau():
    cfg = small_config(polyak_tau=0.1)
    learners, meta, bc = setup(cfg)
    with torch.no_grad():
        for p in learners.critic.parameters():
            p.add_(torch.randn_like(p))  # online != target
    before_target = [p.clone() for p in learners.target_critic.parameters()]
    online = [p.clone() for p in learners.critic.parameters()]
    learners.update_targets()
    targets = learners.target_critic.parameters()
    for tgt, old, on in zip(targets, before_target, online, strict=True):
        assert torch.allclose(tgt, old + 0.1 * (on - old), atol=1e-6)
        assert not torch.allclose(tgt, old)
    # inside update(): targets move by tau towards the critics AFTER the critic step
    g = torch.Generator().manual_seed(0)
    before_target = [p.clone() for p in learners.target_critic.parameters()]
    learners.update(*batches(cfg, 3, g), meta.policy, bc)
    for tgt, old, on in zip(
        learners.target_critic.parameters(), before_target, learners.critic.parameters(),
        strict=True,
    ):
        assert torch.allclose(tgt, old + 0.1 * (on - old), atol=1e-6)
    assert not any(p.requires_grad for p in learners.target_critic.parameters())


@pytest.mark.parametrize("algo", sorted(ALGO_SETTINGS))
def test_every_ablation_runs_an_update(algo):
    cfg = small_config(algo)
    learners, meta, bc = setup(cfg)
    learners.init_from_meta(meta.policy, meta.q)
    g = torch.Generator().manual_seed(0)
    critic_before = [p.clone() for p in learners.critic.parameters()]
    actor_before = [p.clone() for p in learners.actor.parameters()]
    for _ in range(2):
        metrics = learners.update(*batches(cfg, 3, g), meta.policy, bc)
    for name, value in metrics.items():
        assert value.shape == (3,), name
        assert torch.isfinite(value).all(), name
        assert not value.requires_grad, name
    def changed(before, module):
        return any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))

    assert changed(critic_before, learners.critic) and changed(actor_before, learners.actor)
    if algo == "combo":
        assert torch.equal(metrics["lam"], torch.zeros(3))
    else:
        assert (metrics["lam"] >= 0).all()
    expected_alpha = {"beha-only": 1.0, "combo3": 0.0}.get(algo, 0.4)
    assert torch.allclose(metrics["alpha"], torch.full((3,), expected_alpha))


def test_the_cql_setting_needs_no_model_batch_and_the_model_setting_does():
    cfg = small_config("merpo")
    learners, meta, bc = setup(cfg)
    real, _ = batches(cfg, 3, torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="model batch"):
        learners.update(real, None, meta.policy, bc)
    with pytest.raises(ValueError, match="bc_policy"):
        learners.update(*batches(cfg, 3, torch.Generator()), meta.policy, None)
    with pytest.raises(ValueError, match="meta_policy"):
        learners.update(*batches(cfg, 3, torch.Generator()), None, bc)
    with pytest.raises(ValueError, match="unknown algo"):
        RACConfig.for_algo("combo4")
    with pytest.raises(ValueError, match="real_data_ratio"):
        RACConfig(use_model=False)


def _update_once(cfg: RACConfig, prepare=None) -> tuple[TaskLearners, dict]:
    learners, meta, bc = setup(cfg)
    if prepare is not None:
        prepare(learners)
    metrics = learners.update(*batches(cfg, 3, torch.Generator().manual_seed(0)), meta.policy, bc)
    return learners, metrics


def test_beta_rises_when_the_q_gap_exceeds_tau_and_falls_otherwise():
    up, _ = _update_once(small_config(q_difference_threshold=-1e3))
    down, _ = _update_once(small_config(q_difference_threshold=1e3))
    assert (up.log_beta > 0).all() and (down.log_beta < 0).all()
    fixed, _ = _update_once(small_config(auto_tune_beta=False, log_beta_initial=0.3))
    assert torch.equal(fixed.log_beta.detach(), torch.full((3,), 0.3))


def test_lambda_rises_above_the_target_divergence_and_falls_below_and_stays_nonnegative():
    up, m_up = _update_once(small_config(target_divergence=-1e3, lambda_initial=5.0))
    down, _ = _update_once(small_config(target_divergence=1e3, lambda_initial=5.0))
    assert (up.lam > 5.0).all() and (down.lam < 5.0).all()
    assert torch.allclose(m_up["lam"], up.lam.detach())
    floor, _ = _update_once(small_config(target_divergence=1e3, lambda_initial=0.3))
    assert torch.equal(floor.lam.detach(), torch.zeros(3))  # projected onto lam >= 0


def test_entropy_temperature_rises_for_a_near_deterministic_policy():
    def sharpen(learners):  # log_std bias -> its minimum: entropy far below -act_dim
        with torch.no_grad():
            last = learners.actor.trunk.net[-1]
            last.weight[..., ACT:].zero_()
            last.bias[..., ACT:].fill_(-5.0)

    low, m_low = _update_once(small_config(), sharpen)
    high, m_high = _update_once(small_config())
    assert (m_low["entropy"] < -ACT).all() and (m_high["entropy"] > -ACT).all()
    assert (low.log_alpha_ent > 0).all() and (high.log_alpha_ent < 0).all()


def test_adaptive_alpha_step_sign_and_clip():
    alpha = torch.tensor([0.4, 0.4, 0.45, 0.12])
    d_beta_prime = torch.tensor([2.0, 0.0, 1e4, 0.0])
    d_meta = torch.tensor([1.0, 1.0, 0.0, 1e4])
    new = adaptive_alpha_step(alpha, d_beta_prime, d_meta, lr=1e-2)
    # closer to the meta-policy (D_beta' > D_meta): alpha up; closer to behavior: down; clipped
    assert new.tolist() == pytest.approx([0.41, 0.39, 0.5, 0.1])


def test_adapt_alpha_only_in_merpo_adp_and_it_is_remembered_per_task():
    cfg = small_config("merpo-adp", alpha_adp_lr=1e-2)
    learners, _, _ = setup(cfg)
    learners.adapt_alpha(torch.tensor([3.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 1.0]))
    assert learners.alpha.tolist() == pytest.approx([0.42, 0.39, 0.4])
    assert learners.duals()[3].tolist() == pytest.approx([0.42, 0.39, 0.4])
    fixed, _, _ = setup(small_config("merpo"))
    fixed.adapt_alpha(torch.tensor([3.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 1.0]))
    assert torch.allclose(fixed.alpha, torch.full((3,), 0.4))


def test_init_from_meta_broadcasts_networks_sets_duals_and_resets_adam():
    cfg = small_config(target_divergence=-1e3)
    learners, meta, bc = setup(cfg, t=2)
    g = torch.Generator().manual_seed(0)
    learners.update(*batches(cfg, 2, g), meta.policy, bc)
    assert (learners.lam > cfg.lambda_initial).all()
    assert torch.equal(learners.critic_optimizer.steps, torch.ones(2))
    duals = torch.tensor([0.1, 0.2, 7.0, 0.4])
    learners.init_from_meta(meta.policy, meta.q, duals)
    obs = torch.randn(2, 4, OBS)
    meta_mean, meta_log_std = meta.policy(obs)
    mean, log_std = learners.actor(obs)
    assert torch.allclose(mean, meta_mean, atol=1e-6) and torch.allclose(log_std, meta_log_std)
    act = torch.rand(2, 4, ACT)
    q = twin_q_values(learners.critic, obs, act)
    q_meta = meta.q(torch.cat([obs, act], -1).reshape(1, 1, 8, OBS + ACT).expand(1, 2, 8, -1))
    assert torch.allclose(q, q_meta.reshape(2, 8).reshape(2, 2, 4).transpose(0, 1), atol=1e-6)
    assert torch.allclose(learners.duals(), duals[:, None].expand(-1, 2))
    assert torch.equal(learners.critic_optimizer.steps, torch.zeros(2))  # fresh Adam
    assert all(not m.any() for m in learners.actor_optimizer.exp_avg)
    learners.init_from_meta(None, None)  # default: the config's initial duals
    assert torch.allclose(learners.duals()[:, 0], TaskLearners.initial_duals(cfg))


def test_act_shapes_and_range():
    learners, _, _ = setup(small_config())
    obs = torch.randn(3, 7, OBS)
    for deterministic in (True, False):
        a = learners.act(obs, deterministic=deterministic)
        assert a.shape == (3, 7, ACT) and a.abs().max() <= 1.0
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(learners.act(obs, generator=g1), learners.act(obs, generator=g2))


def test_training_state_round_trip_resumes_identically():
    cfg = small_config()
    learners, meta, bc = setup(cfg)
    data = [batches(cfg, 3, torch.Generator().manual_seed(i)) for i in range(3)]
    learners.update(*data[0], meta.policy, bc)
    buffer = io.BytesIO()  # through a file, as a checkpoint would go
    torch.save(learners.training_state(), buffer)
    buffer.seek(0)
    resumed, _, _ = setup(cfg, seed=123)
    resumed.load_training_state(torch.load(buffer, weights_only=True))
    for real, model in data[1:]:
        learners.update(real, model, meta.policy, bc)
        resumed.update(real, model, meta.policy, bc)
    expected = learners.state_dict()
    for name, value in resumed.state_dict().items():
        assert torch.equal(value, expected[name]), name


def _bandit_batch(n: int, g: torch.Generator, t: int = 2) -> TransitionBatch:
    """One-step offline bandit: dataset actions in two clusters, -0.6 (reward 0) and 0.0
    (reward 1), nothing above 0.1. A critic without the conservative penalty extrapolates
    the upward trend and its actor leaves the data (a > 0.3)."""
    obs = torch.rand(t, n, 1, generator=g) * 2 - 1
    good = torch.rand(t, n, generator=g) < 0.5
    act = (torch.where(good, 0.0, -0.6) + 0.05 * torch.randn(t, n, generator=g))[..., None]
    return TransitionBatch(obs, act, good.float(), obs, torch.ones(t, n))


def _train_bandit(log_beta: float, steps: int = 500) -> torch.Tensor:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    cfg = RACConfig.for_algo(
        "cql", use_meta_regularizer=False, lambda_initial=0.0, auto_tune_lambda=False,
        hidden=32, hidden_layers=2, batch_size=64, critic_lr=3e-3, actor_lr=3e-3,
        entropy_lr=3e-3, auto_tune_beta=False, log_beta_initial=log_beta,
    )
    learners = TaskLearners(cfg, 1, 1, num_slots=2)
    for _ in range(steps):
        learners.update(_bandit_batch(cfg.batch_size, g))
    obs = torch.linspace(-1, 1, 11).reshape(1, 11, 1).expand(2, -1, -1)
    return learners.act(obs, deterministic=True).squeeze(-1)


def test_conservative_critic_and_actor_pick_the_datasets_good_action():
    conservative = _train_bandit(log_beta=math.log(0.3))
    unpenalized = _train_bandit(log_beta=-30.0)  # beta ~ 0: plain SAC on offline data
    # both tasks, every state: the good in-distribution action (0.0), not the bad cluster
    # (-0.6) and not the extrapolated region the unpenalized critic prefers
    assert conservative.abs().max() < 0.1, conservative
    assert unpenalized.mean() > 0.3, unpenalized


def test_the_update_calls_eq1_and_eq9_of_rac_losses(monkeypatch):
    """Each equation has one home that the hot path calls: Eq. 1 (``critic_loss`` on
    ``conservative_critic_terms``'s terms) and Eq. 9 (``regularized_actor_terms``)."""
    from merpo_agent import rac_losses

    calls: list[str] = []
    for name in ("critic_loss", "bellman_error", "conservative_critic_terms",
                 "regularized_actor_terms"):
        original = getattr(rac_losses, name)

        def spy(*args, _name=name, _original=original):
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(rac_losses, name, spy)
    cfg = small_config("merpo")
    learners, meta, bc = setup(cfg)
    real, model = batches(cfg, 3, torch.Generator().manual_seed(0))
    metrics = learners.update(real, model, meta.policy, bc)
    assert {"critic_loss", "conservative_critic_terms", "regularized_actor_terms"} <= set(calls)
    assert torch.isfinite(metrics["critic_loss"]).all()
