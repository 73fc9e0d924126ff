"""``RACConfig``: every knob of RAC (Alg. 1) and of the meta-policy step (Eq. 10).

Defaults are the paper's Table 2 for Point-Robot-Wind (App. A); the
trainer's presets override the per-environment values (discount, learning rates,
lambda initial, Q difference threshold). Values the paper does not give are marked
"(not given)" with the choice made.

The ablations of §5 (Fig. 4, 7) are settings of these same fields (``RACConfig.for_algo``):

| algo        | setting                                                          |
| ----------- | ---------------------------------------------------------------- |
| merpo       | defaults: alpha = 0.4 fixed                                      |
| merpo-adp   | ``adaptive_alpha=True`` (Eq. 11, alpha in [0.1, 0.5])            |
| combo       | ``use_meta_regularizer=False``: lam = 0, no lam tuning, no pi_c  |
| beha-only   | ``alpha=1.0`` (only the behavior regularizer)                    |
| combo3      | ``alpha=0.0`` (only the meta-policy regularizer, Eq. 5-6)        |
| cql         | ``use_model=False``: f = 1, no rollouts, penalty states from D   |
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class RACConfig:
    # --- data (Table 2)
    batch_size: int = 256  # "sample batch size": rows per task per update (real + model)
    real_data_ratio: float = 0.5  # f in Eq. 1
    use_model: bool = True  # False = "No model (CQL)": f = 1, penalty states from D
    discount: float = 0.9  # Point-Robot-Wind; 0.99 for the MuJoCo envs
    # --- networks (App. A.2.2: "5-layer feedforward, 300 hidden units"; read, like the
    # dynamics model's "4 layers", as the number of hidden layers)
    hidden: int = 300
    hidden_layers: int = 5
    # --- inner loop optimisers (Table 2 "inner critic/actor lr", Adam)
    critic_lr: float = 1e-3
    actor_lr: float = 1e-3
    polyak_tau: float = 0.005  # target-network rate (not given: the SAC/COMBO custom)
    # --- SAC entropy ("max entropy: True"), temperature auto-tuned to -act_dim
    max_entropy: bool = True
    entropy_initial: float = 1.0  # (not given: SAC's custom)
    entropy_lr: float = 1e-3  # (not given: the inner actor lr)
    # --- conservative policy evaluation, Eq. 1 + App. A.2.2 "Tune beta"
    # K_u uniform + K_p policy actions per penalty state in the CQL(H) logsumexp (not given:
    # the COMBO/CQL(H) custom). 10 each = OfflineRL-Kit's num_repeat_actions = 10 samples per
    # proposal. Eq. 1 penalises the model states (f = 0.5: 128 of a 256 batch) with two
    # proposals (uniform, pi(.|s)): 2,560 sampled actions per critic; OfflineRL-Kit's COMBO
    # uses three (also pi(.|s')) at all 256 mixed states: 7,680 (K_u = K_p = 30 here).
    cql_uniform_actions: int = 10
    cql_policy_actions: int = 10
    auto_tune_beta: bool = True
    log_beta_initial: float = 0.0
    log_beta_lr: float = 1e-3
    q_difference_threshold: float = 10.0  # tau of App. A.2.2 (Point-Robot-Wind: 10)
    beta_max: float = 1e6  # safety clamp on exp(log beta) (CQL-Lagrange's custom)
    # An OPEN READING of App. A.2.2 (chosen on validation tasks): is beta one dual per task
    # ("per_task": each task's learner steps its own log beta once per own update) or one
    # dual shared by the training tasks ("shared", as a single-agent loop over tasks has
    # it: every task's update steps the one log beta, so per task update it moves as many
    # times faster as there are tasks in the batch)?
    beta_sharing: str = "per_task"
    # --- regularized policy improvement, Eq. 9 + App. A.2.2 "Tune lambda"
    use_meta_regularizer: bool = True  # False = COMBO: lam = 0 and no meta-policy
    lambda_initial: float = 5.0
    auto_tune_lambda: bool = True
    lambda_lr: float = 1.0
    target_divergence: float = 0.05  # D_target of App. A.2.2 (Table 2: 0.05)
    # An OPEN READING of App. A.2.2 "Tune lambda": WHICH behavior divergence the lambda
    # dual (and MerPO-Adp's Eq. 11) compares with D_target. The paper gives Eq. 9's
    # surrogate D_beta = -E_D[log pi_n(a|s)] and no estimator for the dual:
    # - "kl_to_bc": D_beta' = E_D[log pi_hat_beta(a|s) - log pi_n(a|s)] with a
    #   behavior-cloning model pi_hat_beta: zero at the clone, so D_target = 0.05 holds each
    #   learner within 0.05 nats of it (the tightest reading);
    # - "nll": the literal surrogate -E_D[log pi_n(a|s)], whose floor is the behavior
    #   policy's entropy, so it depends on the units of the actions (``divergence_units``):
    #   "unit" ([-1, 1], the networks' range) or "env" (the env's own action box, e.g.
    #   [-0.1, 0.1] on Point-Robot-Wind: 2 log 0.1 = -4.6 nats lower than in unit units).
    behavior_divergence: str = "kl_to_bc"
    divergence_units: str = "unit"
    # An upper clip on lam after each dual step (0 = none; BRAC clips its multiplier to
    # [0, 500]). The paper gives none.
    lambda_max: float = 0.0
    # --- alpha (Eq. 7/9): fixed (MerPO) or adaptive per task (MerPO-Adp, Eq. 11)
    alpha: float = 0.4
    adaptive_alpha: bool = False
    alpha_adp_lr: float = 1e-4
    alpha_min: float = 0.1
    alpha_max: float = 0.5
    # --- meta-policy (Eq. 10) and meta-Q (App. A.2.2)
    outer_actor_lr: float = 1e-3
    # xi_q. Table 2 lists an "outer critic lr" and a "meta-Q lr", both 1e-3; the meta-Q
    # step of App. A.2.2 is the only update of an outer critic in Alg. 2, so both name this
    # one rate (there is no outer critic loss to give a gradient lr to).
    meta_q_lr: float = 1e-3
    # --- behavior cloning pi_hat_beta for D_beta' (not in the paper: our choices)
    bc_hidden: int = 256
    bc_hidden_layers: int = 3
    bc_steps: int = 2000
    bc_batch_size: int = 256
    bc_lr: float = 1e-3
    # --- speed (opt-in; results unchanged within float tolerance, tests compare them)
    compile: bool = False  # torch.compile the pure loss math (networks, optimizers eager)
    cuda_graphs: bool = False  # replay the whole update as one CUDA graph (CUDA only)
    cuda_graph_warmup: int = 3  # eager updates (real ones) on a side stream before capture

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size >= 2, "batch_size must be >= 2"),
            (0.0 < self.real_data_ratio <= 1.0, "real_data_ratio must be in (0, 1]"),
            (0.0 < self.discount < 1.0, "discount must be in (0, 1)"),
            (self.hidden > 0 and self.hidden_layers >= 1, "hidden and hidden_layers must be >= 1"),
            (0.0 < self.polyak_tau <= 1.0, "polyak_tau must be in (0, 1]"),
            (self.entropy_initial > 0.0, "entropy_initial must be > 0"),
            (self.cql_uniform_actions >= 1 and self.cql_policy_actions >= 1,
             "cql_uniform_actions and cql_policy_actions must be >= 1"),
            (self.lambda_initial >= 0.0, "lambda_initial must be >= 0"),
            (self.cuda_graph_warmup >= 1, "cuda_graph_warmup must be >= 1"),
            (0.0 <= self.alpha <= 1.0, "alpha must be in [0, 1]"),
            (0.0 <= self.alpha_min <= self.alpha_max <= 1.0,
             "alpha_min <= alpha_max must lie in [0, 1]"),
            (0.0 <= self.meta_q_lr <= 1.0, "meta_q_lr must be in [0, 1]"),
            (self.beta_sharing in BETA_SHARING,
             f"beta_sharing must be one of {', '.join(BETA_SHARING)}"),
            (self.behavior_divergence in BEHAVIOR_DIVERGENCES,
             f"behavior_divergence must be one of {', '.join(BEHAVIOR_DIVERGENCES)}"),
            (self.divergence_units in DIVERGENCE_UNITS,
             f"divergence_units must be one of {', '.join(DIVERGENCE_UNITS)}"),
            (self.lambda_max >= 0.0, "lambda_max must be >= 0 (0: no upper clip)"),
            (self.use_model or self.real_data_ratio == 1.0,
             "use_model=False needs real_data_ratio=1.0 (use RACConfig.for_algo('cql'))"),
            (not self.use_model or self.real_batch_size < self.batch_size,
             "use_model=True needs real_data_ratio < 1 so that some rows come from the model"),
        ]
        # A learning rate <= 0 trains nothing or ascends the loss: never what was meant.
        # (meta_q_lr is an interpolation weight, checked above; 0 freezes Q_meta.)
        checks += [(getattr(self, name) > 0.0, f"{name}={getattr(self, name)} must be > 0")
                   for name in self.__dataclass_fields__
                   if name.endswith("_lr") and name != "meta_q_lr"]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"RACConfig: {message}")

    @property
    def real_batch_size(self) -> int:
        """Rows per task drawn from the dataset D_n: round(f * batch_size)."""
        return max(1, round(self.real_data_ratio * self.batch_size))

    @property
    def model_batch_size(self) -> int:
        """Rows per task drawn from the model buffer (0 without a model)."""
        return self.batch_size - self.real_batch_size if self.use_model else 0

    def target_entropy(self, act_dim: int) -> float:
        """SAC's heuristic target entropy, -|A|."""
        return -float(act_dim)

    @property
    def log_entropy_initial(self) -> float:
        return math.log(self.entropy_initial)

    @classmethod
    def for_algo(cls, algo: str, **overrides) -> RACConfig:
        """The config of one algorithm / ablation of §5 (see the module docstring)."""
        if algo not in ALGO_SETTINGS:
            raise ValueError(
                f"unknown algo {algo!r}: choose one of {', '.join(sorted(ALGO_SETTINGS))}"
            )
        return cls(**{**ALGO_SETTINGS[algo], **overrides})

    def replace(self, **changes) -> RACConfig:
        return dataclasses.replace(self, **changes)


BETA_SHARING = ("per_task", "shared")
BEHAVIOR_DIVERGENCES = ("kl_to_bc", "nll")
DIVERGENCE_UNITS = ("unit", "env")

ALGO_SETTINGS: dict[str, dict] = {
    "merpo": {},
    "merpo-adp": {"adaptive_alpha": True},
    "combo": {"use_meta_regularizer": False, "lambda_initial": 0.0, "auto_tune_lambda": False},
    "beha-only": {"alpha": 1.0},
    "combo3": {"alpha": 0.0},
    "cql": {"use_model": False, "real_data_ratio": 1.0},
}

__all__ = [
    "ALGO_SETTINGS", "BEHAVIOR_DIVERGENCES", "BETA_SHARING", "DIVERGENCE_UNITS", "RACConfig",
]
