"""``merpo-data plot ENV``: a PNG of the mean episode return per task and quality."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from merpo_envs import get_meta_info

from merpo_data.atomic import atomic_write
from merpo_data.datasets import is_local
from merpo_data.ids import QUALITIES, dataset_id
from merpo_data.integrity import open_dataset, read_episodes


def dataset_returns(env_id: str, preset: str = "default") -> dict[str, dict[int, float]]:
    """quality -> task -> mean episode return, for the env's datasets present locally
    (a damaged one is a one-line ``DamagedDatasetError``)."""
    info = get_meta_info(env_id)
    out: dict[str, dict[int, float]] = {q: {} for q in QUALITIES}
    for q in QUALITIES:
        for t in info.tasks:
            ds_id = dataset_id(env_id, t, q, preset)
            if is_local(ds_id):
                episodes = read_episodes(open_dataset(ds_id), ds_id)
                out[q][t] = float(np.mean([ep.rewards.sum() for ep in episodes]))
    return out


def plot_returns(
    env_id: str, output: str | os.PathLike | None = None, preset: str = "default"
) -> Path:
    """Write the plot (atomically) and return its path; error if the env has no datasets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    info = get_meta_info(env_id)
    returns = dataset_returns(env_id, preset)
    if not any(returns.values()):
        flag = "" if preset == "default" else f" --preset {preset}"
        raise ValueError(
            f"no {preset}-preset datasets of {env_id} found locally; run "
            f"`merpo-data generate {env_id}{flag}` first"
        )
    output = Path(output or f"{info.slug}-returns.png")
    fig = returns_figure(env_id, returns)
    try:
        atomic_write(output, lambda handle: fig.savefig(handle, format="png", dpi=120))
    finally:
        plt.close(fig)
    return output


def returns_figure(env_id: str, returns: dict[str, dict[int, float]]):
    """The figure of :func:`plot_returns` (``returns``: quality -> task -> mean return)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    info = get_meta_info(env_id)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * info.num_tasks + 2), 4))
    markers = {"random": "x", "medium": "o", "expert": "^", "mixed": "s"}
    for q, per_task in returns.items():
        if per_task:
            tasks = sorted(per_task)
            ax.plot(tasks, [per_task[t] for t in tasks], markers[q], label=q, linestyle="none")
    if info.test_tasks:
        ax.axvspan(
            min(info.test_tasks) - 0.5,
            max(info.test_tasks) + 0.5,
            color="0.9",
            zorder=0,
            label="meta-test tasks",
        )
    ax.set_xlabel("task")
    # tasks are integers: ticks on every task of a short list, else integer steps
    if info.num_tasks <= 20:
        ax.set_xticks(list(info.tasks))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("mean episode return")
    # two lines: the longest id and the caption do not fit the narrowest figure on one
    ax.set_title(f"{env_id}\ndataset return per task and quality", fontsize="medium")
    ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    return fig
