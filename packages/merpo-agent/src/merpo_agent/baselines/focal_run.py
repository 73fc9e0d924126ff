"""``merpo-agent train --algo focal``: a FOCAL run directory, the baseline beside MerPO.

Same datasets (the task sampler), same env split, same meta-test in the real env as MerPO;
the run directory holds ``focal_config.json``, ``metrics.jsonl`` (+ TensorBoard events),
``checkpoints/focal.pt`` and the final per-task table. Overrides (``--set key=value``) are
``FocalConfig`` fields plus the run fields below.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml

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
class FocalRun:
    """What a FOCAL run trains on and for how long (the method's own fields: ``FocalConfig``)."""

    steps: int = 20_000
    quality: str = "medium"
    train_tasks: tuple[int, ...] = ()  # empty = the env's train split
    test_tasks: tuple[int, ...] = ()  # empty = the env's test split
    eval_episodes: int = 4
    eval_every: int = 5_000


# Per preset: (run fields, FocalConfig constructor). "small" = minutes on a 2-core CPU.
_PRESETS = {
    "smoke": (dict(steps=200, eval_every=100, eval_episodes=1), FocalConfig.smoke),
    "small": (dict(steps=3_000, eval_every=1_000), lambda env: FocalConfig.for_env(
        env, hidden=64, hidden_layers=2, encoder_hidden=64, encoder_layers=2, batch_size=128,
        behavior_steps=500, behavior_hidden=64, behavior_layers=2, actor_lr=1e-3,
        critic_lr=1e-3, encoder_lr=1e-3, log_every=250)),
    "table2": ({}, FocalConfig.for_env),
}


def build_focal(
    env_id: str, preset: str, overrides: list[str]
) -> tuple[FocalRun, FocalConfig]:
    """Resolve the preset and ``key=value`` overrides; one-line ``ConfigError`` on bad input."""
    if preset not in _PRESETS:
        raise ConfigError(f"FOCAL has presets {', '.join(_PRESETS)}; got {preset!r}")
    run_fields, make_config = _PRESETS[preset]
    run_values: dict[str, Any] = dict(run_fields)
    config_values: dict[str, Any] = {}
    run_names = {f.name for f in dataclasses.fields(FocalRun)}
    config_names = {f.name for f in dataclasses.fields(FocalConfig)}
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
                f"unknown FOCAL override {key!r}; valid keys: "
                f"{', '.join(sorted(run_names | config_names))}"
            )
    try:
        config = make_config(env_id)
        config = dataclasses.replace(config, **config_values)
        run = FocalRun(**run_values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"bad FOCAL setting: {err}") from None
    return run, config


def train_focal_run(
    env_id: str,
    preset: str,
    overrides: list[str],
    seed: int,
    device: str,
    run_dir: Path,
    progress: bool = True,
) -> dict[int, dict[str, float]]:
    """Train FOCAL, meta-test it on the test tasks; returns ``{task: {focal, behavior}}``."""
    import merpo_data
    from merpo_envs import get_meta_info

    from merpo_agent.metrics import MetricsWriter

    run, config = build_focal(env_id, preset, overrides)  # also checks the env id
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
    _write_json(run_dir / "focal_config.json", {
        "env": env_id, "preset": preset, "seed": seed, "device": device,
        "run": dataclasses.asdict(run), "focal": dataclasses.asdict(config),
    })
    writer = MetricsWriter(run_dir)
    checkpoint = run_dir / "checkpoints" / "focal.pt"

    def log(step: int, metrics: dict[str, float]) -> None:
        writer.log(step, "train", metrics)

    def meta_test(step: int, agent) -> None:
        if step > 0 and step % run.eval_every and step != run.steps:
            return
        returns = evaluate_focal(agent, test, env_id, run.eval_episodes, seed)
        mean = sum(returns.values()) / len(returns)
        writer.log(step, "meta_test", {"test_return": mean})
        if progress:
            print(f"focal step {step}: mean test return {mean:.2f}")

    agent = train_focal(config, train, run.steps, device, seed, log, meta_test)
    checkpoint.parent.mkdir(exist_ok=True)
    save_focal(agent, checkpoint)
    agent = load_focal(checkpoint, device)  # what evaluate would see: the saved agent
    returns = evaluate_focal(agent, test, env_id, run.eval_episodes, seed)
    behavior = test.dataset_returns.tolist()
    table = {
        task: {"focal": returns[task], "behavior": behavior[i]}
        for i, task in enumerate(test_tasks)
    }
    writer.log_record({"phase": "final", "iteration": run.steps,
                       "tasks": {str(k): v for k, v in table.items()}})
    return table


def format_table(table: dict[int, dict[str, float]]) -> str:
    lines = [f"{'task':>5} {'behavior':>10} {'FOCAL':>10} {'beats behavior':>15}"]
    for task, row in table.items():
        better = "yes" if row["focal"] > row["behavior"] else "no"
        lines.append(f"{task:>5} {row['behavior']:>10.2f} {row['focal']:>10.2f} {better:>15}")
    wins = sum(row["focal"] > row["behavior"] for row in table.values())
    lines.append(f"FOCAL beats the behavior policy on {wins} of {len(table)} tasks")
    return "\n".join(lines)


def _write_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2)
    os.replace(tmp, path)
