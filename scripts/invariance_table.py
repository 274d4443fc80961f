"""Prints Table 1 of Ba et al. 2016 (invariances of batch, weight and layer norm) as measured on
our ops (`lnrepro.invariance`), with the relative change of the layer's normalized summed inputs in
every cell, and says whether every cell matches the paper. Exits 1 if not.

  .venv/bin/python -m scripts.invariance_table [--seed=0] [--epsilon=0]
"""

from __future__ import annotations

import sys

from absl import app, flags

from lnrepro import invariance

_SEED = flags.DEFINE_integer("seed", 0, "Seed of the random layer and inputs.")
_EPSILON = flags.DEFINE_float("epsilon", 0.0, "Variance epsilon for batch and layer norm "
                              "(the paper's: none).")


def report(seed: int, epsilon: float) -> tuple[str, bool]:
    """The table with its header and verdict, and whether every cell matches the paper."""
    table = invariance.compute_table(seed=seed, epsilon=epsilon)
    wrong, ambiguous = invariance.mismatches(table), invariance.ambiguous_cells(table)
    header = (f"Invariance of the normalized summed inputs (yes: relative change < "
              f"{invariance.INVARIANT_BELOW:g}; no: > {invariance.CHANGED_ABOVE:g}), seed {seed}, "
              f"epsilon {epsilon:g}:\n")
    if not wrong and not ambiguous:
        verdict = f"All {len(table)} cells match the paper's Table 1."
    else:
        verdict = (f"MISMATCH: {len(wrong)} of {len(table)} cells disagree with the paper's "
                   f"Table 1 {wrong}; {len(ambiguous)} ambiguous {ambiguous}.")
    return f"{header}\n{invariance.format_table(table)}\n\n{verdict}", not wrong and not ambiguous


def main(argv):
    del argv
    text, matches = report(_SEED.value, _EPSILON.value)
    print(text)
    sys.exit(0 if matches else 1)


if __name__ == "__main__":
    app.run(main)
