"""Fig. 6 analogue from metrics.jsonl alone: training NLL (log axis) and test error vs epoch,
batch size 128 and 4 side by side, mean over seeds with the min-max spread shaded (finished
runs only, when a group has any).

  python -m scripts.plot_curves --results_dir=results/pi_mnist/fig6 --out=results/pi_mnist_fig6.png
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # files only; no display here or in CI
import matplotlib.pyplot as plt
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS  # flags are defined under __main__, so these modules import cleanly

from lnrepro import metrics

COLORS = {"none": "tab:gray", "batch": "tab:blue", "layer": "tab:red", "weight": "tab:green"}
LABELS = {"none": "Baseline", "batch": "BatchNorm", "layer": "LayerNorm", "weight": "WeightNorm"}


def mean_and_spread(runs: list[metrics.RunRecord], key: str, x: str):
    """x, mean, min, max over the seeds, on the x values every seed reached."""
    series = [run.series(key, x) for run in runs]
    length = min(len(xs) for xs, _ in series)
    values = np.array([ys[:length] for _, ys in series], dtype=float)
    return (np.array(series[0][0][:length]), values.mean(0), values.min(0), values.max(0))


def plot_panel(ax, groups, batch_size: int, key: str, x: str, log_y: bool, ylabel: str):
    for norm in ("none", "batch", "layer", "weight"):
        if not groups.get((norm, batch_size)):
            continue
        runs, left_out = metrics.prefer_finished(groups[(norm, batch_size)])
        xs, mean, low, high = mean_and_spread(runs, key, x)
        scale = 100.0 if key.endswith("error") else 1.0
        label = f"{LABELS[norm]} ({len(runs)} seed{'s' * (len(runs) > 1)}"
        label += f"; {len(left_out)} unfinished not shown)" if left_out else ")"
        ax.plot(xs, mean * scale, color=COLORS[norm], label=label)
        if len(runs) > 1:
            ax.fill_between(xs, low * scale, high * scale, color=COLORS[norm], alpha=0.2)
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(ylabel)
    ax.set_title(f"batch size {batch_size}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def save_figure(fig, records: list[metrics.RunRecord], out: str) -> str:
    """Writes `fig` to `out` with a footer saying what made its records (commit, backend, matmul
    precision), so figures from records of different code can be told apart."""
    fig.text(0.01, 0.005, metrics.provenance_note(records), fontsize=6, color="0.4",
             va="bottom", wrap=True)
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_fig6(records: list[metrics.RunRecord], out: str, x: str = "epoch") -> str:
    groups = metrics.group_runs(records, ("norm", "batch_size"))
    batch_sizes = [bs for bs in (128, 4) if any(k[1] == bs for k in groups)]
    if not batch_sizes:
        raise ValueError("no runs at batch size 128 or 4 in these records.")
    fig, axes = plt.subplots(1, 2 * len(batch_sizes), figsize=(5 * 2 * len(batch_sizes), 4))
    axes = np.atleast_1d(axes)
    for i, bs in enumerate(batch_sizes):
        plot_panel(axes[2 * i], groups, bs, "train_nll", x, True, "training NLL")
        plot_panel(axes[2 * i + 1], groups, bs, "test_error", x, False, "test error (%)")
    fig.suptitle("Permutation-invariant MNIST, 784-1000-1000-10 (cf. Ba et al. 2016, Fig. 6)")
    return save_figure(fig, records, out)


def main(argv):
    del argv
    print(plot_fig6(metrics.load_runs(FLAGS.results_dir), FLAGS.out))


if __name__ == "__main__":
    flags.DEFINE_string("results_dir", "results/pi_mnist/fig6", "Run records.")
    flags.DEFINE_string("out", "results/pi_mnist_fig6.png", "PNG to write.")
    app.run(main)
