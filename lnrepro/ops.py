"""Normalization as pure functions: layer norm, batch norm, weight norm.

No flax and no state here: modules in `lnrepro.layers` wrap these, and population statistics are
values the caller keeps. Every function accepts float32 and bfloat16 inputs; statistics are always
computed in float32 (bfloat16's 8-bit mantissa cannot hold a variance of shifted data) and the
output has the input's dtype.

Equations (Ba, Kiros, Hinton 2016, sec. 3; Ioffe and Szegedy 2015; Salimans and Kingma 2016):

  layer norm   mu_n = mean_i a_ni,  s_n^2 = mean_i (a_ni - mu_n)^2,  y_ni = g_i (a_ni - mu_n) / sqrt(s_n^2 + eps) + b_i
  batch norm   mu_i = mean_n a_ni,  s_i^2 = mean_n (a_ni - mu_i)^2,  y_ni = g_i (a_ni - mu_i) / sqrt(s_i^2 + eps) + b_i
  weight norm  w_i = g_i v_i / ||v_i||

Layer norm reduces over the features of one example; batch norm over the examples for each feature.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

Array = jax.Array
Axes = int | Sequence[int]

# The authors' code uses sqrt(var + 1e-5) (ryankiros/layer-norm); flax's default is 1e-6.
DEFAULT_EPSILON = 1e-5


def _canonical_axes(axis: Axes, ndim: int) -> tuple[int, ...]:
    """Turns an int or a sequence of ints into sorted, non-negative, unique axes."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    if not axes:
        raise ValueError("axis must name at least one axis, got an empty sequence.")
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of range for an input of rank {ndim}.")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ValueError(f"axis {axis} names the same axis twice.")
    return tuple(sorted(out))


def _param_shape(x_shape: tuple[int, ...], axes: tuple[int, ...]) -> tuple[int, ...]:
    """Shape of a per-feature parameter: the sizes of `axes`, in order."""
    return tuple(x_shape[a] for a in axes)


def _broadcastable(p: Array, x_shape: tuple[int, ...], axes: tuple[int, ...]) -> Array:
    """Reshapes a parameter of shape x_shape[axes] to broadcast against x."""
    expected = _param_shape(x_shape, axes)
    if p.shape != expected:
        raise ValueError(
            f"parameter has shape {p.shape}, but an input of shape {x_shape} normalized over "
            f"axes {axes} needs shape {expected}.")
    shape = [1] * len(x_shape)
    for a in axes:
        shape[a] = x_shape[a]
    return p.reshape(shape)


# ----------------------------------------------------------------------------------------------
# Layer norm
# ----------------------------------------------------------------------------------------------

def layer_norm(x: Array, scale: Array | None = None, bias: Array | None = None, *,
               axis: Axes = -1, epsilon: float = DEFAULT_EPSILON) -> Array:
    """Layer normalization (Ba et al. 2016, eq. 4), statistics per example over `axis`.

    Args:
      x: input of any shape, float32 or bfloat16; e.g. [B, H] or [B, T, 4H].
      scale: gain g with shape x.shape[axis] (None: no gain).
      bias: bias b with shape x.shape[axis] (None: no bias).
      axis: the feature axis or axes to normalize over. All other axes are independent rows, so
        one example's output never depends on another's, and a time axis is handled in one call.
      epsilon: added to the biased variance inside the square root.

    Returns:
      y with x's shape and dtype.

    The backward pass is a custom VJP from the saved per-row mean and reciprocal standard
    deviation, so forward + backward reads x twice and the cotangent twice instead of keeping the
    autodiff graph of the textbook formula alive (see scripts/benchmark_ops.py).
    """
    axes = _canonical_axes(axis, x.ndim)
    if scale is not None:
        _broadcastable(scale, x.shape, axes)
    if bias is not None:
        _broadcastable(bias, x.shape, axes)
    return _layer_norm(x, scale, bias, axes, float(epsilon))


def _row_statistics(x: Array, axes: tuple[int, ...], epsilon: float) -> tuple[Array, Array]:
    """Per-row mean and 1/sqrt(var + eps), float32, keepdims.

    Two-pass (mean, then the mean of squared deviations) so that a large constant offset does not
    cancel catastrophically as it would in E[x^2] - E[x]^2.
    """
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=axes, keepdims=True)
    return mean, jax.lax.rsqrt(var + epsilon)


def _affine(xhat: Array, scale, bias, x_shape, axes) -> Array:
    if scale is not None:
        xhat = xhat * _broadcastable(scale, x_shape, axes).astype(jnp.float32)
    if bias is not None:
        xhat = xhat + _broadcastable(bias, x_shape, axes).astype(jnp.float32)
    return xhat


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _layer_norm(x, scale, bias, axes, epsilon):
    mean, rstd = _row_statistics(x, axes, epsilon)
    y = _affine((x.astype(jnp.float32) - mean) * rstd, scale, bias, x.shape, axes)
    return y.astype(x.dtype)


def _layer_norm_fwd(x, scale, bias, axes, epsilon):
    mean, rstd = _row_statistics(x, axes, epsilon)
    y = _affine((x.astype(jnp.float32) - mean) * rstd, scale, bias, x.shape, axes)
    # Save the input and two numbers per row; x_hat is recomputed in the backward pass because
    # recomputing it is cheaper than writing and re-reading a tensor of x's size.
    return y.astype(x.dtype), (x, mean, rstd, scale, bias)


def _layer_norm_bwd(axes, epsilon, residuals, dy):
    """dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = g * dy."""
    x, mean, rstd, scale, bias = residuals
    other_axes = tuple(a for a in range(x.ndim) if a not in axes)
    dyf = dy.astype(jnp.float32)
    xhat = (x.astype(jnp.float32) - mean) * rstd
    dxhat = dyf if scale is None else dyf * _broadcastable(scale, x.shape, axes).astype(jnp.float32)
    mean_dxhat = jnp.mean(dxhat, axis=axes, keepdims=True)
    mean_dxhat_xhat = jnp.mean(dxhat * xhat, axis=axes, keepdims=True)
    dx = (rstd * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat)).astype(x.dtype)
    dscale = None if scale is None else (
        jnp.sum(dyf * xhat, axis=other_axes).reshape(scale.shape).astype(scale.dtype))
    dbias = None if bias is None else (
        jnp.sum(dyf, axis=other_axes).reshape(bias.shape).astype(bias.dtype))
    return dx, dscale, dbias


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


def layer_norm_reference(x: Array, scale: Array | None = None, bias: Array | None = None, *,
                         axis: Axes = -1, epsilon: float = DEFAULT_EPSILON) -> Array:
    """The textbook formula, left to autodiff: the baseline our custom VJP is measured against."""
    axes = _canonical_axes(axis, x.ndim)
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=axes, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=axes, keepdims=True)
    y = _affine((xf - mean) / jnp.sqrt(var + epsilon), scale, bias, x.shape, axes)
    return y.astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# Batch norm
# ----------------------------------------------------------------------------------------------

class BatchStats(NamedTuple):
    """Per-feature statistics with the reduced axes removed: mean and the variance used."""
    mean: Array
    var: Array


def _expand_mask(mask: Array, x_shape: tuple[int, ...], axes: tuple[int, ...]) -> Array:
    """A mask over every position (x.shape[:-1]; features on the last axis) as a float array
    broadcastable against x."""
    if x_shape[-1:] and (len(x_shape) - 1) in axes:
        raise ValueError("a mask needs the features on the last axis, which must not be reduced.")
    if mask.shape != x_shape[:-1]:
        raise ValueError(
            f"mask has shape {mask.shape}, but an input of shape {x_shape} needs a mask of shape "
            f"{x_shape[:-1]} (one entry per position, features on the last axis).")
    return mask[..., None].astype(jnp.float32)


def batch_statistics(x: Array, *, axis: Axes = 0, unbiased: bool = False,
                     mask: Array | None = None) -> BatchStats:
    """Mean and variance per feature over the (unmasked) positions of the reduced axes.

    With `unbiased`, the variance divides by n - 1 (the paper's BN at batch size 4, sec. 6.6).
    Where a feature sees fewer than two real positions (a time step that is padding in every
    example), the count is clipped so the statistics stay finite; such steps are also skipped by
    `update_population_statistics` when given the same mask.
    """
    axes = _canonical_axes(axis, x.ndim)
    xf = x.astype(jnp.float32)
    if mask is None:
        count = float(math.prod(x.shape[a] for a in axes))
        mean = jnp.mean(xf, axis=axes)
        sq_dev = jnp.square(xf - jnp.expand_dims(mean, axes))
        # One example has no variance; clip as the masked path does so the result stays finite.
        var = jnp.sum(sq_dev, axis=axes) / (max(count - 1.0, 1.0) if unbiased else count)
        return BatchStats(mean, var)
    m = _expand_mask(mask, x.shape, axes)
    count = jnp.sum(m, axis=axes)
    mean = jnp.sum(xf * m, axis=axes) / jnp.maximum(count, 1.0)
    sq_dev = jnp.square(xf - jnp.expand_dims(mean, axes)) * m
    denom = jnp.maximum(count - 1.0, 1.0) if unbiased else jnp.maximum(count, 1.0)
    return BatchStats(mean, jnp.sum(sq_dev, axis=axes) / denom)


def batch_norm_inference(x: Array, scale: Array | None, bias: Array | None, mean: Array,
                         var: Array, *, axis: Axes = 0,
                         epsilon: float = DEFAULT_EPSILON) -> Array:
    """Batch norm with given statistics (population statistics at test time).

    `mean`, `var`, `scale`, `bias` have x's shape with the reduced `axis` removed.
    """
    axes = _canonical_axes(axis, x.ndim)
    mean_b = jnp.expand_dims(mean.astype(jnp.float32), axes)
    rstd = jax.lax.rsqrt(jnp.expand_dims(var.astype(jnp.float32), axes) + epsilon)
    y = (x.astype(jnp.float32) - mean_b) * rstd
    if scale is not None:
        y = y * jnp.expand_dims(scale.astype(jnp.float32), axes)
    if bias is not None:
        y = y + jnp.expand_dims(bias.astype(jnp.float32), axes)
    return y.astype(x.dtype)


def batch_norm(x: Array, scale: Array | None, bias: Array | None, *, axis: Axes = 0,
               epsilon: float = DEFAULT_EPSILON, unbiased: bool = False,
               mask: Array | None = None) -> tuple[Array, BatchStats]:
    """Batch normalization with the statistics of this batch.

    Args:
      x: e.g. [B, H] (axis=0), or [B, T, H] with axis=0 for per-time-step statistics
        (Cooijmans et al. 2016) or axis=(0, 1) for statistics shared over time.
      scale, bias: shape x.shape with `axis` removed ([H] or [T, H] ...), or None.
      axis: the axes to reduce over (the batch axis, and any others that share statistics).
      unbiased: divide the variance by n - 1; the same variance normalizes and is returned.
      mask: 1 for real positions, 0 for padding, shaped x.shape[:-1] ([B] or [B, T]; features
        on the last axis); padding is excluded from the statistics (its outputs are computed but
        meaningless).

    Returns:
      (y, BatchStats(mean, var)): y has x's shape and dtype; the statistics have the reduced
      axes removed, ready for `update_population_statistics`.
    """
    stats = batch_statistics(x, axis=axis, unbiased=unbiased, mask=mask)
    return batch_norm_inference(x, scale, bias, stats.mean, stats.var, axis=axis,
                                epsilon=epsilon), stats


def update_population_statistics(population: BatchStats, batch: BatchStats, *,
                                 momentum: float = 0.99,
                                 valid: Array | None = None) -> BatchStats:
    """EMA of batch statistics: pop <- momentum * pop + (1 - momentum) * batch.

    Cooijmans et al. use momentum 0.99 (`pop = 0.01 * batch + 0.99 * pop`). `valid` (broadcastable
    to the statistics, e.g. [T, 1]) leaves entries unchanged where the batch had no real data.
    """
    def ema(p, b):
        new = momentum * p + (1.0 - momentum) * b.astype(p.dtype)
        return new if valid is None else jnp.where(valid, new, p)
    return BatchStats(*(ema(p, b) for p, b in zip(population, batch)))


# ----------------------------------------------------------------------------------------------
# Weight norm
# ----------------------------------------------------------------------------------------------

def weight_norm(v: Array, g: Array, *, axis: Axes = 0) -> Array:
    """Weight normalization (Salimans and Kingma 2016): w = g * v / ||v||.

    Args:
      v: a kernel, e.g. [D_in, D_out] for a dense layer (x @ w).
      g: per-output gains, shape v.shape with `axis` removed ([D_out]).
      axis: the axes that make up one unit's incoming weight vector (the input axis).
    """
    axes = _canonical_axes(axis, v.ndim)
    vf = v.astype(jnp.float32)
    norm = jnp.sqrt(jnp.sum(jnp.square(vf), axis=axes, keepdims=True))
    return (jnp.expand_dims(g.astype(jnp.float32), axes) * vf / norm).astype(v.dtype)


