"""Nothing silent, nothing lost: every way a run can go wrong stops with a clear message, and a
record can be trusted (finished means whole and finite; a corrupted checkpoint is detected; a
finished record is never shortened; one writer per workdir; tables never pool other settings)."""

import dataclasses
import logging
import os
import signal
import subprocess
import sys

import pytest

from configs import pi_mnist as pi_mnist_config
from lnrepro import checkpoints, locking, metrics, train, validation
from lnrepro.tasks import pi_mnist
from tests import test_train
from tests.test_train import build, killed_after, small_config, without_timing


# ------------------------------------------------------------------------------------------------
# Non-finite metrics.


def test_overflowing_evaluation_stops_the_run_naming_the_round(tiny, tmp_path):
    """Every step's loss finite, but an evaluation sum overflows (a learning rate of 6e10 does
    this): the run stops like a NaN loss would, and writes no row with a null in it."""
    data_dir, load_split = tiny

    def build_overflowing(cfg):
        task = pi_mnist.build_task(cfg, load_split=load_split)
        evaluate = lambda state, step: {**task.evaluate(state, step), "test_nll": float("inf")}
        return dataclasses.replace(task, evaluate=evaluate)

    with pytest.raises(train.NonFiniteLossError,
                       match=r"test_nll stopped being finite in epoch 1\. No checkpoint was "
                             r"saved; lower config.learning_rate"):
        train.train_and_evaluate(small_config(data_dir), str(tmp_path), build_overflowing)
    assert metrics.read_metrics(str(tmp_path)) == []


def test_finished_means_every_round_once_with_finite_metrics(tmp_path):
    config = {"num_epochs": 2}
    row = lambda r, **kw: {"round": r, "test_error": 0.1, **kw}
    cases = {
        "whole": ([row(0), row(1)], True),
        "null": ([row(0), row(1, test_nll=None)], False),  # a non-finite value, as JSON has it
        "short": ([row(0)], False),
        "repeated": ([row(0), row(0)], False),
        "torn": ([row(0), {"round": 1}], False),  # a row without the metrics
        "log switched on": ([row(0), row(1, grad_norm_max=1.0)], True),
    }
    for name, (rows, finished) in cases.items():
        assert metrics.RunRecord(name, config, rows).finished == finished, name


# ------------------------------------------------------------------------------------------------
# Checkpoints.


def _largest_file(directory: str) -> str:
    files = [os.path.join(root, f) for root, _, names in os.walk(directory) for f in names
             if f != checkpoints.CHECKSUM_FILE]
    return max(files, key=os.path.getsize)


def _flip_bytes(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 2)
        data = f.read(4)
        f.seek(os.path.getsize(path) // 2)
        f.write(bytes(b ^ 0xFF for b in data))


def test_corrupted_checkpoint_is_detected_and_the_run_falls_back(tiny, tmp_path, caplog):
    data_dir, load_split = tiny
    config = small_config(data_dir, norm="batch", num_epochs=3)
    straight = train.train_and_evaluate(config, str(tmp_path / "straight"), build(load_split))
    workdir = str(tmp_path / "killed")
    killed_build, Killed = killed_after(2, load_split)
    with pytest.raises(Killed):
        train.train_and_evaluate(config, workdir, killed_build)
    newest = os.path.join(workdir, checkpoints.CHECKPOINT_DIR, "1")
    _flip_bytes(_largest_file(newest))
    with caplog.at_level(logging.WARNING):
        resumed = train.train_and_evaluate(config, workdir, build(load_split))
    assert f"Skipping checkpoint {newest}: 1 file(s) differ from their checksums" in caplog.text
    assert "Resuming from the older checkpoint" in caplog.text
    assert without_timing(resumed) == without_timing(straight)  # not 65% test error


def test_when_no_checkpoint_verifies_the_run_stops_and_says_what_to_do(tiny, tmp_path):
    data_dir, load_split = tiny
    config = small_config(data_dir, num_epochs=3)
    killed_build, Killed = killed_after(2, load_split)
    with pytest.raises(Killed):
        train.train_and_evaluate(config, str(tmp_path), killed_build)
    for step in ("0", "1"):
        _flip_bytes(_largest_file(os.path.join(str(tmp_path), checkpoints.CHECKPOINT_DIR, step)))
    before = metrics.read_metrics(str(tmp_path))
    with pytest.raises(checkpoints.NoGoodCheckpointError, match="Delete the workdir"):
        train.train_and_evaluate(config, str(tmp_path), build(load_split))
    assert metrics.read_metrics(str(tmp_path)) == before


# ------------------------------------------------------------------------------------------------
# Records are never shortened silently, never when finished.


def test_a_finished_record_is_returned_as_is_without_writing(tiny, tmp_path, monkeypatch):
    data_dir, load_split = tiny
    config = small_config(data_dir, num_epochs=2)
    rows = train.train_and_evaluate(config, str(tmp_path), build(load_split))
    os.system(f"rm -rf {tmp_path}/{checkpoints.CHECKPOINT_DIR}")
    with open(tmp_path / metrics.METRICS_FILE, "rb") as f:
        before = f.read()

    def no_writes(*args, **kwargs):
        raise AssertionError("a finished workdir was written to")
    for name in ("write_config", "truncate_metrics", "append_metrics", "append_provenance"):
        monkeypatch.setattr(metrics, name, no_writes)
    monkeypatch.setattr(locking, "exclusive_or_fail", no_writes)  # needs no write access
    assert train.train_and_evaluate(config, str(tmp_path), build(load_split)) == rows
    with open(tmp_path / metrics.METRICS_FILE, "rb") as f:
        assert f.read() == before


def test_an_unfinished_record_without_checkpoints_is_refused_not_wiped(tiny, tmp_path):
    data_dir, load_split = tiny
    config = small_config(data_dir, num_epochs=3)
    killed_build, Killed = killed_after(2, load_split)
    with pytest.raises(Killed):
        train.train_and_evaluate(config, str(tmp_path), killed_build)
    os.system(f"rm -rf {tmp_path}/{checkpoints.CHECKPOINT_DIR}")
    with pytest.raises(train.RecordWithoutCheckpointError,
                       match=r"records 2 epoch\(s\) of an unfinished run but holds no "
                             r"checkpoint"):
        train.train_and_evaluate(config, str(tmp_path), build(load_split))
    assert len(metrics.read_metrics(str(tmp_path))) == 2


# ------------------------------------------------------------------------------------------------
# One writer per workdir.

HOLD_LOCK = """
import sys, time
from lnrepro import locking
with locking.exclusive_or_fail(sys.argv[1], "busy"):
    print("held", flush=True)
    time.sleep(300)
"""


def test_a_second_writer_is_refused_and_a_dead_writers_lock_is_free(tiny, tmp_path):
    data_dir, load_split = tiny
    config = small_config(data_dir, num_epochs=1)
    workdir = str(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK,
                               os.path.join(workdir, train.LOCK_FILE)],
                              cwd=test_train.REPO, stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": test_train.REPO})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(locking.LockedError,
                           match=rf"another process \(pid {holder.pid}\) is training in "):
            train.train_and_evaluate(config, workdir, build(load_split))
        assert metrics.read_metrics(workdir) == []
    finally:
        holder.send_signal(signal.SIGKILL)  # dies holding the lock
        holder.wait()
    # The lock file is still there, with the dead pid in it; the kernel freed the lock.
    with open(os.path.join(workdir, train.LOCK_FILE)) as f:
        assert f.read().strip() == str(holder.pid)
    rows = train.train_and_evaluate(config, workdir, build(load_split))
    assert len(rows) == 1


# ------------------------------------------------------------------------------------------------
# Settings.


@pytest.mark.parametrize("key, value", [
    ("seed", -1), ("activation", "foo"), ("eval_batch_size", 0), ("steps_per_call", -1),
    ("train_eval_examples", 0), ("hidden_sizes", ()), ("learning_rate", float("nan")),
    ("adam_b2", 1.0), ("num_epochs", 0),
])
def test_every_bad_setting_is_refused_naming_it_its_value_and_what_is_allowed(key, value):
    config = pi_mnist_config.get_config()
    config[key] = value
    with pytest.raises(validation.ConfigError, match=rf"config\.{key} must be .+, got "):
        pi_mnist.resolve_config(config)


def test_all_bad_settings_are_reported_at_once():
    config = pi_mnist_config.get_config("seed=-1,activation=foo,eval_batch_size=0")
    with pytest.raises(validation.ConfigError) as error:
        pi_mnist.resolve_config(config)
    for key in ("seed", "activation", "eval_batch_size"):
        assert f"config.{key} must be" in str(error.value)


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "experiments.pi_mnist",
                           "--config=configs/pi_mnist.py", *args], cwd=test_train.REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **test_train.cpu_devices_env(1)})


def test_cli_refuses_bad_settings_before_writing_anything(tmp_path):
    result = _run_cli("--config.seed=-1", f"--workdir={tmp_path}/run")
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: ConfigError: config.seed must be an integer in [0, 2**32 - 1], got -1.")
    assert not os.path.exists(tmp_path / "run")


def test_cli_names_an_unknown_setting_and_lists_the_known_ones(tmp_path):
    result = _run_cli("--config.bogus=1", f"--workdir={tmp_path}/run")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: unknown setting(s) config.bogus for configs/pi_mnist.py; "
                           "its settings are: activation, ")


def test_cli_error_is_the_last_thing_printed(tmp_path):
    result = _run_cli(f"--config.data_dir={tmp_path}/none", f"--workdir={tmp_path}/run")
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: DatasetNotFoundError: pi_mnist is not prepared")
    assert "make data" in last


# ------------------------------------------------------------------------------------------------
# Tables.


def test_tables_refuse_to_pool_records_of_different_settings():
    base = {"norm": "layer", "batch_size": 4, "learning_rate": 1e-4, "hidden_sizes": [1000, 1000]}
    seeds = [metrics.RunRecord(f"s{i}", dict(base, seed=i, data_dir=f"/d{i}"), []) for i in (0, 1)]
    groups = metrics.group_runs(seeds, ("norm", "batch_size"))
    assert [len(g) for g in groups.values()] == [2]
    stale = metrics.RunRecord("stale", dict(base, seed=0, hidden_sizes=[64, 64],
                                            learning_rate=1e-3), [])
    with pytest.raises(metrics.MixedSettingsError,
                       match=r"records s0 and stale both have \{'norm': 'layer', 'batch_size': 4\}"
                             r" but differ in hidden_sizes: \[1000, 1000\] vs \[64, 64\], "
                             r"learning_rate: 0.0001 vs 0.001"):
        metrics.group_runs(seeds + [stale], ("norm", "batch_size"))


def test_records_from_before_a_setting_existed_pool_with_newer_ones_either_way_round():
    old = {"norm": "layer", "batch_size": 4, "seed": 0}
    new = dict(old, seed=1, matmul_precision="highest")
    for records in ([old, new], [new, old]):
        runs = [metrics.RunRecord(f"r{i}", c, []) for i, c in enumerate(records)]
        assert [len(g) for g in metrics.group_runs(runs, ("norm",)).values()] == [2]
