"""Behavior cloning pi_hat_beta, stacked over tasks: merpo_agent.behavior_cloning."""

from __future__ import annotations

import torch
from merpo_agent.behavior_cloning import BehaviorCloning
from merpo_agent.transitions import TransitionBatch

TARGETS = torch.tensor([-0.6, 0.0, 0.5])  # each task's behavior: a = TARGETS[t] + 0.3 s + noise


def sampler(g: torch.Generator):
    def sample(n: int) -> TransitionBatch:
        obs = torch.rand(3, n, 1, generator=g) * 2 - 1
        act = (TARGETS[:, None, None] + 0.3 * obs + 0.05 * torch.randn(3, n, 1, generator=g))
        act = act.clamp(-1, 1)
        zeros = torch.zeros(3, n)
        return TransitionBatch(obs, act, zeros, obs, zeros)

    return sample


def test_fit_recovers_each_tasks_behavior_and_select_picks_tasks():
    torch.manual_seed(0)
    bc = BehaviorCloning(3, 1, 1, hidden=32, hidden_layers=2)
    g = torch.Generator().manual_seed(0)
    before = bc.negative_log_likelihood(sampler(g)(256)).detach()
    nll = bc.fit(sampler(g), steps=300, batch_size=128, lr=3e-3)
    assert nll.shape == (3,) and (nll < before - 1.0).all()
    obs = torch.tensor([-0.5, 0.0, 0.5]).reshape(1, 3, 1).expand(3, 3, 1)
    action = bc.policy.deterministic(obs).squeeze(-1)
    expected = TARGETS[:, None] + 0.3 * obs.squeeze(-1)
    assert (action - expected).abs().max() < 0.1, action
    # a fitted task's own data is likelier under its own model than under another task's
    data = sampler(g)(256)
    own = bc.log_prob(data.observations, data.actions).mean(-1)
    swapped = bc.log_prob(data.observations, data.actions.roll(1, dims=0)).mean(-1)
    assert (own > swapped + 1.0).all()
    chosen = bc.select(torch.tensor([2, 0]))
    assert not any(p.requires_grad for p in chosen.parameters())
    sub = chosen.deterministic(obs[[2, 0]]).squeeze(-1)
    assert torch.allclose(sub, action[[2, 0]], atol=1e-6)


def test_fit_of_stacked_tasks_is_each_tasks_own_fit():
    # Same initial parameters, task 0's data only: task 0's result must not depend on
    # what the other tasks saw (the loss is a sum over tasks).
    torch.manual_seed(0)
    stacked = BehaviorCloning(3, 1, 1, hidden=8, hidden_layers=1)
    alone = BehaviorCloning(1, 1, 1, hidden=8, hidden_layers=1)
    for dst, src in zip(alone.parameters(), stacked.parameters(), strict=True):
        dst.data.copy_(src[:1])
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    stacked.fit(sampler(g1), steps=20, batch_size=32)
    sample = sampler(g2)
    alone.fit(lambda n: TransitionBatch(*(x[:1] for x in sample(n))), steps=20, batch_size=32)
    for a, s in zip(alone.parameters(), stacked.parameters(), strict=True):
        assert torch.allclose(a, s[:1], atol=1e-5)
