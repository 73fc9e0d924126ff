"""A MerPO run directory's layout and its user-facing errors.

``config.yaml``, ``checkpoints/`` (``latest.pt``, ``adapted.pt``), the settings a resumed run
may change, the errors a run stops with in one line, the check that its datasets are all
there, and the task samplers it reads; and where the seeds of one setting go (every
algorithm's: ``train --seeds``, ``reproduce``, ``tune``).
"""

from __future__ import annotations

from pathlib import Path

from merpo_agent.config import Config
from merpo_agent.overrides import flatten

CONFIG_FILE = "config.yaml"
CHECKPOINT_DIR = "checkpoints"
# the adapted policies of the last final meta-test (``load_policy(run_dir, task=j)``)
ADAPTED = "adapted.pt"
ADAPTED_FORMAT = "merpo-adapted-policies"
# TensorBoard HParams metrics of a MerPO run
HPARAM_METRICS = ("meta_test/adapted_return", "meta_test/adapted_normalized")
# Keys a resumed run may change (extend training, move device, print more or less often).
RESUMABLE_CHANGES = {
    "device", "data.build_missing", "run.steps", "eval.every", "run.log_every",
    "run.checkpoint_every",
}
# Losses whose non-finite value stops training.
WATCHED = ("critic_loss", "actor_loss")
# The run directory of one seed among the seeds of a setting, under the setting's folder.
SEED_DIR = "seed-{seed}"


def seed_run_dir(base: str | Path, seed: int) -> Path:
    """The run directory of ``seed`` among the seeds of one setting: ``base/seed-<s>``."""
    return Path(base) / SEED_DIR.format(seed=seed)


class RunError(RuntimeError):
    """A user-facing problem with a run (missing data, mismatched run dir); one line."""


class TrainingDiverged(RuntimeError):
    """A NaN or inf loss; the message names the iteration and the last good checkpoint."""


def ensure_run_datasets(cfg: Config) -> None:
    """Every dataset of the run's train and test tasks is local (or built, with
    ``data.build_missing``); else one :class:`RunError` line naming all the missing ones,
    train and test, and the one ``merpo-data generate`` command that builds them all."""
    from merpo_data import ensure_datasets
    from merpo_envs import get_meta_info

    info = get_meta_info(cfg.env)
    tasks = [*(cfg.data.train_tasks or info.train_tasks), *(cfg.data.test_tasks or info.test_tasks)]
    try:
        ensure_datasets(
            cfg.env, [(t, cfg.data.quality) for t in tasks], cfg.data.preset, cfg.data.build_missing
        )
    except (ValueError, FileNotFoundError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RunError(message) from None


def make_sampler(cfg: Config, split: str):
    """The train or test split's task sampler (one-line :class:`RunError` if data is missing)."""
    from merpo_data import TaskSampler

    tasks = cfg.data.train_tasks if split == "train" else cfg.data.test_tasks
    try:
        return TaskSampler(
            cfg.env,
            tasks=list(tasks) if tasks else split,
            quality=cfg.data.quality,
            device=cfg.device,
            build_missing=cfg.data.build_missing,
            preset=cfg.data.preset,
        )
    except (ValueError, FileNotFoundError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise RunError(message) from None


def _config_differences(a: Config, b: Config) -> list[str]:
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


__all__ = ["ADAPTED", "ADAPTED_FORMAT", "CHECKPOINT_DIR", "CONFIG_FILE", "HPARAM_METRICS",
           "RESUMABLE_CHANGES", "SEED_DIR", "WATCHED", "RunError", "TrainingDiverged",
           "ensure_run_datasets", "make_sampler", "seed_run_dir"]
