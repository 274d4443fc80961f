"""The batch-size ablation from metrics.jsonl alone: final test error vs batch size per norm.

  python -m scripts.plot_ablation --results_dir=results/pi_mnist/batch_sizes \
      --out=results/pi_mnist_batch_sizes.png

Every run of configs/pi_mnist_sweeps.py:batch_sizes sees the same number of examples (the same
number of epochs), so the x axis changes only how those examples are cut into batches. Each point
is the mean over the finished seeds, the bar their min-max spread; unfinished runs are left out,
since their final error is not comparable.
"""

from __future__ import annotations


import matplotlib

matplotlib.use("Agg")  # files only; no display here or in CI
import matplotlib.pyplot as plt
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS  # flags are defined under __main__, so these modules import cleanly

from lnrepro import metrics
from scripts.plot_curves import save_figure, COLORS, LABELS

NORM_ORDER = ("none", "batch", "layer", "weight")


def final_errors(records: list[metrics.RunRecord], key: str = "test_error"
                 ) -> dict[str, dict[int, list[float]]]:
    """norm -> batch size -> the final `key` of every finished run (one per seed)."""
    errors: dict[str, dict[int, list[float]]] = {}
    for record in records:
        if not record.finished:
            continue
        norm, batch_size = record.config["norm"], record.config["batch_size"]
        errors.setdefault(norm, {}).setdefault(batch_size, []).append(record.rows[-1][key])
    return errors


def plot(records: list[metrics.RunRecord], out: str) -> str:
    errors = final_errors(records)
    if not errors:
        raise ValueError("no finished runs in these records; run the batch_sizes sweep first.")
    epochs = sorted({r.config["num_epochs"] for r in records if r.finished})
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for norm in [n for n in NORM_ORDER if n in errors]:
        sizes = sorted(errors[norm])
        values = [100 * np.asarray(errors[norm][bs]) for bs in sizes]
        mean = np.array([v.mean() for v in values])
        spread = np.array([[m - v.min() for m, v in zip(mean, values)],
                           [v.max() - m for m, v in zip(mean, values)]])
        seeds = sorted({len(v) for v in values})
        seed_text = "-".join(str(s) for s in (seeds[0], seeds[-1]) if s) if len(seeds) > 1 \
            else str(seeds[0])
        ax.errorbar(sizes, mean, yerr=spread, color=COLORS[norm], marker="o", capsize=3,
                    label=f"{LABELS[norm]} ({seed_text} seeds)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("final test error (%)")
    ax.set_title(f"pi-MNIST, equal examples seen ({', '.join(map(str, epochs))} epochs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, records, out)


def table(records: list[metrics.RunRecord]) -> str:
    """Markdown: one row per norm, one column per batch size, mean final test error (%) ± the
    sample standard deviation over finished seeds, and a caption with the seed and epoch counts
    (each cell's own count in brackets when the cells differ)."""
    errors = final_errors(records)
    sizes = sorted({bs for by_size in errors.values() for bs in by_size})
    counts = {len(v) for by_size in errors.values() for v in by_size.values()}
    lines = ["| norm | " + " | ".join(f"bs {bs}" for bs in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for norm in [n for n in NORM_ORDER if n in errors]:
        cells = []
        for bs in sizes:
            values = 100 * np.asarray(errors[norm].get(bs, []), dtype=float)
            if not len(values):
                cells.append("-")
                continue
            cell = f"{values.mean():.2f}"
            if len(values) > 1:
                cell += f" ± {values.std(ddof=1):.2f}"
            if len(counts) > 1:
                cell += f" ({len(values)})"
            cells.append(cell)
        lines.append(f"| {norm} | " + " | ".join(cells) + " |")
    epochs = sorted({r.config["num_epochs"] for r in records if r.finished})
    seeds = (f"{counts.pop()} finished seed(s) per cell" if len(counts) == 1 else
             "the finished seeds (their number in brackets)")
    lines += ["", f"Final test error (%) after {', '.join(map(str, epochs))} epochs: mean "
                  f"(± sample standard deviation) over {seeds}; the figure's bars are the "
                  f"min-max range."]
    return "\n".join(lines)


def main(argv):
    del argv
    records = metrics.load_runs(FLAGS.results_dir)
    print(plot(records, FLAGS.out))
    print(table(records))


if __name__ == "__main__":
    flags.DEFINE_string("results_dir", "results/pi_mnist/batch_sizes", "Run records.")
    flags.DEFINE_string("out", "results/pi_mnist_batch_sizes.png", "PNG to write.")
    app.run(main)
