"""Every results table, as markdown, from run records alone (config.json + metrics.jsonl).

scripts/reports.py says which records each table is built from and where it goes.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np

from lnrepro import metrics
from lnrepro.tasks import pi_mnist
from scripts import stats

NLL_TARGET = 0.01
# Fig. 6 gives curves, not numbers: the text states only the claims.
FIG6_PAPER = {128: "Fig. 6 (curves only): LN converges faster than BN and the baseline",
              4: "Fig. 6 (curves only): LN robust to batch size 4, BN degrades"}
READER_LABELS = {("lstm", False): "LSTM", ("bnlstm", False): "BN-LSTM",
                 ("bnlstm", True): "BN-everywhere", ("lnlstm", False): "LN-LSTM"}
# Cooijmans et al. 2016 curves on CNN top4 (the paper's Fig. 2 compares against them): minimum
# validation error and where. The LN-LSTM curve has no numbers in the text ("lower and faster
# than all three").
READER_PAPER = {"LSTM": "50.3% at ~759k", "BN-LSTM": "49.5% at ~228k",
                "BN-everywhere": "50.0% at ~126k", "LN-LSTM": "below all three (no number)"}
# Within 6000 updates the synthetic runs fall from chance (87.5%) to a plateau near 73% and some
# then leave it; 70% marks leaving the plateau.
PLATEAU_EXIT = 0.70
# For the 30k-update runs: well past the plateau, halfway from it to the sentence-matching
# baseline (15.1%).
LONG_TARGET = 0.30
NORM_ORDER = ("none", "batch", "layer", "weight")


def first_row_below(run: metrics.RunRecord, key: str, target: float, x: str) -> int | None:
    """x of the first row whose `key` is below `target`, or None."""
    for row in run.rows:
        if row.get(key) is not None and row[key] < target:
            return row[x]
    return None


def first_update_at_or_below(run: metrics.RunRecord, key: str, target: float) -> int | None:
    """The first evaluated update at which `key` is at or below `target` (a validation error of
    exactly 30% counts as 30%: the 1e-9 absorbs the float rounding of errors like 0.3), or None."""
    return first_row_below(run, key, target + 1e-9, "step")


def first_row_staying_below(run: metrics.RunRecord, key: str, target: float, x: str
                            ) -> int | None:
    """x of the row after which `key` stays below `target` to the end, or None. Unlike the first
    crossing, one lucky evaluation of a noisy curve does not count."""
    staying = None
    for row in run.rows:
        if row.get(key) is None or row[key] >= target:
            staying = None
        elif staying is None:
            staying = row[x]
    return staying


def left_out_note(left_out: Sequence[metrics.RunRecord]) -> str:
    """What a row or curve leaves out of a group, e.g. '+1 diverged, +2 unfinished' ('' if
    nothing): a diverged seed is a result, not a run still going."""
    diverged = sum(run.diverged is not None for run in left_out)
    counts = ((diverged, "diverged"), (len(left_out) - diverged, "unfinished"))
    return ", ".join(f"+{count} {what}" for count, what in counts if count)


def _dashes(cells: int) -> str:
    """`cells` empty table cells: a row whose seeds all diverged has no numbers to show."""
    return " - |" * cells


def _listed(values: Sequence) -> str:
    return ", ".join("-" if v is None else str(v) for v in values)


def fig6(records: list[metrics.RunRecord]) -> str:
    """Per norm and batch size (finished runs only, when the group has any): seeds, the learning
    rate, epochs, final test error and training NLL (mean ± sample std over seeds), the epoch
    the training NLL first fell below NLL_TARGET, and one run's minutes on the machine that made
    it."""
    groups = metrics.group_runs(records, ("norm", "batch_size"))
    lines = ["| batch | norm | seeds | learning rate | epochs | test error (%) | training NLL | "
             f"epoch NLL < {NLL_TARGET} | minutes / run | paper |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (norm, bs), group in sorted(groups.items(), key=lambda kv: (-kv[0][1], kv[0][0])):
        runs, left_out = metrics.prefer_finished(group)
        seeds = f"{len(runs)}" + (f" ({left_out_note(left_out)}, not shown)" if left_out else "")
        rate = group[0].config.get("learning_rate")  # one per group (group_runs checks)
        rate = "-" if rate is None else f"{rate:g}"
        if not runs:  # every seed diverged
            lines.append(f"| {bs} | {norm} | {seeds} | {rate} |" + _dashes(5)
                         + f" {FIG6_PAPER.get(bs, '')} |")
            continue
        epochs = min(len(r.rows) for r in runs)
        finals = [r.rows[epochs - 1] for r in runs]
        reached = [first_row_below(r, "train_nll", NLL_TARGET, "epoch") for r in runs]
        minutes = np.mean([sum(row.get("round_seconds", 0.0) for row in r.rows[:epochs])
                           for r in runs]) / 60
        lines.append(
            f"| {bs} | {norm} | {seeds} | {rate} | {epochs} | "
            f"{stats.mean_std([f['test_error'] for f in finals], 100)} | "
            f"{stats.mean_std([f['train_nll'] for f in finals], digits=1, style='e')} | "
            f"{_listed(reached)} | {minutes:.1f} | {FIG6_PAPER.get(bs, '')} |")
    return "\n".join(lines)


def bn_variant(config: dict) -> str:
    """What a BN run changes from Fig. 6's BN (all layers, population statistics at evaluation,
    the unbiased variance at batch <= UNBIASED_VARIANCE_MAX_BATCH only)."""
    changes = []
    if not config["normalize_logits"]:
        changes.append("hidden layers only")
    if config["bn_eval_statistics"] == "batch":
        changes.append("batch statistics at evaluation")
    if config["bn_unbiased_variance"] != (config["batch_size"]
                                          <= pi_mnist.UNBIASED_VARIANCE_MAX_BATCH):
        changes.append("n - 1 variance" if config["bn_unbiased_variance"] else "biased variance")
    return ", ".join(changes) or "Fig. 6's BN (the reference)"


def bn_reference(controls: list[metrics.RunRecord], fig6: list[metrics.RunRecord]
                 ) -> list[metrics.RunRecord]:
    """Fig. 6's BN runs at the batch sizes the controls ran at: what each control is compared
    with."""
    sizes = {r.config["batch_size"] for r in controls}
    return [r for r in fig6 if r.config["norm"] == "batch" and r.config["batch_size"] in sizes]


def bn_controls(controls: list[metrics.RunRecord], reference: list[metrics.RunRecord]) -> str:
    """Per batch size, the `reference` runs (bn_reference) and then each control: seeds,
    learning rate, final test error and training NLL (mean ± sample std over finished seeds),
    and the epoch after which each seed's training NLL stays below 1e-3. Diverged and unfinished
    seeds are counted beside the finished ones."""
    groups: dict[tuple, list[metrics.RunRecord]] = {}
    for run in controls + reference:
        key = (run.config["batch_size"], bn_variant(run.config), run.config["learning_rate"])
        groups.setdefault(key, []).append(run)
    lines = ["| batch | BN run | seeds | learning rate | epochs | test error (%) | training NLL | "
             "epoch after which NLL < 1e-3, per seed |", "|---|---|---|---|---|---|---|---|"]
    for (bs, variant, lr), group in sorted(groups.items(), key=lambda kv: (
            -kv[0][0], not kv[0][1].startswith("Fig. 6"), kv[0][1])):
        group = sorted(group, key=lambda r: r.config.get("seed", 0))
        finished = [run for run in group if run.finished]
        left_out = [run for run in group if not run.finished]
        seeds = f"{len(finished)}" + (f" ({left_out_note(left_out)})" if left_out else "")
        if not finished:
            lines.append(f"| {bs} | {variant} | {seeds} | {lr:g} |" + _dashes(4))
            continue
        finals = [run.rows[-1] for run in finished]
        settles = [first_row_staying_below(run, "train_nll", 1e-3, "epoch") for run in finished]
        lines.append(f"| {bs} | {variant} | {seeds} | {lr:g} | {len(finished[0].rows)} | "
                     f"{stats.mean_std([f['test_error'] for f in finals], 100)} | "
                     f"{stats.mean_std([f['train_nll'] for f in finals], digits=1, style='e')} | "
                     f"{_listed(settles)} |")
    lines += ["", "Each control changes one setting of Fig. 6's BN at the same learning rate; "
                  "- : the NLL does not stay below 1e-3 within the run."]
    return "\n".join(lines)


def diverged_at(run: metrics.RunRecord) -> str:
    """Where a diverged run stopped: 'epoch 12', or 'updates 1000-1500' for the reader (the round
    whose steps or evaluation went non-finite)."""
    round_index = run.diverged["round"]
    if "num_epochs" in run.config:
        return f"epoch {round_index + 1}"
    every = run.config["eval_every"]
    return f"updates {round_index * every}-{(round_index + 1) * every}"


def mnist_learning_rates(records: list[metrics.RunRecord]) -> tuple[str, dict]:
    """Final validation error per (norm, batch size, learning rate), mean over its seeds, and the
    rate chosen for each (norm, batch size): the lowest validation error, a tie (errors count
    whole examples, so two rates can tie exactly) going to the lower validation NLL (test data
    is not looked at). A rate at which any seed diverged is listed as such and never chosen. The
    Chosen line says of how many rates, so that a search still under way does not read as
    finished."""
    groups = metrics.group_runs([r for r in records if r.done],
                                ("norm", "batch_size", "learning_rate"))
    best: dict[tuple, tuple[float, tuple[float, float]]] = {}
    rates_seen: dict[tuple, int] = {}
    lines = ["| batch | norm | learning rate | epochs | seeds | validation error (%) | per seed |",
             "|---|---|---|---|---|---|---|"]
    for (norm, bs, lr), runs in sorted(groups.items(), key=lambda kv: (-kv[0][1], kv[0][0],
                                                                        kv[0][2])):
        runs = sorted(runs, key=lambda r: r.config.get("seed", 0))
        rates_seen[(norm, bs)] = rates_seen.get((norm, bs), 0) + 1
        per_seed = ", ".join(f"diverged ({diverged_at(r)})" if r.diverged
                             else f"{100 * r.rows[-1]['valid_error']:.2f}" for r in runs)
        if any(r.diverged for r in runs):
            lines.append(f"| {bs} | {norm} | {lr:g} | {runs[0].num_rounds} | {len(runs)} | "
                         f"diverged | {per_seed} |")
            continue
        error = float(np.mean([r.rows[-1]["valid_error"] for r in runs]))
        # Rounded, so that equal counts of errors tie whatever the float sums' last bits.
        rank = (round(error, 9), float(np.mean([r.rows[-1]["valid_nll"] for r in runs])))
        lines.append(f"| {bs} | {norm} | {lr:g} | {len(runs[0].rows)} | {len(runs)} | "
                     f"{100 * error:.2f} | {per_seed} |")
        if (norm, bs) not in best or rank < best[(norm, bs)][1]:
            best[(norm, bs)] = (lr, rank)
    chosen = {key: lr for key, (lr, _) in best.items()}
    lines.append("")
    lines.append("Chosen: " + ", ".join(
        f"{norm} at batch {bs}: " + (
            f"{chosen[(norm, bs)]:g} (best of {count} rate{'s' if count > 1 else ''})"
            if (norm, bs) in chosen else f"none (all {count} rate{'s' * (count > 1)} diverged)")
        for (norm, bs), count in sorted(rates_seen.items())))
    return "\n".join(lines), chosen


def mean_of_last(run: metrics.RunRecord, key: str, rows: int) -> float:
    """The mean of `key` over the run's last `rows` evaluations (its final value for 1)."""
    last = [row[key] for row in run.rows[-rows:]]
    return sum(last) / len(last)


def final_values(records: list[metrics.RunRecord], key: str = "test_error", over_last: int = 1
                 ) -> dict[str, dict[int, list[float]]]:
    """norm -> batch size -> per finished run (one per seed): its final `key`, or with
    `over_last` > 1 the mean of its last `over_last` evaluations."""
    values: dict[str, dict[int, list[float]]] = {}
    for record in records:
        if record.finished:
            norm, batch_size = record.config["norm"], record.config["batch_size"]
            values.setdefault(norm, {}).setdefault(batch_size, []).append(
                mean_of_last(record, key, over_last))
    return values


def final_measure(over_last: int, epochs: str) -> str:
    """What final_values(..., over_last) measures on runs of `epochs` epochs, in words."""
    return (f"final test error (%) after {epochs} epochs" if over_last == 1 else
            f"test error (%) averaged over the last {over_last} of {epochs} epochs")


def diverged_counts(records: list[metrics.RunRecord]) -> dict[tuple[str, int], int]:
    """(norm, batch size) -> how many of its runs diverged (only those with any)."""
    counts: dict[tuple[str, int], int] = {}
    for run in records:
        if run.diverged is not None:
            key = (run.config["norm"], run.config["batch_size"])
            counts[key] = counts.get(key, 0) + 1
    return counts


def batch_sizes(records: list[metrics.RunRecord], over_last: int = 1) -> str:
    """One row per norm, one column per batch size: the mean over finished seeds of each run's
    final test error (%), or of its mean over the last `over_last` epochs, ± the sample
    standard deviation, with the seed and epoch counts under it, and the seeds that diverged
    beside it."""
    errors = final_values(records, over_last=over_last)
    diverged = diverged_counts(records)
    norms = [n for n in NORM_ORDER if n in errors or any(k[0] == n for k in diverged)]
    sizes = sorted({bs for by_size in errors.values() for bs in by_size}
                   | {bs for _, bs in diverged})
    counts = {len(v) for by_size in errors.values() for v in by_size.values()}
    lines = ["| norm | " + " | ".join(f"bs {bs}" for bs in sizes) + " |",
             "|---|" + "---|" * len(sizes)]
    for norm in norms:
        cells = []
        for bs in sizes:
            values = errors.get(norm, {}).get(bs, [])
            cell = stats.mean_std(values, 100) if values else "-"
            cell += f" ({len(values)})" if values and len(counts) > 1 else ""
            cells.append(cell + (f" (+{diverged[(norm, bs)]} diverged)"
                                 if (norm, bs) in diverged else ""))
        lines.append(f"| {norm} | " + " | ".join(cells) + " |")
    epochs = sorted({r.config["num_epochs"] for r in records if r.done})
    seeds = (f"{counts.pop()} finished seed(s) per cell" if len(counts) == 1 else
             "the finished seeds (their number in brackets)")
    what = final_measure(over_last, ", ".join(map(str, epochs)))
    lines += ["", f"{what[0].upper() + what[1:]}: mean (± sample standard deviation) over "
                  f"{seeds}; the figure's bars are the min-max range."]
    return "\n".join(lines)


def _validation_summary(runs: list[metrics.RunRecord], target: float):
    """Per run: the best and the final validation error, and the update at which it first got
    to `target` or below (None if never)."""
    best = [min(row["valid_error"] for row in run.rows) for run in runs]
    final = [run.rows[-1]["valid_error"] for run in runs]
    reached = [first_update_at_or_below(run, "valid_error", target) for run in runs]
    return best, final, reached


def reader(records: list[metrics.RunRecord], target: float = PLATEAU_EXIT,
           paper: bool = True) -> str:
    """Per reader variant: seeds, learning rate, updates, best and final validation error
    (mean ± sample std over seeds), the updates at which each seed first got below `target`,
    and one run's minutes on the machine that made it."""
    lines = ["| variant | seeds | learning rate | updates | best validation error (%) | "
             f"final (%) | updates to {100 * target:.0f}%, per seed | minutes / run |"
             + (" paper (CNN top4, Cooijmans et al. 2016) |" if paper else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if paper else "")]
    groups = metrics.group_runs(records, ("cell", "bn_everywhere"))
    for key, label in READER_LABELS.items():
        if not groups.get(key):
            continue
        runs, left_out = metrics.prefer_finished(groups[key])
        seeds = f"{len(runs)}" + (f" ({left_out_note(left_out)})" if left_out else "")
        if not runs:  # every seed diverged
            lines.append(f"| {label} | {seeds} | {groups[key][0].config['learning_rate']:g} |"
                         + _dashes(5) + (f" {READER_PAPER[label]} |" if paper else ""))
            continue
        best, final, reached = _validation_summary(runs, target)
        minutes = np.mean([sum(row.get("round_seconds", 0.0) for row in run.rows)
                           for run in runs]) / 60
        lines.append(f"| {label} | {seeds} | {runs[0].config['learning_rate']:g} | "
                     f"{min(run.rows[-1]['step'] for run in runs)} | "
                     f"{stats.mean_std(best, 100, 1)} | {stats.mean_std(final, 100, 1)} | "
                     f"{_listed(reached)} | {minutes:.0f} |"
                     + (f" {READER_PAPER[label]} |" if paper else ""))
    return "\n".join(lines)


def reader_long(records: list[metrics.RunRecord]) -> str:
    return reader(records, target=LONG_TARGET, paper=False)


def reader_learning_rates(records: list[metrics.RunRecord]) -> str:
    """Validation error (%) per (variant, learning rate): final and best (one finished seed
    each). A rate whose run diverged says where, with the best error before it."""
    groups = metrics.group_runs([r for r in records if r.done],
                                ("cell", "bn_everywhere", "learning_rate"))
    lines = ["| variant | learning rate | updates | final validation error (%) | best (%) |",
             "|---|---|---|---|---|"]
    order = list(READER_LABELS)
    for (cell, everywhere, lr), runs in sorted(
            groups.items(), key=lambda kv: (order.index(kv[0][:2]), kv[0][2])):
        run = runs[0]
        errors = [row["valid_error"] for row in run.rows if row.get("valid_error") is not None]
        final = (f"diverged ({diverged_at(run)})" if run.diverged
                 else f"{100 * errors[-1]:.1f}")
        best = f"{100 * min(errors):.1f}" if errors else "-"
        lines.append(f"| {READER_LABELS[(cell, everywhere)]} | {lr:g} | "
                     f"{run.config['num_updates']} | {final} | {best} |")
    return "\n".join(lines)


def gain_runs(records: list[metrics.RunRecord]) -> list[metrics.RunRecord]:
    """The runs the gain table compares: the LN-LSTM's, without BN on the feed-forward terms."""
    return [r for r in records
            if r.config.get("cell") == "lnlstm" and not r.config.get("bn_everywhere")]


def gain(records: list[metrics.RunRecord]) -> str:
    """LN-LSTM by gain initialization: best and final validation error over seeds."""
    groups = metrics.group_runs(gain_runs(records), ("ln_gain_init",))
    lines = ["| LN gain init | seeds | updates | best validation error (%) | final (%) | "
             f"updates to {100 * PLATEAU_EXIT:.0f}% |", "|---|---|---|---|---|---|"]
    for (value,), group in sorted(groups.items(), reverse=True):
        runs, left_out = metrics.prefer_finished(group)
        seeds = f"{len(runs)}" + (f" ({left_out_note(left_out)})" if left_out else "")
        if not runs:  # every seed diverged
            lines.append(f"| {value:g} | {seeds} |" + _dashes(4))
            continue
        best, final, reached = _validation_summary(runs, PLATEAU_EXIT)
        lines.append(f"| {value:g} | {seeds} | {min(run.rows[-1]['step'] for run in runs)} | "
                     f"{stats.mean_std(best, 100, 1)} | {stats.mean_std(final, 100, 1)} | "
                     f"{_listed(reached)} |")
    return "\n".join(lines)


TESTS = {"welch": stats.welch, "rank": stats.rank_test, "fisher": stats.fisher,
         "logrank": stats.logrank}
# The same tests by the name their Comparison carries.
TEST_BY_NAME = {"Welch": stats.welch, "Mann-Whitney": stats.rank_test, "Fisher": stats.fisher,
                "log-rank": stats.logrank}


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim of the paper, as a comparison of two groups of runs over seeds.

    `a` and `b` select runs by config values (from `source`'s records; B from `b_source`'s when
    given); `measure` turns a finished run into the number compared, or for the Fisher test
    into a bool (reached a target); `sign` is the claimed direction of A - B (-1: A lower)."""
    text: str
    source: str
    a: Mapping[str, object]
    b: Mapping[str, object]
    measure: Callable[[metrics.RunRecord], float | bool]
    measured: str
    sign: int
    test: str = "welch"  # a key of TESTS
    b_source: str | None = None


def _matches(record: metrics.RunRecord, where: Mapping[str, object]) -> bool:
    """Whether the record's config has each value `where` names (one of them, for a tuple)."""
    def has(key, wanted):
        # Records made before bn_everywhere existed are not BN-everywhere runs.
        value = record.config.get(key, False if key == "bn_everywhere" else None)
        return value in wanted if isinstance(wanted, tuple) else value == wanted
    return all(has(k, v) for k, v in where.items())


def _select(records, where: Mapping[str, object]) -> tuple[list[metrics.RunRecord], int]:
    """The finished runs matching `where`, and how many matching runs diverged. Raises
    metrics.MixedSettingsError if the finished ones differ in anything but the seed."""
    matching = [r for r in records if _matches(r, where)]
    finished = [r for r in matching if r.finished]
    metrics.group_runs(finished, ())  # pooled as seeds of one setting: check that they are
    return finished, sum(r.diverged is not None for r in matching)


def _format_point_effect(c: stats.Comparison) -> str:
    """The effect alone, without its interval."""
    if c.test == "Fisher":
        return f"{100 * c.effect:+.0f} points of seeds"
    return _format_number(c.effect, "+") + ("" if c.test == "Welch" else " (medians)")


def _format_effect(c: stats.Comparison) -> str:
    """The effect, with its 95% interval where the test gives one."""
    if np.isnan(c.low):
        return _format_point_effect(c)
    return (f"{_format_point_effect(c)} [{_format_number(c.low, '+')}, "
            f"{_format_number(c.high, '+')}]")


def _format_number(x: float, sign: str = "") -> str:
    """3 significant digits, written out from 1000 up (update counts: 26000, not 2.6e+04)."""
    rounded = float(f"{x:.3g}")
    if math.isfinite(rounded) and abs(rounded) >= 1000:
        return f"{rounded:{sign}.0f}"
    return f"{x:{sign}.3g}"


class Compared(NamedTuple):
    """A claim's two groups of per-seed values, their diverged runs, and the test's result (None
    under 2 seeds a side)."""
    a: list
    b: list
    diverged_a: int
    diverged_b: int
    comparison: stats.Comparison | None


def _compare(claim: Claim, records: Mapping[str, list[metrics.RunRecord]]) -> Compared | None:
    """The claim's groups compared on its measure; None when either has no run done (finished or
    diverged). A side whose runs all diverged has no values, and the comparison is None."""
    runs_a, diverged_a = _select(records.get(claim.source, []), claim.a)
    runs_b, diverged_b = _select(records.get(claim.b_source or claim.source, []), claim.b)
    if not (runs_a or diverged_a) or not (runs_b or diverged_b):
        return None
    a, b = [claim.measure(r) for r in runs_a], [claim.measure(r) for r in runs_b]
    if not a or not b:
        return Compared(a, b, diverged_a, diverged_b, None)
    # A censored value (+-inf: known only to lie beyond every measured one) has a rank but no
    # size, so it turns a t-test into a rank test. (The log-rank test takes censored times as
    # they are.)
    censored = claim.test == "welch" and not np.all(np.isfinite(a + b))
    return Compared(a, b, diverged_a, diverged_b,
                    TESTS["rank" if censored else claim.test](a, b))


def claims(claim_list: Sequence[Claim], records: Mapping[str, list[metrics.RunRecord]],
           directories: Mapping[str, str] | None = None) -> str:
    """One row per claim: the two groups' per-seed values, A - B with its 95% interval, the test
    and its p, the verdict (stats.verdict), and the records it rests on (`directories`: source
    -> where its records are; the source's name where not given). Only finished runs count;
    diverged ones are counted beside them. Claims whose records are missing are left out."""
    directories = directories or {}
    lines = ["| claim | measured | A (per seed) | B (per seed) | A - B [95% CI] | test, p | "
             "verdict | records |", "|---|---|---|---|---|---|---|---|"]
    for claim in claim_list:
        compared = _compare(claim, records)
        if compared is None:
            continue
        a, b, diverged_a, diverged_b, comparison = compared

        def shown(values, diverged):
            text = ("none finished" if not values else
                    f"{sum(values)}/{len(values)}" if claim.test == "fisher" else
                    ", ".join(_format_number(x) for x in values))
            return text + (f" (+{diverged} diverged)" if diverged else "")
        effect = "-" if comparison is None else _format_effect(comparison)
        test = "-" if comparison is None else f"{comparison.test}, {comparison.p:.2g}"
        verdict = (stats.verdict(comparison, claim.sign) if a and b else
                   "not testable (a side has diverged runs and no finished one)")
        sources = dict.fromkeys((claim.source, claim.b_source or claim.source))
        rests_on = ", ".join(f"`{directories.get(name, name)}`" for name in sources)
        lines.append(f"| {claim.text} | {claim.measured} | {shown(a, diverged_a)} | "
                     f"{shown(b, diverged_b)} | {effect} | {test} | "
                     f"**{verdict}** | {rests_on} |")
    return "\n".join(lines)


def seeds_to_settle(claim_list: Sequence[Claim], records: Mapping[str, list[metrics.RunRecord]],
                    power: float = 0.8) -> str:
    """One row per claim left not settled: the seeds it has, the seeds per side at which its test
    would settle it with probability `power` if what was observed were the truth, how that was
    estimated (Welch's t-test: from the means and spreads, stats.seeds_for_power; the rank,
    log-rank and Fisher tests: by resampling the seeds, stats.seeds_for_power_by_resampling),
    and which verdict the observed difference points to."""
    lines = ["| claim | measured | seeds (A, B) | A - B | std (A, B) | "
             f"seeds per side for {power:.0%} power | estimated by | the difference points to |",
             "|---|---|---|---|---|---|---|---|"]
    for claim in claim_list:
        compared = _compare(claim, records)
        if compared is None or compared.comparison is None:
            continue
        comparison = compared.comparison
        if stats.verdict(comparison, claim.sign) != "not settled":
            continue
        effect = comparison.effect
        if comparison.test == "Welch":
            needed = stats.seeds_for_power(compared.a, compared.b, power)
            most, how = stats.MOST_SEEDS, "means and spreads (t)"
            spreads = ", ".join(_format_number(float(np.std(x, ddof=1)))
                                for x in (compared.a, compared.b))
        else:  # no difference to settle: nothing to resample
            needed = None if effect == 0 else stats.seeds_for_power_by_resampling(
                compared.a, compared.b, TEST_BY_NAME[comparison.test], power)
            most, how, spreads = stats.RESAMPLED_SEEDS[-1], "resampling the seeds", "-"
        if needed is None:
            needed = "-" if effect == 0 else f"over {most}"
        direction = ("-" if effect == 0 else
                     "holds" if np.sign(effect) == claim.sign else "does not hold")
        lines.append(f"| {claim.text} | {claim.measured} | {len(compared.a)}, "
                     f"{len(compared.b)} | {_format_point_effect(comparison)} | {spreads} | "
                     f"{needed} | {how} | {direction} |")
    return "\n".join(lines)


def runtimes(records: Mapping[str, list[metrics.RunRecord]],
             rows: Sequence[tuple[str, str, Mapping[str, object]]]) -> str:
    """Per (label, source, config selection) and per machine: the finished runs, the median
    minutes of training and evaluation one run took (the sum of its rounds' seconds: start-up,
    data preparation and compiling excluded), their total, and the machine their records name.
    One row per machine, so that a median never mixes a pinned core with a whole machine."""
    lines = ["| runs of | runs | minutes per run (median) | hours in all | made on |",
             "|---|---|---|---|---|"]
    for label, name, where in rows:
        by_machine: dict[str, list[float]] = {}
        for run in records.get(name, []):
            if run.finished and _matches(run, where):
                minutes = sum(row.get("round_seconds", 0.0) for row in run.rows) / 60
                by_machine.setdefault(run_machine_label(run), []).append(minutes)
        for machine, minutes in sorted(by_machine.items()):
            lines.append(f"| {label} | {len(minutes)} | {np.median(minutes):.1f} | "
                         f"{sum(minutes) / 60:.1f} | {machine} |")
    return "\n".join(lines)


def run_machine_label(run: metrics.RunRecord) -> str:
    """The distinct machines a run's starts name, in order of first appearance ('cpu (1 of 2
    cores) then cpu (2 cores)' for a run resumed on the whole machine), or 'unrecorded'."""
    machines = dict.fromkeys(machine_label(entry) for entry in run.provenance)
    return " then ".join(machines) or "unrecorded"


def machine_label(entry: Mapping) -> str:
    """'cpu (2 cores)', 'cpu (1 of 2 cores)' (a process pinned to fewer cores than the machine
    has) or 'NVIDIA H100 80GB HBM3 (1 device)' from one provenance entry."""
    if entry.get("backend") == "cpu":
        cores, usable = entry.get("cpu_count"), entry.get("cpus_usable")
        if not cores:
            return "cpu"
        if usable and usable < cores:
            return f"cpu ({usable} of {cores} cores)"
        return f"cpu ({cores} cores)"
    count = entry.get("device_count", 0)
    return f"{entry.get('device_kind', '?')} ({count} device{'s' * (count != 1)})"
