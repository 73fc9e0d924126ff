"""What ``merpo-agent tune`` may change, per method: the written search spaces.

Every method compared in Fig. 6 gets a space over ITS OWN open settings (for MerPO, the
readings the paper leaves ambiguous, §4.2.2-§4.3 and App. A.2.2) and its learning rates,
each within its own paper's value x/÷ 3. Every parameter is a finite choice, so a study
can use Optuna's TPE or grid sampler alike; ``docs/tuning.md`` prints these tables.

A choice's options are labels (what a trial record shows) mapped to ``--set KEY=VALUE``
overrides of ``merpo-agent train``: one label may set several keys (the lambda dual's
divergence and its units are one reading).
"""

from __future__ import annotations

from dataclasses import dataclass

from merpo_agent.pearl_reward_scale import LOCOMOTION_SCALE, POINT_ROBOT_SCALE, pearl_reward_scale


@dataclass(frozen=True)
class Choice:
    """One tuned setting: ``name`` (shown in records) and its labelled options."""

    name: str
    options: dict[str, tuple[str, ...]]
    why: str = ""
    # the label of the method's own default (its paper's value, MerPO's first reading):
    # every study tries the defaults first; None: the first option
    default: str | None = None
    # one of the paper's ambiguous readings (not a learning rate or a loss weight): what an
    # env without validation tasks takes from a study on another env (validated_settings)
    reading: bool = False

    @classmethod
    def values(cls, key: str, values: tuple, why: str = "", default=None,
               reading: bool = False) -> Choice:
        """A single config key over ``values`` (labels are the values themselves); the
        default is ``default``, else the middle value of three (a paper's lr x/÷ 3), else
        the first."""
        labels = [_label(v) for v in values]
        if default is not None:
            chosen = _label(default)
        else:
            chosen = labels[1] if len(labels) == 3 else labels[0]
        return cls(key, {label: (f"{key}={label}",) for label in labels}, why, chosen, reading)

    @property
    def default_label(self) -> str:
        return self.default if self.default is not None else next(iter(self.options))


def _label(value) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _around(value: float) -> tuple[float, float, float]:
    """A paper's learning rate x/÷ 3 (three significant digits)."""
    return (float(f"{value / 3:.3g}"), value, float(f"{value * 3:.3g}"))


def _reward_scale(scale: float) -> Choice:
    """PEARL's reward scale x/÷ 3 around the env's value (``search_space``)."""
    return Choice.values("reward_scale", _around(scale),
                         f"PEARL's reward scale for the env (its point robot: "
                         f"{POINT_ROBOT_SCALE:g}, locomotion: {LOCOMOTION_SCALE:g})")


# MerPO's open readings (each a documented config option) and learning rates.
_MERPO = (
    Choice("lambda_dual", {
        "kl_to_bc": ("rac.behavior_divergence=kl_to_bc",),
        "nll_unit": ("rac.behavior_divergence=nll", "rac.divergence_units=unit"),
        "nll_env": ("rac.behavior_divergence=nll", "rac.divergence_units=env"),
    }, "App. A.2.2 'Tune lambda': which behavior divergence the dual compares with "
       "D_target (0.05 nats of a behavior clone, or Eq. 9's -E log pi in [-1, 1] or env "
       "units)", reading=True),
    Choice.values("rac.lambda_max", (0.0, 100.0),
                  "an upper clip on lam (0: none; BRAC clips its multiplier to [0, 500])",
                  reading=True),
    Choice.values("rac.beta_sharing", ("per_task", "shared"),
                  "App. A.2.2 'Tune beta': one beta per task, or one shared by the tasks",
                  reading=True),
    Choice.values("meta.learner_init", ("persistent", "reinit", "reptile"),
                  "Alg. 2 line 1 (persistent learners) or App. A.2.2 (learners made anew "
                  "from pi_c and Q_meta each meta-iteration; reptile: plus a Reptile step)",
                  default="persistent", reading=True),
    Choice.values("meta.policy_steps", (1, 10), "Eq. 10 steps of pi_c per meta-iteration",
                  reading=True),
    Choice.values("rac.meta_q_lr", (1e-3, 1.0),
                  "xi_q, Table 2's outer critic / meta-Q lr 1e-3, or Reptile's full step 1 "
                  "(the `small` / `repro` presets' value, the default here)", default=1.0),
    Choice.values("test.adaptation_steps", (100, 1000),
                  "meta-test adaptation steps (Table 2: 100; Fig. 9b plots longer)",
                  reading=True),
    Choice.values("test.lr", _around(8e-5), "meta-test lr (App. A.2.2: 8e-5)"),
    Choice.values("rac.critic_lr", _around(1e-3), "inner critic lr (Table 2: 1e-3)"),
    Choice.values("rac.actor_lr", _around(1e-3), "inner actor lr (Table 2: 1e-3)"),
)

_CONTEXTUAL_BCQ = (
    Choice.values("critic_lr", _around(1e-3), "BCQ's code: 1e-3"),
    Choice.values("actor_lr", _around(1e-3), "BCQ's code: 1e-3"),
    Choice.values("encoder_lr", _around(3e-4), "the context encoder (FOCAL's 3e-4)"),
    Choice.values("phi", _around(0.05), "BCQ's perturbation bound Phi (0.05)"),
)

SEARCH_SPACES: dict[str, tuple[Choice, ...]] = {
    "merpo": _MERPO,
    "merpo-adp": (*_MERPO, Choice.values("rac.alpha_adp_lr", _around(1e-4),
                                         "Eq. 11's step size (Table 2: 1e-4)")),
    "focal": (
        Choice.values("critic_lr", _around(3e-4), "FOCAL's code: 3e-4"),
        Choice.values("actor_lr", _around(3e-4), "FOCAL's code: 3e-4"),
        Choice.values("encoder_lr", _around(3e-4), "FOCAL's code: 3e-4"),
        Choice.values("metric_beta", _around(1.0), "distance metric loss weight (1)"),
        Choice.values("target_divergence", (0.05, 0.5),
                      "BRAC's behavior-regularization target"),
    ),
    "cbcq": _CONTEXTUAL_BCQ,
    # MBML's multi-task policy is contextual BCQ: its space, plus the triplet loss
    "mbml": (*_CONTEXTUAL_BCQ,
             Choice.values("triplet_weight", _around(1.0), "MBML's triplet loss weight (1)")),
    "batch-pearl": (
        Choice.values("critic_lr", _around(3e-4), "PEARL's code: 3e-4"),
        Choice.values("actor_lr", _around(3e-4), "PEARL's code: 3e-4"),
        Choice.values("encoder_lr", _around(3e-4), "PEARL's context_lr: 3e-4"),
        Choice.values("kl_lambda", _around(0.1), "PEARL Eq. 3's KL weight (0.1)"),
        _reward_scale(LOCOMOTION_SCALE),
    ),
}


# The settings whose paper value depends on the env: their choice on a given env.
_ON_ENV = {"reward_scale": lambda env_id: _reward_scale(pearl_reward_scale(env_id))}


def search_space(algo: str, env_id: str | None = None) -> tuple[Choice, ...]:
    """The space of ``algo``; on ``env_id`` a setting whose paper value depends on the env
    centres on that env's value (Batch PEARL's reward scale: 100 on Point-Robot-Wind), so
    that a study always contains the method's own default."""
    if algo not in SEARCH_SPACES:
        raise ValueError(f"no search space for {algo!r}; one of {', '.join(SEARCH_SPACES)}")
    space = SEARCH_SPACES[algo]
    if env_id is None:
        return space
    return tuple(_ON_ENV[c.name](env_id) if c.name in _ON_ENV else c for c in space)


def default_labels(algo: str, env_id: str | None = None) -> dict[str, str]:
    """The method's own defaults as labels of its space (the trial every study runs first)."""
    return {choice.name: choice.default_label for choice in search_space(algo, env_id)}


def overrides_of(algo: str, labels: dict[str, str], env_id: str | None = None
                 ) -> tuple[str, ...]:
    """The ``--set`` overrides of a trial's chosen labels (``{choice name: label}``)."""
    out: list[str] = []
    for choice in search_space(algo, env_id):
        out += choice.options[labels[choice.name]]
    return tuple(out)


def grid_size(algo: str, env_id: str | None = None) -> int:
    size = 1
    for choice in search_space(algo, env_id):
        size *= len(choice.options)
    return size


def markdown_table(algo: str) -> str:
    """The space of ``algo`` as a markdown table (``docs/tuning.md``)."""
    lines = ["| setting | options (default in bold) | why |", "| --- | --- | --- |"]
    for choice in search_space(algo):
        shown = [f"**{o}**" if o == choice.default_label else o for o in choice.options]
        lines.append(f"| `{choice.name}` | {', '.join(shown)} | {choice.why} |")
    return "\n".join(lines)


__all__ = ["SEARCH_SPACES", "Choice", "default_labels", "grid_size", "markdown_table",
           "overrides_of", "search_space"]
