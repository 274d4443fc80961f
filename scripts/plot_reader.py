"""Fig. 2 analogue and the LN gain ablation, from metrics.jsonl alone, plus the README table.

  python -m scripts.plot_reader --results_dir=results/attentive_reader/fig2 \
      --out=results/attentive_reader_fig2.png
  python -m scripts.plot_reader --results_dir=results/attentive_reader/gain \
      --results_dir=results/attentive_reader/fig2 --gain --out=results/attentive_reader_gain.png

The gain plot takes the LN-LSTM runs of every directory given (fig2's lnlstm runs are the gain
1.0 arm) and groups them by ln_gain_init.

Validation error vs training updates, mean over seeds with the min-max spread shaded.
"""

from __future__ import annotations


import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS  # flags are defined under __main__, so these modules import cleanly

from lnrepro import metrics
from scripts.plot_curves import save_figure, mean_and_spread

VARIANTS = {  # (cell, bn_everywhere): (label, color)
    ("lstm", False): ("LSTM", "tab:gray"),
    ("bnlstm", False): ("BN-LSTM", "tab:blue"),
    ("bnlstm", True): ("BN-everywhere", "tab:green"),
    ("lnlstm", False): ("LN-LSTM", "tab:red"),
}
# Cooijmans et al. 2016 curves on CNN top4 (paper-spec.md, sec. 3): minimum validation error and
# where. The LN-LSTM curve has no numbers in the text ("lower and faster than all three").
PAPER_BEST = {"LSTM": "50.3% at ~759k", "BN-LSTM": "49.5% at ~228k",
              "BN-everywhere": "50.0% at ~126k", "LN-LSTM": "below all three (no number)"}
# Within 6000 updates the synthetic runs fall from chance (87.5%) to a plateau near 73% and some
# then leave it; 70% marks leaving the plateau (none reached 30%, the first target tried).
TARGET_ERROR = 0.70


def variant_groups(records):
    return metrics.group_runs(records, ("cell", "bn_everywhere"))


def plot(records, out: str, gain: bool = False) -> str:
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    if gain:
        lnlstm = [r for r in records
                  if r.config.get("cell") == "lnlstm" and not r.config.get("bn_everywhere")]
        groups = metrics.group_runs(lnlstm, ("ln_gain_init",))
        styles = {(g,): (f"LN-LSTM, gain init {g:g}", c)
                  for g, c in ((1.0, "tab:red"), (0.1, "tab:orange"))}
    else:
        groups, styles = variant_groups(records), VARIANTS
    for key, (label, color) in styles.items():
        runs = groups.get(key)
        if not runs:
            continue
        xs, mean, low, high = mean_and_spread(runs, "valid_error", "step")
        ax.plot(xs, 100 * mean, color=color, label=f"{label} ({len(runs)} seeds)")
        if len(runs) > 1:
            ax.fill_between(xs, 100 * low, 100 * high, color=color, alpha=0.2)
    ax.set_xlabel("training updates")
    ax.set_ylabel("validation error (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Attentive reader, synthetic cloze corpus"
                 + (": LN gain initialization" if gain else " (cf. Ba et al. 2016, Fig. 2)"))
    return save_figure(fig, records, out)


def first_step_below(run: metrics.RunRecord, target: float) -> int | None:
    for row in run.rows:
        if row["valid_error"] <= target:
            return row["step"]
    return None


def table(records) -> str:
    lines = ["| variant | seeds | updates | best validation error (%) | final (%) | "
             f"updates to {100 * TARGET_ERROR:.0f}% | paper (CNN top4, [RBN]/[LN]) |",
             "|---|---|---|---|---|---|---|"]
    groups = variant_groups(records)
    for key, (label, _) in VARIANTS.items():
        runs = groups.get(key)
        if not runs:
            continue
        best = [min(r["valid_error"] for r in run.rows) for run in runs]
        final = [run.rows[-1]["valid_error"] for run in runs]
        reached = [first_step_below(run, TARGET_ERROR) for run in runs]
        fmt = lambda v: (f"{100 * np.mean(v):.1f}" if len(v) == 1 else
                         f"{100 * np.mean(v):.1f} ± {100 * np.std(v, ddof=1):.1f}")
        lines.append(f"| {label} | {len(runs)} | {min(run.rows[-1]['step'] for run in runs)} | "
                     f"{fmt(best)} | {fmt(final)} | "
                     f"{', '.join('-' if s is None else str(s) for s in reached)} | "
                     f"{PAPER_BEST[label]} |")
    return "\n".join(lines)


def main(argv):
    del argv
    records = [r for d in FLAGS.results_dir for r in metrics.load_runs(d)]
    print(plot(records, FLAGS.out, FLAGS.gain))
    if not FLAGS.gain:
        print(table(records))


if __name__ == "__main__":
    flags.DEFINE_multi_string("results_dir", ["results/attentive_reader/fig2"],
                              "Record directories (repeat the flag for several).")
    flags.DEFINE_string("out", "results/attentive_reader_fig2.png", "PNG to write.")
    flags.DEFINE_bool("gain", False, "Plot the gain-initialization ablation instead.")
    app.run(main)
