"""Meta-model (Eq. 3, Alg. 2 lines 2-7) and task-model adaptation (Eq. 4), Section 4.1."""

from __future__ import annotations

import pytest
import torch
from agent_helpers import DEVICES
from merpo_agent.dynamics import DynamicsConfig, DynamicsEnsemble, HoldoutSplit
from merpo_agent.meta_model import adapt, meta_iteration, meta_train, meta_update_
from merpo_agent.model_training import proximal_penalty, train_models, train_step
from merpo_agent.rollout import rollout
from merpo_agent.transitions import TransitionBatch
from merpo_data import TaskSampler
from merpo_envs import get_meta_info

OBS, ACT = 3, 2


def task_family_sampler(sizes, device="cpu", seed=0):
    """A stand-in for merpo_data.TaskSampler: a family of related systems.

    s' = s + tanh(s A) + a B + c_n and r = w.(s, a) + sum(c_n): the tasks share A, B, w and
    differ in the offset c_n (like Point-Robot-Wind's wind), so a meta-model can learn the
    shared part and adaptation only has to find c_n.
    """
    from types import SimpleNamespace

    g = torch.Generator().manual_seed(seed)
    a_mat = torch.randn(OBS, OBS, generator=torch.Generator().manual_seed(101)) * 0.3
    b_mat = torch.randn(ACT, OBS, generator=torch.Generator().manual_seed(102)) * 0.5
    w = torch.randn(OBS + ACT, generator=torch.Generator().manual_seed(103))
    obs, act, rew, nxt = [], [], [], []
    for n in sizes:
        c = torch.randn(OBS, generator=g) * 0.5
        s = torch.randn(n, OBS, generator=g)
        a = torch.rand(n, ACT, generator=g) * 2 - 1
        obs.append(s)
        act.append(a)
        nxt.append(s + torch.tanh(s @ a_mat) + a @ b_mat + c)
        rew.append(torch.cat([s, a], -1) @ w + c.sum())
    sz = torch.tensor(sizes)
    return SimpleNamespace(
        tasks=tuple(range(len(sizes))),
        num_tasks=len(sizes),
        obs_dim=OBS,
        act_dim=ACT,
        device=torch.device(device),
        sizes=sz.to(device),
        offsets=(torch.cumsum(sz, 0) - sz).to(device),
        observations=torch.cat(obs).to(device),
        actions=torch.cat(act).to(device),
        rewards=torch.cat(rew).to(device),
        next_observations=torch.cat(nxt).to(device),
        terminations=torch.zeros(int(sz.sum()), device=device),
    )


def tiny_cfg(**overrides) -> DynamicsConfig:
    values = dict(
        ensemble=3,
        elites=2,
        hidden=16,
        hidden_layers=2,
        batch_size=32,
        meta_inner_steps=3,
        meta_iterations=2,
        meta_inner_lr=1e-2,
        meta_model_lr=0.3,
    )
    values.update(overrides)
    return DynamicsConfig(**values)


def clone_params(model):
    return [p.detach().clone() for p in model.parameters()]


def test_meta_update_is_reptile_average_on_hand_made_parameters():
    phi = DynamicsEnsemble(1, OBS, ACT, ensemble=2, elites=1, hidden=4, hidden_layers=1)
    theta = phi.empty_like(2)
    with torch.no_grad():
        for p in phi.parameters():
            p.fill_(1.0)
        for p in theta.parameters():
            p[0].fill_(2.0)
            p[1].fill_(4.0)
    meta_update_(phi, theta, xi=0.3)
    for p in phi.parameters():  # 1 - 0.3 * (1 - (2 + 4) / 2) = 1.6
        torch.testing.assert_close(p, torch.full_like(p, 1.6))


@pytest.mark.parametrize("device", DEVICES)
def test_meta_iteration_matches_eq3(device):
    sampler = task_family_sampler([60, 70, 80], device)
    split = HoldoutSplit(sampler, generator=torch.Generator(device).manual_seed(0))
    cfg = tiny_cfg()
    tasks = torch.tensor([0, 2], device=device)
    phi = DynamicsEnsemble.from_config(1, OBS, ACT, cfg, device=device, seed=0)
    phi.set_normalizer_stats(*split.input_stats(tasks, pooled=True))
    phi_before = clone_params(phi)
    theta = phi.empty_like(2)

    meta_iteration(phi, theta, split, tasks, cfg, torch.Generator(device).manual_seed(7))

    # The inner solves: theta_n starts at phi (broadcast) and takes h steps on
    # NLL_n + eta ||theta_n - phi||^2, replayed here with the same random stream.
    reference = phi.empty_like(2)
    reference.copy_from_(phi)  # buffers (normalizer) from phi...
    with torch.no_grad():  # ...and parameters from phi as it was before the update
        for p, p0 in zip(reference.parameters(), phi_before, strict=True):
            p.copy_(p0.expand_as(p))
    anchor = [p0.clone() for p0 in phi_before]
    train_models(
        reference,
        split,
        cfg.meta_inner_steps,
        cfg.meta_inner_lr,
        cfg.batch_size,
        tasks,
        eta=cfg.eta,
        anchor=anchor,
        generator=torch.Generator(device).manual_seed(7),
    )
    for p_theta, p_ref in zip(theta.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(p_theta, p_ref)
    # The tasks' solutions differ (different data), and phi moved to
    # phi - xi (phi - mean_n theta_n), parameter by parameter (Alg. 2 line 6).
    first = theta.net.net[0].weight
    assert not torch.allclose(first[0], first[1])
    for p_new, p_old, p_theta in zip(phi.parameters(), phi_before, theta.parameters(), strict=True):
        expected = p_old - cfg.meta_model_lr * (p_old - p_theta.mean(0, keepdim=True))
        torch.testing.assert_close(p_new, expected)
        assert not torch.equal(p_new, p_old)


def test_meta_iteration_with_zero_inner_steps_keeps_phi():
    sampler = task_family_sampler([40, 40])
    split = HoldoutSplit(sampler, generator=torch.Generator().manual_seed(0))
    cfg = tiny_cfg(meta_inner_steps=0)
    phi = DynamicsEnsemble.from_config(1, OBS, ACT, cfg, seed=0)
    before = clone_params(phi)
    theta = phi.empty_like(2)
    meta_iteration(phi, theta, split, torch.arange(2), cfg)
    for p, p0, pt in zip(phi.parameters(), before, theta.parameters(), strict=True):
        torch.testing.assert_close(p, p0)
        torch.testing.assert_close(pt, p0.expand_as(pt))


def test_proximal_penalty_value():
    model = DynamicsEnsemble(2, OBS, ACT, ensemble=2, elites=1, hidden=4, hidden_layers=1, seed=0)
    anchor = DynamicsEnsemble(1, OBS, ACT, ensemble=2, elites=1, hidden=4, hidden_layers=1, seed=1)
    expected = torch.zeros(2)
    for task in range(2):
        for p, a in zip(model.parameters(), anchor.parameters(), strict=True):
            expected[task] += ((p[task] - a[0]) ** 2).sum()
    torch.testing.assert_close(proximal_penalty(model, anchor), expected)
    torch.testing.assert_close(proximal_penalty(model, model), torch.zeros(2))


def test_proximal_term_pulls_theta_toward_phi():
    sampler = task_family_sampler([80, 90])
    split = HoldoutSplit(sampler, generator=torch.Generator().manual_seed(0))
    phi = DynamicsEnsemble(1, OBS, ACT, ensemble=3, elites=2, hidden=16, hidden_layers=2, seed=0)
    distances = {}
    for eta in (0.0, 10.0):
        theta = phi.empty_like(2)
        theta.copy_from_(phi)
        train_models(
            theta,
            split,
            40,
            1e-2,
            32,
            eta=eta,
            anchor=phi,
            generator=torch.Generator().manual_seed(3),
        )
        distances[eta] = proximal_penalty(theta, phi)
    assert (distances[0.0] > 0).all()
    assert (distances[10.0] < 0.3 * distances[0.0]).all(), distances


@pytest.mark.parametrize("device", DEVICES)
def test_batched_task_training_equals_separate_task_training(device):
    """T stacked task models step exactly as T separately trained models (same batches)."""
    num_tasks, steps = 3, 4
    batched = DynamicsEnsemble(
        num_tasks, OBS, ACT, ensemble=3, elites=2, hidden=16, hidden_layers=2, device=device, seed=0
    )
    with torch.no_grad():
        batched.input_mean.copy_(torch.randn(num_tasks, OBS + ACT))
    anchor = DynamicsEnsemble(
        1, OBS, ACT, ensemble=3, elites=2, hidden=16, hidden_layers=2, device=device, seed=1
    )
    singles = []
    for task in range(num_tasks):  # the reference: one model per task (a loop, on purpose)
        single = batched.empty_like(1)
        single.copy_from_(batched, torch.tensor([task]))
        singles.append(single)
    opt = torch.optim.Adam(batched.parameters(), lr=1e-2)
    single_opts = [torch.optim.Adam(m.parameters(), lr=1e-2) for m in singles]
    g = torch.Generator().manual_seed(5)
    for _ in range(steps):
        batch = TransitionBatch(
            torch.randn(num_tasks, 3, 16, OBS, generator=g).to(device),
            torch.rand(num_tasks, 3, 16, ACT, generator=g).to(device),
            torch.randn(num_tasks, 3, 16, generator=g).to(device),
            torch.randn(num_tasks, 3, 16, OBS, generator=g).to(device),
            torch.zeros(num_tasks, 3, 16, device=device),
        )
        loss = train_step(batched, opt, batch, eta=0.1, anchor=anchor)
        for task, (model, model_opt) in enumerate(zip(singles, single_opts, strict=True)):
            part = TransitionBatch(*(x[task : task + 1] for x in batch))
            single_loss = train_step(model, model_opt, part, eta=0.1, anchor=anchor)
            torch.testing.assert_close(loss[task : task + 1], single_loss, rtol=1e-5, atol=1e-5)
    for task, model in enumerate(singles):
        for p_batched, p_single in zip(batched.parameters(), model.parameters(), strict=True):
            torch.testing.assert_close(p_batched[task : task + 1], p_single, rtol=1e-5, atol=1e-6)


def test_adapted_meta_model_beats_scratch_on_unseen_related_tasks():
    """Eq. 4 from phi_m* vs a fresh model, same 25 steps and lr, on two unseen tasks.

    Meta-training uses fast settings (xi_1 = 0.5, inner lr 5e-3, K = 60): Table 2's
    xi_1 = 0.05 needs about 10x more iterations (DynamicsConfig docstring).
    """
    sampler = task_family_sampler([300] * 8, seed=3)
    split = HoldoutSplit(sampler, generator=torch.Generator().manual_seed(0))
    cfg = tiny_cfg(
        hidden=32,
        batch_size=64,
        meta_iterations=60,
        meta_inner_steps=10,
        meta_inner_lr=5e-3,
        meta_model_lr=0.5,
    )
    gen = torch.Generator().manual_seed(1)
    logged = []
    phi = meta_train(
        sampler,
        cfg,
        "cpu",
        gen,
        split=split,
        task_indices=torch.arange(6),
        seed=1,
        log_fn=lambda k, m: logged.append((k, m)),
        log_every=20,
    )
    assert phi.num_tasks == 1 and [k for k, _ in logged] == [20, 40, 60]
    unseen = torch.tensor([6, 7])
    model, metrics = adapt(
        phi,
        sampler,
        unseen,
        steps=25,
        lr=1e-3,
        eta=cfg.eta,
        generator=gen,
        split=split,
        cfg=cfg,
        seed=2,
    )
    assert model.num_tasks == 2
    assert set(metrics) == {"heldout_mse_meta", "heldout_mse_adapted", "heldout_mse_scratch"}
    adapted, scratch = metrics["heldout_mse_adapted"], metrics["heldout_mse_scratch"]
    assert (adapted < 0.2 * scratch).all(), metrics
    assert (adapted < metrics["heldout_mse_meta"]).all(), metrics
    # The adapted models keep the meta-model's (pooled) normalizer; elites were selected.
    torch.testing.assert_close(model.input_mean, phi.input_mean.expand(2, -1))
    val, mask = split.validation(unseen)
    torch.testing.assert_close(model.heldout_mse(val, mask), adapted)
    member = model.member_mse(val, mask)
    torch.testing.assert_close(
        member.gather(1, model.elite_idx).sort(1).values, member.sort(1).values[:, : cfg.elites]
    )


def test_meta_train_task_batches_are_deterministic():
    sampler = task_family_sampler([50, 60, 70, 80])
    cfg = tiny_cfg(meta_task_batch_size=2, meta_iterations=3, meta_inner_steps=2)
    runs = []
    for _ in range(2):
        phi = meta_train(sampler, cfg, generator=torch.Generator().manual_seed(4), seed=0)
        runs.append(clone_params(phi))
    for a, b in zip(*runs, strict=True):
        torch.testing.assert_close(a, b)
    other = meta_train(sampler, cfg, generator=torch.Generator().manual_seed(5), seed=0)
    assert not torch.equal(other.net.net[0].weight, runs[0][0])


def test_meta_model_and_adaptation_do_not_depend_on_the_task_chunk():
    """dynamics.task_chunk reaches Eq. 3 (meta_train), Eq. 4 (adapt) and the from-scratch
    comparison; one task per batched op gives what the whole batch gives."""
    sampler = task_family_sampler([50, 60, 70])
    runs = []
    for chunk in (1, 3):
        cfg = tiny_cfg(task_chunk=chunk)
        gen = torch.Generator().manual_seed(4)
        split = HoldoutSplit(sampler, generator=gen)
        phi = meta_train(sampler, cfg, generator=gen, split=split, seed=0)
        model, metrics = adapt(phi, sampler, steps=3, generator=gen, split=split, cfg=cfg,
                               seed=1)
        runs.append((clone_params(phi) + clone_params(model), metrics))
    for a, b in zip(runs[0][0], runs[1][0], strict=True):
        assert torch.equal(a, b)
    for name, value in runs[0][1].items():
        assert torch.equal(value, runs[1][1][name]), name


def test_bad_inputs_give_clear_errors():
    sampler = task_family_sampler([30, 30])
    cfg = tiny_cfg()
    two_task = DynamicsEnsemble.from_config(2, OBS, ACT, cfg)
    with pytest.raises(ValueError, match="meta-model with 1 task"):
        adapt(two_task, sampler, cfg=cfg)
    with pytest.raises(ValueError, match="same device"):
        meta_train(sampler, cfg, device="cuda" if sampler.device.type == "cpu" else "cpu")
    other = task_family_sampler([30, 30])
    with pytest.raises(ValueError, match="another sampler"):
        meta_train(sampler, cfg, split=HoldoutSplit(other))


def test_meta_model_on_point_robot_wind_datasets(point_robot_store):
    """Real data: meta-train on tasks 0-3, adapt to unseen tasks 40, 41 with Table 2's t, lr."""
    env_id = "merpo/PointRobotWind-v0"
    sampler = TaskSampler(env_id, tasks=[0, 1, 2, 3, 40, 41], quality="mixed", preset="test")
    gen = torch.Generator().manual_seed(0)
    split = HoldoutSplit(sampler, generator=gen)
    cfg = tiny_cfg(
        hidden=32,
        batch_size=64,
        meta_iterations=60,
        meta_inner_steps=10,
        meta_inner_lr=5e-3,
        meta_model_lr=0.5,
    )
    phi = meta_train(sampler, cfg, "cpu", gen, split=split, task_indices=torch.arange(4), seed=0)
    model, metrics = adapt(
        phi,
        sampler,
        torch.tensor([4, 5]),
        steps=cfg.adaptation_steps,
        lr=cfg.task_model_lr,
        eta=cfg.eta,
        generator=gen,
        split=split,
        cfg=cfg,
        seed=1,
    )
    assert (metrics["heldout_mse_adapted"] < 0.2 * metrics["heldout_mse_scratch"]).all(), metrics
    assert (metrics["heldout_mse_adapted"] < metrics["heldout_mse_meta"]).all(), metrics
    # One-step model rollouts from dataset states with the env's termination function.
    start = sampler.sample(16, torch.tensor([4, 5]), generator=gen).observations
    policy = lambda obs: torch.zeros(*obs.shape[:-1], sampler.act_dim)  # noqa: E731
    out = rollout(model, policy, start, 2, get_meta_info(env_id).terminated_torch, gen)
    assert out.observations.shape == (2, 32, sampler.obs_dim)
    assert torch.isfinite(out.next_observations).all() and not out.terminations.any()
