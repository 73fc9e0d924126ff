"""Dynamics ensemble (Section 4.1): shapes, NLL, normalizer, held-out split, elites, rollout."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from agent_helpers import DEVICES
from merpo_agent.dynamics import (
    CPU_CHUNK_DYNAMICS_WEIGHTS,
    DynamicsConfig,
    DynamicsEnsemble,
    HoldoutSplit,
)
from merpo_agent.model_training import ChunkedTrainer, train_from_scratch, train_models
from merpo_agent.rollout import rollout
from merpo_agent.task_slice import TaskSlice, device_chunk_size
from merpo_agent.transitions import TransitionBatch

OBS, ACT = 3, 2


def linear_system_sampler(sizes, device="cpu", seed=0, offset_scale=0.5):
    """A stand-in for merpo_data.TaskSampler: s' = s + tanh(s A) + a B + c_n, r linear.

    Tasks share A, B and the reward weights and differ in the offset c_n (like Point-Robot-Wind's
    wind). Rows are grouped by task at ``offsets`` as in the real sampler.
    """
    g = torch.Generator().manual_seed(seed)
    a_mat = torch.randn(OBS, OBS, generator=torch.Generator().manual_seed(101)) * 0.3
    b_mat = torch.randn(ACT, OBS, generator=torch.Generator().manual_seed(102)) * 0.5
    w = torch.randn(OBS + ACT, generator=torch.Generator().manual_seed(103))
    fields = {k: [] for k in ("observations", "actions", "rewards", "next_observations")}
    for n in sizes:
        c = torch.randn(OBS, generator=g) * offset_scale
        s = torch.randn(n, OBS, generator=g)
        a = torch.rand(n, ACT, generator=g) * 2 - 1
        fields["observations"].append(s)
        fields["actions"].append(a)
        fields["next_observations"].append(s + torch.tanh(s @ a_mat) + a @ b_mat + c)
        fields["rewards"].append(torch.cat([s, a], -1) @ w + c.sum())
    sz = torch.tensor(sizes)
    total = int(sz.sum())
    return SimpleNamespace(
        tasks=tuple(range(len(sizes))),
        num_tasks=len(sizes),
        obs_dim=OBS,
        act_dim=ACT,
        device=torch.device(device),
        sizes=sz.to(device),
        offsets=(torch.cumsum(sz, 0) - sz).to(device),
        terminations=torch.zeros(total, device=device),
        **{k: torch.cat(v).to(device) for k, v in fields.items()},
    )


def constant_member_model(device, num_tasks=2, ensemble=4, elites=2, logvar=-60.0):
    """Every member predicts a constant: (s' - s, r) = (member + 1) * 1 (zero weights).

    With log-variances pinned near ``logvar`` the member that produced a sample is readable
    from the sample.
    """
    model = DynamicsEnsemble(num_tasks, OBS, ACT, ensemble, elites, hidden=8, hidden_layers=1)
    with torch.no_grad():
        for p in model.net.parameters():
            p.zero_()
        last = model.net.net[-1]
        member_value = torch.arange(1, ensemble + 1, dtype=torch.float32)
        last.bias[..., : OBS + 1] = member_value[None, :, None, None].expand(
            num_tasks, -1, 1, OBS + 1
        )
        last.bias[..., OBS + 1 :] = logvar
        model.max_logvar.fill_(logvar + 1.0)
        model.min_logvar.fill_(logvar - 1.0)
    return model.to(device)


def random_batch(t, n, g, device, lead=()):
    return TransitionBatch(
        torch.randn(t, *lead, n, OBS, generator=g).to(device),
        (torch.rand(t, *lead, n, ACT, generator=g) * 2 - 1).to(device),
        torch.randn(t, *lead, n, generator=g).to(device),
        torch.randn(t, *lead, n, OBS, generator=g).to(device),
        torch.zeros(t, *lead, n).to(device),
    )


@pytest.mark.parametrize("device", DEVICES)
def test_predict_shapes_and_logvar_bounds(device):
    model = DynamicsEnsemble(
        2, OBS, ACT, ensemble=3, elites=2, hidden=16, hidden_layers=2, device=device
    )
    g = torch.Generator().manual_seed(0)
    batch = random_batch(2, 5, g, device)
    mean, logvar = model.predict(batch.observations, batch.actions)
    assert mean.shape == logvar.shape == (2, 3, 5, OBS + 1)
    member_batch = random_batch(2, 5, g, device, lead=(3,))
    mean4, _ = model.predict(member_batch.observations, member_batch.actions)
    assert mean4.shape == (2, 3, 5, OBS + 1)
    assert model.nll_loss(batch).shape == (2,)
    assert model.nll_loss(member_batch).shape == (2,)
    # Extreme raw log-variances stay inside the learned soft bounds.
    with torch.no_grad():
        model.net.net[-1].bias[..., OBS + 1 :] = 1e3
    _, high = model.predict(batch.observations, batch.actions)
    with torch.no_grad():
        model.net.net[-1].bias[..., OBS + 1 :] = -1e3
    _, low = model.predict(batch.observations, batch.actions)
    assert (high <= 0.5 + 1e-4).all() and (high > 0.0).all()
    assert (low >= -10.0 - 1e-4).all() and (low < -9.0).all()
    with pytest.raises(ValueError, match="obs"):
        model.predict(batch.observations[0], batch.actions[0])


def test_nll_value_matches_hand_computation():
    # Zero weights: member e predicts mean (e + 1) and raw log-variance 0 everywhere.
    model = constant_member_model("cpu", num_tasks=1, ensemble=2, elites=1, logvar=0.0)
    with torch.no_grad():
        model.max_logvar.fill_(0.5)
        model.min_logvar.fill_(-10.0)
    obs = torch.zeros(1, 2, OBS)
    next_obs = torch.tensor([[[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]]])
    rewards = torch.tensor([[2.0, -1.0]])
    batch = TransitionBatch(obs, torch.zeros(1, 2, ACT), rewards, next_obs, torch.zeros(1, 2))
    soft = 0.5 - math.log1p(math.exp(0.5))  # max - softplus(max - 0)
    logvar = -10.0 + math.log1p(math.exp(soft + 10.0))
    targets = [[1.0, 2.0, 3.0, 2.0], [0.0, 0.0, 0.0, -1.0]]
    expected = 0.0
    for member in (1.0, 2.0):
        terms = [
            0.5 * ((y - member) ** 2 / math.exp(logvar) + logvar + math.log(2 * math.pi))
            for row in targets
            for y in row
        ]
        expected += sum(terms) / len(terms)
    expected += 0.01 * (0.5 - (-10.0)) * (OBS + 1)
    assert model.nll_loss(batch).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_nll_matches_torch_normal_log_prob(device):
    torch.manual_seed(0)
    model = DynamicsEnsemble(
        3, OBS, ACT, ensemble=4, elites=2, hidden=16, hidden_layers=2, device=device
    )
    batch = random_batch(3, 7, torch.Generator().manual_seed(1), device)
    mean, logvar = model.predict(batch.observations, batch.actions)
    target = torch.cat([batch.next_observations - batch.observations, batch.rewards[..., None]], -1)
    log_prob = torch.distributions.Normal(mean, (0.5 * logvar).exp()).log_prob(target[:, None])
    bounds = (model.max_logvar - model.min_logvar).flatten(1).sum(1)
    expected = -log_prob.mean(dim=(2, 3)).sum(1) + 0.01 * bounds
    torch.testing.assert_close(model.nll_loss(batch), expected)


def test_normalizer_stats_and_invariance():
    g = torch.Generator().manual_seed(0)
    batch = random_batch(2, 50, g, "cpu")
    batch = batch._replace(observations=batch.observations * 5 + 3)
    batch.actions[1, :, 0] = 0.25  # a constant input column
    torch.manual_seed(0)
    model = DynamicsEnsemble(2, OBS, ACT, ensemble=2, elites=1, hidden=16, hidden_layers=1)
    model.set_normalizer(batch)
    x = torch.cat([batch.observations, batch.actions], -1)
    torch.testing.assert_close(model.input_mean, x.mean(1))
    assert model.input_std[1, OBS] == 1.0  # constant column left unscaled, not divided by 0
    torch.testing.assert_close(model.input_std[0], x[0].std(0, unbiased=False))
    # Normalizing inside the model == feeding pre-normalized inputs to an identity normalizer.
    plain = DynamicsEnsemble(2, OBS, ACT, ensemble=2, elites=1, hidden=16, hidden_layers=1)
    plain.load_state_dict(model.state_dict())
    plain.set_normalizer_stats(torch.zeros(1, OBS + ACT), torch.ones(1, OBS + ACT))
    z = (x - model.input_mean[:, None]) / model.input_std[:, None]
    torch.testing.assert_close(
        model.predict(batch.observations, batch.actions)[0],
        plain.predict(z[..., :OBS], z[..., OBS:])[0],
    )
    with pytest.raises(ValueError, match="set_normalizer"):
        model.set_normalizer(random_batch(3, 5, g, "cpu"))


@pytest.mark.parametrize("device", DEVICES)
def test_holdout_split_is_disjoint_and_complete(device):
    sizes = [40, 73, 120]
    sampler = linear_system_sampler(sizes, device)
    split = HoldoutSplit(sampler, fraction=0.1, generator=torch.Generator(device).manual_seed(0))
    assert split.num_val.tolist() == [4, 7, 12]
    val, mask = split.validation()
    assert val.observations.shape == (3, 12, OBS) and mask.sum(1).tolist() == [4, 7, 12]
    for i, (off, n) in enumerate(zip(sampler.offsets.tolist(), sizes, strict=True)):
        segment = set(range(off, off + n))
        rows = split.perm[off : off + n].tolist()
        assert set(rows) == segment  # a permutation of the task's own rows
        held = set(rows[: split.num_val[i]])
        assert not split.is_train_row[list(held)].any()
        assert split.is_train_row[list(segment - held)].all()
        # validation rows are exactly the held-out rows
        val_obs = val.observations[i][mask[i]]
        torch.testing.assert_close(val_obs, sampler.observations[rows[: split.num_val[i]]])
    # Training batches only contain training rows of their own task (matched by observation).
    batch = split.sample_train(64, members=2, generator=torch.Generator(device).manual_seed(1))
    assert batch.observations.shape == (3, 2, 64, OBS) and batch.rewards.shape == (3, 2, 64)
    for i, (off, n) in enumerate(zip(sampler.offsets.tolist(), sizes, strict=True)):
        train_rows = [r for r in range(off, off + n) if split.is_train_row[r]]
        train_obs = sampler.observations[train_rows]
        drawn = batch.observations[i].reshape(-1, OBS)
        assert (drawn[:, None, :] == train_obs[None]).all(-1).any(1).all()
    sub = split.sample_train(5, task_indices=torch.tensor([2, 0], device=device))
    assert sub.observations.shape == (2, 5, OBS)
    # Normalizer statistics over the training rows, per task and pooled.
    mean, std = split.input_stats()
    x = torch.cat([sampler.observations, sampler.actions], -1)
    for i in range(3):
        rows = x[split.is_train_row & (split.task_of_row == i)]
        torch.testing.assert_close(mean[i], rows.mean(0))
        torch.testing.assert_close(std[i], rows.std(0, unbiased=False))
    pooled_mean, _ = split.input_stats(torch.tensor([0, 1], device=device), pooled=True)
    torch.testing.assert_close(
        pooled_mean[0], x[split.is_train_row & (split.task_of_row < 2)].mean(0)
    )


def test_holdout_split_rejects_tiny_tasks():
    with pytest.raises(ValueError, match="at least 2 transitions"):
        HoldoutSplit(linear_system_sampler([1, 10]))


@pytest.mark.parametrize("device", DEVICES)
def test_elites_are_lowest_heldout_error_members(device):
    model = constant_member_model(device, num_tasks=2, ensemble=5, elites=2)
    # Make members' biases differ per task so that the best members differ per task.
    with torch.no_grad():
        bias = model.net.net[-1].bias
        bias[0, :, :, : OBS + 1] = torch.tensor([5.0, 1.2, 3.0, 0.9, 2.0], device=device)[
            :, None, None
        ]
        bias[1, :, :, : OBS + 1] = torch.tensor([0.0, 4.0, 1.1, 3.0, 1.05], device=device)[
            :, None, None
        ]
    n = 30
    obs = torch.zeros(2, n, OBS, device=device)
    batch = TransitionBatch(
        obs,
        torch.zeros(2, n, ACT, device=device),
        torch.ones(2, n, device=device),
        obs + 1.0,
        torch.zeros(2, n, device=device),
    )  # target (s' - s, r) = 1 everywhere
    mse = model.select_elites(batch)
    expected = torch.stack([(bias[t, :, 0, : OBS + 1] - 1.0).square().mean(-1) for t in range(2)])
    torch.testing.assert_close(mse, expected)
    assert sorted(model.elite_idx[0].tolist()) == [1, 3]
    assert sorted(model.elite_idx[1].tolist()) == [2, 4]
    torch.testing.assert_close(model.heldout_mse(batch), expected.sort(1).values[:, :2].mean(1))
    # A mask drops padded rows: make the padded half terribly wrong, masked out it changes nothing.
    bad = batch._replace(
        rewards=torch.cat([batch.rewards, 100 + batch.rewards], 1),
        observations=torch.cat([obs, obs], 1),
        actions=torch.cat([batch.actions, batch.actions], 1),
        next_observations=torch.cat([obs + 1, obs + 100], 1),
        terminations=torch.zeros(2, 2 * n, device=device),
    )
    mask = torch.arange(2 * n, device=device)[None].expand(2, -1) < n
    torch.testing.assert_close(model.member_mse(bad, mask), expected)


@pytest.mark.parametrize("device", DEVICES)
def test_step_uses_only_elites_uniformly(device):
    model = constant_member_model(device, num_tasks=2, ensemble=5, elites=2)
    with torch.no_grad():
        model.elite_idx.copy_(torch.tensor([[1, 3], [0, 4]], device=device))
    n = 4000
    obs = torch.randn(2, n, OBS, device=device)
    act = torch.zeros(2, n, ACT, device=device)
    gen = torch.Generator(device).manual_seed(0)
    next_obs, reward = model.step(obs, act, generator=gen)
    assert next_obs.shape == (2, n, OBS) and reward.shape == (2, n)
    member = (reward.round() - 1).long()  # member e predicts e + 1 (noise std e^-30)
    torch.testing.assert_close(next_obs - obs, (member + 1).float()[..., None].expand(-1, -1, OBS))
    for t, elites in enumerate([[1, 3], [0, 4]]):
        used = member[t]
        assert set(used.unique().tolist()) == set(elites)
        share = (used == elites[0]).float().mean().item()
        assert 0.45 < share < 0.55
    # Same generator seed -> same samples; deterministic gives the chosen member's mean.
    again = model.step(obs, act, generator=torch.Generator(device).manual_seed(0))
    torch.testing.assert_close(again[1], reward)


def test_step_samples_from_predicted_gaussian():
    model = constant_member_model("cpu", num_tasks=1, ensemble=1, elites=1, logvar=math.log(0.25))
    obs = torch.zeros(1, 20000, OBS)
    act = torch.zeros(1, 20000, ACT)
    _, reward = model.step(obs, act, generator=torch.Generator().manual_seed(0))
    _, logvar = model.predict(obs[:, :1], act[:, :1])  # soft-bounded log-variance
    std = (0.5 * logvar[0, 0, 0, -1]).exp().item()
    assert 0.45 < std < 0.6
    assert reward.mean().item() == pytest.approx(1.0, abs=0.02)  # member 0 predicts 1
    assert reward.std().item() == pytest.approx(std, rel=0.03)
    _, det = model.step(obs, torch.zeros(1, 20000, ACT), deterministic=True)
    assert (det == 1.0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_rollout_shapes_and_termination_restarts_rows(device):
    # Each member moves every coordinate by +1 (member 0 only), noise-free.
    model = constant_member_model(device, num_tasks=2, ensemble=1, elites=1)
    start = torch.zeros(2, 3, OBS, device=device)
    start[:, 1, 0] = 1.0  # row 1 starts one step closer to termination
    calls = []

    def policy(obs):
        calls.append(obs.clone())
        return torch.zeros(*obs.shape[:-1], ACT, device=obs.device)

    def terminated(obs, act, next_obs):
        return next_obs[..., 0] > 2.5

    length = 5
    out = rollout(model, policy, start, length, terminated, torch.Generator(device).manual_seed(0))
    assert out.observations.shape == (2, 3 * length, OBS)
    assert out.actions.shape == (2, 3 * length, ACT)
    assert out.rewards.shape == out.terminations.shape == (2, 3 * length)
    steps = out.observations[..., 0].reshape(2, length, 3)
    done = out.terminations.reshape(2, length, 3)
    # row 0: 0->1, 1->2, 2->3 (terminal), restart 0->1, 1->2
    assert steps[0, :, 0].tolist() == [0.0, 1.0, 2.0, 0.0, 1.0]
    assert done[0, :, 0].tolist() == [0.0, 0.0, 1.0, 0.0, 0.0]
    # row 1: 1->2, 2->3 (terminal), restart 1->2, 2->3 (terminal), restart 1->2
    assert steps[0, :, 1].tolist() == [1.0, 2.0, 1.0, 2.0, 1.0]
    assert done[0, :, 1].tolist() == [0.0, 1.0, 0.0, 1.0, 0.0]
    # No transition ever starts from a terminal next state.
    next0 = out.next_observations.reshape(2, length, 3, OBS)
    obs0 = out.observations.reshape(2, length, 3, OBS)
    terminal = done[:, :-1].bool()
    assert not (obs0[:, 1:][terminal] == next0[:, :-1][terminal]).all(-1).any()
    assert len(calls) == length
    with pytest.raises(ValueError, match="start_obs"):
        rollout(model, policy, start[0], length, terminated)


def test_rollout_with_point_robot_termination_fn():
    import merpo_envs

    info = merpo_envs.get_meta_info("merpo/PointRobotWind-v0")
    model = DynamicsEnsemble(
        2, info.obs_dim, info.act_dim, ensemble=3, elites=2, hidden=8, hidden_layers=1
    )
    out = rollout(
        model,
        lambda o: torch.zeros(*o.shape[:-1], info.act_dim),
        torch.zeros(2, 4, info.obs_dim),
        3,
        info.terminated_torch,
    )
    assert out.observations.shape == (2, 12, info.obs_dim) and not out.terminations.any()


def test_training_reduces_heldout_mse_on_linear_system():
    sampler = linear_system_sampler([300, 340])
    split = HoldoutSplit(sampler, generator=torch.Generator().manual_seed(0))
    cfg = DynamicsConfig(ensemble=3, elites=2, hidden=32, hidden_layers=2, batch_size=64)
    _, before = train_from_scratch(split, cfg, steps=0, seed=0)
    gen = torch.Generator().manual_seed(1)
    model, after = train_from_scratch(split, cfg, steps=300, lr=3e-3, generator=gen, seed=0)
    assert model.num_tasks == 2
    assert (after < 0.1 * before).all(), (before, after)
    assert (after < 0.05).all(), after


def test_config_validation():
    with pytest.raises(ValueError, match="elites"):
        DynamicsConfig(ensemble=3, elites=5)
    with pytest.raises(ValueError, match="holdout_fraction"):
        DynamicsConfig(holdout_fraction=1.5)
    model = DynamicsEnsemble.from_config(2, OBS, ACT, DynamicsConfig(hidden=8, hidden_layers=1))
    assert model.net.net[0].weight.shape == (2, 7, OBS + ACT, 8) and model.elite_idx.shape == (2, 5)


@pytest.mark.parametrize("device", DEVICES)
def test_chunked_training_equals_whole_batch_training(device):
    """Eq. 3-4 with chunks of 1, 2 or all T = 5 tasks per batched op (each chunk its own
    Adam): the same parameters, objectives and generator state after a few steps, bit for
    bit on the CPU (each step's batch is drawn once for all tasks and cut)."""
    sampler = linear_system_sampler([200, 240, 260, 300, 220], device)
    split = HoldoutSplit(sampler, generator=torch.Generator(device).manual_seed(0))
    phi = DynamicsEnsemble(1, OBS, ACT, 3, 2, 16, 2, device=device, seed=1)
    results = {}
    for chunk in (1, 2, 5):
        model = DynamicsEnsemble(5, OBS, ACT, 3, 2, 16, 2, device=device, seed=0)
        model.set_normalizer_stats(*split.input_stats())
        assert [c is None or c.size for c in ChunkedTrainer(model, 1e-2, chunk).chunks] == {
            1: [1] * 5, 2: [2, 2, 1], 5: [True]}[chunk]
        gen = torch.Generator(device).manual_seed(3)
        global_rng = torch.get_rng_state()
        last = train_models(model, split, 4, 1e-2, 32, eta=0.1, anchor=phi, generator=gen,
                            task_chunk=chunk)
        assert torch.equal(torch.get_rng_state(), global_rng)  # no weights drawn for views
        results[chunk] = ([p.detach().clone() for p in model.parameters()], last,
                          gen.get_state())
    whole_params, whole_last, whole_gen = results[5]
    assert not torch.equal(whole_params[0], DynamicsEnsemble(
        5, OBS, ACT, 3, 2, 16, 2, device=device, seed=0).net.net[0].weight)
    check = torch.equal if device == "cpu" else (
        lambda a, b: torch.allclose(a, b, rtol=1e-5, atol=1e-6))
    for chunk in (1, 2):
        params, last, gen_state = results[chunk]
        assert all(check(a, b) for a, b in zip(params, whole_params, strict=True)), chunk
        assert check(last, whole_last) and torch.equal(gen_state, whole_gen)


def test_task_rows_are_views_of_the_models_rows():
    model = DynamicsEnsemble(4, OBS, ACT, 3, 2, 8, 1, seed=0)
    view = model.task_rows(TaskSlice(1, 3, 4))
    assert view.num_tasks == 2 and view.device == model.device
    assert view.elite_idx.shape == (2, 2) and view.input_mean.shape == (2, OBS + ACT)
    with torch.no_grad():
        view.net.net[0].weight.add_(1.0)
        view.max_logvar.fill_(3.0)
    assert torch.equal(model.max_logvar[1:3], torch.full_like(model.max_logvar[1:3], 3.0))
    assert (model.max_logvar[[0, 3]] == 0.5).all()
    fresh = DynamicsEnsemble(4, OBS, ACT, 3, 2, 8, 1, seed=0)
    assert torch.equal(model.net.net[0].weight[1:3], fresh.net.net[0].weight[1:3] + 1.0)
    assert torch.equal(model.net.net[0].weight[0], fresh.net.net[0].weight[0])
    with pytest.raises(ValueError, match="slice of 5 tasks"):
        model.task_rows(TaskSlice(0, 1, 5))


def test_chunk_size_per_device_and_override():
    """A GPU keeps the whole batch; a CPU fits chunks to CPU_CHUNK_DYNAMICS_WEIGHTS (Table 2's
    7 x 4 x 256 ensembles one task at a time); dynamics.task_chunk overrides both."""
    small = DynamicsEnsemble(8, OBS, ACT, 3, 2, 16, 2)
    assert small.chunk_size() == min(8, CPU_CHUNK_DYNAMICS_WEIGHTS // small.weights_per_task)
    assert small.chunk_size(3) == 3 and small.chunk_size(99) == 8
    table2 = DynamicsEnsemble.from_config(2, 17, 6, DynamicsConfig())
    assert 2 * table2.weights_per_task > CPU_CHUNK_DYNAMICS_WEIGHTS and table2.chunk_size() == 1
    assert device_chunk_size("cuda", 40, table2.weights_per_task, 1) == 40  # what a GPU gets
    with pytest.raises(ValueError, match="task_chunk=-1 must be >= 0"):
        DynamicsConfig(task_chunk=-1)


def test_seeded_init_is_reproducible():
    a = DynamicsEnsemble(2, OBS, ACT, 3, 2, 8, 2, seed=5)
    b = DynamicsEnsemble(2, OBS, ACT, 3, 2, 8, 2, seed=5)
    c = DynamicsEnsemble(2, OBS, ACT, 3, 2, 8, 2, seed=6)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.net.net[0].weight, c.net.net[0].weight)


def test_predict_elites_equals_predict_of_the_elite_members():
    """``step`` evaluates only the elites: the same numbers as all members, then gathered."""
    torch.manual_seed(0)
    model = DynamicsEnsemble(2, OBS, ACT, ensemble=5, elites=3, hidden=16, hidden_layers=2)
    model.set_normalizer_stats(torch.randn(2, OBS + ACT), torch.rand(2, OBS + ACT) + 0.5)
    model.elite_idx.copy_(torch.tensor([[4, 0, 2], [1, 3, 2]]))
    obs, act = torch.randn(2, 9, OBS), torch.rand(2, 9, ACT) * 2 - 1
    mean, logvar = model.predict(obs, act)
    elite_mean, elite_logvar = model.predict_elites(obs, act)
    index = model.elite_idx[:, :, None, None].expand(-1, -1, 9, OBS + 1)
    assert torch.allclose(elite_mean, mean.gather(1, index), atol=1e-6)
    assert torch.allclose(elite_logvar, logvar.gather(1, index), atol=1e-6)
    assert not torch.allclose(elite_mean[:, 0], elite_mean[:, 1])  # members really differ


# ------------------------------------------------------------------ stratified elite step
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [1, 7, 10, 64])
def test_step_output_is_exactly_one_elites_prediction(device, n):
    """Each sample goes through exactly one of its task's elites, on its own input."""
    torch.manual_seed(0)
    model = DynamicsEnsemble(2, OBS, ACT, ensemble=7, elites=3, hidden=16, hidden_layers=2)
    model.set_normalizer_stats(torch.randn(2, OBS + ACT), torch.rand(2, OBS + ACT) + 0.5)
    model.elite_idx.copy_(torch.tensor([[6, 0, 2], [1, 5, 4]]))
    model.to(device)
    obs, act = torch.randn(2, n, OBS, device=device), torch.rand(2, n, ACT, device=device)
    mean, _ = model.predict(obs, act)  # (T, E, N, D): every member on every sample
    expected = torch.cat([mean[..., :-1] + obs[:, None], mean[..., -1:]], dim=-1)
    gen = torch.Generator(device).manual_seed(3)
    next_obs, reward = model.step(obs, act, generator=gen, deterministic=True)
    got = torch.cat([next_obs, reward[..., None]], dim=-1)
    err = (expected - got[:, None]).abs().amax(dim=-1)  # (T, E, N)
    matches = err < 1e-5
    assert (matches.sum(dim=1) == 1).all()  # exactly one member explains each output
    member = matches.float().argmax(dim=1)
    for t in range(2):
        assert set(member[t].tolist()) <= set(model.elite_idx[t].tolist())
    # Same seed, same deal; deterministic=False adds each chosen member's own noise.
    again = model.step(
        obs, act, generator=torch.Generator(device).manual_seed(3), deterministic=True
    )
    assert torch.equal(again[1], reward)
    _, noisy = model.step(obs, act, generator=torch.Generator(device).manual_seed(3))
    assert not torch.equal(noisy, reward)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n, elites", [(4001, 3), (7, 5), (13, 4), (3, 5), (25, 5)])
def test_step_deals_equal_shares_to_the_elites(device, n, elites):
    model = constant_member_model(device, num_tasks=3, ensemble=6, elites=elites)
    gen = torch.Generator().manual_seed(1)
    elite_idx = torch.stack([torch.randperm(6, generator=gen)[:elites] for _ in range(3)])
    model.elite_idx.copy_(elite_idx.to(device))
    obs = torch.randn(3, n, OBS, device=device)
    _, reward = model.step(
        obs, torch.zeros(3, n, ACT, device=device), generator=torch.Generator(device).manual_seed(0)
    )
    member = (reward.round() - 1).long()  # member e predicts e + 1 (noise std e^-30)
    for t in range(3):
        counts = torch.bincount(member[t].cpu(), minlength=6)[elite_idx[t]]
        assert counts.sum() == n
        assert counts.min() >= n // elites and counts.max() <= -(-n // elites), counts
        others = torch.ones(6, dtype=torch.bool)
        others[elite_idx[t]] = False
        assert torch.bincount(member[t].cpu(), minlength=6)[others].sum() == 0


@pytest.mark.parametrize("device", DEVICES)
def test_each_samples_elite_is_uniform_across_draws(device):
    """Over many draws every sample position meets every elite with probability 1 / K, also
    when K does not divide N (position mod K alone would favour the first elites)."""
    tasks, n, elites = 2000, 7, 5  # tasks are independent draws of the deal
    model = constant_member_model(device, num_tasks=tasks, ensemble=7, elites=elites)
    model.elite_idx.copy_(torch.tensor([6, 1, 3, 0, 4], device=device).expand(tasks, -1))
    obs, act = torch.zeros(tasks, n, OBS, device=device), torch.zeros(tasks, n, ACT, device=device)
    gen = torch.Generator(device).manual_seed(0)
    members = torch.cat([model.step(obs, act, generator=gen)[1] for _ in range(3)])
    members = (members.round() - 1).long().cpu()  # (3 * tasks, n)
    for i in range(n):
        share = torch.bincount(members[:, i], minlength=7)[[6, 1, 3, 0, 4]] / members.shape[0]
        assert (share - 1 / elites).abs().max() < 0.03, (i, share)  # ~4.5 standard errors
