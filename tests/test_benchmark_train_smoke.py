"""Smoke tests of scripts/benchmark_train.py, benchmark_reader.py, benchmark_members.py and
benchmark_processes.py:
--quick runs end to end (in-process; benchmark_processes's workers are subprocesses), the flags
parsed as `python -m` parses them, and prints every table row with positive, consistent numbers."""

from __future__ import annotations

import contextlib
import os
import re
import shutil

import pytest
from absl import flags
from absl.testing import flagsaver

from scripts import (benchmark_common, benchmark_members, benchmark_processes, benchmark_reader,
                     benchmark_train)

NUMBER = r"(\d+\.\d+)"


def run_main(module, *args: str) -> None:
    """module.main as app.run calls it: the command line parsed into the flags first (their
    values restored afterwards)."""
    with flagsaver.flagsaver():
        module.main(flags.FLAGS([module.__name__, *args]))


def test_benchmark_train_quick(capsys):
    run_main(benchmark_train, "--quick", "--repeats=1")
    out = capsys.readouterr().out

    assert ("| batch | norm | steps/call (ours) | baseline examples/s | ours examples/s | "
            "ratio ours/baseline | baseline ms/step | ours ms/step | with the grad-norm log: "
            "ours_logged/baseline_logged | ours/baseline_logged |") in out
    for batch in benchmark_train.BATCH_SIZES:
        steps_per_call = benchmark_common.mlp_config("none", batch, 0, (8,)).steps_per_call
        assert steps_per_call > 1
        for norm in benchmark_train.NORMS:
            row = re.search(rf"^\| {batch} \| {norm} \| {steps_per_call} \| {NUMBER} \| {NUMBER} "
                            rf"\| {NUMBER}x \| {NUMBER} \| {NUMBER} \| {NUMBER}x \| {NUMBER}x \|$",
                            out, re.MULTILINE)
            assert row, (batch, norm, out)
            baseline, ours, ratio, baseline_ms, ours_ms, logged, vs_logged = (
                float(v) for v in row.groups())
            assert baseline > 0 and ours > 0 and ratio > 0 and logged > 0 and vs_logged > 0
            assert abs(ratio - ours / baseline) < 0.01 + 0.01 * ratio
            assert abs(ratio - baseline_ms / ours_ms) < 0.02 + 0.02 * ratio
            # examples/s and ms/step describe the same steps
            assert abs(baseline * baseline_ms / 1e3 - batch) < 0.01 * batch
    assert re.search(r"batch 4: ours >= 1.5x baseline \(every norm, same step\): worst "
                     r"\d+\.\d+x -> "
                     r"(MET|NOT MET)$", out, re.MULTILINE), out
    assert re.search(r"with the gradient-norm log on in both: \d+\.\d+x-\d+\.\d+x; ours against "
                     r"the logged baseline: \d+\.\d+x-\d+\.\d+x$", out, re.MULTILINE), out


def test_a_timed_round_trains_what_the_trainers_round_trains(tmp_path):
    """A benchmark's timed round is a round of the trainer: from the same initial state, the
    same steps, bit for bit (the state the trainer checkpoints after its epoch)."""
    import jax
    import numpy as np

    from lnrepro import checkpoints, train

    config = benchmark_common.mlp_config("layer", 4, 2, (8,))
    config.num_epochs = 1
    data = benchmark_common.random_mnist(16)
    run = benchmark_common.TimedRun(config, benchmark_common.mlp_task(config, data),
                                    train.make_mesh())
    assert run.train_round(0) > 0
    assert int(run.state.step) == 4  # 16 examples at batch 4

    (row,) = train.train_and_evaluate(config, str(tmp_path),
                                      lambda c: benchmark_common.mlp_task(c, data))
    assert row["step"] == 4
    manager = checkpoints.make_manager(str(tmp_path))
    try:
        trained = checkpoints.restore(manager, 0, run.state)
    finally:
        manager.close()
    for ours, theirs in zip(jax.tree.leaves((run.state.params, run.state.opt_state)),
                            jax.tree.leaves((trained.params, trained.opt_state))):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_benchmark_reader_quick(capsys):
    run_main(benchmark_reader, "--quick", "--repeats=1")
    out = capsys.readouterr().out

    assert "| size | variant | ms/update | ratio to lstm |" in out
    for variant in benchmark_reader.VARIANTS:
        row = re.search(rf"^\| quick \| {re.escape(variant)} \| {NUMBER} \| {NUMBER}x \|$", out,
                        re.MULTILINE)
        assert row, (variant, out)
        ms, ratio = (float(v) for v in row.groups())
        assert ms > 0 and ratio > 0
        if variant == "lstm":
            assert ratio == 1.0  # the baseline's ratio to itself


@pytest.mark.parametrize("arg, message", [
    ("--sizes=cpu,huge",
     "flag --sizes=['cpu', 'huge']: --sizes takes a comma-separated subset of cpu,paper."),
    ("--members=3,x", "flag --members=['3', 'x']: --members takes comma-separated whole numbers "
                      ">= 1."),
    ("--repeats=0", "flag --repeats=0: 0 is not a positive integer"),
])
def test_bad_flags_are_refused(arg, message):
    with flagsaver.flagsaver(), pytest.raises(flags.IllegalFlagValueError) as error:
        flags.FLAGS(["benchmark", arg])
    assert str(error.value) == message


def test_benchmark_members_quick(capsys):
    run_main(benchmark_members, "--quick", "--repeats=1")
    out = capsys.readouterr().out
    assert re.search(r"^backend: \w+ \(.+\); copy bandwidth \d+\.\d GB/s$", out, re.MULTILINE)
    for workload in ("mlp bs4", "mlp bs128", "reader lnlstm"):
        for k in (2,):
            row = re.search(rf"^\| {workload} \| {k} \| (\d+) \| (\d+) \| {NUMBER}x \| {NUMBER} "
                            rf"\| ([\d.]+|-) \| ([\d.]+x|-) \|$", out, re.MULTILINE)
            assert row, (workload, k, out)
            sequential, members, ratio = int(row[1]), int(row[2]), float(row[3])
            assert sequential > 0 and members > 0
            assert abs(ratio - members / sequential) < 0.02 + 0.02 * ratio
    assert re.search(r"^(worst ratio vmapped/sequential: \d+\.\d+x|CPU: train_members runs the "
                     r"sequential program, 1\.00x by construction \(goal >= 0\.95x: MET\); "
                     r"vmapped would run at \d+\.\d+x-\d+\.\d+x)$", out, re.MULTILINE), out


def _usable_cores():
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


needs_taskset = pytest.mark.skipif(not _usable_cores() or shutil.which("taskset") is None,
                                   reason="needs Linux's taskset")


@needs_taskset
def test_benchmark_processes_quick(capsys, monkeypatch):
    """Worker processes, one on every core and one pinned per core, time rounds on command."""
    cores = _usable_cores()
    if len(cores) < 2:
        # One core: main has nothing to compare; two workers pinned to it still smoke-test.
        run_main(benchmark_processes, "--quick", "--repeats=1")
        assert "One usable core: nothing to compare." in capsys.readouterr().out
        row = benchmark_processes.measure(4, cores * 2, repeats=1, quick=True)
        assert row["shared"] > 0 and row["per_core_run"] > 0
        return
    monkeypatch.setattr(benchmark_processes, "BATCH_SIZES", (4,))
    run_main(benchmark_processes, "--quick", "--repeats=2")
    out = capsys.readouterr().out
    assert f"CPU backend; {os.cpu_count()} cpus, {len(cores)} usable; load average" in out
    row = re.search(rf"^\| 4 \| (\d+) \| (\d+) \| {NUMBER}x \| {NUMBER}x-{NUMBER}x \| (\d+) \|$",
                    out, re.MULTILINE)
    assert row, out
    shared, summed, ratio, low, high, one_run = (float(v) for v in row.groups())
    assert shared > 0 and one_run > 0 and summed > 0
    assert low <= high and abs(ratio - summed / shared) < 0.01 + 0.01 * ratio
    assert re.search(r"^- batch 4: per core >= 1.1x shared: \d+\.\d+x -> (MET|NOT MET)$", out,
                     re.MULTILINE), out


@needs_taskset
def test_benchmark_workers_run_where_they_should():
    """A worker that is not pinned with single-threaded matmuls stops the benchmark rather than
    timing the wrong thing; a failing worker says why."""
    cores = _usable_cores()
    with contextlib.closing(benchmark_processes.Worker(4, quick=True)) as unpinned:
        unpinned.cpu = cores[0]  # taken for a pinned one: on every core, without the flag
        with pytest.raises(RuntimeError, match=rf"worker \(shared\) runs on cores "
                                               rf"\[{', '.join(map(str, cores))}\] with XLA_FLAGS"):
            unpinned.wait_ready(cores)
    # No round size for batch 3: the worker fails, and says why.
    with contextlib.closing(benchmark_processes.Worker(3, quick=True)) as broken:
        with pytest.raises(RuntimeError, match=r"worker \(shared\) exited with status 1:"
                                               r"(.|\n)*KeyError: 3"):
            broken.wait_ready(cores)
