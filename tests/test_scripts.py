"""The plot and table scripts, on records written by the real metrics writer.

The records are made up (known numbers), so the tables can be checked exactly; the figures are
checked to be written as PNGs.
"""

from __future__ import annotations

import dataclasses
import math
import os

import numpy as np
import pytest

from lnrepro import metrics
from scripts import figures, reports, stats, tables


def _write_mnist_run(root, name, norm, batch_size, seed, test_errors, num_epochs=None,
                     **settings):
    workdir = os.path.join(root, name)
    num_epochs = num_epochs or len(test_errors)
    metrics.write_config(workdir, {"norm": norm, "batch_size": batch_size, "seed": seed,
                                   "num_epochs": num_epochs, "learning_rate": 1e-3, **settings})
    for epoch, error in enumerate(test_errors):
        metrics.append_metrics(workdir, {
            "round": epoch, "num_rounds": num_epochs, "epoch": epoch + 1,
            "train_nll": 0.1 / (epoch + 1) ** 3, "test_error": error, "round_seconds": 30.0})


def _is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_fig6_table_and_plot(tmp_path):
    root = str(tmp_path / "fig6")
    _write_mnist_run(root, "layer_bs4_seed0", "layer", 4, 0, [0.03, 0.02, 0.010])
    _write_mnist_run(root, "layer_bs4_seed1", "layer", 4, 1, [0.03, 0.02, 0.012])
    _write_mnist_run(root, "batch_bs4_seed0", "batch", 4, 0, [0.05, 0.04, 0.03])
    # Unfinished (1 of 3 epochs) beside a finished seed: left out, not a cut to 1 epoch.
    _write_mnist_run(root, "batch_bs4_seed1", "batch", 4, 1, [0.5], num_epochs=3)
    # A group with no finished run shows its partial runs, with the epochs they reached.
    _write_mnist_run(root, "none_bs4_seed0", "none", 4, 0, [0.04, 0.03], num_epochs=3)
    # A diverged seed is left out too, and said to have diverged, not to be unfinished.
    _write_mnist_run(root, "layer_bs4_seed2", "layer", 4, 2, [0.03], num_epochs=3)
    metrics.write_diverged(os.path.join(root, "layer_bs4_seed2"), 1, "epoch", "train_nll", math.nan)
    records = metrics.load_runs(root)

    text = tables.fig6(records)
    # LN: mean 1.10 and sample std 0.14 of 1.0 and 1.2 (%); NLL 0.1/27 at epoch 3, the first
    # below 0.01; 3 epochs of 30 s.
    assert ("| 4 | layer | 2 (+1 diverged, not shown) | 0.001 | 3 | 1.10 ± 0.14 | "
            "3.7e-03 ± 0.0e+00 | 3, 3 | 1.5 |" in text)
    assert ("| 4 | batch | 1 (+1 unfinished, not shown) | 0.001 | 3 | 3.00 | 3.7e-03 | 3 | 1.5 |"
            in text)
    assert "| 4 | none | 1 | 0.001 | 2 | 3.00 | 1.3e-02 | - | 1.0 |" in text
    assert _is_png(figures.fig6(records, str(tmp_path / "fig6.png")))
    assert _is_png(figures.fig6(records, str(tmp_path / "fig6_clock.png"), x="minutes"))
    # Wall-clock x: the run's own cumulative round seconds, in minutes.
    assert figures.series(records[0], "test_error", "minutes")[0] == [0.5, 1.0, 1.5]


def test_ablation_uses_finished_runs_only(tmp_path):
    root = str(tmp_path / "sizes")
    _write_mnist_run(root, "layer_bs4_seed0", "layer", 4, 0, [0.03, 0.02])
    _write_mnist_run(root, "layer_bs4_seed1", "layer", 4, 1, [0.03, 0.04])
    _write_mnist_run(root, "layer_bs128_seed0", "layer", 128, 0, [0.03, 0.018])
    _write_mnist_run(root, "batch_bs4_seed0", "batch", 4, 0, [0.05, 0.06])
    # Unfinished (1 of 2 epochs): its error must not count.
    _write_mnist_run(root, "batch_bs128_seed0", "batch", 128, 0, [0.5], num_epochs=2)
    # Diverged: its error does not count either, but the cell says it diverged.
    _write_mnist_run(root, "batch_bs4_seed1", "batch", 4, 1, [0.5], num_epochs=2)
    metrics.write_diverged(os.path.join(root, "batch_bs4_seed1"), 1, "epoch", "train_nll", math.inf)
    records = metrics.load_runs(root)

    errors = tables.final_values(records)
    assert errors == {"layer": {4: [0.02, 0.04], 128: [0.018]}, "batch": {4: [0.06]}}
    text = tables.batch_sizes(records)
    assert "| norm | bs 4 | bs 128 |" in text
    assert "| batch | 6.00 (1) (+1 diverged) | - |" in text
    assert "| layer | 3.00 ± 1.41 (2) | 1.80 (1) |" in text
    assert "after 2 epochs: mean (± sample standard deviation) over the finished seeds" in text
    assert _is_png(figures.batch_sizes(records, str(tmp_path / "ablation.png")))
    # Over the last 2 epochs: each run's mean of its last two evaluations, and the caption says so.
    averaged = tables.final_values(records, over_last=2)
    assert averaged["layer"] == {4: [0.025, 0.035], 128: [0.024]}
    text = tables.batch_sizes(records, over_last=2)
    assert "| layer | 3.00 ± 0.71 (2) | 2.40 (1) |" in text
    assert "Test error (%) averaged over the last 2 of 2 epochs: mean" in text
    assert _is_png(figures.batch_sizes(records, str(tmp_path / "averaged.png"), over_last=2))
    with pytest.raises(ValueError, match="no finished or diverged runs"):
        figures.batch_sizes([r for r in records if not r.done], str(tmp_path / "empty.png"))


def test_bn_controls_sit_beside_fig6s_bn_runs_at_their_batch_size(tmp_path):
    bn = {"normalize_logits": True, "bn_eval_statistics": "population"}
    fig6, controls = str(tmp_path / "fig6"), str(tmp_path / "controls")
    for seed in (0, 1):
        _write_mnist_run(fig6, f"batch_bs128_seed{seed}", "batch", 128, seed, [0.03, 0.02],
                         **bn, bn_unbiased_variance=False)
    _write_mnist_run(fig6, "batch_bs4_seed0", "batch", 4, 0, [0.03, 0.02], **bn,
                     bn_unbiased_variance=True)  # no control at batch 4: left out
    _write_mnist_run(fig6, "layer_bs128_seed0", "layer", 128, 0, [0.03, 0.02])  # not BN
    _write_mnist_run(controls, "hidden_only_bs128_seed0", "batch", 128, 0, [0.03, 0.01],
                     **{**bn, "normalize_logits": False}, bn_unbiased_variance=False)
    _write_mnist_run(controls, "other_variance_bs128_seed0", "batch", 128, 0, [0.03, 0.04],
                     **bn, bn_unbiased_variance=True)
    # A control seed that diverged is counted, not dropped; so is a control whose every seed did.
    for name, seed, variance in (("other_variance_bs128_seed1", 1, True),
                                 ("batch_statistics_bs128_seed0", 0, False)):
        _write_mnist_run(controls, name, "batch", 128, seed, [0.03], num_epochs=2,
                         **{**bn, "bn_eval_statistics": "batch"} if "statistics" in name else bn,
                         bn_unbiased_variance=variance)
        metrics.write_diverged(os.path.join(controls, name), 1, "epoch", "train_nll", math.nan)
    # A seed still running is counted too, not shown.
    _write_mnist_run(controls, "hidden_only_bs128_seed1", "batch", 128, 1, [0.5], num_epochs=2,
                     **{**bn, "normalize_logits": False}, bn_unbiased_variance=False)
    control_runs = metrics.load_runs(controls)
    reference = tables.bn_reference(control_runs, metrics.load_runs(fig6))
    assert sorted(r.config["seed"] for r in reference) == [0, 1]  # BN at batch 128 only
    text = tables.bn_controls(control_runs, reference)
    rows = [line for line in text.splitlines() if line.startswith("| 128 |")]
    # Training NLL 0.1/8 = 0.0125 at epoch 2: never below 1e-3 ("-").
    assert rows == [
        "| 128 | Fig. 6's BN (the reference) | 2 | 0.001 | 2 | 2.00 ± 0.00 | 1.3e-02 ± 0.0e+00 "
        "| -, - |",
        "| 128 | batch statistics at evaluation | 0 (+1 diverged) | 0.001 | - | - | - | - |",
        "| 128 | hidden layers only | 1 (+1 unfinished) | 0.001 | 2 | 1.00 | 1.3e-02 | - |",
        "| 128 | n - 1 variance | 1 (+1 diverged) | 0.001 | 2 | 4.00 | 1.3e-02 | - |"]
    assert "| 4 |" not in text


def test_reader_table_and_plots(tmp_path):
    root = str(tmp_path / "fig2")
    for cell, everywhere, errors in (("lstm", False, [0.8, 0.5, 0.45]),
                                     ("lnlstm", False, [0.6, 0.25, 0.3])):
        workdir = os.path.join(root, cell)
        metrics.write_config(workdir, {"cell": cell, "bn_everywhere": everywhere,
                                       "ln_gain_init": 1.0, "num_updates": 300,
                                       "eval_every": 100, "learning_rate": 2e-3})
        for i, error in enumerate(errors):
            metrics.append_metrics(workdir, {"round": i, "num_rounds": 3, "step": 100 * (i + 1),
                                             "valid_error": error, "round_seconds": 20.0})
    # A diverged LN-LSTM seed: left out of the numbers, and counted as diverged.
    workdir = os.path.join(root, "lnlstm_seed1")
    metrics.write_config(workdir, {"cell": "lnlstm", "bn_everywhere": False, "seed": 1,
                                   "ln_gain_init": 1.0, "num_updates": 300, "eval_every": 100,
                                   "learning_rate": 2e-3})
    metrics.append_metrics(workdir, {"round": 0, "num_rounds": 3, "step": 100,
                                     "valid_error": 0.9, "round_seconds": 20.0})
    metrics.write_diverged(workdir, 1, "evaluation", "valid_nll", math.inf)
    records = metrics.load_runs(root)
    assert "| 1 | 1 (+1 diverged) | 300 |" in tables.gain(records)
    text = tables.reader(records)
    # Updates to 70% error: the LSTM passes it at its second evaluation, the LN-LSTM at its first;
    # 3 rounds of 20 s is one minute.
    assert "| LSTM | 1 | 0.002 | 300 | 45.0 | 45.0 | 200 | 1 |" in text
    assert "| LN-LSTM | 1 (+1 diverged) | 0.002 | 300 | 25.0 | 30.0 | 100 | 1 |" in text
    assert ("| LN-LSTM | 1 (+1 diverged) | 0.002 | 300 | 25.0 | 30.0 | - | 1 |"
            in tables.reader(records, 0.2))
    lines = {"chance": 0.875, "sentence match": 0.15}
    assert _is_png(figures.reader(records, str(tmp_path / "fig2.png"), lines,
                                  xs=("step", "minutes")))
    assert _is_png(figures.gain(records, str(tmp_path / "gain.png"), lines))
    # The gain table shows the LN-LSTM's runs only, and its Made-by line counts those: the
    # diverged seed among them, the LSTM not.
    (gain_table,) = [table for table in reports.TABLES if table.name == "gain table"]
    block = reports.table_block(gain_table, {"gain": [], "fig2": records})
    assert block.startswith(tables.gain(records))
    assert block.endswith("\n\nMade by (commit, backend, matmul precision): unrecorded (2 runs).")


def test_runs_that_diverged_in_their_first_round_are_still_reported(tmp_path):
    """A run that diverges before its first evaluation has no metric line, only its
    diverged.json: it is a result, and every table, figure and claim must say so."""
    root = str(tmp_path / "fig6")
    _write_mnist_run(root, "layer_bs4_seed0", "layer", 4, 0, [0.03, 0.02])
    _write_mnist_run(root, "layer_bs4_seed1", "layer", 4, 1, [0.03, 0.02])
    for seed in (0, 1):
        workdir = os.path.join(root, f"batch_bs4_seed{seed}")
        metrics.write_config(workdir, {"norm": "batch", "batch_size": 4, "seed": seed,
                                       "num_epochs": 2, "learning_rate": 1e-3})
        metrics.write_diverged(workdir, 0, "epoch", "train_loss", math.nan)
    records = metrics.load_runs(root)
    assert sorted(r.name for r in records if r.diverged) == ["batch_bs4_seed0", "batch_bs4_seed1"]

    assert "| 4 | batch | 0 (+2 diverged, not shown) | 0.001 | - | - | - | - | - |" in (
        tables.fig6(records))
    assert "| batch | - (+2 diverged) |" in tables.batch_sizes(records)
    claim = next(c for c in reports.CLAIMS
                 if c.text == "bs 4: LN ends with lower test error than BN")
    row = tables.claims([claim], {"fig6": records})
    assert "| 2, 2 | none finished (+2 diverged) | - | - |" in row
    assert "**not testable (a side has diverged runs and no finished one)**" in row
    assert tables.seeds_to_settle([claim], {"fig6": records}).count("\n") == 1  # header only
    assert _is_png(figures.fig6(records, str(tmp_path / "fig6.png")))
    assert _is_png(figures.batch_sizes(records, str(tmp_path / "sizes.png")))

    reader_root = str(tmp_path / "fig2")
    workdir = os.path.join(reader_root, "lnlstm_seed0")
    metrics.write_config(workdir, {"cell": "lnlstm", "bn_everywhere": False, "seed": 0,
                                   "ln_gain_init": 1.0, "num_updates": 300, "eval_every": 100,
                                   "learning_rate": 2e-3})
    metrics.write_diverged(workdir, 0, "evaluation", "valid_nll", math.inf)
    reader = metrics.load_runs(reader_root)
    assert "| LN-LSTM | 0 (+1 diverged) | 0.002 | - | - | - | - | - |" in tables.reader(reader)
    assert "| 1 | 0 (+1 diverged) | - | - | - | - |" in tables.gain(reader)
    assert _is_png(figures.reader(reader, str(tmp_path / "fig2.png"), {"chance": 0.875}))


def test_update_results_rewrites_only_the_marked_blocks(tmp_path):
    from scripts import update_results
    results = tmp_path / "results"
    _write_mnist_run(str(results / "pi_mnist" / "fig6"), "layer_bs4_seed0", "layer", 4, 0,
                     [0.03, 0.02, 0.010])
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- fig6 table -->\nold table\n<!-- /fig6 table -->\n"
                      "<!-- reader table -->\nold\n<!-- /reader table -->\nend\n")
    args = (str(readme), str(results))
    assert update_results.update_readme(*args, check=True) == 1  # out of date
    assert update_results.update_readme(*args, check=False) == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- fig6 table -->\n| batch | norm |")
    assert "| 4 | layer | 1 | 0.001 | 3 | 1.00 |" in text and "old table" not in text
    assert f"<!-- reader table -->\n{reports.NO_RUNS}\n<!-- /reader table -->\nend\n" in text
    assert _is_png(str(results / "pi_mnist_fig6.png"))
    assert update_results.update_readme(*args, check=True) == 0  # now current


def test_readme_tables_match_the_committed_records():
    """The README's generated tables are what the records in results/ say (run `make results`
    after committing records). The invariance table is left out: it is computed, and its
    round-off digits depend on the CPU."""
    from scripts import update_results
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    blocks = reports.build(update_results.full_profile(os.path.join(repo, "results")),
                           write_figures=False, computed=False)
    with open(os.path.join(repo, "README.md")) as f:
        readme = f.read()
    for name in blocks:
        assert f"<!-- {name} -->" in readme, f"README.md has no block for the {name}."
    assert update_results.replace_blocks(readme, blocks) == readme, \
        "README.md's results tables are out of date: run `make results`."


def test_welch_and_fisher_match_hand_computed_values():
    # a - b = -3; standard error sqrt(1/3 + 1/3); t = -3.674 on 4 degrees of freedom.
    c = stats.welch([1, 2, 3], [4, 5, 6])
    assert c.effect == -3 and c.test == "Welch"
    assert c.p == pytest.approx(0.02131, abs=1e-5)
    assert (c.low, c.high) == pytest.approx((-3 - 2.7764 * 0.81650, -3 + 2.7764 * 0.81650),
                                            abs=1e-3)
    assert stats.verdict(c, -1) == "holds" and stats.verdict(c, +1) == "does not hold"
    assert stats.welch([1], [2, 3]) is None
    assert stats.welch([1, 1], [2, 2]) == stats.Comparison(-1.0, -1.0, -1.0, 0.0, "Welch")
    assert stats.rank_test([float("inf")] * 2, [float("inf")] * 2).effect == 0.0
    assert stats.verdict(None, -1).startswith("not settled")
    # 3 of 3 against 0 of 3: one table in 20 is at least this extreme, times two sides.
    f = stats.fisher([True] * 3, [False] * 3)
    assert f.p == pytest.approx(0.1) and f.effect == 1.0
    assert stats.verdict(f, +1) == "not settled"
    # Ranks: 3 against 3 completely separated is 2 of the 20 orderings, p = 0.1 (3 seeds a side
    # can never reach 0.05), and infinite (censored) values are fine.
    r = stats.rank_test([1, 2, float("-inf")], [4, 5, 6])
    assert r.p == pytest.approx(0.1) and r.effect == 1 - 5 and r.test == "Mann-Whitney"
    nan = stats.Comparison(0.0, 0.0, 0.0, float("nan"), "Welch")
    assert stats.verdict(nan, -1) == "not settled"


def test_seeds_for_power_matches_the_textbook_table():
    # Two groups with standard deviation 1 whose means differ by Cohen's d: the classic sample
    # sizes per group for a two-sided t-test at alpha 0.05 and 80% power (Cohen 1988).
    unit = [math.sqrt(0.5), -math.sqrt(0.5)]
    for d, seeds in ((0.2, 394), (0.5, 64), (0.8, 26)):
        assert stats.seeds_for_power([x + d for x in unit], unit) == seeds
    # More power, more seeds; no difference or no spread has no answer.
    assert stats.seeds_for_power([x + 0.5 for x in unit], unit, power=0.9) == 86
    assert stats.seeds_for_power(unit, unit) is None
    assert stats.seeds_for_power([x + 1e-3 for x in unit], unit, most=100) is None
    # Two distinct constants: any 2 seeds tell them apart. One seed has no spread to go on.
    assert stats.seeds_for_power([1.0, 1.0], [2.0, 2.0]) == 2
    with pytest.raises(ValueError, match="2 seeds a side"):
        stats.seeds_for_power([1.0], unit)


def test_seeds_for_power_by_resampling_agrees_with_the_t_test_and_exact_tests():
    from scipy import stats as scipy_stats
    # Drawn from many seeds of a normal with d = 0.8, resampling finds what the noncentral t
    # gives (26 a side), up to its grid (25, 30) and its 400 draws.
    unit = list(scipy_stats.norm.ppf((np.arange(400) + 0.5) / 400))
    assert stats.seeds_for_power([x + 0.8 for x in unit], unit) == 26
    assert stats.seeds_for_power_by_resampling([x + 0.8 for x in unit], unit,
                                               stats.welch) in (25, 30)
    # Complete separation: the exact rank test and Fisher's test need 4 seeds a side (p = 2/70;
    # at 3 a side p = 2/20), and every resampled experiment is separated too.
    assert stats.seeds_for_power_by_resampling([0.0] * 3, [math.inf] * 3, stats.rank_test) == 4
    assert stats.seeds_for_power_by_resampling([True] * 3, [False] * 3, stats.fisher) == 4
    # Groups drawn from the same values: no number of seeds settles it.
    assert stats.seeds_for_power_by_resampling([1.0, 2.0], [1.0, 2.0], stats.rank_test,
                                               draws=50, grid=(2, 5, 10)) is None


def test_seeds_to_settle_lists_every_open_claim(tmp_path):
    root = str(tmp_path / "fig6")
    values = {"layer": (1.0, 1.2, 1.1), "batch": (1.1, 1.3, 1.15), "none": (3.0, 3.1, 3.2)}
    for norm, per_seed in values.items():
        for seed, value in enumerate(per_seed):
            workdir = os.path.join(root, f"{norm}{seed}")
            metrics.write_config(workdir, {"norm": norm, "seed": seed, "num_epochs": 1})
            metrics.append_metrics(workdir, {"round": 0, "num_rounds": 1, "x": value})
    records = {"fig6": metrics.load_runs(root)}

    def claim(text, other, measure=lambda run: run.rows[-1]["x"]):
        return tables.Claim(text, "fig6", {"norm": "layer"}, {"norm": other}, measure, "x", -1)
    open_claim = claim("LN below BN", "batch")
    settled = claim("LN below none", "none")
    censored = claim("LN below BN, censored", "batch",
                     lambda run: math.inf if run.config["norm"] == "batch" else 1.0)
    reversed_claim = dataclasses.replace(open_claim, text="LN above BN", sign=+1)
    # Fisher: every LN seed below 2 against no baseline seed (p = 0.1 at 3 a side); and against
    # BN, every seed of both (no difference: nothing to resample).
    below_2 = dataclasses.replace(claim("LN below 2 more often than none", "none",
                                        lambda run: run.rows[-1]["x"] < 2), test="fisher", sign=+1)
    no_difference = dataclasses.replace(below_2, text="LN below 2 more often than BN",
                                        b={"norm": "batch"})
    # Log-rank, one BN seed never getting there (1.3: censored): p = 0.4 at 3 a side.
    times = dataclasses.replace(claim("LN there sooner than BN", "batch", lambda run: (
        math.inf if run.rows[-1]["x"] > 1.25 else run.rows[-1]["x"])), test="logrank")
    rows = tables.seeds_to_settle([open_claim, settled, censored, reversed_claim, below_2,
                                   no_difference, times], records).splitlines()[2:]
    # Cohen's d of 0.0833 / 0.102 = 0.82: about 25 seeds a side, as in the textbook table; the
    # observed difference points to the verdict those seeds would likely give. The censored
    # claim goes to the rank test, and its estimate to resampling: 4 seeds a side separate
    # 1.0 from inf (3 cannot). The settled claim is not listed.
    t, resampled = "means and spreads (t)", "resampling the seeds"
    assert rows == [f"| LN below BN | x | 3, 3 | -0.0833 | 0.1, 0.104 | 25 | {t} | holds |",
                    f"| LN below BN, censored | x | 3, 3 | -inf (medians) | - | 4 | {resampled} "
                    "| holds |",
                    f"| LN above BN | x | 3, 3 | -0.0833 | 0.1, 0.104 | 25 | {t} | does not hold |",
                    f"| LN below 2 more often than none | x | 3, 3 | +100 points of seeds | - | 4 "
                    f"| {resampled} | holds |",
                    "| LN below 2 more often than BN | x | 3, 3 | +0 points of seeds | - | - | "
                    f"{resampled} | - |",
                    "| LN there sooner than BN | x | 3, 3 | -0.05 (medians) | - | 25 | "
                    f"{resampled} | holds |"]


def test_logrank_matches_the_textbook_sums_and_takes_censored_times():
    # A reaches its target at 1 and 2; B at 3 and never (inf). At each event time, with n at
    # risk, n_a of them in A, and one event: E_a = n_a / n and V = (n_a / n)(1 - n_a / n).
    # t=1: n=4, n_a=2 -> E 1/2, V 1/4; t=2: n=3, n_a=1 -> E 1/3, V 2/9; t=3: n_a=0 -> 0, 0.
    observed_minus_expected, variance = 2 - (1 / 2 + 1 / 3), 1 / 4 + 2 / 9
    chi2 = observed_minus_expected ** 2 / variance
    r = stats.logrank([1, 2], [3, float("inf")])
    assert r.test == "log-rank" and r.p == pytest.approx(math.erfc(math.sqrt(chi2 / 2)), rel=1e-9)
    assert r.effect == 1.5 - float("inf") and stats.verdict(r, -1) == "not settled"
    # No seed of either group got there: nothing to test.
    none = stats.logrank([float("inf")] * 2, [float("inf")] * 3)
    assert math.isnan(none.p) and none.effect == 0.0 and stats.verdict(none, -1) == "not settled"
    tied = stats.logrank([5, 5], [5, 5])  # all at once: no variance, and no warning either
    assert math.isnan(tied.p) and stats.verdict(tied, -1) == "not settled"
    # Every A seed long before every B seed, 5 a side: the test separates them.
    fast = stats.logrank([1, 2, 3, 4, 5], [10, 11, 12, float("inf"), float("inf")])
    assert fast.p < 0.01 and stats.verdict(fast, -1) == "holds"
    assert stats.logrank([1], [2, 3]) is None


def test_claims_table_states_each_claim_with_its_statistics(tmp_path):
    root = str(tmp_path / "fig6")
    for seed, (ln, bn) in enumerate(((0.010, 0.020), (0.011, 0.022), (0.012, 0.021))):
        _write_mnist_run(root, f"layer_seed{seed}", "layer", 4, seed, [0.05, ln])
        _write_mnist_run(root, f"batch_seed{seed}", "batch", 4, seed, [0.05, bn])
    claim = tables.Claim("LN below BN", "fig6", {"norm": "layer"}, {"norm": "batch"},
                         lambda run: 100 * run.rows[-1]["test_error"], "final test error (%)", -1)
    text = tables.claims([claim], {"fig6": metrics.load_runs(root)},
                         {"fig6": "results/pi_mnist/fig6/"})
    # Means 1.1 and 2.1, both sample std 0.1: A - B = -1.0, t = -12.2 on 4 dof, p = 0.00026.
    row = next(line for line in text.splitlines() if line.startswith("| LN below BN"))
    assert "| 1, 1.1, 1.2 | 2, 2.2, 2.1 | -1 [" in row
    assert row.endswith("| Welch, 0.00026 | **holds** | `results/pi_mnist/fig6/` |")
    # A claim whose B group comes from another source names both.
    across = dataclasses.replace(claim, source="controls", b_source="fig6")
    text = tables.claims([across], {"controls": metrics.load_runs(root),
                                    "fig6": metrics.load_runs(root)},
                         {"fig6": "results/pi_mnist/fig6/"})
    assert text.splitlines()[-1].endswith("| `controls`, `results/pi_mnist/fig6/` |")
    # A censored value (inf: never reached) turns the t-test into a rank test.
    never = tables.Claim("LN below BN", "fig6", {"norm": "layer"}, {"norm": "batch"},
                         lambda run: 1.0 if run.config["norm"] == "layer" else float("inf"),
                         "epochs", -1)
    text = tables.claims([never], {"fig6": metrics.load_runs(root)})
    assert "| 1, 1, 1 | inf, inf, inf | -inf (medians) | Mann-Whitney, 0.1 | **not settled** |" \
        in text
    # The NLL "settles" measure ignores a lucky early dip.
    run = metrics.load_runs(root)[0]
    assert tables.first_row_staying_below(run, "train_nll", 0.05, "epoch") == 2
    assert tables.first_row_below(run, "train_nll", 0.5, "epoch") == 1


def test_the_ablation_is_tested_at_both_horizons_each_on_its_own_records(tmp_path):
    """The ablation's claims at 3 epochs read `batch_sizes` and compare final errors; at 20
    epochs they read `batch_sizes_long` and compare the mean of the last 5 epochs, which one
    bad final epoch cannot decide. A horizon without records for a claim's batch size shows no
    row for it."""
    curves = {  # source -> norm -> one test-error curve per seed
        "batch_sizes": {"layer": [[0.05, e] for e in (0.020, 0.021, 0.022)],
                        "batch": [[0.05, e] for e in (0.030, 0.032, 0.031)]},
        # LN is lower on every epoch but the last, where it jumps above BN.
        "batch_sizes_long": {"layer": [[0.05] + [e] * 4 + [0.03] for e in (0.010, 0.011, 0.009)],
                             "batch": [[0.05] + [e] * 5 for e in (0.020, 0.021, 0.022)]}}
    records = {}
    for source, by_norm in curves.items():
        root = str(tmp_path / source)
        for norm, per_seed in by_norm.items():
            for seed, errors in enumerate(per_seed):
                _write_mnist_run(root, f"{norm}_bs2_seed{seed}", norm, 2, seed, errors)
        records[source] = metrics.load_runs(root)
    text = tables.claims(reports.CLAIMS, records)
    rows = {line.split(" | ")[0][2:]: line for line in text.splitlines()[2:]}
    assert set(rows) == {"ablation, 3 epochs, bs 2: LN ends with lower test error than BN",
                         "ablation, 20 epochs, bs 2: LN ends with lower test error than BN"}
    short = rows["ablation, 3 epochs, bs 2: LN ends with lower test error than BN"]
    assert "| 2, 2.1, 2.2 | 3, 3.2, 3.1 | -1 [" in short and "**holds**" in short
    long = rows["ablation, 20 epochs, bs 2: LN ends with lower test error than BN"]
    assert "| mean test error, last 5 epochs (%) |" in long
    assert "| 1.4, 1.48, 1.32 | 2, 2.1, 2.2 | -0.7 [" in long and "**holds**" in long
    assert long.endswith("| `batch_sizes_long` |")


def test_updates_to_a_target_count_from_the_records_and_show_in_full(tmp_path):
    root = str(tmp_path / "long")
    for name, cell, errors in (("ln0", "lnlstm", [0.5, 0.3, 0.1]),
                               ("ln1", "lnlstm", [0.2, 0.1, 0.1]),
                               ("lstm0", "lstm", [0.7, 0.6, 0.5]),
                               ("lstm1", "lstm", [0.7, 0.3, 0.2])):
        workdir = os.path.join(root, name)
        metrics.write_config(workdir, {"cell": cell, "bn_everywhere": False,
                                       "num_updates": 15000, "eval_every": 5000})
        for i, error in enumerate(errors):
            metrics.append_metrics(workdir, {"round": i, "num_rounds": 3,
                                             "step": 5000 * (i + 1), "valid_error": error})
    records = {"reader_long": metrics.load_runs(root)}
    measure, _ = reports.UPDATES_TO_30
    # 30% reached exactly counts as reached (as in the reader tables); never reached is inf.
    assert sorted(measure(r) for r in records["reader_long"]) == [5000, 10000, 10000,
                                                                  float("inf")]
    claim = next(c for c in reports.CLAIMS if c.text.startswith("30k updates: LN-LSTM gets below "
                                                                "30% in fewer updates than LSTM"))
    row = tables.claims([claim], records).splitlines()[-1]
    # Times to a target, some censored: the log-rank test.
    assert "| 10000, 5000 | inf, 10000 | -inf (medians) | log-rank," in row
    assert [tables._format_number(x, "+") for x in (-12134.5, 999.7, 1.2345)] == [
        "-12100", "+1000", "+1.23"]
    # An uncensored comparison of update counts: its interval is written out too.
    assert tables._format_effect(stats.Comparison(100.0, -12134.0, 12300.4, 0.98, "Welch")) == \
        "+100 [-12100, +12300]"


def test_batch_4_claims_also_compare_the_last_10_epochs_mean(tmp_path):
    root = str(tmp_path / "fig6")
    # LN steady at 2% and 2.1%; BN at 1.5% but for one swing to 6.5% in its last epoch, and one
    # seed that ends on a low epoch after a run of high ones.
    curves = {"ln0": ("layer", [0.02] * 12), "ln1": ("layer", [0.021] * 12),
              "bn0": ("batch", [0.015] * 11 + [0.065]),
              "bn1": ("batch", [0.015] + [0.04] * 10 + [0.015])}
    for name, (norm, errors) in curves.items():
        workdir = os.path.join(root, name)
        metrics.write_config(workdir, {"norm": norm, "batch_size": 4, "num_epochs": 12})
        for i, error in enumerate(errors):
            metrics.append_metrics(workdir, {"round": i, "num_rounds": 12, "epoch": i + 1,
                                             "test_error": error})
    records = {"fig6": metrics.load_runs(root)}
    measure, _ = reports.TEST_ERROR_LAST_10
    # Only the last 10 epochs count, each with the same weight.
    assert sorted(round(measure(r), 6) for r in records["fig6"]) == [2.0, 2.0, 2.1, 3.75]
    final, last_10 = (next(c for c in reports.CLAIMS if c.text == text) for text in (
        "bs 4: LN ends with lower test error than BN",
        "bs 4: LN's test error over the last 10 epochs is lower than BN's"))
    assert "| 2, 2.1 | 6.5, 1.5 |" in tables.claims([final], records)
    assert "| 2, 2.1 | 2, 3.75 |" in tables.claims([last_10], records)


def _fake_sweep(sweep: str, workdir_root: str, records_dir: str, reuse_from=()) -> None:
    """Stands in for scripts.reproduce.run_sweep: writes a short finished record per run, with
    the config its run would record. Every directory it may reuse records from must exist."""
    import importlib
    assert all(os.path.isdir(directory) for directory in reuse_from), reuse_from
    from experiments import sweep as sweep_runner
    path, name = sweep.split(":")
    plan = importlib.import_module(path[:-3].replace("/", ".")).get_config(name)
    for run in plan.runs:
        # The whole config a real run records: base config, overrides, the task's defaults.
        config = sweep_runner.resolved_config(plan, dict(run["overrides"])).to_dict()
        workdir = os.path.join(records_dir, run["name"])
        metrics.write_config(workdir, config)
        if records_dir.endswith("batch_sizes") and run["name"] == "batch_bs2_seed0":
            # Diverged in its first epoch: the final-value tables and figures must count it.
            metrics.write_diverged(workdir, 0, "epoch", "train_loss", math.nan)
            continue
        rounds = config.get("num_epochs") or config["num_updates"] // config["eval_every"]
        for i in range(rounds):
            metrics.append_metrics(workdir, {
                "round": i, "num_rounds": rounds, "epoch": i + 1, "step": 100 * (i + 1),
                "train_nll": 0.1 / (i + 1), "test_error": 0.02, "valid_error": 0.8 - 0.01 * i,
                "valid_nll": 1.0 / (i + 1), "round_seconds": 1.0})


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_reproduce_builds_every_figure_and_table_from_the_sweeps(tmp_path, monkeypatch, profile):
    from scripts import reproduce
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(reproduce, "run_sweep",
                        lambda *args: (calls.append(args), _fake_sweep(*args)))
    monkeypatch.setattr(reports, "reader_reference_lines", lambda records: {"chance": 0.875})
    plan = reports.PROFILES[profile]
    report = reproduce.reproduce(plan)
    if profile == "full":  # Fig. 6 takes the search's own runs instead of training them again
        fig6 = next(call for call in calls if call[0].endswith(":fig6"))
        assert fig6[2:] == ("results/pi_mnist/fig6", ("results/pi_mnist/lr_search_full",))
    assert "| 4 | layer |" in report and "| LN-LSTM |" in report
    expected = {"pi_mnist_fig6.png", "pi_mnist_fig6_wallclock.png", "attentive_reader_fig2.png"}
    if profile == "full":
        expected |= {"attentive_reader_gain.png", "pi_mnist_batch_sizes.png",
                     "pi_mnist_batch_sizes_long.png", "pi_mnist_lr_search.png",
                     "attentive_reader_long.png", "attentive_reader_hard.png"}
    assert {f for f in os.listdir(plan.out_dir) if f.endswith(".png")} == expected
    for name in expected:
        assert _is_png(os.path.join(plan.out_dir, name)), name
    assert os.path.exists(os.path.join(plan.out_dir, "fig6_table.md"))
    if profile == "full":  # read through reports.load: diverged records reach the tables
        assert "| batch | - | 2.00 ± 0.00 (2) (+1 diverged) |" in report


def test_every_figure_and_table_reads_sources_its_profiles_define():
    for item in reports.TABLES + reports.FIGURES:
        for name in item.sources + getattr(item, "optional", ()):
            assert name in reports.FULL_SOURCES, (item, name)
    for plan in reports.PROFILES.values():
        assert set(plan.sweeps) <= set(plan.sources)


def test_learning_rate_table_says_how_many_rates_each_choice_is_the_best_of():
    """A search still under way must not read as finished: the Chosen line counts the rates."""
    from lnrepro import metrics
    from scripts import tables

    def record(norm, lr, error, nll=0.1):
        config = {"norm": norm, "batch_size": 128, "learning_rate": lr, "seed": 0,
                  "num_epochs": 1}
        return metrics.RunRecord(f"{norm}_{lr}", config, [
            {"round": 0, "epoch": 1, "valid_error": error, "valid_nll": nll}])

    second_seed = record("layer", 3e-3, 0.016)
    second_seed.config["seed"] = 1
    text, chosen = tables.mnist_learning_rates(
        [record("layer", 1e-3, 0.02), second_seed, record("layer", 3e-3, 0.01),
         record("none", 1e-3, 0.03)])
    assert chosen == {("layer", 128): 3e-3, ("none", 128): 1e-3}
    # The mean over seeds is what is compared; each seed's value is shown beside it.
    assert "| 128 | layer | 0.003 | 1 | 2 | 1.30 | 1.00, 1.60 |" in text
    # An exact tie in error (whatever the float means' last bits) goes to the lower NLL.
    tied = [record("batch", 1e-4, 0.012, nll=0.06), record("batch", 1e-4, 0.0132, nll=0.06),
            record("batch", 3e-3, 0.013, nll=0.05), record("batch", 3e-3, 0.0122, nll=0.05)]
    tied[1].config["seed"] = tied[3].config["seed"] = 1
    assert tables.mnist_learning_rates(tied)[1] == {("batch", 128): 3e-3}
    for r in tied[2:]:
        r.rows[-1]["valid_nll"] = 0.07
    assert tables.mnist_learning_rates(tied)[1] == {("batch", 128): 1e-4}
    assert text.endswith("Chosen: layer at batch 128: 0.003 (best of 2 rates), "
                         "none at batch 128: 0.001 (best of 1 rate)")


def test_a_diverged_rate_is_listed_drawn_and_never_chosen(tmp_path):
    """A diverged seed must not vanish from the search (its rate would then rest on the seeds
    that survived), nor win it."""
    from lnrepro import metrics
    from scripts import tables

    def record(norm, lr, seed, error, diverged_round=None):
        config = {"norm": norm, "batch_size": 4, "learning_rate": lr, "seed": seed,
                  "num_epochs": 2}
        rows = [{"round": i, "epoch": i + 1, "valid_error": error, "valid_nll": 0.1}
                for i in range(2 if diverged_round is None else diverged_round)]
        diverged = (None if diverged_round is None else
                    {"round": diverged_round, "key": "train_loss", "value": "nan"})
        return metrics.RunRecord(f"{norm}_{lr}_{seed}", config, rows, diverged=diverged)

    records = [record("none", 1e-4, 0, 0.02), record("none", 1e-4, 1, 0.022),
               # The lowest error of the search, but its other seed diverged.
               record("none", 3e-3, 0, 0.01), record("none", 3e-3, 1, 0.0, diverged_round=1),
               record("batch", 3e-3, 0, 0.0, diverged_round=0)]
    text, chosen = tables.mnist_learning_rates(records)
    assert chosen == {("none", 4): 1e-4}
    assert "| 4 | none | 0.003 | 2 | 2 | diverged | 1.00, diverged (epoch 2) |" in text
    assert "| 4 | batch | 0.003 | 2 | 1 | diverged | diverged (epoch 1) |" in text
    assert text.endswith("Chosen: batch at batch 4: none (all 1 rate diverged), "
                         "none at batch 4: 0.0001 (best of 2 rates)")
    assert _is_png(figures.learning_rates(records, str(tmp_path / "lr.png")))
    with pytest.raises(ValueError, match="run the lr_search_full sweep"):
        figures.learning_rates([dataclasses.replace(records[0], rows=records[0].rows[:1])],
                               str(tmp_path / "none.png"))

    reader = metrics.RunRecord("lnlstm_4e-3", {
        "cell": "lnlstm", "bn_everywhere": False, "learning_rate": 4e-3, "num_updates": 1500,
        "eval_every": 500}, [{"round": 0, "step": 500, "valid_error": 0.7}],
        diverged={"round": 1, "key": "valid_nll", "value": "inf"})
    assert ("| LN-LSTM | 0.004 | 1500 | diverged (updates 500-1000) | 70.0 |"
            in tables.reader_learning_rates([reader]))


def test_saved_outputs_become_readme_blocks_with_their_headings_moved_down(tmp_path):
    """make benchmark / make diagnostics save script outputs; the README shows them as saved,
    headings two levels down, and a missing file gives no block (the README keeps its own)."""
    os.makedirs(tmp_path / "diagnostics")
    (tmp_path / "diagnostics" / "init_gradients.md").write_text(
        "Measured today by `scripts.init_gradients`.\n\n# Grid\n| a |\n|---|\n| 1 |\n")
    blocks = reports.saved_blocks(str(tmp_path))
    assert set(blocks) == {"init gradients"}
    assert blocks["init gradients"].splitlines()[2] == "### Grid"
    assert blocks["init gradients"].endswith("| 1 |")
    assert set(reports.SAVED_OUTPUTS) == {"init gradients"} | {
        f"benchmark {name}" for name in reports.BENCHMARKS}


def test_tables_say_how_far_an_incomplete_sweep_has_got(tmp_path):
    fig6 = reports.Source("configs/pi_mnist_sweeps.py:fig6", "fig6")
    root = str(tmp_path / "fig6")
    for name, norm, errors, epochs in (("layer_bs128_seed0", "layer", [0.02, 0.01], 2),
                                       ("batch_bs128_seed0", "batch", [0.02, 0.01], 2),
                                       ("none_bs128_seed0", "none", [0.02], 2),  # still running
                                       ("layer_bs128_seed99", "layer", [0.02], 1)):  # not planned
        _write_mnist_run(root, name, norm, 128, 0, errors, num_epochs=epochs)
    # A diverged run is done: re-running it would diverge again.
    _write_mnist_run(root, "none_bs4_seed0", "none", 4, 0, [0.02], num_epochs=2)
    metrics.write_diverged(os.path.join(root, "none_bs4_seed0"), 1, "epoch", "train_nll", math.nan)
    records = {"fig6": metrics.load_runs(root)}
    assert (reports.progress_note({"fig6": fig6}, records)
            == "Done: 3 of 60 runs of `configs/pi_mnist_sweeps.py:fig6`.")
    table = reports.Table("fig6 table", ("fig6",), lambda r: "| a table |")
    assert reports.table_block(table, records, {"fig6": fig6}).splitlines()[-2:] == [
        "Made by (commit, backend, matmul precision): unrecorded (5 runs).",
        "Done: 3 of 60 runs of `configs/pi_mnist_sweeps.py:fig6`."]
    # A complete sweep says nothing more.
    gain = reports.Source("configs/attentive_reader_sweeps.py:gain", "gain")
    root = str(tmp_path / "gain")
    for seed in range(3):
        _write_mnist_run(root, f"lnlstm_gain0.1_seed{seed}", "layer", 128, seed, [0.02])
    assert reports.progress_note({"gain": gain}, {"gain": metrics.load_runs(root)}) == ""


def test_runtimes_name_the_cores_each_run_could_use(tmp_path):
    root = str(tmp_path / "fig6")
    for seed in (0, 1, 2, 3):
        _write_mnist_run(root, f"layer_bs4_seed{seed}", "layer", 4, seed, [0.03] * (seed + 1),
                         num_epochs=seed + 1)
    _write_mnist_run(root, "layer_bs2_seed0", "layer", 2, 0, [0.03] * 5, num_epochs=5)
    machine = {"backend": "cpu", "cpu_count": 2, "matmul_precision": "highest", "commit": None,
               "dirty": None}
    # Seeds 1 and 3 ran alone; seed 2 started pinned to one core (taskset) and resumed on both.
    for run in ("layer_bs4_seed1", "layer_bs4_seed3", "layer_bs2_seed0"):
        metrics.append_provenance(os.path.join(root, run), 0, {**machine, "cpus_usable": 2})
    metrics.append_provenance(os.path.join(root, "layer_bs4_seed2"), 0,
                              {**machine, "cpus_usable": 1})
    metrics.append_provenance(os.path.join(root, "layer_bs4_seed2"), 1,
                              {**machine, "cpus_usable": 2})
    records = {"fig6": metrics.load_runs(root)}

    text = tables.runtimes(records, [("Fig. 6, batch 4", "fig6", {"batch_size": 4}),
                                     ("Fig. 6, batch 128", "fig6", {"batch_size": 128}),
                                     ("batch 2 or 4", "fig6", {"batch_size": (2, 4)})])
    # Seeds 0-3 have 1-4 rounds of 30 s. One row per machine, so no median mixes a pinned core
    # with the whole machine: seeds 1 and 3 (1.0 and 2.0 min) share one. No batch-128 runs, no
    # row. A tuple selects any of its values: the batch-2 run (2.5 min) joins seeds 1 and 3.
    assert text.splitlines()[2:] == [
        "| Fig. 6, batch 4 | 1 | 1.5 | 0.0 | cpu (1 of 2 cores) then cpu (2 cores) |",
        "| Fig. 6, batch 4 | 2 | 1.5 | 0.1 | cpu (2 cores) |",
        "| Fig. 6, batch 4 | 1 | 0.5 | 0.0 | unrecorded |",
        "| batch 2 or 4 | 1 | 1.5 | 0.0 | cpu (1 of 2 cores) then cpu (2 cores) |",
        "| batch 2 or 4 | 3 | 2.0 | 0.1 | cpu (2 cores) |",
        "| batch 2 or 4 | 1 | 0.5 | 0.0 | unrecorded |"]
    assert tables.machine_label({"backend": "cpu"}) == "cpu"  # a record from before cpu_count
    assert tables.machine_label({"backend": "gpu", "device_kind": "NVIDIA H100",
                                 "device_count": 1}) == "NVIDIA H100 (1 device)"
