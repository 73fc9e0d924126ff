"""The meta-test of a run (§4.3, ``evaluation.meta_test``) as ``MetaTrainer`` runs it: on
the run's test tasks, a subset of them (``merpo-agent evaluate --tasks``) or sharded over
torchrun ranks, and the adapted policies it keeps for ``load_policy``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from merpo_agent.checkpoint import (
    save_checkpoint,
)
from merpo_agent.config import Config, ConfigError
from merpo_agent.distributed import (
    all_gather_objects,
    shard_bounds,
)
from merpo_agent.evaluation import MetaTestResult, meta_test
from merpo_agent.run_layout import ADAPTED, ADAPTED_FORMAT, CHECKPOINT_DIR, RunError, make_sampler
from merpo_agent.task_slice import TaskSlice


class RunMetaTest:
    """The meta-test steps of :class:`merpo_agent.trainer.MetaTrainer`."""

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


__all__ = ["RunMetaTest"]
