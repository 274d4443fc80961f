"""Benchmarks our layer norm and LN-LSTM against baselines measured in the same run.

The layer-norm part fits the backend.

On the CPU (what the goals below are about):
1. Layer norm on [N, H] float32, forward and forward + backward (`jax.vjp` with a fixed random
   cotangent, gradients for x, scale and bias), all jitted, results blocked:
     ours       ops.layer_norm (custom VJP; the XLA path, the only one on the CPU)
     flax       flax.linen.LayerNorm(epsilon=1e-5)
     textbook   ops.layer_norm_reference left to autodiff
     copy       a jitted copy of the same tensor (y = x * 1.0001, backward dx = dy * 1.0001): the
                memory-bound floor; the script checks that XLA really runs it.
   Medians over `--repeats` calls, interleaved round-robin so that machine noise hits every
   implementation alike; ratio = median / the copy's median in the same mode.

On a GPU, layer norm at memory-bound sizes (6400x960 up to 65536x4096, `--dtype`):
     kernel     ops.layer_norm(implementation="pallas"): the fused Pallas (Triton) kernels
     xla        ops.layer_norm(implementation="xla"): our custom VJP compiled by XLA
     flax       flax.linen.LayerNorm(epsilon=1e-5)
     copy       as above, y = x * (1 + 2^-7) (exact in bfloat16)
     torch      torch.nn.functional.layer_norm, when torch with CUDA is importable
   Device time per call: `--calls` calls queued back to back and one block_until_ready at the
   end (so no host round trip per call is timed), median over `--repeats` such batches.
   Effective bandwidth = passes * N * H * itemsize / time, with the passes a layer norm cannot
   avoid: forward 2 (read x, write y), forward + backward 5 (and read x, read dy, write dx); the
   copy's own are 2 and 4. The kernel's y and gradients are checked against the XLA path's first.

2. LN-LSTM vs LSTM forward + backward through `rnn.SequenceRunner` (grads of sum(outputs) w.r.t.
   the params) at batch 64, 100 steps, 240 units, input 240 (the attentive reader's size):
     lstm                     rnn.LSTMCell
     lnlstm                   rnn.LNLSTMCell: its step after W_h h is cell_ops.ln_lstm_update,
                              one function with a hand-written VJP
     lnlstm (autodiff step)   the same cell and parameters with the step written as separate
                              ops.layer_norm calls left to autodiff (the cell before the fusion)
   with the kernels each runs per time step in its forward and backward scans. On a GPU the
   input-side layer norm runs whichever implementation `ops.layer_norm` picks.

Goals: layer_norm forward + backward within 4x the copy's forward + backward; LN-LSTM forward +
backward within 1.2x the plain LSTM's.

Reading the CPU numbers: XLA:CPU allocates every large output and temporary afresh on each call,
and the kernel page-faults it in (about one fault per 4 KiB page), so on large shapes each
full-size buffer costs about as much as the copy itself and the ratios mostly count full-size
buffers.

  PYTHONPATH=. .venv/bin/python -m scripts.benchmark_ops [--repeats=N] [--quick]  # the CPU
  # on a GPU: the venv with jax's CUDA plugin (make setup ACCEL=cuda12), float32 then bfloat16
  PYTHONPATH=. .venv-cuda12/bin/python -m scripts.benchmark_ops
  PYTHONPATH=. .venv-cuda12/bin/python -m scripts.benchmark_ops --dtype=bfloat16
"""

from __future__ import annotations

import os
import re
import statistics
import time
from typing import Callable, Sequence

from absl import app, flags
from absl.testing import flagsaver
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lnrepro import ops, rnn
from scripts import benchmark_common

LN_SHAPES = ((128, 1000), (6400, 960), (4096, 4096))
QUICK_LN_SHAPES = ((8, 16), (32, 24))
# 6400x960: the attentive reader's LSTM gates (64 x 100 steps, 4 x 240), 24 MB in float32; the
# rest 64 MiB, 128 MiB and 1 GiB, where a layer norm is bound by memory bandwidth.
GPU_LN_SHAPES = ((6400, 960), (4096, 4096), (32768, 1024), (65536, 4096))
QUICK_GPU_LN_SHAPES = ((64, 240), (37, 33))
# Passes over the [N, H] tensor: what each implementation must at least move.
LN_PASSES = {"fwd": 2, "fwd+bwd": 5}
COPY_PASSES = {"fwd": 2, "fwd+bwd": 4}
LSTM_SIZE = dict(batch=64, steps=100, units=240, inputs=240)
QUICK_LSTM_SIZE = dict(batch=4, steps=5, units=8, inputs=8)
LN_GOAL = 4.0  # layer_norm fwd+bwd / copy fwd+bwd
LSTM_GOAL = 1.2  # LN-LSTM fwd+bwd / LSTM fwd+bwd
COPY_FACTOR = 1.0001
# The GPU's copy: bfloat16 rounds 1.0001 to 1 and XLA then drops the multiply; 1 + 2^-7 is exact.
GPU_COPY_FACTOR = 1 + 2**-7

_flax_ln = nn.LayerNorm(epsilon=1e-5)

# --repeats and --quick are benchmark_common's (default repeats: 50 on the CPU, 5 with --quick;
# on a GPU, batches of --calls queued calls: 5, 2 with --quick).
_CALLS = flags.DEFINE_integer("calls", 200, "GPU: calls queued per timed batch.", lower_bound=1)
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"],
                           "GPU: dtype of the layer-norm benchmark (the CPU's is float32).")


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


def _gpu_layer_norm_impls(interpret: bool = False) -> dict[str, Callable]:
    """name -> f(x, scale, bias) -> y, for the GPU benchmark (torch is timed apart);
    `interpret` runs the kernel through Pallas's interpreter (to test this code on the CPU)."""
    return {
        "kernel": lambda x, s, b: ops.layer_norm(x, s, b, epsilon=1e-5, implementation="pallas",
                                                 interpret=interpret),
        "xla": lambda x, s, b: ops.layer_norm(x, s, b, epsilon=1e-5, implementation="xla"),
        "flax": _layer_norm_impls()["flax"],
        "copy": lambda x, s, b: x * GPU_COPY_FACTOR,
    }


def _check_kernel_is_used(compiled_text: str) -> None:
    """The kernel row must run the Triton kernels (a custom call), not XLA's fallback branch."""
    if "triton" not in compiled_text:
        raise RuntimeError("implementation='pallas' compiled to no Triton kernel:\n"
                           + compiled_text[:2000])


def _time_queued(f: Callable, args: tuple, calls: int) -> float:
    """Seconds per call of `calls` calls queued back to back, one block at the end. With the
    device busy throughout, this is device time per call (dispatch overlaps execution)."""
    out = f(*args)
    jax.block_until_ready(out)
    del out
    start = time.perf_counter()
    for _ in range(calls):
        out = f(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / calls


def _max_error(a, b) -> float:
    return float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))


def _torch_layer_norm_timer() -> Callable | None:
    """f(shape, dtype, mode, calls, repeats) -> median seconds per call of torch's layer norm on
    CUDA, or None without torch or CUDA."""
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    F = torch.nn.functional

    def time_torch(shape, dtype, mode, calls, repeats):
        torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
        gen = torch.Generator(device="cuda").manual_seed(0)
        new = lambda *s: torch.randn(*s, device="cuda", dtype=torch_dtype, generator=gen)
        x, cot = new(*shape) * 2 + 0.5, new(*shape)
        w = (new(shape[-1]) * 0.25 + 1.0).requires_grad_()
        b = new(shape[-1]).requires_grad_()
        x.requires_grad_(mode == "fwd+bwd")
        if mode == "fwd":
            def call():
                with torch.no_grad():
                    return F.layer_norm(x, shape[-1:], w, b, 1e-5)
        else:
            def call():
                y = F.layer_norm(x, shape[-1:], w, b, 1e-5)
                return y, torch.autograd.grad(y, (x, w, b), cot)
        times = []
        for _ in range(repeats + 1):  # the first batch warms up
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(calls):
                out = call()
            del out
            torch.cuda.synchronize()
            times.append((time.perf_counter() - start) / calls)
        return statistics.median(times[1:])

    return time_torch


def benchmark_layer_norm_gpu(shapes, dtype: str, calls: int, repeats: int,
                             interpret: bool = False) -> list[dict]:
    """Rows {shape, mode, impl, ms, gbps, ratio, passes} (ratio: to the copy in the same mode),
    and the kernel's largest deviation from the XLA path per shape as rows with impl "check".
    `interpret`: the kernel through Pallas's interpreter, so that tests can run this on a CPU."""
    impls = _gpu_layer_norm_impls(interpret)
    time_torch = _torch_layer_norm_timer()
    jdtype = jnp.dtype(dtype)
    rows = []
    for shape in shapes:
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.normal(size=shape) * 2 + 0.5, jdtype)
        scale = jnp.asarray(rng.uniform(0.5, 1.5, size=shape[-1:]), jdtype)
        bias = jnp.asarray(rng.normal(size=shape[-1:]), jdtype)
        cot = jnp.asarray(rng.normal(size=shape), jdtype)
        args = (x, scale, bias, cot)
        nbytes = x.size * jdtype.itemsize
        for mode, wrap in (("fwd", _forward), ("fwd+bwd", _forward_backward)):
            fns = {name: wrap(f) for name, f in impls.items()}
            _check_copy_is_real(fns["copy"].lower(*args).compile().as_text())
            if not interpret:
                _check_kernel_is_used(fns["kernel"].lower(*args).compile().as_text())
            if mode == "fwd+bwd":
                (y_k, grads_k), (y_x, grads_x) = fns["kernel"](*args), fns["xla"](*args)
                rows.append(dict(shape=shape, mode="check", impl="check",
                                 y=_max_error(y_k, y_x), dx=_max_error(grads_k[0], grads_x[0]),
                                 dscale=_max_error(grads_k[1], grads_x[1]),
                                 dbias=_max_error(grads_k[2], grads_x[2])))
                del y_k, grads_k, y_x, grads_x
            seconds = {name: [] for name in fns}
            for _ in range(repeats):  # round-robin batches, as on the CPU
                for name, f in fns.items():
                    seconds[name].append(_time_queued(f, args, calls))
            medians = {name: statistics.median(t) for name, t in seconds.items()}
            if time_torch is not None:
                medians["torch"] = time_torch(shape, dtype, mode, calls, repeats)
            for name, sec in medians.items():
                passes = (COPY_PASSES if name == "copy" else LN_PASSES)[mode]
                rows.append(dict(shape=shape, mode=mode, impl=name, ms=sec * 1e3,
                                 gbps=passes * nbytes / sec / 1e9, passes=passes,
                                 ratio=sec / medians["copy"]))
        del x, scale, bias, cot, args
    return rows


def format_gpu_layer_norm_table(rows: list[dict]) -> str:
    timed = [r for r in rows if r["impl"] != "check"]
    impls = list(dict.fromkeys(r["impl"] for r in timed))
    lines = ["| shape | mode | " + " | ".join(f"{i} ms, GB/s (x copy)" for i in impls) + " |",
             "|---|---|" + "---|" * len(impls)]
    for shape, mode in dict.fromkeys((r["shape"], r["mode"]) for r in timed):
        cells = {r["impl"]: r for r in timed if r["shape"] == shape and r["mode"] == mode}
        lines.append(f"| {shape[0]}x{shape[1]} | {mode} | " + " | ".join(
            f"{cells[i]['ms']:.4f}, {cells[i]['gbps']:.0f} ({cells[i]['ratio']:.2f}x)"
            if i in cells else "-" for i in impls) + " |")
    checks = [r for r in rows if r["impl"] == "check"]
    lines += ["", "Kernel vs XLA path, max |difference| (fwd+bwd): "
              + "; ".join(f"{r['shape'][0]}x{r['shape'][1]}: y {r['y']:.2e}, dx {r['dx']:.2e}, "
                          f"dscale {r['dscale']:.2e}, dbias {r['dbias']:.2e}" for r in checks)]
    return "\n".join(lines)


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


class AutodiffStepLNLSTMCell(rnn.LNLSTMCell):
    """rnn.LNLSTMCell with its step as separate layer norms left to autodiff: the same function
    and parameters, the baseline for cell_ops.ln_lstm_update's hand-written VJP."""

    def step(self, carry, inputs, *, train=False):
        del train
        c, h = carry
        hidden_scale, hidden_bias = self.hidden_norm()
        cell_scale, cell_bias = self.cell_norm()
        gates = inputs.projected + ops.layer_norm(
            self.hidden_kernel(h), hidden_scale, hidden_bias, epsilon=self.epsilon) + self.bias
        i, f, o, g = jnp.split(gates, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(
            ops.layer_norm(c, cell_scale, cell_bias, epsilon=self.epsilon))
        return (c, h), rnn.StepOutput(h)


LSTM_VARIANTS = {
    "lstm": lambda units: rnn.make_cell("lstm", units),
    "lnlstm": lambda units: rnn.make_cell("lnlstm", units),
    "lnlstm (autodiff step)": AutodiffStepLNLSTMCell,
}


def benchmark_lstm(size: dict, repeats: int) -> tuple[dict[str, float], dict[str, list[int]]]:
    """Median ms of jitted grad(sum(outputs)) w.r.t. params for each of LSTM_VARIANTS, and the
    ops per time step in their loop bodies (forward scan, backward scan)."""
    rng = np.random.default_rng(0)
    xs = jnp.asarray(rng.normal(size=(size["batch"], size["steps"], size["inputs"])), jnp.float32)
    mask = jnp.ones(xs.shape[:2], jnp.float32)
    fns, params = {}, {}
    for name, make in LSTM_VARIANTS.items():
        runner = rnn.SequenceRunner(make(size["units"]))
        params[name] = runner.init(jax.random.key(0), xs[:, :2], mask[:, :2])["params"]

        def loss(p, xs, mask, runner=runner):
            return jnp.sum(runner.apply({"params": p}, xs, mask)[1])

        fns[name] = jax.jit(jax.value_and_grad(loss))
    # Each gets its own params; time all interleaved.
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


def run(*, repeats: int, quick: bool, calls: int, dtype: str) -> int:
    """The whole benchmark; prints markdown tables. Returns 0."""
    backend = jax.default_backend()
    gpu = backend == "gpu"
    lstm_size = QUICK_LSTM_SIZE if quick else LSTM_SIZE

    print(f"{benchmark_common.machine()}{f', {jax.devices()[0].device_kind}' if gpu else ''}; "
          f"{repeats} repeats, medians{f' of {calls} queued calls' if gpu else ''}"
          f"{' (QUICK: tiny shapes)' if quick else ''}\n")
    if gpu:
        shapes = QUICK_GPU_LN_SHAPES if quick else GPU_LN_SHAPES
        rows = benchmark_layer_norm_gpu(shapes, dtype, calls, repeats)
        print(f"## Layer norm, {dtype} [N, H] over H (device ms per call, effective GB/s at "
              f"{LN_PASSES['fwd']} passes fwd, {LN_PASSES['fwd+bwd']} fwd+bwd (copy "
              f"{COPY_PASSES['fwd']}, {COPY_PASSES['fwd+bwd']}); ratio to the copy)\n")
        print(format_gpu_layer_norm_table(rows))
        if "torch" not in {r["impl"] for r in rows}:
            print("\n(torch with CUDA not importable: no torch column)")
        ours = [r for r in rows if r["impl"] == "kernel" and r["mode"] == "fwd+bwd"]
    else:
        rows = benchmark_layer_norm(QUICK_LN_SHAPES if quick else LN_SHAPES, repeats)
        print("## Layer norm, float32 [N, H] over H (ms; ratio to the copy in the same mode)\n")
        print(format_layer_norm_table(rows))
        ours = [r for r in rows if r["impl"] == "ours" and r["mode"] == "fwd+bwd"]

    lstm, op_counts = benchmark_lstm(lstm_size, repeats if quick else max(5, repeats // 2))
    lstm_ratio = lstm["lnlstm"] / lstm["lstm"]
    print(f"\n## LSTM forward + backward, batch {lstm_size['batch']}, {lstm_size['steps']} steps, "
          f"{lstm_size['units']} units, input {lstm_size['inputs']}\n")
    print("| cell | ms | ratio to lstm | ops per time step (forward + backward scan) |\n"
          "|---|---|---|---|")
    for name in LSTM_VARIANTS:
        counts = op_counts[name]
        print(f"| {name} | {lstm[name]:.2f} | {lstm[name] / lstm['lstm']:.2f}x | "
              f"{' + '.join(map(str, counts))} = {sum(counts)} |")

    worst = max(r["ratio"] for r in ours)
    ln_met = worst <= LN_GOAL
    lstm_met = lstm_ratio <= LSTM_GOAL
    print("\n## Goals\n")
    print(f"- layer_norm fwd+bwd within {LN_GOAL:g}x the copy's fwd+bwd at every shape: "
          f"worst {worst:.2f}x -> {'MET' if ln_met else 'NOT MET'}")
    print(f"- LN-LSTM fwd+bwd within {LSTM_GOAL:g}x the plain LSTM's: {lstm_ratio:.2f}x -> "
          f"{'MET' if lstm_met else 'NOT MET'}")
    if quick:
        print("(quick mode: tiny shapes measure dispatch overhead, not the goals)")
    return 0


def main(argv: Sequence[str]) -> int:
    """As app.run calls it: argv is the program name, the flags already parsed. Given flags as on
    the command line instead (main(["--quick", "--repeats", "3"])), it parses them and restores
    the flags' values afterwards."""
    if argv and argv[0].startswith("-"):
        with flagsaver.flagsaver():
            return main(flags.FLAGS(["benchmark_ops", *argv]))
    # torch and JAX share the GPU: JAX takes half instead of its default 75% (the largest shape
    # needs under 8 GiB). Takes effect only if no JAX backend exists yet.
    os.environ.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", "0.5")
    quick, repeats = benchmark_common.start(argv, repeats=50, quick_repeats=5)
    if jax.default_backend() == "gpu" and benchmark_common.REPEATS.value is None:
        repeats = 2 if quick else 5
    return run(repeats=repeats, quick=quick, calls=_CALLS.value, dtype=_DTYPE.value)


if __name__ == "__main__":
    app.run(main)
