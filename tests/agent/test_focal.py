"""FOCAL baseline (merpo_agent.baselines.focal): encoder, metric loss, BRAC losses, training."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from agent_helpers import wind_context
from merpo_agent.baselines import BASELINES
from merpo_agent.baselines.focal import (
    FocalAgent,
    FocalConfig,
    FocalLearner,
    behavior_distribution,
    distance_metric_loss,
    evaluate_focal,
    gaussian_kl,
    latent_separation,
    load_focal,
    save_focal,
)
from merpo_agent.transitions import TransitionBatch

ENV = "merpo/PointRobotWind-v0"


def make_agent(seed: int = 0, **overrides) -> FocalAgent:
    torch.manual_seed(seed)
    config = FocalConfig.smoke(ENV, **overrides)
    return FocalAgent(config, 2, 2, torch.full((2,), -0.1), torch.full((2,), 0.1))


# ---- encoder ----------------------------------------------------------------------------


def test_encoder_shape_and_permutation_invariance():
    agent = make_agent()
    g = torch.Generator().manual_seed(0)
    context = wind_context(torch.tensor([[0.05, 0.0], [0.0, 0.05], [-0.05, 0.0]]), 10, g)
    z = agent.infer_latent(context)
    assert z.shape == (3, agent.config.latent_dim)

    # Shuffling the transitions inside each context leaves z unchanged...
    order = torch.randperm(10, generator=g)
    shuffled = TransitionBatch(*(x[:, order] for x in context))
    torch.testing.assert_close(agent.infer_latent(shuffled), z)
    # ...permuting the tasks permutes the latents, and different data gives different z.
    tasks = torch.tensor([2, 0, 1])
    torch.testing.assert_close(
        agent.infer_latent(TransitionBatch(*(x[tasks] for x in context))), z[tasks]
    )
    assert (z[0] - z[1]).abs().max() > 1e-4

    with pytest.raises(ValueError, match="task axis"):
        agent.infer_latent(TransitionBatch(*(x[0] for x in context)))


def test_act_shapes_and_range():
    agent = make_agent()
    obs = torch.randn(3, 7, 2)
    z = torch.randn(3, agent.config.latent_dim)
    action = agent.act(obs, z)
    assert action.shape == (3, 7, 2)
    assert action.abs().max() <= 1.0
    torch.testing.assert_close(agent.act(obs, z), action)  # deterministic is deterministic
    g = torch.Generator().manual_seed(0)
    stochastic = agent.act(obs, z, deterministic=False, generator=g)
    assert stochastic.shape == (3, 7, 2) and not torch.allclose(stochastic, action)
    with pytest.raises(ValueError, match="obs"):
        agent.act(obs, z[:2])


# ---- losses -----------------------------------------------------------------------------


def test_metric_loss_value_on_a_hand_computed_case():
    # Two tasks on a line: draws agree within a task (positive 0), cross distance 1 or 2.
    z_a = torch.tensor([[0.0], [1.0]])
    z_b = torch.tensor([[0.0], [2.0]])
    loss, same, cross = distance_metric_loss(z_a, z_b, beta=1.0, power=2.0, eps=0.1)
    # same-task pairs: (0,0) twice -> 0 and (1,2) twice -> 1: mean 0.5.
    # cross pairs (ordered): 0-1, 0-2, 0-1 (z_b[0] vs z_a[1]), 0-2: sq dists 1, 4, 1, 4 (x2).
    expected_negative = (2 / 1.1 + 2 / 4.1) / 4
    torch.testing.assert_close(same, torch.tensor(0.5))
    torch.testing.assert_close(cross, torch.tensor(2.5))
    torch.testing.assert_close(loss, torch.tensor(0.5 + expected_negative))


def test_metric_loss_gradient_pulls_same_task_together_and_pushes_tasks_apart():
    """Gradient steps on free latents: within-task distance falls, cross-task distance rises."""
    g = torch.Generator().manual_seed(0)
    centers = 0.05 * torch.randn(4, 5, generator=g)
    z_a = (centers + 0.5 * torch.randn(4, 5, generator=g)).requires_grad_()
    z_b = (centers + 0.5 * torch.randn(4, 5, generator=g)).requires_grad_()
    with torch.no_grad():
        _, same_before, cross_before = distance_metric_loss(z_a, z_b)
    optimizer = torch.optim.SGD([z_a, z_b], lr=0.05)
    for _ in range(100):
        loss, _, _ = distance_metric_loss(z_a, z_b)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _, same_after, cross_after = distance_metric_loss(z_a, z_b)
    assert same_after < 0.1 * same_before
    assert cross_after > 1.5 * cross_before


def test_encoder_learns_winds_with_the_metric_loss():
    """The encoder alone, trained with the metric loss on hand-made tasks that differ only in
    their wind (identical state and action distributions), separates the tasks."""
    agent = make_agent(seed=1)
    g = torch.Generator().manual_seed(1)
    winds = torch.tensor([[0.1, 0.0], [0.0, 0.1], [-0.08, -0.06], [0.04, -0.1]])
    optimizer = torch.optim.Adam(agent.encoder.parameters(), lr=3e-3)

    def two_draws() -> tuple[torch.Tensor, torch.Tensor]:
        return (
            agent.infer_latent(wind_context(winds, 64, g)),
            agent.infer_latent(wind_context(winds, 64, g)),
        )

    with torch.no_grad():
        _, same_before, cross_before = distance_metric_loss(*two_draws())
    for _ in range(300):
        loss, _, _ = distance_metric_loss(*two_draws())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        _, same_after, cross_after = distance_metric_loss(*two_draws())
    # At initialization the tasks overlap (within ~ cross); after training the spread within
    # a task is a small fraction of the distance between tasks.
    assert same_before / cross_before > 0.3
    assert same_after / cross_after < 0.02


def test_gaussian_kl_matches_torch_distributions():
    g = torch.Generator().manual_seed(0)
    mean_p, mean_q = torch.randn(4, 5, 3, generator=g), torch.randn(4, 5, 3, generator=g)
    log_std_p, log_std_q = torch.randn(4, 5, 3, generator=g), torch.randn(4, 5, 3, generator=g)
    p = torch.distributions.Normal(mean_p, log_std_p.exp())
    q = torch.distributions.Normal(mean_q, log_std_q.exp())
    expected = torch.distributions.kl_divergence(p, q).sum(-1)
    torch.testing.assert_close(gaussian_kl(mean_p, log_std_p, mean_q, log_std_q), expected)
    torch.testing.assert_close(
        gaussian_kl(mean_p, log_std_p, mean_p, log_std_p), torch.zeros(4, 5), atol=1e-6, rtol=0
    )


def hand_made_learner(num_tasks: int = 4, **overrides) -> FocalLearner:
    agent = make_agent(**overrides)
    return FocalLearner(agent, num_tasks, torch.Generator().manual_seed(0))


def test_behavior_rows_are_gathered_per_task():
    learner = hand_made_learner()
    with torch.no_grad():  # make the tasks' behavior models differ visibly
        for p in learner.behavior.parameters():
            p.add_(torch.randn_like(p))
    tasks = torch.tensor([3, 1])
    obs = torch.randn(2, 6, 2)
    mean, log_std = behavior_distribution(learner.behavior, tasks, obs)
    expected_mean, expected_log_std = learner.behavior.select(tasks)(obs)
    torch.testing.assert_close(mean, expected_mean)
    torch.testing.assert_close(log_std, expected_log_std)


@pytest.mark.parametrize("value_penalty", [False, True])
def test_actor_critic_losses_shapes_and_update(value_penalty):
    learner = hand_made_learner(value_penalty=value_penalty)
    agent = learner.agent
    g = torch.Generator().manual_seed(2)
    winds = torch.tensor([[0.05, 0.0], [0.0, 0.05], [-0.04, -0.03]])
    tasks = torch.tensor([0, 2, 3])
    batch = wind_context(winds, 8, g)
    z = torch.randn(3, 1, agent.config.latent_dim).expand(3, 8, -1)
    obs = agent.normalize_obs(batch.observations)
    act = agent.unit_actions(batch.actions)
    critic_loss, q_mean = learner.critic_loss(
        obs, act, batch.rewards, agent.normalize_obs(batch.next_observations),
        batch.terminations, z, tasks,
    )
    assert critic_loss.shape == () and q_mean.shape == ()
    assert critic_loss.requires_grad
    assert learner.critic(obs, act, z).shape == (2, 3, 8)
    actor_loss, log_prob, divergence = learner.actor_loss(obs, z, tasks)
    assert actor_loss.shape == () and actor_loss.requires_grad
    assert log_prob.shape == (3, 8) and divergence.shape == (3, 8)
    assert (divergence >= 0).all()

    # One full update: every metric is a finite scalar, and the encoder's gradient is the
    # metric loss's alone (z is detached for the actor-critic, as in FOCAL).
    context_a, context_b = wind_context(winds, 8, g), wind_context(winds, 8, g)
    before = copy.deepcopy(agent)
    z_a, z_b = before.infer_latent(context_a), before.infer_latent(context_b)
    distance_metric_loss(z_a, z_b)[0].backward()
    metrics = learner.update(batch, context_a, context_b, tasks)
    for name, value in metrics.items():
        assert value.shape == () and torch.isfinite(value), name
    for mine, expected in zip(
        agent.encoder.parameters(), before.encoder.parameters(), strict=True
    ):
        torch.testing.assert_close(mine.grad, expected.grad)
        assert not torch.equal(mine, expected)


def test_alpha_dual_rises_with_divergence_and_is_capped():
    learner = hand_made_learner(alpha_init=1.0, alpha_max=2.0, alpha_lr=0.5, target_divergence=0.0)
    g = torch.Generator().manual_seed(3)
    winds = torch.tensor([[0.05, 0.0], [0.0, 0.05]])
    tasks = torch.tensor([0, 1])
    for _ in range(5):
        learner.update(
            wind_context(winds, 8, g), wind_context(winds, 8, g), wind_context(winds, 8, g), tasks
        )
    assert float(learner.alpha()) == pytest.approx(2.0)
    assert float(learner.log_alpha.detach()) <= math.log(2.0) + 1e-6


def test_config_checks_and_env_discount():
    assert FocalConfig.for_env(ENV).discount == 0.9
    assert FocalConfig.for_env("merpo/HalfCheetahFwdBack-v0").discount == 0.99
    assert FocalConfig().latent_dim == 5 and FocalConfig().context_size == 64
    with pytest.raises(ValueError, match="latent_dim"):
        FocalConfig(latent_dim=0)
    with pytest.raises(ValueError, match="unknown FocalConfig"):
        FocalConfig.from_dict({"latent": 3})


# ---- end to end on the Point-Robot-Wind fixture datasets --------------------------------


def relabel_wind(batch: TransitionBatch, wind) -> TransitionBatch:
    """The same (s, a) under another wind: s' = s + a + wind, reward recomputed."""
    nxt = batch.observations + batch.actions + torch.as_tensor(wind, dtype=torch.float32)
    reward = -(nxt - torch.tensor([1.0, 0.0])).norm(dim=-1)
    return batch._replace(next_observations=nxt, rewards=reward)


@torch.no_grad()
def counterfactual_separation(agent, sampler, wind_a, wind_b, draws=16, size=32) -> float:
    """Fisher ratio of z for identical (s, a) under two winds: only the dynamics differ,
    so a high ratio means the encoder reads the wind, not the datasets' state coverage."""
    g = torch.Generator().manual_seed(5)
    latents = []
    for _ in range(draws):
        context = sampler.sample(size, generator=g)
        latents.append(
            torch.stack(
                [agent.infer_latent(relabel_wind(context, w)) for w in (wind_a, wind_b)], dim=1
            )
        )
    z = torch.stack(latents)  # (draws, T, 2 winds, L)
    means = z.mean(0)
    spread = (z - means).pow(2).sum(-1).mean(0).mean(-1)  # (T,)
    between = (means[:, 0] - means[:, 1]).pow(2).sum(-1)
    return float((between / spread).mean())


@pytest.mark.slow
def test_focal_trains_end_to_end_on_point_robot(point_robot_store, tmp_path):
    from merpo_data import TaskSampler
    from merpo_envs.point_robot_wind import WINDS

    train = TaskSampler(ENV, [0, 1, 2, 3], "mixed", preset="test")
    test = TaskSampler(ENV, [40, 41], "mixed", preset="test")
    config = FocalConfig.smoke(ENV)
    logs = []
    initial = BASELINES["focal"].train(config, train, 0, "cpu", seed=0)
    agent = BASELINES["focal"].train(config, train, 400, "cpu", seed=0,
                                   log_fn=lambda s, m: logs.append((s, m)))
    assert [s for s, _ in logs] == [0, *range(25, 401, 25)]
    assert all(math.isfinite(v) for _, m in logs for v in m.values())

    # Tasks 1 and 3 have the most different training winds: on identical (s, a) the
    # trained encoder tells them apart several times better than at initialization.
    before = counterfactual_separation(initial, train, WINDS[1], WINDS[3])
    after = counterfactual_separation(agent, train, WINDS[1], WINDS[3])
    assert after > 3 * before, (before, after)
    # And the training tasks' own datasets are further apart (mean over task pairs).
    pairs = ~torch.eye(4, dtype=torch.bool)
    assert (
        latent_separation(agent, train)[pairs].mean()
        > 2 * latent_separation(initial, train)[pairs].mean()
    )

    # Meta-test on the unseen tasks: z from their offline data, the policy in the real env.
    returns = evaluate_focal(agent, test, ENV, episodes=2, seed=0)
    assert set(returns) == {40, 41}
    assert all(math.isfinite(r) for r in returns.values())
    # It clearly beats uniformly random behavior on the unseen tasks (the "random" datasets'
    # mean return, about -25 here; the trained policy gets about -17, the mixed data -16).
    random_behavior = TaskSampler(ENV, [40, 41], "random", preset="test").dataset_returns.mean()
    assert sum(returns.values()) / 2 > float(random_behavior) + 4.0, returns

    # Save / load round trip (weights_only): same latents, same actions.
    path = tmp_path / "focal.pt"
    save_focal(agent, path)
    loaded = load_focal(path)
    context = test.sample(32, generator=torch.Generator().manual_seed(0))
    z = agent.infer_latent(context)
    torch.testing.assert_close(loaded.infer_latent(context), z)
    obs = torch.randn(2, 3, 2)
    torch.testing.assert_close(loaded.act(obs, z), agent.act(obs, z))
    assert loaded.config == agent.config
    assert [p.name for p in tmp_path.iterdir()] == ["focal.pt"]  # no temporary left behind


def test_task_batches_smaller_than_the_task_set(point_robot_store):
    from merpo_data import TaskSampler

    train = TaskSampler(ENV, [0, 1, 2, 3], "medium", preset="test")
    config = FocalConfig.smoke(ENV, task_batch_size=2, behavior_steps=5, log_every=5)
    logs, seen = [], []
    agent = BASELINES["focal"].train(
        config, train, 12, "cpu", seed=1, log_fn=lambda s, m: logs.append(m),
        progress_fn=lambda step, a: seen.append((step, a)),
    )
    assert len(logs) == 4 and all(math.isfinite(v) for m in logs for v in m.values())
    assert [step for step, _ in seen] == [5, 10, 12] and all(a is agent for _, a in seen)
    with pytest.raises(ValueError, match="evaluate_focal got env_id"):
        evaluate_focal(make_agent(), train, "merpo/HalfCheetahFwdBack-v0", 1, 0)
