"""``merpo-agent train --algo focal|cbcq|mbml|batch-pearl``: a baseline's run directory.

Same datasets (the task sampler), same env split, same meta-test in the real env as MerPO,
and the same run directory layout: ``config.yaml``, ``metrics.jsonl`` (+ TensorBoard
events), ``checkpoints/latest.pt`` (every parameter, optimizer and RNG state: ``train`` on
an existing run directory resumes it, and on CPU ends where an uninterrupted run ends) and
``plots/``. ``merpo-agent evaluate`` / ``plot`` read it like a MerPO run directory.

One code path for every baseline; what differs is a row of ``BASELINES`` (config class,
presets, learner, meta-test, agent file format). Overrides (``--set key=value`` or a
``--config`` file) are the baseline's config fields plus the run fields of
``BaselineRun``, parsed to the fields' types by MerPO's parser (``merpo_agent.overrides``).
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from merpo_agent.baselines.batch_pearl import (
    BatchPearlConfig,
    BatchPearlLearner,
    evaluate_batch_pearl,
)
from merpo_agent.baselines.batch_pearl import agent_from_state as batch_pearl_from_state
from merpo_agent.baselines.context import NEW_RUN_ADVICE, BaselineLearner, train_steps
from merpo_agent.baselines.contextual_bcq import (
    ContextualBCQConfig,
    ContextualBCQLearner,
    evaluate_contextual_bcq,
)
from merpo_agent.baselines.contextual_bcq import agent_from_state as cbcq_from_state
from merpo_agent.baselines.focal import FocalConfig, FocalLearner, evaluate_focal
from merpo_agent.baselines.focal import agent_from_state as focal_from_state
from merpo_agent.baselines.mbml import MBMLConfig, MBMLLearner, evaluate_mbml
from merpo_agent.baselines.mbml import agent_from_state as mbml_from_state
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
from merpo_agent.overrides import flatten, parse_assignment, parse_value, read_config_file, to_dict
from merpo_agent.provenance import record_session
from merpo_agent.run_dir import claim_run_dir
from merpo_agent.scores import normalized_score, sampler_reference_scores, summarize
from merpo_agent.trainer import RunError, TrainingDiverged

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
RUN_FORMAT = "baseline-run"
# TensorBoard HParams metrics of a baseline run
HPARAM_METRICS = ("meta_test/baseline_return", "meta_test/baseline_normalized")
# Settings a resumed run may change (train longer, move device, log or test more often).
RESUMABLE_CHANGES = {
    "device", "run.steps", "run.eval_every", "run.eval_episodes", "run.checkpoint_every",
    "method.log_every",
}


@dataclasses.dataclass(frozen=True)
class BaselineRun:
    """What a baseline run trains on and for how long (the method's own fields: its config)."""

    steps: int = 20_000
    quality: str = "medium"
    data_preset: str = "default"  # merpo-data's preset: "test" reads the cheap test datasets
    train_tasks: tuple[int, ...] = ()  # empty = the env's train split
    test_tasks: tuple[int, ...] = ()  # empty = the env's test split
    eval_episodes: int = 4
    eval_every: int = 5_000
    checkpoint_every: int = 1_000

    def __post_init__(self) -> None:
        for name in ("steps", "eval_episodes", "eval_every", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class Baseline:
    """One baseline of the run-directory code path (``algo`` is its ``--algo`` name)."""

    algo: str
    label: str  # in messages, tables and plots
    config_class: type
    # per preset: (run fields, config constructor taking the env id)
    presets: dict[str, tuple[dict[str, Any], Callable[[str], Any]]]
    learner: type[BaselineLearner]  # build / prepare / step / training state
    evaluate: Callable[..., dict[int, float]]  # (agent, sampler, env_id, episodes, seed)
    agent_from_state: Callable[[dict[str, Any], str], Any]  # the agent file's dict -> agent


def _small(make: Callable[..., Any], **settings: Any) -> Callable[[str], Any]:
    """The ``small`` preset: minutes on a 2-core CPU (64 x 2 networks, batches of 128)."""
    return lambda env: make(env, **{
        "hidden": 64, "hidden_layers": 2, "encoder_hidden": 64, "encoder_layers": 2,
        "batch_size": 128, "encoder_lr": 1e-3, "log_every": 250, **settings,
    })


SMOKE_RUN = dict(
    steps=200, eval_every=100, eval_episodes=1, checkpoint_every=100, data_preset="test"
)
SMALL_RUN = dict(steps=3_000, eval_every=1_000, checkpoint_every=1_000)

BASELINES: dict[str, Baseline] = {
    "focal": Baseline(
        algo="focal",
        label="FOCAL",
        config_class=FocalConfig,
        presets={
            "smoke": (SMOKE_RUN, FocalConfig.smoke),
            "small": (SMALL_RUN, _small(
                FocalConfig.for_env, behavior_steps=500, behavior_hidden=64, behavior_layers=2,
                actor_lr=1e-3, critic_lr=1e-3,
            )),
            "table2": ({}, FocalConfig.for_env),
        },
        learner=FocalLearner,
        evaluate=evaluate_focal,
        agent_from_state=focal_from_state,
    ),
    "cbcq": Baseline(
        algo="cbcq",
        label="Contextual BCQ",
        config_class=ContextualBCQConfig,
        presets={
            "smoke": (SMOKE_RUN, ContextualBCQConfig.smoke),
            "small": (SMALL_RUN, _small(
                ContextualBCQConfig.for_env, vae_hidden=64, vae_layers=2,
            )),
            "table2": ({}, ContextualBCQConfig.for_env),
        },
        learner=ContextualBCQLearner,
        evaluate=evaluate_contextual_bcq,
        agent_from_state=cbcq_from_state,
    ),
    "mbml": Baseline(
        algo="mbml",
        label="MBML",
        config_class=MBMLConfig,
        presets={
            "smoke": (SMOKE_RUN, MBMLConfig.smoke),
            "small": (SMALL_RUN, _small(
                MBMLConfig.for_env, vae_hidden=64, vae_layers=2, model_hidden=64,
                model_layers=2, model_steps=1_000,
            )),
            "table2": ({}, MBMLConfig.for_env),
        },
        learner=MBMLLearner,
        evaluate=evaluate_mbml,
        agent_from_state=mbml_from_state,
    ),
    "batch-pearl": Baseline(
        algo="batch-pearl",
        label="Batch PEARL",
        config_class=BatchPearlConfig,
        presets={
            "smoke": (SMOKE_RUN, BatchPearlConfig.smoke),
            "small": (SMALL_RUN, _small(
                BatchPearlConfig.for_env, actor_lr=1e-3, critic_lr=1e-3,
            )),
            "table2": ({}, BatchPearlConfig.for_env),
        },
        learner=BatchPearlLearner,
        evaluate=evaluate_batch_pearl,
        agent_from_state=batch_pearl_from_state,
    ),
}


def baseline(algo: str) -> Baseline:
    if algo not in BASELINES:
        raise ConfigError(f"unknown baseline {algo!r}; one of {', '.join(BASELINES)}")
    return BASELINES[algo]


def build_baseline(
    algo: str,
    env_id: str,
    preset: str,
    overrides: list[str],
    config_file: str | Path | None = None,
) -> tuple[BaselineRun, Any]:
    """Resolve the preset, a config file's keys, then ``key=value`` overrides (each value
    parsed to its field's type); one-line ``ConfigError`` on bad input."""
    spec = baseline(algo)
    if preset not in spec.presets:
        raise ConfigError(f"{spec.label} has presets {', '.join(spec.presets)}; got {preset!r}")
    run_fields, make_config = spec.presets[preset]
    run_types = typing.get_type_hints(BaselineRun)
    config_types = typing.get_type_hints(spec.config_class)
    config_types = {f.name: config_types[f.name] for f in dataclasses.fields(spec.config_class)}
    items: list[tuple[str, Any]] = []
    if config_file is not None:
        items += list(read_config_file(config_file).items())
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. --set steps=1000)")
        items.append(parse_assignment(item))
    run_values: dict[str, Any] = dict(run_fields)
    config_values: dict[str, Any] = {}
    for key, raw in items:
        name = key.split(".", 1)[1] if key.startswith(("run.", "method.")) else key
        if name in run_types:
            run_values[name] = parse_value(raw, run_types[name], key)
        elif name in config_types:
            config_values[name] = parse_value(raw, config_types[name], key)
        else:
            import difflib

            close = difflib.get_close_matches(name, [*run_types, *config_types], n=3)
            hint = f"did you mean {', '.join(close)}?" if close else (
                f"valid keys: {', '.join(sorted([*run_types, *config_types]))}"
            )
            raise ConfigError(f"unknown {spec.label} override {key!r}; {hint}")
    try:
        config = dataclasses.replace(make_config(env_id), **config_values)
        run = BaselineRun(**run_values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad {spec.label} setting: {_first_line(err)}") from None
    check_task_split(env_id, run.train_tasks, run.test_tasks)
    return run, config


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _samplers(env_id: str, run: BaselineRun, device: str):
    import merpo_data
    from merpo_envs import get_meta_info

    info = get_meta_info(env_id)
    train_tasks = list(run.train_tasks or info.train_tasks)
    test_tasks = list(run.test_tasks or info.test_tasks)
    try:
        pairs = [(t, run.quality) for t in (*train_tasks, *test_tasks)]
        merpo_data.ensure_datasets(env_id, pairs, run.data_preset)
        train = merpo_data.TaskSampler(
            env_id, train_tasks, run.quality, device=device, preset=run.data_preset
        )
        test = merpo_data.TaskSampler(
            env_id, test_tasks, run.quality, device=device, preset=run.data_preset
        )
    except (ValueError, FileNotFoundError) as err:
        raise RunError(_first_line(err)) from None
    return train, test


def _run_record(algo: str, env_id: str, preset: str, seed: int, device: str,
                run: BaselineRun, config: Any) -> dict[str, Any]:
    return {
        "env": env_id, "algo": algo, "label": baseline(algo).label, "preset": preset,
        "seed": seed, "device": device, "run": to_dict(run), "method": to_dict(config),
    }


def _check_resumable(run_dir: Path, record: dict[str, Any]) -> None:
    saved = yaml.safe_load((run_dir / CONFIG_FILE).read_text()) or {}
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

    spec = baseline(algo)
    run, config = build_baseline(algo, env_id, preset, overrides, config_file)
    check_device(device)
    run_dir = Path(run_dir)
    record = _run_record(algo, env_id, preset, seed, device, run, config)
    checkpoint = run_dir / CHECKPOINT_DIR / LATEST
    with claim_run_dir(run_dir, checkpoint):
        return _train_claimed(spec, algo, env_id, seed, device, run, config, run_dir, record,
                              checkpoint, progress, wandb, command)


def _train_claimed(spec, algo, env_id, seed, device, run, config, run_dir, record, checkpoint,
                   progress, wandb, command) -> dict[int, dict[str, float]]:
    from merpo_agent.metrics import MetricsWriter

    resumed = checkpoint.is_file() and (run_dir / CONFIG_FILE).is_file()
    if resumed:
        _check_resumable(run_dir, record)
    train, test = _samplers(env_id, run, device)

    try:
        learner = spec.learner.build(config, train, device, seed)
    except ValueError as err:
        raise ConfigError(f"bad {spec.label} setting: {_first_line(err)}") from None
    step = 0
    if resumed:
        state = load_checkpoint(checkpoint, map_location=device)
        try:
            if state.get("format") != RUN_FORMAT or state.get("algo") != algo:
                raise ValueError(f"not a {spec.label} run checkpoint")
            learner.load_training_state(state["learner"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise CheckpointError(
                f"checkpoint {checkpoint} does not match this config ({_first_line(err)}); "
                "use a new --run-dir"
            ) from None
        set_rng_state(state["rng"], {"data": learner.generator})
        step = int(state["step"])
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / CONFIG_FILE, yaml.safe_dump(record, sort_keys=False))
    record_session(run_dir, device, fresh=not resumed, command=command)
    writer = MetricsWriter(run_dir, purge_step=step + 1 if resumed else 0, hparams=record,
                           hparam_metrics=HPARAM_METRICS, wandb=wandb)

    def save(at: int) -> None:
        try:
            save_checkpoint(checkpoint, {
                "format": RUN_FORMAT, "algo": algo, "step": at,
                "agent": learner.agent_state(),
                "learner": learner.training_state(),
                "rng": rng_state({"data": learner.generator}),
            })
        except NonFiniteState as err:  # never a checkpoint with a NaN: the last good stays
            kept = f"last good checkpoint {checkpoint} kept" if checkpoint.is_file() else (
                "no checkpoint was written")
            raise TrainingDiverged(
                f"{err.where} of the state is NaN or inf by update {at}: training stopped; "
                f"{kept}; {NEW_RUN_ADVICE}"
            ) from None

    def log(at: int, metrics: dict[str, float]) -> None:
        writer.log(at, "train", metrics)

    def meta_test(at: int, agent: Any) -> None:
        if at % run.eval_every and at != run.steps:
            return
        returns = spec.evaluate(agent, test, env_id, run.eval_episodes, seed)
        mean = sum(returns.values()) / len(returns)
        writer.log(at, "meta_test", summary(test, returns))
        writer.log_record({"iteration": at, "phase": "meta_test_tasks",
                           **per_task(algo, _table(algo, test, returns))})
        if progress:
            print(f"{algo} update {at}: mean test return {mean:.2f} "
                  f"(behavior {float(test.dataset_returns.mean()):.2f})")

    try:
        if resumed:
            writer.truncate_after(step)
            if step < run.steps:  # trained further: the shorter run's table is stale
                writer.drop_phase("final")
            if progress:
                print(f"resuming {run_dir} at update {step}")
        else:
            writer.truncate_after(-1)
            prepared = learner.prepare(train)
            learner.after_prepare()
            if prepared:
                writer.log(0, "train", prepared)
            save(0)
        if step < run.steps:
            with torch.enable_grad():
                train_steps(learner, train, run.steps, step, log, meta_test, save,
                            run.checkpoint_every)
        agent = spec.agent_from_state(load_checkpoint(checkpoint)["agent"], device)
        returns = spec.evaluate(agent, test, env_id, run.eval_episodes, seed)
        table = _table(algo, test, returns)
        if not writer.has(run.steps, "final"):
            writer.log_record({"phase": "final", "iteration": run.steps,
                               "tasks": {str(k): v for k, v in table.items()}})
    finally:
        writer.close()
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
    data = yaml.safe_load((run_dir / CONFIG_FILE).read_text())
    device = device or data["device"]
    check_device(device)
    try:
        run = BaselineRun(**{k: tuple(v) if isinstance(v, list) else v
                             for k, v in data["run"].items()})
        if episodes is not None:
            run = dataclasses.replace(run, eval_episodes=episodes)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad evaluation settings: {_first_line(err)}") from None
    if tasks is not None:
        run = dataclasses.replace(run, test_tasks=tuple(tasks))
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
    returns = spec.evaluate(agent, test, data["env"], run.eval_episodes, seed)
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
    "train_baseline_run",
]
