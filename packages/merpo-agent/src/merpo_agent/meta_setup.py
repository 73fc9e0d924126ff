"""Alg. 2's setup of a run (lines 1-8), the part ``setup_cache`` keeps: the meta-model
(Eq. 3), the task models adapted from it (Eq. 4), the behavior clones, and a fixed pi_c for
single-task RAC (§5.1). ``MetaTrainer`` inherits it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from merpo_agent.action_scaling import to_unit_actions
from merpo_agent.checkpoint import (
    LATEST,
    load_checkpoint,
)
from merpo_agent.distributed import (
    broadcast_module_,
)
from merpo_agent.holdout import HoldoutSplit
from merpo_agent.meta_model import adapt, meta_train
from merpo_agent.metrics import MetricsWriter
from merpo_agent.model_buffer import ModelBuffer
from merpo_agent.rac_loop import TaskData, rac_updates
from merpo_agent.run_layout import CHECKPOINT_DIR, RunError
from merpo_agent.setup_cache import cached_setup
from merpo_agent.task_learners import TaskLearners
from merpo_agent.transitions import TransitionBatch


class MetaSetup:
    """The setup steps of :class:`merpo_agent.trainer.MetaTrainer` (its state: ``cfg``,
    the samplers and modules ``build`` made)."""

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


__all__ = ["MetaSetup"]
