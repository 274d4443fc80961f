"""The README's pi-MNIST results table, from metrics.jsonl alone.

  python -m scripts.results_table --results_dir=results/pi_mnist/fig6

For each norm and batch size (finished runs only, when the group has any; see
`metrics.prefer_finished`): seeds, epochs reached, final test error and training NLL (mean and
standard deviation over seeds), the epoch at which the training NLL first fell below 0.01 (a
convergence-speed measure), and the wall time of one run on this machine.
"""

from __future__ import annotations

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS  # flags are defined under __main__, so these modules import cleanly

from lnrepro import metrics

NLL_TARGET = 0.01
# Fig. 6 gives curves, not numbers: the text states only the claims.
PAPER = {128: "Fig. 6 (curves only): LN converges faster than BN and the baseline",
         4: "Fig. 6 (curves only): LN robust to batch size 4, BN degrades"}


def _mean_std(values, scale=1.0, digits=2, style="f"):
    values = np.asarray(values, dtype=float) * scale
    if len(values) == 1:
        return f"{values[0]:.{digits}{style}}"
    return f"{values.mean():.{digits}{style}} ± {values.std(ddof=1):.{digits}{style}}"


def first_epoch_below(run: metrics.RunRecord, key: str, target: float) -> int | None:
    for row in run.rows:
        if row.get(key) is not None and row[key] < target:
            return row["epoch"]
    return None


def table(records: list[metrics.RunRecord]) -> str:
    groups = metrics.group_runs(records, ("norm", "batch_size"))
    lines = ["| batch | norm | seeds | epochs | test error (%) | training NLL | "
             f"epoch NLL < {NLL_TARGET} | minutes / run | paper |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (norm, bs), group in sorted(groups.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        runs, left_out = metrics.prefer_finished(group)
        seeds = f"{len(runs)}" + (f" (+{len(left_out)} unfinished, not shown)" if left_out else "")
        epochs = min(len(r.rows) for r in runs)
        finals = [r.rows[epochs - 1] for r in runs]
        reached = [first_epoch_below(r, "train_nll", NLL_TARGET) for r in runs]
        reached_text = ", ".join("-" if e is None else str(e) for e in reached)
        minutes = np.mean([sum(row.get("round_seconds", 0.0) for row in r.rows[:epochs])
                           for r in runs]) / 60
        lines.append(
            f"| {bs} | {norm} | {seeds} | {epochs} | "
            f"{_mean_std([f['test_error'] for f in finals], 100)} | "
            f"{_mean_std([f['train_nll'] for f in finals], digits=1, style='e')} | {reached_text} | "
            f"{minutes:.1f} | {PAPER.get(bs, '')} |")
    return "\n".join(lines)


def learning_rate_table(records: list[metrics.RunRecord]) -> tuple[str, dict]:
    """Final validation error per (norm, batch size, learning rate), and the rate chosen for
    each (norm, batch size): the lowest validation error (test data is not looked at)."""
    groups = metrics.group_runs(records, ("norm", "batch_size", "learning_rate"))
    best: dict[tuple, tuple[float, float]] = {}
    lines = ["| batch | norm | learning rate | epochs | validation error (%) |",
             "|---|---|---|---|---|"]
    for (norm, bs, lr), runs in sorted(groups.items(), key=lambda kv: (-kv[0][1], kv[0][0],
                                                                        kv[0][2])):
        error = float(np.mean([r.rows[-1]["valid_error"] for r in runs]))
        lines.append(f"| {bs} | {norm} | {lr:g} | {len(runs[0].rows)} | {100 * error:.2f} |")
        if (norm, bs) not in best or error < best[(norm, bs)][1]:
            best[(norm, bs)] = (lr, error)
    chosen = {key: lr for key, (lr, _) in best.items()}
    lines.append("")
    lines.append("Chosen: " + ", ".join(f"{norm} at batch {bs}: {lr:g}"
                                         for (norm, bs), lr in sorted(chosen.items())))
    return "\n".join(lines), chosen


def main(argv):
    del argv
    records = metrics.load_runs(FLAGS.results_dir)
    print(learning_rate_table(records)[0] if FLAGS.learning_rates else table(records))


if __name__ == "__main__":
    flags.DEFINE_string("results_dir", "results/pi_mnist/fig6", "Run records.")
    flags.DEFINE_bool("learning_rates", False, "Tabulate a learning-rate search "
                                        "(results/pi_mnist/lr_search) instead.")
    app.run(main)
