"""The one place that says which records every table and figure is made from.

A *source* is a set of records: the sweep that makes them and the directory they live in. A
*profile* picks the sources (`quick`: what `make reproduce` runs, under runs/quick; `full`: the
committed records in results/). Every table and figure names the sources it reads;
scripts/reproduce.py runs a profile's sweeps and then `build`s it, and scripts/update_results.py
`build`s the full profile into README.md's marked blocks.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
import os
import re
from typing import Callable, Mapping

from experiments import common
from lnrepro import invariance, metrics
from scripts import figures, tables

NO_RUNS = "_No finished or partial runs recorded yet._"


@dataclasses.dataclass(frozen=True)
class Source:
    sweep: str      # "<sweep file>:<name>", run by experiments/sweep.py
    directory: str  # below the profile's records (and workdirs) root
    # Other sources' directories whose records may stand in for this sweep's runs that train
    # exactly the same (experiments/sweep.py --reuse_from).
    reuse_from: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Profile:
    sources: Mapping[str, Source]
    sweeps: tuple[str, ...]  # the sources scripts/reproduce.py runs, in this order
    records_root: str
    workdir_root: str
    out_dir: str  # figures, and the tables as <name>.md
    skip: tuple[str, ...] = ()  # tables that mean nothing for this profile's short runs


MNIST, READER = "configs/pi_mnist_sweeps.py", "configs/attentive_reader_sweeps.py"
FULL_SOURCES = {
    # Fig. 6's first two seeds at the searched rates are the 60-epoch search's own runs.
    "fig6": Source(f"{MNIST}:fig6", "pi_mnist/fig6", reuse_from=("pi_mnist/lr_search_full",)),
    "fig6_short_search": Source(f"{MNIST}:fig6_short_search", "pi_mnist/fig6_short_search"),
    "batch_sizes": Source(f"{MNIST}:batch_sizes", "pi_mnist/batch_sizes"),
    "batch_sizes_long": Source(f"{MNIST}:batch_sizes_long", "pi_mnist/batch_sizes_long"),
    "mnist_lr": Source(f"{MNIST}:lr_search", "pi_mnist/lr_search"),
    "mnist_lr_full": Source(f"{MNIST}:lr_search_full", "pi_mnist/lr_search_full"),
    "bn_controls": Source(f"{MNIST}:bn_controls", "pi_mnist/bn_controls"),
    "fig2": Source(f"{READER}:fig2", "attentive_reader/fig2"),
    "gain": Source(f"{READER}:gain", "attentive_reader/gain"),
    "reader_lr": Source(f"{READER}:lr_search", "attentive_reader/lr_search"),
    "reader_long_lr": Source(f"{READER}:long_lr_search", "attentive_reader/long_lr_search"),
    "reader_long": Source(f"{READER}:long", "attentive_reader/long"),
    "reader_hard": Source(f"{READER}:hard", "attentive_reader/hard"),
    # A `make reproduce` run's records, copied from runs/quick/records.
    "quick_mnist": Source(f"{MNIST}:quick", "quick/pi_mnist"),
    "quick_reader": Source(f"{READER}:quick", "quick/attentive_reader"),
}
PROFILES = {
    "quick": Profile({"fig6": Source(f"{MNIST}:quick", "pi_mnist"),
                      "fig2": Source(f"{READER}:quick", "attentive_reader")},
                     sweeps=("fig6", "fig2"), records_root="runs/quick/records",
                     workdir_root="runs/quick/workdirs", out_dir="runs/quick",
                     # The claims and runtimes are about the paper-length runs.
                     skip=("claims table", "seeds to settle table", "runtimes table")),
    # The open questions in order: the reader to the end of training; the fair learning-rate
    # search before Fig. 6's 10 seeds (a changed rate means re-running Fig. 6); BN's controls;
    # the ablation; the reader at 6000 updates; Fig. 6's batch-128 runs at the short search's
    # rates (how much the claims depend on the rate); last, the reader on the harder corpus
    # (hours a run without a GPU).
    "full": Profile(FULL_SOURCES, sweeps=("reader_long", "mnist_lr_full", "fig6", "bn_controls",
                                          "batch_sizes", "batch_sizes_long", "fig2", "gain",
                                          "fig6_short_search", "reader_hard"),
                    records_root="results", workdir_root="runs", out_dir="results"),
}


def _log10_final(key: str) -> Callable[[metrics.RunRecord], float]:
    """log10 of the final value; -inf for a value that rounded to 0 in float32 (known only to be
    below every positive value: tables.claims then compares ranks)."""
    return lambda run: math.log10(run.rows[-1][key]) if run.rows[-1][key] > 0 else -math.inf


def _final(key: str, scale: float = 100.0) -> Callable[[metrics.RunRecord], float]:
    return lambda run: scale * run.rows[-1][key]


def _mean_of_last(key: str, rows: int, scale: float = 100.0
                  ) -> Callable[[metrics.RunRecord], float]:
    """The mean over the last `rows` evaluations: where a curve swings from epoch to epoch (BN's
    test error at batch 4), one epoch's value says more about the swing than about the run."""
    return lambda run: scale * tables.mean_of_last(run, key, rows)


def _epoch_staying_below(key: str, target: float) -> Callable[[metrics.RunRecord], float]:
    """The epoch after which `key` stays below target; inf for a run that never settles there
    (known only to be later than its last epoch: tables.claims then compares ranks)."""
    def measure(run):
        epoch = tables.first_row_staying_below(run, key, target, "epoch")
        return math.inf if epoch is None else epoch
    return measure


def _updates_to(key: str, target: float) -> Callable[[metrics.RunRecord], float]:
    """The first evaluated update at which `key` is at or below target; inf for a run that never
    gets there (known only to be later than its last update: tables.claims then compares ranks)."""
    def measure(run):
        step = tables.first_update_at_or_below(run, key, target)
        return math.inf if step is None else step
    return measure


def _reaches(key: str, target: float) -> Callable[[metrics.RunRecord], bool]:
    updates = _updates_to(key, target)
    return lambda run: math.isfinite(updates(run))


def _mnist(norm, bs):
    return {"norm": norm, "batch_size": bs}


def _cell(cell, everywhere=False):
    return {"cell": cell, "bn_everywhere": everywhere}


# (measure, what it is) pairs the claims compare.
LOG_NLL = (_log10_final("train_nll"), "log10 final training NLL (-inf: rounded to 0)")
SETTLES = (_epoch_staying_below("train_nll", 1e-3),
           "epoch after which the NLL stays < 1e-3 (inf: never)")
TEST_ERROR = (_final("test_error"), "final test error (%)")
TEST_ERROR_LAST_10 = (_mean_of_last("test_error", 10), "mean test error, last 10 epochs (%)")
# The 20-epoch ablation says where each norm ends by the mean of its last epochs' test error:
# at a constant rate one epoch can move a run by most of a point (LN at batch 64, seed 0: 1.72%
# then 2.57% in its last two), more than the differences between the norms.
ABLATION_LONG_LAST = 5
TEST_ERROR_LAST_5 = (_mean_of_last("test_error", ABLATION_LONG_LAST),
                     f"mean test error, last {ABLATION_LONG_LAST} epochs (%)")
VALID_ERROR = (_final("valid_error"), "final validation error (%)")
LEAVES_PLATEAU = (_reaches("valid_error", tables.PLATEAU_EXIT),
                  "seeds below 70% within 6000 updates")
REACHES_30 = (_reaches("valid_error", tables.LONG_TARGET), "seeds below 30% within 30k updates")
UPDATES_TO_30 = (_updates_to("valid_error", tables.LONG_TARGET),
                 "updates until below 30% (inf: not within 30k)")


def _claim(text, source, a, b, measure, sign, **kwargs) -> tables.Claim:
    return tables.Claim(text, source, a, b, *measure, sign, **kwargs)


LN128, BN128, NONE128 = _mnist("layer", 128), _mnist("batch", 128), _mnist("none", 128)
LN4, BN4, NONE4 = _mnist("layer", 4), _mnist("batch", 4), _mnist("none", 4)
LNLSTM, LSTM, BNLSTM = _cell("lnlstm"), _cell("lstm"), _cell("bnlstm")
BN_EVERYWHERE = _cell("bnlstm", True)


def _batch_128_claims(source: str, label: str) -> tuple[tables.Claim, ...]:
    """Fig. 6's batch-128 claims on one source's records."""
    return (
        _claim(f"{label}: LN drives training NLL lower than BN", source, LN128, BN128, LOG_NLL,
               -1),
        _claim(f"{label}: LN drives training NLL lower than no norm", source, LN128, NONE128,
               LOG_NLL, -1),
        _claim(f"{label}: LN's training NLL settles below 1e-3 sooner than BN's", source, LN128,
               BN128, SETTLES, -1),
        _claim(f"{label}: LN's training NLL settles below 1e-3 sooner than no norm's", source,
               LN128, NONE128, SETTLES, -1),
        _claim(f"{label}: LN ends with lower test error than BN", source, LN128, BN128,
               TEST_ERROR, -1),
        _claim(f"{label}: LN ends with lower test error than no norm", source, LN128, NONE128,
               TEST_ERROR, -1),
    )


def _ablation_claims(source: str, label: str, measure=TEST_ERROR) -> tuple[tables.Claim, ...]:
    """The batch-size ablation's claims on one source's records: LN against BN at the batch
    sizes where BN's statistics come from 2 and 4 examples, and against no normalization at
    batch 1, 2 and 4 (the paper: LN does not depend on the batch)."""
    return tuple(
        _claim(f"{label}, bs {bs}: LN ends with lower test error than {name}", source,
               _mnist("layer", bs), _mnist(norm, bs), measure, -1)
        for bs, norm, name in ((2, "batch", "BN"), (4, "batch", "BN"), (1, "none", "no norm"),
                               (2, "none", "no norm"), (4, "none", "no norm")))


CLAIMS = (
    *_batch_128_claims("fig6", "bs 128"),
    _claim("bs 4: LN ends with lower test error than BN", "fig6", LN4, BN4, TEST_ERROR, -1),
    _claim("bs 4: LN ends with lower test error than no norm", "fig6", LN4, NONE4, TEST_ERROR,
           -1),
    # BN's test error at batch 4 swings by points from epoch to epoch: the same two claims on
    # the last 10 epochs' mean, which one unlucky epoch cannot decide.
    _claim("bs 4: LN's test error over the last 10 epochs is lower than BN's", "fig6", LN4, BN4,
           TEST_ERROR_LAST_10, -1),
    _claim("bs 4: LN's test error over the last 10 epochs is lower than no norm's", "fig6", LN4,
           NONE4, TEST_ERROR_LAST_10, -1),
    _claim("bs 128: BN on the hidden layers only drives training NLL lower than BN on all",
           "bn_controls", {**BN128, "normalize_logits": False}, BN128, LOG_NLL, -1,
           b_source="fig6"),
    _claim("bs 4: BN on the hidden layers only drives training NLL lower than BN on all",
           "bn_controls", {**BN4, "normalize_logits": False}, BN4, LOG_NLL, -1,
           b_source="fig6"),
    *(_claim(f"bs {bs}: BN on the hidden layers only ends with lower test error than BN on all",
             "bn_controls", {**bn, "normalize_logits": False}, bn, TEST_ERROR, -1,
             b_source="fig6") for bs, bn in ((128, BN128), (4, BN4))),
    # The batch-size ablation at both horizons: how each norm starts (3 epochs, at the short
    # search's rates) and where it ends (20 epochs, at the default rates; the mean of the last
    # epochs, as its table and figure show it).
    *_ablation_claims("batch_sizes", "ablation, 3 epochs"),
    *_ablation_claims("batch_sizes_long", "ablation, 20 epochs", TEST_ERROR_LAST_5),
    # The batch-128 runs at the short search's rates (5 seeds), which the 60-epoch search
    # replaced: do the claims depend on the rate?
    *_batch_128_claims("fig6_short_search", "bs 128, short-search rates"),
    _claim("6000 updates: LN-LSTM leaves the 73% plateau more often than BN-LSTM", "fig2",
           LNLSTM, BNLSTM, LEAVES_PLATEAU, +1, test="fisher"),
    _claim("6000 updates: LN-LSTM leaves the 73% plateau more often than LSTM", "fig2", LNLSTM,
           LSTM, LEAVES_PLATEAU, +1, test="fisher"),
    _claim("30k updates: LN-LSTM ends lower than LSTM", "reader_long", LNLSTM, LSTM, VALID_ERROR,
           -1),
    _claim("30k updates: LN-LSTM ends lower than BN-LSTM", "reader_long", LNLSTM, BNLSTM,
           VALID_ERROR, -1),
    _claim("30k updates: LN-LSTM reaches 30% more often than LSTM", "reader_long", LNLSTM, LSTM,
           REACHES_30, +1, test="fisher"),
    _claim("30k updates: LN-LSTM reaches 30% more often than BN-LSTM", "reader_long", LNLSTM,
           BNLSTM, REACHES_30, +1, test="fisher"),
    _claim("30k updates: LN-LSTM ends lower than BN-everywhere", "reader_long", LNLSTM,
           BN_EVERYWHERE, VALID_ERROR, -1),
    # Fig. 2's claim is about speed: the updates each seed needs to get below 30%.
    *(_claim(f"30k updates: LN-LSTM gets below 30% in fewer updates than {label}",
             "reader_long", LNLSTM, other, UPDATES_TO_30, -1, test="logrank")
      for label, other in (("LSTM", LSTM), ("BN-LSTM", BNLSTM),
                           ("BN-everywhere", BN_EVERYWHERE))),
    # Rates searched on the CPU profile's corpus at 64 units, not on this one.
    *(_claim(f"harder corpus, 30k updates (unsearched rates): LN-LSTM ends lower than {label}",
             "reader_hard", LNLSTM, other, VALID_ERROR, -1)
      for label, other in (("LSTM", LSTM), ("BN-LSTM", BNLSTM),
                           ("BN-everywhere", BN_EVERYWHERE))),
)


@functools.lru_cache(maxsize=None)
def _corpus_lines(synthetic: tuple) -> dict[str, float]:
    from lnrepro.data import synthetic_cloze  # only figures of synthetic-corpus records need it
    config = synthetic_cloze.SyntheticConfig(**dict(synthetic))
    errors = synthetic_cloze.shallow_baseline_errors(config)
    # Chance: a uniform guess among the corpus's entities (ids are permuted per batch, so an
    # entity's id carries nothing).
    return {"chance": 1 - 1 / config.num_entities,
            "most frequent entity": errors["most_frequent_entity"],
            "best-matching sentence": errors["sentence_match"]}


def reader_reference_lines(records: list[metrics.RunRecord]) -> dict[str, float]:
    """Chance and the shallow baselines' validation errors on the records' synthetic corpus
    (regenerated from its config: the same config always gives the same corpus); none for
    the real corpus."""
    corpora = {tuple(sorted(r.config["synthetic"].items())) for r in records
               if r.config.get("corpus") == "synthetic" and "synthetic" in r.config}
    return _corpus_lines(corpora.pop()) if len(corpora) == 1 else {}


# The ablation's batch sizes in groups whose runs take about as long: a batch-1 run takes over
# ten times a batch-256 run for the same examples seen.
ABLATION_RUNTIME_GROUPS = (("1", (1,)), ("2-16", (2, 4, 8, 16)), ("32-256", (32, 64, 128, 256)))
RUNTIMES = (  # (what, source, config selection) per row of the runtimes table
    ("quick reproduction: pi-MNIST, batch 128, 3 epochs", "quick_mnist", {"batch_size": 128}),
    ("quick reproduction: pi-MNIST, batch 4, 3 epochs", "quick_mnist", {"batch_size": 4}),
    ("quick reproduction: reader, 1000 updates", "quick_reader", {}),
    ("Fig. 6, batch 128, 60 epochs", "fig6", {"batch_size": 128}),
    ("Fig. 6, batch 4, 60 epochs", "fig6", {"batch_size": 4}),
    ("Fig. 6 BN controls, batch 128, 60 epochs", "bn_controls", {"batch_size": 128}),
    ("Fig. 6 BN controls, batch 4, 60 epochs", "bn_controls", {"batch_size": 4}),
    *((f"batch-size ablation, {epochs} epochs, batch {sizes}", source, {"batch_size": where})
      for epochs, source in ((3, "batch_sizes"), (20, "batch_sizes_long"))
      for sizes, where in ABLATION_RUNTIME_GROUPS),
    ("pi-MNIST learning-rate search (3 and 1 epochs)", "mnist_lr", {}),
    ("pi-MNIST learning-rate search, batch 128, 60 epochs", "mnist_lr_full", {"batch_size": 128}),
    ("pi-MNIST learning-rate search, batch 4, 60 epochs", "mnist_lr_full", {"batch_size": 4}),
    ("reader Fig. 2: LSTM, 6000 updates", "fig2", LSTM),
    ("reader Fig. 2: LN-LSTM, 6000 updates", "fig2", LNLSTM),
    ("reader Fig. 2: BN-LSTM, 6000 updates", "fig2", BNLSTM),
    ("reader Fig. 2: BN-everywhere, 6000 updates", "fig2", BN_EVERYWHERE),
    ("reader LN gain 0.1, 6000 updates", "gain", {}),
    ("reader, 30k updates: LSTM", "reader_long", LSTM),
    ("reader, 30k updates: LN-LSTM", "reader_long", LNLSTM),
    ("reader, 30k updates: BN-LSTM", "reader_long", BNLSTM),
    ("reader, 30k updates: BN-everywhere", "reader_long", BN_EVERYWHERE),
    ("reader, 30k updates: learning-rate search", "reader_long_lr", {}),
    *((f"reader, harder corpus, 240 units, 30k updates: {label}", "reader_hard", cell)
      for label, cell in (("LSTM", LSTM), ("LN-LSTM", LNLSTM), ("BN-LSTM", BNLSTM),
                          ("BN-everywhere", BN_EVERYWHERE))),
)


@dataclasses.dataclass(frozen=True)
class Table:
    name: str                 # README block `<!-- name -->`, and <name>.md in quick's out_dir
    sources: tuple[str, ...]  # all needed
    make: Callable[[dict[str, list[metrics.RunRecord]]], str]
    optional: tuple[str, ...] = ()  # read when the profile has them
    # The records it reads, of its sources' (all by default; final-value tables read the runs
    # that are done, finished or diverged: partial ones would mislead, diverged ones are counted).
    reads: Callable[[metrics.RunRecord], bool] = lambda run: True
    # The records it shows, of those read (and so those its provenance line counts): all of them
    # when None.
    select: Callable[[dict[str, list[metrics.RunRecord]]], dict] | None = None


@dataclasses.dataclass(frozen=True)
class Figure:
    file: str
    sources: tuple[str, ...]
    make: Callable[[dict[str, list[metrics.RunRecord]], str], str]
    # The records it can draw (final values: finished runs; a search: finished or diverged). It
    # is drawn when each of its sources holds one, and is given only those.
    draws: Callable[[metrics.RunRecord], bool] = lambda run: True


CLAIM_SOURCES = ("fig6", "fig6_short_search", "fig2", "reader_long", "bn_controls", "batch_sizes",
                 "reader_hard")


def _all(records: dict[str, list]) -> list[metrics.RunRecord]:
    return [r for runs in records.values() for r in runs]


TABLES = (
    Table("fig6 table", ("fig6",), lambda r: tables.fig6(r["fig6"])),
    Table("fig6 short search table", ("fig6_short_search",),
          lambda r: tables.fig6(r["fig6_short_search"])),
    Table("batch_sizes table", ("batch_sizes",), lambda r: tables.batch_sizes(r["batch_sizes"]),
          reads=operator.attrgetter("done")),
    Table("mnist lr table", ("mnist_lr",), lambda r: tables.mnist_learning_rates(r["mnist_lr"])[0]),
    Table("mnist lr full table", ("mnist_lr_full",),
          lambda r: tables.mnist_learning_rates(r["mnist_lr_full"])[0]),
    Table("bn controls table", ("bn_controls",),
          lambda r: tables.bn_controls(r["bn_controls"], r.get("fig6", [])),
          optional=("fig6",), select=lambda r: {**r, "fig6": tables.bn_reference(
              r["bn_controls"], r.get("fig6", []))}),
    Table("batch_sizes long table", ("batch_sizes_long",),
          lambda r: tables.batch_sizes(r["batch_sizes_long"], ABLATION_LONG_LAST),
          reads=operator.attrgetter("done")),
    Table("reader table", ("fig2",), lambda r: tables.reader(r["fig2"])),
    Table("gain table", ("gain", "fig2"), lambda r: tables.gain(_all(r)),
          select=lambda r: {name: tables.gain_runs(runs) for name, runs in r.items()}),
    Table("reader lr table", ("reader_lr",),
          lambda r: tables.reader_learning_rates(r["reader_lr"])),
    Table("reader long lr table", ("reader_long_lr",),
          lambda r: tables.reader_learning_rates(r["reader_long_lr"])),
    Table("reader long table", ("reader_long",), lambda r: tables.reader_long(r["reader_long"])),
    Table("reader hard table", ("reader_hard",), lambda r: tables.reader_long(r["reader_hard"])),
    Table("claims table", (), lambda r: tables.claims(CLAIMS, r, {
        name: f"results/{source.directory}/" for name, source in FULL_SOURCES.items()}),
          optional=CLAIM_SOURCES),
    Table("seeds to settle table", (), lambda r: tables.seeds_to_settle(CLAIMS, r),
          optional=CLAIM_SOURCES),
    Table("runtimes table", (), lambda r: tables.runtimes(r, RUNTIMES),
          optional=tuple(dict.fromkeys(source for _, source, _ in RUNTIMES))),
)
FIGURES = (
    Figure("pi_mnist_fig6.png", ("fig6",), lambda r, out: figures.fig6(r["fig6"], out)),
    Figure("pi_mnist_fig6_wallclock.png", ("fig6",),
           lambda r, out: figures.fig6(r["fig6"], out, x="minutes")),
    Figure("pi_mnist_lr_search.png", ("mnist_lr_full",),
           lambda r, out: figures.learning_rates(r["mnist_lr_full"], out),
           draws=operator.attrgetter("done")),
    Figure("pi_mnist_batch_sizes.png", ("batch_sizes",),
           lambda r, out: figures.batch_sizes(r["batch_sizes"], out),
           draws=operator.attrgetter("done")),
    Figure("pi_mnist_batch_sizes_long.png", ("batch_sizes_long",),
           lambda r, out: figures.batch_sizes(r["batch_sizes_long"], out, ABLATION_LONG_LAST),
           draws=operator.attrgetter("done")),
    Figure("attentive_reader_fig2.png", ("fig2",), lambda r, out: figures.reader(
        r["fig2"], out, reader_reference_lines(r["fig2"]), xs=("step", "minutes"))),
    Figure("attentive_reader_gain.png", ("gain", "fig2"), lambda r, out: figures.gain(
        _all(r), out, reader_reference_lines(_all(r)))),
    Figure("attentive_reader_long.png", ("reader_long",), lambda r, out: figures.reader(
        r["reader_long"], out, reader_reference_lines(r["reader_long"]),
        xs=("step", "minutes"), title="Attentive reader, 30k updates, each variant at its "
        "learning rate")),
    Figure("attentive_reader_hard.png", ("reader_hard",), lambda r, out: figures.reader(
        r["reader_hard"], out, reader_reference_lines(r["reader_hard"]),
        xs=("step", "minutes"), title="Attentive reader, harder corpus (300+ token passages), "
        "240 units, 30k updates")),
)
# Tables computed rather than read from records.
COMPUTED = {"invariance table": lambda: invariance.format_table(invariance.compute_table())}
# Saved outputs of the measuring scripts, as `make benchmark` and `make diagnostics` save them
# (results/<folder>/<name>.md): the README shows the saved output, so every number there was
# printed by a script run. README block -> file below results/.
BENCHMARKS = ("ops", "train", "reader", "members", "processes")
SAVED_OUTPUTS = {**{f"benchmark {name}": f"benchmarks/{name}.md" for name in BENCHMARKS},
                 "init gradients": "diagnostics/init_gradients.md"}


def saved_blocks(results: str) -> dict[str, str]:
    blocks = {}
    for block, file in SAVED_OUTPUTS.items():
        path = os.path.join(results, file)
        if os.path.exists(path):
            with open(path) as f:
                text = f.read().strip()
            # The scripts' headings sit two levels below the README's section heading.
            blocks[block] = re.sub(r"^#", "###", text, flags=re.MULTILINE)
    return blocks


def load(profile: Profile, names, keep: Callable[[metrics.RunRecord], bool] = lambda run: True
         ) -> dict[str, list[metrics.RunRecord]]:
    """Source name -> its records that `keep` accepts."""
    return {name: [run for run in metrics.load_runs(os.path.join(
                profile.records_root, profile.sources[name].directory)) if keep(run)]
            for name in names}


@functools.cache
def sweep_run_names(sweep: str) -> frozenset[str]:
    """The names of the runs a sweep ("<sweep file>:<name>") defines."""
    return frozenset(run["name"] for run in common.load_config_file(sweep).runs)


def progress_note(sources: Mapping[str, Source],
                  records: Mapping[str, list[metrics.RunRecord]]) -> str:
    """'Done: N of M runs of `<sweep>`.' for each source whose sweep has runs without a finished
    (or diverged) record; '' when every run is done. It counts the whole sweep's runs, whichever
    of them a table shows. Records count by name: one the sweep no longer defines is left out,
    and one made with other settings is the sweep's to refuse (experiments/sweep.py)."""
    lines = []
    for name, source in sources.items():
        planned = sweep_run_names(source.sweep)
        done = sum(run.done and run.name in planned for run in records.get(name, ()))
        if done < len(planned):
            lines.append(f"Done: {done} of {len(planned)} runs of `{source.sweep}`.")
    return "\n".join(lines)


def table_block(table: Table, records: dict[str, list[metrics.RunRecord]],
                sources: Mapping[str, Source] | None = None) -> str:
    """The table made from `records` (source -> the records it reads), with the line saying what
    made the records it shows, and how far each of its own `sources`' sweeps has got where it
    is not complete; NO_RUNS when its own sources hold none."""
    sources = sources or {}
    progress = progress_note({name: sources[name] for name in table.sources if name in sources},
                             records)
    if table.select:
        records = table.select(records)
    # Records of its own sources (of any, for a table with only optional ones).
    own = [records[name] for name in table.sources] or list(records.values())
    if not any(own):
        return NO_RUNS
    block = f"{table.make(records)}\n\n{metrics.provenance_note(_all(records))}"
    return f"{block}\n{progress}" if progress else block


def build(profile: Profile, write_figures: bool = True, computed: bool = True
          ) -> dict[str, str]:
    """Table name -> markdown for every table whose sources the profile has (NO_RUNS when they
    hold no records yet), each with a line saying what made its records; with write_figures,
    writes every figure whose sources all hold records to the profile's out_dir."""
    blocks = {}
    for table in TABLES:
        if table.name in profile.skip or not set(table.sources) <= set(profile.sources):
            continue
        present = tuple(name for name in table.optional if name in profile.sources)
        blocks[table.name] = table_block(table, load(profile, table.sources + present,
                                                     table.reads), profile.sources)
    for figure in FIGURES if write_figures else ():
        if set(figure.sources) <= set(profile.sources):
            records = load(profile, figure.sources, figure.draws)
            if all(records.values()):
                figure.make(records, os.path.join(profile.out_dir, figure.file))
    if profile.records_root == profile.out_dir:  # the committed results
        blocks.update(saved_blocks(profile.records_root))
    if computed:
        blocks.update({name: make() for name, make in COMPUTED.items()})
    return blocks
