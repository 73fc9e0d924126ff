"""``merpo-agent reproduce EXPERIMENT``: the paper's comparisons as fair, seeded runs (§5).

An experiment (Fig. 4, 5, 6 or 7 of the paper) is a set of RUNS, each a ``merpo-agent
train`` command, trained for every seed, and ROWS, each a column of a run's final table
(e.g. a MerPO run gives "MerPO" from its adapted policy and "With beha only" / "COMBO"
from its meta-test's comparison columns). Every run of an experiment shares the env, the
training and test tasks, the dataset quality (unless the run is about quality) and the
budget of gradient steps (``budget``: MerPO's meta-iterations x inner steps = a baseline's
steps), so that a comparison is fair.

Each (run, seed) is its own run directory ``OUT/<experiment>/<run>/seed-<s>``: a killed
``reproduce`` continues where it stopped (MerPO runs resume from their checkpoints;
a finished run's ``result.json`` is reused, not retrained). The seeds of a run train
together, as one more batch axis, in one ``merpo-agent train --seeds`` process (one job;
``--seed-batch N``: at most N seeds a job, 1 for a process per seed, which two cores may
run faster for few seeds), each seed's result the same as its own ``train --seed`` run's
(the result records that command). Jobs go to ``--jobs`` worker processes
(``merpo-agent train --threads 1``, one per CPU core by default), or with
``--executor ray`` to Ray tasks on a cluster (``merpo_agent.executors``). Then
``merpo_agent.report`` writes the report: tables with rliable's statistics, curves, and one
verdict line per paper claim.

Sizes: ``--quick`` is a tiny version (smoke networks, 2 seeds, a few tasks) that a test
runs; the default is the ``repro`` sizes, chosen so that ``reproduce fig6 --env
merpo/PointRobotWind-v0 --seeds 5`` takes at most 90 minutes on a 2-core CPU.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from merpo_envs import format_tasks

from merpo_agent.checkpoint import atomic_write_text
from merpo_agent.config import ConfigError
from merpo_agent.run_layout import seed_run_dir
from merpo_agent.trainer import RunError
from merpo_agent.validated_settings import BEST_FILE, settings_file

RESULT_FILE = "result.json"


class RunDiverged(RunError):
    """A run stopped on a non-finite loss (``TrainingDiverged`` in its process)."""


@dataclass(frozen=True)
class RunSpec:
    """One ``merpo-agent train`` command of an experiment (trained once per seed)."""

    key: str  # directory name
    algo: str
    overrides: tuple[str, ...] = ()
    quality: str | None = None  # None: the experiment's quality
    config: str | None = None  # a config file of settings (``tune``'s best.yaml), or None


@dataclass(frozen=True)
class Row:
    """A reported method: column ``column`` of run ``run``'s final per-task table."""

    label: str
    run: str
    column: str


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    runs: tuple[RunSpec, ...]
    rows: tuple[Row, ...]
    claims: tuple[str, ...]
    # rows evaluated on the TRAINING tasks' own envs (single-task RAC, Fig. 4 and 5)
    single_task: bool = False
    # extra settings of every MerPO-family run (e.g. no meta-test columns it does not report)
    merpo_overrides: tuple[str, ...] = ()
    settings: str | None = None  # the folder of tuned settings the runs read (``tune``)


# Single-task RAC (Fig. 4, 5) is scored on the training tasks: no meta-test comparisons.
SINGLE_TASK_OVERRIDES = ("test.compare_combo=false", "test.compare_beha_only=false",
                         "test.adaptation_steps=0")


def is_baseline(algo: str) -> bool:
    """Whether ``algo`` is one of the rivals of Fig. 6 (``baselines.run.BASELINES``)."""
    from merpo_agent.baselines.run import BASELINES

    return algo in BASELINES


def _single_task_runs(prefix: str, source: str, alphas: dict[str, float]) -> list[RunSpec]:
    runs = []
    for key, alpha in alphas.items():
        overrides = (f"meta.meta_policy={source}",)
        if alpha is not None:
            overrides += (f"rac.alpha={alpha}",)
        runs.append(RunSpec(f"{prefix}-{key}", "merpo", overrides))
    return runs


def experiments() -> dict[str, Experiment]:
    from merpo_agent.baselines.run import BASELINES

    fig6 = Experiment(
        name="fig6",
        title="Fig. 6: MerPO against the offline meta-RL baselines on unseen tasks",
        runs=(
            RunSpec("merpo-adp", "merpo-adp"),
            RunSpec("merpo", "merpo"),
            *(RunSpec(algo, algo) for algo in BASELINES),
        ),
        rows=(
            Row("MerPO-Adp", "merpo-adp", "adapted"),
            Row("MerPO", "merpo", "adapted"),
            *(Row(spec.label, algo, algo) for algo, spec in BASELINES.items()),
            Row("meta-policy (MerPO)", "merpo", "meta_policy"),
            Row("behavior", "merpo", "behavior"),
        ),
        claims=("C3", "C7"),
        merpo_overrides=("test.compare_combo=false", "test.compare_beha_only=false"),
    )
    fig7 = Experiment(
        name="fig7",
        title="Fig. 7: ablations: no model, Eq. 5 alone, meta vs behavior regularizer, "
        "data quality",
        runs=(
            RunSpec("merpo", "merpo"),
            RunSpec("cql", "cql"),
            RunSpec("combo3", "combo3"),
            RunSpec("merpo-expert", "merpo", quality="expert"),
        ),
        rows=(
            Row("MerPO", "merpo", "adapted"),
            Row("No model (CQL)", "cql", "adapted"),
            Row("Eq. 5 alone (alpha = 0)", "combo3", "adapted"),
            Row("With beha only (medium)", "merpo", "beha_only"),
            Row("COMBO (medium)", "merpo", "combo"),
            Row("MerPO (expert)", "merpo-expert", "adapted"),
            Row("With beha only (expert)", "merpo-expert", "beha_only"),
            Row("COMBO (expert)", "merpo-expert", "combo"),
        ),
        claims=("C4", "C5", "C6"),
    )
    good = "combo:{good}"  # §5.1: a meta-policy "learnt after 200 episodes" of COMBO
    fig4 = Experiment(
        name="fig4",
        title="Fig. 4: single-task RAC against a fixed good or random meta-policy",
        runs=(
            RunSpec("combo", "combo", ("meta.meta_policy=random",)),
            *_single_task_runs("rac", good, {"good": None}),
            *_single_task_runs("rac", "random", {"random": None}),
            *_single_task_runs("combo3", good, {"good": 0.0}),
            *_single_task_runs("combo3", "random", {"random": 0.0}),
        ),
        rows=(
            Row("COMBO", "combo", "own_task"),
            Row("RAC, good meta-policy", "rac-good", "own_task"),
            Row("RAC, random meta-policy", "rac-random", "own_task"),
            Row("COMBO-3, good meta-policy", "combo3-good", "own_task"),
            Row("COMBO-3, random meta-policy", "combo3-random", "own_task"),
        ),
        claims=("C1",),
        single_task=True,
        merpo_overrides=SINGLE_TASK_OVERRIDES,
    )
    fig5 = Experiment(
        name="fig5",
        title="Fig. 5: single-task RAC with a good meta-policy, alpha in {0, 0.4, 0.7, 1}",
        runs=tuple(
            _single_task_runs("alpha", good, {"0": 0.0, "0.4": 0.4, "0.7": 0.7, "1": 1.0})
        ),
        rows=tuple(
            Row(f"alpha = {a}", f"alpha-{a}", "own_task") for a in ("0", "0.4", "0.7", "1")
        ),
        claims=("C2",),
        single_task=True,
        merpo_overrides=SINGLE_TASK_OVERRIDES,
    )
    return {e.name: e for e in (fig4, fig5, fig6, fig7)}


@dataclass(frozen=True)
class Sizes:
    """What every run of an experiment shares: presets, tasks, budget, evaluation."""

    preset: str  # every method's (the same tasks and data for every algorithm)
    iterations: int  # MerPO meta-iterations; budget = iterations x inner steps
    inner_steps: int
    eval_every: int  # in MerPO meta-iterations (eval.every = eval_every x inner steps)
    train_tasks: tuple[int, ...] | None  # None: the env's train split
    test_tasks: tuple[int, ...] | None
    single_task_tasks: tuple[int, ...]  # Fig. 4/5: each its own single-task RAC
    episodes: int
    good_meta_policy_steps: int = 2000  # COMBO updates behind Fig. 4/5's "good" pi_c
    data_preset: str = "default"  # the merpo-data preset of the datasets (smoke: "test")

    @property
    def budget(self) -> int:
        """Gradient steps of every method's actor and critic."""
        return self.iterations * self.inner_steps


def sizes_for(env_id: str, quick: bool) -> Sizes:
    from merpo_envs import get_meta_info

    info = get_meta_info(env_id)
    if quick:
        return Sizes("smoke", iterations=4, inner_steps=2, eval_every=2,
                     train_tasks=tuple(info.train_tasks[:4]),
                     test_tasks=tuple(info.test_tasks[:2]),
                     single_task_tasks=tuple(info.train_tasks[:2]), episodes=1,
                     good_meta_policy_steps=4, data_preset="test")
    return Sizes("repro", iterations=400, inner_steps=10, eval_every=100,
                 train_tasks=None, test_tasks=None,
                 single_task_tasks=tuple(info.train_tasks[:4]), episodes=4)


def with_budget(sizes: Sizes, steps: int | None) -> Sizes:
    """``sizes`` with every method's budget set to ``steps`` gradient steps (None: as is):
    MerPO's meta-iterations x inner steps, a baseline's steps, both the same number."""
    if steps is None:
        return sizes
    if steps < sizes.inner_steps or steps % sizes.inner_steps:
        raise ConfigError(f"--steps must be a positive multiple of MerPO's {sizes.inner_steps} "
                          f"inner steps per meta-iteration, got {steps}")
    return replace(sizes, iterations=steps // sizes.inner_steps)


SETUP_CACHE = ".setup-cache"


def train_command(
    env_id: str, experiment: Experiment, run: RunSpec, seed: int, quality: str, sizes: Sizes,
    run_dir: Path, setup_cache: Path | None = None,
) -> list[str]:
    """The ``merpo-agent train`` command of one (run, seed), with the shared settings;
    MerPO-family runs share their setups through ``setup_cache`` (``train --setup-cache``)."""
    quality = run.quality or quality
    baseline = is_baseline(run.algo)
    command = [
        sys.executable, "-m", "merpo_agent", "train", "--env", env_id, "--algo", run.algo,
        "--seed", str(seed), "--run-dir", str(run_dir), "--no-progress", "--threads", "1",
        "--preset", sizes.preset,
    ]
    train_tasks = sizes.single_task_tasks if experiment.single_task else sizes.train_tasks
    # the shared schema (merpo_agent.schema): the same keys for every method
    settings = [f"run.steps={sizes.budget}", f"eval.every={sizes.eval_every * sizes.inner_steps}",
                f"data.quality={quality}", f"eval.episodes={sizes.episodes}"]
    if train_tasks is not None:
        settings.append(f"data.train_tasks={format_tasks(train_tasks)}")
    if sizes.test_tasks is not None:
        settings.append(f"data.test_tasks={format_tasks(sizes.test_tasks)}")
    if not baseline:
        settings.append(f"meta.inner_steps={sizes.inner_steps}")
        if train_tasks is not None:
            settings.append(f"meta.task_batch_size={len(train_tasks)}" if experiment.single_task
                            else f"meta.task_batch_size={min(len(train_tasks), 8)}")
        settings += list(experiment.merpo_overrides)
    settings += [item.format(good=sizes.good_meta_policy_steps) for item in run.overrides]
    if run.config is not None:  # tuned settings first: the shared settings win over them
        command += ["--config", run.config]
    if setup_cache is not None and not baseline:
        command += ["--setup-cache", str(setup_cache)]
    for item in settings:
        command += ["--set", item]
    return command


FIRST_READ = "merpo-first-read"


def with_settings(experiment: Experiment, settings: str | Path, env_id: str) -> Experiment:
    """The experiment on tuned settings: each run reads ``<settings>/<algo>/best.yaml``
    (``validated``: the ones shipped for ``env_id``; MerPO's ablations read MerPO's; see
    ``merpo_agent.validated_settings``), and a figure with a MerPO row also keeps "MerPO
    (Table 2 as first read)" on the untuned presets beside it."""
    def tuned(algo: str) -> str | None:
        path = settings_file(settings, env_id, algo)
        return str(path.resolve()) if path is not None else None

    if not any(tuned(run.algo) for run in experiment.runs):
        raise ConfigError(f"--settings {settings}: no <algo>/{BEST_FILE} for any method of "
                          f"{experiment.name}; run `merpo-agent tune` first")
    runs = [replace(run, config=tuned(run.algo)) for run in experiment.runs]
    rows = list(experiment.rows)
    merpo_row = next((i for i, row in enumerate(rows) if row.label == "MerPO"), None)
    if merpo_row is not None and tuned("merpo"):
        runs.append(RunSpec(FIRST_READ, "merpo"))
        rows.insert(merpo_row + 1, Row("MerPO (Table 2 as first read)", FIRST_READ,
                                       rows[merpo_row].column))
    return replace(experiment, runs=tuple(runs), rows=tuple(rows), settings=str(settings))


def read_result(run_dir: Path, algo: str) -> dict:
    """The final per-task table of a finished run: ``{"tasks": [...], column: [...]}`` and
    its learning curve ``{"curve": [[gradient_steps, mean return], ...]}``: the adapted
    policy's on the unseen tasks, or for single-task RAC runs each learner's on its own task."""
    from merpo_agent.metrics import read_metrics

    records = read_metrics(run_dir)
    out: dict = {"curve": []}
    if is_baseline(algo):
        final = [r for r in records if r.get("phase") == "final"]
        if not final:
            raise RunError(f"{run_dir}: no final record in metrics.jsonl")
        table = final[-1]["tasks"]
        tasks = sorted(int(t) for t in table)
        out["tasks"] = tasks
        out[algo] = [float(table[str(t)][algo]) for t in tasks]
        out["behavior"] = [float(table[str(t)]["behavior"]) for t in tasks]
        out["curve"] = [[int(r["iteration"]), float(r["baseline_return"])]
                        for r in records
                        if r.get("phase") == "meta_test" and "baseline_return" in r]
        return out
    config = _read_yaml(run_dir / "config.yaml")
    inner = int(config["meta"]["inner_steps"])
    per_task = [r for r in records if r.get("phase") == "meta_test_tasks"]
    if not per_task:
        raise RunError(f"{run_dir}: no meta-test record in metrics.jsonl")
    last = per_task[-1]
    out["tasks"] = [int(t) for t in last["tasks"]]
    for name, values in last.items():
        if name.endswith("_return"):
            out[name.removesuffix("_return")] = [float(v) for v in values]
    own = [r for r in records if r.get("phase") == "own_tasks"]
    if own:
        out["own_task"] = [float(v) for v in own[-1]["own_task_return"]]
        out["own_tasks"] = [int(t) for t in own[-1]["tasks"]]
        out["own_behavior"] = [float(v) for v in own[-1]["behavior_return"]]
    if own:
        # single-task RAC (Fig. 4, 5): the learners on their own training tasks
        out["curve"] = [[int(r["iteration"]) * inner,
                         sum(r["own_task_return"]) / len(r["own_task_return"])] for r in own]
    else:
        out["curve"] = [[int(r["iteration"]) * inner, float(r["adapted_return"])]
                        for r in records if r.get("phase") == "meta_test" and "adapted_return" in r]
    return out


def _read_yaml(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


def resolved_config(command: list[str]) -> dict:
    """The settings a ``merpo-agent train`` command resolves to with the code installed now
    (preset, overrides, the algorithm's config), as the run directory would record them."""
    from merpo_agent.arguments import build_parser, train_config

    args = build_parser().parse_args(command[3:])
    if is_baseline(args.algo):
        from merpo_agent.baselines.run import build_baseline, settings_record

        return settings_record(*build_baseline(args.algo, args.env, args.preset,
                                               args.overrides, args.config))
    return train_config(args).to_dict()


def _trained_config(saved: dict, run_dir: Path, algo: str) -> dict | None:
    """The settings a finished run was trained with: its result's record, or for results
    written before results recorded them, a MerPO run directory's config.yaml (None when
    unknown: such a baseline result is reused on its command alone)."""
    if "config" in saved:
        return saved["config"]
    if is_baseline(algo) or not (run_dir / "config.yaml").is_file():
        return None
    return _read_yaml(run_dir / "config.yaml")


def _same_settings(trained: dict, expected: dict) -> bool:
    """Every setting the run was trained with has the value the command resolves to now
    (fields the code gained since are not in ``trained``: they count as unchanged)."""
    from merpo_agent.overrides import flatten

    now = flatten(expected)
    return all(now.get(key, value) == value for key, value in flatten(trained).items())


def _without_setup_cache(command: list[str]) -> list[str]:
    """The command as results record it: where a setup was cached changes no result."""
    if "--setup-cache" not in command:
        return command
    at = command.index("--setup-cache")
    return command[:at] + command[at + 2:]


def _reusable(command: list[str], run_dir: Path, algo: str, log) -> dict | None:
    """A finished run's result when its command AND the settings that command resolves to
    now are the ones it was trained with (a preset changed since, the same command line
    with other values, retrains the run instead of reporting a stale result); else None."""
    result_path = run_dir / RESULT_FILE
    if not result_path.is_file():
        return None
    shown = shlex.join(_without_setup_cache(command[2:]))
    saved = json.loads(result_path.read_text())
    trained = _trained_config(saved, run_dir, algo)
    if saved.get("command") == shown and (trained is None or _same_settings(
            trained, _expected(command))):
        return saved
    log(f"retraining {run_dir}: its command or settings changed")
    return None


def _expected(command: list[str]) -> dict:
    return json.loads(json.dumps(resolved_config(command)))  # tuples as JSON lists


def _train_process(command: list[str], log_path: Path) -> None:
    """Run one ``merpo-agent train`` process (one torch thread), its output to
    ``log_path``; a one-line error naming the log when it fails."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(log_path, "a") as out:
        code = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, env=env).returncode
    if code != 0:
        tail = log_path.read_text().strip().splitlines()[-1:]
        error = RunDiverged if tail and "non-finite" in tail[0] else RunError
        raise error(
            f"run {log_path.parent} failed (exit {code}): {tail[0] if tail else ''}; "
            f"see {log_path}; reproduce again to resume"
        )


def _record(command: list[str], run_dir: Path, algo: str, wall: float) -> dict:
    """Write a finished run's ``result.json``: its table, curve, command and settings."""
    result = read_result(run_dir, algo)
    result.update(command=shlex.join(_without_setup_cache(command[2:])), wall_s=wall,
                  algo=algo, config=_expected(command))
    atomic_write_text(run_dir / RESULT_FILE, json.dumps(result, indent=1))
    return result


def run_one(command: list[str], run_dir: Path, algo: str, log) -> dict:
    """Train (or resume) one run unless its result is there (``_reusable``); returns its
    result."""
    saved = _reusable(command, run_dir, algo, log)
    if saved is not None:
        return saved
    start = time.perf_counter()
    _train_process(command, run_dir / "train.log")
    result = _record(command, run_dir, algo, time.perf_counter() - start)
    log(f"done {run_dir} in {result['wall_s']:.0f} s")
    return result


def seeds_command(commands: list[list[str]], run_dirs: list[Path]) -> tuple[list[str], Path]:
    """One ``train --seeds`` command for the ``train --seed S --run-dir DIR/seed-<S>``
    commands of one setting (the same but for seed and run directory), and its ``DIR``."""
    from merpo_agent.run_layout import seed_run_dir

    def seed_of(command: list[str]) -> int:
        return int(command[command.index("--seed") + 1])

    def without(command: list[str]) -> list[str]:
        out = list(command)
        for flag in ("--seed", "--run-dir"):
            at = out.index(flag)
            del out[at:at + 2]
        return out

    seeds = [seed_of(c) for c in commands]
    base = run_dirs[0].parent
    if any(without(c) != without(commands[0]) for c in commands) or any(
            d != seed_run_dir(base, seed) for d, seed in zip(run_dirs, seeds, strict=True)):
        raise ValueError("seeds_command: the commands differ in more than seed and run dir")
    command = without(commands[0])
    at = command.index("train") + 1
    command[at:at] = ["--seeds", ",".join(map(str, seeds)), "--run-dir", str(base)]
    return command, base


def run_job(job: list[tuple[list[str], Path, str]], log) -> list[dict]:
    """The seeds of one setting (``(command, run_dir, algo)`` of each seed's ``train
    --seed``): the finished ones reused (``_reusable``), the others trained together in one
    ``train --seeds`` process (one left: its own command); each seed's result records its
    own command, the one a run of that seed alone has. Returns the results in order."""
    results: dict[Path, dict] = {}
    pending = []
    for command, run_dir, algo in job:
        saved = _reusable(command, run_dir, algo, log)
        if saved is not None:
            results[run_dir] = saved
        else:
            pending.append((command, run_dir, algo))
    if len(pending) == 1:
        results[pending[0][1]] = run_one(*pending[0], log)
    elif pending:
        command, base = seeds_command([c for c, _, _ in pending], [d for _, d, _ in pending])
        seeds = command[command.index("--seeds") + 1]
        start = time.perf_counter()
        _train_process(command, base / f"train-seeds-{seeds.replace(',', '-')}.log")
        wall = time.perf_counter() - start
        for seed_command, run_dir, algo in pending:  # the batch's wall time, shared
            results[run_dir] = _record(seed_command, run_dir, algo, wall / len(pending))
        log(f"done {base} seeds {seeds} in {wall:.0f} s")
    return [results[run_dir] for _, run_dir, _ in job]


def seed_jobs(runs: list[tuple[list[str], Path, str]], seed_batch: int | None
              ) -> list[list[tuple[list[str], Path, str]]]:
    """The runs (each seed's, the seeds of a setting next to each other in one folder) as
    jobs of at most ``seed_batch`` seeds of one setting (None: all of its seeds)."""
    if seed_batch is not None and seed_batch < 1:
        raise ConfigError(f"--seed-batch must be >= 1 (seeds trained together), got "
                          f"{seed_batch}")
    jobs: list[list] = []
    for run in runs:
        last = jobs[-1] if jobs else None
        if (last is not None and last[0][1].parent == run[1].parent
                and (seed_batch is None or len(last) < seed_batch)):
            last.append(run)
        else:
            jobs.append([run])
    return jobs


def only_methods(experiment: Experiment, methods: str) -> Experiment:
    """The experiment restricted to the runs named in ``methods`` (a comma list of run keys,
    the runs' folder names): its rows of those runs only, the behavior row read from the
    first kept run (every run evaluates the behavior policy on the same tasks)."""
    wanted = [key.strip() for key in methods.split(",") if key.strip()]
    keys = [run.key for run in experiment.runs]
    unknown = [key for key in wanted if key not in keys]
    if not wanted or unknown:
        raise ConfigError(f"--methods {methods!r}: {experiment.name} runs "
                          f"{', '.join(keys)}; name one or more of them, comma-separated")
    runs = tuple(run for run in experiment.runs if run.key in wanted)
    rows = []
    for row in experiment.rows:
        if row.run in wanted:
            rows.append(row)
        elif row.column == "behavior":
            rows.append(replace(row, run=runs[0].key))
    return replace(experiment, runs=runs, rows=tuple(rows))


def reproduce(
    name: str,
    env_id: str,
    seeds: int,
    out_dir: Path,
    quick: bool = False,
    quality: str = "medium",
    log=print,
    settings: str | Path | None = None,
    steps: int | None = None,
    *,
    executor,
    seed_batch: int | None = 1,
    methods: str | None = None,
) -> Path:
    """Train every (run, seed) of experiment ``name`` (reusing finished ones), then write
    the report; returns the report's path. ``settings``: tuned settings (``with_settings``:
    ``validated`` or a ``tune --out`` folder); ``steps``: every method's budget of gradient
    steps instead of the sizes' (a longer budget, to see where the curves flatten);
    ``executor``: where the runs train (``executors.make_executor("local", jobs)`` or
    ``("ray", ...)``; made by the caller, which also checks ``--jobs`` before any dataset is
    built: ``executors`` calls this module's ``run_job``, so this module does not import it);
    ``seed_batch``: at most that many seeds of a run train together (``seed_jobs``; None:
    all; 1, the default: a process per seed, faster on a CPU at these sizes); ``methods``:
    only these runs (``only_methods``; None: every run of the experiment)."""
    from merpo_agent.report import write_report

    table = experiments()
    if name not in table:
        raise ConfigError(f"unknown experiment {name!r}; choose one of {', '.join(table)}")
    if seeds < 1:
        raise ConfigError(f"--seeds must be >= 1, got {seeds}")
    seed_jobs([], seed_batch)  # a bad --seed-batch: one line before any dataset is built
    _check_inputs(env_id, quality)
    experiment = table[name]
    if settings is not None:
        experiment = with_settings(experiment, settings, env_id)
    if methods is not None:
        experiment = only_methods(experiment, methods)
    sizes = with_budget(sizes_for(env_id, quick), steps)
    _ensure_datasets(env_id, experiment, sizes, quality)
    base = out_dir / name
    work = []
    for run in experiment.runs:
        for seed in range(seeds):
            run_dir = seed_run_dir(base / run.key, seed)
            command = train_command(env_id, experiment, run, seed, quality, sizes, run_dir,
                                    setup_cache=base / SETUP_CACHE)
            work.append((run, seed, run_dir, command))
    jobs = seed_jobs([(command, run_dir, run.algo) for run, _, run_dir, command in work],
                     seed_batch)
    log(f"{name}: {len(work)} runs ({len(experiment.runs)} methods x {seeds} seeds) in "
        f"{len(jobs)} jobs, {executor.describe(len(jobs))}, budget {sizes.budget} gradient "
        "steps each")
    start = time.perf_counter()
    done = executor.map(jobs, log)
    results: dict[str, list[dict]] = {run.key: [] for run in experiment.runs}
    for (run, _, _, _), result in zip(work, done, strict=True):
        results[run.key].append(result)
    wall = time.perf_counter() - start
    command = (f"merpo-agent reproduce {name} --env {env_id} --seeds {seeds}"
               + (" --quick" if quick else "") + (f" --quality {quality}" if quality != "medium"
                                                  else "")
               + (f" --settings {settings}" if settings is not None else "")
               + (f" --steps {steps}" if steps is not None else "")
               + (f" --methods {methods}" if methods is not None else ""))
    return write_report(experiment, env_id, quality, sizes, results, base, command, wall)


def _check_inputs(env_id: str, quality: str) -> None:
    """One :class:`ConfigError` line for a bad env or quality, before any dataset is built
    (a bad ``--jobs`` is the executor's to refuse, also before)."""
    from merpo_data import QUALITIES
    from merpo_envs import get_meta_info

    try:
        get_meta_info(env_id)
    except (KeyError, ValueError) as err:
        text = str(err).strip().strip("'\"").splitlines()
        raise ConfigError(f"--env: {text[0] if text else env_id}") from None
    if quality not in QUALITIES:
        raise ConfigError(f"--quality {quality!r} is not one of {', '.join(QUALITIES)}")


def _ensure_datasets(env_id: str, experiment: Experiment, sizes: Sizes, quality: str) -> None:
    """Build the missing datasets of the experiment's tasks and qualities (the sizes' data
    preset), as ``data.build_missing`` would; existing ones are used as they are."""
    import merpo_data
    from merpo_data.datasets import is_local
    from merpo_envs import get_meta_info

    info = get_meta_info(env_id)
    tasks = set(sizes.single_task_tasks if experiment.single_task
                else (sizes.train_tasks or info.train_tasks))
    tasks |= set(sizes.test_tasks or info.test_tasks)
    for q in sorted({run.quality or quality for run in experiment.runs}):
        preset = sizes.data_preset
        missing = [
            t for t in sorted(tasks) if not is_local(merpo_data.dataset_id(env_id, t, q, preset))
        ]
        if missing:
            merpo_data.generate(env_id, tasks=missing, qualities=[q], preset=preset,
                                progress=False)  # fmt: skip


__all__ = ["Experiment", "Row", "RunSpec", "Sizes", "experiments", "only_methods", "reproduce",
           "run_job", "run_one", "seed_jobs", "seeds_command", "sizes_for"]
