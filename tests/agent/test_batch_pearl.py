"""Batch PEARL (Rakelly et al. 2019, trained offline): the product-of-Gaussians encoder,
the KL to the unit prior, the SAC update on (s, z), end to end."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from merpo_agent.baselines import BASELINES
from merpo_agent.baselines.batch_pearl import (
    BatchPearlAgent,
    BatchPearlConfig,
    BatchPearlLearner,
    ProbabilisticContextEncoder,
    evaluate_batch_pearl,
    kl_to_unit_prior,
    load_batch_pearl,
    save_batch_pearl,
)
from test_focal import wind_context

ENV = "merpo/PointRobotWind-v0"


def make_agent(seed: int = 0, **overrides) -> BatchPearlAgent:
    torch.manual_seed(seed)
    config = BatchPearlConfig.smoke(ENV, **overrides)
    return BatchPearlAgent(config, 2, 2, torch.full((2,), -0.1), torch.full((2,), 0.1))


def inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


def test_posterior_is_the_product_of_the_factors():
    encoder = ProbabilisticContextEncoder(2, 2, latent_dim=1, hidden=4, layers=1)
    encoder.net = torch.nn.Identity()  # features are (mu_n, softplus^-1(sigma_n^2))
    mu = torch.tensor([[1.0], [3.0], [2.0]])
    var = torch.tensor([[1.0], [1.0], [0.5]])
    features = torch.cat([mu, inverse_softplus(var)], dim=-1).unsqueeze(0)  # (1, 3, 2)
    mean, variance = encoder.posterior(features)
    # precisions 1, 1, 2: variance 1/4, mean (1 + 3 + 2 * 2) / 4 = 2
    torch.testing.assert_close(variance, torch.tensor([[0.25]]))
    torch.testing.assert_close(mean, torch.tensor([[2.0]]))
    # one factor: the posterior is that factor
    mean, variance = encoder.posterior(features[:, :1])
    torch.testing.assert_close(mean, torch.tensor([[1.0]]))
    torch.testing.assert_close(variance, torch.tensor([[1.0]]))


def test_encoder_shapes_and_permutation_invariance():
    agent = make_agent()
    g = torch.Generator().manual_seed(0)
    winds = torch.tensor([[0.05, 0.0], [0.0, 0.05], [-0.04, -0.03]])
    context = wind_context(winds, 16, g)
    mean, variance = agent.posterior(context)
    assert mean.shape == (3, 5) and variance.shape == (3, 5) and (variance > 0).all()
    perm = torch.randperm(16, generator=g)
    shuffled = type(context)(*(x[:, perm] for x in context))
    torch.testing.assert_close(agent.infer_latent(shuffled), agent.infer_latent(context))
    torch.testing.assert_close(agent.infer_latent(context), mean)
    # more context, a tighter posterior (each factor adds precision)
    assert (agent.posterior(wind_context(winds, 64, g))[1] < variance).all()


def test_kl_to_the_unit_prior():
    assert float(kl_to_unit_prior(torch.zeros(1, 3), torch.ones(1, 3))[0]) == 0.0
    # mean 1, variance 1 in 2 dims: 0.5 * (1 + 1 - 1 - 0) * 2 = 1
    assert float(kl_to_unit_prior(torch.ones(1, 2), torch.ones(1, 2))[0]) == pytest.approx(1.0)
    mean, var = torch.randn(4, 3), torch.rand(4, 3) + 0.1
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, var.sqrt()), torch.distributions.Normal(0.0, 1.0)
    ).sum(-1)
    torch.testing.assert_close(kl_to_unit_prior(mean, var), expected)


def test_update_trains_the_encoder_by_bellman_and_kl_only():
    """The encoder's gradient is that of critic_loss + kl_lambda * sum_t KL (on the same z
    sample): the actor's loss does not reach it; the actor and critics all move."""
    winds = torch.tensor([[0.05, 0.0], [0.0, 0.05], [-0.04, -0.03]])
    g = torch.Generator().manual_seed(1)
    batch, context = wind_context(winds, 8, g), wind_context(winds, 8, g)
    agent = make_agent(kl_lambda=0.7)
    learner = BatchPearlLearner(agent, 3, torch.Generator().manual_seed(0))
    before = copy.deepcopy(learner)
    before.generator = torch.Generator().manual_seed(0)

    metrics = learner.update(batch, context)
    for name, value in metrics.items():
        assert value.shape == () and torch.isfinite(value), name
    assert metrics["kl"] > 0

    z_tasks, kl = before.sample_latent(context)
    z = z_tasks.unsqueeze(1).expand(3, 8, -1)
    a = before.agent
    critic_loss, _ = before.critic_loss(
        a.normalize_obs(batch.observations), a.unit_actions(batch.actions), batch.rewards,
        a.normalize_obs(batch.next_observations), batch.terminations, z,
    )
    torch.testing.assert_close(critic_loss.detach(), metrics["critic_loss"])
    (critic_loss + 0.7 * kl.sum()).backward()
    for mine, expected in zip(agent.encoder.parameters(), a.encoder.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, expected.grad)
        assert not torch.equal(mine, expected)
    for new, old in zip(agent.policy.parameters(), a.policy.parameters(), strict=True):
        assert not torch.equal(new, old)
    # the targets moved by tau towards the updated critics
    for target, old_target, critic in zip(learner.target_critic.parameters(),
                                          before.target_critic.parameters(),
                                          learner.critic.parameters(), strict=True):
        torch.testing.assert_close(target, old_target + agent.config.tau * (critic - old_target))


def test_fixed_temperature_stays_fixed():
    winds = torch.tensor([[0.05, 0.0], [0.0, 0.05]])
    g = torch.Generator().manual_seed(2)
    learner = BatchPearlLearner(make_agent(tune_entropy=False, entropy_coef=0.2), 2,
                                torch.Generator().manual_seed(0))
    for _ in range(3):
        metrics = learner.update(wind_context(winds, 8, g), wind_context(winds, 8, g))
    assert float(metrics["entropy_coef"]) == pytest.approx(0.2)


def test_config_checks():
    assert BatchPearlConfig.for_env(ENV).discount == 0.9
    assert BatchPearlConfig().kl_lambda == 0.1 and BatchPearlConfig().latent_dim == 5
    with pytest.raises(ValueError, match="kl_lambda"):
        BatchPearlConfig(kl_lambda=-1.0)
    with pytest.raises(ValueError, match="unknown BatchPearlConfig"):
        BatchPearlConfig.from_dict({"kl": 1.0})


def wind_separation(agent: BatchPearlAgent, winds: torch.Tensor, draws: int = 16) -> float:
    """Fisher ratio of the posterior means of two winds' contexts drawn from one (s, a)
    distribution: only r and s' tell the tasks apart."""
    g = torch.Generator().manual_seed(9)
    with torch.no_grad():
        z = torch.stack([agent.infer_latent(wind_context(winds, 32, g)) for _ in range(draws)])
    means = z.mean(0)
    spread = (z - means).pow(2).sum(-1).mean()
    return float((means[0] - means[1]).pow(2).sum() / spread)


def test_encoder_learns_to_tell_two_winds_apart():
    """Two Point-Robot-Wind tasks with the same (s, a) distribution: after 300 updates the
    posteriors of their contexts are several times further apart than at initialization,
    and the Bellman gradient is what does it: weighting the bottleneck 1000x over it
    collapses them onto the prior instead."""
    winds = torch.tensor([[0.05, 0.05], [-0.05, -0.05]])
    separations = {}
    for kl_lambda in (0.1, 100.0):
        agent = make_agent(kl_lambda=kl_lambda)
        learner = BatchPearlLearner(agent, 2, torch.Generator().manual_seed(0))
        g = torch.Generator().manual_seed(1)
        initial = wind_separation(agent, winds)
        for _ in range(300):
            learner.update(wind_context(winds, 64, g), wind_context(winds, 32, g))
        separations[kl_lambda] = wind_separation(agent, winds)
    assert separations[0.1] > 3 * initial, (initial, separations)
    assert separations[0.1] > 10 * separations[100.0], separations


@pytest.mark.slow
def test_batch_pearl_trains_end_to_end_on_point_robot(point_robot_store, tmp_path):
    from merpo_data import TaskSampler

    train = TaskSampler(ENV, [0, 1, 2, 3], "mixed", preset="test")
    test = TaskSampler(ENV, [40, 41], "mixed", preset="test")
    config = BatchPearlConfig.smoke(ENV)
    logs = []
    agent = BASELINES["batch-pearl"].train(config, train, 600, "cpu", seed=0,
                              log_fn=lambda s, m: logs.append((s, m)))
    assert [s for s, _ in logs] == list(range(25, 601, 25))
    assert all(math.isfinite(v) for _, m in logs for v in m.values())

    # Meta-test on the unseen tasks (the `small` preset's runs on the whole task split are
    # where the return is measured against the behavior policy).
    returns = evaluate_batch_pearl(agent, test, ENV, episodes=2, seed=0)
    assert set(returns) == {40, 41} and all(math.isfinite(r) for r in returns.values())

    path = tmp_path / "pearl.pt"
    save_batch_pearl(agent, path)
    loaded = load_batch_pearl(path)
    context = test.sample(32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(loaded.posterior(context)[1], agent.posterior(context)[1])
    assert evaluate_batch_pearl(loaded, test, ENV, episodes=2, seed=0) == returns
