"""cell_ops.ln_lstm_update: the LN-LSTM step with a hand-written VJP.

Its forward must be the very function the cell computed with separate layer norms (bit for bit,
so that records stay reproducible), and its VJP must match autodiff: of the same float32
composition tightly, and of the float64 formula under x64 to float32 accuracy.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lnrepro import cell_ops, ops

H = 12
EPS = ops.DEFAULT_EPSILON
ARGUMENT_NAMES = ("x_terms", "hidden_terms", "c", "bias", "hidden_scale", "hidden_bias",
                  "cell_scale", "cell_bias")


def _arguments(lead: tuple[int, ...], seed: int = 0) -> tuple[jax.Array, ...]:
    rng = np.random.default_rng(seed)
    shapes = (lead + (4 * H,), lead + (4 * H,), lead + (H,), (4 * H,), (4 * H,), (4 * H,), (H,),
              (H,))
    # Offsets and scales away from 0 and 1 so that every term matters.
    scales = (1.0, 3.0, 2.0, 0.5, 1.0, 0.5, 1.0, 0.5)
    offsets = (0.0, 1.5, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0)
    return tuple(jnp.asarray(o + s * rng.normal(size=shape), jnp.float32)
                 for shape, s, o in zip(shapes, scales, offsets))


def _composition(x_terms, hidden_terms, c, bias, hidden_scale, hidden_bias, cell_scale,
                 cell_bias, *, layer_norm=lambda x, s, b: ops.layer_norm(
                     x, s, b, epsilon=EPS, implementation="xla")):
    """The step as the cell wrote it before the fusion: separate layer norms, left to autodiff."""
    gates = x_terms + layer_norm(hidden_terms, hidden_scale, hidden_bias) + bias
    i, f, o, g = jnp.split(gates, 4, axis=-1)
    c_new = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    return c_new, jax.nn.sigmoid(o) * jnp.tanh(layer_norm(c_new, cell_scale, cell_bias))


def _fused(*args):
    return cell_ops.ln_lstm_update(*args, EPS)


def _value_and_vjp(f, args, cotangents):
    outputs, vjp = jax.vjp(f, *args)
    return outputs, vjp(cotangents)


@pytest.mark.parametrize("lead", [(5,), (3, 4), (1,)])
def test_forward_is_bit_identical_to_the_separate_layer_norms(lead):
    args = _arguments(lead)
    fused = jax.jit(_fused)(*args)
    separate = jax.jit(_composition)(*args)
    for a, b in zip(fused, separate):
        assert a.shape == b.shape and a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("lead", [(5,), (3, 4)])
def test_vjp_matches_autodiff_of_the_composition(lead):
    args = _arguments(lead, seed=1)
    rng = np.random.default_rng(2)
    cotangents = tuple(jnp.asarray(rng.normal(size=lead + (H,)), jnp.float32) for _ in range(2))
    _, ours = jax.jit(lambda a, t: _value_and_vjp(_fused, a, t))(args, cotangents)
    _, reference = jax.jit(lambda a, t: _value_and_vjp(_composition, a, t))(args, cotangents)
    for name, a, b, primal in zip(ARGUMENT_NAMES, ours, reference, args):
        assert a.shape == primal.shape and a.dtype == primal.dtype, name
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-5,
                                   err_msg=name)


@pytest.mark.parametrize("hidden", ["random", "zero"])
def test_vjp_matches_the_float64_formula(hidden):
    """Every cotangent against autodiff of the textbook step in float64 (x64 on). With zero
    hidden terms (W_h h_0 for h_0 = 0, a learned initial state's start) the hidden layer norm
    sees zero variance and scales its gradient by 1/sqrt(eps): the tolerance scales with it."""
    args = _arguments((6,), seed=3)
    if hidden == "zero":
        args = (args[0], jnp.zeros_like(args[1])) + args[2:]
    rng = np.random.default_rng(4)
    cotangents = tuple(jnp.asarray(rng.normal(size=(6, H)), jnp.float32) for _ in range(2))
    _, ours = jax.jit(lambda a, t: _value_and_vjp(_fused, a, t))(args, cotangents)

    with jax.enable_x64(True):
        def layer_norm64(x, scale, bias):
            mean = jnp.mean(x, -1, keepdims=True)
            var = jnp.mean(jnp.square(x - mean), -1, keepdims=True)
            return (x - mean) / jnp.sqrt(var + EPS) * scale + bias

        as64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), tree)
        step64 = lambda *a: _composition(*a, layer_norm=layer_norm64)
        _, exact = jax.jit(lambda a, t: _value_and_vjp(step64, a, t))(as64(args),
                                                                      as64(cotangents))
        exact = [np.asarray(e) for e in exact]
    for name, a, b in zip(ARGUMENT_NAMES, ours, exact):
        np.testing.assert_allclose(np.asarray(a), b, rtol=2e-5,
                                   atol=2e-5 * max(1.0, float(np.max(np.abs(b)))), err_msg=name)
    if hidden == "zero":  # the amplified gradient is really there
        assert np.max(np.abs(exact[1])) > 0.1 / np.sqrt(EPS)


def test_bfloat16_inputs_match_the_composition():
    """bfloat16 input terms and state (float32 parameters): the forward gives the same bits and
    the VJP rounds as the separate layer norms do, to bfloat16 accuracy."""
    args = _arguments((5,), seed=5)
    args = tuple(a.astype(jnp.bfloat16) for a in args[:3]) + args[3:]
    rng = np.random.default_rng(6)
    cotangents = tuple(jnp.asarray(rng.normal(size=(5, H)), jnp.float32) for _ in range(2))
    ours_out, ours = jax.jit(lambda a, t: _value_and_vjp(_fused, a, t))(args, cotangents)
    ref_out, reference = jax.jit(lambda a, t: _value_and_vjp(_composition, a, t))(args,
                                                                                    cotangents)
    for a, b in zip(ours_out, ref_out):
        np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(b, np.float32))
    for name, a, b, primal in zip(ARGUMENT_NAMES, ours, reference, args):
        assert a.dtype == primal.dtype, name
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32),
                                   rtol=2e-2, atol=2e-2, err_msg=name)
