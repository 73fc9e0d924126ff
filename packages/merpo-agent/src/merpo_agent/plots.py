"""PNG learning curves of a run directory (matplotlib, Agg backend: no display needed).

``plot_run(run_dir)`` reads ``metrics.jsonl`` and writes into ``run_dir/plots/``:

- ``meta_test_return.png``: meta-test returns on the unseen tasks against the meta-iteration
  (MerPO adapted policy, meta-policy, COMBO and "With beha only" where logged, and the
  behavior policy's dataset return as a flat reference line); for a baseline's run
  directory (FOCAL, contextual BCQ, MBML, Batch PEARL) its return against the update step;
- ``training.png``: the inner-loop losses and dual variables logged during meta-training.

Each file is written to a temporary name and renamed into place.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from merpo_data.atomic import atomic_write  # noqa: E402

from merpo_agent.metrics import read_metrics  # noqa: E402

RETURN_CURVES = (
    ("adapted_return", "MerPO (adapted)"),
    ("meta_policy_return", "meta-policy"),
    ("combo_return", "COMBO"),
    ("beha_only_return", "With beha only"),
)


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
    for key, label in (*RETURN_CURVES, ("baseline_return", baseline_label or "baseline")):
        xs, ys = _series(tests, key)
        if xs:
            ax.plot(xs, ys, marker="o", label=label)
    xs, ys = _series(tests, "behavior_return")
    if xs:
        ax.axhline(ys[-1], color="gray", linestyle="--", label="behavior (dataset)")
    ax.set_xlabel(x_label)
    ax.set_ylabel("mean return on unseen tasks")
    ax.set_title(f"meta-test: {_run_title(run_dir)}")
    if ax.lines:
        ax.legend()
    ax.grid(alpha=0.3)
    path = out / "meta_test_return.png"
    save_figure(fig, path)
    written.append(path)

    train = [r for r in records if r.get("phase") == "train"]
    keys = sorted({k for r in train for k, v in r.items() if isinstance(v, int | float)} - {
        "iteration"
    })
    if keys:
        cols = 3
        rows = (len(keys) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 2.6 * rows), squeeze=False)
        for ax, key in zip(axes.flat, keys, strict=False):
            xs, ys = _series(train, key)
            ax.plot(xs, ys)
            ax.set_title(key, fontsize=9)
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        fig.supxlabel(x_label)
        fig.tight_layout()
        path = out / "training.png"
        save_figure(fig, path)
        written.append(path)
    return written
