"""``merpo-agent``: train, evaluate and plot MerPO runs.

    merpo-agent train --env merpo/PointRobotWind-v0 [--preset table2|table1|small|smoke]
        [--algo merpo|merpo-adp|combo|beha-only|combo3|cql|focal|cbcq|mbml|batch-pearl]
        [--device cpu|cuda]
        [--seed N | --seeds 0-4] [--run-dir DIR] [--set key=value ...]
        [--config FILE.yaml|FILE.toml] [--compile] [--cuda-graphs] [--wandb PROJECT[/GROUP]]
        # --seeds: the seeds train together in one process, each into DIR/seed-<s>
    torchrun --nproc-per-node N -m merpo_agent train ...   # ranks split the task batch
    merpo-agent evaluate RUN_DIR [--episodes N] [--tasks 40-44] [--seed N]
        # meta-test table of the run's latest checkpoint, also written to
        # RUN_DIR/evaluation.json and evaluation.csv
    merpo-agent plot RUN_DIR          # PNG learning curves into RUN_DIR/plots
    merpo-agent reproduce fig4|fig5|fig6|fig7 --env ENV [--seeds N] [--quick] [--out DIR]
        [--jobs N] [--quality medium|expert|...]   # the paper's comparisons, with a report
        [--executor local|ray [--ray-address auto|HOST:PORT]]   # runs on a Ray cluster
        [--seed-batch N]   # seeds of a method trained together (default all; 1: apart)
        [--steps N] [--methods merpo-adp,focal]   # a longer budget for some of the runs
    merpo-agent --version             # versions of merpo and its dependencies

Bad input (unknown env, algo or preset, bad override, missing dataset, CUDA where there is
none, an unreadable checkpoint) prints one line on stderr and exits with status 2; a NaN
or inf loss stops training with one line and status 1, keeping the last good checkpoint; a
full disk is one line and status 3 (the work so far is kept: the same command resumes). A
run directory another ``train`` is using is one line naming that process.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

# the argument parser and the resolved config of ``train`` live in ``arguments`` (torch-free,
# shared with ``reproduce``); re-exported here, their former home
from merpo_agent.arguments import (
    BASELINE_ALGOS,
    EXIT_BAD_INPUT,
    build_parser,
    default_run_dir,
    resolve_settings,
    train_config,
    train_seeds,
)

EXIT_DIVERGED = 1
EXIT_DISK_FULL = 3


def _train_baseline(args: argparse.Namespace, seeds: list[int] | None) -> int:
    """``--algo focal|cbcq|mbml|batch-pearl``: a baseline on the same datasets and test
    tasks, through one run-directory code path (``baselines/run.py``)."""
    from merpo_agent.baselines.run import format_table, train_baseline_runs
    from merpo_agent.plots import plot_run
    from merpo_agent.run_layout import seed_run_dir

    algo = args.algo
    preset = args.preset
    device = args.device or "cpu"
    if seeds is None:
        seeds = [0 if args.seed is None else args.seed]
        run_dirs = [Path(args.run_dir) if args.run_dir else default_run_dir(
            args.env, preset, algo, seeds[0])]
    else:
        base = Path(args.run_dir) if args.run_dir else default_run_dir(
            args.env, preset, algo, None)
        run_dirs = [seed_run_dir(base, seed) for seed in seeds]
    tables = train_baseline_runs(
        algo, args.env, preset, args.overrides, seeds, device, run_dirs,
        progress=not args.no_progress, config_file=args.config, wandb=args.wandb,
        command=args.command_line,
    )
    for table, run_dir in zip(tables, run_dirs, strict=True):
        print(format_table(algo, table))
        print(f"run directory: {run_dir}")
        print(f"plot: {plot_run(run_dir)[0]}")
    return 0


def _check_algo(algo: str | None) -> None:
    """An unknown ``--algo`` names every algorithm, the baselines included."""
    from merpo_agent.config import ALGOS, ConfigError

    if algo is not None and algo not in (*ALGOS, *BASELINE_ALGOS):
        raise ConfigError(
            f"unknown algo {algo!r}; choose one of {', '.join((*ALGOS, *BASELINE_ALGOS))}"
        )


def _train(args: argparse.Namespace) -> int:
    _check_algo(args.algo)
    resolve_settings(args)
    seeds = train_seeds(args)  # baselines too, before anything is built
    if args.wandb is not None:  # one line before any training when wandb is missing
        from merpo_agent.metrics import check_wandb

        check_wandb(args.wandb)
    if args.threads is not None:
        _set_threads(args.threads)
    if args.algo in BASELINE_ALGOS:
        return _train_baseline(args, seeds)
    from merpo_agent.distributed import destroy_distributed, init_distributed
    from merpo_agent.plots import plot_run
    from merpo_agent.run_layout import seed_run_dir
    from merpo_agent.seed_batch import SeedBatch
    from merpo_agent.trainer import MetaTrainer

    # each seed's config resolves as its own ``train --seed S`` would
    cfgs = [train_config(args)] if seeds is None else [
        train_config(argparse.Namespace(**{**vars(args), "seed": seed})) for seed in seeds]
    cfg = cfgs[0]
    if seeds is None:
        run_dirs = [Path(args.run_dir) if args.run_dir else default_run_dir(
            cfg.env, cfg.preset, cfg.algo, cfg.seed)]
    else:
        base = Path(args.run_dir) if args.run_dir else default_run_dir(
            cfg.env, cfg.preset, cfg.algo, None)
        run_dirs = [seed_run_dir(base, seed) for seed in seeds]
    # under torchrun: join the process group (Gloo on CPU, NCCL with cuda:LOCAL_RANK);
    # a single process is rank 0 of 1 and nothing is initialised
    ctx = init_distributed(cfg.device)
    try:
        members = [
            MetaTrainer(replace(c, device=str(ctx.device)), run_dir,
                        progress=not args.no_progress, wandb=args.wandb,
                        command=args.command_line, setup_cache=args.setup_cache,
                        say=None if seeds is None else _seed_say(c.seed))
            for c, run_dir in zip(cfgs, run_dirs, strict=True)
        ]
        results = SeedBatch(members, progress=not args.no_progress).train()
        if ctx.is_main:  # rank 0 alone prints and writes the plots
            for result, run_dir in zip(results, run_dirs, strict=True):
                print(result.table())
                paths = plot_run(run_dir)
                print(f"run directory: {run_dir}")
                print(f"plot: {paths[0]}")
    finally:
        destroy_distributed()
    return 0


def _seed_say(seed: int):
    """A seed's one-line messages, named by its seed (``train --seeds``)."""
    from tqdm.auto import tqdm

    return lambda line: tqdm.write(f"seed {seed}: {line}")


def _set_threads(threads: int) -> None:
    from merpo_agent.config import ConfigError

    if threads < 1:
        raise ConfigError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def _evaluate(args: argparse.Namespace) -> int:
    from merpo_agent.baselines.run import (
        evaluate_baseline_run,
        format_table,
        per_task,
        read_record,
        run_algo,
    )
    from merpo_agent.config import ConfigError
    from merpo_agent.evaluation import write_evaluation
    from merpo_agent.trainer import load_trained

    if args.device is not None:
        from merpo_agent.config import check_device

        check_device(args.device)
    if args.episodes is not None and args.episodes < 1:
        raise ConfigError(f"--episodes must be >= 1, got {args.episodes}")
    run_dir = Path(args.run_dir)
    tasks = _tasks(run_dir, args.tasks)
    algo = run_algo(run_dir)
    if algo is not None:  # a baseline's run directory
        algo, table, means = evaluate_baseline_run(run_dir, args.device, args.episodes,
                                                   tasks, args.seed)
        print(format_table(algo, table, means))
        saved = read_record(run_dir)
        rows = [{"task": task, **row} for task, row in table.items()]
        record = {"run_dir": str(run_dir), "env": saved["env"], "algo": algo,
                  "episodes": args.episodes or saved["eval"]["episodes"],
                  "seed": saved["seed"] if args.seed is None else args.seed,
                  **per_task(algo, table), "summary": means}
    else:
        trainer = load_trained(run_dir, args.device)
        result = trainer.evaluate(seed=args.seed, tasks=tasks, episodes=args.episodes)
        if tasks is None:  # the whole test split: its adapted policies for load_policy
            trainer.save_adapted(result)
        print(result.table())
        rows = result.rows()
        record = {"run_dir": str(run_dir), "env": result.env_id, "algo": trainer.cfg.algo,
                  "iteration": result.iteration, "episodes": args.episodes
                  or trainer.cfg.eval.episodes, "seed": result.seed,
                  "tasks": list(result.tasks), "summary": result.means()}
    for path in write_evaluation(run_dir, record, rows):
        print(path)
    return 0


def _tasks(run_dir: Path, spec: str | None) -> tuple[int, ...] | None:
    """``--tasks`` in merpo-data's form (``40-44``, ``40,42``, ``test``) for the run's env."""
    if spec is None:
        return None
    import yaml
    from merpo_data.ids import parse_tasks
    from merpo_envs import get_meta_info

    from merpo_agent.config import ConfigError
    from merpo_agent.trainer import RunError

    config = run_dir / "config.yaml"
    if not config.is_file():
        raise RunError(f"{run_dir} is not a run directory (no config.yaml); train first with "
                       "`merpo-agent train --run-dir ...`")
    env = (yaml.safe_load(config.read_text()) or {}).get("env")
    try:
        return parse_tasks(spec, get_meta_info(env))
    except (ValueError, KeyError) as err:
        raise ConfigError(f"--tasks: {_one_line(err)}") from None


def _plot(args: argparse.Namespace) -> int:
    from merpo_agent.plots import plot_run

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"no run directory at {run_dir}")
    for path in plot_run(run_dir):
        print(path)
    return 0


def _reproduce(args: argparse.Namespace) -> int:
    from merpo_agent.config import check_device
    from merpo_agent.executors import make_executor
    from merpo_agent.reproduce import reproduce

    check_device("cpu")
    executor = make_executor(args.executor, args.jobs, args.ray_address)
    report = reproduce(
        args.experiment, args.env, args.seeds, Path(args.out), quick=args.quick,
        quality=args.quality,
        settings=args.settings, steps=args.steps, executor=executor,
        seed_batch=args.seed_batch, methods=args.methods,
    )
    print(report.read_text())
    print(f"report: {report}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from merpo_agent.config import check_device
    from merpo_agent.executors import make_executor
    from merpo_agent.tune import parse_algos, tune

    check_device("cpu")
    executor = make_executor(args.executor, args.jobs, args.ray_address)
    paths = tune(parse_algos(args.algo), args.env, Path(args.out), trials=args.trials,
                 seeds=args.seeds, quick=args.quick, quality=args.quality,
                 sampler=args.sampler, storage=args.storage, jobs=args.jobs,
                 executor=executor, seed_batch=args.seed_batch)
    for path in paths:
        print(f"chosen settings: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    from merpo_data.atomic import DISK_FULL, disk_full_line
    from merpo_data.lock import LockHeld

    from merpo_agent.checkpoint import CheckpointError
    from merpo_agent.config import ConfigError
    from merpo_agent.trainer import RunError, TrainingDiverged

    args = build_parser().parse_args(argv)
    # the command line as run.json records it (also when ``main`` is called from Python)
    args.command_line = ["merpo-agent", *(sys.argv[1:] if argv is None else argv)]
    handlers = {"train": _train, "evaluate": _evaluate, "plot": _plot, "reproduce": _reproduce,
                "tune": _tune}
    try:
        return handlers[args.command](args)
    except (ConfigError, RunError, CheckpointError, FileNotFoundError, LockHeld) as err:
        print(f"merpo-agent: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as err:
        if err.errno not in DISK_FULL:
            raise
        print(f"merpo-agent: error: {disk_full_line(err, 'the same command')}",
              file=sys.stderr)
        return EXIT_DISK_FULL
    except TrainingDiverged as err:
        print(f"merpo-agent: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_DIVERGED
    except KeyboardInterrupt:
        print("merpo-agent: interrupted; `train` on the same run directory resumes it",
              file=sys.stderr)
        return 130


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
