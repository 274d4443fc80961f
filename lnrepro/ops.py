"""Normalization as pure functions: layer norm, batch norm, weight norm.

No flax and no state here: modules in `lnrepro.layers` wrap these, and population statistics are
values the caller keeps. Every function accepts float32 and bfloat16 inputs; statistics are always
computed in float32 (bfloat16's 8-bit mantissa cannot hold a variance of shifted data) and the
output has the input's dtype.

Equations (Ba, Kiros, Hinton 2016, sec. 3; Ioffe and Szegedy 2015; Salimans and Kingma 2016):

  layer norm   mu_n = mean_i a_ni,  s_n^2 = mean_i (a_ni - mu_n)^2,
               y_ni = g_i (a_ni - mu_n) / sqrt(s_n^2 + eps) + b_i
  batch norm   mu_i = mean_n a_ni,  s_i^2 = mean_n (a_ni - mu_i)^2,
               y_ni = g_i (a_ni - mu_i) / sqrt(s_i^2 + eps) + b_i
  weight norm  w_i = g_i v_i / ||v_i||

Layer norm reduces over the features of one example; batch norm over the examples for each feature.

On a GPU, `layer_norm` runs the fused Pallas kernels of `lnrepro.pallas_layer_norm` for the shapes
they serve (`layer_norm_implementation`); the CPU always runs the jnp implementation here.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp

from lnrepro import pallas_layer_norm

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
               axis: Axes = -1, epsilon: float = DEFAULT_EPSILON,
               implementation: str | None = None, interpret: bool = False) -> Array:
    """Layer normalization (Ba et al. 2016, eq. 4), statistics per example over `axis`.

    Args:
      x: input of any shape, float32 or bfloat16; e.g. [B, H] or [B, T, 4H].
      scale: gain g with shape x.shape[axis] (None: no gain).
      bias: bias b with shape x.shape[axis] (None: no bias).
      axis: the feature axis or axes to normalize over. All other axes are independent rows, so
        one example's output never depends on another's, and a time axis is handled in one call.
      epsilon: added to the biased variance inside the square root.
      implementation: "xla" (jnp ops with a custom VJP), "pallas" (the fused kernels of
        `lnrepro.pallas_layer_norm`), or None: `layer_norm_implementation` picks, "pallas" on a
        single GPU for the shapes the kernels serve and "xla" everywhere else (so the CPU always
        runs the XLA path).
      interpret: run the Pallas kernels through Pallas's interpreter (any backend; for tests).
        Implies implementation="pallas".

    Returns:
      y with x's shape and dtype.

    Both implementations have a custom VJP from the saved per-row mean and reciprocal standard
    deviation, so forward + backward reads x twice and the cotangent twice instead of keeping the
    autodiff graph of the textbook formula alive (see scripts/benchmark_ops.py).
    """
    axes = _canonical_axes(axis, x.ndim)
    if scale is not None:
        _broadcastable(scale, x.shape, axes)
    if bias is not None:
        _broadcastable(bias, x.shape, axes)
    if interpret:
        if implementation not in (None, "pallas"):
            raise ValueError(f"interpret=True runs the Pallas kernels; it cannot be combined with "
                             f"implementation={implementation!r}.")
        implementation = "pallas"
    if implementation is None:
        implementation = layer_norm_implementation(x.shape, x.dtype, axes, jax.default_backend(),
                                                   jax.device_count())
    if implementation == "xla":
        if axes == (x.ndim - 1,) and x.ndim > 2:
            # Rows of the last axis as one [R, H] matrix: XLA:CPU fuses the 2-D backward better
            # (whole-tensor column sums for the gain and bias gradients) than the N-D one.
            rows = x.reshape(math.prod(x.shape[:-1]), x.shape[-1])
            y = _layer_norm(rows, scale, bias, (1,), float(epsilon))
            return y.reshape(x.shape)
        return _layer_norm(x, scale, bias, axes, float(epsilon))
    if implementation != "pallas":
        raise ValueError(f"implementation must be None, 'xla' or 'pallas', got "
                         f"{implementation!r}.")
    if not pallas_layer_norm.kernel_serves(x.shape, x.dtype, axes):
        raise ValueError(
            f"the Pallas layer norm serves float32 and bfloat16 inputs normalized over the last "
            f"axis only, with 1 to {pallas_layer_norm.MAX_FEATURES} features; got shape "
            f"{x.shape}, dtype {x.dtype}, axes {axes}.")
    return _layer_norm_fused(x, scale, bias, float(epsilon), bool(interpret))


def layer_norm_implementation(shape: Sequence[int], dtype, axes: Sequence[int], backend: str,
                              device_count: int) -> str:
    """The implementation `layer_norm` runs by default: "pallas" on a single GPU
    (jax.default_backend() == "gpu", jax.device_count() == 1) where
    `pallas_layer_norm.kernel_serves` the shape and dtype, "xla" otherwise.

    The CPU keeps the XLA path, so that the CPU's forward stays the same function, bit for bit,
    across versions (its backward changed rounding once, at commit 57134dc; records name their
    commit).
    Several devices keep it too: XLA cannot partition a Pallas call, so under a data-parallel
    jit (lnrepro.train's mesh) it would gather the whole batch onto every device.
    """
    if (backend == "gpu" and device_count == 1
            and pallas_layer_norm.kernel_serves(shape, dtype, axes)):
        return "pallas"
    return "xla"


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


def layer_norm_forward(x: Array, scale: Array | None, bias: Array | None,
                       axes: tuple[int, ...], epsilon: float) -> tuple[Array, Array, Array]:
    """The layer norm forward with its statistics: (y, mean, rstd), mean and rstd float32 with
    x's rank (size 1 on `axes`). `axes` sorted and non-negative. For code that saves the
    statistics for `layer_norm_backward` (the custom VJPs here and in lnrepro.cell_ops)."""
    mean, rstd = _row_statistics(x, axes, epsilon)
    y = _affine((x.astype(jnp.float32) - mean) * rstd, scale, bias, x.shape, axes)
    return y.astype(x.dtype), mean, rstd


def _contract(a: Array, v: Array, a_axes: tuple[int, ...]) -> Array:
    """sum over a_axes of a * v, v shaped like a's a_axes: a matrix-vector product.

    XLA:CPU materializes a vector broadcast to a's size before every reduction that reads it
    (scale times dy, rstd times dy * xc); a dot reads the vector as it is. HIGHEST keeps a
    float32 contraction from dropping to TF32 on GPUs."""
    return jax.lax.dot_general(a, v, ((a_axes, tuple(range(v.ndim))), ((), ())),
                               precision=jax.lax.Precision.HIGHEST)


def layer_norm_backward(x: Array, mean: Array, rstd: Array, scale: Array | None,
                        has_bias: bool, dy: Array, axes: tuple[int, ...], *,
                        row_sums_as_products: bool = False
                        ) -> tuple[Array, Array | None, Array | None]:
    """(dx, dscale, dbias) of y = layer_norm(x, scale, bias) from layer_norm_forward's mean and
    rstd; dscale is None without a scale, dbias None without a bias.

      dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)),  dxhat = scale * dy
      dscale = sum over rows of dy * xhat,  dbias = sum over rows of dy

    Written with the centred input xc = x - mean (xhat = xc * rstd) so that the per-row rstd is
    applied to row sums, and dscale contracts dy * xc with the per-row rstd as a matrix-vector
    product (_contract): XLA:CPU then does not broadcast rstd to x's size before a reduction.
    This takes 0.87-0.95x the time of the xhat form in scripts/benchmark_ops.py's shapes.

    row_sums_as_products: also take the two per-row sums of dxhat as products of dy with the
    scale, so the scale is never broadcast before a reduction either. Faster where dy is laid out
    as x (the LN-LSTM's step, lnrepro.cell_ops: 0.96x the LN-LSTM's time), much slower where XLA
    must transpose dy first (the LN-LSTM's input terms, whose cotangent leaves a time-major scan:
    1.2x), so it is the caller's choice.
    """
    other_axes = tuple(a for a in range(x.ndim) if a not in axes)
    dyf = dy.astype(jnp.float32)
    xc = x.astype(jnp.float32) - mean
    dy_xc = dyf * xc
    if scale is None:
        dxhat, dxhat_xc = dyf, dy_xc
    else:
        scale = scale.astype(jnp.float32)
        dxhat = dyf * _broadcastable(scale, x.shape, axes)
        dxhat_xc = dxhat * xc
    if scale is not None and row_sums_as_products:
        inverse_n = 1.0 / math.prod(x.shape[a] for a in axes)
        mean_dxhat = jnp.expand_dims(_contract(dyf, scale, axes), axes) * inverse_n
        mean_dxhat_xc = jnp.expand_dims(_contract(dy_xc, scale, axes), axes) * inverse_n
    else:
        mean_dxhat = jnp.mean(dxhat, axis=axes, keepdims=True)
        mean_dxhat_xc = jnp.mean(dxhat_xc, axis=axes, keepdims=True)
    dx = rstd * (dxhat - mean_dxhat - xc * (rstd * rstd * mean_dxhat_xc))
    dscale = None if scale is None else _contract(dy_xc, jnp.squeeze(rstd, axes), other_axes)
    dbias = jnp.sum(dyf, axis=other_axes) if has_bias else None
    return dx.astype(x.dtype), dscale, dbias


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _layer_norm(x, scale, bias, axes, epsilon):
    return layer_norm_forward(x, scale, bias, axes, epsilon)[0]


def _layer_norm_fwd(x, scale, bias, axes, epsilon):
    y, mean, rstd = layer_norm_forward(x, scale, bias, axes, epsilon)
    # Save the input and two numbers per row; x_hat is recomputed in the backward pass because
    # recomputing it is cheaper than writing and re-reading a tensor of x's size.
    return y, (x, mean, rstd, scale, bias)


def _layer_norm_bwd(axes, epsilon, residuals, dy):
    del epsilon  # rstd holds it
    x, mean, rstd, scale, bias = residuals
    dx, dscale, dbias = layer_norm_backward(x, mean, rstd, scale, bias is not None, dy, axes)
    return (dx,
            None if scale is None else dscale.reshape(scale.shape).astype(scale.dtype),
            None if bias is None else dbias.reshape(bias.shape).astype(bias.dtype))


_layer_norm.defvjp(_layer_norm_fwd, _layer_norm_bwd)


# The fused path: x viewed as [R, H] (features on the last axis). The residuals are the same as
# the XLA path's (x, per-row mean and rstd, the parameters), so nothing of x's size is saved but
# x itself. Without `interpret`, the Triton kernels are staged out for CUDA and ROCm only, with
# the XLA path as the other platforms' branch: a jitted function whose default backend is a GPU
# but which is placed on the CPU then runs XLA instead of failing to lower Triton for the CPU.

def _rows_forward(x2, scale, bias, epsilon):
    """The XLA forward on [R, H], in the fused path's layout: y, mean [R], rstd [R]."""
    y, mean, rstd = layer_norm_forward(x2, scale, bias, (1,), epsilon)
    return y, mean[:, 0], rstd[:, 0]


def _rows_backward(x2, scale, dy2, mean, rstd, want_dscale, want_dbias):
    """The XLA backward on [R, H], as `pallas_layer_norm.backward` returns it (float32 sums)."""
    del want_dscale  # there is a gain gradient exactly when there is a gain
    return layer_norm_backward(x2, mean[:, None], rstd[:, None], scale, want_dbias, dy2, (1,))


def _fused_forward(x2, scale, bias, epsilon, interpret):
    kernel = functools.partial(pallas_layer_norm.forward, epsilon=epsilon, interpret=interpret)
    if interpret:
        return kernel(x2, scale, bias)
    return jax.lax.platform_dependent(
        x2, scale, bias, cuda=kernel, rocm=kernel,
        default=functools.partial(_rows_forward, epsilon=epsilon))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _layer_norm_fused(x, scale, bias, epsilon, interpret):
    y, _, _ = _fused_forward(x.reshape(-1, x.shape[-1]), scale, bias, epsilon, interpret)
    return y.reshape(x.shape)


def _layer_norm_fused_fwd(x, scale, bias, epsilon, interpret):
    y, mean, rstd = _fused_forward(x.reshape(-1, x.shape[-1]), scale, bias, epsilon, interpret)
    return y.reshape(x.shape), (x, mean, rstd, scale, bias)


def _layer_norm_fused_bwd(epsilon, interpret, residuals, dy):
    x, mean, rstd, scale, bias = residuals
    x2, dy2 = x.reshape(-1, x.shape[-1]), dy.reshape(-1, x.shape[-1])
    flags = dict(want_dscale=scale is not None, want_dbias=bias is not None)
    kernel = functools.partial(pallas_layer_norm.backward, **flags, interpret=interpret)
    if interpret:
        dx, dscale, dbias = kernel(x2, scale, dy2, mean, rstd)
    else:
        dx, dscale, dbias = jax.lax.platform_dependent(
            x2, scale, dy2, mean, rstd, cuda=kernel, rocm=kernel,
            default=functools.partial(_rows_backward, **flags))
    return (dx.reshape(x.shape),
            None if scale is None else dscale.astype(scale.dtype),
            None if bias is None else dbias.astype(bias.dtype))


_layer_norm_fused.defvjp(_layer_norm_fused_fwd, _layer_norm_fused_bwd)


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


