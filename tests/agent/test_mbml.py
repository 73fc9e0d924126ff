"""MBML (Li et al. 2020): relabeling models, triplet loss, the update, end to end."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from merpo_agent.baselines import BASELINES
from merpo_agent.baselines.mbml import (
    MBMLAgent,
    MBMLConfig,
    MBMLLearner,
    evaluate_mbml,
    load_mbml,
    partners,
    relabel,
    save_mbml,
    triplet_loss,
)
from merpo_agent.dynamics import DynamicsEnsemble
from merpo_agent.transitions import TransitionBatch
from test_focal import counterfactual_separation, wind_context

ENV = "merpo/PointRobotWind-v0"


def make_agent(seed: int = 0, **overrides) -> MBMLAgent:
    torch.manual_seed(seed)
    config = MBMLConfig.smoke(ENV, **overrides)
    return MBMLAgent(config, 2, 2, torch.full((2,), -0.1), torch.full((2,), 0.1))


def test_triplet_loss_on_hand_computed_triplets():
    anchor = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    positive = torch.tensor([[1.0, 0.0], [2.0, 0.0]])
    negative = torch.tensor([[0.0, 2.0], [1.0, 0.0]])
    # d(a, p) = 1, 4; d(a, n) = 4, 1: [1 - 4 + 1]_+ = 0 and [4 - 1 + 1]_+ = 4, mean 2
    loss, accuracy = triplet_loss(anchor, positive, negative, margin=1.0)
    assert float(loss) == pytest.approx(2.0) and float(accuracy) == pytest.approx(0.5)
    # the margin is what keeps a satisfied triplet active: with m = 4, [1 - 4 + 4] = 1
    loss, _ = triplet_loss(anchor, positive, negative, margin=4.0)
    assert float(loss) == pytest.approx((1.0 + 7.0) / 2)
    # gradient: the anchor moves towards the positive and away from the negative
    anchor = torch.tensor([[0.5, 0.5]], requires_grad=True)
    triplet_loss(anchor, torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]]), 1.0)[0].backward()
    # d/da [|a - p|^2 - |a - n|^2] = 2 (n - p) = (-2, 2)
    torch.testing.assert_close(anchor.grad, torch.tensor([[-2.0, 2.0]]))


def test_partners_are_other_tasks_of_the_batch():
    g = torch.Generator().manual_seed(0)
    for t in (2, 3, 5):
        tasks = torch.tensor([7, 3, 9, 1, 4][:t])
        seen = set()
        for _ in range(30):
            p = partners(tasks, g)
            assert sorted(p.tolist()) == sorted(tasks.tolist())  # a permutation
            assert (p != tasks).all()  # nobody is its own partner
            seen.add(tuple(p.tolist()))
        assert len(seen) == t - 1  # every shift 1..T-1 is drawn


def test_relabel_is_the_rows_elite_mean_prediction():
    torch.manual_seed(0)
    models = DynamicsEnsemble(3, 2, 2, ensemble=3, elites=2, hidden=8, hidden_layers=2)
    with torch.no_grad():
        models.input_mean.normal_()
        models.input_std.uniform_(0.5, 2.0)
        models.elite_idx.copy_(torch.tensor([[2, 0], [1, 2], [0, 1]]))
    rows = torch.tensor([2, 0])
    context = TransitionBatch(
        torch.randn(2, 5, 2), torch.randn(2, 5, 2), torch.zeros(2, 5), torch.zeros(2, 5, 2),
        torch.zeros(2, 5),
    )
    out = relabel(models, rows, context)
    # the same inputs placed on the rows of the full model, through predict_elites
    obs = torch.zeros(3, 5, 2)
    act = torch.zeros(3, 5, 2)
    obs[rows], act[rows] = context.observations, context.actions
    mean, _ = models.predict_elites(obs, act)
    expected = mean.mean(dim=1)[rows]
    torch.testing.assert_close(out.next_observations, context.observations + expected[..., :2])
    torch.testing.assert_close(out.rewards, expected[..., 2])
    torch.testing.assert_close(out.actions, context.actions)  # (s, a) kept: a hard negative


def test_update_adds_the_triplet_gradient_to_the_encoder():
    """The encoder's gradient is the Bellman loss's plus triplet_weight times the triplet
    loss's (computed separately on the same initial encoder)."""
    winds = torch.tensor([[0.05, 0.0], [0.0, 0.05], [-0.04, -0.03]])
    g = torch.Generator().manual_seed(1)
    batch, context = wind_context(winds, 8, g), wind_context(winds, 8, g)
    negative = wind_context(winds.roll(1, 0), 8, g)
    anchor = negative._replace(rewards=negative.rewards + 0.3)
    learners = {}
    for weight in (0.0, 1.0):
        agent = make_agent(triplet_weight=weight)
        learner = MBMLLearner(agent, 3, torch.Generator().manual_seed(0))
        learners[weight] = (learner, copy.deepcopy(agent))
        metrics = learner.update_mbml(batch, context, anchor, negative)
        assert {"triplet_loss", "triplet_accuracy", "critic_loss", "vae_loss"} <= set(metrics)
        assert all(v.shape == () and torch.isfinite(v) for v in metrics.values())
    initial = learners[1.0][1]
    loss, _ = triplet_loss(initial.infer_latent(anchor), initial.infer_latent(context),
                           initial.infer_latent(negative), initial.config.triplet_margin)
    loss.backward()
    for with_t, without, alone in zip(learners[1.0][0].agent.encoder.parameters(),
                                      learners[0.0][0].agent.encoder.parameters(),
                                      initial.encoder.parameters(), strict=True):
        torch.testing.assert_close(with_t.grad - without.grad, alone.grad)
    assert float(loss.detach()) > 0  # a gradient that matters


def test_config_checks():
    assert MBMLConfig.for_env(ENV).discount == 0.9
    with pytest.raises(ValueError, match="model_elites"):
        MBMLConfig(model_ensemble=2, model_elites=3)
    with pytest.raises(ValueError, match="task_batch_size must be >= 2"):
        MBMLConfig(task_batch_size=1)
    with pytest.raises(ValueError, match="at least 2 training tasks"):
        MBMLLearner(make_agent(), 1, torch.Generator())


@pytest.mark.slow
def test_mbml_trains_end_to_end_on_point_robot(point_robot_store, tmp_path):
    from merpo_data import TaskSampler
    from merpo_envs.point_robot_wind import WINDS

    train = TaskSampler(ENV, [0, 1, 2, 3], "mixed", preset="test")
    test = TaskSampler(ENV, [40, 41], "mixed", preset="test")
    config = MBMLConfig.smoke(ENV)
    logs = []
    initial = BASELINES["mbml"].train(config, train, 0, "cpu", seed=0)
    agent = BASELINES["mbml"].train(config, train, 600, "cpu", seed=0,
                                   log_fn=lambda s, m: logs.append((s, m)))
    assert [s for s, _ in logs] == [0, *range(25, 601, 25)]
    assert all(math.isfinite(v) for _, m in logs for v in m.values())
    assert logs[0][1]["model_heldout_mse"] < 1e-2  # the relabeling models learned the data
    # the anchors end up nearer their own task than the same (s, a) of another task
    accuracy = [m["triplet_accuracy"] for _, m in logs[1:]]
    assert accuracy[0] < 0.5 and sum(accuracy[-8:]) / 8 > 0.7  # (chance: 0.5)

    # On identical (s, a) under the winds of tasks 1 and 3 the encoder tells the tasks
    # apart far better than at initialization: it reads r and s', not (s, a) (measured:
    # a Fisher ratio of 0.26 before, ~600 after 600 updates).
    before = counterfactual_separation(initial, train, WINDS[1], WINDS[3])
    after = counterfactual_separation(agent, train, WINDS[1], WINDS[3])
    assert after > 50 * before, (before, after)

    # Meta-test on the unseen tasks: z from their offline data, BCQ's policy in the real env;
    # it does better than the untrained agent (the `small` preset's runs on the full task
    # split are where it is measured against the behavior policy).
    returns = evaluate_mbml(agent, test, ENV, episodes=2, seed=0)
    assert set(returns) == {40, 41} and all(math.isfinite(r) for r in returns.values())
    untrained = evaluate_mbml(initial, test, ENV, episodes=2, seed=0)
    assert sum(returns.values()) > sum(untrained.values()) + 4.0, (returns, untrained)

    path = tmp_path / "mbml.pt"
    save_mbml(agent, path)
    loaded = load_mbml(path)
    context = test.sample(32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.infer_latent(context), agent.infer_latent(context))
    assert loaded.config == agent.config
    assert evaluate_mbml(loaded, test, ENV, episodes=2, seed=0) == returns
