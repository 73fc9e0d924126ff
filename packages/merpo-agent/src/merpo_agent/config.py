"""The typed configuration of a MerPO run (App. A, Tables 1-2): one nested dataclass,
YAML round trip.

``Config`` nests the other modules' own configs, so every hyperparameter has exactly one
home and one default:

- ``dynamics``: :class:`merpo_agent.dynamics.DynamicsConfig` (Eq. 3-4, ensembles);
- ``rac``: :class:`merpo_agent.rac_config.RACConfig` (Alg. 1, Eq. 1/9/10/11);
- ``rollout``: model rollouts into the model buffer (Alg. 1 line 3);
- ``meta``: the meta-training loop (Alg. 2 lines 9-18);
- ``test``: the meta-test on unseen tasks (§4.3);
- ``data``: which datasets (task sampler) the run reads.

Presets (``merpo_agent.presets``) fill these per environment; ``--algo`` applies the
ablation settings of §5 (Fig. 4, 7) (``rac_config.ALGO_SETTINGS``); then ``--config FILE`` and
``--set key=value`` overrides (``merpo_agent.overrides``). :func:`build_config` does all of it
and validates the result; every problem is a :class:`ConfigError` with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from merpo_agent.dynamics import DynamicsConfig
from merpo_agent.overrides import ConfigError, apply_overrides, read_config_file, to_dict
from merpo_agent.rac_config import ALGO_SETTINGS, RACConfig

ALGOS = tuple(ALGO_SETTINGS)  # merpo, merpo-adp, combo, beha-only, combo3, cql
LEARNER_INITS = ("persistent", "reinit", "reptile")


@dataclass(frozen=True)
class DataConfig:
    """Datasets of the run (``merpo_data.TaskSampler``)."""

    quality: str = "medium"
    # The merpo-data preset that built the datasets: "default", or "test" (the cheap test
    # datasets, ids task-NN-<quality>-test-v0; the smoke preset reads them).
    preset: str = "default"
    # Empty = the env's own train / test split (App. A.1); a subset is fine (quickstart).
    train_tasks: tuple[int, ...] = ()
    test_tasks: tuple[int, ...] = ()
    # Build missing datasets with merpo_data.generate instead of stopping with the command.
    build_missing: bool = False

    def __post_init__(self) -> None:
        from merpo_data import QUALITIES
        from merpo_data.ids import check_preset

        if self.quality not in QUALITIES:
            raise ValueError(f"quality {self.quality!r} is not one of {', '.join(QUALITIES)}")
        check_preset(self.preset)


@dataclass(frozen=True)
class RolloutConfig:
    """Model rollouts into the FIFO model buffer D_model,n (Alg. 1 line 3).

    The paper gives the rollout length (Table 2: 1); how many start states and how often
    are our choice (see ``merpo_agent.presets``).
    """

    length: int = 1  # Table 2 "model rollout length"
    batch_size: int = 512  # start states per task per refresh (sampled from D_n)
    every: int = 1  # RAC updates between refreshes
    # Rows per task kept at meta-test (FIFO); during meta-training the buffer holds one
    # meta-iteration's rollouts (a slot gets another task at the next iteration).
    capacity: int = 50_000

    def __post_init__(self) -> None:
        for name in ("length", "batch_size", "every", "capacity"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


@dataclass(frozen=True)
class MetaTrainConfig:
    """The meta-training loop (Alg. 2 lines 9-18)."""

    iterations: int = 1000  # meta-iterations k (not given; see presets)
    task_batch_size: int = 8  # Table 2 "task batch size"
    inner_steps: int = 10  # Table 2 "inner steps" J
    eval_every: int = 50  # meta-test on the unseen tasks every ... iterations (not given)
    log_every: int = 10  # metrics are read to the host once per this many iterations
    checkpoint_every: int = 50
    # The meta-policy pi_c: "learned" (Eq. 10, MerPO) or FIXED for single-task RAC (Alg. 1,
    # §5.1): "random" (its random initialization), "combo:N" (distilled from COMBO learners
    # trained N updates on the training tasks: §5.1's meta-policy "learnt after 200
    # episodes"), or "run:DIR" (the pi_c of a finished run). With a fixed pi_c there is no
    # Eq. 10 or meta-Q step, the task learners start from random networks, and every
    # evaluation also reports each learner's return on its own training task.
    meta_policy: str = "learned"
    # Tasks per batched op in the inner loop (0 = per device: the whole batch on a GPU; on a
    # CPU, as many as keep one op's working set in cache, see ``trainer.task_chunk_size``).
    # The chunks draw the whole batch's randomness and cut it, so the result is the same.
    task_chunk: int = 0
    # OPEN READINGS of Alg. 2 / App. A.2.2, chosen on validation tasks:
    # - ``learner_init``: "persistent" (Alg. 2 line 1: each training task's learner is made
    #   once and continues where it stopped whenever its task is sampled again), "reinit"
    #   (App. A.2.2 literally: "we initialize the task Q networks and the task policy with
    #   the meta-Q network and the meta-policy": pi_n <- pi_c and Q_n <- Q_meta, fresh Adam,
    #   at every meta-iteration; the duals stay the task's own) or "reptile" ("reinit", and
    #   pi_c also takes a Reptile step of size ``reptile_step`` towards the batch's mean
    #   pi_n after Eq. 10's steps);
    # - ``policy_steps``: Adam steps of pi_c on Eq. 10 per meta-iteration, all on the
    #   states of the inner loop's last batch (the paper does not say; 1 = one step).
    learner_init: str = "persistent"
    reptile_step: float = 1.0
    policy_steps: int = 1

    def __post_init__(self) -> None:
        for name in ("iterations", "task_batch_size", "inner_steps", "log_every",
                     "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if self.learner_init not in LEARNER_INITS:
            raise ValueError(
                f"learner_init={self.learner_init!r}: use one of {', '.join(LEARNER_INITS)}"
            )
        if not 0.0 < self.reptile_step <= 1.0:
            raise ValueError(f"reptile_step={self.reptile_step} must be in (0, 1]")
        if self.policy_steps < 0:
            raise ValueError(f"policy_steps={self.policy_steps} must be >= 0")
        if self.eval_every < 0:
            raise ValueError(f"eval_every={self.eval_every} must be >= 0 (0: only at the end)")
        if self.task_chunk < 0:
            raise ValueError(f"task_chunk={self.task_chunk} must be >= 0 (0: per device)")
        kind, _, arg = self.meta_policy.partition(":")
        ok = (self.meta_policy in ("learned", "random") or (kind == "combo" and arg.isdigit())
              or (kind == "run" and bool(arg)))
        if not ok:
            raise ValueError(
                f"meta_policy={self.meta_policy!r}: use learned, random, combo:N (N updates) "
                "or run:DIR"
            )

    @property
    def fixed_meta_policy(self) -> bool:
        return self.meta_policy != "learned"


@dataclass(frozen=True)
class MetaTestConfig:
    """Meta-test on each unseen task (§4.3, Proposition 1)."""

    adaptation_steps: int = 100  # Table 2 "testing adaptation steps"
    lr: float = 8e-5  # App. A.2.2: Q and policy lr for a single new task
    episodes: int = 4  # real-env episodes (seeds) per task (the paper: 4 random seeds)
    # COMBO (single-task offline RL from scratch on the unseen task's own data, the rival of
    # Fig. 1 and Fig. 7d) with a FULL budget: ``combo_steps`` RAC updates (0 = as many as one
    # training task received during meta-training, at least ``adaptation_steps``) at
    # ``combo_lr`` (0 = the run's inner critic / actor lr, those of every training task's
    # learner: a COMBO given 100 steps at 8e-5 would be a straw man).
    compare_combo: bool = True
    combo_steps: int = 0
    combo_lr: float = 0.0
    compare_beha_only: bool = True  # "With beha only" (alpha = 1) from the meta-init

    def __post_init__(self) -> None:
        if self.adaptation_steps < 0 or self.episodes < 1 or self.lr <= 0:
            raise ValueError("need adaptation_steps >= 0, episodes >= 1 and lr > 0")
        if self.combo_steps < 0 or self.combo_lr < 0:
            raise ValueError("need test.combo_steps >= 0 and test.combo_lr >= 0 (0 = automatic)")

    def combo_budget(self, meta: MetaTrainConfig, num_train_tasks: int) -> int:
        """COMBO's RAC updates at meta-test: ``combo_steps``, or the expected number of
        updates one training task got in meta-training (iterations x J x B / N)."""
        if self.combo_steps > 0:
            return self.combo_steps
        per_task = meta.iterations * meta.inner_steps * meta.task_batch_size
        return max(self.adaptation_steps, -(-per_task // max(1, num_train_tasks)))


@dataclass(frozen=True)
class Config:
    env: str = "merpo/PointRobotWind-v0"
    algo: str = "merpo"
    preset: str = "table2"
    seed: int = 0
    device: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    rac: RACConfig = field(default_factory=RACConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    meta: MetaTrainConfig = field(default_factory=MetaTrainConfig)
    test: MetaTestConfig = field(default_factory=MetaTestConfig)

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}; choose one of {', '.join(ALGOS)}")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (e.g. a run's config.yaml)."""
    from merpo_agent.overrides import flatten

    return apply_overrides(Config(), flatten(data).items())


def load_run_config(path: str | Path) -> Config:
    data = yaml.safe_load(Path(path).read_text())
    return config_from_dict(data)


def build_config(
    env: str,
    preset: str = "table2",
    algo: str | None = None,
    config_file: str | Path | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    seed: int | None = None,
    device: str | None = None,
) -> Config:
    """Preset -> algo settings -> config file -> ``--set`` overrides -> seed/device flags.

    ``algo`` None takes the file's ``algo`` key if any, else ``merpo``. Raises
    :class:`ConfigError` (one line) on any bad input.
    """
    from merpo_agent.overrides import parse_assignment
    from merpo_agent.presets import make_preset

    file_items: dict[str, Any] = read_config_file(config_file) if config_file else {}
    set_items = [parse_assignment(text) for text in overrides]
    if algo is None:
        algo = str(file_items.pop("algo", "merpo"))
    else:
        file_items.pop("algo", None)
    for key in ("env", "preset"):
        if key in file_items:
            raise ConfigError(
                f"config file key {key!r} cannot be set in a file; pass --{key} on the command line"
            )
    if any(key in ("env", "preset", "algo") for key, _ in set_items):
        raise ConfigError(
            "env, preset and algo are chosen with --env, --preset and --algo, not --set"
        )
    if algo not in ALGOS:
        raise ConfigError(f"unknown algo {algo!r}; choose one of {', '.join(ALGOS)}")

    cfg = make_preset(env, preset)
    items: list[tuple[str, Any]] = [("algo", algo)]
    items += [(f"rac.{k}", v) for k, v in ALGO_SETTINGS[algo].items()]
    items += list(file_items.items())
    items += set_items
    if seed is not None:
        items.append(("seed", seed))
    if device is not None:
        items.append(("device", device))
    cfg = apply_overrides(cfg, items)
    check_device(cfg.device)
    check_run_settings(cfg)
    if cfg.rac.cuda_graphs and not cfg.device.startswith("cuda"):
        raise ConfigError("--cuda-graphs (rac.cuda_graphs) needs --device cuda; drop it on a CPU")
    return cfg


def check_run_settings(cfg: Config) -> None:
    """One :class:`ConfigError` line for settings each valid alone but not together.

    A meta-test task that is also a training task measures nothing (its data trained the
    meta-policy); a task listed twice weighs double; seeds must be >= 0 (torch and NumPy
    refuse negative ones, late).
    """
    if cfg.seed < 0:
        raise ConfigError(f"seed must be >= 0, got {cfg.seed}")
    check_task_split(cfg.env, cfg.data.train_tasks, cfg.data.test_tasks, "data.")


def check_task_split(env: str, train_tasks, test_tasks, prefix: str = "") -> None:
    """Training and test tasks (empty: the env's split) listed once each and apart; the
    keys in the message are ``<prefix>train_tasks`` / ``<prefix>test_tasks`` (MerPO's
    ``data.``, the baselines' none)."""
    from merpo_envs import format_tasks, get_meta_info

    info = get_meta_info(env)
    train = tuple(train_tasks) or info.train_tasks
    test = tuple(test_tasks) or info.test_tasks
    for key, tasks in ((f"{prefix}train_tasks", train), (f"{prefix}test_tasks", test)):
        twice = sorted({t for t in tasks if list(tasks).count(t) > 1})
        if twice:
            raise ConfigError(f"{key} lists task(s) {format_tasks(twice)} more than once; "
                              "list each task once")
    both = sorted(set(train) & set(test))
    if both:
        raise ConfigError(
            f"task(s) {format_tasks(both)} are both training and test tasks (train "
            f"{format_tasks(train)}, test {format_tasks(test)}); a meta-test task must be "
            f"unseen: set {prefix}train_tasks / {prefix}test_tasks apart"
        )


def check_device(device: str) -> None:
    """One :class:`ConfigError` line for an unknown device or CUDA asked for without it
    (the check itself is ``merpo_data.distributed.check_device``)."""
    from merpo_data.distributed import check_device as check

    try:
        check(device)
    except ValueError as err:
        raise ConfigError(str(err)) from None


__all__ = [
    "ALGOS",
    "Config",
    "ConfigError",
    "DataConfig",
    "MetaTestConfig",
    "MetaTrainConfig",
    "RolloutConfig",
    "build_config",
    "check_device",
    "check_run_settings",
    "check_task_split",
    "config_from_dict",
    "load_run_config",
]
