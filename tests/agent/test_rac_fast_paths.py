"""The opt-in fast paths of TaskLearners.update give the eager results.

- ``RACConfig.compile``: torch.compile of the pure loss math (``rac_losses.
  conservative_critic_terms`` / ``regularized_actor_terms``); compared with eager on CPU.
  (Compiling the networks' forward and backward too took ~95 s on CI's 2 cores, so the
  flag compiles the loss functions only; the networks are library matmuls either way.)
- ``RACConfig.cuda_graphs``: the whole update replayed as a CUDA graph; compared with eager
  by a ``gpu`` test (CUDA only), through warmup, capture, replays, an ``init_from_meta``
  (optimizer states reset in place) and a new behavior-cloning module.
- Fused Adam (the default where the device has it) steps like the reference Adam.
"""

from __future__ import annotations

import pytest
import torch
from agent_helpers import random_batch, small_config
from merpo_agent.behavior_cloning import BehaviorCloning
from merpo_agent.meta_policy import MetaLearner
from merpo_agent.optimizers import adam_options
from merpo_agent.rac_config import RACConfig
from merpo_agent.task_learners import TaskLearners

OBS, ACT, T = 3, 2, 3


def run(cfg: RACConfig, steps: int, device: str = "cpu", reinit_at: int | None = None):
    """``steps`` updates from fixed seeds; returns the final state and every step's metrics."""
    torch.manual_seed(0)
    learners = TaskLearners(
        cfg, OBS, ACT, num_slots=T, device=device,
        generator=torch.Generator(device).manual_seed(7),
    )
    meta = MetaLearner(cfg, OBS, ACT, device=device)
    bc = BehaviorCloning(T, OBS, ACT, hidden=8, hidden_layers=1, device=device)
    g = torch.Generator().manual_seed(1)
    history = []
    for step in range(steps):
        if step == reinit_at:  # a new meta-iteration: new slots, fresh optimizers
            learners.init_from_meta(meta.policy, meta.q)
        real = random_batch(T, cfg.real_batch_size, g, device=device)
        model = random_batch(T, cfg.model_batch_size, g, device=device) if cfg.use_model else None
        bc_policy = bc.select(torch.arange(T))  # a new module each call, as in the trainer
        history.append(learners.update(real, model, meta.policy, bc_policy))
    return learners.state_dict(), history


def assert_same(a, b, atol=1e-5, rtol=1e-4):
    (state_a, history_a), (state_b, history_b) = a, b
    for name, value in state_a.items():
        assert torch.allclose(value, state_b[name], atol=atol, rtol=rtol), name
    for metrics_a, metrics_b in zip(history_a, history_b, strict=True):
        for name, value in metrics_a.items():
            assert torch.allclose(value, metrics_b[name], atol=atol, rtol=rtol), name


@pytest.mark.slow
def test_compiled_loss_math_gives_the_eager_updates():
    eager = run(small_config(), steps=3)
    compiled = run(small_config(compile=True), steps=3)
    assert_same(eager, compiled)
    moved = run(small_config(), steps=4)  # the comparison can tell one more step apart
    assert not torch.allclose(
        moved[0]["actor.trunk.net.0.weight"], eager[0]["actor.trunk.net.0.weight"]
    )


def test_fused_adam_steps_like_the_reference_adam():
    assert adam_options("cpu") == {"fused": True}
    torch.manual_seed(0)
    params = [torch.randn(4, 5, requires_grad=True) for _ in range(2)]
    twins = [p.detach().clone().requires_grad_(True) for p in params]
    fused = torch.optim.Adam(params, lr=1e-2, **adam_options("cpu"))
    reference = torch.optim.Adam(twins, lr=1e-2, foreach=False)
    for _ in range(5):
        for group, opt in ((params, fused), (twins, reference)):
            opt.zero_grad(set_to_none=True)
            sum((p.sin() * torch.arange(5.0)).sum() for p in group).backward()
            opt.step()
    for p, q in zip(params, twins, strict=True):
        assert torch.allclose(p, q, atol=1e-6)


def test_cuda_graphs_on_a_cpu_device_is_a_clear_error():
    with pytest.raises(ValueError, match="cuda_graphs=True needs a CUDA device"):
        TaskLearners(small_config(cuda_graphs=True), OBS, ACT, num_slots=T, device="cpu")
    with pytest.raises(ValueError, match="cuda_graph_warmup"):
        small_config(cuda_graph_warmup=0)


@pytest.mark.gpu
@pytest.mark.parametrize("algo", ["merpo", "cql"])
def test_cuda_graph_updates_equal_eager_updates(algo):
    # 3 eager warmup steps, capture at step 3, replays after; init_from_meta at step 5 zeroes
    # the captured optimizers' states in place; every step passes a new bc module.
    eager = run(small_config(algo), steps=8, device="cuda", reinit_at=5)
    graphed = run(small_config(algo, cuda_graphs=True), steps=8, device="cuda", reinit_at=5)
    assert_same(eager, graphed)


@pytest.mark.gpu
def test_compiled_cuda_graph_updates_equal_eager_updates():
    eager = run(small_config(), steps=6, device="cuda")
    both = run(small_config(compile=True, cuda_graphs=True), steps=6, device="cuda")
    assert_same(eager, both)
