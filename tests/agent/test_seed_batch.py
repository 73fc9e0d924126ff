"""Seeds as one more batch axis (``train --seeds``): each seed of a batch ends with exactly
the run directory it has trained alone (every checkpoint tensor, every metric and meta-test
return), for MerPO and each baseline; a killed batch resumes every seed exactly; a seed
that diverges stops alone; bad ``--seeds`` are one line."""

from __future__ import annotations

import json

import pytest
import torch
from merpo_agent.cli import main

ENV = "merpo/PointRobotWind-v0"
# the baselines' smoke runs, shortened, on the test store's tasks
BASELINE = ["data.train_tasks=[0,1,2,3]", "data.test_tasks=[40,41]", "run.steps=30",
            "eval.every=20", "run.log_every=10", "run.checkpoint_every=20"]
# MerPO at the small preset's network sizes with odd batch sizes: outputs whose blocks
# do not fall on vector or alignment boundaries (what ``by_seed`` and ``seed_baddbmm``
# keep exact)
ODD = ["data.preset=test", "data.train_tasks=0-3", "data.test_tasks=40-41",
       "meta.task_batch_size=3", "run.steps=40", "eval.every=20", "dynamics.meta_iterations=5",
       "rac.bc_steps=10", "dynamics.adaptation_steps=5", "dynamics.scratch_steps=5",
       "rac.batch_size=37", "rollout.batch_size=41", "rac.cql_uniform_actions=3"]


def _train(run_dir, algo, *args, preset="smoke", settings=(), expect=0):
    code = main(["train", "--env", ENV, "--algo", algo, "--preset", preset, "--run-dir",
                 str(run_dir), "--no-progress", "--threads", "1", *args,
                 *[x for item in settings for x in ("--set", item)]])
    assert code == expect


def _tensors(state, prefix=""):
    """Every tensor of a checkpoint by its key path, but numpy's and Python's random states
    (not seeded by a run: they differ between any two processes)."""
    if isinstance(state, torch.Tensor):
        yield prefix, state
    elif isinstance(state, dict):
        for key, value in state.items():
            if f"{prefix}.{key}" not in ("rng.numpy", "rng.python"):
                yield from _tensors(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(state, (list, tuple)):
        for i, value in enumerate(state):
            yield from _tensors(value, f"{prefix}.{i}")


def _records(run_dir):
    """The run's metric records without their clock readings."""
    records = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        record.pop("time", None)
        record.pop("wall_s", None)
        records.append(record)
    return records


def assert_same_run(alone, batched):
    """Two run directories hold the same run: every checkpoint (latest, previous, the
    adapted policies) tensor for tensor, bit for bit, and the same metric records."""
    checkpoints = sorted(p.name for p in (alone / "checkpoints").glob("*.pt"))
    assert checkpoints and checkpoints == sorted(
        p.name for p in (batched / "checkpoints").glob("*.pt"))
    for name in checkpoints:
        a = dict(_tensors(torch.load(alone / "checkpoints" / name, weights_only=True)))
        b = dict(_tensors(torch.load(batched / "checkpoints" / name, weights_only=True)))
        assert a.keys() == b.keys(), name
        for key, value in a.items():
            assert value.dtype == b[key].dtype and torch.equal(value, b[key]), f"{name}: {key}"
    assert _records(alone) == _records(batched)


@pytest.mark.parametrize("algo, preset, settings, seeds", [
    ("merpo", "smoke", (), (0, 1)),
    ("merpo-adp", "small", ODD, (0, 1, 2)),
    ("focal", "smoke", BASELINE, (0, 1)),
    ("cbcq", "smoke", BASELINE, (0, 1)),
    ("mbml", "smoke", BASELINE, (0, 1)),
    ("batch-pearl", "smoke", BASELINE, (0, 1)),
])
def test_each_seed_of_a_batch_is_the_run_it_is_alone(point_robot_store, tmp_path, algo, preset,
                                                     settings, seeds):
    for seed in seeds:
        _train(tmp_path / f"alone-{seed}", algo, "--seed", str(seed), preset=preset,
               settings=settings)
    _train(tmp_path / "batch", algo, "--seeds", ",".join(map(str, seeds)), preset=preset,
           settings=settings)
    for seed in seeds:
        assert_same_run(tmp_path / f"alone-{seed}", tmp_path / "batch" / f"seed-{seed}")
    # and the seeds really differ: a batch is not one seed's run written S times
    first, last = (torch.load(tmp_path / "batch" / f"seed-{s}" / "checkpoints" / "latest.pt",
                              weights_only=True) for s in (seeds[0], seeds[-1]))
    assert dict(_tensors(first))["rng.torch"].ne(dict(_tensors(last))["rng.torch"]).any()


class _Killed(Exception):
    """The process died here (a kill after the first checkpoints)."""


@pytest.mark.parametrize("algo, settings", [("merpo", ()), ("cbcq", BASELINE)])
def test_a_killed_batch_resumes_every_seed_exactly(point_robot_store, tmp_path, monkeypatch,
                                                   algo, settings):
    if algo == "merpo":  # killed in meta-iteration 3 of 4 (checkpoints at 2 and 4)
        from merpo_agent import seed_batch

        cls, name, calls = seed_batch._Stack, "meta_iteration", 2
    else:  # killed in update 25 of 30 (checkpoints every 20)
        from merpo_agent.baselines.contextual_bcq import ContextualBCQLearner

        cls, name, calls = ContextualBCQLearner, "step", 24
    real = getattr(cls, name)
    count = {"n": 0}

    def dies(self, *args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise _Killed
        return real(self, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(cls, name, dies)
        with pytest.raises(_Killed):
            main(["train", "--env", ENV, "--algo", algo, "--preset", "smoke", "--seeds", "0-1",
                  "--run-dir", str(tmp_path / "killed"), "--no-progress", "--threads", "1",
                  *[x for item in settings for x in ("--set", item)]])
    for seed in (0, 1):
        saved = torch.load(tmp_path / "killed" / f"seed-{seed}" / "checkpoints" / "latest.pt",
                           weights_only=True)
        assert saved.get("iteration", saved.get("step")) in (2, 20)  # the first checkpoint
    _train(tmp_path / "killed", algo, "--seeds", "0-1", settings=settings)  # resumes
    _train(tmp_path / "whole", algo, "--seeds", "0-1", settings=settings)
    for seed in (0, 1):
        sessions = json.loads((tmp_path / "killed" / f"seed-{seed}" / "run.json").read_text())
        assert len(sessions["sessions"]) == 2
        assert_same_run(tmp_path / "whole" / f"seed-{seed}",
                        tmp_path / "killed" / f"seed-{seed}")


@pytest.mark.parametrize("algo, settings", [("merpo", ()), ("cbcq", BASELINE)])
def test_a_diverged_seed_stops_as_alone_and_the_others_train_on(point_robot_store, tmp_path,
                                                                monkeypatch, capsys, algo,
                                                                settings):
    """Seed 1's critics turn NaN in the second half of the run: it keeps its checkpoint of
    the half (writing nothing more), seed 0 ends exactly as alone, and the batch exits with
    the one line naming seed 1."""
    if algo == "merpo":  # NaN critics in meta-iteration 3 of 4 (checkpoints at 2 and 4)
        from merpo_agent import seed_batch

        cls, name, at, kept_at = seed_batch._Stack, "meta_iteration", 3, 2

        def poison(stack):
            n = stack.num_train  # seed 1's learners: the table's rows n..2n-1
            stack.table.learners.critic.net[0].weight[n:].fill_(float("nan"))
    else:  # in update 25 of 30 (checkpoints every 20)
        from merpo_agent.baselines.contextual_bcq import ContextualBCQLearner

        cls, name, at, kept_at = ContextualBCQLearner, "step", 25, 20

        def poison(learner):
            learner.agent.critic.net.net[0].weight[1].fill_(float("nan"))  # seed 1's
    real = getattr(cls, name)
    count = {"n": 0}

    def poisoned(self, *args):
        if getattr(self, "count", getattr(self, "seeds", 1)) == 2:
            count["n"] += 1
            if count["n"] == at:
                with torch.no_grad():
                    poison(self)
        return real(self, *args)

    _train(tmp_path / "alone-0", algo, "--seed", "0", settings=settings)
    monkeypatch.setattr(cls, name, poisoned)
    capsys.readouterr()
    _train(tmp_path / "batch", algo, "--seeds", "0-1", settings=settings, expect=1)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed 1: non-finite loss" in err[0], err
    assert count["n"] > at  # the others trained on after seed 1 stopped
    assert_same_run(tmp_path / "alone-0", tmp_path / "batch" / "seed-0")
    kept = torch.load(tmp_path / "batch" / "seed-1" / "checkpoints" / "latest.pt",
                      weights_only=True)
    assert kept.get("iteration", kept.get("step")) == kept_at


@pytest.mark.parametrize("args, message", [
    (["--seeds", "3-1"], "--seeds '3-1': the range 3-1 runs backwards; write 1-3"),
    (["--seeds", "0,2,2"], "--seeds '0,2,2' names seed(s) 2 more than once; list each "
                           "seed once"),
    (["--seeds", "0-2", "--seed", "1"], "--seed and --seeds together: give one seed with "
                                        "--seed N, or several with --seeds (e.g. --seeds 0-4)"),
    (["--seeds", "a,b"], "--seeds 'a,b': 'a' is not a seed N or a range A-B (e.g. --seeds "
                         "0-4 or --seeds 0,2,5)"),
])
@pytest.mark.parametrize("algo", ["merpo", "cbcq"])
def test_bad_seeds_are_one_line_naming_the_fix(tmp_path, capsys, args, message, algo):
    code = main(["train", "--env", ENV, "--algo", algo, "--preset", "smoke", "--run-dir",
                 str(tmp_path / "runs"), *args])
    assert code == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"merpo-agent: error: {message}"]
    assert not (tmp_path / "runs").exists()  # refused before anything was built


def test_seeds_of_a_reproduce_run_are_one_job_and_their_results_those_of_single_runs(
        tmp_path):
    from merpo_agent.reproduce import seed_jobs, seeds_command

    def run(seed, method="cbcq"):
        run_dir = tmp_path / method / f"seed-{seed}"
        return (["python", "-m", "merpo_agent", "train", "--algo", method, "--seed", str(seed),
                 "--run-dir", str(run_dir), "--threads", "1"], run_dir, method)

    runs = [run(0), run(1), run(2), run(0, "focal")]
    assert [len(job) for job in seed_jobs(runs, None)] == [3, 1]
    assert [len(job) for job in seed_jobs(runs, 2)] == [2, 1, 1]
    assert [len(job) for job in seed_jobs(runs, 1)] == [1, 1, 1, 1]
    command, base = seeds_command([c for c, _, _ in runs[:3]], [d for _, d, _ in runs[:3]])
    assert base == tmp_path / "cbcq"
    assert command == ["python", "-m", "merpo_agent", "train", "--seeds", "0,1,2",
                       "--run-dir", str(base), "--algo", "cbcq", "--threads", "1"]
    with pytest.raises(ValueError, match="differ in more than seed and run dir"):
        seeds_command([runs[0][0], runs[3][0]], [runs[0][1], runs[3][1]])
    with pytest.raises(Exception, match="--seed-batch must be >= 1"):
        seed_jobs(runs, 0)
