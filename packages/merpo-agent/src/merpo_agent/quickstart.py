"""MerPO end to end on Point-Robot-Wind, on the CPU: ``python -m merpo_agent.quickstart``.

1. datasets: the ``medium`` datasets of 8 training tasks (0-7) and 4 unseen tasks (40-43),
   built with merpo-data's default preset if they are not in the Minari store yet (the
   store is Minari's own, ``MINARI_DATASETS_PATH`` is respected);
2. meta-training with the ``small`` preset on MerPO's validated settings (the paper's
   ambiguous readings as a study on Point-Robot-Wind's validation tasks chose them,
   ``merpo_agent/validated``; ``--settings none``: the presets' first reading) (Alg. 2:
   meta-model, adapted task models, behavior cloning, meta-iterations of RAC with the
   meta-policy), in ``runs/quickstart`` (an existing run there is resumed, a finished one
   is only re-evaluated);
3. the meta-test table on the unseen tasks (behavior, meta-policy, MerPO adapted, COMBO,
   With beha only; Proposition 1's safe improvement per task);
4. the learning-curve plot; its path is the last line printed.

Budget: at most 10 minutes on a quiet 2-core CPU (``nox -s quickstart`` runs this module).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ENV_ID = "merpo/PointRobotWind-v0"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m merpo_agent.quickstart", description=__doc__)
    parser.add_argument("--run-dir", default="runs/quickstart")
    parser.add_argument("--preset", default="small", help="agent preset (default small)")
    parser.add_argument("--data-preset", default="default", help="merpo-data preset")
    parser.add_argument(
        "--settings", default="validated", metavar="validated|DIR|none",
        help="MerPO's tuned settings (default: the validated ones shipped with merpo-agent; "
        "none: the preset's first reading of the paper)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch CPU threads (default 1: the small networks gain nothing from intra-op "
        "threads, and one thread stays fast when the machine is busy)",
    )
    args = parser.parse_args(argv)

    import merpo_data
    import torch

    from merpo_agent.checkpoint import CheckpointError
    from merpo_agent.config import ConfigError
    from merpo_agent.plots import plot_run
    from merpo_agent.presets import build_config
    from merpo_agent.trainer import MetaTrainer, RunError, TrainingDiverged
    from merpo_agent.validated_settings import required_settings_file

    torch.set_num_threads(max(1, args.threads))
    start = time.perf_counter()
    try:
        overrides = [f"data.preset={args.data_preset}", *args.overrides]
        settings = (None if args.settings == "none"
                    else required_settings_file(args.settings, ENV_ID, "merpo"))
        cfg = build_config(ENV_ID, args.preset, "merpo", settings, overrides, args.seed,
                           args.device)
        tasks = list(cfg.data.train_tasks) + list(cfg.data.test_tasks)
        print(
            f"[1/3] datasets: {ENV_ID} tasks {tasks}, quality {cfg.data.quality} "
            f"(built with merpo-data preset {args.data_preset!r} where missing)",
            flush=True,
        )
        merpo_data.generate(
            ENV_ID, tasks=tasks, qualities=[cfg.data.quality], preset=args.data_preset,
            progress=not args.no_progress,
        )
        print(f"      ready after {time.perf_counter() - start:.0f} s", flush=True)
        print(f"[2/3] meta-training ({args.preset} preset, settings {args.settings}) in "
              f"{args.run_dir}", flush=True)
        trainer = MetaTrainer(cfg, args.run_dir, progress=not args.no_progress, say=print)
        result = trainer.train()
        print(f"      done after {time.perf_counter() - start:.0f} s", flush=True)
        print("[3/3] meta-test on the unseen tasks", flush=True)
        print(result.table())
        paths = plot_run(args.run_dir)
    except (ConfigError, RunError, CheckpointError, TrainingDiverged, ValueError) as err:
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"quickstart: error: {text}", file=sys.stderr)
        return 2
    print(f"wall time {time.perf_counter() - start:.0f} s; learning curves:")
    print(Path(paths[0]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
