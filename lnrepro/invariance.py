"""Table 1 of Ba, Kiros, Hinton 2016 (sec. 5.1), measured on our own normalization ops.

For batch, weight and layer norm, and for each of the paper's six transformations of the weights
or the data, we compute the normalized summed inputs of one layer on a random batch, apply the
transformation, compute them again and call the method invariant when the relative change
||y' - y|| / ||y|| is tiny. The numbers come from `lnrepro.ops` (`batch_norm` with this batch's
statistics, `weight_norm` + matmul, `layer_norm`), so the table tests our code, not a constant.

The layer, with x [N, D] a batch and kernel W [D, H] (column j is unit j's incoming weights):

  batch   y = BN(x W; g, 0)                statistics per unit over the batch
  weight  y = x (g * V / ||V||_col)        (+ bias 0): g_j (v_j . x) / ||v_j||
  layer   y = LN(x W; g, 0)                statistics per example over the H units

Transformations (scalars delta != 1; the paper's notation in brackets):

  weight matrix re-scaling       W -> delta W
  weight matrix re-centering     W -> W + 1 gamma^T   (the same vector gamma added to every
                                                       unit's incoming weights: every summed input
                                                       of one example shifts by gamma . x_n)
  weight vector re-scaling       w_j -> delta w_j     (one unit's incoming weights)
  dataset re-scaling             x_n -> delta x_n     for every example
  dataset re-centering           x_n -> x_n + c       for every example (c a vector)
  single training case re-scaling x_m -> delta x_m   for one example m

Precision choice: `lnrepro.ops` computes every statistic in float32 (inputs of any dtype are cast
to float32 inside), so evaluating in float64 would not buy precision; everything here is float32,
and the matmuls run at the "highest" precision (true float32) on every backend: a GPU's default
(TF32, a 10-bit mantissa) would turn exact invariances into relative changes of ~1e-4.
Exact invariances then show up as relative changes of float32 round-off (about 1e-7 .. 1e-6) and
broken ones as changes of order 0.1 .. 1: we call a cell invariant below `INVARIANT_BELOW` = 1e-4
and changed above `CHANGED_ABOVE` = 1e-2; a value in between is reported as ambiguous (and fails
`check_table`). The transformations are chosen large (delta = 3.7, 0.3; shifts of order the data)
so that broken invariances are far above the gap.

Epsilon: the paper's invariances are those of the exact normalization without epsilon. With the
ops' default 1e-5 added to variances of order 1, re-scalings change the output by O(1e-5), which
is close to our threshold; we therefore call the ops with `epsilon=0` (the summed inputs of a
random batch have no zero variances). `compute_table(epsilon=...)` lets one see the epsilon effect.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from lnrepro import ops

METHODS = ("batch", "weight", "layer")
METHOD_NAMES = {"batch": "Batch norm", "weight": "Weight norm", "layer": "Layer norm"}
TRANSFORMATIONS = (
    "weight_matrix_rescaling",
    "weight_matrix_recentering",
    "weight_vector_rescaling",
    "dataset_rescaling",
    "dataset_recentering",
    "single_case_rescaling",
)
TRANSFORMATION_NAMES = {
    "weight_matrix_rescaling": "Weight matrix re-scaling",
    "weight_matrix_recentering": "Weight matrix re-centering",
    "weight_vector_rescaling": "Weight vector re-scaling",
    "dataset_rescaling": "Dataset re-scaling",
    "dataset_recentering": "Dataset re-centering",
    "single_case_rescaling": "Single training case re-scaling",
}

# Ba et al. 2016, Table 1: True = invariant.
PAPER_TABLE: dict[tuple[str, str], bool] = {
    **dict(zip((("batch", t) for t in TRANSFORMATIONS), (True, False, True, True, True, False))),
    **dict(zip((("weight", t) for t in TRANSFORMATIONS), (True, False, True, False, False, False))),
    **dict(zip((("layer", t) for t in TRANSFORMATIONS), (True, True, False, True, False, True))),
}

INVARIANT_BELOW = 1e-4
CHANGED_ABOVE = 1e-2

Table = dict[tuple[str, str], tuple[bool, float]]


def _layer_output(method: str, x: jax.Array, w: jax.Array, gain: jax.Array,
                  epsilon: float) -> jax.Array:
    """Normalized summed inputs [N, H] of one layer (bias 0) with our ops."""
    if method == "batch":
        y, _ = ops.batch_norm(x @ w, gain, None, axis=0, epsilon=epsilon)
        return y
    if method == "weight":
        return x @ ops.weight_norm(w, gain, axis=0)
    if method == "layer":
        return ops.layer_norm(x @ w, gain, None, axis=-1, epsilon=epsilon)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}.")


def _transformations(rng: np.random.Generator, n: int, d: int, h: int
                     ) -> dict[str, Callable[[np.ndarray, np.ndarray], tuple]]:
    """Each maps (x, w) to the transformed (x, w); the random pieces are drawn once."""
    gamma = rng.normal(size=(d, 1))  # added to every unit's incoming weight vector
    c = 2.0 * rng.normal(size=(1, d))  # the same shift for every example
    unit = int(rng.integers(h))
    case = int(rng.integers(n))

    def scale_unit(x, w):
        w = w.copy()
        w[:, unit] *= 3.7
        return x, w

    def scale_case(x, w):
        x = x.copy()
        x[case] *= 3.7
        return x, w

    return {
        "weight_matrix_rescaling": lambda x, w: (x, 3.7 * w),
        "weight_matrix_recentering": lambda x, w: (x, w + gamma),
        "weight_vector_rescaling": scale_unit,
        "dataset_rescaling": lambda x, w: (0.3 * x, w),
        "dataset_recentering": lambda x, w: (x + c, w),
        "single_case_rescaling": scale_case,
    }


def compute_table(seed: int = 0, *, n: int = 32, d: int = 20, h: int = 16,
                  epsilon: float = 0.0) -> Table:
    """{(method, transformation): (invariant, relative change)} measured with `lnrepro.ops`.

    A random batch x [n, d] (mean 1, so dataset re-centering is not trivially small), kernel
    W [d, h] and positive gains g [h]; all float32 (see the module docstring for why).
    """
    rng = np.random.default_rng(seed)
    x = rng.normal(loc=1.0, size=(n, d))
    w = rng.normal(size=(d, h)) / np.sqrt(d)
    gain = jnp.asarray(rng.uniform(0.5, 2.0, size=(h,)), jnp.float32)
    transforms = _transformations(rng, n, d, h)
    f32 = lambda a: jnp.asarray(a, jnp.float32)

    table: Table = {}
    # True float32 matmuls on every backend (module docstring: a GPU's TF32 default would blur
    # the exact invariances into ~1e-4 changes).
    with jax.default_matmul_precision("highest"):
        for method in METHODS:
            base = np.asarray(_layer_output(method, f32(x), f32(w), gain, epsilon), np.float64)
            for name in TRANSFORMATIONS:
                x2, w2 = transforms[name](x, w)
                out = np.asarray(_layer_output(method, f32(x2), f32(w2), gain, epsilon),
                                 np.float64)
                rel = float(np.linalg.norm(out - base) / np.linalg.norm(base))
                table[(method, name)] = (rel < np.sqrt(INVARIANT_BELOW * CHANGED_ABOVE), rel)
    return table


def ambiguous_cells(table: Table) -> list[tuple[str, str]]:
    """Cells whose relative change falls in the gap between the two thresholds."""
    return [k for k, (_, rel) in table.items() if INVARIANT_BELOW <= rel <= CHANGED_ABOVE]


def mismatches(table: Table) -> list[tuple[str, str]]:
    """Cells that disagree with the paper's Table 1."""
    return [k for k, (inv, _) in table.items() if inv != PAPER_TABLE[k]]


def check_table(table: Table) -> bool:
    """Every cell matches the paper and none is ambiguous."""
    return not mismatches(table) and not ambiguous_cells(table)


def format_table(table: Table | None = None, *, show_change: bool = True) -> str:
    """Markdown table in the paper's layout: rows methods, columns transformations.

    A cell reads `yes` (invariant) or `no`, with the measured relative change when `show_change`,
    and `(paper: ..)` appended where it disagrees with the paper. `table=None` prints PAPER_TABLE.
    """
    header = "| | " + " | ".join(TRANSFORMATION_NAMES[t] for t in TRANSFORMATIONS) + " |"
    lines = [header, "|---" * (len(TRANSFORMATIONS) + 1) + "|"]
    ambiguous = set() if table is None else set(ambiguous_cells(table))
    for method in METHODS:
        cells = []
        for t in TRANSFORMATIONS:
            expected = PAPER_TABLE[(method, t)]
            if table is None:
                cells.append("yes" if expected else "no")
                continue
            invariant, rel = table[(method, t)]
            cell = "yes" if invariant else "no"
            if show_change:
                cell += f" ({rel:.1e})"
            if invariant != expected:
                cell += f" (paper: {'yes' if expected else 'no'})"
            if (method, t) in ambiguous:
                cell += " (ambiguous)"
            cells.append(cell)
        lines.append(f"| {METHOD_NAMES[method]} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
