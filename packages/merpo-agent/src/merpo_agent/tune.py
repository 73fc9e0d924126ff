"""``merpo-agent tune``: the same tuning budget for every method, on validation tasks.

A claim "A beats B" means little if A was tuned and B was not, or if either was tuned on
the tasks it is then scored on. ``tune`` gives each method the SAME budget: ``--trials``
settings drawn from its written search space (``merpo_agent.search_spaces``; printed in
``docs/tuning.md``), each trained for ``--seeds`` seeds with the budget and sizes of
``merpo-agent reproduce`` (same presets, same gradient steps), and scored by the mean
return on VALIDATION tasks carved from the training split (Point-Robot-Wind: meta-train
on 0-34, score on 35-39; Walker-2D-Params: 0-14 / 15-19). The unseen test tasks are never
read: every scored run's evaluated task ids are checked against the validation tasks.
Half-Cheetah-Fwd-Back and Ant-Fwd-Back have no unseen tasks (train = test), so nothing is
tuned on them.

The study is Optuna's (TPE by default, or a grid sampler), kept in an RDB storage (SQLite
beside the runs by default; any URL, so that processes on several machines can share one
study). Every (trial, seed) is a ``merpo-agent train`` run directory named by the trial's
settings; a trial's seeds train together in one ``train --seeds`` process (seeds as one
more batch axis, each seed's result its own ``train --seed`` run's; ``--seed-batch 1``:
a process per seed, ``--jobs`` at a time). A killed ``tune`` resumes its unfinished trial
with the same settings (the trial is marked failed and enqueued again; its runs continue
from their checkpoints), and finished runs are reused. At the end it writes, per method:

- ``best.yaml``: the chosen settings as a config file for ``train --config`` (and
  ``reproduce --settings``);
- ``trials.md``: every trial's settings, per-seed validation returns and their mean.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import replace
from pathlib import Path

import yaml

from merpo_agent.checkpoint import atomic_write_text
from merpo_agent.config import ConfigError
from merpo_agent.executors import make_executor
from merpo_agent.reproduce import RunDiverged, seed_jobs
from merpo_agent.run_layout import seed_run_dir
from merpo_agent.search_spaces import search_space
from merpo_agent.trainer import RunError
from merpo_agent.validated_settings import BEST_FILE

TRIALS_FILE = "trials.md"
# The validation tasks per env: (training tasks of a tuning run, tasks it is scored on),
# both inside the env's training split; ``quick`` runs use the smoke test datasets' tasks.
VALIDATION_SPLITS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "merpo/PointRobotWind-v0": (tuple(range(0, 35)), tuple(range(35, 40))),
    "merpo/Walker2dParams-v0": (tuple(range(0, 15)), tuple(range(15, 20))),
}
QUICK_SPLIT = ((0, 1, 2), (3,))
# The Fig. 6 methods that every comparison tunes with the same budget.
FIG6_ALGOS = ("merpo", "merpo-adp", "focal", "cbcq", "mbml", "batch-pearl")


def validation_split(env_id: str, quick: bool = False) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(training tasks, validation tasks) of a tuning run; one-line error for envs whose
    tasks are all training tasks (nothing may be tuned on them)."""
    from merpo_envs import get_meta_info

    info = get_meta_info(env_id)
    if quick:
        return QUICK_SPLIT
    if info.env_id not in VALIDATION_SPLITS:
        raise ConfigError(
            f"{info.env_id} has no unseen tasks to carve validation tasks from (its test "
            "tasks are its training tasks), so nothing may be tuned on it; tune on "
            f"{' or '.join(VALIDATION_SPLITS)} and pass those settings with --config"
        )
    train, valid = VALIDATION_SPLITS[info.env_id]
    assert not set(valid) & set(info.test_tasks)  # validation tasks are training tasks
    return train, valid


def trial_key(labels: dict[str, str]) -> str:
    """A run directory name for a trial's settings (the same settings, the same runs)."""
    text = json.dumps(labels, sort_keys=True)
    return "trial-" + hashlib.sha1(text.encode()).hexdigest()[:10]


def config_file_data(algo: str, overrides: tuple[str, ...]) -> dict:
    """``--set KEY=VALUE`` overrides as a config file's mapping (nested by the dots of
    MerPO's keys; a baseline's keys are flat)."""
    data: dict = {}
    for item in overrides:
        key, _, raw = item.partition("=")
        value = yaml.safe_load(raw)
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return data


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Tuner:
    """One method's study: ``Tuner(algo, env, ...).run()`` -> path of ``best.yaml``."""

    def __init__(self, algo: str, env_id: str, out_dir: Path, trials: int = 8, seeds: int = 2,
                 quick: bool = False, quality: str = "medium", sampler: str = "tpe",
                 storage: str | None = None, jobs: int | None = None, log=print,
                 executor=None, seed_batch: int | None = 1):
        from merpo_envs import get_meta_info

        from merpo_agent.reproduce import is_baseline

        if trials < 1 or seeds < 1:
            raise ConfigError(f"--trials and --seeds must be >= 1, got {trials} and {seeds}")
        if sampler not in ("tpe", "grid"):
            raise ConfigError(f"--sampler must be tpe or grid, got {sampler!r}")
        try:
            self.env_id = get_meta_info(env_id).env_id
            self.space = search_space(algo, self.env_id)
        except ValueError as err:
            raise ConfigError(str(err)) from None
        self.algo, self.quick, self.quality = algo, quick, quality
        self.trials, self.seeds, self.sampler_name = trials, seeds, sampler
        self.train_tasks, self.valid_tasks = validation_split(self.env_id, quick)
        self.out = Path(out_dir) / algo
        self.storage = storage or f"sqlite:///{(self.out / 'study.db').resolve()}"
        # where a trial's seeds train (default: ``jobs`` local processes, at most one a seed)
        # and how many of them a process trains together (None: all)
        self.executor = executor or make_executor("local", jobs)
        seed_jobs([], seed_batch)  # a bad --seed-batch: one line before anything runs
        self.seed_batch = seed_batch
        self.log = log
        self.baseline = is_baseline(algo)

    # ------------------------------------------------------------------ what a trial runs
    def _plan(self):
        from merpo_agent.reproduce import Experiment, RunSpec, sizes_for

        sizes = replace(sizes_for(self.env_id, self.quick), train_tasks=self.train_tasks,
                        test_tasks=self.valid_tasks)
        experiment = Experiment(
            name="tune", title=f"tuning {self.algo} on validation tasks",
            runs=(RunSpec(self.algo, self.algo),), rows=(), claims=(),
            merpo_overrides=("test.compare_combo=false", "test.compare_beha_only=false"),
        )
        return sizes, experiment

    def commands(self, labels: dict[str, str]) -> list[tuple[Path, list[str]]]:
        """The (run directory, ``merpo-agent train`` command) of each seed of a trial."""
        from merpo_agent.reproduce import SETUP_CACHE, RunSpec, train_command
        from merpo_agent.search_spaces import overrides_of

        sizes, experiment = self._plan()
        spec = RunSpec(self.algo, self.algo, overrides_of(self.algo, labels, self.env_id))
        out = []
        for seed in range(self.seeds):
            run_dir = seed_run_dir(self.out / trial_key(labels), seed)
            out.append((run_dir, train_command(self.env_id, experiment, spec, seed,
                                               self.quality, sizes, run_dir,
                                               setup_cache=self.out.parent / SETUP_CACHE)))
        return out

    def score(self, labels: dict[str, str]) -> dict:
        """Train (or reuse) every seed of a trial; its validation returns."""
        column = self.algo if self.baseline else "adapted"
        runs = [(command, run_dir, self.algo) for run_dir, command in self.commands(labels)]
        results = self.executor.map(seed_jobs(runs, self.seed_batch), self.log)
        per_seed = []
        for result in results:
            if sorted(result["tasks"]) != sorted(self.valid_tasks):  # never a test task
                raise RunError(
                    f"a tuning run was scored on tasks {result['tasks']}, not the validation "
                    f"tasks {list(self.valid_tasks)}"
                )
            returns = result[column]
            per_seed.append(sum(returns) / len(returns))
        curves = [result.get("curve", []) for result in results]
        return {"per_seed": per_seed, "mean": sum(per_seed) / len(per_seed),
                "tasks": sorted(results[0]["tasks"]), "curves": curves,
                "wall_s": sum(float(r.get("wall_s", 0.0)) for r in results)}

    # ------------------------------------------------------------------ the study
    def _study(self):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.out.mkdir(parents=True, exist_ok=True)
        name = f"{self.algo}@{self.env_id}" + ("-quick" if self.quick else "")
        study = optuna.create_study(study_name=name, storage=self.storage,
                                    direction="maximize", load_if_exists=True)
        # a resumed study draws on from where it stood, not the first draws again
        seed = len(study.get_trials(deepcopy=False))
        if self.sampler_name == "grid":
            grid = {c.name: list(c.options) for c in self.space}
            study.sampler = optuna.samplers.GridSampler(grid, seed=seed)
        else:
            # half the budget explores at random, then TPE exploits (the same rule for
            # every method: Optuna's default of 10 random trials would leave a small
            # budget all random)
            study.sampler = optuna.samplers.TPESampler(
                seed=seed, n_startup_trials=max(1, self.trials // 2))
        return study

    @staticmethod
    def distinct_done(study) -> int:
        """Settings tried to the end (finished or diverged): a draw that repeats settings
        already tried reuses their runs and does not count against the budget."""
        from optuna.trial import TrialState

        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,
                                                        TrialState.PRUNED))
        return len({json.dumps(t.params, sort_keys=True) for t in done})

    def _recover_killed_trials(self, study) -> None:
        """Trials left RUNNING by a process of this host that is gone: marked failed and
        their settings enqueued again (their run directories resume)."""
        from optuna.trial import TrialState

        host = socket.gethostname()
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            attrs = trial.user_attrs
            if attrs.get("host") == host and not _alive(int(attrs.get("pid", -1))):
                study.tell(trial.number, state=TrialState.FAIL)
                study.enqueue_trial(trial.params, skip_if_exists=False)
                self.log(f"trial {trial.number} was killed; its settings run again (resumed)")

    def _try_defaults_first(self, study) -> None:
        """Every method's study tries its own defaults (its paper's values; MerPO's first
        reading) as one of its trials, so tuning never ends below the untuned method on
        the validation tasks."""
        from merpo_agent.search_spaces import default_labels

        defaults = default_labels(self.algo, self.env_id)
        if not any(t.params == defaults for t in study.get_trials(deepcopy=False)):
            study.enqueue_trial(defaults)

    def objective(self, trial) -> float:
        trial.set_user_attr("host", socket.gethostname())
        trial.set_user_attr("pid", os.getpid())
        labels = {c.name: trial.suggest_categorical(c.name, list(c.options))
                  for c in self.space}
        self.log(f"{self.algo} trial {trial.number}: {labels}")
        try:
            scored = self.score(labels)
        except RunDiverged as err:  # a setting that diverges used a trial of the budget
            import optuna

            trial.set_user_attr("diverged", str(err))
            self.log(f"{self.algo} trial {trial.number}: diverged ({err})")
            raise optuna.TrialPruned(str(err)) from None
        for key in ("per_seed", "tasks", "curves", "wall_s"):
            trial.set_user_attr(key, scored[key])
        self.log(f"{self.algo} trial {trial.number}: validation return {scored['mean']:.3f}")
        return scored["mean"]

    def run(self) -> Path:
        from merpo_agent.reproduce import _ensure_datasets

        sizes, experiment = self._plan()
        _ensure_datasets(self.env_id, experiment, sizes, self.quality)
        study = self._study()
        self._recover_killed_trials(study)
        self._try_defaults_first(study)
        done = self.distinct_done(study)  # a diverged trial counts as used
        if done < self.trials:
            self.log(f"{self.algo}: {done} of {self.trials} trials done; {self.seeds} seeds "
                     f"each, validation tasks {list(self.valid_tasks)}")
        draws = 0
        while self.distinct_done(study) < self.trials:
            draws += 1
            if draws > 20 * self.trials:  # a space smaller than the budget
                self.log(f"{self.algo}: stopped after {draws - 1} draws with "
                         f"{self.distinct_done(study)} distinct settings")
                break
            study.optimize(self.objective, n_trials=1)
            if any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
                self.write(study)  # the record so far: a long study shows where it stands
        return self.write(study)

    # ------------------------------------------------------------------ what it writes
    def write(self, study) -> Path:
        from optuna.trial import TrialState

        from merpo_agent.search_spaces import overrides_of

        complete = [t for t in study.get_trials(deepcopy=False)
                    if t.state == TrialState.COMPLETE]
        if not complete:
            raise RunError(f"{self.algo}: no finished trial in {self.storage}")
        best = max(complete, key=lambda t: (t.value, -t.number))
        data = config_file_data(self.algo, overrides_of(self.algo, best.params, self.env_id))
        best_path = self.out / BEST_FILE
        header = (f"# {self.algo} on {self.env_id}: chosen by `merpo-agent tune` (trial "
                  f"{best.number}, mean validation return {best.value:.3f} on tasks "
                  f"{list(self.valid_tasks)}, {self.seeds} seeds, "
                  f"{self.distinct_done(study)} trials)\n")
        atomic_write_text(best_path, header + yaml.safe_dump(data, sort_keys=True))
        atomic_write_text(self.out / TRIALS_FILE, self.trials_markdown(study, best.number))
        return best_path

    def trials_markdown(self, study, best_number: int) -> str:
        names = [c.name for c in self.space]
        sizes, _ = self._plan()
        lines = [
            f"# Tuning {self.algo} on {self.env_id}", "",
            f"- validation: meta-train on tasks {_span(self.train_tasks)}, score the mean "
            f"return on tasks {_span(self.valid_tasks)} (training tasks; the test tasks are "
            "never read)",
            f"- budget per run: {sizes.budget} gradient steps ({sizes.preset} "
            f"preset); {self.seeds} seeds per trial; "
            f"{self.trials} trials; sampler {self.sampler_name}",
            f"- command: `merpo-agent tune --algo {self.algo} --env {self.env_id} --trials "
            f"{self.trials} --seeds {self.seeds}" + (" --quick" if self.quick else "") + "`",
            f"- best: trial {best_number} (marked *)", "",
            "| trial | " + " | ".join(names) + " | per seed | mean | wall s |",
            "| --- | " + " | ".join("---" for _ in names) + " | --- | --- | --- |",
        ]
        shown: dict[str, object] = {}
        for t in study.get_trials(deepcopy=False):
            settings = json.dumps(t.params, sort_keys=True)
            if t.state.name not in ("COMPLETE", "PRUNED") or settings in shown:
                continue  # killed ones ran again under a new number; repeats cost nothing
            shown[settings] = t
            mark = "*" if t.number == best_number else ""
            seeds = ", ".join(f"{v:.2f}" for v in t.user_attrs.get("per_seed", []))
            value = f"{t.value:.3f}" if t.state.name == "COMPLETE" else "diverged"
            lines.append(f"| {t.number}{mark} | " + " | ".join(str(t.params.get(n, ""))
                                                            for n in names)
                         + f" | {seeds} | {value} | {t.user_attrs.get('wall_s', 0):.0f} |")
        lines += self.curves_markdown(list(shown.values()), sizes.data_preset)
        return "\n".join(lines) + "\n"

    def curves_markdown(self, trials: list, data_preset: str) -> list[str]:
        """Each trial's validation curve (mean of its seeds at every evaluation) and whether
        it has flattened by the budget's end (``report.plateau``'s rule)."""
        from merpo_agent.report import PLATEAU_POINTS, curve_label, plateau
        from merpo_agent.scores import reference_scores

        curves = {t.number: [c for c in t.user_attrs.get("curves") or [] if c] for t in trials}
        curves = {number: runs for number, runs in curves.items() if runs}
        if not curves:
            return []
        low, high = reference_scores(self.env_id, self.valid_tasks, self.quality, data_preset)
        reference_range = float((high - low).mean())
        steps = [int(p[0]) for p in min(next(iter(curves.values())), key=len)]
        lines = ["", "## Validation curves", "",
                 "Mean validation return of the trial's seeds at each evaluation; flat when "
                 f"the last quarter of the budget gained or lost less than {PLATEAU_POINTS:g} "
                 "normalized points (100 x the return gained / the validation tasks' mean "
                 f"reference range, {reference_range:.2f} here), falling when it lost as "
                 "much.", "",
                 "| trial | " + " | ".join(f"{s} steps" for s in steps)
                 + " | last quarter (normalized points) | curve |",
                 "| --- | " + " | ".join("---" for _ in steps) + " | --- | --- |"]
        for number, runs in curves.items():
            length = min(len(c) for c in runs)
            means = [sum(c[i][1] for c in runs) / len(runs) for i in range(length)]
            verdict = plateau(runs, reference_range)
            gain = verdict[2] if verdict is not None else 0.0
            cells = [f"{m:.2f}" for m in means] + ["" for _ in steps[length:]]
            lines.append(f"| {number} | " + " | ".join(cells)
                         + f" | {gain:+.1f} | {curve_label(gain)} |")
        return lines


def _span(tasks: tuple[int, ...]) -> str:
    from merpo_envs import format_tasks

    return format_tasks(list(tasks))


def tune(algos: list[str], env_id: str, out_dir: Path, log=print, **kwargs) -> list[Path]:
    """Tune each method in turn with the same budget; the ``best.yaml`` of each."""
    start = time.perf_counter()
    paths = [Tuner(algo, env_id, out_dir, log=log, **kwargs).run() for algo in algos]
    log(f"tuned {', '.join(algos)} in {time.perf_counter() - start:.0f} s")
    return paths


def parse_algos(text: str) -> list[str]:
    """``merpo``, ``merpo,focal`` or ``all`` (the Fig. 6 methods)."""
    algos = list(FIG6_ALGOS) if text == "all" else [a for a in text.split(",") if a]
    for algo in algos:
        try:
            search_space(algo)
        except ValueError as err:
            raise ConfigError(str(err)) from None
    return algos


__all__ = ["BEST_FILE", "FIG6_ALGOS", "Tuner", "VALIDATION_SPLITS", "parse_algos", "trial_key",
           "tune", "validation_split"]
