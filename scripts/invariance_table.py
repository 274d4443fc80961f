"""Prints Table 1 of Ba et al. 2016 (invariances of batch, weight and layer norm) as measured on
our ops (`lnrepro.invariance`), with the relative change of the layer's normalized summed inputs in
every cell, and says whether every cell matches the paper. Exits 1 if not.

  PYTHONPATH=. .venv/bin/python -m scripts.invariance_table [--seed 0] [--epsilon 0]
"""

from __future__ import annotations

import argparse
import sys

from lnrepro import invariance


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epsilon", type=float, default=0.0,
                        help="variance epsilon for batch and layer norm (the paper's: none)")
    args = parser.parse_args(argv)

    table = invariance.compute_table(seed=args.seed, epsilon=args.epsilon)
    print(f"Invariance of the normalized summed inputs (yes: relative change < "
          f"{invariance.INVARIANT_BELOW:g}; no: > {invariance.CHANGED_ABOVE:g}), seed {args.seed}, "
          f"epsilon {args.epsilon:g}:\n")
    print(invariance.format_table(table))
    print()
    wrong, ambiguous = invariance.mismatches(table), invariance.ambiguous_cells(table)
    if not wrong and not ambiguous:
        print(f"All {len(table)} cells match the paper's Table 1.")
        return 0
    print(f"MISMATCH: {len(wrong)} of {len(table)} cells disagree with the paper's Table 1 "
          f"{wrong}; {len(ambiguous)} ambiguous {ambiguous}.")
    return 1


if __name__ == "__main__":
    sys.exit(main())
