"""Tests for the fused Pallas layer norm (lnrepro.pallas_layer_norm) behind ops.layer_norm.

No GPU here: the kernels run through Pallas's interpreter (`interpret=True`), which executes the
same kernel bodies, masks included, and pads out-of-range reads with NaN, so a missing mask fails
these tests. Values and gradients (x, gain, bias) are checked against autodiff of the float64
formula. The Triton lowering itself is checked by lowering for CUDA on the CPU (jaxpr -> Triton
IR, no PTX): what runs on a GPU is measured by scripts/benchmark_ops.py there.
"""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnrepro import ops
from lnrepro import pallas_layer_norm as pln

EPS = ops.DEFAULT_EPSILON
F32, BF16 = jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)

# Pinned to pass on a GPU too, where rsqrt (2 ulp) and the order of the sums differ from the CPU's.
# float32, measured here: y <= 9e-7, dx <= 3e-7, dgain and dbias <= 4.4e-6 (sums over 114 rows of
# values up to 35), so 1e-5 and 1e-4 leave a 10-20x margin. bfloat16: one rounding of the output
# to 8 bits (half a spacing is 2^-9 ~ 0.2% relative), measured y <= 2.3e-2, dx <= 7.7e-3, dgain
# <= 6.1e-2 at |dgain| ~ 17; the statistics are float32 either way.
TOLERANCE = {
    F32: dict(y=dict(rtol=1e-5, atol=1e-5), dx=dict(rtol=1e-5, atol=1e-5),
              dparams=dict(rtol=1e-5, atol=1e-4)),
    BF16: dict(y=dict(rtol=1e-2, atol=2e-2), dx=dict(rtol=1e-2, atol=2e-2),
               dparams=dict(rtol=1e-2, atol=5e-2)),
}

# (*shape, dtype). Rows not a multiple of any block (5, 37, 2*19=38), features at and between
# powers of two (1, 7, 33, 240); (37, 240) takes 3 row tiles of 16, the last partly outside the
# array. bfloat16 on two shapes: its path differs only in the loads' and stores' casts.
SHAPES = [(5, 7, F32), (37, 33, F32), (37, 240, F32), (2, 19, 33, F32), (3, 1, F32),
          (37, 33, BF16), (2, 19, 240, BF16)]


def _args(shape, dtype, use_scale=True, use_bias=True, seed=0):
    rng = np.random.default_rng(seed)
    to = lambda a: jnp.asarray(np.asarray(a, np.float32), dtype)
    x = to(rng.normal(size=shape) * 3 + 2)
    scale = to(rng.uniform(0.5, 2.0, size=shape[-1:])) if use_scale else None
    bias = to(rng.normal(size=shape[-1:])) if use_bias else None
    cot = to(rng.normal(size=shape))
    return x, scale, bias, cot


def _f64(a):
    return None if a is None else np.asarray(jnp.asarray(a, jnp.float32), np.float64)


def _reference(x, scale, bias, cot):
    """y and (dx, dscale, dbias) in float64 numpy on the same inputs (tests/test_ops.py checks
    this gradient formula against autodiff):
      xhat = (x - mu) / sqrt(s^2 + eps),  y = g xhat + b,  dxhat = g dy,
      dx = (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) / sqrt(s^2 + eps),
      dg = sum_rows dy xhat,  db = sum_rows dy."""
    x, cot = _f64(x), _f64(cot)
    features = x.shape[-1]
    g = np.ones(features) if scale is None else _f64(scale)
    b = np.zeros(features) if bias is None else _f64(bias)
    mean = x.mean(-1, keepdims=True)
    rstd = 1 / np.sqrt(np.square(x - mean).mean(-1, keepdims=True) + EPS)
    xhat = (x - mean) * rstd
    dxhat = cot * g
    dx = rstd * (dxhat - dxhat.mean(-1, keepdims=True)
                 - xhat * (dxhat * xhat).mean(-1, keepdims=True))
    rows = tuple(range(x.ndim - 1))
    dscale = None if scale is None else (cot * xhat).sum(rows)
    dbias = None if bias is None else cot.sum(rows)
    return g * xhat + b, (dx, dscale, dbias)


@jax.jit
def _interpreted_value_and_vjp(x, scale, bias, cot):
    y, vjp = jax.vjp(lambda *a: ops.layer_norm(*a, interpret=True), x, scale, bias)
    return y, vjp(cot)


def _check_against_reference(x, scale, bias, cot):
    y, grads = _interpreted_value_and_vjp(x, scale, bias, cot)
    expected_y, expected_grads = _reference(x, scale, bias, cot)
    tol = TOLERANCE[jnp.dtype(x.dtype)]
    assert y.dtype == x.dtype and y.shape == x.shape
    np.testing.assert_allclose(_f64(y), expected_y, **tol["y"])
    for name, param, grad, expected in zip(("dx", "dscale", "dbias"), (x, scale, bias), grads,
                                           expected_grads):
        assert (grad is None) == (param is None), name
        if grad is not None:
            assert grad.dtype == param.dtype and grad.shape == param.shape, name
            np.testing.assert_allclose(_f64(grad), expected,
                                       **tol["dx" if name == "dx" else "dparams"], err_msg=name)


@pytest.mark.parametrize("case", SHAPES, ids=lambda c: "x".join(map(str, c[:-1])) + f"-{c[-1]}")
def test_interpreted_kernel_matches_float64(case):
    *shape, dtype = case
    _check_against_reference(*_args(tuple(shape), dtype))


@pytest.mark.parametrize("use_scale,use_bias", [(False, False), (True, False), (False, True)])
def test_interpreted_kernel_without_gain_or_bias(use_scale, use_bias):
    _check_against_reference(*_args((6, 33), F32, use_scale, use_bias, seed=1))


def test_backward_partial_sums_over_several_programs(monkeypatch):
    """Few programs looping over several tiles each: 114 rows of 240 -> 8 tiles of 16 rows, 3 per
    program -> 3 programs, the last with one tile wholly past the rows. dgain and dbias add up
    the programs' partial sums."""
    monkeypatch.setattr(pln, "BACKWARD_PROGRAMS", 3)
    config = pln.block_config(114, 240)
    assert config == pln.BlockConfig(block_rows=16, block_features=256, num_warps=8)
    assert pln.backward_grid(114, config) == (3, 3)
    x, scale, bias, cot = _args((114, 240), F32, seed=2)
    # A fresh trace (not _interpreted_value_and_vjp's cache) so that the patched grid is used.
    y, vjp = jax.vjp(lambda *a: ops.layer_norm(*a, interpret=True), x, scale, bias)
    expected_y, expected_grads = _reference(x, scale, bias, cot)
    np.testing.assert_allclose(_f64(y), expected_y, **TOLERANCE[F32]["y"])
    for name, grad, expected in zip(("dx", "dscale", "dbias"), vjp(cot), expected_grads):
        np.testing.assert_allclose(_f64(grad), expected,
                                   **TOLERANCE[F32]["dx" if name == "dx" else "dparams"],
                                   err_msg=name)


def test_kernel_statistics_are_the_papers():
    """Biased variance, eps inside the square root (Ba et al. 2016, eq. 4; ops.layer_norm)."""
    x = jnp.asarray([[-1.0, 1.0], [0.0, 4.0]])  # biased variances 1 and 4
    y, mean, rstd = pln.forward(x, None, None, epsilon=3.0, interpret=True)
    np.testing.assert_allclose(np.asarray(mean), [0.0, 2.0])
    np.testing.assert_allclose(np.asarray(rstd), [0.5, 1 / np.sqrt(7.0)], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(y), [[-0.5, 0.5], [-2 / np.sqrt(7), 2 / np.sqrt(7)]],
                               rtol=1e-6)


def test_kernel_handles_a_large_offset():
    """Two-pass statistics in the kernel too: 1e6 + unit noise stays within float32's spacing
    at 1e6 (the bound of test_ops.test_layer_norm_large_constant_offset)."""
    rng = np.random.default_rng(3)
    x = (1e6 + rng.normal(size=(4, 64))).astype(np.float32)
    y = np.asarray(ops.layer_norm(jnp.asarray(x), interpret=True))
    expected, _ = _reference(x, None, None, np.zeros_like(x))
    np.testing.assert_allclose(y, expected, atol=4 * 2.0**-24 * 1e6)


# ----------------------------------------------------------------------------------------------
# Which implementation runs
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,dtype,axes,backend,devices,expected", [
    ((6400, 960), F32, (1,), "gpu", 1, "pallas"),
    ((64, 100, 960), BF16, (2,), "gpu", 1, "pallas"),
    ((3, pln.MAX_FEATURES), F32, (1,), "gpu", 1, "pallas"),
    ((3, pln.MAX_FEATURES + 1), F32, (1,), "gpu", 1, "xla"),  # a row must fit one tile
    ((6400, 960), F32, (1,), "cpu", 1, "xla"),  # the CPU keeps the XLA path, always
    ((6400, 960), F32, (1,), "tpu", 1, "xla"),
    ((6400, 960), F32, (1,), "gpu", 2, "xla"),  # XLA cannot partition a Pallas call
    ((6400, 960), jnp.dtype(jnp.float16), (1,), "gpu", 1, "xla"),
    ((6400, 960), F32, (0,), "gpu", 1, "xla"),  # not the last axis
    ((4, 6, 8), F32, (1, 2), "gpu", 1, "xla"),  # several axes
    ((0, 960), F32, (1,), "gpu", 1, "xla"),  # no rows
])
def test_layer_norm_implementation(shape, dtype, axes, backend, devices, expected):
    assert ops.layer_norm_implementation(shape, dtype, axes, backend, devices) == expected
    assert pln.kernel_serves(shape, dtype, axes) == (
        ops.layer_norm_implementation(shape, dtype, axes, "gpu", 1) == "pallas")


def _grad_fn(**kwargs):
    f = lambda x, s, b: jnp.sum(ops.layer_norm(x, s, b, **kwargs).astype(jnp.float32) ** 2)
    return jax.jit(jax.grad(f, argnums=(0, 1, 2)))


def test_cpu_runs_the_xla_path_unchanged():
    """On the CPU the default is the XLA path: the same program as implementation="xla", with no
    kernel in it, and bit-identical results."""
    assert jax.default_backend() == "cpu"
    x, scale, bias, _ = _args((8, 33), F32)
    default_text = _grad_fn().lower(x, scale, bias).as_text()
    assert default_text == _grad_fn(implementation="xla").lower(x, scale, bias).as_text()
    assert "custom_call" not in default_text
    for a, b in zip(_grad_fn()(x, scale, bias), _grad_fn(implementation="xla")(x, scale, bias)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_gpu_default_lowers_the_triton_kernels(monkeypatch):
    """With one GPU as the default backend, forward + backward lower for CUDA to one Triton call
    each (the CPU builds the Triton IR; only compiling it to PTX needs the GPU's toolchain), and
    the same function placed on the CPU lowers to the XLA path instead of failing."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    monkeypatch.setattr(jax, "device_count", lambda: 1)
    x, scale, bias, _ = _args((37, 240), BF16)
    cuda = _grad_fn().trace(x, scale, bias).lower(lowering_platforms=("cuda",)).as_text()
    calls = re.findall(r'custom_call @__gpu\$xla\.gpu\.triton.*?name = "(\w+)"', cuda)
    assert calls == ["layer_norm_forward", "layer_norm_backward"]
    cpu = _grad_fn().trace(x, scale, bias).lower(lowering_platforms=("cpu",)).as_text()
    assert "triton" not in cpu
    # And that CPU fallback computes the same as the XLA path.
    for a, b in zip(_grad_fn()(x, scale, bias), _grad_fn(implementation="xla")(x, scale, bias)):
        np.testing.assert_allclose(_f64(a), _f64(b), rtol=1e-2, atol=2e-2)


@pytest.mark.parametrize("use_scale,use_bias", [(True, True), (True, False), (False, True),
                                                (False, False)])
def test_pallas_path_off_the_gpu_falls_back_to_the_xla_functions(use_scale, use_bias):
    """implementation="pallas" placed on the CPU runs the XLA forward and backward through the
    fused path's row layout (ops._rows_forward/_rows_backward): float32, with and without gain
    and bias, the same values and gradients as the XLA path."""
    x, scale, bias, cot = _args((9, 40), F32, use_scale, use_bias)

    def value_and_vjp(**kwargs):
        def run(x, scale, bias, cot):
            y, vjp = jax.vjp(lambda *a: ops.layer_norm(*a, **kwargs), x, scale, bias)
            return y, vjp(cot)
        return jax.jit(run)(x, scale, bias, cot)

    fallback, xla = value_and_vjp(implementation="pallas"), value_and_vjp(implementation="xla")
    for a, b in zip(jax.tree.leaves(fallback), jax.tree.leaves(xla)):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)
    assert len(jax.tree.leaves(fallback)) == 2 + use_scale + use_bias


@pytest.mark.parametrize("kwargs,shape,dtype,msg", [
    (dict(interpret=True, axis=0), (4, 6), F32,
     "the Pallas layer norm serves float32 and bfloat16 inputs normalized over the last axis "
     "only, with 1 to 8192 features; got shape (4, 6), dtype float32, axes (0,)."),
    (dict(implementation="pallas"), (4, 6), jnp.dtype(jnp.float16),
     "the Pallas layer norm serves float32 and bfloat16 inputs normalized over the last axis "
     "only, with 1 to 8192 features; got shape (4, 6), dtype float16, axes (1,)."),
    (dict(implementation="triton"), (4, 6), F32,
     "implementation must be None, 'xla' or 'pallas', got 'triton'."),
    (dict(implementation="xla", interpret=True), (4, 6), F32,
     "interpret=True runs the Pallas kernels; it cannot be combined with "
     "implementation='xla'."),
])
def test_bad_implementation_arguments(kwargs, shape, dtype, msg):
    with pytest.raises(ValueError, match=re.escape(msg)):
        ops.layer_norm(jnp.ones(shape, dtype), **kwargs)


def test_gpu_benchmark_code_runs_with_the_interpreter():
    """scripts/benchmark_ops.py's GPU table, run on the CPU with the kernel interpreted: every
    implementation gets a row in each mode, and the kernel agrees with the XLA path."""
    from scripts import benchmark_ops
    rows = benchmark_ops.benchmark_layer_norm_gpu([(37, 33)], "float32", calls=2, repeats=1,
                                                  interpret=True)
    table = benchmark_ops.format_gpu_layer_norm_table(rows)
    number = r"\d+\.\d+, \d+ \(\d+\.\d+x\)"
    for mode in ("fwd", "fwd+bwd"):
        assert re.search(rf"^\| 37x33 \| {re.escape(mode)} \| {number} \| {number} \| {number} "
                         rf"\| {number} \|$", table, re.MULTILINE), table
    [check] = [r for r in rows if r["impl"] == "check"]
    assert max(check["y"], check["dx"], check["dscale"], check["dbias"]) < 1e-4, check
    assert {r["passes"] for r in rows if r["impl"] == "kernel"} == {2, 5}
