"""``merpo-data``: generate, list, inspect, download and plot the merpo datasets.

    merpo-data generate ENV [--tasks 0-9,40-49] [--qualities medium,expert] [--preset default]
                            [--episodes N] [--seed S] [--device cpu] [--force] [--retrain]
    torchrun --nproc-per-node N -m merpo_data generate ENV ...   (ranks split the tasks)
    merpo-data list [--verify]      (exit status 1 when a dataset is damaged)
    merpo-data info ID
    merpo-data download ID
    merpo-data plot ENV [--output FILE] [--preset default]
    merpo-data --version

Bad input (unknown env or id, bad task range, a damaged dataset, ``--device cuda``
without CUDA) ends with one error line naming the fix, exit status 2; a full disk is one
line, exit status 3 (what was finished is kept: the same command resumes).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

# How a merpo dataset is obtained (``merpo-data list`` says it; so do the READMEs).
OBTAIN = (
    "merpo datasets are built on this machine, not downloaded: `merpo-data generate ENV` "
    "builds an env's (e.g. merpo/PointRobotWind-v0, from the shipped behavior policies), "
    "`merpo-data download ID` one; then minari.load_dataset(ID) reads them"
)


def _parser() -> argparse.ArgumentParser:
    from merpo_envs.versions import VersionAction

    p = argparse.ArgumentParser(prog="merpo-data", description=__doc__.split("\n\n")[0])
    versions = ("merpo-data", "merpo-envs", "minari", "torch")
    p.add_argument("--version", action=VersionAction, dists=versions)
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="train behavior policies and write datasets")
    g.add_argument("env", help="env id, e.g. merpo/PointRobotWind-v0")
    g.add_argument("--tasks", default=None, help="e.g. 0-9,40-49, 'train' or 'test' (default: all)")
    g.add_argument(
        "--qualities", nargs="+", default=None,
        help="e.g. medium,expert (or medium expert) of random, medium, expert, mixed "
        "(default: all)",
    )
    g.add_argument("--preset", default="default", help="default or test")
    g.add_argument(
        "--episodes", type=int, default=None, help="episodes per dataset (preset default: 200)"
    )
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="cpu")
    g.add_argument("--force", action="store_true", help="rebuild datasets that exist")
    g.add_argument(
        "--retrain", action="store_true",
        help="train the behavior policies from scratch instead of using the shipped or "
        "cached ones",
    )
    g.add_argument(
        "--threads", type=int, default=1,
        help="intra-op CPU threads of the SAC training (default 1; 2 trains Walker-2D's "
        "25-task group 1.65x faster on a 2-core CPU); rollouts always run on one",
    )
    g.add_argument("--quiet", action="store_true", help="no progress bars")
    ls = sub.add_parser("list", help="list local merpo datasets, damaged ones marked")
    ls.add_argument(
        "--verify", action="store_true",
        help="also read every episode and compare the content hash (slower)",
    )
    i = sub.add_parser(
        "info", help="episodes, transitions, returns and normalized score of a dataset"
    )
    i.add_argument("id")
    d = sub.add_parser("download", help="fetch (or build) a dataset into the local store")
    d.add_argument("id")
    pl = sub.add_parser("plot", help="PNG of the mean return per task and quality")
    pl.add_argument("env")
    pl.add_argument("--output", default=None, help="PNG path (default: <env slug>-returns.png)")
    pl.add_argument("--preset", default="default", help="the data preset (default or test)")
    return p


def main(argv: list[str] | None = None) -> int:
    from merpo_data.lock import LockHeld

    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, TypeError, FileNotFoundError, FileExistsError, LockHeld) as err:
        _print_error(args.command, err)
        return 2
    except OSError as err:
        from merpo_data.atomic import DISK_FULL, disk_full_line

        if err.errno not in DISK_FULL:
            raise
        _print_error(args.command, disk_full_line(err, "the same command"))
        return 3


def _print_error(command: str, err: BaseException) -> None:
    world = os.environ.get("WORLD_SIZE", "1")
    where = f" (rank {os.environ.get('RANK')} of {world})" if world not in ("", "1") else ""
    print(f"merpo-data {command}{where}: error: {err}", file=sys.stderr, flush=True)


def _generate(args) -> int:
    """Build the datasets; under torchrun each rank builds its shard of the tasks.

    ``torchrun --nproc-per-node N -m merpo_data generate ENV ...`` (or ``torchrun ...
    $(which merpo-data) generate ...``): Gloo on CPUs, NCCL with ``--device cuda``. Rank 0
    creates the store's namespaces first; every rank then builds its own tasks' datasets
    and waits for the others at a barrier; only rank 0 shows progress and the summary.
    """
    from merpo_data import distributed
    from merpo_data.datasets import ensure_namespaces, generate

    start = time.perf_counter()
    distributed.check_device(args.device)
    ctx = distributed.init_from_env(args.device)
    try:
        _check_request(args)
    except ValueError as err:
        # Bad input fails the same way on every rank: rank 0 says it once, and the others
        # wait until it has (torchrun stops the remaining ranks as soon as one exits).
        if ctx.is_main:
            _print_error(args.command, err)
        distributed.barrier()
        distributed.shutdown()
        return 2
    try:
        if ctx.is_main:
            ensure_namespaces(args.env)  # one writer: Minari's namespace files are not atomic
        distributed.barrier()
        ids = generate(
            args.env,
            tasks=args.tasks,
            qualities=args.qualities,
            preset=args.preset,
            force=args.force,
            episodes=args.episodes,
            progress=ctx.is_main and not args.quiet,
            seed=args.seed,
            device=str(ctx.device),
            retrain=args.retrain,
            rank=ctx.rank,
            world_size=ctx.world_size,
            threads=args.threads,
        )
        distributed.barrier()  # every shard's datasets are in the store
    finally:
        distributed.shutdown()
    if ctx.is_main:
        where = f" by {ctx.world_size} processes" if ctx.distributed else ""
        print(
            f"{len(ids)} datasets ready{where} in {time.perf_counter() - start:.1f}s "
            f"(e.g. {ids[0]})"
        )
    return 0


def _check_request(args) -> None:
    """The one-line errors of a bad env, task range, quality or preset, raised up front."""
    from merpo_envs import get_meta_info

    from merpo_data.ids import check_seed, parse_qualities, parse_tasks
    from merpo_data.presets import get_preset

    check_seed(args.seed)
    parse_tasks(args.tasks, get_meta_info(args.env))
    parse_qualities(args.qualities)
    get_preset(args.env, args.preset)
    if args.episodes is not None and args.episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {args.episodes}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")


def _list(args) -> int:
    """Every merpo dataset of the local store, a damaged one marked with its fix."""
    import json

    from merpo_data.datasets import RECIPE_KEY
    from merpo_data.integrity import dataset_problem
    from merpo_data.store import store_root

    root = store_root()
    ids = sorted(
        str(data.parent.relative_to(root))
        for data in root.glob("merpo/*/*/data")
        if data.is_dir()
    )
    damaged = 0
    for ds_id in ids:
        problem = dataset_problem(ds_id, RECIPE_KEY, verify=args.verify)
        if problem is not None:
            print(f"{ds_id}\tDAMAGED: {problem}")
            damaged += 1
            continue
        meta = json.loads((root / ds_id / "data" / "metadata.json").read_text())
        print(f"{ds_id}\t{meta.get('total_episodes')} episodes\t{meta.get('total_steps')} steps")
    if not ids:
        print(f"no merpo datasets in the local store {root}")
    # stderr: the dataset lines alone stay on stdout for scripts.
    print(OBTAIN, file=sys.stderr if ids else sys.stdout)
    if damaged:  # scripts (and CI) must see it: a listing alone exits 0
        print(f"merpo-data list: {damaged} damaged dataset(s); rebuild each with the "
              "command shown", file=sys.stderr)
        return 1
    return 0


def _info(args) -> int:
    import json

    import minari

    from merpo_data.datasets import RECIPE_KEY, load_dataset
    from merpo_data.integrity import read_episodes

    ds = load_dataset(args.id, download=False)
    returns = np.array([ep.rewards.sum() for ep in read_episodes(ds, args.id)])
    # 0-100 like merpo-agent's evaluate and reports: 100 x minari's 0-1 score
    norm = 100.0 * minari.get_normalized_score(ds, returns).mean()
    meta = ds.storage.metadata
    recipe = json.loads(meta[RECIPE_KEY]) if meta.get(RECIPE_KEY) else {}
    print(f"id:           {args.id}")
    print(f"episodes:     {ds.total_episodes}")
    print(f"transitions:  {ds.total_steps}")
    print(
        f"return:       mean {returns.mean():.3f}  min {returns.min():.3f}  max {returns.max():.3f}"
    )
    print(
        f"normalized:   {norm:.1f} / 100  (ref_min_score {meta['ref_min_score']:.3f}, "
        f"ref_max_score {meta['ref_max_score']:.3f}, over "
        f"{meta.get('num_episodes_average_score')} episodes each)"
    )
    group = recipe.get("task_group")
    print(
        f"recipe:       preset {recipe.get('preset')}, seed {recipe.get('seed')}, "
        f"episodes {recipe.get('episodes')}, task group "
        f"{f'{group[0]}-{group[-1]}' if group else None}"
    )
    versions = recipe.get("versions") or {}
    print(f"built with:   {', '.join(f'{k} {v}' for k, v in versions.items()) or 'unknown'}")
    print(f"content hash: {recipe.get('content_hash')}")
    print(f"description:  {meta.get('description')}")
    return 0


def _download(args) -> int:
    from merpo_data.datasets import load_dataset

    ds = load_dataset(args.id, download=True)
    print(f"{args.id}: {ds.total_episodes} episodes, {ds.total_steps} transitions")
    return 0


def _plot(args) -> int:
    from merpo_data.plot import plot_returns

    print(plot_returns(args.env, args.output, args.preset))
    return 0


_COMMANDS = {
    "generate": _generate,
    "list": _list,
    "info": _info,
    "download": _download,
    "plot": _plot,
}


if __name__ == "__main__":
    raise SystemExit(main())
