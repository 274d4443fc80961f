"""The sweep runner: command lines, finished-run detection, publishing records."""

import dataclasses
import json
import os
import sys

import pytest

from ml_collections import config_dict

from configs import attentive_reader_sweeps, pi_mnist, pi_mnist_sweeps
from experiments import sweep
from lnrepro import metrics
from lnrepro.data import synthetic_cloze
from lnrepro.tasks import attentive_reader
from scripts import tables

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write_run(directory, num_rounds, rounds_done, config=None):
    os.makedirs(directory, exist_ok=True)
    metrics.write_config(str(directory), config or {"num_epochs": num_rounds})
    for r in range(rounds_done):
        metrics.append_metrics(str(directory), {"round": r, "num_rounds": num_rounds})


def test_run_command_passes_overrides_as_config_flags():
    command = sweep.run_command("experiments.pi_mnist", "configs/pi_mnist.py",
                                {"norm": "layer", "batch_size": 4, "hidden_sizes": (32, 32)},
                                "runs/x")
    assert command[:3] == [sys.executable, "-m", "experiments.pi_mnist"]
    assert command[3:] == ["--config=configs/pi_mnist.py", "--workdir=runs/x",
                           "--config.norm=layer", "--config.batch_size=4",
                           "--config.hidden_sizes=(32,32)"]


def test_only_complete_records_count_as_finished(tmp_path):
    _write_run(tmp_path / "done", 3, 3)
    _write_run(tmp_path / "partial", 3, 2)
    assert sweep.is_done(str(tmp_path), "done")
    assert not sweep.is_done(str(tmp_path), "partial")
    assert not sweep.is_done(str(tmp_path), "missing")


def _plan(runs):
    return config_dict.ConfigDict({"driver": "nonexistent.module",
                                   "task": "lnrepro.tasks.pi_mnist",
                                   "base_config": "configs/pi_mnist.py", "runs": runs})


def test_sweep_skips_finished_runs_and_publish_only_copies_partial_ones(tmp_path):
    runs = [{"name": "a", "overrides": {"num_epochs": 2}},
            {"name": "b", "overrides": {"num_epochs": 2}}]
    plan = _plan(runs)
    workdirs, results = tmp_path / "runs", tmp_path / "results"
    full = sweep.expected_config(plan, {"num_epochs": 2})
    _write_run(results / "a", 2, 2, full)
    _write_run(results / "b", 2, 2, full)
    assert sweep.run_sweep(plan, str(workdirs), str(results)) == []  # nothing left to run
    _write_run(workdirs / "c", 5, 1)
    plan.runs = runs + [{"name": "c", "overrides": {}}]
    assert sweep.publish_all(plan, str(workdirs), str(results)) == ["c"]
    record = metrics.load_run(str(results / "c"))
    assert record is not None and not record.finished and len(record.rows) == 1


def test_a_record_made_with_other_settings_is_refused_not_skipped(tmp_path):
    """The whole config counts, not only the run's overrides: a record with other hidden sizes
    and learning rate, where the sweep overrides only the norm, is stale."""
    results = tmp_path / "results"
    overrides = {"norm": "layer", "num_epochs": 2}
    plan = _plan([{"name": "a", "overrides": overrides}])
    full = sweep.expected_config(plan, overrides)
    assert full["hidden_sizes"] == [1000, 1000] and full["learning_rate"] == 4.5e-4
    _write_run(results / "a", 2, 2, full)
    assert sweep.run_sweep(plan, str(tmp_path / "runs"), str(results)) == []  # finished: skipped
    stale = dict(full, hidden_sizes=[64, 64], learning_rate=1e-3)
    _write_run(results / "stale", 2, 2, stale)
    plan.runs = [{"name": "stale", "overrides": overrides}]
    with pytest.raises(sweep.StaleRecordError,
                       match=r"hidden_sizes: record \[64, 64\], sweep \[1000, 1000\], "
                             r"learning_rate: record 0.001, sweep 0.00045\). Move that directory"):
        sweep.run_sweep(plan, str(tmp_path / "runs"), str(results))


def test_where_the_data_lives_and_the_logged_diagnostic_do_not_make_a_record_stale(tmp_path):
    plan = _plan([{"name": "a", "overrides": {"num_epochs": 2}}])
    full = sweep.expected_config(plan, {"num_epochs": 2})
    moved = dict(full, data_dir="/elsewhere", log_grad_norm=True)
    del moved["matmul_precision"]  # a record made before the setting existed
    _write_run(tmp_path / "a", 2, 2, moved)
    sweep.check_record(str(tmp_path), "a", full)


def _write_record_with_provenance(directory, config):
    _write_run(directory, 2, 2, config)
    with open(os.path.join(directory, metrics.PROVENANCE_FILE), "w") as f:
        json.dump([{"commit": "abc1234", "backend": "cpu"}], f)


def test_a_run_that_another_sweeps_record_trained_takes_a_copy_instead_of_training(tmp_path):
    """--reuse_from: run "a" trains what the search's record trained (the same whole config but
    for where the data lives and the rate table), so it gets a byte-for-byte copy of it, with
    copied_from.json naming the source, and nothing is trained. Run "b" (another seed) has no
    such record."""
    overrides = {"norm": "layer", "num_epochs": 2, "learning_rate": 1e-5}
    plan = _plan([{"name": "a", "overrides": dict(overrides, seed=0)},
                  {"name": "b", "overrides": dict(overrides, seed=1)}])
    search, results = tmp_path / "search", tmp_path / "results"
    same = dict(sweep.expected_config(plan, dict(overrides, seed=0)), data_dir="/elsewhere",
                searched_learning_rates={"layer": {"bs128": 1e-3}})
    _write_record_with_provenance(search / "layer_lr1e-05_seed0", same)
    _write_record_with_provenance(search / "layer_lr1e-04_seed1",
                                  sweep.expected_config(plan, dict(overrides, seed=1,
                                                                   learning_rate=1e-4)))
    _write_run(search / "unfinished_seed1", 2, 1,
               sweep.expected_config(plan, dict(overrides, seed=1)))
    source = str(search / "layer_lr1e-05_seed0")
    assert sweep.find_reusable(plan, plan.runs, str(results), [str(search)]) == {"a": source}

    plan.runs = plan.runs[:1]
    sweep.run_sweep(plan, str(tmp_path / "runs"), str(results), dry_run=True,
                    reuse_from=[str(search)])
    assert not results.exists()  # a dry run copies nothing
    assert sweep.run_sweep(plan, str(tmp_path / "runs"), str(results),
                           reuse_from=[str(search)]) == []  # nothing trained
    assert not (tmp_path / "runs").exists()
    for filename in (metrics.CONFIG_FILE, metrics.METRICS_FILE, metrics.PROVENANCE_FILE):
        assert (results / "a" / filename).read_bytes() == (search / "layer_lr1e-05_seed0" /
                                                            filename).read_bytes()
    with open(results / "a" / sweep.COPIED_FROM_FILE) as f:
        assert json.load(f)["copied_from"] == source
    assert sweep.is_done(str(results), "a")
    assert sweep.find_reusable(plan, plan.runs, str(results), [str(search)]) == {}  # done


def test_an_interrupted_copy_is_not_done_and_is_made_again_whole(tmp_path, monkeypatch):
    """The files that make a record done are copied last: a copy that stops before
    metrics.jsonl leaves a record that is not done, not a finished one without provenance."""
    plan = _plan([{"name": "a", "overrides": {"num_epochs": 2}}])
    search, results = tmp_path / "search", tmp_path / "results"
    _write_record_with_provenance(search / "x", sweep.expected_config(plan, {"num_epochs": 2}))
    copy = sweep.shutil.copyfile

    def fail_on_metrics(src, dst):
        if os.path.basename(src) == metrics.METRICS_FILE:
            raise OSError("disk full")
        return copy(src, dst)

    monkeypatch.setattr(sweep.shutil, "copyfile", fail_on_metrics)
    with pytest.raises(OSError):
        sweep.run_sweep(plan, str(tmp_path / "runs"), str(results), reuse_from=[str(search)])
    assert (results / "a" / metrics.PROVENANCE_FILE).exists()
    assert not sweep.is_done(str(results), "a")
    monkeypatch.setattr(sweep.shutil, "copyfile", copy)
    assert sweep.run_sweep(plan, str(tmp_path / "runs"), str(results),
                           reuse_from=[str(search)]) == []
    assert sweep.is_done(str(results), "a")
    assert (results / "a" / metrics.METRICS_FILE).read_bytes() == (
        search / "x" / metrics.METRICS_FILE).read_bytes()


def test_a_copy_never_replaces_a_stale_record(tmp_path):
    """A partial record made with other settings stops the sweep, as without --reuse_from,
    instead of being overwritten by the copy."""
    plan = _plan([{"name": "a", "overrides": {"num_epochs": 2}}])
    search, results = tmp_path / "search", tmp_path / "results"
    full = sweep.expected_config(plan, {"num_epochs": 2})
    _write_record_with_provenance(search / "x", full)
    _write_run(results / "a", 2, 1, dict(full, hidden_sizes=[64, 64]))
    with pytest.raises(sweep.StaleRecordError, match="hidden_sizes"):
        sweep.run_sweep(plan, str(tmp_path / "runs"), str(results), reuse_from=[str(search)])
    assert not (results / "a" / sweep.COPIED_FROM_FILE).exists()


def test_a_reuse_directory_that_does_not_exist_is_refused_naming_the_flag(tmp_path):
    plan = _plan([{"name": "a", "overrides": {"num_epochs": 2}}])
    with pytest.raises(ValueError, match=r"--reuse_from='.*nowhere' is not a directory"):
        sweep.run_sweep(plan, str(tmp_path / "runs"), str(tmp_path / "results"),
                        reuse_from=[str(tmp_path / "nowhere")])
    assert not (tmp_path / "results").exists()


def test_sweep_files_list_unique_runs_in_priority_order():
    fig6 = pi_mnist_sweeps.get_config("fig6").runs
    names = [r["name"] for r in fig6]
    assert len(names) == len(set(names)) == 60  # 3 norms x 2 batch sizes x 10 seeds
    assert names[:6] == ["layer_bs128_seed0", "batch_bs128_seed0", "none_bs128_seed0",
                         "layer_bs4_seed0", "batch_bs4_seed0", "none_bs4_seed0"]
    assert all("bs128" in name for name in names[6:33])  # cheap seeds before batch 4's
    assert all("bs4" in name for name in names[33:])
    controls = pi_mnist_sweeps.get_config("bn_controls").runs
    # 3 controls x (5 seeds at batch 128 + 3 at batch 4), each seed's batch 128 runs first.
    assert len(controls) == 24 and all(r["overrides"]["norm"] == "batch" for r in controls)
    assert [r["name"] for r in controls[:4]] == [
        "hidden_only_bs128_seed0", "batch_stats_eval_bs128_seed0", "other_variance_bs128_seed0",
        "hidden_only_bs4_seed0"]
    assert sorted({r["overrides"]["seed"] for r in controls
                   if r["overrides"]["batch_size"] == 4}) == [0, 1, 2]
    # Then the cheap batch-128 seeds 1-4, then batch 4's seeds 1-2 (about 40 minutes a run).
    assert all("bs128" in r["name"] for r in controls[6:18])
    assert all("bs4" in r["name"] for r in controls[18:])
    short = pi_mnist_sweeps.get_config("fig6_short_search").runs
    assert sorted({r["overrides"]["seed"] for r in short}) == [0, 1, 2, 3, 4]
    assert len(short) == 15 and all(r["overrides"]["batch_size"] == 128 for r in short)
    rates = pi_mnist.SHORT_SEARCH_LEARNING_RATES
    assert {(r["overrides"]["norm"], r["overrides"]["learning_rate"]) for r in short} == {
        (norm, rates[norm]["bs128"]) for norm in pi_mnist_sweeps.NORMS}
    assert len(pi_mnist_sweeps.get_config("lr_search_full").runs) == 7 * 3 * 2 * 2
    sizes = pi_mnist_sweeps.get_config("batch_sizes").runs
    assert not any(r["overrides"]["norm"] == "batch" and r["overrides"]["batch_size"] == 1
                   for r in sizes)
    # Seeds 0-2 at every batch size, then seeds 3-7 at batch 1 only, for LN and no norm.
    assert len(sizes) == 3 * 26 + 5 * 2
    assert [r["name"] for r in sizes[78:80]] == ["layer_bs1_seed3", "none_bs1_seed3"]
    assert {r["overrides"]["seed"] for r in sizes[78:]} == {3, 4, 5, 6, 7}
    assert {r["overrides"]["batch_size"] for r in sizes[78:]} == {1}
    assert len(pi_mnist_sweeps.get_config("batch_sizes_long").runs) == 3 * 26
    fig2 = attentive_reader_sweeps.get_config("fig2").runs
    assert [r["name"] for r in fig2[:4]] == ["lstm_seed0", "bnlstm_seed0", "bn_everywhere_seed0",
                                            "lnlstm_seed0"]


def test_the_hard_reader_sweep_trains_every_variant_on_300_token_passages_at_240_units():
    config = attentive_reader_sweeps.get_config("hard")
    runs = config.runs
    assert len(runs) == 4 * 3
    assert {r["name"] for r in runs} == {f"{v}_seed{s}" for v in attentive_reader_sweeps.VARIANTS
                                         for s in (0, 1, 2)}
    for run in runs:
        variant = run["name"].rsplit("_seed", 1)[0]
        resolved = sweep.resolved_config(config, dict(run["overrides"]))
        assert resolved.features == 240 and resolved.num_updates == 30_000
        assert resolved.learning_rate == attentive_reader_sweeps.HARD_RATES[variant]
    corpus = dataclasses.replace(attentive_reader.synthetic_config(resolved),
                                 num_validation=200)
    passages = [story.split("\n\n")[1].split()
                for story in synthetic_cloze.generate_split(corpus, "validation")]
    assert min(len(p) for p in passages) >= 300
    # The other sweeps keep the CPU profile's corpus.
    long = attentive_reader_sweeps.get_config("long")
    assert sweep.resolved_config(long, dict(long.runs[0]["overrides"])).features == 64


def test_only_selects_runs_by_name_and_rejects_a_pattern_that_matches_nothing():
    runs = pi_mnist_sweeps.get_config("fig6").runs
    selected = sweep.select_runs(runs, "bs128_seed2$")
    assert [r["name"] for r in selected] == ["layer_bs128_seed2", "batch_bs128_seed2",
                                             "none_bs128_seed2"]
    assert len(sweep.select_runs(runs, None)) == 60
    with pytest.raises(ValueError, match="matches none of the sweep's runs"):
        sweep.select_runs(runs, "bs512")


def test_shards_split_a_sweep_over_machines_each_run_once():
    runs = pi_mnist_sweeps.get_config("fig6").runs
    shards = [sweep.shard_runs(runs, f"{i}/4") for i in range(4)]
    names = sorted(r["name"] for shard in shards for r in shard)
    assert names == sorted(r["name"] for r in runs)
    assert [len(shard) for shard in shards] == [15, 15, 15, 15]
    assert sweep.shard_runs(runs, None) == list(runs)
    for bad in ("4/4", "1", "a/b", "-1/2"):
        with pytest.raises(ValueError, match="INDEX/COUNT"):
            sweep.shard_runs(runs, bad)


@pytest.mark.parametrize("sweeps, name, results_dir", [
    (pi_mnist_sweeps, "fig6", "results/pi_mnist/fig6"),
    (pi_mnist_sweeps, "batch_sizes", "results/pi_mnist/batch_sizes"),
    (pi_mnist_sweeps, "lr_search", "results/pi_mnist/lr_search"),
    (pi_mnist_sweeps, "lr_search_full", "results/pi_mnist/lr_search_full"),
    (pi_mnist_sweeps, "fig6_short_search", "results/pi_mnist/fig6_short_search"),
    (pi_mnist_sweeps, "quick", "results/quick/pi_mnist"),
    (attentive_reader_sweeps, "fig2", "results/attentive_reader/fig2"),
    (attentive_reader_sweeps, "gain", "results/attentive_reader/gain"),
    (attentive_reader_sweeps, "lr_search", "results/attentive_reader/lr_search"),
    (attentive_reader_sweeps, "long_lr_search", "results/attentive_reader/long_lr_search"),
    (attentive_reader_sweeps, "long", "results/attentive_reader/long"),
    (attentive_reader_sweeps, "hard", "results/attentive_reader/hard"),
    (pi_mnist_sweeps, "bn_controls", "results/pi_mnist/bn_controls"),
    (pi_mnist_sweeps, "batch_sizes_long", "results/pi_mnist/batch_sizes_long"),
])
def test_committed_records_match_their_sweeps(sweeps, name, results_dir):
    root = os.path.join(REPO, results_dir)
    for run in sweeps.get_config(name).runs:
        sweep.check_record(root, run["name"],
                           sweep.expected_config(sweeps.get_config(name),
                                                 dict(run["overrides"])))


def test_the_long_runs_use_each_variants_best_rate_from_the_long_search():
    root = os.path.join(REPO, "results/attentive_reader/long_lr_search")
    for variant, chosen in attentive_reader_sweeps.LONG_RATES.items():
        final_error = {}
        for lr in attentive_reader_sweeps.LR_SEARCH_RATES:
            record = metrics.load_run(os.path.join(root, f"{variant}_lr{lr:g}"))
            assert record.finished
            final_error[lr] = record.rows[-1]["valid_error"]
        assert chosen == min(final_error, key=final_error.get), (variant, final_error)


def _search(directory):
    """(norm, batch size) -> (the rate a committed search chose, its finished runs)."""
    records = [r for r in metrics.load_runs(os.path.join(REPO, directory)) if r.finished]
    _, chosen = tables.mnist_learning_rates(records)
    counts = {}
    for r in records:
        key = (r.config["norm"], r.config["batch_size"])
        counts[key] = counts.get(key, 0) + 1
    return {key: (rate, counts[key]) for key, rate in chosen.items()}


def test_the_default_rates_are_the_searches_choices():
    """SEARCHED_LEARNING_RATES holds the 60-epoch search's choice where its half for a batch
    size is complete (every rate and seed of every norm) and the short search's elsewhere;
    SHORT_SEARCH_LEARNING_RATES is the short search's. Weight norm takes the baseline's."""
    short = _search("results/pi_mnist/lr_search")
    full = _search("results/pi_mnist/lr_search_full")
    planned = {}
    for run in pi_mnist_sweeps.lr_search_full_runs():
        key = (run["overrides"]["norm"], run["overrides"]["batch_size"])
        planned[key] = planned.get(key, 0) + 1
    complete = {bs for bs in (128, 4)
                if all(full.get((norm, bs), (None, 0))[1] == planned[(norm, bs)]
                       for norm in pi_mnist_sweeps.NORMS)}
    assert 128 in complete, "the batch-128 half of the 60-epoch search is committed in full"
    assert {int(key[2:]) for key in pi_mnist.FULL_SEARCH_LEARNING_RATES} == complete
    for norm in pi_mnist_sweeps.NORMS:
        for bs in (128, 4):
            key = f"bs{bs}"
            assert pi_mnist.SHORT_SEARCH_LEARNING_RATES[norm][key] == short[(norm, bs)][0]
            expected = full[(norm, bs)][0] if bs in complete else short[(norm, bs)][0]
            assert pi_mnist.SEARCHED_LEARNING_RATES[norm][key] == expected, (norm, bs, complete)
    for table in (pi_mnist.SEARCHED_LEARNING_RATES, pi_mnist.SHORT_SEARCH_LEARNING_RATES):
        assert table["weight"] == table["none"]


def test_sweep_groups_runs_that_share_shapes_into_programs(tmp_path):
    plan = pi_mnist_sweeps.get_config("fig6")
    empty = str(tmp_path / "no_records")
    programs = sweep.plan_programs(plan, plan.runs, empty)
    assert len(programs) == 6  # (norm, batch size) pairs; their 10 seeds each share a program
    for program in programs:
        configs = [config for _, config in program]
        assert sorted(c.seed for c in configs) == list(range(10))
        assert len({(c.norm, c.batch_size) for c in configs}) == 1
    assert len(sweep.plan_programs(plan, plan.runs, empty, members_per_program=2)) == 30
    one_each = sweep.plan_programs(plan, plan.runs, empty, members_per_program=1)
    assert [p[0][0]["name"] for p in one_each] == [r["name"] for r in plan.runs]  # sweep order


def test_a_sweep_runs_its_programs_in_one_process_and_publishes_every_member(tmp_path):
    """Two reader variants x two seeds on a tiny synthetic corpus: two programs of two members,
    each member's record published; a second pass runs nothing."""
    tiny = {"data_dir": str(tmp_path / "data"), "features": 8, "batch_size": 8,
            "eval_batch_size": 16, "num_updates": 4, "eval_every": 2,
            "synthetic": dict(num_train=96, num_validation=24, num_test=8, num_entities=8,
                              num_facts=4, num_distractors=2, num_filler=1, paraphrase_prob=0.5,
                              seed=0)}
    runs = [{"name": f"{cell}_seed{seed}", "overrides": dict(tiny, cell=cell, seed=seed)}
            for cell in ("lstm", "lnlstm") for seed in (0, 1)]
    plan = config_dict.ConfigDict({"driver": "experiments.attentive_reader",
                                   "task": "lnrepro.tasks.attentive_reader",
                                   "base_config": "configs/attentive_reader.py", "runs": runs})
    results = tmp_path / "results"
    assert len(sweep.plan_programs(plan, runs, str(results))) == 2
    ran = sweep.run_sweep(plan, str(tmp_path / "runs"), str(results))
    assert ran == [run["name"] for run in runs]
    for run in runs:
        record = metrics.load_run(str(results / run["name"]))
        assert record.finished and record.config["seed"] == run["overrides"]["seed"]
        assert len(record.provenance) == 1
    assert sweep.run_sweep(plan, str(tmp_path / "runs"), str(results)) == []
