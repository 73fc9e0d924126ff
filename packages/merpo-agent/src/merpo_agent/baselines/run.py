"""``merpo-agent train --algo focal|cbcq|mbml|batch-pearl``: a baseline's run directory.

Same datasets (the task sampler), same env split, same meta-test in the real env as MerPO,
and the same run directory layout: ``config.yaml``, ``metrics.jsonl`` (+ TensorBoard
events), ``checkpoints/latest.pt`` (every parameter, optimizer and RNG state: ``train`` on
an existing run directory resumes it, and on CPU ends where an uninterrupted run ends) and
``plots/``. ``merpo-agent evaluate`` / ``plot`` read it like a MerPO run directory.

One code path for every baseline; what differs is a row of ``BASELINES`` (config class,
presets, learner, meta-test, agent file format). A run has MerPO's shared sections
(``merpo_agent.schema``: ``data``, ``run``, ``eval``) and the method's own section
``method``; overrides (``--set key=value`` or a ``--config`` file) name them by section
(``data.train_tasks=0-34``, ``run.steps=5000``, ``method.critic_lr=1e-3``; a method key
alone, ``critic_lr=1e-3``, is the method's), parsed to the fields' types by MerPO's parser
(``merpo_agent.overrides``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import typing
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from merpo_data.progress import progress_bar

from merpo_agent.baselines.context import NEW_RUN_ADVICE, seeds_per_group, train_steps
from merpo_agent.baselines.registry import BASELINES, Baseline, baseline  # re-exported
from merpo_agent.checkpoint import (
    LATEST,
    CheckpointError,
    NonFiniteState,
    atomic_write_text,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from merpo_agent.config import ConfigError, check_device, check_task_split
from merpo_agent.overrides import (
    apply_overrides,
    flat_keys,
    flatten,
    parse_assignment,
    parse_value,
    read_config_file,
    to_dict,
)
from merpo_agent.provenance import record_session
from merpo_agent.run_dir import claim_run_dir
from merpo_agent.run_layout import CHECKPOINT_DIR, CONFIG_FILE
from merpo_agent.run_layout import RESUMABLE_CHANGES as MERPO_RESUMABLE_CHANGES
from merpo_agent.schema import (
    SHARED_SECTIONS,
    DataConfig,
    EvalConfig,
    RunConfig,
    normalize_items,
    preset_data,
)
from merpo_agent.scores import normalized_score, sampler_reference_scores, summarize
from merpo_agent.seed_batch import own_rng
from merpo_agent.trainer import RunError, TrainingDiverged

RUN_FORMAT = "baseline-run"
# TensorBoard HParams metrics of a baseline run
HPARAM_METRICS = ("meta_test/baseline_return", "meta_test/baseline_normalized")
# Settings a resumed run may change: MerPO's (the shared schema's), and the episodes of
# its meta-tests (a baseline's meta-test draws nothing the training depends on).
RESUMABLE_CHANGES = MERPO_RESUMABLE_CHANGES | {"eval.episodes"}


@dataclasses.dataclass(frozen=True)
class BaselineRun:
    """What a baseline run shares with every algorithm (``merpo_agent.schema``): its data,
    budget in gradient steps and evaluation (the method's own fields: its config)."""

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    run: RunConfig = dataclasses.field(default_factory=RunConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)


def build_baseline(
    algo: str,
    env_id: str,
    preset: str,
    overrides: list[str],
    config_file: str | Path | None = None,
) -> tuple[BaselineRun, Any]:
    """Resolve the preset, a config file's keys, then ``key=value`` overrides (each value
    parsed to its field's type); one-line ``ConfigError`` on bad input.

    ``data.*``, ``run.*`` and ``eval.*`` are the shared sections (``merpo_agent.schema``);
    ``method.KEY`` or a bare ``KEY`` is the method's own config field."""
    spec = baseline(algo)
    if preset not in spec.presets:
        raise ConfigError(f"{spec.label} has presets {', '.join(spec.presets)}; got {preset!r}")
    run_config, eval_config, make_config = spec.presets[preset]
    config_types = typing.get_type_hints(spec.config_class)
    # log_every is run.log_every of the shared schema; the method's field follows it
    config_types = {f.name: config_types[f.name] for f in dataclasses.fields(spec.config_class)
                    if f.name != "log_every"}
    items: list[tuple[str, Any]] = []
    if config_file is not None:
        items += list(read_config_file(config_file).items())
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. --set run.steps=1000)")
        items.append(parse_assignment(item))
    shared_items: list[tuple[str, Any]] = []
    config_values: dict[str, Any] = {}
    for key, raw in normalize_items(items, env_id):
        name = key.removeprefix("method.")
        if key.split(".", 1)[0] in SHARED_SECTIONS:
            shared_items.append((key, raw))
        elif name in config_types:
            config_values[name] = parse_value(raw, config_types[name], key)
        else:
            import difflib

            valid = [*flat_keys(BaselineRun()), *config_types]
            close = difflib.get_close_matches(name, valid, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else (
                f"valid keys: {', '.join(sorted(valid))}"
            )
            raise ConfigError(f"unknown {spec.label} override {key!r}; {hint}")
    base = BaselineRun(data=preset_data(env_id, preset), run=run_config, eval=eval_config)
    run = apply_overrides(base, shared_items)
    try:
        config = dataclasses.replace(make_config(env_id), **config_values,
                                     log_every=run.run.log_every)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad {spec.label} setting: {_first_line(err)}") from None
    check_task_split(env_id, run.data.train_tasks, run.data.test_tasks, "data.")
    return run, config


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _samplers(env_id: str, run: BaselineRun, device: str):
    import merpo_data
    from merpo_envs import get_meta_info

    info = get_meta_info(env_id)
    data = run.data
    train_tasks = list(data.train_tasks or info.train_tasks)
    test_tasks = list(data.test_tasks or info.test_tasks)
    try:
        pairs = [(t, data.quality) for t in (*train_tasks, *test_tasks)]
        merpo_data.ensure_datasets(env_id, pairs, data.preset, data.build_missing)
        train = merpo_data.TaskSampler(
            env_id, train_tasks, data.quality, device=device, preset=data.preset,
            build_missing=data.build_missing,
        )
        test = merpo_data.TaskSampler(
            env_id, test_tasks, data.quality, device=device, preset=data.preset,
            build_missing=data.build_missing,
        )
    except (ValueError, FileNotFoundError) as err:
        raise RunError(_first_line(err)) from None
    return train, test


def settings_record(run: BaselineRun, config: Any) -> dict[str, Any]:
    """A run's settings as its ``config.yaml`` records them: ``data``, ``run``, ``eval``
    and ``method`` (whose ``log_every`` is ``run.log_every``)."""
    method = to_dict(config)
    method.pop("log_every", None)
    return {**to_dict(run), "method": method}


def _run_record(algo: str, env_id: str, preset: str, seed: int, device: str,
                run: BaselineRun, config: Any) -> dict[str, Any]:
    return {
        "env": env_id, "algo": algo, "label": baseline(algo).label, "preset": preset,
        "seed": seed, "device": device, **settings_record(run, config),
    }


def read_record(run_dir: str | Path) -> dict[str, Any]:
    """A baseline run directory's ``config.yaml``; one written before the shared schema
    (``run: {steps, quality, data_preset, train_tasks, ...}``) in the shared schema's terms,
    so old run directories resume and evaluate."""
    data = yaml.safe_load((Path(run_dir) / CONFIG_FILE).read_text()) or {}
    if "data" in data or "run" not in data:
        return data
    old = data["run"]
    data["data"] = {"quality": old.get("quality", "medium"),
                    "preset": old.get("data_preset", "default"),
                    "train_tasks": old.get("train_tasks") or None,
                    "test_tasks": old.get("test_tasks") or None, "build_missing": False}
    data["run"] = {"steps": old["steps"], "checkpoint_every": old["checkpoint_every"],
                   "log_every": data.get("method", {}).pop("log_every", 1_000)}
    data["eval"] = {"episodes": old["eval_episodes"], "every": old["eval_every"]}
    return data


def _check_resumable(run_dir: Path, record: dict[str, Any]) -> None:
    saved = read_record(run_dir)
    a, b = flatten(saved), flatten(record)
    diff = sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))
    diff = [k for k in diff if k not in RESUMABLE_CHANGES]
    if diff:
        shown = ", ".join(diff[:6]) + (" ..." if len(diff) > 6 else "")
        raise ConfigError(
            f"run dir {run_dir} holds a run with other settings ({shown}); resume it with "
            "the same options or pick a new --run-dir"
        )


def train_baseline_run(
    algo: str,
    env_id: str,
    preset: str,
    overrides: list[str],
    seed: int,
    device: str,
    run_dir: Path,
    progress: bool = True,
    config_file: str | Path | None = None,
    wandb: str | None = None,
    command: list[str] | None = None,
) -> dict[int, dict[str, float]]:
    """Train (or resume) the baseline, meta-test it on the test tasks; returns
    ``{task: {algo, behavior, ...}}`` (the mean returns of the saved agent and of the data,
    their normalized scores and the agent's std over episodes: ``_table``). ``wandb``:
    ``PROJECT[/GROUP]`` of a Weights & Biases run beside TensorBoard; ``command``: the command
    line ``run.json`` records (default ``sys.argv``)."""
    return train_baseline_runs(algo, env_id, preset, overrides, [seed], device, [run_dir],
                               progress, config_file, wandb, command)[0]


def train_baseline_runs(
    algo: str,
    env_id: str,
    preset: str,
    overrides: list[str],
    seeds: list[int],
    device: str,
    run_dirs: list[Path],
    progress: bool = True,
    config_file: str | Path | None = None,
    wandb: str | None = None,
    command: list[str] | None = None,
) -> list[dict[int, dict[str, float]]]:
    """:func:`train_baseline_run` of each seed, the seeds trained together in this process
    (seeds as one more batch axis, ``merpo_agent.seeds``): each seed is built, prepared (its
    behavior or relabeling models: once per run, one seed after another) or resumed as
    alone, then the updates of every seed run as one set of batched ops (on a CPU in groups
    of seeds its caches hold, ``seeds_per_group``, one group after another), each seed
    writing its own run directory as alone. Returns each seed's table. A seed whose loss turns NaN
    stops as alone (its last good checkpoint kept) while the others train on; the batch
    then ends with ``TrainingDiverged`` naming it."""
    spec = baseline(algo)
    run, config = build_baseline(algo, env_id, preset, overrides, config_file)
    check_device(device)
    with contextlib.ExitStack() as stack:
        runs = []
        for seed, run_dir in zip(seeds, run_dirs, strict=True):
            seed_run = _SeedRun(spec, algo, env_id, preset, seed, device, run, config,
                                Path(run_dir), progress)
            stack.enter_context(claim_run_dir(seed_run.run_dir, seed_run.checkpoint))
            runs.append(seed_run)
        train, test = _samplers(env_id, run, device)
        for seed_run in runs:  # one after another, each with its own random state
            stack.enter_context(seed_run.open(train, test, wandb, command))
        pending = [r for r in runs if r.step < run.run.steps]
        while pending:
            at = min(r.step for r in pending)
            together = [r for r in pending if r.step == at]
            per = seeds_per_group(together[0].learner, train, len(together))
            for first in range(0, len(together), per):  # the groups one after another
                _train_together(together[first:first + per], train, run, progress)
            pending = [r for r in pending if r.step < run.run.steps and not r.diverged]
        tables = [r.finish() for r in runs if not r.diverged]
        diverged = [r.diverged for r in runs if r.diverged]
        if diverged:
            raise TrainingDiverged("; ".join(diverged))
        return tables


def _train_together(runs: list[_SeedRun], train: Any, run: BaselineRun, progress: bool) -> None:
    """The remaining updates of seeds that stand at the same update, as one learner."""
    learner = runs[0].spec.learner.stack([r.learner for r in runs])
    label = runs[0].algo if len(runs) == 1 else f"{runs[0].algo} x {len(runs)} seeds"
    bar = progress_bar(run.run.steps, label, "step", initial=runs[0].step,
                       disable=not progress)
    synced = {"at": None}

    def sync(at: int) -> None:  # each seed's networks into its own learner, once a step
        if synced["at"] != at:
            learner.unstack_into([r.learner for r in runs])
            synced["at"] = at

    def log(at: int, metrics: list[dict[str, float]]) -> None:
        for r, seed_metrics in zip(runs, metrics, strict=True):
            r.log(at, seed_metrics)
        bar.update(at - bar.n)

    def meta_test(at: int, _: Any) -> None:
        every = run.eval.every  # 0: only at the end
        if (every == 0 or at % every) and at != run.run.steps:
            return
        sync(at)
        for r in runs:
            r.meta_test(at)

    def save(at: int) -> None:
        sync(at)
        for r in runs:
            try:
                r.save(at)
            except TrainingDiverged as err:  # a NaN reached the state (not the losses)
                if len(runs) == 1:
                    raise
                r.stop(str(err))

    def diverged(at: int, positions: list[int], line: str) -> None:
        for position in positions:
            runs[position].stop(line)

    try:
        with torch.enable_grad():
            train_steps(learner, train, run.run.steps, runs[0].step, log, meta_test, save,
                        run.run.checkpoint_every, diverged)
    finally:
        bar.close()


class _SeedRun:
    """One seed's run directory: its learner (the seed's own, built as alone), metrics
    writer, checkpoints and meta-tests, each written with the seed's own global random
    state (``seed_batch.own_rng``). A seed that diverged is ``stopped``: it writes nothing
    more (its last good checkpoint stays) while the batch trains on."""

    def __init__(self, spec, algo, env_id, preset, seed, device, run, config, run_dir,
                 progress):
        self.spec, self.algo, self.env_id, self.seed = spec, algo, env_id, seed
        self.device, self.run, self.config, self.progress = device, run, config, progress
        self.run_dir = run_dir
        self.record = _run_record(algo, env_id, preset, seed, device, run, config)
        self.checkpoint = run_dir / CHECKPOINT_DIR / LATEST
        self.step = 0
        self.diverged: str | None = None

    @contextlib.contextmanager
    def open(self, train: Any, test: Any, wandb: str | None, command: list[str] | None):
        """Build, then resume or prepare (and save update 0); the run's writer stays open
        for the ``with`` block."""
        from merpo_agent.metrics import MetricsWriter

        spec, run_dir, checkpoint, device = self.spec, self.run_dir, self.checkpoint, self.device
        self.train, self.test = train, test
        resumed = checkpoint.is_file() and (run_dir / CONFIG_FILE).is_file()
        if resumed:
            _check_resumable(run_dir, self.record)
        try:
            learner = spec.learner.build(self.config, train, device, self.seed)
        except ValueError as err:
            raise ConfigError(f"bad {spec.label} setting: {_first_line(err)}") from None
        self.learner = learner
        if resumed:
            state = load_checkpoint(checkpoint, map_location=device)
            try:
                if state.get("format") != RUN_FORMAT or state.get("algo") != self.algo:
                    raise ValueError(f"not a {spec.label} run checkpoint")
                learner.load_training_state(state["learner"])
            except (KeyError, RuntimeError, ValueError) as err:
                raise CheckpointError(
                    f"checkpoint {checkpoint} does not match this config "
                    f"({_first_line(err)}); use a new --run-dir"
                ) from None
            set_rng_state(state["rng"], {"data": learner.generator})
            self.step = int(state["step"])
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(self.record, sort_keys=False))
        record_session(run_dir, device, fresh=not resumed, command=command)
        self.writer = MetricsWriter(run_dir, purge_step=self.step + 1 if resumed else 0,
                                    hparams=self.record, hparam_metrics=HPARAM_METRICS,
                                    wandb=wandb)
        try:
            if resumed:
                self.writer.truncate_after(self.step)
                if self.step < self.run.run.steps:  # trained further: the table is stale
                    self.writer.drop_phase("final")
                if self.progress:
                    print(f"resuming {run_dir} at update {self.step}")
            else:
                self.writer.truncate_after(-1)
                prepared = learner.prepare(train)
                learner.after_prepare()
                if prepared:
                    self.writer.log(0, "train", prepared)
                self.rng = rng_state()
                self.save(0)
            self.rng = rng_state()
            yield self
        finally:
            self.writer.close()

    def stop(self, line: str) -> None:
        """The seed diverged (in a batch): it writes nothing more."""
        if self.diverged is None:
            self.diverged = f"seed {self.seed}: {line}"
            print(f"{self.algo} {self.diverged}")

    def log(self, at: int, metrics: dict[str, float]) -> None:
        if self.diverged is None:
            self.step = at
            self.writer.log(at, "train", metrics)

    def save(self, at: int) -> None:
        if self.diverged is not None:
            return
        self.step = at
        with own_rng(self):
            try:
                save_checkpoint(self.checkpoint, {
                    "format": RUN_FORMAT, "algo": self.algo, "step": at,
                    "agent": self.learner.agent_state(),
                    "learner": self.learner.training_state(),
                    "rng": rng_state({"data": self.learner.generator}),
                })
            except NonFiniteState as err:  # never a checkpoint with a NaN: the last good stays
                kept = (f"last good checkpoint {self.checkpoint} kept"
                        if self.checkpoint.is_file() else "no checkpoint was written")
                raise TrainingDiverged(
                    f"{err.where} of the state is NaN or inf by update {at}: training "
                    f"stopped; {kept}; {NEW_RUN_ADVICE}"
                ) from None

    def meta_test(self, at: int) -> None:
        if self.diverged is not None:
            return
        test, algo = self.test, self.algo
        with own_rng(self):
            returns = self.spec.evaluate(self.learner.agent, test, self.env_id,
                                         self.run.eval.episodes, self.seed)
        mean = sum(returns.values()) / len(returns)
        self.writer.log(at, "meta_test", summary(test, returns))
        self.writer.log_record({"iteration": at, "phase": "meta_test_tasks",
                                **per_task(algo, _table(algo, test, returns))})
        if self.progress:
            print(f"{algo} seed {self.seed} update {at}: mean test return {mean:.2f} "
                  f"(behavior {float(test.dataset_returns.mean()):.2f})")

    def finish(self) -> dict[int, dict[str, float]]:
        """The saved agent's final meta-test: its table, recorded once."""
        steps = self.run.run.steps
        with own_rng(self):
            agent = self.spec.agent_from_state(load_checkpoint(self.checkpoint)["agent"],
                                               self.device)
            returns = self.spec.evaluate(agent, self.test, self.env_id,
                                         self.run.eval.episodes, self.seed)
        table = _table(self.algo, self.test, returns)
        if not self.writer.has(steps, "final"):
            self.writer.log_record({"phase": "final", "iteration": steps,
                                    "tasks": {str(k): v for k, v in table.items()}})
        return table


def _table(algo: str, test: Any, returns: dict[int, float]) -> dict[int, dict[str, float]]:
    """Per task: the agent's (``algo``) and the data's (``behavior``) mean return, their
    normalized scores (``<name>_normalized``) and the agent's std over episodes."""
    behavior = test.dataset_returns.tolist()
    low, high = sampler_reference_scores(test)
    episodes = getattr(returns, "episodes", {})
    table = {}
    for i, task in enumerate(test.tasks):
        row = {algo: returns[task], "behavior": behavior[i]}
        row[f"{algo}_normalized"] = float(normalized_score(returns[task], low[i], high[i]))
        row["behavior_normalized"] = float(normalized_score(behavior[i], low[i], high[i]))
        if task in episodes:
            row[f"{algo}_std"] = float(np.std(episodes[task]))
        table[task] = row
    return table


def summary(test: Any, returns: dict[int, float]) -> dict[str, float]:
    """A baseline meta-test's record: ``baseline_*`` and ``behavior_*`` means, spreads over
    episodes and tasks and normalized scores (``scores.summarize``)."""
    low, high = sampler_reference_scores(test)
    episodes = getattr(returns, "episodes", {})
    agent = [episodes.get(task, np.array([returns[task]])) for task in test.tasks]
    return {**summarize("baseline", agent, low, high),
            **summarize("behavior", test.dataset_episode_returns, low, high)}


def per_task(algo: str, table: dict[int, dict[str, float]]) -> dict[str, list]:
    """A table as per-task lists (``tasks``, ``baseline_return``, ``baseline_normalized``,
    ...): the shape of MerPO's per-task meta-test records."""
    tasks = list(table)
    names = {algo: "baseline", "behavior": "behavior"}
    out: dict[str, list] = {"tasks": tasks}
    for source, name in names.items():
        out[f"{name}_return"] = [table[t][source] for t in tasks]
        out[f"{name}_normalized"] = [table[t][f"{source}_normalized"] for t in tasks]
    if all(f"{algo}_std" in table[t] for t in tasks):
        out["baseline_return_std"] = [table[t][f"{algo}_std"] for t in tasks]
    return out


# ---- reading a run directory back (merpo-agent evaluate) --------------------------------


def run_algo(run_dir: str | Path) -> str | None:
    """The baseline ``algo`` of a run directory, or None (not a baseline's run directory)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError:
        return None
    algo = data.get("algo") if isinstance(data, dict) else None
    return algo if algo in BASELINES and "method" in data else None


def evaluate_baseline_run(
    run_dir: str | Path,
    device: str | None = None,
    episodes: int | None = None,
    tasks: tuple[int, ...] | None = None,
    seed: int | None = None,
) -> tuple[str, dict[int, dict[str, float]], dict[str, float]]:
    """Meta-test the agent of a baseline run's ``checkpoints/latest.pt`` on its test tasks
    (default: the run's test tasks, seed and episodes; ``tasks`` may be any tasks with
    datasets: the agent infers each task from its data); returns ``(algo, {task: {algo,
    behavior, ...}}, summary)`` (``_table``, ``summary``)."""
    run_dir = Path(run_dir)
    algo = run_algo(run_dir)
    if algo is None:
        raise RunError(f"{run_dir} is not a baseline run directory (no {CONFIG_FILE} with a "
                       f"baseline algo); train one with `merpo-agent train --algo focal ...`")
    spec = baseline(algo)
    data = read_record(run_dir)
    device = device or data["device"]
    check_device(device)
    items = [(k, v) for k, v in flatten(data).items() if k.split(".", 1)[0] in SHARED_SECTIONS]
    if episodes is not None:
        items.append(("eval.episodes", episodes))
    if tasks is not None:
        items.append(("data.test_tasks", tuple(tasks)))
    try:
        run = apply_overrides(BaselineRun(), items)
    except ConfigError as err:
        raise ConfigError(f"bad evaluation settings: {_first_line(err)}") from None
    _, test = _samplers(data["env"], run, device)
    state = load_checkpoint(run_dir / CHECKPOINT_DIR / LATEST)
    try:
        agent = spec.agent_from_state(state["agent"], device)
    except (KeyError, RuntimeError, ValueError) as err:
        raise CheckpointError(
            f"checkpoint {run_dir / CHECKPOINT_DIR / LATEST} is not a {spec.label} run "
            f"checkpoint ({_first_line(err)}); train the run again"
        ) from None
    seed = int(data["seed"]) if seed is None else seed
    returns = spec.evaluate(agent, test, data["env"], run.eval.episodes, seed)
    return algo, _table(algo, test, returns), summary(test, returns)


def format_table(algo: str, table: dict[int, dict[str, float]],
                 means: dict[str, float] | None = None) -> str:
    """The per-task table (returns and normalized scores), the mean and, given ``means``
    (``summary``), the spread over episodes and tasks, and the summary line."""
    label = baseline(algo).label
    width = max(10, len(label))
    norm = f"{label} norm."
    lines = [f"{'task':>5} {'behavior':>10} {label:>{width}} {norm:>{len(norm)}} "
             f"{'beats behavior':>15}"]
    for task, row in table.items():
        better = "yes" if row[algo] > row["behavior"] else "no"
        lines.append(
            f"{task:>5} {row['behavior']:>10.2f} {row[algo]:>{width}.2f} "
            f"{row[f'{algo}_normalized']:>{len(norm)}.1f} {better:>15}"
        )
    wins = sum(row[algo] > row["behavior"] for row in table.values())
    n = len(table)
    mean = sum(row[algo] for row in table.values()) / n
    behavior = sum(row["behavior"] for row in table.values()) / n
    normalized = sum(row[f"{algo}_normalized"] for row in table.values()) / n
    lines.append(f"{'mean':>5} {behavior:>10.2f} {mean:>{width}.2f} {normalized:>{len(norm)}.1f}")
    if means is not None:
        lines.append(f"{'std':>5} {means['behavior_return_std']:>10.2f} "
                     f"{means['baseline_return_std']:>{width}.2f} "
                     f"{means['baseline_normalized_std']:>{len(norm)}.1f}")
    lines.append(f"{label} beats the behavior policy on {wins} of {n} tasks (std over "
                 "episodes and tasks; normalized = 100 (R - ref_min) / (ref_max - ref_min))")
    return "\n".join(lines)


__all__ = [
    "BASELINES",
    "Baseline",
    "BaselineRun",
    "baseline",
    "build_baseline",
    "evaluate_baseline_run",
    "format_table",
    "run_algo",
    "settings_record",
    "train_baseline_run",
    "train_baseline_runs",
]
