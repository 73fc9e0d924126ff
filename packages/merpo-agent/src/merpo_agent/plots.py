"""PNG learning curves of a run directory (matplotlib, Agg backend: no display needed).

``plot_run(run_dir)`` reads ``metrics.jsonl`` and writes into ``run_dir/plots/``:

- ``meta_test_return.png``: meta-test returns on the unseen tasks against the meta-iteration
  (MerPO adapted policy, meta-policy, COMBO and "With beha only" where logged, and the
  behavior policy's dataset return as a flat reference line); for a baseline's run
  directory (FOCAL, contextual BCQ, MBML, Batch PEARL) its return against the update step;
- ``training.png``: the inner-loop losses and dual variables logged during meta-training,
  one panel each, titled in words with the paper's symbol and equation (``PANEL_TITLES``).

Curves that overlap stay distinguishable (each its own line style and marker); the x axes
count iterations and steps, so their ticks are integers. Each file is written to a
temporary name and renamed into place.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from merpo_data.atomic import atomic_write  # noqa: E402

from merpo_agent.metrics import RECORD_FIELDS, read_metrics  # noqa: E402

RETURN_CURVES = (
    ("adapted_return", "MerPO (adapted)"),
    ("meta_policy_return", "meta-policy"),
    ("combo_return", "COMBO"),
    ("beha_only_return", "With beha only"),
)
# (line style, marker) per curve, in the order of the curves drawn
CURVE_STYLES = (("-", "o"), ("--", "s"), ("-.", "^"), (":", "D"), ("-", "v"))
# training.png panel titles: the quantity in words, its symbol and where the paper has it
PANEL_TITLES = {
    "critic_loss": "critic loss (Eq. 1)",
    "q_gap": "conservative Q gap (Eq. 1)",
    "q_data": "Q on dataset actions (Eq. 1)",
    "q_policy": "Q on policy actions (Eq. 9)",
    "beta": "beta, conservatism weight (Eq. 1)",
    "actor_loss": "actor loss (Eq. 9)",
    "entropy": "policy entropy (SAC)",
    "entropy_temperature": "SAC temperature",
    "d_beta": "D_beta, divergence to the data (Eq. 9)",
    "d_beta_prime": "D_beta', divergence to pi_hat_beta (lambda dual)",
    "d_meta": "D_meta, KL to the meta-policy (Eq. 9)",
    "lam": "lambda (Eq. 9)",
    "alpha": "alpha (Eq. 9; Eq. 11 for MerPO-Adp)",
    "meta_policy_loss": "meta-policy loss (Eq. 10)",
    "behavior_nll": "behavior cloning NLL (pi_hat_beta)",
}


def panel_title(key: str) -> str:
    """A metric's panel title (``PANEL_TITLES``, else its name in words)."""
    return PANEL_TITLES.get(key, key.replace("_", " "))


def save_figure(fig: plt.Figure, path: Path) -> None:
    """Write ``fig`` as a PNG at ``path`` (atomically: a temporary name, then renamed)."""
    try:
        atomic_write(
            path, lambda handle: fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
        )
    finally:
        plt.close(fig)


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    for record in records:
        value = record.get(key)
        if isinstance(value, int | float):
            xs.append(record["iteration"])
            ys.append(float(value))
    return xs, ys


def _run_config(run_dir: Path) -> dict:
    config = run_dir / "config.yaml"
    if config.is_file():
        import yaml

        data = yaml.safe_load(config.read_text()) or {}
        return data if isinstance(data, dict) else {}
    return {}


def _run_title(run_dir: Path) -> str:
    data = _run_config(run_dir)
    if data:
        return f"{data.get('env', '?')} ({data.get('algo', '?')}, {data.get('preset', '?')})"
    return run_dir.name


def plot_run(run_dir: str | Path) -> list[Path]:
    """Write the run's PNG plots; returns their paths (the meta-test curve first)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir)
    if not records:
        raise FileNotFoundError(
            f"{run_dir} has no metrics.jsonl records; train first with `merpo-agent train`"
        )
    out = run_dir / "plots"
    written: list[Path] = []

    tests = [r for r in records if r.get("phase") == "meta_test"]
    # a baseline's run directory: one return curve, named by the config's label
    baseline_label = _run_config(run_dir).get("label")
    x_label = "update step" if baseline_label else "meta-iteration"
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    drawn = 0
    for key, label in (*RETURN_CURVES, ("baseline_return", baseline_label or "baseline")):
        xs, ys = _series(tests, key)
        if xs:
            style, marker = CURVE_STYLES[drawn % len(CURVE_STYLES)]
            ax.plot(xs, ys, linestyle=style, marker=marker, markersize=5,
                    markerfacecolor="none" if drawn % 2 else None, label=label)
            drawn += 1
    xs, ys = _series(tests, "behavior_return")
    if xs:
        ax.axhline(ys[-1], color="gray", linestyle="--", label="behavior (dataset)")
    ax.set_xlabel(x_label)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mean return on unseen tasks")
    ax.set_title(f"meta-test: {_run_title(run_dir)}")
    if ax.lines:
        ax.legend()
    ax.grid(alpha=0.3)
    path = out / "meta_test_return.png"
    save_figure(fig, path)
    written.append(path)

    train = [r for r in records if r.get("phase") == "train"]
    keys = sorted({k for r in train for k, v in r.items() if isinstance(v, int | float)}
                  - set(RECORD_FIELDS))
    if keys:
        cols = 3
        rows = (len(keys) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 2.6 * rows), squeeze=False)
        for ax, key in zip(axes.flat, keys, strict=False):
            xs, ys = _series(train, key)
            ax.plot(xs, ys, marker="o", markersize=3)
            ax.set_title(panel_title(key), fontsize=9)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        fig.supxlabel(x_label)
        fig.tight_layout()
        path = out / "training.png"
        save_figure(fig, path)
        written.append(path)
    return written
