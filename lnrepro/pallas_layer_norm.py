"""Fused layer norm over the last axis as Pallas kernels (Triton on a GPU), forward and backward.

`ops.layer_norm` picks these kernels on a GPU for the shapes they serve (`kernel_serves`) and owns
the custom VJP; this module only holds the kernels, on a 2-D view x: [R, H] (rows, features).
Everything is computed in float32 whatever the input dtype, as in `ops`:

  forward   mu_r = mean_i x_ri,  s_r^2 = mean_i (x_ri - mu_r)^2,  rstd_r = 1 / sqrt(s_r^2 + eps)
            xhat_ri = (x_ri - mu_r) * rstd_r,  y_ri = g_i xhat_ri + b_i
            writes y [R, H] and mean, rstd [R] (8 bytes a row): the backward recomputes xhat
            from x rather than keeping a tensor of x's size alive.
  backward  dxhat = g * dy,  dx = rstd * (dxhat - mean_i(dxhat) - xhat * mean_i(dxhat * xhat))
            dg_i = sum_r dy_ri xhat_ri,  db_i = sum_r dy_ri
            one pass reads x and dy once and writes dx; each program also writes its partial
            sums of dg and db over the rows it handled ([P, H] float32, P programs), which a
            second, small XLA pass adds up (P * H, far less than R * H).

Passes over an [R, H] tensor: forward reads x, writes y (2); backward reads x and dy, writes dx
(3): 5 in all, the floor for a layer norm that does not keep xhat.

Layout: a program handles a tile of `block_rows` whole rows, the feature axis padded to the next
power of two (`block_features`; Triton's tensors have power-of-two sizes) and masked. A row must
fit one tile, hence MAX_FEATURES. Every load and store is masked (rows past R, features past H):
the Triton lowering does no bounds checks of its own, and the interpreter pads with NaN, so a
missing mask shows up in the CPU tests.

`interpret=True` runs the same kernels through Pallas's interpreter (any backend, slow): that is
how the CPU tests check them.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

Array = jax.Array

# Our choices, untuned (no GPU at hand when written): see scripts/benchmark_ops.py to measure.
# A row must fit one tile. The backward keeps about six row-sized float32 values live per row; at
# 8192 features and 8 warps that is ~200 registers per thread, the most we let it spill toward.
MAX_FEATURES = 8192
# Elements per tile: 4096 float32 over 8 warps (256 threads) is 16 per thread per value.
TILE_ELEMENTS = 4096
MAX_BLOCK_ROWS = 128
# The backward's grid: about this many programs, each looping over consecutive tiles, so that the
# partial sums of dg and db are [~512, H] float32 however many rows there are (a few waves on an
# H100's 132 SMs).
BACKWARD_PROGRAMS = 512
DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16))


def kernel_serves(shape: Sequence[int], dtype, axes: Sequence[int]) -> bool:
    """Whether the kernels compute this layer norm: features on the last axis only, at most
    MAX_FEATURES of them, at least one row, float32 or bfloat16."""
    shape = tuple(shape)
    return (len(shape) >= 1 and tuple(axes) == (len(shape) - 1,)
            and 1 <= shape[-1] <= MAX_FEATURES and math.prod(shape[:-1]) >= 1
            and jnp.dtype(dtype) in DTYPES)


class BlockConfig(NamedTuple):
    block_rows: int  # rows per tile, a power of two
    block_features: int  # H padded to a power of two
    num_warps: int


def block_config(rows: int, features: int) -> BlockConfig:
    """Tile sizes for [rows, features]: whole rows, ~TILE_ELEMENTS elements a tile."""
    if not 1 <= features <= MAX_FEATURES:
        raise ValueError(f"the fused layer norm serves 1 to {MAX_FEATURES} features, got "
                         f"{features}.")
    block_features = pl.next_power_of_2(features)
    block_rows = max(1, TILE_ELEMENTS // block_features)
    block_rows = min(block_rows, MAX_BLOCK_ROWS, pl.next_power_of_2(max(rows, 1)))
    num_warps = min(max(block_rows * block_features // 256, 1), 8)
    return BlockConfig(block_rows, block_features, num_warps)


def _tile(rows, features, start, config: BlockConfig):
    """Index and masks of the tile of rows [start, start + block_rows)."""
    row_ids = start + jnp.arange(config.block_rows)
    row_ok = row_ids < rows
    col_ok = jnp.arange(config.block_features) < features
    index = (pl.ds(start, config.block_rows), pl.ds(0, config.block_features))
    return index, row_ok, col_ok, row_ok[:, None] & col_ok[None, :]


def _load_f32(ref, index, mask):
    return plgpu.load(ref.at[index], mask=mask, other=0.0).astype(jnp.float32)


# ----------------------------------------------------------------------------------------------
# Forward
# ----------------------------------------------------------------------------------------------

def _forward_kernel(*refs, config: BlockConfig, epsilon: float, has_scale: bool,
                    has_bias: bool):
    refs = list(refs)
    x_ref = refs.pop(0)
    scale_ref = refs.pop(0) if has_scale else None
    bias_ref = refs.pop(0) if has_bias else None
    y_ref, mean_ref, rstd_ref = refs
    rows, features = x_ref.shape
    index, row_ok, col_ok, mask = _tile(rows, features, pl.program_id(0) * config.block_rows,
                                        config)
    x = _load_f32(x_ref, index, mask)  # [BR, BF], zero outside [R, H]
    mean = jnp.sum(x, axis=1) / features  # [BR]
    # Two-pass variance, as ops._row_statistics: no cancellation from a large offset.
    centered = jnp.where(mask, x - mean[:, None], 0.0)
    var = jnp.sum(centered * centered, axis=1) / features
    rstd = jax.lax.rsqrt(var + epsilon)
    y = centered * rstd[:, None]
    features_index = (pl.ds(0, config.block_features),)
    if has_scale:
        y = y * _load_f32(scale_ref, features_index, col_ok)[None, :]
    if has_bias:
        y = y + _load_f32(bias_ref, features_index, col_ok)[None, :]
    plgpu.store(y_ref.at[index], y.astype(y_ref.dtype), mask=mask)
    plgpu.store(mean_ref.at[index[:1]], mean, mask=row_ok)
    plgpu.store(rstd_ref.at[index[:1]], rstd, mask=row_ok)


def forward(x: Array, scale: Array | None, bias: Array | None, *, epsilon: float,
            interpret: bool = False) -> tuple[Array, Array, Array]:
    """Layer norm of x: [R, H] over H. Returns y [R, H] (x's dtype), mean [R] and rstd [R]
    (float32)."""
    rows, features = x.shape
    config = block_config(rows, features)
    kernel = functools.partial(_forward_kernel, config=config, epsilon=float(epsilon),
                               has_scale=scale is not None, has_bias=bias is not None)
    stats = jax.ShapeDtypeStruct((rows,), jnp.float32)
    call = pl.pallas_call(
        kernel,
        out_shape=(jax.ShapeDtypeStruct(x.shape, x.dtype), stats, stats),
        grid=(pl.cdiv(rows, config.block_rows),),
        compiler_params=plgpu.CompilerParams(num_warps=config.num_warps, num_stages=1),
        interpret=interpret,
        name="layer_norm_forward",
    )
    return call(x, *(p for p in (scale, bias) if p is not None))


# ----------------------------------------------------------------------------------------------
# Backward
# ----------------------------------------------------------------------------------------------

def _backward_kernel(*refs, config: BlockConfig, tiles_per_program: int, has_scale: bool,
                     want_dscale: bool, want_dbias: bool):
    refs = list(refs)
    x_ref = refs.pop(0)
    scale_ref = refs.pop(0) if has_scale else None
    dy_ref, mean_ref, rstd_ref, dx_ref = refs[:4]
    partial_refs = refs[4:]
    rows, features = x_ref.shape
    program = pl.program_id(0)
    features_index = (pl.ds(0, config.block_features),)
    col_ok = jnp.arange(config.block_features) < features
    scale = _load_f32(scale_ref, features_index, col_ok) if has_scale else None

    def tile(t, sums):
        start = (program * tiles_per_program + t) * config.block_rows
        index, row_ok, _, mask = _tile(rows, features, start, config)
        x = _load_f32(x_ref, index, mask)
        dy = _load_f32(dy_ref, index, mask)
        mean = _load_f32(mean_ref, index[:1], row_ok)
        rstd = _load_f32(rstd_ref, index[:1], row_ok)  # 0 on rows past R: their dx is 0
        xhat = jnp.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        dxhat = dy * scale[None, :] if has_scale else dy
        mean_dxhat = jnp.sum(dxhat, axis=1) / features
        mean_dxhat_xhat = jnp.sum(dxhat * xhat, axis=1) / features
        dx = rstd[:, None] * (dxhat - mean_dxhat[:, None] - xhat * mean_dxhat_xhat[:, None])
        plgpu.store(dx_ref.at[index], dx.astype(dx_ref.dtype), mask=mask)
        dscale_sum, dbias_sum = sums
        return dscale_sum + jnp.sum(dy * xhat, axis=0), dbias_sum + jnp.sum(dy, axis=0)

    zeros = jnp.zeros((config.block_features,), jnp.float32)
    dscale_sum, dbias_sum = jax.lax.fori_loop(0, tiles_per_program, tile, (zeros, zeros))
    for want, value in ((want_dscale, dscale_sum), (want_dbias, dbias_sum)):
        if want:
            plgpu.store(partial_refs.pop(0).at[program, features_index[0]], value, mask=col_ok)


def backward_grid(rows: int, config: BlockConfig) -> tuple[int, int]:
    """(programs, tiles_per_program) of the backward: ~BACKWARD_PROGRAMS programs."""
    tiles = pl.cdiv(rows, config.block_rows)
    tiles_per_program = pl.cdiv(tiles, BACKWARD_PROGRAMS)
    return pl.cdiv(tiles, tiles_per_program), tiles_per_program


def backward(x: Array, scale: Array | None, dy: Array, mean: Array, rstd: Array, *,
             want_dscale: bool, want_dbias: bool,
             interpret: bool = False) -> tuple[Array, Array | None, Array | None]:
    """Gradients of layer norm on x: [R, H] given dy [R, H] and the forward's mean, rstd [R].

    Returns dx [R, H] (x's dtype) and float32 sums over rows dscale [H], dbias [H] (None where
    not wanted). dscale is sum(dy * xhat); it is wanted only when there is a gain.
    """
    rows, features = x.shape
    config = block_config(rows, features)
    programs, tiles_per_program = backward_grid(rows, config)
    kernel = functools.partial(_backward_kernel, config=config,
                               tiles_per_program=tiles_per_program, has_scale=scale is not None,
                               want_dscale=want_dscale, want_dbias=want_dbias)
    partial_sums = jax.ShapeDtypeStruct((programs, features), jnp.float32)
    out_shape = [jax.ShapeDtypeStruct(x.shape, x.dtype)]
    out_shape += [partial_sums] * (int(want_dscale) + int(want_dbias))
    call = pl.pallas_call(
        kernel,
        out_shape=tuple(out_shape),
        grid=(programs,),
        compiler_params=plgpu.CompilerParams(num_warps=config.num_warps),
        interpret=interpret,
        name="layer_norm_backward",
    )
    dx, *partials = call(x, *(() if scale is None else (scale,)), dy, mean, rstd)
    # The second pass: [programs, H] -> [H].
    sums = [jnp.sum(p, axis=0) for p in partials]
    dscale = sums.pop(0) if want_dscale else None
    dbias = sums.pop(0) if want_dbias else None
    return dx, dscale, dbias
