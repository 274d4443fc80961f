"""Smoke tests of scripts/benchmark_train.py and scripts/benchmark_reader.py: --quick runs end to
end in-process and prints every table row with positive numbers."""

from __future__ import annotations

import re

from scripts import benchmark_reader, benchmark_train

NUMBER = r"(\d+\.\d+)"


def test_benchmark_train_quick(capsys):
    assert benchmark_train.main(["--quick", "--repeats", "2"]) == 0
    out = capsys.readouterr().out

    assert ("| batch | norm | steps/call (ours) | baseline examples/s | ours examples/s | "
            "ratio ours/baseline | baseline ms/step | ours ms/step | with the grad-norm log: "
            "ours_logged/baseline_logged | ours/baseline_logged |") in out
    for batch in benchmark_train.BATCH_SIZES:
        steps_per_call = benchmark_train.make_config("none", batch, 0, (8,)).steps_per_call
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
    assert re.search(r"batch 4: ours >= 1.5x baseline \(every norm, same step\): worst "
                     r"\d+\.\d+x -> "
                     r"(MET|NOT MET)$", out, re.MULTILINE), out
    assert re.search(r"with the gradient-norm log on in both: \d+\.\d+x-\d+\.\d+x; ours against "
                     r"the logged baseline: \d+\.\d+x-\d+\.\d+x$", out, re.MULTILINE), out


def test_benchmark_reader_quick(capsys):
    assert benchmark_reader.main(["--quick", "--repeats", "2"]) == 0
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


def test_benchmark_members_quick(capsys):
    from scripts import benchmark_members
    assert benchmark_members.main(["--quick", "--repeats", "1"]) == 0
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
