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

Meta-iterations k (Alg. 2 lines 9-18), every tensor with a task axis (the loop itself is
``seed_batch.SeedBatch``'s, which trains one run, or several seeds of a setting as one more
batch axis):

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
and leaves the last good checkpoint in place (nothing is saved after the first bad step), as
does a NaN or inf anywhere in the state to save: a checkpoint only ever holds finite tensors.

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

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from merpo_envs import get_meta_info
from tqdm.auto import tqdm

from merpo_agent.action_scaling import log_action_scale
from merpo_agent.behavior_cloning import BehaviorCloning
from merpo_agent.checkpoint import (
    LATEST,
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    nonfinite_entry,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from merpo_agent.config import Config, ConfigError, load_run_config
from merpo_agent.distributed import (
    all_gather_objects,
    any_rank,
    barrier,
    get_rank,
    get_world_size,
    shard_bounds,
)
from merpo_agent.dynamics import DynamicsEnsemble
from merpo_agent.evaluation import MetaTestResult
from merpo_agent.learner_table import LearnerTable
from merpo_agent.meta_policy import MetaLearner
from merpo_agent.meta_setup import MetaSetup
from merpo_agent.metrics import MetricsWriter, to_host
from merpo_agent.model_buffer import ModelBuffer
from merpo_agent.provenance import record_session
from merpo_agent.rac_loop import buffer_capacity
from merpo_agent.run_dir import check_run_dir
from merpo_agent.run_layout import (
    ADAPTED,
    ADAPTED_FORMAT,
    CHECKPOINT_DIR,
    CONFIG_FILE,
    HPARAM_METRICS,
    RESUMABLE_CHANGES,
    WATCHED,
    RunError,
    TrainingDiverged,
    _config_differences,
    ensure_run_datasets,
    make_sampler,
)
from merpo_agent.run_meta_test import RunMetaTest
from merpo_agent.task_learners import TaskLearners
from merpo_agent.task_slice import (
    CPU_CHUNK_CRITIC_WEIGHTS,
    TaskSlice,
    critic_weights,
    task_chunk_size,
    task_chunks,
)

# The run directory's layout and errors live in ``run_layout`` (re-exported here), Alg. 2's
# setup (lines 1-8) in ``meta_setup.MetaSetup``, the run's meta-test in
# ``run_meta_test.RunMetaTest``; this module builds the modules and runs the loop.


class MetaTrainer(MetaSetup, RunMetaTest):
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
        check_run_dir(self.run_dir)
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
        self.shared_data: tuple | None = None  # (train, test) samplers, set before build
        self._built = False
        self._last_good: int | None = None  # the iteration of the last checkpoint written

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
        if self.shared_data is None:
            ensure_run_datasets(cfg)
            self.shared_data = (make_sampler(cfg, "train"), make_sampler(cfg, "test"))
        # the task samplers (the seeds of a seed batch share one pair: the same data)
        self.train_data, self.test_data = self.shared_data
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
        """Write the checkpoint (rank 0 under torchrun; the others wait until it is there).

        Only a state whose every tensor is finite is written (a NaN can reach the
        parameters without a watched loss showing it first): otherwise training stops
        with :class:`TrainingDiverged` and the last good checkpoint stays.
        """
        state = self.state() if self.is_main else None
        where = nonfinite_entry(state) if self.is_main else None
        if bool(any_rank(torch.tensor(where is not None, device=self.device))):
            raise self._diverged(f"{where or 'a tensor'} of the state is NaN or inf")
        if self.is_main:
            save_checkpoint(self.checkpoint_path, state)
        self._last_good = self.iteration
        barrier()

    def _diverged(self, what: str) -> TrainingDiverged:
        """The one line of a diverged run: what, where it stopped, and advice ``train``
        accepts (a resume may not change the learning rates or the seed: a new run may)."""
        if self._last_good is None:
            kept = "no checkpoint was written"
        else:
            kept = (f"last good checkpoint {self.checkpoint_path} "
                    f"(meta-iteration {self._last_good}) kept")
        return TrainingDiverged(
            f"{what} by meta-iteration {self.iteration}: training stopped; {kept}; start a "
            "new run (another --run-dir) with lower learning rates (e.g. --set "
            "rac.critic_lr=...) or another --seed"
        )

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

    # ------------------------------------------------------------------ the run
    def train(self) -> MetaTestResult:
        """Set up or resume, run the remaining meta-iterations, return the final meta-test
        (``seed_batch.SeedBatch`` of this one seed: the loop of every run)."""
        from merpo_agent.seed_batch import SeedBatch

        return SeedBatch([self], progress=self.progress).train()[0]

    def open_run(self) -> MetricsWriter | _NullWriter:
        """Build, then resume from the checkpoint or run the setup (Alg. 2 lines 1-8) and
        save iteration 0; the run's metrics writer (the caller closes it). Call with the
        run directory claimed (``run_dir.claim_run_dir``)."""
        cfg = self.cfg
        if not self._built:
            self.build()
        resumed = self.checkpoint_path.is_file()
        if resumed:
            self.load()
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
        except BaseException:
            writer.close()
            raise
        self._last_good = self.iteration
        return writer

    def finish(self, writer: MetricsWriter | _NullWriter) -> MetaTestResult:
        """After the last meta-iteration: the final meta-test (again, for a finished run
        resumed) with its adapted policies saved; returns it."""
        if self.last_result is None or self.last_result.iteration != self.iteration:
            result = self.evaluate()  # a finished run resumed: its last meta-test, again
            self.save_adapted(result)
            if not writer.has(self.iteration, "meta_test"):
                writer.log(self.iteration, "meta_test", result.means())
                writer.log_record(result.per_task_record())
        return self.last_result


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
    "CHECKPOINT_DIR",
    "CONFIG_FILE",
    "CPU_CHUNK_CRITIC_WEIGHTS",
    "HPARAM_METRICS",
    "RESUMABLE_CHANGES",
    "WATCHED",
    "MetaTrainer",
    "RunError",
    "TrainingDiverged",
    "critic_weights",
    "load_trained",
    "ensure_run_datasets",
    "make_sampler",
    "task_chunk_size",
]
