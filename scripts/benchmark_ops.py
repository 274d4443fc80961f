"""Benchmarks our layer norm and LN-LSTM against baselines measured in the same run.

1. Layer norm on [N, H] float32, forward and forward + backward (`jax.vjp` with a fixed random
   cotangent, gradients for x, scale and bias), all jitted, results blocked:
     ours       ops.layer_norm (custom VJP)
     flax       flax.linen.LayerNorm(epsilon=1e-5)
     textbook   ops.layer_norm_reference left to autodiff
     copy       a jitted copy of the same tensor (y = x * 1.0001, backward dx = dy * 1.0001): the
                memory-bound floor; the script checks that XLA really runs it.
   Medians over `--repeats` calls, interleaved round-robin so that machine noise hits every
   implementation alike; ratio = median / the copy's median in the same mode.
2. LN-LSTM vs LSTM forward + backward through `rnn.SequenceRunner` (grads of sum(outputs) w.r.t.
   the params) at batch 64, 100 steps, 240 units, input 240 (the attentive reader's size).

Goals: layer_norm forward + backward within 4x the copy's forward + backward; LN-LSTM forward +
backward within 1.2x the plain LSTM's.

Reading the numbers: XLA:CPU allocates every large output and temporary afresh on each call, and
the kernel page-faults it in (about one fault per 4 KiB page), so on large shapes each full-size
buffer costs about as much as the copy itself and the ratios mostly count full-size buffers.

  PYTHONPATH=. .venv/bin/python -m scripts.benchmark_ops [--repeats N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import time
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lnrepro import ops, rnn

LN_SHAPES = ((128, 1000), (6400, 960), (4096, 4096))
QUICK_LN_SHAPES = ((8, 16), (32, 24))
LSTM_SIZE = dict(batch=64, steps=100, units=240, inputs=240)
QUICK_LSTM_SIZE = dict(batch=4, steps=5, units=8, inputs=8)
LN_GOAL = 4.0  # layer_norm fwd+bwd / copy fwd+bwd
LSTM_GOAL = 1.2  # LN-LSTM fwd+bwd / LSTM fwd+bwd
COPY_FACTOR = 1.0001

_flax_ln = nn.LayerNorm(epsilon=1e-5)


def _layer_norm_impls() -> dict[str, Callable]:
    """name -> f(x, scale, bias) -> y."""
    return {
        "ours": lambda x, s, b: ops.layer_norm(x, s, b, epsilon=1e-5),
        "flax": lambda x, s, b: _flax_ln.apply({"params": {"scale": s, "bias": b}}, x),
        "textbook": lambda x, s, b: ops.layer_norm_reference(x, s, b, epsilon=1e-5),
        "copy": lambda x, s, b: x * COPY_FACTOR,
    }


def _forward(f: Callable) -> Callable:
    return jax.jit(lambda x, s, b, cot: f(x, s, b))


def _forward_backward(f: Callable) -> Callable:
    def run(x, s, b, cot):
        y, vjp = jax.vjp(f, x, s, b)
        return y, vjp(cot)
    return jax.jit(run)


def _check_copy_is_real(compiled_text: str) -> None:
    """The copy baseline must do a real elementwise pass (not alias its input)."""
    if "multiply" not in compiled_text:
        raise RuntimeError("the copy baseline compiled to no multiply; it would time nothing:\n"
                           + compiled_text)


def _time_round_robin(fns: dict[str, Callable], args: tuple, repeats: int) -> dict[str, float]:
    """Median seconds per call of each fn, measured interleaved after one warm-up call."""
    for f in fns.values():
        jax.block_until_ready(f(*args))
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, f in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(f(*args))
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def benchmark_layer_norm(shapes, repeats: int) -> list[dict]:
    """Rows {shape, mode, impl, ms, ratio} for every shape, mode and implementation."""
    impls = _layer_norm_impls()
    rows = []
    for shape in shapes:
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=shape) * 2 + 0.5, jnp.float32)
        scale = jnp.asarray(rng.uniform(0.5, 1.5, size=shape[-1:]), jnp.float32)
        bias = jnp.asarray(rng.normal(size=shape[-1:]), jnp.float32)
        cot = jnp.asarray(rng.normal(size=shape), jnp.float32)
        args = (x, scale, bias, cot)
        for mode, wrap in (("fwd", _forward), ("fwd+bwd", _forward_backward)):
            fns = {name: wrap(f) for name, f in impls.items()}
            _check_copy_is_real(fns["copy"].lower(*args).compile().as_text())
            medians = _time_round_robin(fns, args, repeats)
            for name, sec in medians.items():
                rows.append(dict(shape=shape, mode=mode, impl=name, ms=sec * 1e3,
                                 ratio=sec / medians["copy"]))
    return rows


_BOOKKEEPING_OP = re.compile(r"= [^=]*? (parameter|get-tuple-element|tuple|constant|bitcast)\(")


def loop_body_op_counts(hlo_text: str) -> list[int]:
    """Executed ops (fusions, dots, copies, ...) in each while-loop body of a compiled module:
    for a scanned RNN, the kernels one time step runs in the forward and in the backward scan.
    A load-independent count that explains where per-step time goes on XLA:CPU."""
    counts = []
    for body in re.findall(r"body=(%[\w.\-]+)", hlo_text):
        match = re.search(re.escape(body) + r" .*?\{\n(.*?)\n\}", hlo_text, re.DOTALL)
        if match:
            lines = [line for line in match.group(1).split("\n")
                     if " = " in line and "ROOT" not in line and not _BOOKKEEPING_OP.search(line)]
            counts.append(len(lines))
    return counts


def benchmark_lstm(size: dict, repeats: int) -> tuple[dict[str, float], dict[str, list[int]]]:
    """Median ms of jitted grad(sum(outputs)) w.r.t. params for the LSTM and the LN-LSTM, and the
    ops per time step in their loop bodies (forward scan, backward scan)."""
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(size["batch"], size["steps"], size["inputs"])), jnp.float32)
    mask = jnp.ones(xs.shape[:2], jnp.float32)
    fns, params = {}, {}
    for name in ("lstm", "lnlstm"):
        runner = rnn.SequenceRunner(rnn.make_cell(name, size["units"]))
        params[name] = runner.init(jax.random.key(0), xs[:, :2], mask[:, :2])["params"]

        def loss(p, xs, mask, runner=runner):
            return jnp.sum(runner.apply({"params": p}, xs, mask)[1])

        fns[name] = jax.jit(jax.value_and_grad(loss))
    # Each gets its own params; time both interleaved.
    wrapped = {name: (lambda xs, mask, f=f, p=params[name]: f(p, xs, mask))
               for name, f in fns.items()}
    medians = _time_round_robin(wrapped, (xs, mask), repeats)
    op_counts = {name: loop_body_op_counts(f.lower(params[name], xs, mask).compile().as_text())
                 for name, f in fns.items()}
    return {name: sec * 1e3 for name, sec in medians.items()}, op_counts


def format_layer_norm_table(rows: list[dict]) -> str:
    impls = list(dict.fromkeys(r["impl"] for r in rows))
    lines = ["| shape | mode | " + " | ".join(f"{i} ms (x copy)" for i in impls) + " |",
             "|---|---|" + "---|" * len(impls)]
    keys = list(dict.fromkeys((r["shape"], r["mode"]) for r in rows))
    for shape, mode in keys:
        cells = {r["impl"]: r for r in rows if r["shape"] == shape and r["mode"] == mode}
        lines.append(f"| {shape[0]}x{shape[1]} | {mode} | " + " | ".join(
            f"{cells[i]['ms']:.3f} ({cells[i]['ratio']:.2f}x)" for i in impls) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed calls per implementation (default 50; 5 with --quick)")
    parser.add_argument("--quick", action="store_true", help="tiny shapes: a smoke test")
    args = parser.parse_args(argv)
    repeats = args.repeats or (5 if args.quick else 50)
    shapes = QUICK_LN_SHAPES if args.quick else LN_SHAPES
    lstm_size = QUICK_LSTM_SIZE if args.quick else LSTM_SIZE

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {os.cpu_count()} cpus, load "
          f"average {load}; {repeats} repeats, medians"
          f"{' (QUICK: tiny shapes)' if args.quick else ''}\n")
    rows = benchmark_layer_norm(shapes, repeats)
    print("## Layer norm, float32 [N, H] over H (ms; ratio to the copy in the same mode)\n")
    print(format_layer_norm_table(rows))

    lstm, op_counts = benchmark_lstm(lstm_size, repeats if args.quick else max(5, repeats // 2))
    lstm_ratio = lstm["lnlstm"] / lstm["lstm"]
    print(f"\n## LSTM forward + backward, batch {lstm_size['batch']}, {lstm_size['steps']} steps, "
          f"{lstm_size['units']} units, input {lstm_size['inputs']}\n")
    print("| cell | ms | ratio to lstm | ops per time step (forward + backward scan) |\n"
          "|---|---|---|---|")
    for name in ("lstm", "lnlstm"):
        counts = op_counts[name]
        print(f"| {name} | {lstm[name]:.2f} | {lstm[name] / lstm['lstm']:.2f}x | "
              f"{' + '.join(map(str, counts))} = {sum(counts)} |")

    ours = [r for r in rows if r["impl"] == "ours" and r["mode"] == "fwd+bwd"]
    worst = max(r["ratio"] for r in ours)
    ln_met = worst <= LN_GOAL
    lstm_met = lstm_ratio <= LSTM_GOAL
    print("\n## Goals\n")
    print(f"- layer_norm fwd+bwd within {LN_GOAL:g}x the copy's fwd+bwd at every shape: "
          f"worst {worst:.2f}x -> {'MET' if ln_met else 'NOT MET'}")
    print(f"- LN-LSTM fwd+bwd within {LSTM_GOAL:g}x the plain LSTM's: {lstm_ratio:.2f}x -> "
          f"{'MET' if lstm_met else 'NOT MET'}")
    if args.quick:
        print("(quick mode: tiny shapes measure dispatch overhead, not the goals)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
