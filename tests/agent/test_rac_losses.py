"""RAC's pure losses (merpo_agent.rac_losses) on hand-made tensors: shapes, values, signs."""

from __future__ import annotations

import math

import pytest
import torch
from merpo_agent import rac_losses as L
from merpo_agent.action_scaling import from_unit_actions, to_unit_actions
from merpo_data.networks import tanh_gaussian_log_prob, tanh_gaussian_rsample


def test_diagonal_gaussian_kl_matches_monte_carlo_of_tanh_policies():
    g = torch.Generator().manual_seed(0)
    mean_p, mean_q = torch.randn(3, 4, 2, generator=g), torch.randn(3, 4, 2, generator=g)
    log_std_p = 0.5 * torch.randn(3, 4, 2, generator=g)
    log_std_q = 0.5 * torch.randn(3, 4, 2, generator=g)
    closed = L.diagonal_gaussian_kl(mean_p, log_std_p, mean_q, log_std_q)
    assert closed.shape == (3, 4)
    # Monte Carlo of E_{a~p}[log p(a) - log q(a)] over the tanh-SQUASHED actions: the
    # Jacobians cancel, so it must match the closed form of the pre-tanh Gaussians.
    n = 200_000
    noise = torch.randn(n, 3, 4, 2, generator=g, dtype=torch.float64)
    action, log_p = tanh_gaussian_rsample(mean_p.double(), log_std_p.double(), noise)
    pre_tanh = mean_p.double() + log_std_p.double().exp() * noise
    # log q at the same pre-tanh point (the tanh log-det is the same for p and q).
    log_q_gauss = (
        -0.5 * ((pre_tanh - mean_q.double()) / log_std_q.double().exp()) ** 2
        - log_std_q.double() - 0.5 * math.log(2 * math.pi)
    ).sum(-1)
    log_p_gauss = (
        -0.5 * noise**2 - log_std_p.double() - 0.5 * math.log(2 * math.pi)
    ).sum(-1)
    mc = (log_p_gauss - log_q_gauss).mean(0)
    assert torch.allclose(closed.double(), mc, atol=0.05, rtol=0.02)
    # and the squashed log-density of the sample is consistent with p's own formula
    assert torch.allclose(
        tanh_gaussian_log_prob(mean_p.double(), log_std_p.double(), action[:5]),
        log_p[:5], atol=1e-3,
    )


def test_kl_is_zero_for_equal_policies_and_positive_otherwise():
    mean, log_std = torch.randn(2, 5, 3), torch.randn(2, 5, 3) * 0.3
    assert torch.allclose(L.diagonal_gaussian_kl(mean, log_std, mean, log_std), torch.zeros(2, 5))
    assert (L.diagonal_gaussian_kl(mean, log_std, mean + 0.1, log_std) > 0).all()
    # hand value: 1-d, p = N(1, 1), q = N(0, 2^2): log 2 + (1 + 1) / 8 - 1/2
    kl = L.diagonal_gaussian_kl(
        torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[0.0]]),
        torch.tensor([[math.log(2.0)]]),
    )
    assert kl.item() == pytest.approx(math.log(2.0) + 2.0 / 8.0 - 0.5, abs=1e-6)


def test_log_prob_of_dataset_actions_at_the_bounds_is_finite():
    mean, log_std = torch.zeros(1, 4, 2), torch.zeros(1, 4, 2)
    actions = torch.tensor([[[1.0, -1.0], [1.0, 1.0], [-1.0, -1.0], [0.999999, -0.9999999]]])
    log_prob = tanh_gaussian_log_prob(mean, log_std, actions)
    assert torch.isfinite(log_prob).all()
    # the gradient through the behavior term is finite as well
    mean = mean.requires_grad_()
    L.behavior_divergence(tanh_gaussian_log_prob(mean, log_std, actions)).sum().backward()
    assert torch.isfinite(mean.grad).all()


def test_unit_action_scaling_round_trip_and_bounds():
    low, high = torch.tensor([-0.1, -2.0]), torch.tensor([0.1, 1.0])
    env = torch.tensor([[-0.1, -2.0], [0.1, 1.0], [0.0, -0.5]])
    unit = to_unit_actions(env, low, high)
    assert torch.allclose(unit, torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]]))
    assert torch.allclose(from_unit_actions(unit, low, high), env)
    assert to_unit_actions(torch.tensor([[0.1000001, 1.0]]), low, high).max() <= 1.0


def test_soft_bellman_target_hand_values():
    rewards = torch.tensor([[1.0, 2.0]])
    terms = torch.tensor([[0.0, 1.0]])
    next_q = torch.tensor([[[3.0, 5.0], [4.0, 1.0]]])  # (T=1, 2 critics, N=2): min = [3, 1]
    next_log_prob = torch.tensor([[-1.0, -2.0]])
    temp = torch.tensor([0.5])
    target = L.soft_bellman_target(rewards, terms, next_q, next_log_prob, temp, discount=0.9)
    assert torch.allclose(target, torch.tensor([[1.0 + 0.9 * (3.0 + 0.5), 2.0]]))


def test_importance_sampled_logsumexp_runs_over_the_sampled_actions_axis():
    g = torch.Generator().manual_seed(1)
    t, n, k = 2, 3, 5
    q = torch.randn(t, 2, n, k, generator=g)
    log_density = torch.randn(t, 1, n, k, generator=g)
    out = L.importance_sampled_logsumexp(q, log_density)
    assert out.shape == (t, 2, n)
    # reference: loop over (task, critic, state), reduce over that state's own K actions
    for i in range(t):
        for c in range(2):
            for s in range(n):
                w = q[i, c, s] - log_density[i, 0, s]
                ref = torch.log(torch.exp(w).sum())  # CQL/COMBO convention: no log K
                assert out[i, c, s].item() == pytest.approx(ref.item(), abs=1e-5)
    # the known trap: reducing over the states axis instead gives other numbers
    wrong = torch.logsumexp(q - log_density, dim=-2)
    assert not torch.allclose(out[..., : min(n, k)], wrong[..., : min(n, k)], atol=1e-3)


def test_logsumexp_follows_cql_convention_for_a_constant_q_under_a_uniform_proposal():
    # Q = c everywhere on [-1, 1]^d: log integral exp(Q) da = c + d log 2; CQL's and COMBO's
    # code (and so Table 2's threshold tau) keep the + log K of the K = 20 samples.
    d, c = 3, 1.7
    q = torch.full((1, 2, 4, 20), c)
    log_density = torch.full((1, 1, 4, 20), -d * math.log(2.0))
    out = L.importance_sampled_logsumexp(q, log_density)
    assert torch.allclose(out, torch.full((1, 2, 4), c + d * math.log(2.0) + math.log(20)))


def test_conservative_gap_and_critic_loss_hand_values():
    lse = torch.tensor([[[2.0, 4.0], [1.0, 1.0]]])  # (T=1, 2, N_pen=2)
    data_q = torch.tensor([[[1.0, 0.0, 2.0], [0.0, 0.0, 3.0]]])  # (T=1, 2, N_real=3)
    gap = L.conservative_gap(lse, data_q)
    assert torch.allclose(gap, torch.tensor([[3.0 - 1.0, 1.0 - 1.0]]))
    q_pred = torch.tensor([[[1.0, 3.0], [2.0, 2.0]]])  # (T=1, 2, B=2)
    target = torch.tensor([[2.0, 2.0]])
    beta = torch.tensor([0.5])
    loss = L.critic_loss(L.bellman_error(q_pred, target), gap, beta)
    # critic 1: 0.5 * mean(1, 1) + 0.5 * 2 = 1.5; critic 2: 0 + 0.5 * 0 = 0
    assert loss.shape == (1,)
    assert loss.item() == pytest.approx(1.5)


def test_critic_loss_is_per_task():
    q_pred = torch.zeros(3, 2, 4)
    target = torch.tensor([[1.0] * 4, [0.0] * 4, [2.0] * 4])
    loss = L.critic_loss(L.bellman_error(q_pred, target), torch.zeros(3, 2), torch.ones(3))
    assert torch.allclose(loss, torch.tensor([1.0, 0.0, 4.0]))  # 2 critics * 0.5 * err^2


def test_actor_loss_hand_values():
    log_prob = torch.tensor([[-1.0, -3.0]])
    q_min = torch.tensor([[2.0, 4.0]])
    loss = L.actor_loss(
        log_prob, q_min, entropy_temperature=torch.tensor([0.5]), d_beta=torch.tensor([2.0]),
        d_meta=torch.tensor([4.0]), lam=torch.tensor([10.0]), alpha=torch.tensor([0.25]),
    )
    sac = (0.5 * -1.0 - 2.0 + 0.5 * -3.0 - 4.0) / 2
    assert loss.item() == pytest.approx(sac + 10 * 0.25 * 2.0 + 10 * 0.75 * 4.0)


def test_behavior_divergence_estimate_is_zero_at_the_behavior_policy():
    lp = torch.randn(2, 7)
    assert torch.allclose(L.behavior_divergence_estimate(lp, lp), torch.zeros(2))
    assert torch.allclose(L.behavior_divergence(lp), -lp.mean(-1))


def _grad(loss_fn, param: torch.Tensor) -> torch.Tensor:
    param = param.clone().requires_grad_()
    loss_fn(param).backward()
    return param.grad


def test_beta_dual_gradient_sign():
    gap = torch.tensor([[12.0, 14.0], [3.0, 5.0]])  # task 0 above tau = 10, task 1 below
    grad = _grad(lambda lb: L.beta_dual_loss(lb, gap, threshold=10.0), torch.zeros(2))
    # descent raises log beta where the gap exceeds tau, lowers it where it does not
    assert grad[0] < 0 < grad[1]
    assert grad.tolist() == pytest.approx([-(13.0 - 10.0), -(4.0 - 10.0)])


def test_lambda_dual_gradient_sign():
    alpha = torch.tensor([0.4, 0.4, 1.0])
    d_beta_prime = torch.tensor([1.0, 0.0, 0.01])
    d_meta = torch.tensor([1.0, 0.0, 5.0])
    constraint = L.lambda_constraint(d_beta_prime, d_meta, alpha, target=0.05)
    assert constraint.tolist() == pytest.approx([0.95, -0.05, 0.01 - 0.05])
    grad = _grad(lambda lam: L.lambda_dual_loss(lam, constraint), torch.ones(3))
    assert grad[0] < 0  # divergence above target: lambda goes up
    assert grad[1] > 0 and grad[2] > 0  # below target (alpha = 1 ignores D_meta): down


def test_entropy_temperature_gradient_sign():
    target_entropy = -2.0
    low_entropy = torch.full((1, 8), 5.0)  # log pi = 5: entropy -5 < -2
    high_entropy = torch.full((1, 8), -1.0)  # entropy 1 > -2
    def grad(log_prob):
        loss = lambda t: L.entropy_temperature_loss(t, log_prob, target_entropy)  # noqa: E731
        return _grad(loss, torch.zeros(1))


    g_low, g_high = grad(low_entropy), grad(high_entropy)
    assert g_low.item() < 0 < g_high.item()  # temperature up when entropy is too low
