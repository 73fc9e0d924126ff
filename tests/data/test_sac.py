"""Batched SAC: loss shapes, task independence, target updates, replay buffer, rollouts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from merpo_data.rollouts import collect_episodes, make_task_vector_env, uniform_act_fn
from merpo_data.sac import ReplayBuffer, SACConfig, SACTrainer, StackedSAC, sac_losses

ENV = "merpo/PointRobotWind-v0"


def _batch(T=3, B=5, obs_dim=2, act_dim=2):
    g = torch.Generator().manual_seed(0)
    return {
        "observations": torch.randn(T, B, obs_dim, generator=g),
        "actions": torch.rand(T, B, act_dim, generator=g) * 2 - 1,
        "rewards": torch.randn(T, B, generator=g),
        "next_observations": torch.randn(T, B, obs_dim, generator=g),
        "terminations": torch.zeros(T, B),
    }


def test_loss_shapes_and_twin_critics():
    model = StackedSAC(3, 2, 2, SACConfig(hidden=16))
    assert model.critic.net[0].weight.shape == (3, 2, 4, 16)  # (T, 2) twin critics
    assert model.actor.trunk.net[0].weight.shape == (3, 2, 16)
    assert model.q_values(model.critic, _batch()["observations"], _batch()["actions"]).shape == (
        3,
        2,
        5,
    )
    losses = sac_losses(model, _batch(), gamma=0.9)
    assert [tuple(x.shape) for x in losses] == [(3,), (3,), (3,)]


def test_each_tasks_loss_reaches_only_its_own_parameters():
    model = StackedSAC(3, 2, 2, SACConfig(hidden=16))
    critic_loss, actor_loss, alpha_loss = sac_losses(model, _batch(), gamma=0.9)
    critic_loss[1].backward(retain_graph=True)
    grad = model.critic.net[0].weight.grad
    assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0
    model.zero_grad()
    actor_loss[2].backward()
    grad = model.actor.trunk.net[0].weight.grad
    assert grad[2].abs().sum() > 0 and grad[:2].abs().sum() == 0


def test_bellman_target_uses_termination_and_min_of_targets():
    model = StackedSAC(1, 2, 2, SACConfig(hidden=8, init_alpha=1e-8))
    batch = _batch(T=1, B=4)
    batch["terminations"] = torch.tensor([[1.0, 1.0, 1.0, 1.0]])
    critic_loss, _, _ = sac_losses(model, batch, gamma=0.9)
    # Terminal: target = r exactly, so the loss is the mean squared error to r of both critics.
    q = model.q_values(model.critic, batch["observations"], batch["actions"])
    expected = ((q - batch["rewards"].unsqueeze(1)) ** 2).mean()
    assert critic_loss[0].item() == pytest.approx(expected.item(), rel=1e-5)


def test_update_moves_targets_by_tau_and_changes_only_trained_parts():
    trainer = SACTrainer(
        ENV, [0, 1], SACConfig(hidden=16, batch_size=8, tau=0.5, random_iterations=10), seed=0
    )
    try:
        for _ in range(10):
            trainer._env_step()
        critic_before = [p.detach().clone() for p in trainer.model.critic.parameters()]
        target_before = [p.detach().clone() for p in trainer.model.target_critic.parameters()]
        trainer.update()
        for t0, c0, t1, c1 in zip(
            target_before,
            critic_before,
            trainer.model.target_critic.parameters(),
            trainer.model.critic.parameters(),
            strict=True,
        ):
            assert not torch.equal(c0, c1)
            torch.testing.assert_close(t1, t0 + 0.5 * (c1 - t0))
    finally:
        trainer.close()


def test_replay_buffer_is_fifo_per_task_and_samples_its_own_rows():
    buf = ReplayBuffer(num_tasks=2, capacity=4, obs_dim=1, act_dim=1, device=torch.device("cpu"))
    for step in range(6):  # wraps around: keeps steps 2..5
        value = torch.tensor([[float(step)], [100.0 + step]]).view(2, 1, 1)
        buf.add(
            observations=value,
            actions=value,
            rewards=value.view(2, 1),
            next_observations=value,
            terminations=torch.zeros(2, 1),
        )
    assert buf.size == 4
    assert sorted(buf.data["observations"][0, :, 0].tolist()) == [2.0, 3.0, 4.0, 5.0]
    batch = buf.sample(50, torch.Generator().manual_seed(0))
    assert batch["observations"].shape == (2, 50, 1)
    assert set(batch["rewards"][0].tolist()) <= {2.0, 3.0, 4.0, 5.0}
    assert set(batch["rewards"][1].tolist()) <= {102.0, 103.0, 104.0, 105.0}


def test_vector_env_is_task_major_and_rollouts_are_whole_episodes():
    envs = make_task_vector_env(ENV, [3, 8], envs_per_task=2)
    try:
        assert [e.unwrapped.task for e in envs.envs] == [3, 3, 8, 8]
        episodes = collect_episodes(envs, 2, uniform_act_fn(envs.single_action_space, 0), 3, seed=0)
    finally:
        envs.close()
    assert [len(e) for e in episodes] == [3, 3]
    for ep in episodes[0] + episodes[1]:
        assert ep.observations.shape == (26, 2) and ep.actions.shape == (25, 2)
        assert ep.truncations[-1] and not ep.terminations.any()
    import merpo_envs

    # Zero-mean random actions: each task's drift follows its own wind.
    winds = merpo_envs.get_meta_info(ENV)
    for pos, task in enumerate([3, 8]):
        drift = np.mean([ep.observations[-1] for ep in episodes[pos]], axis=0) / 25
        np.testing.assert_allclose(drift, winds.task_params(task)["wind"], atol=0.02)


def test_trainer_learns_on_point_robot():
    """A short run improves every task's evaluated return by a wide margin."""
    cfg = SACConfig(
        iterations=800,
        random_iterations=100,
        actor_lr=1e-3,
        critic_lr=1e-3,
        alpha_lr=1e-3,
        gamma=0.9,
        checkpoint_every=800,
        eval_episodes=4,
        eval_envs_per_task=4,
    )
    trainer = SACTrainer(ENV, [0, 44], cfg, seed=1)
    returns = []
    try:
        trainer.train(lambda it, r: returns.append(r))
    finally:
        trainer.close()
    assert len(returns) == 2
    assert np.all(returns[1] > returns[0] + 8), returns


def test_a_resumed_trainer_continues_its_episodes_exactly_on_a_mujoco_env():
    """Half-Cheetah's resets draw noise from the env's RNG: a trainer restored from a
    mid-episode state (after one reset drew from it) ends bit-identical to one never
    stopped, through the next reset too."""
    import io

    cfg = SACConfig(hidden=8, iterations=420, random_iterations=20, batch_size=8,
                    checkpoint_every=300, eval_episodes=1, eval_envs_per_task=1,
                    buffer_size=1000)
    env = "merpo/HalfCheetahFwdBack-v0"
    saved = {}

    def keep(iteration, returns):
        if iteration == 300:
            buffer = io.BytesIO()
            torch.save(straight.state_dict(), buffer)
            saved["state"] = buffer.getvalue()

    straight = SACTrainer(env, [0, 1], cfg, seed=5)
    straight.train(keep)
    resumed = SACTrainer(env, [0, 1], cfg, seed=5)
    resumed.load_state_dict(torch.load(io.BytesIO(saved["state"]), weights_only=True))
    assert resumed.iteration == 300
    resumed.train(lambda iteration, returns: None)
    np.testing.assert_array_equal(resumed._obs, straight._obs)
    for name, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)
    straight.close()
    resumed.close()
