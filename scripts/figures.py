"""Every figure, from run records alone (config.json + metrics.jsonl).

Curves are the mean over seeds with the min-max range over seeds shaded, and every legend says
so. A footer under each figure says which code, backend and precision made its records.
scripts/reports.py says which records each figure is drawn from.
"""

from __future__ import annotations

import os
from typing import Mapping

import matplotlib

matplotlib.use("Agg")  # files only; no display here or in CI
import matplotlib.patches as mpatches
import matplotlib.ticker
import matplotlib.pyplot as plt
import numpy as np

from lnrepro import metrics
from scripts import tables

NORMS = {  # norm: (label, color)
    "none": ("Baseline", "tab:gray"),
    "batch": ("BatchNorm", "tab:blue"),
    "layer": ("LayerNorm", "tab:red"),
    "weight": ("WeightNorm", "tab:green"),
}
READER_COLORS = {("lstm", False): "tab:gray", ("bnlstm", False): "tab:blue",
                 ("bnlstm", True): "tab:green", ("lnlstm", False): "tab:red"}
BAND = mpatches.Patch(color="0.5", alpha=0.2, label="shaded: min-max over seeds")
X_LABELS = {"epoch": "epoch", "step": "training updates", "minutes": "wall-clock minutes"}


def series(run: metrics.RunRecord, key: str, x: str) -> tuple[list[float], list[float]]:
    """(x, key) over the rows that have `key`; x = 'minutes' is the run's own training and
    evaluation time so far (the sum of its rounds' seconds, pauses excluded)."""
    if x != "minutes":
        return run.series(key, x)
    elapsed = np.cumsum([row.get("round_seconds", 0.0) for row in run.rows]) / 60
    pairs = [(t, row[key]) for t, row in zip(elapsed, run.rows) if row.get(key) is not None]
    return [t for t, _ in pairs], [v for _, v in pairs]


def mean_and_spread(runs: list[metrics.RunRecord], key: str, x: str):
    """x, mean, min, max over the seeds, on the rounds every seed reached (x: the first seed's
    x, or for wall-clock the mean over seeds)."""
    curves = [series(run, key, x) for run in runs]
    length = min(len(xs) for xs, _ in curves)
    xs = np.array([c[0][:length] for c in curves], dtype=float).mean(0)
    values = np.array([c[1][:length] for c in curves], dtype=float)
    return xs, values.mean(0), values.min(0), values.max(0)


def draw_group(ax, runs, key: str, x: str, label: str, color: str, scale: float = 1.0) -> None:
    """One group's mean curve, and its min-max band when it has several seeds; only a legend
    entry when it has none to draw (every seed diverged)."""
    if not runs:
        ax.plot([], [], color=color, label=label)
        return
    xs, mean, low, high = mean_and_spread(runs, key, x)
    ax.plot(xs, mean * scale, color=color, label=label)
    if len(runs) > 1:
        ax.fill_between(xs, low * scale, high * scale, color=color, alpha=0.2)


def seeds_label(label: str, runs: list, left_out: list = ()) -> str:
    text = f"{label} ({len(runs)} seed{'s' * (len(runs) != 1)}"
    return text + (f"; {tables.left_out_note(left_out)} not shown)" if left_out else ")")


def finish_axes(ax, x: str, ylabel: str, title: str = "", legend: bool = True,
                legend_below: bool = False) -> None:
    """Labels, grid and legend. `legend_below` puts the legend under the axes, for panels whose
    corners hold the labels of reference lines (draw_reference_lines)."""
    ax.set_xlabel(X_LABELS.get(x, x))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    if legend:
        handles, _ = ax.get_legend_handles_labels()
        placement = (dict(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3)
                     if legend_below else {})
        ax.legend(handles=handles + [BAND], fontsize=7, **placement)


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


def fig6(records: list[metrics.RunRecord], out: str, x: str = "epoch") -> str:
    """Fig. 6 analogue as a 2x2 grid: rows training NLL (log) and test error, columns batch
    size 128 and 4, each row on one y axis so the batch sizes compare by eye."""
    groups = metrics.group_runs(records, ("norm", "batch_size"))
    batch_sizes = [bs for bs in (128, 4) if any(k[1] == bs for k in groups)]
    if not batch_sizes:
        raise ValueError("no runs at batch size 128 or 4 in these records.")
    fig, axes = plt.subplots(2, len(batch_sizes), figsize=(5.5 * len(batch_sizes), 7.5),
                             sharey="row", squeeze=False)
    for column, bs in enumerate(batch_sizes):
        for row, (key, ylabel, scale) in enumerate((("train_nll", "training NLL", 1.0),
                                                    ("test_error", "test error (%)", 100.0))):
            ax = axes[row, column]
            for norm, (label, color) in NORMS.items():
                if groups.get((norm, bs)):
                    runs, left_out = metrics.prefer_finished(groups[(norm, bs)])
                    # The rate is in the label: each norm runs at its own, per batch size.
                    rates = {r.config.get("learning_rate") for r in groups[(norm, bs)]}
                    rate = f", lr {rates.pop():g}" if rates != {None} and len(rates) == 1 else ""
                    draw_group(ax, runs, key, x, seeds_label(label + rate, runs, left_out),
                               color, scale)
            if key == "train_nll":
                ax.set_yscale("log")
            # One legend per column: the seed counts and rates differ between batch sizes.
            finish_axes(ax, x, ylabel, f"batch size {bs}" if row == 0 else "", legend=row == 0)
    fig.suptitle("Permutation-invariant MNIST, 784-1000-1000-10 (cf. Ba et al. 2016, Fig. 6)"
                 + (", against wall-clock time" if x == "minutes" else ""))
    return save_figure(fig, records, out)


def batch_sizes(records: list[metrics.RunRecord], out: str, over_last: int = 1) -> str:
    """Final test error (or its mean over the last `over_last` epochs: tables.final_values)
    against batch size per norm (log-log: BN's error at batch 2 is an order of magnitude above
    the rest), mean over finished seeds with min-max bars; the legend counts the seeds that
    diverged."""
    if not any(r.done for r in records):
        raise ValueError("no finished or diverged runs in these records; run the batch_sizes "
                         "sweep first.")
    errors = tables.final_values(records, over_last=over_last)
    by_cell = tables.diverged_counts(records)
    diverged = {norm: sum(n for (cell_norm, _), n in by_cell.items() if cell_norm == norm)
                for norm in NORMS}
    epochs = sorted({r.config["num_epochs"] for r in records if r.done})
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for norm in [n for n in NORMS if n in errors or diverged[n]]:
        sizes = sorted(errors.get(norm, {}))
        values = [100 * np.asarray(errors[norm][bs]) for bs in sizes]
        mean = np.array([v.mean() for v in values])
        spread = np.array([mean - [v.min() for v in values], [v.max() for v in values] - mean])
        seeds = sorted({len(v) for v in values}) or [0]
        label, color = NORMS[norm]
        counts = "-".join(map(str, sorted({seeds[0], seeds[-1]})))
        note = f"; +{diverged[norm]} diverged" if diverged[norm] else ""
        ax.errorbar(sizes, mean, yerr=spread.reshape(2, -1), color=color, marker="o", capsize=3,
                    label=f"{label} ({counts} seed{'s' * (counts != '1')}{note})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.set_xlabel("batch size")
    ax.set_ylabel("final test error (%, log)" if over_last == 1 else
                  f"test error, mean of the last {over_last} epochs (%, log)")
    ax.set_title(f"pi-MNIST, equal examples seen ({', '.join(map(str, epochs))} epochs)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, title="bars: min-max over seeds", title_fontsize=7)
    return save_figure(fig, records, out)


def learning_rates(records: list[metrics.RunRecord], out: str) -> str:
    """The learning-rate search as curves: final validation error against the rate per norm, one
    panel per batch size, each spanning the rates searched at any batch size. Each seed is a
    dot, the line joins the means of the rates at which no seed diverged, the chosen rate
    (tables.mnist_learning_rates) is ringed, and a rate at which a seed diverged is an x along
    the top."""
    done = [r for r in records if r.done]
    if not done:
        raise ValueError("no finished or diverged runs in these records; run the lr_search_full "
                         "sweep first.")
    _, chosen = tables.mnist_learning_rates(done)
    groups = metrics.group_runs(done, ("norm", "batch_size", "learning_rate"))
    sizes = sorted({bs for _, bs, _ in groups}, reverse=True)
    # Every panel spans the rates searched at any batch size: a search under way shows its gaps.
    grid = sorted({lr for _, _, lr in groups})
    fig, axes = plt.subplots(1, len(sizes), figsize=(5.5 * len(sizes), 4.5), squeeze=False,
                             sharey=True)
    plain = matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:g}")
    for ax, bs in zip(axes[0], sizes):
        for norm in [n for n in NORMS if any(k[:2] == (n, bs) for k in groups)]:
            label, color = NORMS[norm]
            rates = sorted(lr for n, b, lr in groups if (n, b) == (norm, bs))
            means, seeds = [], set()
            for lr in rates:
                runs = groups[(norm, bs, lr)]
                seeds.add(len(runs))
                errors = [100 * r.rows[-1]["valid_error"] for r in runs if r.finished]
                ax.plot([lr] * len(errors), errors, ".", color=color, alpha=0.5)
                if any(r.diverged for r in runs):  # marked, and off the line of means
                    ax.plot([lr], [0.97], "x", color=color, transform=ax.get_xaxis_transform())
                else:
                    means.append((lr, float(np.mean(errors))))
            counts = "-".join(map(str, sorted({min(seeds), max(seeds)})))
            xs, ys = zip(*means) if means else ((), ())  # () when every rate diverged
            ax.plot(xs, ys, "-", marker="_", markersize=10, color=color,
                    label=f"{label} ({counts} seed{'s' * (counts != '1')} per rate)")
            if (norm, bs) in chosen:
                ax.plot([chosen[(norm, bs)]], [dict(means)[chosen[(norm, bs)]]], "o",
                        markersize=11, markerfacecolor="none", color=color)
        ax.set_xscale("log")
        ax.set_xlim(grid[0] / 1.5, grid[-1] * 1.5)
        ax.set_xticks(grid, [f"{lr:g}" for lr in grid], rotation=45, fontsize=7)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.set_xlabel("learning rate (Adam)")
        ax.set_ylabel("final validation error (%, log)")
        epochs = sorted({r.num_rounds for (_, b, _), runs in groups.items() if b == bs
                         for r in runs})
        ax.set_title(f"batch size {bs}, {', '.join(map(str, epochs))} epochs")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, title="dots: seeds; line: mean; ringed: chosen; x: diverged",
                  title_fontsize=7)
    fig.suptitle("Permutation-invariant MNIST: learning-rate search, chosen on validation error")
    return save_figure(fig, records, out)


def draw_reference_lines(ax, lines: Mapping[str, float]) -> None:
    """Horizontal lines for chance and the corpus's shallow baselines (errors in [0, 1])."""
    for i, (label, error) in enumerate(lines.items()):
        ax.axhline(100 * error, color="0.3", linestyle=(0, (4, 2 + 2 * i)), linewidth=0.8)
        ax.annotate(f"{label} {100 * error:.1f}%", (1.0, 100 * error),
                    xycoords=("axes fraction", "data"), xytext=(-4, 2),
                    textcoords="offset points", ha="right", va="bottom", fontsize=6,
                    color="0.3")


def reader(records: list[metrics.RunRecord], out: str, reference_lines: Mapping[str, float],
           xs: tuple[str, ...] = ("step",), title: str = "") -> str:
    """Validation error of the four reader variants against each x in `xs` (one panel each),
    with chance and the corpus's shallow baselines drawn in."""
    groups = metrics.group_runs(records, ("cell", "bn_everywhere"))
    fig, axes = plt.subplots(1, len(xs), figsize=(6.5 * len(xs), 4.5), squeeze=False,
                             sharey=True)
    for ax, x in zip(axes[0], xs):
        for key, label in tables.READER_LABELS.items():
            color = READER_COLORS[key]
            if groups.get(key):
                runs, left_out = metrics.prefer_finished(groups[key])
                draw_group(ax, runs, "valid_error", x, seeds_label(label, runs, left_out),
                           color, 100.0)
        draw_reference_lines(ax, reference_lines)
        finish_axes(ax, x, "validation error (%)", legend=ax is axes[0, 0], legend_below=True)
    fig.suptitle(title or "Attentive reader, synthetic cloze corpus (cf. Ba et al. 2016, Fig. 2)")
    return save_figure(fig, records, out)


def gain(records: list[metrics.RunRecord], out: str, reference_lines: Mapping[str, float]
         ) -> str:
    """LN-LSTM validation error by LN gain initialization (sec. 6.2)."""
    groups = metrics.group_runs(tables.gain_runs(records), ("ln_gain_init",))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (value,), color in zip(sorted(groups, reverse=True), ("tab:red", "tab:orange", "tab:pink")):
        runs, left_out = metrics.prefer_finished(groups[(value,)])
        draw_group(ax, runs, "valid_error", "step",
                   seeds_label(f"LN-LSTM, gain init {value:g}", runs, left_out), color, 100.0)
    draw_reference_lines(ax, reference_lines)
    finish_axes(ax, "step", "validation error (%)",
                "Attentive reader, synthetic cloze corpus: LN gain initialization",
                legend_below=True)
    return save_figure(fig, records, out)
