"""The typed configuration of a MerPO run (App. A, Tables 1-2): one nested dataclass,
YAML round trip.

``Config`` nests the other modules' own configs, so every hyperparameter has exactly one
home and one default:

- ``dynamics``: :class:`merpo_agent.dynamics_config.DynamicsConfig` (Eq. 3-4, ensembles);
- ``rac``: :class:`merpo_agent.rac_config.RACConfig` (Alg. 1, Eq. 1/9/10/11);
- ``rollout``: model rollouts into the model buffer (Alg. 1 line 3);
- ``meta``: the meta-training loop (Alg. 2 lines 9-18);
- ``test``: the meta-test on unseen tasks (§4.3);
- ``data``, ``run``, ``eval``: what every algorithm shares (``merpo_agent.schema``): the
  datasets, the budget in gradient steps (meta-iterations x ``meta.inner_steps``) and how
  often and how long the real-env meta-test runs.

Presets (``merpo_agent.presets``) fill these per environment; ``--algo`` applies the
ablation settings of §5 (Fig. 4, 7) (``rac_config.ALGO_SETTINGS``); then ``--config FILE`` and
``--set key=value`` overrides (``merpo_agent.overrides``). ``presets.build_config`` does all
of it and validates the result; every problem is a :class:`ConfigError` with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from merpo_agent.dynamics_config import DynamicsConfig
from merpo_agent.overrides import ConfigError, apply_overrides, flatten, to_dict
from merpo_agent.rac_config import ALGO_SETTINGS, RACConfig
from merpo_agent.schema import DataConfig, EvalConfig, RunConfig

ALGOS = tuple(ALGO_SETTINGS)  # merpo, merpo-adp, combo, beha-only, combo3, cql
LEARNER_INITS = ("persistent", "reinit", "reptile")


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

    task_batch_size: int = 8  # Table 2 "task batch size"
    inner_steps: int = 10  # Table 2 "inner steps" J
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
        for name in ("task_batch_size", "inner_steps"):
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
        if self.adaptation_steps < 0 or self.lr <= 0:
            raise ValueError("need adaptation_steps >= 0 and lr > 0")
        if self.combo_steps < 0 or self.combo_lr < 0:
            raise ValueError("need test.combo_steps >= 0 and test.combo_lr >= 0 (0 = automatic)")

    def combo_budget(self, steps: int, meta: MetaTrainConfig, num_train_tasks: int) -> int:
        """COMBO's RAC updates at meta-test: ``combo_steps``, or the expected number of
        updates one training task got in meta-training (``run.steps`` x B / N, ``run.steps``
        being meta-iterations x J)."""
        if self.combo_steps > 0:
            return self.combo_steps
        per_task = steps * meta.task_batch_size
        return max(self.adaptation_steps, -(-per_task // max(1, num_train_tasks)))


@dataclass(frozen=True)
class Config:
    env: str = "merpo/PointRobotWind-v0"
    algo: str = "merpo"
    preset: str = "table2"
    seed: int = 0
    device: str = "cpu"
    data: DataConfig = field(default_factory=DataConfig)
    run: RunConfig = field(default_factory=RunConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)
    rac: RACConfig = field(default_factory=RACConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    meta: MetaTrainConfig = field(default_factory=MetaTrainConfig)
    test: MetaTestConfig = field(default_factory=MetaTestConfig)

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ValueError(f"unknown algo {self.algo!r}; choose one of {', '.join(ALGOS)}")
        # the budget is counted in gradient steps for every algorithm; MerPO spends them
        # J = meta.inner_steps per meta-iteration (Alg. 2 line 12)
        inner = self.meta.inner_steps
        if self.run.steps % inner:
            raise ValueError(
                f"run.steps={self.run.steps} is not a multiple of meta.inner_steps={inner}; "
                f"use e.g. run.steps={max(1, round(self.run.steps / inner)) * inner}"
            )

    # MerPO acts once per meta-iteration: the intervals in gradient steps become whole
    # meta-iterations (at least one), so changing meta.inner_steps never makes them invalid

    @property
    def iterations(self) -> int:
        """Meta-iterations k of Alg. 2: ``run.steps`` / J."""
        return self.run.steps // self.meta.inner_steps

    @property
    def eval_every_iterations(self) -> int:
        """Meta-iterations between meta-tests (0: only at the end)."""
        return self.eval.every and max(1, self.eval.every // self.meta.inner_steps)

    @property
    def log_every_iterations(self) -> int:
        return max(1, self.run.log_every // self.meta.inner_steps)

    @property
    def checkpoint_every_iterations(self) -> int:
        return max(1, self.run.checkpoint_every // self.meta.inner_steps)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def config_from_dict(data: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :meth:`Config.to_dict` output (e.g. a run's config.yaml;
    one written before the shared schema is read in its terms: :func:`_upgrade`)."""
    return apply_overrides(Config(), _upgrade(flatten(data)).items())


def _upgrade(flat: dict[str, Any]) -> dict[str, Any]:
    """A saved config of the former schema (meta-iterations, ``test.episodes``, empty task
    lists for the whole split) in the shared schema's keys, so old run directories resume."""
    flat = dict(flat)
    inner = int(flat.get("meta.inner_steps", MetaTrainConfig.inner_steps))
    for old, new in (("meta.iterations", "run.steps"), ("meta.eval_every", "eval.every"),
                     ("meta.log_every", "run.log_every"),
                     ("meta.checkpoint_every", "run.checkpoint_every")):
        if old in flat:
            flat[new] = int(flat.pop(old)) * inner
    if "test.episodes" in flat:
        flat["eval.episodes"] = flat.pop("test.episodes")
    for key in ("data.train_tasks", "data.test_tasks"):
        if flat.get(key) == []:
            flat[key] = None
    return flat


def load_run_config(path: str | Path) -> Config:
    data = yaml.safe_load(Path(path).read_text())
    return config_from_dict(data)


def check_run_settings(cfg: Config) -> None:
    """One :class:`ConfigError` line for settings each valid alone but not together.

    A meta-test task that is also a training task measures nothing (its data trained the
    meta-policy); a task listed twice weighs double; seeds must be >= 0 (torch and NumPy
    refuse negative ones, late).
    """
    if cfg.seed < 0:
        raise ConfigError(f"seed must be >= 0, got {cfg.seed}")
    check_task_split(cfg.env, cfg.data.train_tasks, cfg.data.test_tasks, "data.")


def check_task_split(env: str, train_tasks, test_tasks, prefix: str = "data.") -> None:
    """Training and test tasks (empty or None: the env's split) listed once each and apart;
    the keys in the message are ``<prefix>train_tasks`` / ``<prefix>test_tasks`` (the shared
    schema's ``data.`` for MerPO and the baselines alike).

    Apart except where the env's own split overlaps by design: Half-Cheetah-Fwd-Back and
    Ant-Fwd-Back have two tasks (forward, backward) and no unseen one, so the paper's Fig. 6
    evaluates on the training tasks there; a run may meta-test on those tasks, never on a
    task that another env's split keeps unseen."""
    from merpo_data.ids import repeated_tasks
    from merpo_envs import format_tasks, get_meta_info

    info = get_meta_info(env)
    train = tuple(train_tasks or ()) or info.train_tasks
    test = tuple(test_tasks or ()) or info.test_tasks
    for key, tasks in ((f"{prefix}train_tasks", train), (f"{prefix}test_tasks", test)):
        twice = repeated_tasks(tasks)
        if twice:
            raise ConfigError(f"{key} lists task(s) {format_tasks(twice)} more than once; "
                              "list each task once")
    by_design = set(info.train_tasks) & set(info.test_tasks)
    both = sorted(set(train) & set(test) - by_design)
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
    "EvalConfig",
    "MetaTestConfig",
    "MetaTrainConfig",
    "RolloutConfig",
    "RunConfig",
    "check_device",
    "check_run_settings",
    "check_task_split",
    "config_from_dict",
    "load_run_config",
]
