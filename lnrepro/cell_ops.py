"""Recurrent-cell arithmetic as pure functions with hand-written VJPs.

`ln_lstm_update` is everything an LN-LSTM step does between its two matmuls (Ba et al. 2016,
suppl. eq. 20-22): normalize the hidden terms, add the input terms and the bias, gate, update the
cell, normalize it and gate the output. Left to autodiff inside `nn.scan`, that step saves about
twenty tensors per time step for the backward scan (each sigmoid and tanh output, some twice, and
every layer norm's input and statistics) and runs each piece's backward as its own kernels. One
custom VJP over the whole update saves only its inputs and two numbers per row for each of the
two layer norms, and recomputes the gates in the backward step, where they fuse with the rest
(scripts/benchmark_ops.py counts the kernels per step).

The forward computes exactly what the cell computed with separate `ops.layer_norm` calls on the
CPU (same operations in the same order, so the same bits); the gradients agree to float32
rounding for float32 inputs. On the CPU the LN-LSTM's forward + backward takes 0.90x the time of the separate layer
norms left to autodiff (scripts/benchmark_ops.py). It is plain XLA on every backend; on a GPU,
where the separate layer norms would each call the Pallas kernel, it is not yet measured.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from lnrepro import ops

Array = jax.Array


def _split_activations(gates: Array) -> tuple[Array, Array, Array, Array]:
    """Gate order [i; f; o; g]: sigmoid(i), sigmoid(f), sigmoid(o), tanh(g)."""
    i, f, o, g = jnp.split(gates, 4, axis=-1)
    return jax.nn.sigmoid(i), jax.nn.sigmoid(f), jax.nn.sigmoid(o), jnp.tanh(g)


def _forward(x_terms, hidden_terms, c, bias, hidden_scale, hidden_bias, cell_scale, cell_bias,
             epsilon):
    """(c_t, h_t) and each layer norm's (mean, rstd)."""
    axes = (c.ndim - 1,)
    hidden_normalized, hidden_mean, hidden_rstd = ops.layer_norm_forward(
        hidden_terms, hidden_scale, hidden_bias, axes, epsilon)
    i, f, o, g = _split_activations(x_terms + hidden_normalized + bias)
    c_new = f * c + i * g
    cell_normalized, cell_mean, cell_rstd = ops.layer_norm_forward(
        c_new, cell_scale, cell_bias, axes, epsilon)
    h_new = o * jnp.tanh(cell_normalized)
    return (c_new, h_new), (hidden_mean, hidden_rstd, cell_mean, cell_rstd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(8,))
def ln_lstm_update(x_terms: Array, hidden_terms: Array, c: Array, bias: Array,
                   hidden_scale: Array, hidden_bias: Array, cell_scale: Array, cell_bias: Array,
                   epsilon: float) -> tuple[Array, Array]:
    """One LN-LSTM step after its matmuls: returns (c_t, h_t).

      [i;f;o;g] = x_terms + LN(hidden_terms; hidden_scale, hidden_bias) + bias
      c_t = sigmoid(f) c + sigmoid(i) tanh(g)
      h_t = sigmoid(o) tanh(LN(c_t; cell_scale, cell_bias))

    Args:
      x_terms: the normalized input terms LN(W_x x_t) [..., 4H] (computed for all steps at once
        outside the scan).
      hidden_terms: W_h h_{t-1} [..., 4H], not yet normalized.
      c: c_{t-1} [..., H].
      bias: b [4H]; hidden_scale, hidden_bias [4H]; cell_scale, cell_bias [H]: the LN gains and
        biases (all required).
      epsilon: added to each layer norm's variance.
    """
    return _forward(x_terms, hidden_terms, c, bias, hidden_scale, hidden_bias, cell_scale,
                    cell_bias, epsilon)[0]


def _ln_lstm_update_fwd(x_terms, hidden_terms, c, bias, hidden_scale, hidden_bias, cell_scale,
                        cell_bias, epsilon):
    outputs, statistics = _forward(x_terms, hidden_terms, c, bias, hidden_scale, hidden_bias,
                                   cell_scale, cell_bias, epsilon)
    params = (bias, hidden_scale, hidden_bias, cell_scale, cell_bias)
    return outputs, (x_terms, hidden_terms, c, params, statistics)


def _ln_lstm_update_bwd(epsilon, residuals, cotangents):
    del epsilon  # the saved rstd holds it
    x_terms, hidden_terms, c, params, statistics = residuals
    bias, hidden_scale, hidden_bias, cell_scale, cell_bias = params
    hidden_mean, hidden_rstd, cell_mean, cell_rstd = statistics
    dc_new, dh_new = (t.astype(jnp.float32) for t in cotangents)
    axes = (c.ndim - 1,)

    # Recompute the forward from the saved statistics (elementwise only: no reductions), rounded
    # to the dtypes the forward rounded to.
    hidden_normalized = ((hidden_terms - hidden_mean) * hidden_rstd * hidden_scale
                         + hidden_bias).astype(hidden_terms.dtype)
    i, f, o, g = _split_activations(x_terms + hidden_normalized + bias)
    c_new = f * c + i * g
    tanh_cell = jnp.tanh(((c_new - cell_mean) * cell_rstd * cell_scale
                          + cell_bias).astype(c_new.dtype))

    # h = o * tanh(LN(c_new)); c_new = f * c + i * g, with o, i, f sigmoids and g a tanh.
    d_o = dh_new * tanh_cell * o * (1.0 - o)
    d_cell_normalized = dh_new * o * (1.0 - tanh_cell * tanh_cell)
    dc_from_norm, d_cell_scale, d_cell_bias = ops.layer_norm_backward(
        c_new, cell_mean, cell_rstd, cell_scale, True, d_cell_normalized, axes,
        row_sums_as_products=True)
    dc_total = dc_new + dc_from_norm
    d_gates = jnp.concatenate([dc_total * g * i * (1.0 - i),
                               dc_total * c * f * (1.0 - f),
                               d_o,
                               dc_total * i * (1.0 - g * g)], axis=-1)
    d_hidden_terms, d_hidden_scale, d_hidden_bias = ops.layer_norm_backward(
        hidden_terms, hidden_mean, hidden_rstd, hidden_scale, True, d_gates, axes,
        row_sums_as_products=True)
    # b and the hidden LN's bias are added to the same pre-activations: one gradient for both.
    d_bias = d_hidden_bias
    return (d_gates.astype(x_terms.dtype), d_hidden_terms, (dc_total * f).astype(c.dtype),
            d_bias.astype(bias.dtype), d_hidden_scale.astype(hidden_scale.dtype),
            d_hidden_bias.astype(hidden_bias.dtype), d_cell_scale.astype(cell_scale.dtype),
            d_cell_bias.astype(cell_bias.dtype))


ln_lstm_update.defvjp(_ln_lstm_update_fwd, _ln_lstm_update_bwd)
