"""``merpo-agent``: train, evaluate and plot MerPO runs.

    merpo-agent train --env merpo/PointRobotWind-v0 [--preset table2|table1|small|smoke]
        [--algo merpo|merpo-adp|combo|beha-only|combo3|cql|focal|cbcq|mbml|batch-pearl]
        [--device cpu|cuda]
        [--seed N] [--run-dir DIR] [--set key=value ...] [--config FILE.yaml|FILE.toml]
        [--compile] [--cuda-graphs] [--wandb PROJECT[/GROUP]]
    torchrun --nproc-per-node N -m merpo_agent train ...   # ranks split the task batch
    merpo-agent evaluate RUN_DIR [--episodes N] [--tasks 40-44] [--seed N]
        # meta-test table of the run's latest checkpoint, also written to
        # RUN_DIR/evaluation.json and evaluation.csv
    merpo-agent plot RUN_DIR          # PNG learning curves into RUN_DIR/plots
    merpo-agent reproduce fig4|fig5|fig6|fig7 --env ENV [--seeds N] [--quick] [--out DIR]
        [--jobs N] [--quality medium|expert|...]   # the paper's comparisons, with a report
    merpo-agent --version             # versions of merpo and its dependencies

Bad input (unknown env, algo or preset, bad override, missing dataset, CUDA where there is
none, an unreadable checkpoint) prints one line on stderr and exits with status 2; a NaN
or inf loss stops training with one line and status 1, keeping the last good checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 1
# --algo names trained by merpo_agent.baselines.run (kept here: --help needs no torch import)
BASELINE_ALGOS = ("focal", "cbcq", "mbml", "batch-pearl")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(EXIT_BAD_INPUT, f"merpo-agent: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from merpo_envs.versions import VersionAction

    from merpo_agent.config import ALGOS
    from merpo_agent.presets import PRESETS

    parser = _Parser(prog="merpo-agent", description=__doc__.split("\n\n")[0])
    versions = ("merpo-agent", "merpo-data", "merpo-envs", "torch")
    parser.add_argument("--version", action=VersionAction, dists=versions)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = sub.add_parser("train", help="meta-train (resumes an existing run directory)")
    train.add_argument("--env", required=True, help="merpo env id, e.g. merpo/PointRobotWind-v0")
    train.add_argument("--preset", default="table2", help=f"one of {', '.join(PRESETS)}")
    train.add_argument(
        "--algo", default=None,
        help=f"one of {', '.join(ALGOS)} (default merpo), or a baseline: focal (FOCAL), "
        "cbcq (contextual BCQ), mbml (MBML), batch-pearl (Batch PEARL)",
    )
    train.add_argument("--device", default=None, help="cpu (default) or cuda")
    train.add_argument("--seed", type=int, default=None)
    train.add_argument("--run-dir", default=None, help="default runs/<env>-<preset>-<algo>-s<seed>")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set run.steps=500 (repeatable)",
    )
    train.add_argument("--config", default=None, help="YAML or TOML file of config overrides")
    train.add_argument(
        "--compile", action="store_true",
        help="torch.compile the RAC update math (rac.compile; same results, opt-in)",
    )
    train.add_argument(
        "--cuda-graphs", action="store_true",
        help="replay each RAC update as one CUDA graph (rac.cuda_graphs; CUDA only, opt-in)",
    )
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    train.add_argument(
        "--setup-cache", default=None, metavar="DIR",
        help="reuse the setup (meta-model, task models, behavior clones) of a run with the "
        "same data, dynamics, seed and random state from DIR, or store it there (MerPO "
        "runs; `tune` and `reproduce` pass it)",
    )
    train.add_argument(
        "--wandb", default=None, metavar="PROJECT[/GROUP]",
        help="also log to Weights & Biases (needs `pip install wandb`; off by default)",
    )
    train.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads for torch (default: torch's choice; 1 is fastest for small "
        "networks on a busy machine)",
    )

    evaluate = sub.add_parser("evaluate", help="meta-test table of a run directory")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--device", default=None, help="cpu or cuda (default: the run's)")
    evaluate.add_argument("--episodes", type=int, default=None,
                          help="episodes per task (default: the run's)")
    evaluate.add_argument("--tasks", default=None,
                          help="test tasks, e.g. 40-44 or 40,42 (default: the run's)")
    evaluate.add_argument("--seed", type=int, default=None,
                          help="the meta-test's seed (default: the run's)")

    plot = sub.add_parser("plot", help="PNG learning curves of a run directory")
    plot.add_argument("run_dir")

    repro = sub.add_parser(
        "reproduce", help="a figure of the paper: every method, same tasks, data and budget, "
        "several seeds, then a report with CIs and the paper's claims",
    )
    repro.add_argument("experiment", help="fig4, fig5, fig6 or fig7")
    repro.add_argument("--env", default="merpo/PointRobotWind-v0")
    repro.add_argument("--seeds", type=int, default=5)
    repro.add_argument("--quick", action="store_true", help="a tiny version (smoke sizes)")
    repro.add_argument("--quality", default="medium", help="dataset quality (default medium)")
    repro.add_argument("--out", default="runs/reproduce", help="runs and report go here")
    repro.add_argument("--jobs", type=int, default=None,
                       help="runs trained at once (default: one per CPU core)")
    repro.add_argument("--settings", default=None, metavar="DIR",
                       help="tuned settings: DIR/<algo>/best.yaml of `merpo-agent tune` for "
                       "each method that has one (MerPO also keeps its Table 2 row)")

    tune = sub.add_parser(
        "tune", help="the same tuning budget for every method: an Optuna study per method "
        "on validation tasks carved from the training split (never the test tasks)",
    )
    tune.add_argument("--algo", required=True,
                      help="a method (merpo, merpo-adp, focal, cbcq, mbml, batch-pearl), a "
                      "comma list, or all")
    tune.add_argument("--env", default="merpo/PointRobotWind-v0")
    tune.add_argument("--trials", type=int, default=8, help="settings tried per method")
    tune.add_argument("--seeds", type=int, default=2, help="seeds per trial")
    tune.add_argument("--quick", action="store_true", help="a tiny version (smoke sizes)")
    tune.add_argument("--quality", default="medium", help="dataset quality (default medium)")
    tune.add_argument("--out", default="runs/tune", help="studies, runs and chosen settings")
    tune.add_argument("--sampler", default="tpe", help="tpe (default) or grid")
    tune.add_argument("--storage", default=None,
                      help="Optuna RDB URL shared by workers (default: sqlite in --out)")
    tune.add_argument("--jobs", type=int, default=None,
                      help="runs trained at once (default: seeds, at most the CPU cores)")
    return parser


def default_run_dir(env: str, preset: str, algo: str, seed: int) -> Path:
    name = env.split("/")[-1].removesuffix("-v0")
    return Path("runs") / f"{name}-{preset}-{algo}-s{seed}"


def _train_baseline(args: argparse.Namespace) -> int:
    """``--algo focal|cbcq|mbml|batch-pearl``: a baseline on the same datasets and test
    tasks, through one run-directory code path (``baselines/run.py``)."""
    from merpo_agent.baselines.run import format_table, train_baseline_run
    from merpo_agent.plots import plot_run

    algo = args.algo
    preset = args.preset
    seed = 0 if args.seed is None else args.seed
    device = args.device or "cpu"
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(
        args.env, preset, algo, seed
    )
    table = train_baseline_run(
        algo, args.env, preset, args.overrides, seed, device, run_dir,
        progress=not args.no_progress, config_file=args.config, wandb=args.wandb,
        command=args.command_line,
    )
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
    if args.wandb is not None:  # one line before any training when wandb is missing
        from merpo_agent.metrics import check_wandb

        check_wandb(args.wandb)
    if args.threads is not None:
        _set_threads(args.threads)
    if args.algo in BASELINE_ALGOS:
        return _train_baseline(args)
    from dataclasses import replace

    from merpo_agent.distributed import destroy_distributed, init_distributed
    from merpo_agent.plots import plot_run
    from merpo_agent.trainer import MetaTrainer

    cfg = train_config(args)
    run_dir = Path(args.run_dir) if args.run_dir else default_run_dir(
        cfg.env, cfg.preset, cfg.algo, cfg.seed
    )
    # under torchrun: join the process group (Gloo on CPU, NCCL with cuda:LOCAL_RANK);
    # a single process is rank 0 of 1 and nothing is initialised
    ctx = init_distributed(cfg.device)
    try:
        cfg = replace(cfg, device=str(ctx.device))
        trainer = MetaTrainer(cfg, run_dir, progress=not args.no_progress, wandb=args.wandb,
                              command=args.command_line, setup_cache=args.setup_cache)
        result = trainer.train()
        if ctx.is_main:  # rank 0 alone prints and writes the plots
            print(result.table())
            paths = plot_run(run_dir)
            print(f"run directory: {run_dir}")
            print(f"plot: {paths[0]}")
    finally:
        destroy_distributed()
    return 0


def train_config(args: argparse.Namespace):
    """The resolved config of ``train``'s arguments (``--compile`` / ``--cuda-graphs`` are
    opt-ins that leave the math unchanged: they set ``rac.compile`` / ``rac.cuda_graphs``)."""
    from merpo_agent.config import build_config

    overrides = list(args.overrides)
    overrides += ["rac.compile=true"] if args.compile else []
    overrides += ["rac.cuda_graphs=true"] if args.cuda_graphs else []
    return build_config(
        args.env, args.preset, args.algo, args.config, overrides, args.seed, args.device
    )


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
    from merpo_agent.reproduce import reproduce

    check_device("cpu")
    report = reproduce(
        args.experiment, args.env, args.seeds, Path(args.out), quick=args.quick,
        quality=args.quality, jobs=args.jobs,
        settings=Path(args.settings) if args.settings else None,
    )
    print(report.read_text())
    print(f"report: {report}")
    return 0


def _tune(args: argparse.Namespace) -> int:
    from merpo_agent.config import check_device
    from merpo_agent.tune import parse_algos, tune

    check_device("cpu")
    paths = tune(parse_algos(args.algo), args.env, Path(args.out), trials=args.trials,
                 seeds=args.seeds, quick=args.quick, quality=args.quality,
                 sampler=args.sampler, storage=args.storage, jobs=args.jobs)
    for path in paths:
        print(f"chosen settings: {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
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
    except (ConfigError, RunError, CheckpointError, FileNotFoundError) as err:
        print(f"merpo-agent: error: {_one_line(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT
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
