"""The statistics behind every claim in the README: means over seeds, 95% intervals, tests.

Seeds are the unit of replication: each run contributes one number (its final error, the epoch
it got somewhere, ...). Two settings are compared with Welch's t-test (unequal variances) on
those numbers, and a "reaches X within N" outcome with Fisher's exact test.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
from scipy import stats

ALPHA = 0.05  # two-sided; a 95% interval


def mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 2, style: str = "f"
             ) -> str:
    """'mean ± sample std' of `values` (times `scale`), or the one value when there is one."""
    values = np.asarray(values, dtype=float) * scale
    if len(values) == 1:
        return f"{values[0]:.{digits}{style}}"
    return f"{values.mean():.{digits}{style}} ± {values.std(ddof=1):.{digits}{style}}"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A - B over seeds: the difference of the means, its 95% interval and a two-sided p."""
    effect: float
    low: float
    high: float
    p: float
    test: str
    n_a: int
    n_b: int


def welch(a: Sequence[float], b: Sequence[float]) -> Comparison | None:
    """Welch's t-test of mean(a) - mean(b), with the Welch-Satterthwaite interval; None when
    either side has fewer than 2 seeds (no variance to compare against)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return None
    effect = a.mean() - b.mean()
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = np.sqrt(va + vb)
    if se == 0:  # identical constants on both sides: the difference is exact
        return Comparison(effect, effect, effect, 0.0 if effect else 1.0, "Welch", len(a),
                          len(b))
    dof = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = stats.t.ppf(1 - ALPHA / 2, dof) * se
    p = 2 * stats.t.sf(abs(effect) / se, dof)
    return Comparison(effect, effect - half, effect + half, float(p), "Welch", len(a), len(b))


def fisher(hits_a: Sequence[bool], hits_b: Sequence[bool]) -> Comparison:
    """Fisher's exact test on how many seeds of A and of B reached a target; the effect is the
    difference of the two fractions (no interval: too few seeds for one to mean much)."""
    a, b = int(sum(hits_a)), int(sum(hits_b))
    table = [[a, len(hits_a) - a], [b, len(hits_b) - b]]
    p = stats.fisher_exact(table).pvalue
    effect = a / len(hits_a) - b / len(hits_b)
    return Comparison(effect, float("nan"), float("nan"), float(p), "Fisher", len(hits_a),
                      len(hits_b))


def verdict(comparison: Comparison | None, claimed_sign: int) -> str:
    """'holds' when the test rejects equality at ALPHA in the claimed direction (claimed_sign:
    -1 if the paper says A is lower than B, +1 if higher), 'does not hold' when it rejects it in
    the other direction, 'not settled' otherwise."""
    if comparison is None:
        return "not settled (under 2 seeds a side)"
    if comparison.p >= ALPHA:
        return "not settled"
    return "holds" if np.sign(comparison.effect) == claimed_sign else "does not hold"
