"""Tests for lnrepro.ops (layer, batch and weight norm) and the flax wrappers in lnrepro.layers.

Every op is checked against a float64 numpy reference written here; gradients against finite
differences (`jax.test_util.check_grads`) and against autodiff of an independent formula. The ops
compute their statistics in float32 whatever the input dtype, so float32 is the precision tested:
finite-difference checks use float32's default gradient tolerance, and the custom VJP is compared
with autodiff to tight tolerance.
"""

from __future__ import annotations

import functools
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jax.test_util import check_grads

from lnrepro import invariance, layers, ops

EPS = ops.DEFAULT_EPSILON
TOLERANCE = {jnp.float32: dict(rtol=1e-5, atol=1e-5), jnp.bfloat16: dict(rtol=2e-2, atol=3e-2)}


# ----------------------------------------------------------------------------------------------
# float64 numpy references
# ----------------------------------------------------------------------------------------------

def _axes(axis, ndim):
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    return tuple(sorted(a % ndim for a in axes))


def _param_broadcast(p, shape, axes):
    """A parameter of shape x.shape[axes] reshaped to broadcast against x."""
    return np.reshape(p, [shape[a] if a in axes else 1 for a in range(len(shape))])


def np_layer_norm(x, scale=None, bias=None, axis=-1, epsilon=EPS):
    x = np.asarray(x, np.float64)
    axes = _axes(axis, x.ndim)
    mean = x.mean(axis=axes, keepdims=True)
    var = np.square(x - mean).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + epsilon)
    if scale is not None:
        y = y * _param_broadcast(np.asarray(scale, np.float64), x.shape, axes)
    if bias is not None:
        y = y + _param_broadcast(np.asarray(bias, np.float64), x.shape, axes)
    return y


def np_batch_statistics(x, axis=0, unbiased=False, mask=None):
    x = np.asarray(x, np.float64)
    axes = _axes(axis, x.ndim)
    m = np.ones(x.shape[:-1]) if mask is None else np.asarray(mask, np.float64)
    m = np.broadcast_to(m[..., None], x.shape)
    count = m.sum(axis=axes)
    mean = (x * m).sum(axis=axes) / np.maximum(count, 1)
    sq = np.square(x - np.expand_dims(mean, axes)) * m
    denom = np.maximum(count - 1, 1) if unbiased else np.maximum(count, 1)
    return mean, sq.sum(axis=axes) / denom


def np_batch_norm_inference(x, scale, bias, mean, var, axis=0, epsilon=EPS):
    x = np.asarray(x, np.float64)
    axes = _axes(axis, x.ndim)
    ex = lambda a: np.expand_dims(np.asarray(a, np.float64), axes)
    y = (x - ex(mean)) / np.sqrt(ex(var) + epsilon)
    if scale is not None:
        y = y * ex(scale)
    if bias is not None:
        y = y + ex(bias)
    return y


def np_weight_norm(v, g, axis=0):
    v = np.asarray(v, np.float64)
    axes = _axes(axis, v.ndim)
    norm = np.sqrt(np.square(v).sum(axis=axes, keepdims=True))
    return np.expand_dims(np.asarray(g, np.float64), axes) * v / norm


def _rng(seed=0):
    return np.random.default_rng(seed)


def _to(a, dtype):
    return jnp.asarray(np.asarray(a, np.float32), dtype)


def _f64(a):
    return np.asarray(jnp.asarray(a, jnp.float32), np.float64)


# (shape, axis): int and tuple axes, negative, first, non-contiguous.
LN_CASES = [((4, 6), -1), ((3, 4, 5), (1, 2)), ((5, 4), 0), ((2, 3, 4), (0, 2)), ((3, 4, 5), 1),
            ((2, 3, 8), (-1,))]
DTYPES = [jnp.float32, jnp.bfloat16]


# ----------------------------------------------------------------------------------------------
# Layer norm: values
# ----------------------------------------------------------------------------------------------

def _flax_layer_norm(x, scale, bias, axis, epsilon):
    """lnrepro.layers.LayerNorm (last axis only) with the given parameters."""
    params = {"params": {"scale": scale, "bias": bias}}
    return layers.LayerNorm(epsilon).apply(params, x)


def _upstream_flax_layer_norm(x, scale, bias, axis, epsilon):
    params = {"params": {"scale": scale, "bias": bias}}
    return nn.LayerNorm(epsilon=epsilon, dtype=x.dtype).apply(params, x)


# Jitted (one compilation per case is cheaper than eager op-by-op); eager calls are covered below.
LN_IMPLEMENTATIONS = {name: jax.jit(f, static_argnums=(3, 4)) for name, f in {
    "ops.layer_norm": lambda x, s, b, axis, eps: ops.layer_norm(x, s, b, axis=axis, epsilon=eps),
    "ops.layer_norm_reference": lambda x, s, b, axis, eps: ops.layer_norm_reference(
        x, s, b, axis=axis, epsilon=eps),
    "layers.LayerNorm": _flax_layer_norm,
    "flax.linen.LayerNorm": _upstream_flax_layer_norm,
}.items()}
LAST_AXIS_ONLY = {"layers.LayerNorm", "flax.linen.LayerNorm"}  # the flax modules


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
@pytest.mark.parametrize("impl,shape,axis", [
    (impl, shape, axis) for impl in sorted(LN_IMPLEMENTATIONS) for shape, axis in LN_CASES
    if impl not in LAST_AXIS_ONLY or _axes(axis, len(shape)) == (len(shape) - 1,)])
def test_layer_norm_matches_numpy(impl, dtype, shape, axis):
    rng = _rng(1)
    axes = _axes(axis, len(shape))
    pshape = tuple(shape[a] for a in axes)
    x = _to(rng.normal(size=shape) * 3 + 2, dtype)
    scale = _to(rng.uniform(0.5, 2.0, size=pshape), dtype)
    bias = _to(rng.normal(size=pshape), dtype)
    y = LN_IMPLEMENTATIONS[impl](x, scale, bias, axis, EPS)
    assert y.dtype == dtype and y.shape == shape
    expected = np_layer_norm(_f64(x), _f64(scale), _f64(bias), axis)
    np.testing.assert_allclose(_f64(y), expected, **TOLERANCE[dtype])


@pytest.mark.parametrize("use_scale,use_bias", [(False, False), (True, False), (False, True)])
def test_layer_norm_optional_scale_and_bias(use_scale, use_bias):
    rng = _rng(2)
    x = _to(rng.normal(size=(3, 7)), jnp.float32)
    scale = _to(rng.uniform(0.5, 2, size=7), jnp.float32) if use_scale else None
    bias = _to(rng.normal(size=7), jnp.float32) if use_bias else None
    y = ops.layer_norm(x, scale, bias, epsilon=1e-3)
    np.testing.assert_allclose(np.asarray(y), np_layer_norm(_f64(x), scale, bias, epsilon=1e-3),
                               rtol=1e-5, atol=1e-5)


def test_layer_norm_epsilon_is_inside_the_square_root():
    x = jnp.asarray([[-1.0, 1.0]])  # biased variance 1
    np.testing.assert_allclose(np.asarray(ops.layer_norm(x, epsilon=3.0)), [[-0.5, 0.5]],
                               rtol=1e-6)
    np.testing.assert_allclose(np.asarray(ops.layer_norm(x)),
                               [[-1 / np.sqrt(1 + 1e-5), 1 / np.sqrt(1 + 1e-5)]], rtol=1e-7)


@pytest.mark.parametrize("impl", ["ops.layer_norm", "layers.LayerNorm"])
def test_layer_norm_gradient_at_a_constant_row_is_scaled_by_one_over_sqrt_eps(impl):
    """A constant row (an LN-LSTM's W_h h_0 with h_0 = 0) has zero variance: the output is the
    bias, and the input gradient is (g - mean(g)) / sqrt(eps) with g = scale * dy: ~316x the
    cotangent at eps = 1e-5 (README, the harder reader corpus)."""
    rng = _rng(7)
    x = jnp.full((2, 16), 0.0, jnp.float32).at[1].set(3.0)  # two constant rows
    scale = jnp.asarray(rng.uniform(0.5, 2.0, size=16), jnp.float32)
    bias = jnp.asarray(rng.normal(size=16), jnp.float32)
    dy = rng.normal(size=(2, 16))
    f = lambda x: LN_IMPLEMENTATIONS[impl](x, scale, bias, -1, EPS)
    y, vjp = jax.vjp(f, x)
    np.testing.assert_allclose(np.asarray(y), np.broadcast_to(np.asarray(bias), (2, 16)),
                               rtol=1e-6, atol=1e-6)
    (dx,) = vjp(jnp.asarray(dy, jnp.float32))
    g = _f64(scale) * dy
    expected = (g - g.mean(axis=-1, keepdims=True)) / np.sqrt(EPS)
    np.testing.assert_allclose(_f64(dx), expected, rtol=1e-5, atol=1e-4)


# At offset 1e6 the float32 spacing is 2^-4 = 0.0625: the two-pass statistics compute the row
# mean to within a couple of spacings, and x - mean inherits that error, so outputs of a row with
# std 1 may shift by ~0.1 (measured <= 0.125 at H = 8..1000). That is float32-accurate relative to
# the input's magnitude (4 * 2^-24 * |offset| / std), and 3-4 orders of magnitude better than the
# one-pass E[x^2] - E[x]^2, whose variance here is pure round-off. (Centering as
# (x - k) - mean(x - k), k one element of the row, would bring this to ~1e-6; see the report.)
LARGE_OFFSET = 1e6
LARGE_OFFSET_ATOL = 4 * 2.0**-24 * LARGE_OFFSET  # 0.24 for unit std


@pytest.mark.parametrize("features", [8, 64, 1000])
def test_layer_norm_large_constant_offset(features):
    """1e6 + unit noise in float32 against float64 on the same float32 inputs."""
    rng = _rng(3)
    x = (LARGE_OFFSET + rng.normal(size=(16, features))).astype(np.float32)
    expected = np_layer_norm(x.astype(np.float64))
    xj = jnp.asarray(x)
    mean = jnp.mean(xj, -1, keepdims=True)
    one_pass = (xj - mean) * jax.lax.rsqrt(
        jnp.maximum(jnp.mean(xj * xj, -1, keepdims=True) - mean * mean, 0.0) + EPS)
    one_pass_error = np.abs(np.asarray(one_pass) - expected).max()
    assert one_pass_error > 100 * LARGE_OFFSET_ATOL  # the failure mode we guard against
    for f in (ops.layer_norm, jax.jit(ops.layer_norm)):
        y = np.asarray(f(xj))
        assert np.all(np.isfinite(y))
        np.testing.assert_allclose(y, expected, atol=LARGE_OFFSET_ATOL)
        # The error is mostly a per-row shift (the mean's rounding delta, which also inflates the
        # variance by delta^2 / var, < 1%): the spread stays accurate.
        np.testing.assert_allclose(y.std(-1), 1.0, atol=1e-2)
        centered = y - y.mean(-1, keepdims=True)
        np.testing.assert_allclose(centered, expected, atol=3e-2)
    # The gradient stays accurate too: d/dx sum(w * LN(x)) vs the float64 formula.
    w = rng.normal(size=x.shape)
    grad = np.asarray(jax.grad(lambda x: jnp.sum(ops.layer_norm(x) * w))(xj))
    rstd = 1 / np.sqrt(np.var(x.astype(np.float64), -1, keepdims=True) + EPS)
    expected_grad = rstd * (w - w.mean(-1, keepdims=True)
                            - expected * (w * expected).mean(-1, keepdims=True))
    np.testing.assert_allclose(grad, expected_grad, atol=LARGE_OFFSET_ATOL)


# ----------------------------------------------------------------------------------------------
# Layer norm: gradients
# ----------------------------------------------------------------------------------------------

GRAD_CASES = [((3, 5), -1, True, True), ((3, 5), -1, False, False), ((2, 3, 4), (1, 2), True, True),
              ((4, 3), 0, True, False), ((2, 3, 4), (0, 2), False, True),
              ((2, 3, 5), -1, True, True)]  # N-D over the last axis: run as [rows, H]


def _ln_args(shape, axis, use_scale, use_bias, seed=4):
    rng = _rng(seed)
    pshape = tuple(shape[a] for a in _axes(axis, len(shape)))
    x = jnp.asarray(rng.normal(size=shape) * 2 + 1, jnp.float32)
    scale = jnp.asarray(rng.uniform(0.5, 1.5, size=pshape), jnp.float32) if use_scale else None
    bias = jnp.asarray(rng.normal(size=pshape), jnp.float32) if use_bias else None
    return x, scale, bias


@pytest.mark.parametrize("shape,axis,use_scale,use_bias", GRAD_CASES)
def test_layer_norm_custom_vjp_numerical(shape, axis, use_scale, use_bias):
    x, scale, bias = _ln_args(shape, axis, use_scale, use_bias)
    f = lambda x, s, b: ops.layer_norm(x, s, b, axis=axis)
    check_grads(jax.jit(f), (x, scale, bias), order=1, modes=["rev"], eps=1e-3)


@pytest.mark.parametrize("shape,axis,use_scale,use_bias", GRAD_CASES)
def test_layer_norm_custom_vjp_equals_autodiff(shape, axis, use_scale, use_bias):
    """Our VJP against autodiff of ops.layer_norm_reference (same float32 math): tight; and
    against autodiff of the float64 numpy-style formula under x64: float32-tight."""
    x, scale, bias = _ln_args(shape, axis, use_scale, use_bias)
    cot = jnp.asarray(_rng(5).normal(size=shape), jnp.float32)

    @functools.partial(jax.jit, static_argnums=0)
    def value_and_vjp(f, x, scale, bias, cot):
        y, vjp = jax.vjp(lambda *a: f(*a, axis=axis), x, scale, bias)
        return y, vjp(cot)

    ours_y, ours = value_and_vjp(ops.layer_norm, x, scale, bias, cot)
    ref_y, ref = value_and_vjp(ops.layer_norm_reference, x, scale, bias, cot)
    np.testing.assert_allclose(np.asarray(ours_y), np.asarray(ref_y), rtol=1e-6, atol=1e-6)
    for a, b in zip(ours, ref):
        assert (a is None) == (b is None)
        if a is not None:
            assert a.shape == b.shape and a.dtype == b.dtype
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)

    with jax.enable_x64(True):
        def formula64(x, s, b):
            axes = _axes(axis, x.ndim)
            mean = jnp.mean(x, axes, keepdims=True)
            y = (x - mean) / jnp.sqrt(jnp.mean(jnp.square(x - mean), axes, keepdims=True) + EPS)
            pshape = [x.shape[a] if a in axes else 1 for a in range(x.ndim)]
            if s is not None:
                y = y * jnp.reshape(s, pshape)
            if b is not None:
                y = y + jnp.reshape(b, pshape)
            return y
        as64 = lambda a: None if a is None else jnp.asarray(np.asarray(a), jnp.float64)
        exact = jax.jit(lambda *a: jax.vjp(formula64, *a[:3])[1](a[3]))(
            as64(x), as64(scale), as64(bias), as64(cot))
    for a, b in zip(ours, exact):
        if a is not None:
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("shape,axis,use_scale,use_bias", GRAD_CASES)
def test_layer_norm_backward_row_sums_as_products_agree(shape, axis, use_scale, use_bias):
    """The two ways layer_norm_backward takes its per-row sums give the same gradients."""
    x, scale, bias = _ln_args(shape, axis, use_scale, use_bias)
    axes = _axes(axis, x.ndim)
    dy = jnp.asarray(_rng(6).normal(size=shape), jnp.float32)
    _, mean, rstd = ops.layer_norm_forward(x, scale, bias, axes, EPS)
    reduce, product = (jax.jit(lambda *a, p=p: ops.layer_norm_backward(
        *a, bias is not None, dy, axes, row_sums_as_products=p))(x, mean, rstd, scale)
        for p in (False, True))
    for a, b in zip(reduce, product):
        assert (a is None) == (b is None)
        if a is not None:
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5)


def test_layer_norm_bfloat16_gradients_keep_dtypes():
    x, scale, bias = (None if a is None else a.astype(jnp.bfloat16)
                      for a in _ln_args((4, 8), -1, True, True))
    grads = jax.jit(jax.grad(lambda *a: jnp.sum(ops.layer_norm(*a) ** 2), argnums=(0, 1, 2)))(
        x, scale, bias)
    ref = jax.jit(jax.grad(lambda *a: jnp.sum(ops.layer_norm_reference(*a) ** 2),
                           argnums=(0, 1, 2)))(x, scale, bias)
    for g, r in zip(grads, ref):
        assert g.dtype == jnp.bfloat16
        np.testing.assert_allclose(_f64(g), _f64(r), rtol=5e-2, atol=5e-2)


# ----------------------------------------------------------------------------------------------
# Batch norm
# ----------------------------------------------------------------------------------------------

BN_CASES = [((6, 4), 0), ((5, 3, 4), 0), ((5, 3, 4), (0, 1)), ((4, 6), (0,))]


def _mask_for(shape, seed=6):
    """A 0/1 mask shaped shape[:-1] with at least two real positions per reduced slice."""
    m = (_rng(seed).uniform(size=shape[:-1]) > 0.35).astype(np.float32)
    m[:2] = 1.0
    return m


@functools.partial(jax.jit, static_argnums=(3, 4))
def _jit_batch_norm(x, scale, bias, axis, unbiased, mask):
    return ops.batch_norm(x, scale, bias, axis=axis, unbiased=unbiased, mask=mask)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
@pytest.mark.parametrize("use_mask", [False, True], ids=["nomask", "mask"])
@pytest.mark.parametrize("unbiased", [False, True], ids=["biased", "unbiased"])
@pytest.mark.parametrize("shape,axis", BN_CASES)
def test_batch_norm_matches_numpy(shape, axis, unbiased, use_mask, dtype):
    rng = _rng(7)
    axes = _axes(axis, len(shape))
    pshape = tuple(s for i, s in enumerate(shape) if i not in axes)
    x = _to(rng.normal(size=shape) * 2 - 3, dtype)
    scale = _to(rng.uniform(0.5, 2.0, size=pshape), dtype)
    bias = _to(rng.normal(size=pshape), dtype)
    mask = jnp.asarray(_mask_for(shape)) if use_mask else None
    y, stats = _jit_batch_norm(x, scale, bias, axis, unbiased, mask)
    mean, var = np_batch_statistics(_f64(x), axis, unbiased, None if mask is None else mask)
    expected = np_batch_norm_inference(_f64(x), _f64(scale), _f64(bias), mean, var, axis)
    assert y.dtype == dtype and y.shape == shape
    assert stats.mean.dtype == jnp.float32 and stats.mean.shape == pshape
    np.testing.assert_allclose(np.asarray(stats.mean), mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(stats.var), var, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(_f64(y), expected, **TOLERANCE[dtype])
    if use_mask and dtype == jnp.float32:  # Padding values do not enter the statistics.
        x2 = jnp.where(mask[..., None] > 0, x, 1e3)
        y2, stats2 = _jit_batch_norm(x2, scale, bias, axis, unbiased, mask)
        np.testing.assert_array_equal(np.asarray(stats2.mean), np.asarray(stats.mean))
        real = np.asarray(mask) > 0
        np.testing.assert_allclose(np.asarray(y2)[real], np.asarray(y)[real], rtol=1e-6,
                                   atol=1e-6)


def test_batch_norm_unbiased_variance_is_n_minus_1():
    x = jnp.asarray([[1.0], [2.0], [3.0], [6.0]])  # mean 3, sum of squares 14
    assert float(ops.batch_statistics(x).var[0]) == pytest.approx(14 / 4)
    assert float(ops.batch_statistics(x, unbiased=True).var[0]) == pytest.approx(14 / 3)
    y, _ = ops.batch_norm(x, None, None, unbiased=True, epsilon=0.0)
    np.testing.assert_allclose(np.asarray(y)[:, 0], (np.array([1, 2, 3, 6]) - 3) / np.sqrt(14 / 3),
                               rtol=1e-6)


def test_batch_statistics_fully_masked_slice_stays_finite():
    x = jnp.asarray(_rng(8).normal(size=(3, 2, 4)), jnp.float32)
    mask = jnp.asarray([[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]])  # step 1 is padding everywhere
    for unbiased in (False, True):
        stats = ops.batch_statistics(x, mask=mask, unbiased=unbiased)
        assert np.all(np.isfinite(np.asarray(stats.mean)))
        assert np.all(np.isfinite(np.asarray(stats.var)))
        np.testing.assert_array_equal(np.asarray(stats.mean[1]), 0.0)


@pytest.mark.parametrize("shape,axis", [((5, 3, 4), 0), ((5, 3, 4), (0, 1)), ((6, 4), 0)])
def test_batch_norm_inference_matches_numpy(shape, axis):
    rng = _rng(9)
    axes = _axes(axis, len(shape))
    pshape = tuple(s for i, s in enumerate(shape) if i not in axes)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    scale, bias = rng.uniform(0.5, 2, size=pshape), rng.normal(size=pshape)
    mean, var = rng.normal(size=pshape), rng.uniform(0.2, 3, size=pshape)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    y = ops.batch_norm_inference(x, f32(scale), f32(bias), f32(mean), f32(var), axis=axis)
    np.testing.assert_allclose(np.asarray(y), np_batch_norm_inference(
        _f64(x), _f64(f32(scale)), _f64(f32(bias)), _f64(f32(mean)), _f64(f32(var)), axis),
        rtol=1e-5, atol=1e-5)
    y_none = ops.batch_norm_inference(x, None, None, f32(mean), f32(var), axis=axis)
    np.testing.assert_allclose(np.asarray(y_none), np_batch_norm_inference(
        _f64(x), None, None, _f64(f32(mean)), _f64(f32(var)), axis), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("momentum", [0.99, 0.5])
def test_update_population_statistics(momentum):
    rng = _rng(10)
    f32 = lambda a: jnp.asarray(a, jnp.float32)
    pop = ops.BatchStats(f32(rng.normal(size=(4, 3))), f32(rng.uniform(0.5, 2, size=(4, 3))))
    batch = ops.BatchStats(f32(rng.normal(size=(4, 3))), f32(rng.uniform(0.5, 2, size=(4, 3))))
    new = ops.update_population_statistics(pop, batch, momentum=momentum)
    for p, b, n in zip(pop, batch, new):
        np.testing.assert_allclose(np.asarray(n), momentum * _f64(p) + (1 - momentum) * _f64(b),
                                   rtol=1e-6, atol=1e-7)
    valid = jnp.asarray([[True], [False], [True], [False]])
    new_valid = ops.update_population_statistics(pop, batch, momentum=momentum, valid=valid)
    for p, n, nv in zip(pop, new, new_valid):
        np.testing.assert_array_equal(np.asarray(nv)[[1, 3]], np.asarray(p)[[1, 3]])
        np.testing.assert_array_equal(np.asarray(nv)[[0, 2]], np.asarray(n)[[0, 2]])
    default = ops.update_population_statistics(pop, batch)
    np.testing.assert_allclose(np.asarray(default.mean),
                               0.99 * _f64(pop.mean) + 0.01 * _f64(batch.mean), rtol=1e-6)


@pytest.mark.parametrize("shape,axis,unbiased", [((5, 3), 0, False), ((4, 3, 2), 0, True),
                                                 ((4, 3, 2), (0, 1), False)])
def test_batch_norm_gradients_with_mask(shape, axis, unbiased):
    rng = _rng(11)
    axes = _axes(axis, len(shape))
    pshape = tuple(s for i, s in enumerate(shape) if i not in axes)
    x = jnp.asarray(rng.normal(size=shape) * 2, jnp.float32)
    scale = jnp.asarray(rng.uniform(0.5, 1.5, size=pshape), jnp.float32)
    bias = jnp.asarray(rng.normal(size=pshape), jnp.float32)
    mask = jnp.asarray(_mask_for(shape, seed=12))
    f = jax.jit(lambda x, s, b: ops.batch_norm(x, s, b, axis=axis, unbiased=unbiased,
                                               mask=mask)[0])
    check_grads(f, (x, scale, bias), order=1, modes=["rev"], eps=1e-3)
    # No gradient flows into padded positions from real outputs.
    real = mask[..., None]
    g = jax.grad(lambda x: jnp.sum(f(x, scale, bias) * real * jnp.arange(shape[-1])))(x)
    np.testing.assert_array_equal(np.asarray(g)[np.asarray(mask) == 0], 0.0)


# ----------------------------------------------------------------------------------------------
# Weight norm
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "bf16"])
@pytest.mark.parametrize("shape,axis", [((5, 4), 0), ((4, 5), 1), ((3, 3, 2, 4), (0, 1, 2)),
                                        ((6, 3), -2)])
def test_weight_norm_matches_numpy(shape, axis, dtype):
    rng = _rng(13)
    axes = _axes(axis, len(shape))
    gshape = tuple(s for i, s in enumerate(shape) if i not in axes)
    v = _to(rng.normal(size=shape), dtype)
    g = _to(rng.uniform(0.5, 2, size=gshape), dtype)
    w = ops.weight_norm(v, g, axis=axis)
    assert w.dtype == dtype and w.shape == shape
    np.testing.assert_allclose(_f64(w), np_weight_norm(_f64(v), _f64(g), axis), **TOLERANCE[dtype])
    norms = np.sqrt(np.square(_f64(w)).sum(axis=axes))
    np.testing.assert_allclose(norms, _f64(g), rtol=2e-2 if dtype == jnp.bfloat16 else 1e-5)


def test_weight_norm_gradients():
    rng = _rng(14)
    v = jnp.asarray(rng.normal(size=(4, 3)), jnp.float32)
    g = jnp.asarray(rng.uniform(0.5, 1.5, size=3), jnp.float32)
    check_grads(lambda v, g: ops.weight_norm(v, g, axis=0), (v, g), order=1, modes=["rev"],
                eps=1e-3)


def test_weight_norm_dense_layer():
    x = jnp.asarray(_rng(15).normal(size=(3, 4)), jnp.float32)
    module = layers.WeightNormDense(5)
    params = module.init(jax.random.key(0), x)
    p = params["params"]
    np.testing.assert_array_equal(np.asarray(p["gain"]), 1.0)
    p = {**p, "gain": p["gain"] * 2.5, "bias": p["bias"] + 0.5}
    y = module.apply({"params": p}, x)
    expected = _f64(x) @ np_weight_norm(_f64(p["kernel"]), _f64(p["gain"])) + 0.5
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Bad arguments: exact messages
# ----------------------------------------------------------------------------------------------

def test_bad_scale_shape():
    x = jnp.ones((4, 6))
    msg = ("parameter has shape (5,), but an input of shape (4, 6) normalized over axes (1,) "
           "needs shape (6,).")
    for f in (ops.layer_norm, ops.layer_norm_reference):
        with pytest.raises(ValueError, match=re.escape(msg)):
            f(x, jnp.ones(5))
    with pytest.raises(ValueError, match=re.escape(msg)):
        ops.layer_norm(x, None, jnp.ones(5))
    msg2 = ("parameter has shape (6,), but an input of shape (2, 3, 6) normalized over axes "
            "(1, 2) needs shape (3, 6).")
    with pytest.raises(ValueError, match=re.escape(msg2)):
        ops.layer_norm(jnp.ones((2, 3, 6)), jnp.ones(6), axis=(1, 2))


@pytest.mark.parametrize("axis,msg", [
    (2, "axis 2 is out of range for an input of rank 2."),
    (-3, "axis -3 is out of range for an input of rank 2."),
    ((0, 5), "axis 5 is out of range for an input of rank 2."),
    ((), "axis must name at least one axis, got an empty sequence."),
    ((1, -1), "axis (1, -1) names the same axis twice."),
])
def test_bad_axis(axis, msg):
    x = jnp.ones((3, 4))
    for call in (lambda: ops.layer_norm(x, axis=axis),
                 lambda: ops.batch_norm(x, None, None, axis=axis),
                 lambda: ops.batch_statistics(x, axis=axis),
                 lambda: ops.weight_norm(x, jnp.ones(3), axis=axis)):
        with pytest.raises(ValueError, match=re.escape(msg)):
            call()


def test_bad_mask():
    x = jnp.ones((3, 4, 5))
    msg = ("mask has shape (3, 5), but an input of shape (3, 4, 5) needs a mask of shape (3, 4) "
           "(one entry per position, features on the last axis).")
    with pytest.raises(ValueError, match=re.escape(msg)):
        ops.batch_norm(x, None, None, mask=jnp.ones((3, 5)))
    with pytest.raises(ValueError, match=re.escape(msg)):
        ops.batch_statistics(x, mask=jnp.ones((3, 5)))
    msg2 = "a mask needs the features on the last axis, which must not be reduced."
    with pytest.raises(ValueError, match=re.escape(msg2)):
        ops.batch_norm(x, None, None, axis=(0, 2), mask=jnp.ones((3, 4)))


# ----------------------------------------------------------------------------------------------
# Batch dependence: LN none, BN all
# ----------------------------------------------------------------------------------------------

def test_layer_norm_row_is_bitwise_independent_of_other_rows():
    rng = _rng(16)
    x = jnp.asarray(rng.normal(size=(5, 8)), jnp.float32)
    other = x.at[1:].set(jnp.asarray(rng.normal(size=(4, 8)) * 100 + 7, jnp.float32))
    scale, bias = jnp.full((8,), 1.3), jnp.full((8,), -0.2)
    for f in (ops.layer_norm, jax.jit(ops.layer_norm)):
        np.testing.assert_array_equal(np.asarray(f(x, scale, bias))[0],
                                      np.asarray(f(other, scale, bias))[0])
    module = layers.LayerNorm()
    params = module.init(jax.random.key(0), x)
    np.testing.assert_array_equal(np.asarray(module.apply(params, x))[0],
                                  np.asarray(module.apply(params, other))[0])
    # Gradients w.r.t. row 0 don't depend on other rows either.
    g = lambda x: jax.grad(lambda x: jnp.sum(ops.layer_norm(x) ** 3))(x)[0]
    np.testing.assert_array_equal(np.asarray(g(x)), np.asarray(g(other)))


def test_batch_norm_row_depends_on_other_rows():
    rng = _rng(16)
    x = jnp.asarray(rng.normal(size=(5, 8)), jnp.float32)
    other = x.at[1:].set(jnp.asarray(rng.normal(size=(4, 8)) * 100 + 7, jnp.float32))
    y, _ = ops.batch_norm(x, None, None)
    y2, _ = ops.batch_norm(other, None, None)
    assert np.abs(np.asarray(y)[0] - np.asarray(y2)[0]).min() > 1e-2
    module = layers.BatchNorm()
    variables = module.init(jax.random.key(0), x, use_running_average=False)
    a = module.apply(variables, x, use_running_average=False)
    b = module.apply(variables, other, use_running_average=False)
    assert np.abs(np.asarray(a)[0] - np.asarray(b)[0]).min() > 1e-2


# ----------------------------------------------------------------------------------------------
# Flax wrappers: state
# ----------------------------------------------------------------------------------------------

def test_flax_layer_norm_has_no_state_and_one_function():
    x = jnp.asarray(_rng(17).normal(size=(4, 6)) * 3 + 1, jnp.float32)
    module = layers.LayerNorm()
    variables = module.init(jax.random.key(0), x)
    assert set(variables) == {"params"}
    assert jax.tree.map(jnp.shape, variables["params"]) == {"scale": (6,), "bias": (6,)}
    np.testing.assert_array_equal(np.asarray(variables["params"]["scale"]), 1.0)
    np.testing.assert_array_equal(np.asarray(variables["params"]["bias"]), 0.0)
    y, state = module.apply(variables, x, mutable=True)  # a training-style call
    assert set(state) == {"params"}  # nothing but the (unchanged) params
    jax.tree.map(np.testing.assert_array_equal, state["params"], variables["params"])
    _, updates = module.apply(variables, x, mutable=["batch_stats"])
    assert updates == {}
    y2 = module.apply(variables, x)  # evaluation: identical function
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y2))
    np.testing.assert_allclose(np.asarray(y), np_layer_norm(_f64(x)), rtol=1e-5, atol=1e-5)
    # A one-example batch gives the same output as inside a bigger batch.
    np.testing.assert_array_equal(np.asarray(module.apply(variables, x[2:3]))[0],
                                  np.asarray(y)[2])


@pytest.mark.parametrize("unbiased", [False, True])
def test_flax_batch_norm_train_vs_eval_and_ema(unbiased):
    rng = _rng(18)
    x = jnp.asarray(rng.normal(size=(6, 4)) * 2 + 3, jnp.float32)
    module = layers.BatchNorm(unbiased=unbiased, momentum=0.9)
    variables = module.init(jax.random.key(0), x, use_running_average=False)
    assert set(variables) == {"params", "batch_stats"}
    # Initialization leaves the population statistics untouched.
    np.testing.assert_array_equal(np.asarray(variables["batch_stats"]["mean"]), 0.0)
    np.testing.assert_array_equal(np.asarray(variables["batch_stats"]["var"]), 1.0)

    y_train, updates = module.apply(variables, x, use_running_average=False,
                                    mutable=["batch_stats"])
    mean, var = np_batch_statistics(_f64(x), 0, unbiased)
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["mean"]), 0.1 * mean,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["var"]), 0.9 + 0.1 * var,
                               rtol=1e-5)
    np.testing.assert_allclose(np.asarray(y_train),
                               np_batch_norm_inference(_f64(x), None, None, mean, var),
                               rtol=1e-5, atol=1e-5)
    # Without a mutable collection the train-mode call still uses batch statistics.
    np.testing.assert_array_equal(
        np.asarray(module.apply(variables, x, use_running_average=False)), np.asarray(y_train))

    y_eval = module.apply(variables, x, use_running_average=True)  # population: mean 0, var 1
    np.testing.assert_allclose(np.asarray(y_eval), _f64(x) / np.sqrt(1 + EPS), rtol=1e-6)
    assert np.abs(np.asarray(y_eval) - np.asarray(y_train)).max() > 0.5
    new_vars = {**variables, **updates}
    y_eval2 = module.apply(new_vars, x, use_running_average=True)
    np.testing.assert_allclose(np.asarray(y_eval2), np_batch_norm_inference(
        _f64(x), None, None, 0.1 * mean, 0.9 + 0.1 * var), rtol=1e-5, atol=1e-5)
    # Evaluation does not update the statistics.
    _, eval_updates = module.apply(new_vars, x, use_running_average=True, mutable=["batch_stats"])
    jax.tree.map(np.testing.assert_array_equal, eval_updates["batch_stats"],
                 new_vars["batch_stats"])


def test_flax_batch_norm_mask():
    rng = _rng(19)
    x = jnp.asarray(rng.normal(size=(4, 3, 2)), jnp.float32)
    mask = jnp.asarray(_mask_for(x.shape, seed=20))
    module = layers.BatchNorm()
    variables = module.init(jax.random.key(0), x, use_running_average=False, mask=mask)
    _, updates = module.apply(variables, x, use_running_average=False, mask=mask,
                              mutable=["batch_stats"])
    mean, _ = np_batch_statistics(_f64(x), (0, 1), False, mask)
    np.testing.assert_allclose(np.asarray(updates["batch_stats"]["mean"]), 0.01 * mean,
                               rtol=1e-5, atol=1e-7)


# ----------------------------------------------------------------------------------------------
# NormedDense: one test over all norms
# ----------------------------------------------------------------------------------------------

NORMED_DENSE_PARAMS = {
    "none": {"Dense_0": {"kernel": (4, 5), "bias": (5,)}},
    "batch": {"Dense_0": {"kernel": (4, 5)}, "BatchNorm_0": {"scale": (5,), "bias": (5,)}},
    "layer": {"Dense_0": {"kernel": (4, 5)}, "LayerNorm_0": {"scale": (5,), "bias": (5,)}},
    "weight": {"WeightNormDense_0": {"kernel": (4, 5), "gain": (5,), "bias": (5,)}},
}


@pytest.mark.parametrize("norm", layers.NORMS)
def test_normed_dense(norm):
    assert set(NORMED_DENSE_PARAMS) == set(layers.NORMS)
    x = jnp.asarray(_rng(21).normal(size=(3, 4)), jnp.float32)
    module = layers.NormedDense(5, norm=norm)
    variables = module.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, variables["params"]) == NORMED_DENSE_PARAMS[norm]
    assert set(variables) == ({"params", "batch_stats"} if norm == "batch" else {"params"})
    y = module.apply(variables, x, mutable=["batch_stats"])[0] if norm == "batch" else \
        module.apply(variables, x)
    assert y.shape == (3, 5) and y.dtype == jnp.float32
    p = variables["params"]
    if norm == "none":
        expected = _f64(x) @ _f64(p["Dense_0"]["kernel"])
    elif norm == "layer":
        expected = np_layer_norm(_f64(x) @ _f64(p["Dense_0"]["kernel"]))
    elif norm == "batch":
        a = _f64(x) @ _f64(p["Dense_0"]["kernel"])
        expected = np_batch_norm_inference(a, None, None, *np_batch_statistics(a))
    else:
        expected = _f64(x) @ np_weight_norm(_f64(p["WeightNormDense_0"]["kernel"]), np.ones(5))
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-4, atol=1e-4)


def test_normed_dense_bad_norm():
    with pytest.raises(ValueError, match=re.escape(
            "norm must be one of ('none', 'batch', 'layer', 'weight'), got 'group'.")):
        layers.NormedDense(5, norm="group").init(jax.random.key(0), jnp.ones((2, 3)))


# ----------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------

@settings(max_examples=12, deadline=None)
@given(batch=st.integers(1, 3), features=st.sampled_from([2, 3, 8, 33]), seed=st.integers(0, 2**16),
       loc=st.floats(-100, 100), log_scale=st.floats(-2, 3))
def test_property_layer_norm_rows_standardized(batch, features, seed, loc, log_scale):
    x = _rng(seed).normal(size=(batch, features)) * 10.0**log_scale + loc
    x32 = jnp.asarray(x, jnp.float32)
    xd = _f64(x32)
    var = xd.var(-1)
    # float32 round-off of the statistics, relative to the row's spread: |x| / std * 2^-24.
    offset = max(1.0, float(np.max(np.abs(xd)) / np.sqrt(var.min())))
    y = np.asarray(ops.layer_norm(x32, epsilon=0.0), np.float64)
    np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5 * offset)
    np.testing.assert_allclose(y.var(-1), 1.0, rtol=1e-4 * offset)
    # Each row is invariant to its own positive affine map (up to re-rounding the inputs).
    a, b = 1.0 + (seed % 7), float(seed % 13) - 6
    y2 = np.asarray(ops.layer_norm(jnp.asarray(xd * a + b, jnp.float32), epsilon=0.0))
    np.testing.assert_allclose(y2, y, atol=1e-5 * offset * (1 + abs(b) / a))


@settings(max_examples=12, deadline=None)
@given(batch=st.integers(2, 5), features=st.sampled_from([1, 4]), seed=st.integers(0, 2**16))
def test_property_batch_norm_columns_standardized(batch, features, seed):
    x = jnp.asarray(_rng(seed).normal(size=(batch, features)) * 3 + 1, jnp.float32)
    y, stats = ops.batch_norm(x, None, None, epsilon=0.0)
    y = np.asarray(y, np.float64)
    np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.var(0), 1.0, rtol=1e-3)
    assert np.all(np.asarray(stats.var) > 0)


# ----------------------------------------------------------------------------------------------
# Table 1
# ----------------------------------------------------------------------------------------------

def test_invariance_table_matches_paper():
    table = invariance.compute_table(seed=0)
    assert set(table) == set(invariance.PAPER_TABLE)
    for key, (invariant, rel) in table.items():
        assert invariant == invariance.PAPER_TABLE[key], (key, rel)
        assert (rel < invariance.INVARIANT_BELOW) if invariant else (
            rel > invariance.CHANGED_ABOVE), (key, rel)
    assert invariance.check_table(table)
    text = invariance.format_table(table)
    assert text.count("\n") == 4 and "Layer norm" in text and "paper:" not in text


def test_invariance_table_detects_a_broken_norm(monkeypatch):
    """The table is measured, not copied: a 'layer norm' without mean subtraction loses its
    re-centering invariance and the table says so."""
    def no_centering(x, scale=None, bias=None, *, axis=-1, epsilon=ops.DEFAULT_EPSILON):
        return x / jnp.sqrt(jnp.mean(jnp.square(x), axis=axis, keepdims=True) + epsilon) * scale
    monkeypatch.setattr(invariance.ops, "layer_norm", no_centering)
    table = invariance.compute_table(seed=0)
    assert invariance.mismatches(table) == [("layer", "weight_matrix_recentering")]
    assert "(paper: yes)" in invariance.format_table(table)


def test_invariance_table_script():
    from scripts import invariance_table
    out, matches = invariance_table.report(seed=0, epsilon=0.0)
    assert matches
    assert "All 18 cells match the paper's Table 1." in out
    assert re.search(r"^\| Layer norm \| yes \(\d\.\de-\d\d\) \| yes \(", out, re.MULTILINE)
