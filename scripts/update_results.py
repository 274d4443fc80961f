"""Rebuilds every committed figure and every README results table from the records in results/.

  python -m scripts.update_results            # `make results`
  python -m scripts.update_results --check    # exit 1 if README.md's tables are out of date

The README marks each generated table with `<!-- name -->` ... `<!-- /name -->`; the text between
the markers is replaced, nothing else is touched. A record directory with no runs yet leaves its
figure alone and its table saying so, so this can run at any point of a reproduction.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from typing import Callable

import numpy as np

from lnrepro import invariance, metrics
from scripts import plot_ablation, plot_curves, plot_reader, results_table

RESULTS = "results"
NO_RUNS = "_No finished or partial runs recorded yet._"


def reader_search_table(records: list[metrics.RunRecord]) -> str:
    """Validation error (%) per (cell, learning rate): final and best over the runs (one seed).
    BN-everywhere is its own row (cell 'bnlstm+everywhere')."""
    groups = metrics.group_runs(records, ("cell", "bn_everywhere", "learning_rate"))
    lines = ["| cell | learning rate | updates | final validation error (%) | best (%) |",
             "|---|---|---|---|---|"]
    for (cell, everywhere, lr), runs in sorted(groups.items()):
        run = runs[0]
        errors = [r["valid_error"] for r in run.rows]
        name = f"{cell}+everywhere" if everywhere else cell
        lines.append(f"| {name} | {lr:g} | {run.rows[-1]['step']} | {100 * errors[-1]:.1f} | "
                     f"{100 * min(errors):.1f} |")
    return "\n".join(lines)


def gain_table(records: list[metrics.RunRecord]) -> str:
    """LN-LSTM by gain initialization: best and final validation error, mean ± std over seeds."""
    lnlstm = [r for r in records
              if r.config.get("cell") == "lnlstm" and not r.config.get("bn_everywhere")]
    groups = metrics.group_runs(lnlstm, ("ln_gain_init",))
    lines = ["| LN gain init | seeds | updates | best validation error (%) | final (%) | "
             f"updates to {100 * plot_reader.TARGET_ERROR:.0f}% |", "|---|---|---|---|---|---|"]
    for (gain,), runs in sorted(groups.items(), reverse=True):
        best = 100 * np.array([min(r["valid_error"] for r in run.rows) for run in runs])
        final = 100 * np.array([run.rows[-1]["valid_error"] for run in runs])
        fmt = lambda v: f"{v.mean():.1f}" + (f" ± {v.std(ddof=1):.1f}" if len(v) > 1 else "")
        reached = [plot_reader.first_step_below(run, plot_reader.TARGET_ERROR) for run in runs]
        lines.append(f"| {gain:g} | {len(runs)} | {min(run.rows[-1]['step'] for run in runs)} | "
                     f"{fmt(best)} | {fmt(final)} | "
                     f"{', '.join('-' if s is None else str(s) for s in reached)} |")
    return "\n".join(lines)


def tables_and_figures(results: str = RESULTS, write_figures: bool = True) -> dict[str, str]:
    """name -> markdown for every README block; with write_figures, also rebuilds the PNGs."""
    path = lambda *parts: os.path.join(results, *parts)
    load = lambda *parts: metrics.load_runs(path(*parts))
    fig6, sizes = load("pi_mnist", "fig6"), load("pi_mnist", "batch_sizes")
    mnist_lr = load("pi_mnist", "lr_search")
    fig2, gain = load("attentive_reader", "fig2"), load("attentive_reader", "gain")
    reader_lr = load("attentive_reader", "lr_search")
    reader_long_lr = load("attentive_reader", "long_lr_search")

    def guarded(records, make_table: Callable[[], str]) -> str:
        """The table with a line under it saying what made its records, or NO_RUNS."""
        return f"{make_table()}\n\n{metrics.provenance_note(records)}" if records else NO_RUNS

    if write_figures and fig6:
        plot_curves.plot_fig6(fig6, path("pi_mnist_fig6.png"))
    if write_figures and any(r.finished for r in sizes):
        plot_ablation.plot(sizes, path("pi_mnist_batch_sizes.png"))
    if write_figures and fig2:
        plot_reader.plot(fig2, path("attentive_reader_fig2.png"))
    if write_figures and gain:
        plot_reader.plot(gain + fig2, path("attentive_reader_gain.png"), gain=True)
    finished_sizes = [r for r in sizes if r.finished]
    return {
        "fig6 table": guarded(fig6, lambda: results_table.table(fig6)),
        "batch_sizes table": guarded(finished_sizes, lambda: plot_ablation.table(sizes)),
        "mnist lr table": guarded(mnist_lr, lambda: results_table.learning_rate_table(
            mnist_lr)[0]),
        "reader table": guarded(fig2, lambda: plot_reader.table(fig2)),
        "gain table": guarded(gain, lambda: gain_table(gain + fig2)),
        "reader lr table": guarded(reader_lr, lambda: reader_search_table(reader_lr)),
        "reader long lr table": guarded(reader_long_lr,
                                        lambda: reader_search_table(reader_long_lr)),
        "invariance table": invariance.format_table(invariance.compute_table()),
    }


def replace_blocks(text: str, blocks: dict[str, str]) -> str:
    """Replaces the text between `<!-- name -->` and `<!-- /name -->` for every named block
    present in `text`; blocks the text does not mark are ignored."""
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- {re.escape(name)} -->\n).*?(<!-- /{re.escape(name)} -->)",
                             re.DOTALL)
        text = pattern.sub(lambda m: m.group(1) + body + "\n" + m.group(2), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", default="README.md")
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--check", action="store_true",
                        help="only report whether the README's tables are current")
    args = parser.parse_args(argv)
    with open(args.readme) as f:
        old = f.read()
    new = replace_blocks(old, tables_and_figures(args.results, write_figures=not args.check))
    if args.check:
        print("README tables are current." if new == old else
              "README tables are out of date: run `make results`.")
        return int(new != old)
    with open(args.readme, "w") as f:
        f.write(new)
    print(f"Rebuilt figures in {args.results}/ and {'updated' if new != old else 'kept'} "
          f"{args.readme}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
