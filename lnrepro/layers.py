"""Flax linen wrappers around `lnrepro.ops`: LayerNorm, BatchNorm, and a dense layer with a norm.

Layer norm keeps no state, so a model using only `LayerNorm` has `params` and nothing else.
`BatchNorm` keeps population statistics in the `batch_stats` collection; whether evaluation uses
them or the statistics of the evaluation batch is the caller's explicit choice
(`use_running_average`), never a default picked up by accident.
"""

from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from lnrepro import ops

Initializer = Callable[..., jax.Array]
NORMS = ("none", "batch", "layer", "weight")


class LayerNorm(nn.Module):
    """y = g * (x - mean) / sqrt(var + eps) + b over the last axis, per example (no state)."""
    epsilon: float = ops.DEFAULT_EPSILON
    use_scale: bool = True
    use_bias: bool = True
    scale_init: Initializer = nn.initializers.ones  # Ba et al. 2016: g = 1, b = 0.
    bias_init: Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        features = x.shape[-1]
        scale = self.param("scale", self.scale_init, (features,)) if self.use_scale else None
        bias = self.param("bias", self.bias_init, (features,)) if self.use_bias else None
        return ops.layer_norm(x, scale, bias, axis=-1, epsilon=self.epsilon)


class LayerNormParams(nn.Module):
    """The gain and bias of a LayerNorm over `features` units, returned as (scale, bias) for code
    that normalizes inside a larger fused function (lnrepro.cell_ops). Parameter names and
    initializers are LayerNorm's, so a parameter tree or checkpoint is the same with either."""
    features: int
    scale_init: Initializer = nn.initializers.ones
    bias_init: Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self) -> tuple[jax.Array, jax.Array]:
        return (self.param("scale", self.scale_init, (self.features,)),
                self.param("bias", self.bias_init, (self.features,)))


class BatchNorm(nn.Module):
    """Batch norm over axis 0 (the batch), features on the last axis.

    Attributes:
      unbiased: normalize with the n - 1 variance (Ba et al. 2016, sec. 6.6, at batch size 4).
      momentum: EMA decay of the population statistics.

    Call with `use_running_average=False` to normalize with this batch's statistics and (when the
    `batch_stats` collection is mutable) update the population statistics; `True` normalizes with
    the population statistics. Under `jax.sharding` with the batch sharded over devices, the
    statistics are computed over the global batch: jit sees one logical array.
    """
    unbiased: bool = False
    momentum: float = 0.99
    epsilon: float = ops.DEFAULT_EPSILON
    use_scale: bool = True
    use_bias: bool = True
    scale_init: Initializer = nn.initializers.ones
    bias_init: Initializer = nn.initializers.zeros

    @nn.compact
    def __call__(self, x: jax.Array, *, use_running_average: bool,
                 mask: jax.Array | None = None) -> jax.Array:
        features = x.shape[-1]
        reduce_axes = tuple(range(x.ndim - 1))
        stats_shape = (features,)
        pop_mean = self.variable("batch_stats", "mean", jnp.zeros, stats_shape, jnp.float32)
        pop_var = self.variable("batch_stats", "var", jnp.ones, stats_shape, jnp.float32)
        scale = self.param("scale", self.scale_init, stats_shape) if self.use_scale else None
        bias = self.param("bias", self.bias_init, stats_shape) if self.use_bias else None
        if use_running_average:
            return ops.batch_norm_inference(x, scale, bias, pop_mean.value, pop_var.value,
                                            axis=reduce_axes, epsilon=self.epsilon)
        y, stats = ops.batch_norm(x, scale, bias, axis=reduce_axes, epsilon=self.epsilon,
                                  unbiased=self.unbiased, mask=mask)
        # Don't touch the population statistics while flax is initializing the variables.
        if not self.is_initializing() and self.is_mutable_collection("batch_stats"):
            new = ops.update_population_statistics(
                ops.BatchStats(pop_mean.value, pop_var.value), stats, momentum=self.momentum)
            pop_mean.value, pop_var.value = new.mean, new.var
        return y


class WeightNormDense(nn.Module):
    """Dense layer with w = g * v / ||v|| per output unit (Salimans and Kingma 2016)."""
    features: int
    use_bias: bool = True
    kernel_init: Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        v = self.param("kernel", self.kernel_init, (x.shape[-1], self.features))
        # g = 1 gives each unit a unit-norm weight vector at initialization (our choice; no
        # data-dependent initialization).
        g = self.param("gain", nn.initializers.ones, (self.features,))
        y = x @ ops.weight_norm(v, g, axis=0).astype(x.dtype)
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,)).astype(x.dtype)
        return y


class NormedDense(nn.Module):
    """x -> norm(W x): a dense layer followed by a normalization of its summed inputs.

    `norm` is one of `none | batch | layer | weight`. With batch and layer norm the norm's bias
    replaces the dense bias (Ba et al. 2016, sec. 3), so the dense layer has none.
    """
    features: int
    norm: str = "none"
    unbiased_batch_variance: bool = False
    kernel_init: Initializer = nn.initializers.lecun_normal()

    @nn.compact
    def __call__(self, x: jax.Array, *, use_running_average: bool = False,
                 mask: jax.Array | None = None) -> jax.Array:
        """mask [B]: 1 for real examples, 0 for padding, kept out of BN's batch statistics."""
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}.")
        if self.norm == "weight":
            return WeightNormDense(self.features, kernel_init=self.kernel_init)(x)
        dense = nn.Dense(self.features, use_bias=self.norm == "none",
                         kernel_init=self.kernel_init)
        a = dense(x)
        if self.norm == "layer":
            return LayerNorm()(a)
        if self.norm == "batch":
            return BatchNorm(unbiased=self.unbiased_batch_variance)(
                a, use_running_average=use_running_average, mask=mask)
        return a
