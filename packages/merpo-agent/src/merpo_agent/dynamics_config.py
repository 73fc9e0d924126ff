"""The hyperparameters of the dynamics models (Section 4.1, App. A.2.1, Table 2): torch-free,
so that reading a config (and ``merpo-agent --help``) does not import torch."""

from __future__ import annotations

from dataclasses import dataclass

# Weights of one batched training op (tasks x parameters per task) up to which a CPU runs
# it at least as fast as a loop over its tasks (benchmarks/bench_dynamics.py): 2^21, whose
# parameters, gradients and two Adam moments (32 MiB) about fill a CPU's last-level cache;
# bigger ops' memory-bound parts spill it. Measured at T = 8 on a loaded 2-core CPU, one
# thread, batched over the loop: 2 x 32 (21 k weights per task) 1.9x, 3 x 64 (85 k) 1.5x,
# 3 x 128 (285 k) 1.1x, Table 2's 4 x 256 (1.5 M) 1.1x in pairs but 0.97x all 8 (0.60x on a
# quiet 2-core CPU, two threads): Table 2 ensembles train one task at a time.
CPU_CHUNK_DYNAMICS_WEIGHTS = 2_097_152


@dataclass
class DynamicsConfig:
    """Hyperparameters of the dynamics models (Table 2 / App. A.2.1 defaults).

    Values the paper leaves open (``table2.yaml`` ``not_given``) and our choices:

    - ``eta`` = 0.1: the proximal weight of Eq. 3 and Eq. 4 on the squared L2 distance summed
      over all parameters of a task's ensemble. With Adam the pull only matters relative to
      the NLL gradient; 0.1 keeps theta within a few inner steps of phi without freezing it
      (Zhou et al. 2019 use weights of this order).
    - ``meta_inner_steps`` (h) = 10 and ``meta_iterations`` (K) = 2000: Reptile-style meta
      learning moves phi by about xi_1 * h * lr per parameter and meta-iteration (Adam steps
      are ~lr each), i.e. 5e-4 with xi_1 = 0.05 and lr 1e-3; K * h = 2 * 10^4 inner steps give
      phi a total travel of order 1, what training a model from scratch needs (on an H100-class
      GPU about a minute or two for 40 tasks). On a CPU, presets lower K (and may raise xi_1
      or the inner lr; synthetic tests use xi_1 = 0.5, lr 5e-3, K = 60 to finish in seconds).
      Measured on Point-Robot-Wind ``random`` data (train tasks 0-7, unseen 40-41, hidden 64 x 2,
      K = 200, h = 10, inner lr 1e-3, then Eq. 4 with t = 25, lr 1e-4): held-out MSE of the
      adapted models 3.4e-3 / 9.7e-3 with xi_1 = 0.05, 2.4e-5 / 7.5e-4 with xi_1 = 0.5, against
      0.44 / 0.26 from scratch at equal steps (a fully trained model: ~6e-6).
    - ``meta_inner_lr`` = 1e-3: the Adam lr of the h inner steps of Eq. 3. Table 2's task-model
      lr (1e-4) is used for the t = 25 adaptation steps of Eq. 4; at 1e-4 in the inner loop the
      meta-model would move ~5e-5 per meta-iteration and need 10x more of them. 1e-3 is MBPO's
      model lr and Table 1's.
    - ``meta_task_batch_size`` = None: every training task in every meta-iteration (Alg. 2
      line 3 says "for each training task"); set it to sample a task batch instead.
    - ``logvar_bound_weight`` = 0.01: MBPO's weight on sum(max_logvar) - sum(min_logvar).
    - ``max_holdout`` = 5000: MBPO's cap on the held-out set per task.
    - ``scratch_lr`` / ``scratch_steps``: training a task model from scratch without the
      meta-model (single-task RAC, Table 1: model lr 1e-3); the steps are our choice.
    - ``task_chunk`` = 0: tasks per batched op when task models train (Eq. 3 inner steps,
      Eq. 4, from scratch); 0 = per device (:meth:`DynamicsEnsemble.chunk_size`: the whole
      batch on a GPU, on a CPU as many tasks as fit :data:`CPU_CHUNK_DYNAMICS_WEIGHTS`).
      Each step's batch is drawn for all tasks at once and cut, so the result is the same.
    """

    ensemble: int = 7
    elites: int = 5
    hidden: int = 256
    hidden_layers: int = 4
    batch_size: int = 256
    task_model_lr: float = 1e-4  # Table 2, the t adaptation steps of Eq. 4
    meta_model_lr: float = 5e-2  # Table 2, xi_1 of Alg. 2 line 6
    adaptation_steps: int = 25  # Table 2, t in Eq. 4
    eta: float = 0.1
    meta_inner_steps: int = 10  # h
    meta_iterations: int = 2000  # K
    meta_inner_lr: float = 1e-3
    meta_task_batch_size: int | None = None
    holdout_fraction: float = 0.1
    max_holdout: int = 5000
    logvar_bound_weight: float = 0.01
    scratch_lr: float = 1e-3
    scratch_steps: int = 5000
    task_chunk: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.elites <= self.ensemble:
            raise ValueError(
                f"dynamics elites={self.elites} must be in 1..ensemble={self.ensemble}; "
                "set elites <= ensemble"
            )
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(
                f"dynamics holdout_fraction={self.holdout_fraction} must be in (0, 1), e.g. 0.1"
            )
        for name in ("hidden", "hidden_layers", "batch_size", "max_holdout"):
            if getattr(self, name) < 1:
                raise ValueError(f"dynamics {name}={getattr(self, name)} must be >= 1")
        for name in ("adaptation_steps", "meta_inner_steps", "meta_iterations", "scratch_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"dynamics {name}={getattr(self, name)} must be >= 0")
        for name in (n for n in self.__dataclass_fields__ if n.endswith("_lr")):
            if not getattr(self, name) > 0:
                raise ValueError(f"dynamics {name}={getattr(self, name)} must be > 0")
        if self.task_chunk < 0:
            raise ValueError(f"dynamics task_chunk={self.task_chunk} must be >= 0 (0: per device)")
        if self.meta_task_batch_size is not None and self.meta_task_batch_size < 1:
            raise ValueError(
                f"dynamics meta_task_batch_size={self.meta_task_batch_size} must be >= 1 "
                "(or None for all training tasks)"
            )

    def model_kwargs(self) -> dict[str, int]:
        """The architecture arguments of :class:`DynamicsEnsemble`."""
        return {
            "ensemble": self.ensemble,
            "elites": self.elites,
            "hidden": self.hidden,
            "hidden_layers": self.hidden_layers,
        }


__all__ = ["CPU_CHUNK_DYNAMICS_WEIGHTS", "DynamicsConfig"]
