"""The plot and table scripts, on records written by the real metrics writer.

The records are made up (known numbers), so the tables can be checked exactly; the figures are
checked to be written as PNGs.
"""

from __future__ import annotations

import os

import pytest

from lnrepro import metrics
from scripts import plot_ablation, plot_curves, plot_reader, results_table


def _write_mnist_run(root, name, norm, batch_size, seed, test_errors, num_epochs=None):
    workdir = os.path.join(root, name)
    num_epochs = num_epochs or len(test_errors)
    metrics.write_config(workdir, {"norm": norm, "batch_size": batch_size, "seed": seed,
                                   "num_epochs": num_epochs})
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
    records = metrics.load_runs(root)

    text = results_table.table(records)
    # LN: mean 1.10 and sample std 0.14 of 1.0 and 1.2 (%); NLL 0.1/27 at epoch 3, the first below 0.01; 3 epochs of 30 s.
    assert "| 4 | layer | 2 | 3 | 1.10 ± 0.14 | 3.7e-03 ± 0.0e+00 | 3, 3 | 1.5 |" in text
    assert ("| 4 | batch | 1 (+1 unfinished, not shown) | 3 | 3.00 | 3.7e-03 | 3 | 1.5 |"
            in text)
    assert "| 4 | none | 1 | 2 | 3.00 | 1.3e-02 | - | 1.0 |" in text
    out = plot_curves.plot_fig6(records, str(tmp_path / "fig6.png"))
    assert _is_png(out)


def test_ablation_uses_finished_runs_only(tmp_path):
    root = str(tmp_path / "sizes")
    _write_mnist_run(root, "layer_bs4_seed0", "layer", 4, 0, [0.03, 0.02])
    _write_mnist_run(root, "layer_bs4_seed1", "layer", 4, 1, [0.03, 0.04])
    _write_mnist_run(root, "layer_bs128_seed0", "layer", 128, 0, [0.03, 0.018])
    _write_mnist_run(root, "batch_bs4_seed0", "batch", 4, 0, [0.05, 0.06])
    # Unfinished (1 of 2 epochs): its error must not count.
    _write_mnist_run(root, "batch_bs128_seed0", "batch", 128, 0, [0.5], num_epochs=2)
    records = metrics.load_runs(root)

    errors = plot_ablation.final_errors(records)
    assert errors == {"layer": {4: [0.02, 0.04], 128: [0.018]}, "batch": {4: [0.06]}}
    text = plot_ablation.table(records)
    assert "| norm | bs 4 | bs 128 |" in text
    assert "| batch | 6.00 (1) | - |" in text
    assert "| layer | 3.00 ± 1.41 (2) | 1.80 (1) |" in text
    assert "after 2 epochs: mean (± sample standard deviation) over the finished seeds" in text
    assert _is_png(plot_ablation.plot(records, str(tmp_path / "ablation.png")))
    with pytest.raises(ValueError, match="no finished runs"):
        plot_ablation.plot([r for r in records if not r.finished], str(tmp_path / "empty.png"))


def test_reader_table_and_plots(tmp_path):
    root = str(tmp_path / "fig2")
    for cell, everywhere, errors in (("lstm", False, [0.8, 0.5, 0.45]),
                                     ("lnlstm", False, [0.6, 0.25, 0.3])):
        workdir = os.path.join(root, cell)
        metrics.write_config(workdir, {"cell": cell, "bn_everywhere": everywhere,
                                       "ln_gain_init": 1.0, "num_updates": 300,
                                       "eval_every": 100})
        for i, error in enumerate(errors):
            metrics.append_metrics(workdir, {"round": i, "num_rounds": 3, "step": 100 * (i + 1),
                                             "valid_error": error})
    records = metrics.load_runs(root)
    text = plot_reader.table(records)
    # Updates to 70% error: the LSTM passes it at its second evaluation, the LN-LSTM at its first.
    assert "| LSTM | 1 | 300 | 45.0 | 45.0 | 200 |" in text
    assert "| LN-LSTM | 1 | 300 | 25.0 | 30.0 | 100 |" in text
    assert _is_png(plot_reader.plot(records, str(tmp_path / "fig2.png")))
    assert _is_png(plot_reader.plot(records, str(tmp_path / "gain.png"), gain=True))


def test_update_results_rewrites_only_the_marked_blocks(tmp_path):
    from scripts import update_results
    results = tmp_path / "results"
    _write_mnist_run(str(results / "pi_mnist" / "fig6"), "layer_bs4_seed0", "layer", 4, 0,
                     [0.03, 0.02, 0.010])
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- fig6 table -->\nold table\n<!-- /fig6 table -->\n"
                      "<!-- reader table -->\nold\n<!-- /reader table -->\nend\n")
    args = ["--readme", str(readme), "--results", str(results)]
    assert update_results.main(args + ["--check"]) == 1  # out of date
    assert update_results.main(args) == 0
    text = readme.read_text()
    assert text.startswith("intro\n<!-- fig6 table -->\n| batch | norm |")
    assert "| 4 | layer | 1 | 3 | 1.00 |" in text and "old table" not in text
    assert f"<!-- reader table -->\n{update_results.NO_RUNS}\n<!-- /reader table -->\nend\n" in text
    assert _is_png(str(results / "pi_mnist_fig6.png"))
    assert update_results.main(args + ["--check"]) == 0  # now current


def test_readme_tables_match_the_committed_records():
    """The README's generated tables are what the records in results/ say (run `make results`
    after committing records). The invariance table is left out: it is computed, and its
    round-off digits depend on the CPU."""
    from scripts import update_results
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    blocks = update_results.tables_and_figures(os.path.join(repo, "results"), write_figures=False)
    del blocks["invariance table"]
    with open(os.path.join(repo, "README.md")) as f:
        readme = f.read()
    assert update_results.replace_blocks(readme, blocks) == readme, \
        "README.md's results tables are out of date: run `make results`."


def _fake_sweep(sweep: str, workdir_root: str, records_dir: str) -> None:
    """Stands in for scripts.reproduce.run_sweep: writes a short finished record per run, with
    the config fields the plots and tables group by."""
    import importlib
    from configs import attentive_reader as reader_config
    from configs import pi_mnist as mnist_config
    path, name = sweep.split(":")
    plan = importlib.import_module(path[:-3].replace("/", ".")).get_config(name)
    base = (mnist_config if "pi_mnist" in path else reader_config).get_config().to_dict()
    for run in plan.runs:
        config = {**base, **run["overrides"]}
        workdir = os.path.join(records_dir, run["name"])
        metrics.write_config(workdir, config)
        rounds = config.get("num_epochs") or config["num_updates"] // config["eval_every"]
        for i in range(rounds):
            metrics.append_metrics(workdir, {
                "round": i, "num_rounds": rounds, "epoch": i + 1, "step": 100 * (i + 1),
                "train_nll": 0.1 / (i + 1), "test_error": 0.02, "valid_error": 0.8 - 0.01 * i,
                "round_seconds": 1.0})


@pytest.mark.parametrize("profile", ["quick", "full"])
def test_reproduce_builds_every_figure_and_table_from_the_sweeps(tmp_path, monkeypatch, profile):
    from scripts import reproduce
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(reproduce, "run_sweep", _fake_sweep)
    mnist_report = reproduce.reproduce_pi_mnist(profile)
    reader_report = reproduce.reproduce_reader(profile)
    out = reproduce.PROFILES[profile][3]
    assert "| 4 | layer |" in mnist_report and "| LN-LSTM |" in reader_report
    expected = ["pi_mnist_fig6.png", "attentive_reader_fig2.png"]
    if profile == "full":
        assert "| layer |" in reproduce.reproduce_batch_size_ablation()
        expected += ["attentive_reader_gain.png", "pi_mnist_batch_sizes.png"]
    for name in expected:
        assert _is_png(os.path.join(out, name)), name
