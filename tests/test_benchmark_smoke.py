"""Smoke test of scripts/benchmark_ops.py: --quick runs end to end, fast, and prints every row."""

from __future__ import annotations

import re

from scripts import benchmark_ops


def test_benchmark_quick(capsys):
    assert benchmark_ops.main(["--quick", "--repeats", "3"]) == 0
    out = capsys.readouterr().out

    assert "| shape | mode | ours ms (x copy) | flax ms (x copy) | textbook ms (x copy) | " \
           "copy ms (x copy) |" in out
    number = r"(\d+\.\d+) \((\d+\.\d+)x\)"
    for n, h in benchmark_ops.QUICK_LN_SHAPES:
        for mode in ("fwd", "fwd+bwd"):
            row = re.search(rf"^\| {n}x{h} \| {re.escape(mode)} \| {number} \| {number} \| "
                            rf"{number} \| {number} \|$", out, re.MULTILINE)
            assert row, (n, h, mode, out)
            values = [float(v) for v in row.groups()]
            assert all(v > 0 for v in values)
            assert values[-1] == 1.0  # the copy's ratio to itself
    lstm = {name: (float(ms), int(total)) for name, ms, total in re.findall(
        r"^\| (lstm|lnlstm|lnlstm \(autodiff step\)) \| (\d+\.\d+) \| \d+\.\d+x \| "
        r"\d+ \+ \d+ = (\d+) \|$", out, re.MULTILINE)}
    assert set(lstm) == set(benchmark_ops.LSTM_VARIANTS) and all(ms > 0 for ms, _ in lstm.values())
    # LN adds kernels to every time step; the hand-written VJP of the fused step needs fewer
    # than autodiff of the separate layer norms.
    assert lstm["lnlstm (autodiff step)"][1] > lstm["lnlstm"][1] > lstm["lstm"][1] > 0
    assert re.search(r"layer_norm fwd\+bwd within 4x .* -> (MET|NOT MET)", out)
    assert re.search(r"LN-LSTM fwd\+bwd within 1.2x .* -> (MET|NOT MET)", out)
