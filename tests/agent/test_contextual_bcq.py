"""Contextual BCQ baseline (merpo_agent.baselines.contextual_bcq): networks, BCQ's target,
action selection, the encoder's end-to-end training, a run on the Point-Robot-Wind data."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from agent_helpers import wind_context
from merpo_agent.baselines import BASELINES
from merpo_agent.baselines.contextual_bcq import (
    ContextualBCQAgent,
    ContextualBCQConfig,
    ContextualBCQLearner,
    evaluate_contextual_bcq,
    load_contextual_bcq,
    save_contextual_bcq,
    select_best,
    soft_clipped_double_q,
    vae_loss,
)
from merpo_agent.transitions import TransitionBatch

ENV = "merpo/PointRobotWind-v0"


def make_agent(seed: int = 0, **overrides) -> ContextualBCQAgent:
    torch.manual_seed(seed)
    config = ContextualBCQConfig.smoke(ENV, **overrides)
    return ContextualBCQAgent(config, 2, 2, torch.full((2,), -0.1), torch.full((2,), 0.1))


WINDS = torch.tensor([[0.05, 0.0], [0.0, 0.05], [-0.04, -0.03]])


# ---- networks ---------------------------------------------------------------------------


def test_network_shapes_and_action_bounds():
    agent = make_agent(phi=0.05)
    g = torch.Generator().manual_seed(0)
    latent = agent.config.latent_dim
    obs, z = torch.randn(3, 7, 2, generator=g), torch.randn(3, 7, latent, generator=g)
    cond = torch.cat([obs, z], -1)
    action = torch.rand(3, 7, 2, generator=g) * 2 - 1
    action[0, 0] = torch.tensor([1.0, -1.0])  # at the bounds: the clip keeps it inside

    # VAE: reconstruction in [-1, 1], latent (mean, log_std) of size 2 * act_dim (BCQ).
    recon, mean, log_std = agent.vae(cond, action, torch.randn(3, 7, 4, generator=g))
    assert recon.shape == (3, 7, 2) and mean.shape == (3, 7, 4) and log_std.shape == (3, 7, 4)
    assert recon.abs().max() <= 1.0
    sampled = agent.vae.sample(cond, g)
    assert sampled.shape == (3, 7, 2) and sampled.abs().max() <= 1.0
    assert vae_loss(recon, action, mean, log_std, 0.5).shape == ()

    # Perturbation: within phi of the proposal, inside [-1, 1]; and it does move actions.
    with torch.no_grad():  # push the net's output into saturation to test the bound
        agent.actor.net.net[-1].bias.add_(10.0)
    perturbed = agent.actor(cond, action)
    assert perturbed.shape == (3, 7, 2)
    assert perturbed.abs().max() <= 1.0
    assert (perturbed - action).abs().max() <= 0.05 + 1e-6
    assert (perturbed - action).abs().max() > 0.04

    # Twin critics (2, T, N), the policy's actions (T, N, act_dim) in [-1, 1].
    z = torch.randn(3, latent, generator=g)
    q = agent.critic(cond[..., :2], action, z.unsqueeze(1).expand(-1, 7, -1))
    assert q.shape == (2, 3, 7)
    obs = torch.randn(3, 7, 2, generator=g)
    act = agent.act(obs, z, torch.Generator().manual_seed(1))
    assert act.shape == (3, 7, 2) and act.abs().max() <= 1.0
    torch.testing.assert_close(agent.act(obs, z, torch.Generator().manual_seed(1)), act)
    with pytest.raises(ValueError, match="obs"):
        agent.act(obs, z[:2])


def test_encoder_is_permutation_invariant():
    agent = make_agent()
    g = torch.Generator().manual_seed(0)
    context = wind_context(WINDS, 10, g)
    z = agent.infer_latent(context)
    assert z.shape == (3, agent.config.latent_dim)
    order = torch.randperm(10, generator=g)
    shuffled = TransitionBatch(*(x[:, order] for x in context))
    torch.testing.assert_close(agent.infer_latent(shuffled), z)
    tasks = torch.tensor([2, 0, 1])
    torch.testing.assert_close(
        agent.infer_latent(TransitionBatch(*(x[tasks] for x in context))), z[tasks]
    )
    assert (z[0] - z[1]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="task axis"):
        agent.infer_latent(TransitionBatch(*(x[0] for x in context)))


# ---- BCQ's target and action selection --------------------------------------------------


def test_soft_clipped_double_q_on_hand_made_numbers():
    # One task, one state, n = 3 sampled actions; Q_1 and Q_2 per action.
    q = torch.tensor([[[[1.0, 4.0, 2.0]]], [[[3.0, 0.0, 2.5]]]])  # (2, T=1, B=1, n=3)
    # lam = 0.75: action 0: .75*1 + .25*3 = 1.5; action 1: .75*0 + .25*4 = 1.0;
    # action 2: .75*2 + .25*2.5 = 2.125 -> max over actions 2.125.
    torch.testing.assert_close(soft_clipped_double_q(q, 0.75), torch.tensor([[2.125]]))
    # lam = 1 is clipped double Q (TD3): max_j min_i = max(1, 0, 2) = 2.
    torch.testing.assert_close(soft_clipped_double_q(q, 1.0), torch.tensor([[2.0]]))
    # lam = 0: max_j max_i = 4.
    torch.testing.assert_close(soft_clipped_double_q(q, 0.0), torch.tensor([[4.0]]))


def test_bellman_target_uses_the_soft_clipped_value():
    """The learner's target is r + gamma (1 - term) * soft value of the target critics at the
    same n candidates (recomputed here from the same generator state)."""
    agent = make_agent(lam=0.75, num_samples=4)
    learner = ContextualBCQLearner(agent, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(1)
    batch = wind_context(WINDS, 5, g)
    terminations = torch.zeros(3, 5)
    terminations[1, 2] = 1.0
    z = torch.randn(3, 1, agent.config.latent_dim, generator=g).expand(3, 5, -1)
    norm_next = agent.normalize_obs(batch.next_observations)
    state = learner.generator.get_state()
    target = learner.bellman_target(batch.rewards, norm_next, terminations, z)
    learner.generator.set_state(state)
    with torch.no_grad():
        obs_rep, z_rep, actions = agent.candidates(
            norm_next, z, learner.generator, learner.target_actor
        )
        q = learner.target_critic(obs_rep, actions, z_rep).reshape(2, 3, 5, 4)
    soft = 0.75 * q.min(0).values + 0.25 * q.max(0).values
    expected = batch.rewards + agent.config.discount * (1 - terminations) * soft.max(-1).values
    torch.testing.assert_close(target, expected)
    assert target[1, 2] == batch.rewards[1, 2]  # a terminal transition: no bootstrap


def test_select_best_and_act_take_the_argmax_q_candidate():
    candidates = torch.tensor([[[[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]]])  # (1, 1, 3, 2)
    q = torch.tensor([[[0.0, 2.0, 1.0]]])
    torch.testing.assert_close(select_best(candidates, q), torch.tensor([[[0.3, 0.4]]]))

    # The agent's action is the candidate (perturbed VAE proposal) of highest Q_1.
    agent = make_agent(num_samples=6)
    g = torch.Generator().manual_seed(0)
    obs, z = torch.randn(3, 4, 2, generator=g), torch.randn(3, agent.config.latent_dim)
    action = agent.act(obs, z, torch.Generator().manual_seed(7))
    with torch.no_grad():
        obs_rep, z_rep, cand = agent.candidates(
            agent.normalize_obs(obs), z.unsqueeze(1).expand(-1, 4, -1),
            torch.Generator().manual_seed(7),
        )
        q1 = agent.critic(obs_rep, cand, z_rep)[0].reshape(3, 4, 6)
    cand = cand.reshape(3, 4, 6, 2)
    best = q1.argmax(-1)
    torch.testing.assert_close(action, cand.gather(2, best[..., None, None].expand(-1, -1, 1, 2))
                               .squeeze(2))
    # ...and not merely the first candidate: some states pick another one.
    assert (best != 0).any()
    assert (q1.gather(-1, best[..., None]).squeeze(-1) >= q1.max(-1).values - 1e-6).all()


# ---- the update -------------------------------------------------------------------------


def test_update_trains_the_encoder_through_the_critic_loss_only():
    agent = make_agent()
    learner = ContextualBCQLearner(agent, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(2)
    batch, context = wind_context(WINDS, 8, g), wind_context(WINDS, 8, g)
    before = copy.deepcopy(agent)
    actor_before = copy.deepcopy(agent.actor)
    target_before = copy.deepcopy(learner.target_critic)
    metrics = learner.update(batch, context)
    for name, value in metrics.items():
        assert value.shape == () and torch.isfinite(value), name
    # Every trained network moved, the targets moved a little (Polyak).
    for mine, old in ((agent.encoder, before.encoder), (agent.vae, before.vae),
                      (agent.critic, before.critic), (agent.actor, actor_before)):
        pairs = zip(mine.parameters(), old.parameters(), strict=True)
        assert any(not torch.equal(a, b) for a, b in pairs)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(learner.target_critic.parameters(), target_before.parameters(), strict=True)
    )
    # The encoder's gradient is exactly the critic loss's (z detached for VAE and actor).
    critic_grads = [p.grad.clone() for p in agent.encoder.parameters()]
    assert all(torch.isfinite(gr).all() for gr in critic_grads)
    assert any(gr.abs().max() > 0 for gr in critic_grads)
    # Recompute: the Bellman loss alone, from the pre-update networks, gives the same gradient.
    learner_before = ContextualBCQLearner(before, torch.Generator().manual_seed(0))
    learner_before.target_critic.load_state_dict(target_before.state_dict())
    t, b = batch.rewards.shape
    z = before.infer_latent(context).unsqueeze(1).expand(t, b, -1)
    # the update draws the VAE's noise first, then the target's candidates
    learner_before.generator.manual_seed(0)
    torch.randn((t, b, before.vae.latent), generator=learner_before.generator)
    # the VAE step happens before the target: use the updated VAE, as the update does
    before.vae.load_state_dict(agent.vae.state_dict())
    target = learner_before.bellman_target(
        batch.rewards, before.normalize_obs(batch.next_observations), batch.terminations,
        z.detach(),
    )
    norm_obs = before.normalize_obs(batch.observations)
    q = before.critic(norm_obs, before.unit_actions(batch.actions), z)
    (q - target).pow(2).mean(dim=(1, 2)).sum().backward()
    for mine, expected in zip(critic_grads, before.encoder.parameters(), strict=True):
        torch.testing.assert_close(mine, expected.grad)


def test_config_checks_and_env_discount():
    assert ContextualBCQConfig.for_env(ENV).discount == 0.9
    assert ContextualBCQConfig.for_env("merpo/HalfCheetahFwdBack-v0").discount == 0.99
    default = ContextualBCQConfig()
    assert (default.phi, default.lam, default.num_samples) == (0.05, 0.75, 10)
    with pytest.raises(ValueError, match="lam"):
        ContextualBCQConfig(lam=1.5)
    with pytest.raises(ValueError, match="num_samples"):
        ContextualBCQConfig(num_samples=0)
    with pytest.raises(ValueError, match="unknown ContextualBCQConfig"):
        ContextualBCQConfig.from_dict({"latent": 3})


# ---- end to end on the Point-Robot-Wind fixture datasets --------------------------------


@pytest.mark.slow
def test_contextual_bcq_trains_end_to_end_on_point_robot(point_robot_store, tmp_path):
    from merpo_data import TaskSampler

    train = TaskSampler(ENV, [0, 1, 2, 3], "mixed", preset="test")
    test = TaskSampler(ENV, [40, 41], "mixed", preset="test")
    config = ContextualBCQConfig.smoke(ENV)
    logs, seen = [], []
    initial = BASELINES["cbcq"].train(config, train, 0, "cpu", seed=0)
    agent = BASELINES["cbcq"].train(
        config, train, 600, "cpu", seed=0, log_fn=lambda s, m: logs.append((s, m)),
        progress_fn=lambda s, a: seen.append(s),
    )
    assert [s for s, _ in logs] == list(range(25, 601, 25)) and seen == [s for s, _ in logs]
    assert all(math.isfinite(v) for _, m in logs for v in m.values())
    assert logs[-1][1]["vae_loss"] < logs[0][1]["vae_loss"]

    # Meta-test on the unseen tasks: z from their offline data, BCQ's policy in the real env.
    # It clearly beats uniformly random behavior (the "random" datasets' mean return, about
    # -25 here; the trained agent gets about -16, the mixed data -16); the untrained agent
    # does not (about -27).
    random_data = TaskSampler(ENV, [40, 41], "random", preset="test")
    random_behavior = float(random_data.dataset_returns.mean())
    returns = evaluate_contextual_bcq(agent, test, ENV, episodes=2, seed=0)
    untrained = evaluate_contextual_bcq(initial, test, ENV, episodes=2, seed=0)
    assert set(returns) == {40, 41}
    trained_mean = sum(returns.values()) / 2
    assert trained_mean > random_behavior + 5.0, (returns, random_behavior)
    assert sum(untrained.values()) / 2 < random_behavior + 5.0, (untrained, random_behavior)

    # Save / load round trip (weights_only): same latents, same actions, same returns.
    path = tmp_path / "cbcq.pt"
    save_contextual_bcq(agent, path)
    loaded = load_contextual_bcq(path)
    assert loaded.config == agent.config
    context = test.sample(32, generator=torch.Generator().manual_seed(0))
    z = agent.infer_latent(context)
    torch.testing.assert_close(loaded.infer_latent(context), z)
    obs = torch.randn(2, 3, 2)
    torch.testing.assert_close(
        loaded.act(obs, z, torch.Generator().manual_seed(0)),
        agent.act(obs, z, torch.Generator().manual_seed(0)),
    )
    assert evaluate_contextual_bcq(loaded, test, ENV, episodes=2, seed=0) == returns
    assert [p.name for p in tmp_path.iterdir()] == ["cbcq.pt"]  # no temporary left behind
    with pytest.raises(ValueError, match="evaluate_contextual_bcq got env_id"):
        evaluate_contextual_bcq(agent, test, "merpo/HalfCheetahFwdBack-v0", 1, 0)


def test_task_batches_smaller_than_the_task_set(point_robot_store):
    from merpo_data import TaskSampler

    train = TaskSampler(ENV, [0, 1, 2, 3], "medium", preset="test")
    config = ContextualBCQConfig.smoke(ENV, task_batch_size=2, log_every=5)
    logs = []
    BASELINES["cbcq"].train(config, train, 12, "cpu", seed=1, log_fn=lambda s, m: logs.append(s))
    assert logs == [5, 10, 12]
