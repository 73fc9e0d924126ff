"""torch.distributed building blocks (merpo_agent.distributed): sharding and collectives.

The multi-process test launches 2 Gloo ranks with ``python -m torch.distributed.run
--standalone`` on a small script and checks, against the single-process computation of the
same numbers: sharding covers every task exactly once, ``all_reduce_mean_`` (plain and
weighted by uneven shard sizes) equals the single-process mean, ``all_reduce_sum_``
merges per-rank changes of disjoint columns, ``any_rank`` ORs a flag, ``broadcast_module_``
copies rank 0's parameters, and a meta-policy step (Eq. 10) plus a meta-Q averaging step
computed on task shards and combined with all-reduce give the parameters of the
single-process step on the whole task batch.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
from merpo_agent.distributed import (
    all_gather_objects,
    all_reduce_mean_,
    all_reduce_sum_,
    any_rank,
    barrier,
    broadcast_module_,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_rank,
    shard,
    shard_bounds,
)

# --------------------------------------------------------------------------- in-process


@pytest.mark.parametrize("count", [0, 1, 2, 5, 7, 8, 40])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shard_covers_every_item_once_in_order(count, world):
    items = list(range(100, 100 + count))
    shares = [list(shard(items, r, world)) for r in range(world)]
    assert [x for share in shares for x in share] == items  # contiguous, in order, once
    sizes = [len(s) for s in shares]
    assert max(sizes) - min(sizes) <= 1
    assert sizes == sorted(sizes, reverse=True)  # the extra items go to the first ranks


def test_shard_works_on_tensors_and_ranges():
    tasks = torch.arange(7)
    assert torch.equal(shard(tasks, 0, 2), torch.tensor([0, 1, 2, 3]))
    assert torch.equal(shard(tasks, 1, 2), torch.tensor([4, 5, 6]))
    assert list(shard(range(5), 2, 3)) == [4]
    assert shard_bounds(5, 1, 3) == (2, 4)


@pytest.mark.parametrize(
    "args, message",
    [((5, 2, 2), "rank must be in 0..1"), ((5, 0, 0), "world size must be >= 1"),
     ((-1, 0, 1), "count must be >= 0")],
)
def test_shard_bad_input_names_the_problem(args, message):
    with pytest.raises(ValueError, match=message):
        shard_bounds(*args)


def test_single_process_is_a_no_op(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    context = init_distributed("cpu")
    assert (context.rank, context.world_size, context.local_rank) == (0, 1, 0)
    assert context.is_main and not context.distributed
    assert context.device == torch.device("cpu")
    assert (get_rank(), get_world_size(), is_main_rank()) == (0, 1, True)
    x = torch.tensor([1.0, 2.0])
    all_reduce_mean_([x, None], weight=3.0)
    all_reduce_sum_([x])
    assert torch.equal(x, torch.tensor([1.0, 2.0]))
    assert any_rank(torch.tensor(True)).item() and not any_rank(torch.tensor(False)).item()
    layer = torch.nn.Linear(2, 2)
    before = [p.clone() for p in layer.parameters()]
    broadcast_module_(layer)
    barrier()
    assert all(torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))
    assert all_gather_objects({"a": 1}) == [{"a": 1}]


def test_inconsistent_environment_is_one_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="launch with torchrun"):
        init_distributed("cpu")
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two' must be an integer"):
        init_distributed("cpu")


# --------------------------------------------------------------------------- 2 processes

# Run by torchrun (2 ranks) AND as a plain single process: the single-process run is the
# reference for the meta-updates (same seeds, whole task batch on one rank).
WORKER = textwrap.dedent(
    """
    import sys
    import torch
    from merpo_agent import distributed as D
    from merpo_agent.meta_policy import (
        MetaPolicy, make_meta_critic, meta_policy_loss, meta_q_update_,
    )
    from merpo_data.networks import StackedMLP

    torch.set_num_threads(1)
    out_dir = sys.argv[1]
    ctx = D.init_distributed("cpu")
    rank, world = ctx.rank, ctx.world_size
    result = {"rank": rank, "world": world, "is_main": D.is_main_rank()}

    # Sharding: every rank's share, gathered.
    result["shards"] = D.all_gather_objects(
        {n: list(D.shard(list(range(n)), rank, world)) for n in (2, 3, 7, 40)}
    )

    # all_reduce_mean_: per-rank values from per-rank seeds, two dtypes, a None (no grad).
    g = torch.Generator().manual_seed(100 + rank)
    a, b = torch.randn(3, 4, generator=g), torch.randn(5, generator=g)
    c = torch.randn(2, generator=g, dtype=torch.float64)
    D.all_reduce_mean_([a, None, b, c])
    result["plain"] = [a, b, c]
    w = torch.randn(6, generator=g)
    D.all_reduce_mean_([w], weight=float(rank + 1))
    result["weighted"] = w

    # all_reduce_sum_ of per-rank changes in disjoint columns (the dual-table pattern).
    table = torch.arange(12.0).reshape(2, 6)
    before = table.clone()
    cols = D.shard(list(range(6)), rank, world)
    table[:, cols] += 100.0 * (rank + 1)
    delta = table - before
    D.all_reduce_sum_([delta])
    result["table"] = before + delta
    result["any"] = [D.any_rank(torch.tensor(rank == 1)).item(),
                     D.any_rank(torch.tensor(False)).item()]

    # broadcast_module_: rank 0's initial parameters everywhere.
    torch.manual_seed(10 + rank)
    layer = torch.nn.Linear(3, 2)
    D.broadcast_module_(layer, src=0)
    result["broadcast"] = [p.detach().clone() for p in layer.parameters()]

    # One meta-policy step (Eq. 10) and one meta-Q step on a task batch of 3 tasks,
    # each rank taking its shard of the tasks.
    obs_dim, act_dim, n, tasks = 3, 2, 16, 3
    gen = torch.Generator().manual_seed(7)
    states = torch.randn(tasks, n, obs_dim, generator=gen)
    task_mean = torch.randn(tasks, n, act_dim, generator=gen)
    task_log_std = 0.3 * torch.randn(tasks, n, act_dim, generator=gen)
    lam = torch.rand(tasks, generator=gen) * 5
    alpha = torch.rand(tasks, generator=gen)
    torch.manual_seed(0)
    policy = MetaPolicy(obs_dim, act_dim, hidden=8, hidden_layers=2)
    meta_q = make_meta_critic(obs_dim, act_dim, hidden=8, hidden_layers=2)
    task_q = StackedMLP((tasks, 2), obs_dim + act_dim, 1, 8, 2)
    optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)
    mine = torch.as_tensor(D.shard(range(tasks), rank, world), dtype=torch.long)
    local = len(mine)
    loss = meta_policy_loss(policy, task_mean[mine], task_log_std[mine], states[mine],
                            lam[mine], alpha[mine])
    optimizer.zero_grad()
    loss.backward()
    D.all_reduce_gradients_(policy, weight=float(local))
    optimizer.step()
    with torch.no_grad():
        local_q = StackedMLP((local, 2), obs_dim + act_dim, 1, 8, 2)
        for dst, src in zip(local_q.parameters(), task_q.parameters(), strict=True):
            dst.copy_(src[mine])
    meta_q_update_(meta_q, local_q, 0.3)
    D.all_reduce_mean_(list(meta_q.parameters()), weight=float(local))
    result["meta_policy"] = [p.detach().clone() for p in policy.parameters()]
    result["meta_q"] = [p.detach().clone() for p in meta_q.parameters()]

    torch.save(result, f"{out_dir}/rank{rank}.pt")
    D.barrier()
    D.destroy_distributed()
    """
)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, env=_clean_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"


def _load(path) -> dict:
    return torch.load(path, weights_only=True)


def test_two_gloo_ranks_match_the_single_process_run(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    single, multi = tmp_path / "single", tmp_path / "multi"
    single.mkdir()
    multi.mkdir()
    _run([sys.executable, str(script), str(single)])
    _run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
          "--standalone", str(script), str(multi)])
    ref = _load(single / "rank0.pt")
    ranks = [_load(multi / f"rank{r}.pt") for r in range(2)]
    assert ref["world"] == 1
    assert [(r["rank"], r["world"], r["is_main"]) for r in ranks] == [(0, 2, True), (1, 2, False)]

    # Sharding: both ranks see the same gathered shares; together they cover each task once.
    for r in ranks:
        assert r["shards"] == ranks[0]["shards"]
    for n in (2, 3, 7, 40):
        covered = ranks[0]["shards"][0][n] + ranks[0]["shards"][1][n]
        assert covered == list(range(n))

    # all_reduce_mean_ == the single-process mean of the two ranks' values.
    def values(rank):
        g = torch.Generator().manual_seed(100 + rank)
        a, b = torch.randn(3, 4, generator=g), torch.randn(5, generator=g)
        c = torch.randn(2, generator=g, dtype=torch.float64)
        return [a, b, c], torch.randn(6, generator=g)

    (v0, w0), (v1, w1) = values(0), values(1)
    for r in ranks:
        for got, x0, x1 in zip(r["plain"], v0, v1, strict=True):
            assert got.dtype == x0.dtype
            torch.testing.assert_close(got, (x0 + x1) / 2)
        torch.testing.assert_close(r["weighted"], (1.0 * w0 + 2.0 * w1) / 3.0)
        for got, want in zip(r["broadcast"], ranks[0]["broadcast"], strict=True):
            assert torch.equal(got, want)
    want_table = torch.arange(12.0).reshape(2, 6)
    want_table[:, :3] += 100.0
    want_table[:, 3:] += 200.0
    for r in ranks:
        assert torch.equal(r["table"], want_table)
        assert r["any"] == [True, False]
    torch.manual_seed(10)
    rank0_layer = torch.nn.Linear(3, 2)
    for got, want in zip(ranks[1]["broadcast"], rank0_layer.parameters(), strict=True):
        assert torch.equal(got, want.detach())

    # Meta-updates on shards (2 tasks + 1 task) combined by all-reduce == whole-batch step.
    for key in ("meta_policy", "meta_q"):
        for r in ranks:
            for got, want in zip(r[key], ref[key], strict=True):
                torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # ...and the step did move the parameters (the comparison is not vacuous).
    torch.manual_seed(0)
    from merpo_agent.meta_policy import MetaPolicy

    initial = MetaPolicy(3, 2, hidden=8, hidden_layers=2)
    pairs = zip(initial.parameters(), ref["meta_policy"], strict=True)
    assert all(not torch.allclose(p, q) for p, q in pairs)
