"""The report of ``merpo-agent reproduce``: statistics, curves and the paper's claims.

For each reported method (a ``reproduce.Row``) the scores form a (seeds x tasks) matrix of
mean episode returns on the evaluation tasks (the unseen tasks; for single-task RAC, each
learner's own training task). rliable (Agarwal et al. 2021) gives the aggregates and their
95% stratified-bootstrap confidence intervals (tasks are the strata): the mean and the
interquartile mean (IQM), for the returns and for the normalized scores
``100 (R - ref_min) / (ref_max - ref_min)`` with each task dataset's reference scores
(the uniform policy and the expert policy, as ``minari.get_normalized_score`` uses them).

A claim "A beats B" holds when A's interval lies above B's, fails when it lies below, and
ties when they overlap. The paper's claims (§5; Fig. 4-7, Proposition 1):

- C1 (Fig. 4): RAC >= COMBO with a good and with a random meta-policy; COMBO-3 (alpha = 0)
  degrades with the random one.
- C2 (Fig. 5): alpha = 0.4 is the best of {0, 0.4, 0.7, 1}.
- C3 (Fig. 6): MerPO-Adp >= MerPO >= FOCAL, MBML, Batch PEARL, Contextual BCQ.
- C4 (Fig. 7b): no model (CQL) is worse than MerPO.
- C5 (Fig. 7a): Eq. 5 alone (alpha = 0) is worse than MerPO.
- C6 (Fig. 7c/d): "With meta" beats "With beha only" averaged over data qualities, and
  MerPO beats COMBO on expert data.
- C7 (Proposition 1): the adapted policy beats the behavior policy and the meta-policy on
  each unseen task.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
from merpo_envs import get_meta_info

from merpo_agent.checkpoint import atomic_write_text
from merpo_agent.provenance import cpu_model, git_commit
from merpo_agent.scores import normalized_score, reference_scores

REPORT_FILE = "report.md"
BOOTSTRAP_REPS = 2000


def _rliable():
    from rliable import library, metrics

    return library, metrics


def interval_estimates(scores: dict[str, np.ndarray], reps: int = BOOTSTRAP_REPS, seed: int = 0):
    """rliable's mean and IQM with 95% stratified-bootstrap CIs of (runs x tasks) matrices:
    ``{label: {"mean": (point, lo, hi), "iqm": (point, lo, hi)}}``."""
    library, metrics = _rliable()

    def aggregate(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_mean(x), metrics.aggregate_iqm(x)])

    np.random.seed(seed)  # rliable's bootstrap draws from numpy's global RNG
    points, intervals = library.get_interval_estimates(scores, aggregate, reps=reps)
    return {
        label: {
            "mean": (float(points[label][0]), *map(float, intervals[label][:, 0])),
            "iqm": (float(points[label][1]), *map(float, intervals[label][:, 1])),
        }
        for label in scores
    }


def compare(a: tuple[float, float, float], b: tuple[float, float, float]) -> str:
    """'holds' (a's CI above b's), 'fails' (below) or 'ties' (overlap)."""
    if a[1] > b[2]:
        return "holds"
    if a[2] < b[1]:
        return "fails"
    return "ties"


def combine(verdicts: list[str]) -> str:
    if not verdicts:
        return "not run"
    if "fails" in verdicts:
        return "fails"
    return "holds" if all(v == "holds" for v in verdicts) else "ties"


def _row_scores(experiment, results, row) -> tuple[np.ndarray, list[int], str]:
    runs = results[row.run]
    spec = next(r for r in experiment.runs if r.key == row.run)
    tasks = runs[0]["own_tasks" if row.column == "own_task" else "tasks"]
    column = "own_behavior" if (row.column == "behavior" and experiment.single_task) else row.column
    matrix = np.array([run[column] for run in runs], dtype=float)
    return matrix, tasks, spec.quality or ""


def _fmt(triple: tuple[float, float, float], digits: int = 2) -> str:
    return f"{triple[0]:.{digits}f} [{triple[1]:.{digits}f}, {triple[2]:.{digits}f}]"


def write_report(experiment, env_id, quality, sizes, results, out_dir: Path, command, wall_s):
    """Write ``out_dir/report.md``, ``stats.json`` and ``curves.png``; returns the report."""
    matrices, returns, normalized = {}, {}, {}
    for row in experiment.rows:
        matrix, tasks, row_quality = _row_scores(experiment, results, row)
        low, high = reference_scores(env_id, tasks, row_quality or quality, sizes.data_preset)
        returns[row.label] = matrix
        normalized[row.label] = normalized_score(matrix, low, high)
        matrices[row.label] = tasks
    stats = interval_estimates(returns)
    commit = git_commit()
    commit = commit[:12] if commit else "unknown (not a git checkout)"
    norm_stats = interval_estimates(normalized)
    seeds = len(next(iter(results.values())))
    evaluated = matrices[experiment.rows[0].label]
    unseen = not set(evaluated) & set(get_meta_info(env_id).train_tasks)
    untuned = untuned_rows(experiment)
    lines = [
        f"# {experiment.title}",
        "",
        f"- command: `{command}`",
        f"- commit: {commit}; machine: {_machine()}; python {platform.python_version()}",
        f"- wall time: {wall_s / 60:.1f} min for the runs of this invocation (finished runs "
        "are reused and cost nothing)",
        f"- env {env_id}, data quality {quality} (unless a row says otherwise), {seeds} seeds "
        "per method (seed = network init + sampling; the datasets are fixed)",
        f"- budget: {sizes.budget} gradient steps of actor and critic for every method "
        f"(MerPO: {sizes.iterations} meta-iterations x {sizes.inner_steps} inner steps; "
        f"baselines: {sizes.budget} steps); preset `{sizes.preset}` for every method",
        (f"- settings: tuned on validation tasks by `merpo-agent tune` ({experiment.settings}"
         "/<algo>/best.yaml; MerPO's ablations use MerPO's), never on these tasks"
         + (f"; the presets as written for {', '.join(untuned)} (no settings file for this "
            "env)" if untuned else "")
         if experiment.settings else "- settings: the presets as written (nothing tuned)"),
        f"- evaluation tasks: {evaluated}"
        + (" (each learner's own training task: single-task RAC)" if experiment.single_task
           else " (unseen test tasks)" if unseen
           else " (also training tasks: this env has no unseen task, as in the paper's Fig. 6)")
        + f"; {sizes.episodes} real-env episodes per task and seed, deterministic actions",
        "- statistics: rliable, 95% stratified-bootstrap CIs over (seeds x tasks), "
        f"{BOOTSTRAP_REPS} resamples; normalized = 100 (R - ref_min) / (ref_max - ref_min) "
        "with each task dataset's reference scores",
        "",
        "| method | mean return [95% CI] | IQM return [95% CI] | normalized mean [95% CI] "
        "| normalized IQM [95% CI] |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in experiment.rows:
        s, n = stats[row.label], norm_stats[row.label]
        lines.append(f"| {row.label} | {_fmt(s['mean'])} | {_fmt(s['iqm'])} | "
                     f"{_fmt(n['mean'], 1)} | {_fmt(n['iqm'], 1)} |")
    lines += ["", "## Per task (mean return over seeds)", ""]
    tasks = matrices[experiment.rows[0].label]
    lines.append("| method | " + " | ".join(str(t) for t in tasks) + " |")
    lines.append("| --- |" + " --- |" * len(tasks))
    for row in experiment.rows:
        means = returns[row.label].mean(axis=0)
        lines.append(f"| {row.label} | " + " | ".join(f"{m:.2f}" for m in means) + " |")
    lines += ["", "## The paper's claims", ""]
    for claim in experiment.claims:
        lines.append(f"- {claim}: " + CLAIMS[claim](stats, returns))
    lines += ["", "## Budget: flat or still rising", "",
              f"A run's curve is flat when its last quarter gained or lost less than "
              f"{PLATEAU_POINTS:g} normalized points (100 x the mean return gained from 75% to "
              "100% of the budget / the tasks' mean reference range); a method still rising "
              "at this budget is reported as such, and so is one falling (its final table "
              "is below its own earlier evaluations).", "",
              "| run | return at 75% | return at 100% | gain (normalized points) | curve |",
              "| --- | --- | --- | --- | --- |"]
    labels = {row.run: row.label for row in reversed(experiment.rows)}
    for spec in experiment.runs:
        row = next((r for r in experiment.rows if r.run == spec.key), None)
        if row is None:
            continue
        _, tasks, row_quality = _row_scores(experiment, results, row)
        low, high = reference_scores(env_id, tasks, row_quality or quality, sizes.data_preset)
        verdict = plateau([run["curve"] for run in results[spec.key]],
                          float(np.mean(high - low)))
        if verdict is not None:
            at75, at100, gain, _ = verdict
            lines.append(f"| {labels[spec.key]} | {at75:.2f} | {at100:.2f} | {gain:+.1f} | "
                         f"{curve_label(gain)} |")
    curve_path = _plot_curves(experiment, results, out_dir / "curves.png")
    lines += ["", "## Learning curves", "",
              f"![mean meta-test return with 95% CI]({curve_path.name})", ""]
    report = out_dir / REPORT_FILE
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "stats.json", json.dumps(
        {"returns": stats, "normalized": norm_stats}, indent=1))
    atomic_write_text(report, "\n".join(lines))
    return report


def untuned_rows(experiment) -> list[str]:
    """The rows of an experiment on ``--settings`` whose method had no settings file (its
    presets as written), not MerPO's first-read row, which is untuned on purpose."""
    tuned_algos = {run.algo for run in experiment.runs if run.config is not None}
    untuned_runs = {run.key for run in experiment.runs if run.algo not in tuned_algos}
    return [row.label for row in experiment.rows if row.run in untuned_runs]


def _machine() -> str:
    """CPU model, core count and the device the runs used (they train on the CPU)."""
    import os

    return f"{cpu_model()}, {os.cpu_count() or 1} CPU cores, runs on the CPU (no GPU)"


PLATEAU_POINTS = 2.0  # normalized points a flat curve's last quarter may still gain


def plateau(curves: list[list[list[float]]], reference_range: float,
            points: float = PLATEAU_POINTS) -> tuple[float, float, float, bool] | None:
    """Whether a run's learning curve has flattened: the seeds' mean curve at 75% and at
    100% of its last evaluated step, the gain between them in normalized points
    (``100 gain / reference_range``) and whether that gain is below ``points``. None for
    runs without a curve of at least two points."""
    curves = [c for c in curves if len(c) >= 2]
    if not curves:
        return None
    length = min(len(c) for c in curves)
    steps = np.array([p[0] for p in curves[0][:length]], dtype=float)
    mean = np.array([[p[1] for p in c[:length]] for c in curves], dtype=float).mean(axis=0)
    at = int(np.searchsorted(steps, 0.75 * steps[-1]))
    at = min(at, length - 2)  # at least one evaluation before the last
    gain = 100.0 * (mean[-1] - mean[at]) / reference_range
    return float(mean[at]), float(mean[-1]), float(gain), bool(gain < points)


def curve_label(gain: float, points: float = PLATEAU_POINTS) -> str:
    """A curve's last-quarter verdict in a report: still rising (gained ``points`` or
    more: the budget stopped it early), falling (lost as much: the run peaked earlier and
    its final table is below its best) or flat."""
    if gain >= points:
        return "**still rising**"
    if gain <= -points:
        return "**falling**"
    return "flat"


def _plot_curves(experiment, results, path: Path) -> Path:
    """Mean return against gradient steps per run with a 95% bootstrap band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from merpo_agent.plots import save_figure

    fig, ax = plt.subplots(figsize=(7, 4.2))
    styles = ["-", "--", "-.", ":"]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    labels = {row.run: row.label for row in reversed(experiment.rows)}
    for i, spec in enumerate(experiment.runs):
        curves = [run["curve"] for run in results[spec.key] if run["curve"]]
        if not curves:
            continue
        length = min(len(c) for c in curves)
        xs = np.array([p[0] for p in curves[0][:length]])
        ys = np.array([[p[1] for p in c[:length]] for c in curves])  # (seeds, points)
        band = interval_estimates({f"{x}": ys[:, [j]] for j, x in enumerate(xs)}, reps=500)
        mean = np.array([band[f"{x}"]["mean"][0] for x in xs])
        lo = np.array([band[f"{x}"]["mean"][1] for x in xs])
        hi = np.array([band[f"{x}"]["mean"][2] for x in xs])
        line, = ax.plot(xs, mean, styles[i % 4], marker=markers[i % 8], markersize=4,
                        label=labels.get(spec.key, spec.key))
        ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2)
    ax.set_xlabel("gradient steps of actor and critic")
    own = any(row.column == "own_task" for row in experiment.rows)
    ax.set_ylabel("mean return, each learner on its own training task" if own
                  else "mean return on the unseen tasks")
    ax.set_title(experiment.title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------- claims
def _vs(stats, a: str, b: str) -> tuple[str, str]:
    if a not in stats or b not in stats:
        return "not run", f"{a} vs {b}: not run"
    verdict = compare(stats[a]["mean"], stats[b]["mean"])
    return verdict, f"{a} {_fmt(stats[a]['mean'])} vs {b} {_fmt(stats[b]['mean'])}: {verdict}"


def _claim(title: str, pairs: list[tuple[str, str]], stats) -> str:
    parts = [_vs(stats, a, b) for a, b in pairs]
    verdict = combine([v for v, _ in parts if v != "not run"])
    return f"**{verdict}**. {title} ({'; '.join(text for _, text in parts)})"


def _c1(stats, _):
    return _claim("RAC >= COMBO with a good and a random meta-policy; COMBO-3 degrades with "
                  "the random one", [
                      ("RAC, good meta-policy", "COMBO"), ("RAC, random meta-policy", "COMBO"),
                      ("COMBO-3, good meta-policy", "COMBO-3, random meta-policy")], stats)


def _c2(stats, _):
    return _claim("alpha = 0.4 is the best of {0, 0.4, 0.7, 1}",
                  [("alpha = 0.4", f"alpha = {a}") for a in ("0", "0.7", "1")], stats)


def _c3(stats, _):
    from merpo_agent.baselines.run import BASELINES

    rivals = [spec.label for spec in BASELINES.values() if spec.label in stats]
    return _claim("MerPO-Adp >= MerPO >= FOCAL, MBML, Batch PEARL, Contextual BCQ",
                  [("MerPO-Adp", "MerPO"), *[("MerPO", r) for r in rivals]], stats)


def _c4(stats, _):
    return _claim("no model (CQL) is worse than MerPO", [("MerPO", "No model (CQL)")], stats)


def _c5(stats, _):
    return _claim("Eq. 5 alone (alpha = 0) is worse than MerPO",
                  [("MerPO", "Eq. 5 alone (alpha = 0)")], stats)


def _c6(stats, returns):
    pooled = {}
    for label, parts in (("With meta (medium + expert)", ("MerPO", "MerPO (expert)")),
                         ("With beha only (medium + expert)",
                          ("With beha only (medium)", "With beha only (expert)"))):
        if all(p in returns for p in parts):
            pooled[label] = np.concatenate([returns[p] for p in parts], axis=1)
    both = dict(stats)
    if len(pooled) == 2:
        both.update(interval_estimates(pooled))
    return _claim("With meta beats With beha only averaged over data qualities, and MerPO "
                  "beats COMBO on expert data", [
                      ("With meta (medium + expert)", "With beha only (medium + expert)"),
                      ("MerPO (expert)", "COMBO (expert)")], both)


def _c7(stats, returns):
    if "MerPO" not in returns:
        return "**not run**"
    adapted = returns["MerPO"]
    verdicts, wins = [], 0
    for j in range(adapted.shape[1]):
        task = {name: returns[name][:, [j]] for name in ("MerPO", "behavior",
                                                          "meta-policy (MerPO)")}
        est = interval_estimates(task, reps=500)
        v = combine([compare(est["MerPO"]["mean"], est[b]["mean"])
                     for b in ("behavior", "meta-policy (MerPO)")])
        verdicts.append(v)
        wins += v == "holds"
    verdict = combine(verdicts)
    return (f"**{verdict}**. the adapted policy beats both the behavior policy and the "
            f"meta-policy (non-overlapping CIs over seeds) on {wins} of {len(verdicts)} "
            f"evaluation tasks; per task: {', '.join(verdicts)}")


CLAIMS = {"C1": _c1, "C2": _c2, "C3": _c3, "C4": _c4, "C5": _c5, "C6": _c6, "C7": _c7}

__all__ = ["CLAIMS", "compare", "interval_estimates", "untuned_rows", "write_report"]
