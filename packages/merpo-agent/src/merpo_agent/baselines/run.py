"""``merpo-agent train --algo focal|cbcq``: a baseline's run directory, beside MerPO's.

Same datasets (the task sampler), same env split, same meta-test in the real env as MerPO.
One code path for every baseline; what differs is a row of ``BASELINES`` (config class,
presets, train / evaluate / save / load functions). The run directory holds
``<algo>_config.json``, ``metrics.jsonl`` (+ TensorBoard events),
``checkpoints/<algo>.pt`` and the final per-task table. Overrides (``--set key=value``) are
the baseline's config fields plus the run fields of ``BaselineRun``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from merpo_agent.baselines.contextual_bcq import (
    ContextualBCQConfig,
    evaluate_contextual_bcq,
    load_contextual_bcq,
    save_contextual_bcq,
    train_contextual_bcq,
)
from merpo_agent.baselines.focal import (
    FocalConfig,
    evaluate_focal,
    load_focal,
    save_focal,
    train_focal,
)
from merpo_agent.config import ConfigError, check_device
from merpo_agent.trainer import RunError


@dataclasses.dataclass(frozen=True)
class BaselineRun:
    """What a baseline run trains on and for how long (the method's own fields: its config)."""

    steps: int = 20_000
    quality: str = "medium"
    train_tasks: tuple[int, ...] = ()  # empty = the env's train split
    test_tasks: tuple[int, ...] = ()  # empty = the env's test split
    eval_episodes: int = 4
    eval_every: int = 5_000


@dataclasses.dataclass(frozen=True)
class Baseline:
    """One baseline of the run-directory code path (``algo`` is its ``--algo`` name)."""

    algo: str
    label: str  # in messages and the table
    config_class: type
    # per preset: (run fields, config constructor taking the env id)
    presets: dict[str, tuple[dict[str, Any], Callable[[str], Any]]]
    train: Callable[..., Any]  # (config, sampler, steps, device, seed, log_fn, progress_fn)
    evaluate: Callable[..., dict[int, float]]  # (agent, sampler, env_id, episodes, seed)
    save: Callable[[Any, Path], None]
    load: Callable[[Path, str], Any]


# "small" = minutes on a 2-core CPU.
BASELINES: dict[str, Baseline] = {
    "focal": Baseline(
        algo="focal",
        label="FOCAL",
        config_class=FocalConfig,
        presets={
            "smoke": (dict(steps=200, eval_every=100, eval_episodes=1), FocalConfig.smoke),
            "small": (dict(steps=3_000, eval_every=1_000), lambda env: FocalConfig.for_env(
                env, hidden=64, hidden_layers=2, encoder_hidden=64, encoder_layers=2,
                batch_size=128, behavior_steps=500, behavior_hidden=64, behavior_layers=2,
                actor_lr=1e-3, critic_lr=1e-3, encoder_lr=1e-3, log_every=250)),
            "table2": ({}, FocalConfig.for_env),
        },
        train=train_focal,
        evaluate=evaluate_focal,
        save=save_focal,
        load=load_focal,
    ),
    "cbcq": Baseline(
        algo="cbcq",
        label="Contextual BCQ",
        config_class=ContextualBCQConfig,
        presets={
            "smoke": (
                dict(steps=200, eval_every=100, eval_episodes=1), ContextualBCQConfig.smoke
            ),
            "small": (dict(steps=3_000, eval_every=1_000), lambda env: ContextualBCQConfig.for_env(
                env, hidden=64, hidden_layers=2, vae_hidden=64, vae_layers=2,
                encoder_hidden=64, encoder_layers=2, batch_size=128, encoder_lr=1e-3,
                log_every=250)),
            "table2": ({}, ContextualBCQConfig.for_env),
        },
        train=train_contextual_bcq,
        evaluate=evaluate_contextual_bcq,
        save=save_contextual_bcq,
        load=load_contextual_bcq,
    ),
}


def baseline(algo: str) -> Baseline:
    if algo not in BASELINES:
        raise ConfigError(f"unknown baseline {algo!r}; one of {', '.join(BASELINES)}")
    return BASELINES[algo]


def build_baseline(
    algo: str, env_id: str, preset: str, overrides: list[str]
) -> tuple[BaselineRun, Any]:
    """Resolve the preset and ``key=value`` overrides; one-line ``ConfigError`` on bad input."""
    spec = baseline(algo)
    if preset not in spec.presets:
        raise ConfigError(f"{spec.label} has presets {', '.join(spec.presets)}; got {preset!r}")
    run_fields, make_config = spec.presets[preset]
    run_values: dict[str, Any] = dict(run_fields)
    config_values: dict[str, Any] = {}
    run_names = {f.name for f in dataclasses.fields(BaselineRun)}
    config_names = {f.name for f in dataclasses.fields(spec.config_class)}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. --set steps=1000)")
        value = yaml.safe_load(raw)
        if key in run_names:
            run_values[key] = tuple(value) if key.endswith("_tasks") else value
        elif key in config_names:
            config_values[key] = value
        else:
            raise ConfigError(
                f"unknown {spec.label} override {key!r}; valid keys: "
                f"{', '.join(sorted(run_names | config_names))}"
            )
    try:
        config = make_config(env_id)
        config = dataclasses.replace(config, **config_values)
        run = BaselineRun(**run_values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad {spec.label} setting: {err}") from None
    return run, config


def train_baseline_run(
    algo: str,
    env_id: str,
    preset: str,
    overrides: list[str],
    seed: int,
    device: str,
    run_dir: Path,
    progress: bool = True,
) -> dict[int, dict[str, float]]:
    """Train the baseline, meta-test it on the test tasks; returns ``{task: {algo, behavior}}``."""
    import merpo_data
    from merpo_envs import get_meta_info

    from merpo_agent.metrics import MetricsWriter

    spec = baseline(algo)
    run, config = build_baseline(algo, env_id, preset, overrides)  # also checks the env id
    check_device(device)
    info = get_meta_info(env_id)
    train_tasks = list(run.train_tasks or info.train_tasks)
    test_tasks = list(run.test_tasks or info.test_tasks)
    try:
        train = merpo_data.TaskSampler(env_id, train_tasks, run.quality, device=device)
        test = merpo_data.TaskSampler(env_id, test_tasks, run.quality, device=device)
    except (ValueError, FileNotFoundError) as err:
        raise RunError(str(err).strip().splitlines()[0]) from None

    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / f"{algo}_config.json", {
        "env": env_id, "preset": preset, "seed": seed, "device": device, "algo": algo,
        "run": dataclasses.asdict(run), algo: dataclasses.asdict(config),
    })
    writer = MetricsWriter(run_dir)
    checkpoint = run_dir / "checkpoints" / f"{algo}.pt"

    def log(step: int, metrics: dict[str, float]) -> None:
        writer.log(step, "train", metrics)

    def meta_test(step: int, agent) -> None:
        if step > 0 and step % run.eval_every and step != run.steps:
            return
        returns = spec.evaluate(agent, test, env_id, run.eval_episodes, seed)
        mean = sum(returns.values()) / len(returns)
        writer.log(step, "meta_test", {"test_return": mean})
        if progress:
            print(f"{algo} step {step}: mean test return {mean:.2f}")

    agent = spec.train(config, train, run.steps, device, seed, log, meta_test)
    checkpoint.parent.mkdir(exist_ok=True)
    spec.save(agent, checkpoint)
    agent = spec.load(checkpoint, device)  # what evaluate would see: the saved agent
    returns = spec.evaluate(agent, test, env_id, run.eval_episodes, seed)
    behavior = test.dataset_returns.tolist()
    table = {
        task: {algo: returns[task], "behavior": behavior[i]}
        for i, task in enumerate(test_tasks)
    }
    writer.log_record({"phase": "final", "iteration": run.steps,
                       "tasks": {str(k): v for k, v in table.items()}})
    return table


def format_table(algo: str, table: dict[int, dict[str, float]]) -> str:
    label = baseline(algo).label
    width = max(10, len(label))
    lines = [f"{'task':>5} {'behavior':>10} {label:>{width}} {'beats behavior':>15}"]
    for task, row in table.items():
        better = "yes" if row[algo] > row["behavior"] else "no"
        lines.append(
            f"{task:>5} {row['behavior']:>10.2f} {row[algo]:>{width}.2f} {better:>15}"
        )
    wins = sum(row[algo] > row["behavior"] for row in table.values())
    lines.append(f"{label} beats the behavior policy on {wins} of {len(table)} tasks")
    return "\n".join(lines)


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)


__all__ = [
    "BASELINES",
    "Baseline",
    "BaselineRun",
    "baseline",
    "build_baseline",
    "format_table",
    "train_baseline_run",
]
