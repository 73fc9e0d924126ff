"""MerPO meta-training, Alg. 2 of the paper, on one run directory.

Setup (once per run, then checkpointed):

1. task samplers for the training and the unseen test tasks (``merpo_data.TaskSampler``);
2. the offline meta-model phi_m* (Eq. 3, Alg. 2 lines 2-7; ``meta_model.meta_train``);
3. task models adapted from phi_m* (Eq. 4, line 8) for the training tasks and, since phi_m*
   is fixed from here on, once for the test tasks too; the log shows each adapted model's
   held-out MSE beside a from-scratch model's trained for the same steps (steps 2 and 3
   train ``dynamics.task_chunk`` tasks per batched op, 0 = the device's choice, with the
   same result for every chunk size: ``model_training.ChunkedTrainer``);
4. behavior-cloning models pi_hat_beta per task (for lambda's D_beta', App. A.2.2);
5. Alg. 2 line 1: one RAC learner per training task (``learner_table.LearnerTable``), every
   actor a copy of the initial pi_c and every critic a copy of the initial Q_meta. These
   learners persist for the whole run: a task sampled again continues from where its
   learner stopped (parameters, targets, Adam moments and step counts, duals).

Meta-iterations k (Alg. 2 lines 9-18), every tensor with a task axis:

- sample a task batch B (``meta.task_batch_size``) of the training tasks;
- gather the batch's learners from the table into the working slots;
- J = ``meta.inner_steps`` RAC updates (``rac_loop.rac_updates``: model rollouts into the
  model buffer, Eq. 1, Eq. 9) with pi_c fixed;
- the meta-policy step (Eq. 10) on the states of the last batch, the meta-Q step, and, for
  MerPO-Adp, the alpha step (Eq. 11); write the batch's learners back to the table;
- every ``eval.every`` gradient steps (and at the end) the meta-test on the unseen tasks
  (``evaluation.meta_test``).

Host reads happen once per ``run.log_every`` gradient steps (metrics, and a non-finite flag
accumulated on the device). Checkpoints (``checkpoints/latest.pt``, atomic) hold every
parameter, optimizer, dual variable and RNG state; ``train`` on an existing run directory
resumes from it, and on CPU with a fixed seed ends with the same parameters as an
uninterrupted run. A NaN or inf in a loss stops training with one line (:class:`TrainingDiverged`)
and leaves the last good checkpoint in place (nothing is saved after the first bad step).

Under torchrun (``merpo_agent.distributed``; the CLI joins the process group) every rank runs
this same code: rank r holds the slots ``shard_bounds(B, r, world)`` of each task batch
(its task learners, slot models and model buffer are that size) while the task batch and
every random draw are made for the whole batch on every rank and cut (``task_slice``), so
the ranks together compute what one process computes. pi_c's gradient and the meta-Q step
are all-reduced (``MetaLearner``), every rank holds the whole learner table and the batch's
rows are merged after each meta-iteration, the non-finite check stops all ranks together,
the meta-test splits the test tasks. The setup (meta-model, task models, behavior
cloning) runs on every rank from the same seed and rank 0's result is broadcast. Rank 0
alone writes the run directory (config, metrics, checkpoints), printing and the progress
bar.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from merpo_data.progress import progress_bar
from merpo_envs import get_meta_info
from tqdm.auto import tqdm

from merpo_agent.action_scaling import log_action_scale, to_unit_actions
from merpo_agent.behavior_cloning import BehaviorCloning
from merpo_agent.checkpoint import (
    LATEST,
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from merpo_agent.config import Config, ConfigError, load_run_config
from merpo_agent.distributed import (
    all_gather_objects,
    any_rank,
    barrier,
    broadcast_module_,
    get_rank,
    get_world_size,
    shard_bounds,
)
from merpo_agent.dynamics import DynamicsEnsemble
from merpo_agent.evaluation import MetaTestResult, meta_test
from merpo_agent.holdout import HoldoutSplit
from merpo_agent.learner_table import LearnerTable
from merpo_agent.meta_model import adapt, meta_train
from merpo_agent.meta_policy import MetaLearner
from merpo_agent.metrics import MetricsWriter, to_host
from merpo_agent.model_buffer import ModelBuffer
from merpo_agent.provenance import record_session
from merpo_agent.rac_loop import TaskData, buffer_capacity, rac_updates
from merpo_agent.setup_cache import cached_setup
from merpo_agent.task_learners import TaskLearners
from merpo_agent.task_slice import TaskSlice, device_chunk_size, task_chunks
from merpo_agent.transitions import TransitionBatch

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


class RunError(RuntimeError):
    """A user-facing problem with a run (missing data, mismatched run dir); one line."""


class TrainingDiverged(RuntimeError):
    """A NaN or inf loss; the message names the iteration and the last good checkpoint."""


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
    from merpo_agent.overrides import flatten

    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return sorted(k for k in fa.keys() | fb.keys() if fa.get(k) != fb.get(k))


class MetaTrainer:
    """Alg. 2 on one run directory: ``MetaTrainer(cfg, run_dir).train()``.

    ``say`` prints one-line progress messages (default: ``tqdm.write``); ``progress``
    shows a tqdm bar over meta-iterations with the latest test return.
    """

    def __init__(
        self,
        cfg: Config,
        run_dir: str | Path,
        progress: bool = True,
        say: Callable[[str], None] | None = None,
        tensorboard: bool = True,
        wandb: str | None = None,
        command: list[str] | None = None,
        setup_cache: str | Path | None = None,
    ):
        self.run_dir = Path(run_dir)
        # a folder of setups shared by runs with the same inputs (``setup_cache``)
        self.setup_cache = Path(setup_cache) if setup_cache is not None else None
        self.wandb = wandb  # ``--wandb PROJECT[/GROUP]`` (metrics.MetricsWriter)
        self.command = command  # the command line for run.json (default: sys.argv)
        self.cfg = self._resolve_config(cfg)
        self.rank, self.world_size = get_rank(), get_world_size()
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        self.say = (say or tqdm.write) if self.is_main else _silent
        self.tensorboard = tensorboard
        self.device = torch.device(self.cfg.device)
        self.info = get_meta_info(self.cfg.env)
        self.checkpoint_path = self.run_dir / CHECKPOINT_DIR / LATEST
        self.iteration = 0
        self.last_result: MetaTestResult | None = None
        self._built = False

    # ------------------------------------------------------------------ run directory
    def _resolve_config(self, cfg: Config) -> Config:
        path = self.run_dir / CONFIG_FILE
        if path.is_file() and (self.run_dir / CHECKPOINT_DIR / LATEST).is_file():
            saved = load_run_config(path)
            diff = [k for k in _config_differences(saved, cfg) if k not in RESUMABLE_CHANGES]
            if diff:
                shown = ", ".join(diff[:6]) + (" ..." if len(diff) > 6 else "")
                raise ConfigError(
                    f"run dir {self.run_dir} holds a run with other settings ({shown}); "
                    "resume it with the same options or pick a new --run-dir"
                )
        return cfg

    # ------------------------------------------------------------------ building
    def build(self) -> None:
        """Samplers and every module (fresh weights; ``setup`` or a checkpoint fills them)."""
        cfg, device = self.cfg, self.device
        torch.manual_seed(cfg.seed)
        self.train_data = make_sampler(cfg, "train")
        self.test_data = make_sampler(cfg, "test")
        obs_dim, act_dim = self.train_data.obs_dim, self.train_data.act_dim
        self.num_train = self.train_data.num_tasks
        if cfg.meta.task_batch_size > self.num_train:
            raise ConfigError(
                f"meta.task_batch_size={cfg.meta.task_batch_size} exceeds the "
                f"{self.num_train} training tasks; lower it or add tasks"
            )
        self.batch_size = cfg.meta.task_batch_size
        if self.world_size > self.batch_size:
            raise ConfigError(
                f"{self.world_size} processes but meta.task_batch_size={self.batch_size}: "
                "every process needs a task slot; launch fewer processes (--nproc-per-node) "
                "or raise meta.task_batch_size"
            )
        # this rank's slots of every task batch (all of them in a single process)
        lo, hi = shard_bounds(self.batch_size, self.rank, self.world_size)
        self.task_slice = TaskSlice(lo, hi, self.batch_size) if self.world_size > 1 else None
        self.num_slots = hi - lo
        if self.world_size > 1 and cfg.rac.beta_sharing == "shared":
            raise ConfigError(
                "rac.beta_sharing=shared steps one beta with the whole task batch in one "
                "process; run it without torchrun or use rac.beta_sharing=per_task"
            )
        self.generator = torch.Generator(device).manual_seed(cfg.seed)
        self.learner_generator = torch.Generator(device).manual_seed(cfg.seed + 1)

        dyn = cfg.dynamics
        self.meta_model = DynamicsEnsemble.from_config(1, obs_dim, act_dim, dyn, device=device)
        self.task_models = self.meta_model.empty_like(self.num_train)
        self.test_models = self.meta_model.empty_like(self.test_data.num_tasks)
        self.slot_models = self._per_slot(self.meta_model.empty_like)
        rac = cfg.rac
        bc_kwargs = dict(hidden=rac.bc_hidden, hidden_layers=rac.bc_hidden_layers, device=device)
        self.bc_train = BehaviorCloning(self.num_train, obs_dim, act_dim, **bc_kwargs)
        self.bc_test = BehaviorCloning(self.test_data.num_tasks, obs_dim, act_dim, **bc_kwargs)
        self.meta = MetaLearner(rac, obs_dim, act_dim, device)
        self.action_log_scale = log_action_scale(self.train_data.action_low,
                                                 self.train_data.action_high)
        self.learners = self._per_slot(
            lambda slots: TaskLearners(
                rac, obs_dim, act_dim, slots, device, generator=self.learner_generator,
                action_log_scale=self.action_log_scale,
            )
        )
        # Alg. 2 line 1: every training task's own learner (filled by ``setup``)
        self.table = LearnerTable(TaskLearners(rac, obs_dim, act_dim, self.num_train, device))
        self.buffer = (
            ModelBuffer(self.num_slots, buffer_capacity(cfg.meta.inner_steps, cfg.rollout),
                        obs_dim, act_dim, device)
            if rac.use_model else None
        )
        # the inner loop's chunks of the task batch (one chunk: the whole batch, or this
        # rank's slots under torchrun) and, per chunk size, its learners, buffer and models
        self.chunks = self._task_chunks()
        self._chunk_state: dict[int, tuple] = {
            self.num_slots: (self.learners, self.buffer, self.slot_models)
        }
        # non-finite loss flag, accumulated on the device, read once per log interval
        self._bad = torch.zeros((), dtype=torch.bool, device=device)
        self._built = True

    def _task_chunks(self) -> list[TaskSlice | None]:
        """Slices of the task batch run one after another in the inner loop (each one set of
        batched ops): ``[None]`` for the whole batch at once; under torchrun the rank's
        slots."""
        if self.task_slice is not None:
            return [self.task_slice]
        if self.cfg.rac.beta_sharing == "shared":
            return [None]  # one beta for the batch: its tasks must step it in one op
        size = task_chunk_size(self.cfg, self.device, self.batch_size, self.train_data.obs_dim,
                               self.train_data.act_dim)
        if size >= self.batch_size:
            return [None]
        return task_chunks(self.batch_size, size)

    def _chunk_modules(self, size: int) -> tuple:
        """(learners, model buffer, slot models) for a chunk of ``size`` tasks."""
        if size not in self._chunk_state:
            cfg, train = self.cfg, self.train_data
            with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda"
                                       else []):
                learners = TaskLearners(cfg.rac, train.obs_dim, train.act_dim, size,
                                        self.device, generator=self.learner_generator,
                                        action_log_scale=self.action_log_scale)
                models = self.meta_model.empty_like(size)
            buffer = (ModelBuffer(size, buffer_capacity(cfg.meta.inner_steps, cfg.rollout),
                                  train.obs_dim, train.act_dim, self.device)
                      if cfg.rac.use_model else None)
            self._chunk_state[size] = (learners, buffer, models)
        return self._chunk_state[size]

    def _per_slot(self, make: Callable[[int], Any]) -> Any:
        """``make(num_slots)``: a module with this process's task slots. Initial weights come
        from torch's global RNG, which later modules and the setup draw from too: under
        torchrun the RNG is left as a single process building all the slots leaves it (the
        local module is built on a forked RNG, then a throwaway one of the whole batch; the
        slots' weights are overwritten from the learner table at every meta-iteration)."""
        if self.task_slice is None:
            return make(self.num_slots)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            local = make(self.num_slots)
        make(self.batch_size)
        return local

    # ------------------------------------------------------------------ setup (lines 1-8)
    def setup(self, writer: MetricsWriter) -> None:
        """Meta-model (Eq. 3), adapted task models (Eq. 4), behavior cloning (computed, or
        restored from ``setup_cache`` when a run with the same inputs computed them), then
        Alg. 2 line 1."""
        cfg = self.cfg
        t0 = time.perf_counter()
        modules = {"meta_model": self.meta_model, "task_models": self.task_models,
                   "test_models": self.test_models, "bc_train": self.bc_train,
                   "bc_test": self.bc_test}
        cached_setup(self.setup_cache, cfg, modules, self.generator, self.device, writer,
                     self._compute_setup, self.say)
        # torchrun: every rank ran the same seeded setup; rank 0's result is authoritative
        # (CUDA kernels need not be bitwise deterministic across processes)
        for module in (self.meta_model, self.task_models, self.test_models, self.bc_train,
                       self.bc_test, self.meta):
            broadcast_module_(module)
        self.table.initialize(self.meta.policy, self.meta.q)  # Alg. 2 line 1
        if cfg.meta.fixed_meta_policy:
            self._set_fixed_meta_policy()
        self.say(f"setup done in {time.perf_counter() - t0:.0f} s")

    def _compute_setup(self, writer: MetricsWriter) -> None:
        """Alg. 2 lines 2-8 and the behavior clones: what ``setup_cache`` keeps."""
        cfg, dyn, gen = self.cfg, self.cfg.dynamics, self.generator
        if cfg.rac.use_model:
            split = HoldoutSplit(self.train_data, dyn.holdout_fraction, dyn.max_holdout, gen)
            self.say(
                f"meta-model (Eq. 3): {dyn.meta_iterations} iterations x {dyn.meta_inner_steps} "
                f"steps on {self.num_train} training tasks"
            )

            def log_meta_model(k: int, values: dict[str, float]) -> None:
                writer.log(0, "meta_model", values, step=k)

            phi = meta_train(
                self.train_data, dyn, self.device, gen, split=split, seed=cfg.seed,
                log_fn=log_meta_model, log_every=max(1, dyn.meta_iterations // 10),
            )
            self.meta_model.load_state_dict(phi.state_dict())
            for name, sampler, target, the_split in (
                ("train", self.train_data, self.task_models, split),
                ("test", self.test_data, self.test_models, None),
            ):
                model, mse = adapt(
                    self.meta_model, sampler, None, dyn.adaptation_steps, dyn.task_model_lr,
                    dyn.eta, gen, split=the_split, cfg=dyn, seed=cfg.seed + 7,
                )
                target.load_state_dict(model.state_dict())
                record = writer.log(0, f"dynamics_{name}", mse)
                self.say(
                    f"task models ({name} tasks, {dyn.adaptation_steps} steps): held-out MSE "
                    f"adapted {record['heldout_mse_adapted']:.4g} vs from scratch "
                    f"{record.get('heldout_mse_scratch', math.nan):.4g} "
                    f"(meta-model itself {record['heldout_mse_meta']:.4g})"
                )
        rac = cfg.rac
        for name, sampler, bc in (
            ("train", self.train_data, self.bc_train),
            ("test", self.test_data, self.bc_test),
        ):
            low, high = sampler.action_low, sampler.action_high

            def sample(batch: int, sampler=sampler, low=low, high=high) -> TransitionBatch:
                b = sampler.sample(batch, None, gen)
                return b._replace(actions=to_unit_actions(b.actions, low, high))

            nll = bc.fit(sample, rac.bc_steps, rac.bc_batch_size, rac.bc_lr)
            writer.log(0, f"behavior_cloning_{name}", {"nll": nll})

    def _set_fixed_meta_policy(self) -> None:
        """Single-task RAC (Alg. 1, §5.1): pi_c fixed at the random init, a finished run's
        pi_c, or a distillation of COMBO learners trained on the training tasks."""
        cfg = self.cfg
        kind, _, arg = cfg.meta.meta_policy.partition(":")
        if kind == "run":
            path = Path(arg) / CHECKPOINT_DIR / LATEST
            if not path.is_file():
                raise RunError(f"meta.meta_policy={cfg.meta.meta_policy}: no checkpoint at "
                               f"{path}; train that run first")
            saved = load_checkpoint(path, map_location=self.device)["meta"]["module"]
            policy = {k.removeprefix("policy."): v for k, v in saved.items()
                      if k.startswith("policy.")}
            try:
                self.meta.policy.load_state_dict(policy)
            except RuntimeError:
                raise RunError(f"meta.meta_policy={cfg.meta.meta_policy}: that run's "
                               "meta-policy has other network sizes; use the same preset") from None
        elif kind == "combo":
            self._distil_combo_meta_policy(int(arg))

    def _distil_combo_meta_policy(self, steps: int, distil_steps: int = 500) -> None:
        """pi_c <- a distillation (Eq. 10's KL, unit weights) of COMBO learners trained for
        ``steps`` updates on every training task (one learner per task, batched)."""
        from merpo_agent.rac_config import ALGO_SETTINGS

        cfg, gen = self.cfg, self.generator
        rac = cfg.rac.replace(**ALGO_SETTINGS["combo"], adaptive_alpha=False)
        n = self.num_train
        combo = TaskLearners(rac, self.train_data.obs_dim, self.train_data.act_dim, n,
                             self.device, generator=torch.Generator(self.device).manual_seed(
                                 cfg.seed + 3))
        buffer = (ModelBuffer(n, cfg.rollout.capacity, self.train_data.obs_dim,
                              self.train_data.act_dim, self.device) if rac.use_model else None)
        data = TaskData(self.train_data, torch.arange(n, device=self.device),
                        self.task_models if rac.use_model else None, self.info.terminated_torch)
        rac_updates(combo, data, buffer, steps, cfg.rollout, None, None, gen)
        ones, zeros = torch.ones(n, device=self.device), torch.zeros(n, device=self.device)
        for _ in range(distil_steps):
            states = self.train_data.sample(cfg.rac.batch_size, None, gen).observations
            self.meta.update_policy(combo.actor, states, ones, zeros)
        self.say(f"fixed meta-policy: distilled from {n} COMBO learners after {steps} updates")

    def own_task_record(self) -> dict[str, Any]:
        """Each training task's learner on its OWN task's real env (single-task RAC)."""
        from merpo_agent.env_eval import evaluate_in_env

        tasks = list(self.train_data.tasks)
        learners = self.table.learners
        returns = evaluate_in_env(
            self.cfg.env, tasks, {"own": lambda obs: learners.act(obs, deterministic=True)},
            self.cfg.eval.episodes, self.cfg.seed * 1_000_003 + self.iteration + 17,
            self.device,
        )["own"]
        return {
            "iteration": self.iteration, "phase": "own_tasks", "tasks": tasks,
            "own_task_return": [float(x) for x in returns],
            "behavior_return": [float(x) for x in self.train_data.dataset_returns.tolist()],
        }

    # ------------------------------------------------------------------ one meta-iteration
    def meta_iteration(self) -> dict[str, torch.Tensor]:
        """Alg. 2 lines 10-17 for one task batch; returns device metrics (no host reads).

        The batch's learners run chunk by chunk (``self.chunks``; one chunk unless a CPU
        runs smaller batched ops faster): every chunk draws the whole batch's randomness
        from the same generator states and keeps its own rows, so the chunks together
        compute what one batched op over the whole batch computes."""
        cfg, gen = self.cfg, self.generator
        rac = cfg.rac
        # the whole task batch, the same on every rank; this rank's slots hold `local`
        idx = torch.randperm(self.num_train, device=self.device, generator=gen)[: self.batch_size]
        regularized = rac.use_meta_regularizer
        learned = not cfg.meta.fixed_meta_policy  # single-task RAC: pi_c stays fixed
        tuned = regularized and rac.auto_tune_lambda
        # App. A.2.2's reading: the batch's learners start from pi_c and Q_meta every time
        reinit = learned and cfg.meta.learner_init in ("reinit", "reptile")
        reptile = learned and cfg.meta.learner_init == "reptile"

        def watch(metrics: dict[str, torch.Tensor]) -> None:
            for name in WATCHED:
                self._bad |= ~torch.isfinite(metrics[name]).all()

        rewind = len(self.chunks) > 1
        if rewind:
            start = (gen.get_state(), self.learner_generator.get_state())
        parts: list[dict[str, torch.Tensor]] = []
        policy_inputs: list[tuple[torch.Tensor, ...]] = []
        critic_sums: list[list[torch.Tensor]] = []
        actor_sums: list[list[torch.Tensor]] = []
        for chunk in self.chunks:
            if rewind:
                gen.set_state(start[0])
                self.learner_generator.set_state(start[1])
            rows = idx if chunk is None else chunk.take(idx)
            learners, buffer, models = self._chunk_modules(rows.shape[0])
            self.table.gather_into(learners, rows)  # each task continues its own learner
            if reinit:
                learners.load_meta_networks(self.meta.policy, self.meta.q, fresh_adam=True)
            if buffer is not None:
                buffer.clear()
                models.copy_from_(self.task_models, rows)
            data = TaskData(self.train_data, idx, models if rac.use_model else None,
                            self.info.terminated_torch, task_slice=chunk)
            metrics, last = rac_updates(
                learners, data, buffer, cfg.meta.inner_steps, cfg.rollout,
                self.meta.policy if regularized else None,
                self.bc_train.select(rows) if tuned else None, gen, on_update=watch,
            )
            if regularized and learned:  # Eq. 10's inputs: pi_n at rho_n's states
                with torch.no_grad():
                    mean, log_std = learners.actor(last.observations)
                policy_inputs.append((mean, log_std, last.observations,
                                      learners.lam.detach().clone(), learners.alpha.clone()))
            if learned:
                critic_sums.append([p.detach().sum(0, keepdim=True)
                                    for p in learners.critic.parameters()])
            if reptile:
                actor_sums.append([p.detach().sum(0, keepdim=True)
                                   for p in learners.actor.parameters()])
            metrics = dict(metrics)
            metrics["alpha"] = learners.adapt_alpha(metrics["d_beta_dual"], metrics["d_meta"])
            self.table.scatter_from(learners, rows)
            parts.append(metrics)
        if rac.beta_sharing == "shared":  # the one dual of every task, sampled or not
            with torch.no_grad():
                self.table.learners.log_beta.copy_(
                    learners.log_beta[0].expand_as(self.table.learners.log_beta))
        out = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}
        count = self.num_slots
        if policy_inputs and cfg.meta.policy_steps > 0:  # Eq. 10: only the KL depends on pi_c
            mean, log_std, states, lam, alpha = (torch.cat(x) for x in zip(*policy_inputs,
                                                                         strict=True))
            losses = [self.meta.update_policy_from(mean, log_std, states, lam, alpha)
                      for _ in range(cfg.meta.policy_steps)]
            out["meta_policy_loss"] = losses[0]  # before the first step
            self._bad |= ~torch.isfinite(losses[-1])
        if reptile:  # pi_c <- pi_c + epsilon (mean_n pi_n - pi_c)
            means = [sum(parts_) / count for parts_ in zip(*actor_sums, strict=True)]
            self.meta.reptile_policy_step(means, count, cfg.meta.reptile_step)
        if learned:
            means = [sum(parts_) / count for parts_ in zip(*critic_sums, strict=True)]
            self.meta.update_q_towards(means, count)
        if self.task_slice is not None:
            self.table.merge_ranks_(idx, self.task_slice.take(idx))
        return out

    def _gather_metrics(self, metrics: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """torchrun: the whole batch's metrics on every rank (per-slot (T,) metrics of the
        ranks concatenated in slot order, scalars averaged weighted by slot counts). One
        host copy, at log time only."""
        if self.task_slice is None:
            return metrics
        host = {name: value.detach().cpu() for name, value in metrics.items()}
        parts = all_gather_objects((self.num_slots, host))
        total = sum(n for n, _ in parts)
        out = {}
        for name in host:
            if host[name].dim() == 0:
                out[name] = sum(part[name].double() * n for n, part in parts) / total
            else:
                out[name] = torch.cat([part[name] for _, part in parts])
        return out

    # ------------------------------------------------------------------ checkpoints
    def state(self) -> dict[str, Any]:
        return {
            "format": 2,
            "iteration": self.iteration,
            "config": self.cfg.to_dict(),
            "meta_model": self.meta_model.state_dict(),
            "task_models": self.task_models.state_dict(),
            "test_models": self.test_models.state_dict(),
            "bc_train": self.bc_train.state_dict(),
            "bc_test": self.bc_test.state_dict(),
            "meta": self.meta.training_state(),
            "table": self.table.training_state(),
            "learner_noise": self.learners.generator.get_state(),
            "rng": rng_state({"data": self.generator}),
        }

    def save(self) -> None:
        """Write the checkpoint (rank 0 under torchrun; the others wait until it is there)."""
        if self.is_main:
            save_checkpoint(self.checkpoint_path, self.state())
        barrier()

    def load(self, state: dict[str, Any] | None = None) -> None:
        """Restore everything from the run's checkpoint (after :meth:`build`)."""
        state = state or load_checkpoint(self.checkpoint_path, map_location=self.device)
        try:
            self.meta_model.load_state_dict(state["meta_model"])
            self.task_models.load_state_dict(state["task_models"])
            self.test_models.load_state_dict(state["test_models"])
            self.bc_train.load_state_dict(state["bc_train"])
            self.bc_test.load_state_dict(state["bc_test"])
            self.meta.load_training_state(state["meta"])
            self.table.load_training_state(state["table"])
            self.learners.generator.set_state(state["learner_noise"])
        except (KeyError, RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(
                f"checkpoint {self.checkpoint_path} does not match this config ({first}); "
                "use a new --run-dir"
            ) from None
        self.iteration = int(state["iteration"])
        set_rng_state(state["rng"], {"data": self.generator})

    # ------------------------------------------------------------------ meta-test
    def evaluate(self, final: bool = True, seed: int | None = None,
                 tasks: Sequence[int] | None = None,
                 episodes: int | None = None) -> MetaTestResult:
        """The meta-test (§4.3) with the current meta-policy and meta-Q (``final``: with the
        full-budget COMBO column too).

        ``merpo-agent evaluate`` may change what the run's own meta-test did: ``seed`` (the
        meta-test's seed), ``tasks`` (a subset of the run's test tasks: phi_m* adapted task
        models and behavior cloning exist for those alone) and ``episodes`` per task."""
        cfg = self.cfg
        if episodes is not None:
            if episodes < 1:
                raise ConfigError(f"--episodes must be >= 1, got {episodes}")
            cfg = replace(cfg, eval=replace(cfg.eval, episodes=episodes))
        # the duals the training tasks learned (their mean) start the test tasks' duals;
        # before the first meta-iteration they are the config's initial values
        initial_duals = self.table.duals().mean(dim=1)
        if tasks is not None and tuple(tasks) != tuple(self.test_data.tasks):
            result = self._subset_meta_test(cfg, tuple(tasks), initial_duals, final, seed)
        elif self.world_size == 1:
            result = meta_test(
                cfg, self.meta, self.test_data, self.test_models, self.bc_test.policy,
                self.iteration, self.info.terminated_torch, initial_duals=initial_duals,
                num_train_tasks=self.num_train, final=final, seed=seed,
            )
        else:
            result = self._sharded_meta_test(initial_duals, final)
        self.last_result = result
        return result

    def _subset_meta_test(self, cfg: Config, tasks: tuple[int, ...],
                          initial_duals: torch.Tensor, final: bool,
                          seed: int | None) -> MetaTestResult:
        """The meta-test of some of the run's test tasks (their models and pi_hat_beta)."""
        from merpo_envs import format_tasks

        known = list(self.test_data.tasks)
        missing = [t for t in tasks if t not in known]
        if missing:
            raise RunError(
                f"task(s) {format_tasks(missing)} are not test tasks of this run "
                f"({format_tasks(known)}): the run adapted task models and behavior cloning "
                "for those only; pass --tasks within them"
            )
        rows = torch.tensor([known.index(t) for t in tasks], device=self.device)
        with torch.random.fork_rng(devices=[]):  # leave the global RNG as it was
            models = self.test_models.empty_like(len(tasks))
        models.copy_from_(self.test_models, rows)
        sampler = make_sampler(replace(cfg, data=replace(cfg.data, test_tasks=tasks)), "test")
        return meta_test(
            cfg, self.meta, sampler, models, self.bc_test.select(rows), self.iteration,
            self.info.terminated_torch, initial_duals=initial_duals,
            num_train_tasks=self.num_train, final=final, seed=seed,
        )

    def _sharded_meta_test(self, initial_duals: torch.Tensor, final: bool) -> MetaTestResult:
        """torchrun: each rank meta-tests its share of the test tasks; every rank gets the
        whole table (the ranks' returns gathered in task order)."""
        count = self.test_data.num_tasks
        lo, hi = shard_bounds(count, self.rank, self.world_size)
        part: dict = {}
        if hi > lo:
            local = torch.arange(lo, hi, device=self.device)
            with torch.random.fork_rng(devices=[]):  # leave the global RNG as it was
                models = self.test_models.empty_like(hi - lo)
            models.copy_from_(self.test_models, local)
            result = meta_test(
                self.cfg, self.meta, self.test_data, models, self.bc_test.select(local),
                self.iteration, self.info.terminated_torch, initial_duals=initial_duals,
                task_slice=TaskSlice(lo, hi, count), num_train_tasks=self.num_train,
                final=final,
            )
            part = {"returns": result.returns, "episodes": result.episodes,
                    "ref": (result.ref_min, result.ref_max)}
        parts = [p for p in all_gather_objects(part) if p]
        merged = {name: np.concatenate([p["returns"][name] for p in parts])
                  for name in parts[0]["returns"]}
        episodes = {name: [e for p in parts for e in p["episodes"][name]]
                    for name in parts[0]["episodes"]}
        ref_min = np.concatenate([p["ref"][0] for p in parts])
        ref_max = np.concatenate([p["ref"][1] for p in parts])
        return MetaTestResult(self.cfg.env, tuple(self.test_data.tasks), self.iteration, merged,
                              episodes=episodes, ref_min=ref_min, ref_max=ref_max)

    def save_adapted(self, result: MetaTestResult) -> Path | None:
        """Write the meta-test's adapted policies pi_j (§4.3) to ``checkpoints/adapted.pt``
        for ``merpo_agent.load_policy(run_dir, task=j)``; None when the result has none
        (a torchrun meta-test keeps each rank's share)."""
        if result.adapted_actor is None or not self.is_main:
            return None
        path = self.run_dir / CHECKPOINT_DIR / ADAPTED
        save_checkpoint(path, {
            "format": ADAPTED_FORMAT, "env": self.cfg.env, "iteration": result.iteration,
            "tasks": list(result.tasks), "hidden": self.cfg.rac.hidden,
            "hidden_layers": self.cfg.rac.hidden_layers, "actor": result.adapted_actor,
        }, keep_previous=False)
        return path

    # ------------------------------------------------------------------ the loop
    def train(self) -> MetaTestResult:
        """Set up or resume, run the remaining meta-iterations, return the final meta-test."""
        cfg = self.cfg
        if not self._built:
            self.build()
        resumed = self.checkpoint_path.is_file()
        if resumed:
            self.load()
        # made once the data are found: a run that fails to start leaves no empty directory
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            atomic_write_text(self.run_dir / CONFIG_FILE, cfg.to_yaml())
            record_session(self.run_dir, cfg.device, fresh=not resumed, command=self.command)
            writer = MetricsWriter(
                self.run_dir, tensorboard=self.tensorboard,
                purge_step=self.iteration + 1 if resumed else 0,
                hparams=cfg.to_dict(), hparam_metrics=HPARAM_METRICS, wandb=self.wandb,
            )
        else:  # torchrun: rank 0 alone writes the run directory
            writer = _NullWriter()
        try:
            if resumed:
                writer.truncate_after(self.iteration)
                self.say(f"resuming {self.run_dir} at meta-iteration {self.iteration}")
            else:  # a fresh run, or one killed during its setup: start its log afresh
                writer.truncate_after(-1)
                self.setup(writer)
                self.save()  # iteration 0: the setup is never redone
            return self._loop(writer)
        finally:
            writer.close()

    def _loop(self, writer: MetricsWriter) -> MetaTestResult:
        cfg = self.cfg
        meta_cfg = cfg.meta
        self._bad.zero_()
        last_good = self.iteration
        bar = progress_bar(cfg.iterations, "meta-training", "it", initial=self.iteration,
                           disable=not self.progress)
        metrics: dict[str, torch.Tensor] = {}
        try:
            while self.iteration < cfg.iterations:
                metrics = self.meta_iteration()
                self.iteration += 1
                k = self.iteration
                final = k == cfg.iterations
                log_now = k % cfg.log_every_iterations == 0 or final
                save_now = k % cfg.checkpoint_every_iterations == 0 or final
                eval_now = (cfg.eval_every_iterations > 0
                            and k % cfg.eval_every_iterations == 0) or final
                if log_now or save_now or eval_now:
                    # the one host read of the check (all ranks stop together)
                    if bool(any_rank(self._bad)):
                        raise TrainingDiverged(
                            f"non-finite loss (NaN or inf) by meta-iteration {k}: training "
                            f"stopped; last good checkpoint {self.checkpoint_path} "
                            f"(meta-iteration {last_good}); lower the learning rates "
                            "(e.g. --set rac.critic_lr=...) or change --seed and resume"
                        )
                if log_now:
                    writer.log(k, "train", self._gather_metrics(metrics))
                if eval_now and meta_cfg.fixed_meta_policy and self.is_main:
                    writer.log_record(self.own_task_record())
                if eval_now:
                    result = self.evaluate(final=final)
                    means = result.means()
                    writer.log(k, "meta_test", means)
                    writer.log_record(result.per_task_record())
                    if final:
                        self.save_adapted(result)
                    bar.set_postfix(
                        test_return=f"{means['adapted_return']:.2f}",
                        meta=f"{means['meta_policy_return']:.2f}",
                    )
                if save_now:
                    self.save()
                    last_good = k
                bar.update(1)
        finally:
            bar.close()
        if self.last_result is None or self.last_result.iteration != self.iteration:
            result = self.evaluate()  # a finished run resumed: its last meta-test, again
            self.save_adapted(result)
            if not writer.has(self.iteration, "meta_test"):
                writer.log(self.iteration, "meta_test", result.means())
                writer.log_record(result.per_task_record())
        return self.last_result


# Twin-critic weights per batched op that a CPU still runs faster batched than one task at
# a time (benchmarks/bench_meta_iteration.py): the memory-bound ops of a bigger op spill
# the cache (2 x 32 networks: batched 2.1x the loop at T = 8; 5 x 300: 0.6-0.9x).
CPU_CHUNK_CRITIC_WEIGHTS = 131_072


def task_chunk_size(cfg: Config, device: torch.device, batch: int, obs_dim: int,
                    act_dim: int) -> int:
    """Tasks per batched op of the inner loop: ``meta.task_chunk`` if set; else the whole
    batch on a GPU, and on a CPU as many tasks as fit ``CPU_CHUNK_CRITIC_WEIGHTS``."""
    if cfg.meta.task_chunk > 0:
        return min(cfg.meta.task_chunk, batch)
    weights = critic_weights(cfg.rac.hidden, cfg.rac.hidden_layers, obs_dim + act_dim)
    return device_chunk_size(device, batch, weights, CPU_CHUNK_CRITIC_WEIGHTS)


def critic_weights(hidden: int, hidden_layers: int, in_features: int) -> int:
    """The twin critics' weights per task, what ``CPU_CHUNK_CRITIC_WEIGHTS`` bounds."""
    return 2 * (in_features * hidden + (hidden_layers - 1) * hidden * hidden + hidden)


def _silent(_: str) -> None:
    """``say`` on the ranks other than 0."""


class _NullWriter:
    """The metrics writer of the ranks other than 0 under torchrun: records nothing."""

    def truncate_after(self, iteration: int) -> None:
        pass

    def has(self, iteration: int, phase: str) -> bool:
        return False

    def log(self, iteration: int, phase: str, values, step: int | None = None) -> dict[str, Any]:
        return {"iteration": int(iteration), "phase": phase, **to_host(values)}

    def log_record(self, record) -> None:
        pass

    def close(self) -> None:
        pass


def load_trained(run_dir: str | Path, device: str | None = None) -> MetaTrainer:
    """A trainer restored from a run directory's config and checkpoint (for ``evaluate``)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise RunError(
            f"{run_dir} is not a run directory (no {CONFIG_FILE}); train first with "
            "`merpo-agent train --run-dir ...`"
        )
    cfg = load_run_config(run_dir / CONFIG_FILE)
    if device is not None:
        cfg = replace(cfg, device=device)
    trainer = MetaTrainer(cfg, run_dir, progress=False)
    trainer.build()
    trainer.load()
    return trainer


__all__ = [
    "ADAPTED",
    "ADAPTED_FORMAT",
    "MetaTrainer",
    "RunError",
    "TrainingDiverged",
    "load_trained",
    "make_sampler",
]
