"""Meta-policy (Eq. 10) and meta-Q update (App. A.2.2): merpo_agent.meta_policy."""

from __future__ import annotations

import pytest
import torch
from merpo_agent.meta_policy import MetaLearner, MetaPolicy, meta_policy_loss, meta_q_update_
from merpo_agent.rac_config import RACConfig
from merpo_agent.rac_losses import diagonal_gaussian_kl
from merpo_agent.task_learners import TaskLearners
from merpo_data.networks import StackedMLP, StackedTanhGaussianPolicy

OBS, ACT = 3, 2


CFG = RACConfig(hidden=16, hidden_layers=2, outer_actor_lr=1e-2, meta_q_lr=0.25)


def test_meta_policy_applies_one_network_to_every_task():
    torch.manual_seed(0)
    pi_c = MetaPolicy(OBS, ACT, 16, 2)
    obs = torch.randn(4, 5, OBS)
    mean, log_std = pi_c(obs)
    assert mean.shape == log_std.shape == (4, 5, ACT)
    for t in range(4):  # the same network on each task's states
        m, s = pi_c(obs[t])
        assert torch.allclose(mean[t], m, atol=1e-6) and torch.allclose(log_std[t], s, atol=1e-6)
    assert pi_c.deterministic(obs).shape == (4, 5, ACT)


def test_meta_q_update_matches_its_equation():
    torch.manual_seed(0)
    meta_q = StackedMLP((1, 2), OBS + ACT, 1, 8, 2)
    task_q = StackedMLP((3, 2), OBS + ACT, 1, 8, 2)
    before = [p.clone() for p in meta_q.parameters()]
    meta_q_update_(meta_q, task_q, xi_q=0.25)
    for new, old, task in zip(meta_q.parameters(), before, task_q.parameters(), strict=True):
        mean_n = sum(task[n] for n in range(3)) / 3  # the average over the task batch
        assert torch.allclose(new[0], old[0] - 0.25 * (old[0] - mean_n), atol=1e-6)


def test_meta_policy_loss_matches_eq10():
    torch.manual_seed(0)
    pi_c = MetaPolicy(OBS, ACT, 16, 2)
    states = torch.randn(3, 6, OBS)
    task_mean, task_log_std = torch.randn(3, 6, ACT), 0.3 * torch.randn(3, 6, ACT)
    lam, alpha = torch.tensor([5.0, 2.0, 0.0]), torch.tensor([0.4, 1.0, 0.4])
    loss = meta_policy_loss(pi_c, task_mean, task_log_std, states, lam, alpha)
    meta_mean, meta_log_std = pi_c(states)
    kl = diagonal_gaussian_kl(task_mean, task_log_std, meta_mean, meta_log_std).mean(-1)
    expected = (5.0 * 0.6 * kl[0] + 2.0 * 0.0 * kl[1] + 0.0 * kl[2]) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_update_policy_is_one_adam_step_that_moves_pi_c_towards_the_task_policies():
    torch.manual_seed(0)
    meta = MetaLearner(CFG, OBS, ACT)
    task_actor = StackedTanhGaussianPolicy((3,), OBS, ACT, 16, 2)
    states = torch.randn(3, 64, OBS)
    lam, alpha = torch.full((3,), 5.0), torch.full((3,), 0.4)
    before = [p.clone() for p in meta.policy.parameters()]
    task_before = [p.clone() for p in task_actor.parameters()]
    first = meta.update_policy(task_actor, states, lam, alpha)
    # exactly one Adam step: first-step Adam moves every parameter with a gradient by ~lr
    moved = zip(meta.policy.parameters(), before, strict=True)
    step = torch.cat([(p - b).flatten() for p, b in moved])
    assert step.abs().max().item() == pytest.approx(CFG.outer_actor_lr, rel=1e-2)
    assert all(torch.equal(a, b) for a, b in zip(task_actor.parameters(), task_before, strict=True))
    for _ in range(20):
        last = meta.update_policy(task_actor, states, lam, alpha)
    assert last < first
    # no weight (lam (1 - alpha) = 0, e.g. alpha = 1 or COMBO's lam = 0): pi_c does not move
    fresh = MetaLearner(CFG, OBS, ACT)
    frozen = [p.clone() for p in fresh.policy.parameters()]
    fresh.update_policy(task_actor, states, lam, torch.ones(3))
    assert all(torch.equal(a, b) for a, b in zip(fresh.policy.parameters(), frozen, strict=True))


def test_meta_networks_initialise_task_learners_and_meta_q_averages_them_back():
    torch.manual_seed(0)
    meta = MetaLearner(CFG, OBS, ACT)
    learners = TaskLearners(CFG, OBS, ACT, num_slots=2)
    learners.init_from_meta(meta.policy, meta.q)
    for dst, src in zip(learners.critic.parameters(), meta.q.parameters(), strict=True):
        assert torch.equal(dst, src.expand_as(dst))
    # tasks unchanged since the copy: the meta-Q step is a fixed point
    before = [p.clone() for p in meta.q.parameters()]
    meta.update_q(learners.critic)
    assert all(torch.allclose(a, b) for a, b in zip(meta.q.parameters(), before, strict=True))
    assert not any(p.requires_grad for p in meta.q.parameters())
