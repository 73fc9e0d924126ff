"""Meta-test on unseen tasks (§4.3, Proposition 1), batched over the test tasks.

For every test task j at once (a task axis, no loop over tasks):

1. the task model adapted from phi_m* (Eq. 4) and the behavior-cloning fit pi_hat_beta,j are
   computed once per run by the trainer (phi_m* is fixed after Alg. 2 line 8) and passed in;
2. **MerPO (adapted)**: pi_j <- pi_c*, Q_j <- Q_meta, then ``test.adaptation_steps`` RAC
   updates with pi_c* fixed, critic and actor lr ``test.lr`` (8e-5, App. A.2.2); MerPO-Adp
   also takes its Eq. 11 alpha step once per ``meta.inner_steps`` updates, as it does once
   per meta-iteration in training. The dual
   variables (SAC temperature, beta, lambda) start at the training tasks' mean learned
   values (``initial_duals``), as pi and Q start from what meta-training learned: the paper
   does not say; fresh defaults (temperature 1, lambda 5) pulled the meta-initialised
   policies back towards the behavior policy within the 100 steps (a quickstart run:
   adapted -15.7 against the meta-policy's -13.9 on tasks 40-43; -14.5 with these duals);
3. **COMBO**: the same code with lam = 0 and no meta-policy, from a fresh random init, on
   the same data and models, with a full single-task budget (``MetaTestConfig.combo_budget``:
   as many updates as one training task received in meta-training) at the run's inner
   learning rates;
4. **With beha only**: as 2. with alpha = 1 (only the behavior regularizer);
5. each policy's deterministic (tanh of the mean) action is run in the real environment of
   its task (``gymnasium.make(env_id, task=j)``, a vector env over tasks x seeds).

Reported per task: the behavior policy's return (the dataset's mean episode return), the
meta-policy's, MerPO's adapted policy's, COMBO's and "With beha only"'s; and whether the
adapted policy beats both the behavior policy and the meta-policy (Proposition 1's safe
improvement), with a summary "safe improvement on k of K tasks".

The meta-test draws its randomness from its own seed (``seed``) inside
``torch.random.fork_rng``: it never disturbs the training RNG streams (exact resume), and
``merpo-agent evaluate`` on a run reproduces the numbers its last in-training meta-test
logged.

Under torchrun the trainer gives each rank a slice of the test tasks (``task_slice``): the
rank adapts and evaluates only those, with the randomness drawn for all test tasks and cut,
and the same environment seeds per task, so its rows equal a single process's (except
COMBO's random initial networks, drawn for the slice's shapes).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import numpy as np
import torch

from merpo_agent.action_scaling import log_action_scale
from merpo_agent.config import Config
from merpo_agent.dynamics import DynamicsEnsemble
from merpo_agent.env_eval import evaluate_in_env
from merpo_agent.meta_policy import MetaLearner
from merpo_agent.model_buffer import ModelBuffer
from merpo_agent.rac_config import ALGO_SETTINGS, RACConfig
from merpo_agent.rac_loop import TaskData, rac_updates
from merpo_agent.scores import normalized_score, sampler_reference_scores, summarize
from merpo_agent.task_learners import TaskLearners
from merpo_agent.task_slice import TaskSlice

COLUMNS = (
    ("behavior", "behavior"),
    ("meta_policy", "meta-policy"),
    ("adapted", "MerPO adapted"),
    ("combo", "COMBO"),
    ("beha_only", "With beha only"),
)


@dataclass
class MetaTestResult:
    """Per-task mean returns (numpy arrays of shape (K,)) on the unseen tasks.

    ``episodes``: every episode's return per column and task (K arrays; the behavior
    column holds the dataset's episodes), for the spread; ``ref_min`` / ``ref_max``: the
    tasks' dataset reference scores (K,), for the normalized scores (``merpo_agent.scores``).
    """

    env_id: str
    tasks: tuple[int, ...]
    iteration: int
    returns: dict[str, np.ndarray] = field(default_factory=dict)
    # RAC updates each variant's learners took (read off their optimizers' step counts)
    updates: dict[str, int] = field(default_factory=dict)
    episodes: dict[str, list[np.ndarray]] = field(default_factory=dict)
    ref_min: np.ndarray | None = None
    ref_max: np.ndarray | None = None
    # the adapted policies pi_j (a stacked actor over the K tasks, state_dict on the CPU)
    adapted_actor: dict | None = None
    # the meta-test's own seed (its RAC updates and the real-env episodes)
    seed: int | None = None

    @property
    def safe(self) -> np.ndarray:
        """Proposition 1 per task: adapted > behavior and adapted > meta-policy."""
        adapted = self.returns["adapted"]
        return (adapted > self.returns["behavior"]) & (adapted > self.returns["meta_policy"])

    def summary_line(self) -> str:
        return f"safe improvement on {int(self.safe.sum())} of {len(self.tasks)} tasks"

    def _episodes(self, name: str) -> list[np.ndarray]:
        """A column's episode returns per task (its task means where none were kept)."""
        return self.episodes.get(name) or [np.array([x]) for x in self.returns[name]]

    def normalized(self, name: str) -> np.ndarray | None:
        """A column's normalized score per task (x100), None without reference scores."""
        if self.ref_min is None or self.ref_max is None:
            return None
        return normalized_score(self.returns[name], self.ref_min, self.ref_max)

    def means(self) -> dict[str, float]:
        """Per column: the mean over tasks ``<column>_return``, its spread over episodes
        and tasks ``<column>_return_std``, the normalized score ``<column>_normalized`` and
        ``<column>_normalized_std`` (``scores.summarize``); plus ``safe_tasks``."""
        out: dict[str, float] = {}
        for name in self.returns:
            out.update(summarize(name, self._episodes(name), self.ref_min, self.ref_max))
        out["safe_tasks"] = float(self.safe.sum())
        return out

    def per_task_record(self) -> dict:
        record = {
            "iteration": self.iteration,
            "phase": "meta_test_tasks",
            "tasks": list(self.tasks),
        }
        for name, values in self.returns.items():
            record[f"{name}_return"] = [float(x) for x in values]
            record[f"{name}_return_std"] = [float(np.std(e)) for e in self._episodes(name)]
            norm = self.normalized(name)
            if norm is not None:
                record[f"{name}_normalized"] = [float(x) for x in norm]
        record["safe"] = [bool(s) for s in self.safe]
        if self.ref_min is not None and self.ref_max is not None:
            record["ref_min"] = [float(x) for x in self.ref_min]
            record["ref_max"] = [float(x) for x in self.ref_max]
        return record

    def rows(self) -> list[dict]:
        """One dict per task (``task``, each column's return, std and normalized score,
        ``safe``): the rows of ``merpo-agent evaluate``'s CSV."""
        record = self.per_task_record()
        keys = [k for k in record if isinstance(record[k], list) and k != "tasks"]
        return [{"task": task, **{k: record[k][i] for k in keys}}
                for i, task in enumerate(self.tasks)]

    def table(self) -> str:
        """The per-task table, the mean, spread and normalized rows and the summary line,
        as printed by ``merpo-agent evaluate``."""
        cols = [(key, title) for key, title in COLUMNS if key in self.returns]
        header = ["task", *[title for _, title in cols], "beats behavior & meta-policy"]
        rows = []
        for i, task in enumerate(self.tasks):
            rows.append(
                [str(task)]
                + [f"{self.returns[key][i]:.2f}" for key, _ in cols]
                + ["yes" if self.safe[i] else "no"]
            )
        means = self.means()
        summary = [("mean", "_return", ".2f"), ("std", "_return_std", ".2f")]
        if self.ref_min is not None:
            summary += [("normalized", "_normalized", ".1f"),
                        ("norm. std", "_normalized_std", ".1f")]
        for title, suffix, spec in summary:
            rows.append([title] + [f"{means[key + suffix]:{spec}}" for key, _ in cols] + [""])
        widths = [max(len(r[c]) for r in [header, *rows]) for c in range(len(header))]

        def fmt(row: list[str]) -> str:
            return "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True))

        lines = [
            f"meta-test on {self.env_id}, unseen tasks {list(self.tasks)} "
            f"(meta-iteration {self.iteration}; mean return per task; std over episodes and "
            "tasks; normalized = 100 (R - ref_min) / (ref_max - ref_min), each task's "
            "dataset references)",
            fmt(header),
            *[fmt(row) for row in rows],
            self.summary_line(),
        ]
        return "\n".join(lines)


def _test_rac_config(cfg: Config, variant: str) -> RACConfig:
    """RAC settings of a meta-test variant: MerPO and "With beha only" adapt at the
    single-new-task lr; COMBO trains from scratch at ``test.combo_lr`` (0: the inner lrs)."""
    rac, lr = cfg.rac, cfg.test.lr
    if variant == "adapted":
        return rac.replace(critic_lr=lr, actor_lr=lr)
    if variant == "combo":
        combo_lr = cfg.test.combo_lr
        lrs = dict(critic_lr=combo_lr, actor_lr=combo_lr) if combo_lr > 0 else {}
        return rac.replace(**ALGO_SETTINGS["combo"], **lrs, adaptive_alpha=False,
                           use_model=rac.use_model, real_data_ratio=rac.real_data_ratio)
    if variant == "beha_only":
        return rac.replace(critic_lr=lr, actor_lr=lr, alpha=1.0, adaptive_alpha=False)
    raise ValueError(f"unknown meta-test variant {variant!r}")


@contextlib.contextmanager
def _isolated_rng(seed: int, device: torch.device):
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def meta_test(
    cfg: Config,
    meta: MetaLearner,
    test_sampler,
    test_models: DynamicsEnsemble,
    bc_policy: torch.nn.Module,
    iteration: int,
    terminated_fn,
    initial_duals: torch.Tensor | None = None,
    task_slice: TaskSlice | None = None,
    num_train_tasks: int | None = None,
    final: bool = True,
    seed: int | None = None,
) -> MetaTestResult:
    """Run the meta-test of the module docstring; returns the per-task returns.

    ``initial_duals``: optional (4,) starting (log temperature, log beta, lam, alpha) of the
    meta-initialised variants (alpha is taken from the variant's config, lam stays 0 where
    the variant has no regularizer); COMBO starts from the config's defaults (scratch).

    ``task_slice`` (torchrun): meta-test only the test tasks ``[start, stop)`` of the
    sampler; ``test_models`` and ``bc_policy`` then hold just those tasks, and the result
    lists just those tasks. ``num_train_tasks`` sets COMBO's budget (default: the config's
    training tasks, else the test tasks' count). COMBO, trained from scratch with a full
    budget, runs only in a ``final`` meta-test (the end of training, ``merpo-agent
    evaluate``), not at the intermediate ones. ``seed`` replaces the meta-test's own seed
    (default ``cfg.seed * 1_000_003 + iteration``; ``merpo-agent evaluate --seed``).
    """
    device = torch.device(cfg.device)
    total = test_sampler.num_tasks
    task_slice = task_slice or TaskSlice(0, total, total)
    num_tasks = task_slice.size
    tasks = tuple(test_sampler.tasks)[task_slice.start : task_slice.stop]
    if seed is None:
        seed = cfg.seed * 1_000_003 + iteration
    variants = ["adapted"]
    if cfg.test.compare_combo and final:
        variants.append("combo")
    if cfg.test.compare_beha_only and cfg.rac.use_meta_regularizer:
        variants.append("beha_only")
    policies = {}
    with _isolated_rng(seed, device):
        generator = torch.Generator(device).manual_seed(seed)
        data = TaskData(
            sampler=test_sampler,
            task_indices=torch.arange(total, device=device),
            models=test_models if cfg.rac.use_model else None,
            terminated_fn=terminated_fn,
            task_slice=None if task_slice.is_whole else task_slice,
        )
        if num_train_tasks is None:
            num_train_tasks = len(cfg.data.train_tasks) or total
        updates: dict[str, int] = {}
        for variant in variants:
            rac = _test_rac_config(cfg, variant)
            learners = TaskLearners(
                rac, test_sampler.obs_dim, test_sampler.act_dim, num_tasks, device=device,
                generator=torch.Generator(device).manual_seed(seed + 1),
                action_log_scale=log_action_scale(test_sampler.action_low,
                                                  test_sampler.action_high),
            )
            if variant == "combo":  # from scratch (random init, the config's initial duals)
                steps = cfg.test.combo_budget(cfg.run.steps, cfg.meta, num_train_tasks)
            else:
                steps = cfg.test.adaptation_steps
                duals = TaskLearners.initial_duals(rac)
                if initial_duals is not None:  # temperature, beta, lam; alpha: the config's
                    duals[:3] = initial_duals[:3].to(duals)
                learners.init_from_meta(meta.policy, meta.q, duals)
            buffer = (
                ModelBuffer(num_tasks, cfg.rollout.capacity, test_sampler.obs_dim,
                            test_sampler.act_dim, device)
                if rac.use_model else None
            )
            regularized = rac.use_meta_regularizer
            # MerPO-Adp: one Eq. 11 step per J updates, as once per meta-iteration in training
            chunk = cfg.meta.inner_steps if rac.adaptive_alpha else max(1, steps)
            done = 0
            while done < steps:
                n = min(chunk, steps - done)
                metrics, _ = rac_updates(
                    learners, data, buffer, n, cfg.rollout,
                    meta.policy if regularized else None,
                    bc_policy if regularized and rac.auto_tune_lambda else None,
                    generator,
                )
                learners.adapt_alpha(metrics["d_beta_dual"], metrics["d_meta"])
                done += n
            updates[variant] = int(learners.critic_optimizer.steps[0].item())
            policies[variant] = _deterministic(learners)
            if variant == "adapted":
                adapted_actor = {k: v.detach().cpu().clone()
                                 for k, v in learners.actor.state_dict().items()}
        policies = {"meta_policy": meta.policy.deterministic, **policies}
        # the seeds are laid out task-major: a slice's tasks keep their seeds
        env_episodes = evaluate_in_env(
            cfg.env, tasks, policies, cfg.eval.episodes,
            seed % (2**31) + task_slice.start * cfg.eval.episodes, device, per_episode=True,
        )
    behavior = task_slice.take(test_sampler.dataset_returns.detach())
    returns = {"behavior": behavior.cpu().numpy().astype(float)}
    returns.update({name: e.mean(axis=1) for name, e in env_episodes.items()})
    lo, hi = task_slice.start, task_slice.stop
    episodes = {"behavior": list(test_sampler.dataset_episode_returns[lo:hi])}
    episodes.update({name: list(e) for name, e in env_episodes.items()})
    ref_min, ref_max = sampler_reference_scores(test_sampler)
    return MetaTestResult(cfg.env, tasks, iteration, returns, updates, episodes,
                          ref_min[lo:hi], ref_max[lo:hi], adapted_actor, seed)


EVALUATION_JSON = "evaluation.json"
EVALUATION_CSV = "evaluation.csv"


def write_evaluation(run_dir, record: dict, rows: list[dict]) -> tuple:
    """``merpo-agent evaluate``'s table in the run directory, each file written atomically:
    ``evaluation.json`` (``record``: what was evaluated and how, the means, spreads and
    normalized scores, and ``rows``) and ``evaluation.csv`` (``rows``, one per task)."""
    import csv
    import io
    import json
    from pathlib import Path

    from merpo_agent.checkpoint import atomic_write_text

    run_dir = Path(run_dir)
    json_path = atomic_write_text(run_dir / EVALUATION_JSON,
                                  json.dumps({**record, "rows": rows}, indent=1) + "\n")
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    text = io.StringIO()
    out = csv.DictWriter(text, fieldnames=fields, lineterminator="\n")
    out.writeheader()
    out.writerows(rows)
    csv_path = atomic_write_text(run_dir / EVALUATION_CSV, text.getvalue())
    return json_path, csv_path


def _deterministic(learners: TaskLearners):
    def act(obs: torch.Tensor) -> torch.Tensor:
        return learners.act(obs, deterministic=True)

    return act


__all__ = [
    "COLUMNS",
    "EVALUATION_CSV",
    "EVALUATION_JSON",
    "MetaTestResult",
    "meta_test",
    "write_evaluation",
]
