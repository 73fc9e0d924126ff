"""``merpo-agent``'s command line: the argument parser and what ``train``'s arguments resolve
to (torch-free: ``--help`` and ``reproduce``'s settings checks import no torch).

``cli`` runs the commands; ``reproduce`` reads commands back with the same parser.
"""

from __future__ import annotations

import argparse
from pathlib import Path

DESCRIPTION = "``merpo-agent``: train, evaluate and plot MerPO runs."
EXIT_BAD_INPUT = 2
# --algo names trained by merpo_agent.baselines.run (kept here: --help needs no torch import)
BASELINE_ALGOS = ("focal", "cbcq", "mbml", "batch-pearl")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit 2 (argparse prints usage too)
        self.exit(EXIT_BAD_INPUT, f"merpo-agent: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from merpo_envs.versions import VersionAction

    from merpo_agent.config import ALGOS
    from merpo_agent.presets import PRESETS

    parser = _Parser(prog="merpo-agent", description=DESCRIPTION)
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
    train.add_argument(
        "--seeds", default=None, metavar="0-4|0,2,5",
        help="train these seeds together in one process (seeds as one more batch axis), "
        "each into RUN_DIR/seed-<s>, as each trains alone (default RUN_DIR: "
        "runs/<env>-<preset>-<algo>)",
    )
    train.add_argument("--run-dir", default=None, help="default runs/<env>-<preset>-<algo>-s<seed>")
    train.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a config field, e.g. --set run.steps=500 (repeatable)",
    )
    train.add_argument("--config", default=None, help="YAML or TOML file of config overrides")
    train.add_argument(
        "--settings", default=None, metavar="validated|DIR",
        help="tuned settings: `validated` (the ones merpo's studies chose, shipped) or the "
        "--out folder of `merpo-agent tune` (reads DIR/<algo>/best.yaml; instead of --config)",
    )
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
    repro.add_argument("--settings", default=None, metavar="validated|DIR",
                       help="tuned settings: `validated` (shipped) or DIR/<algo>/best.yaml of "
                       "`merpo-agent tune` for each method that has one (MerPO also keeps its "
                       "Table 2 row)")
    repro.add_argument("--steps", type=int, default=None,
                       help="every method's budget of gradient steps (default: the sizes' "
                       "4000; longer budgets show where the curves flatten)")
    repro.add_argument("--methods", default=None, metavar="RUN[,RUN...]",
                       help="train and report only these runs of the experiment (their folder "
                       "names, e.g. merpo-adp,focal; default: every run), e.g. to give the "
                       "methods still rising at one budget a longer one")
    _executor_arguments(repro)
    _seed_batch_argument(repro, "method")

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
                      help="processes trained at once (default: one per process of a trial, "
                      "at most the CPU cores)")
    _executor_arguments(tune)
    _seed_batch_argument(tune, "trial")
    return parser


def _seed_batch_argument(parser: argparse.ArgumentParser, setting: str) -> None:
    """``--seed-batch`` of the commands that train several seeds of a setting."""
    parser.add_argument(
        "--seed-batch", type=int, default=1, metavar="N",
        help=f"seeds of a {setting} trained together in one process, as one more batch axis "
        "(default 1: a process per seed, --jobs at a time: on a CPU at these network sizes "
        "one process of 5 batched seeds took 0.81x (MerPO) and 1.08x (Contextual BCQ) the "
        "time of 5 single runs, benchmarks/bench_seed_batch.py, while separate processes use "
        "every core); every seed's result is the same either way",
    )


def _executor_arguments(parser: argparse.ArgumentParser) -> None:
    """``--executor`` / ``--ray-address`` of the commands that train many runs."""
    parser.add_argument(
        "--executor", default="local", metavar="local|ray",
        help="where the runs train: local processes (default, --jobs at a time) or Ray "
        "tasks, 1 CPU each (needs `pip install merpo-agent[ray]`; run folders on a "
        "filesystem every machine shares)",
    )
    parser.add_argument(
        "--ray-address", default=None, metavar="auto|HOST:PORT",
        help="the Ray cluster (auto: the one this machine joined with `ray start`; "
        "default: a local Ray instance of --jobs CPUs)",
    )


def default_run_dir(env: str, preset: str, algo: str, seed: int | None) -> Path:
    """``runs/<env>-<preset>-<algo>-s<seed>``; for the seeds of ``--seeds`` (``seed`` None)
    their folder ``runs/<env>-<preset>-<algo>``."""
    name = env.split("/")[-1].removesuffix("-v0")
    return Path("runs") / (f"{name}-{preset}-{algo}" + ("" if seed is None else f"-s{seed}"))


def parse_seeds(text: str) -> list[int]:
    """``--seeds``: ``0-4`` (a range, both ends in), ``0,2,5`` or a mix (``0-2,7``); one-line
    ``ConfigError`` naming the fix for a reversed range, a repeat or a bad item."""
    from merpo_agent.config import ConfigError

    seeds: list[int] = []
    for item in (part.strip() for part in str(text).split(",")):
        lo, dash, hi = item.partition("-")
        try:
            first, last = (int(lo), int(hi)) if dash else (int(item), int(item))
        except ValueError:
            raise ConfigError(f"--seeds {text!r}: {item!r} is not a seed N or a range A-B "
                              "(e.g. --seeds 0-4 or --seeds 0,2,5)") from None
        if last < first:
            raise ConfigError(f"--seeds {text!r}: the range {item} runs backwards; write "
                              f"{last}-{first}")
        seeds += range(first, last + 1)
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ConfigError(f"--seeds {text!r} names seed(s) {', '.join(map(str, repeated))} "
                          "more than once; list each seed once")
    return seeds


def train_seeds(args: argparse.Namespace) -> list[int] | None:
    """The seeds of ``train``: ``--seeds`` parsed, or None for one run (``--seed``); a
    one-line ``ConfigError`` for both given or a negative seed."""
    from merpo_agent.config import ConfigError

    if args.seeds is not None and args.seed is not None:
        raise ConfigError("--seed and --seeds together: give one seed with --seed N, or "
                          "several with --seeds (e.g. --seeds 0-4)")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    for seed in seeds or ([] if args.seed is None else [args.seed]):
        if seed < 0:
            raise ConfigError(f"--seed{'s' if seeds else ''} must be >= 0, got {seed}")
    return seeds


def resolve_settings(args: argparse.Namespace) -> None:
    """``train --settings validated|DIR``: the method's ``best.yaml`` becomes ``--config``."""
    if getattr(args, "settings", None) is None:
        return
    from merpo_agent.config import ConfigError
    from merpo_agent.validated_settings import required_settings_file

    if args.config is not None:
        raise ConfigError("--settings and --config both name a config file; pass one of them "
                          "(and change single fields with --set)")
    args.config = str(required_settings_file(args.settings, args.env, args.algo or "merpo"))
    args.settings = None


def train_config(args: argparse.Namespace):
    """The resolved config of ``train``'s arguments (``--compile`` / ``--cuda-graphs`` are
    opt-ins that leave the math unchanged: they set ``rac.compile`` / ``rac.cuda_graphs``)."""
    from merpo_agent.presets import build_config

    overrides = list(args.overrides)
    overrides += ["rac.compile=true"] if args.compile else []
    overrides += ["rac.cuda_graphs=true"] if args.cuda_graphs else []
    return build_config(
        args.env, args.preset, args.algo, args.config, overrides, args.seed, args.device
    )


__all__ = ["BASELINE_ALGOS", "EXIT_BAD_INPUT", "build_parser", "default_run_dir", "parse_seeds",
           "resolve_settings", "train_config", "train_seeds"]
