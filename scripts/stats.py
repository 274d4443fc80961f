"""The statistics behind every claim in the README: means over seeds, 95% intervals, tests.

Seeds are the unit of replication: each run contributes one number (its final error, the epoch
it got somewhere, ...). Two settings are compared with Welch's t-test (unequal variances) on
those numbers, a "reaches X within N" outcome with Fisher's exact test, and the time a seed
takes to reach X (with the seeds that never do censored) with the log-rank test. For a claim
left open, seeds_for_power (the t-test) and seeds_for_power_by_resampling (the other tests)
estimate how many seeds would settle it.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

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
    """A - B over seeds: the effect (difference of means, or of medians for the rank test), its
    95% interval where the test gives one (NaN otherwise), and a two-sided p."""
    effect: float
    low: float
    high: float
    p: float
    test: str


def welch(a: Sequence[float], b: Sequence[float]) -> Comparison | None:
    """Welch's t-test of mean(a) - mean(b), with its Welch-Satterthwaite 95% interval; None when
    either side has fewer than 2 seeds (no variance to compare against)."""
    if len(a) < 2 or len(b) < 2:
        return None
    if np.ptp(a) == 0 and np.ptp(b) == 0:  # two constants: their difference is exact
        effect = float(a[0] - b[0])
        return Comparison(effect, effect, effect, 0.0 if effect else 1.0, "Welch")
    result = stats.ttest_ind(a, b, equal_var=False)
    interval = result.confidence_interval(1 - ALPHA)
    return Comparison(float(np.mean(a) - np.mean(b)), float(interval.low), float(interval.high),
                      float(result.pvalue), "Welch")


def rank_test(a: Sequence[float], b: Sequence[float]) -> Comparison | None:
    """The Mann-Whitney U test (exact), for values known only up to their order: e.g. a
    training NLL that rounds to 0 in float32 is below some bound, not a number a t-test may
    average. The effect is the difference of the medians."""
    if len(a) < 2 or len(b) < 2:
        return None
    p = stats.mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue
    return Comparison(_median_difference(a, b), float("nan"), float("nan"), float(p),
                      "Mann-Whitney")


def logrank(a: Sequence[float], b: Sequence[float]) -> Comparison | None:
    """The log-rank test of two groups' times to an event (e.g. updates until a target), inf
    marking a seed that never got there within its run (right-censored). The effect is the
    difference of the median times (inf when over half a group never got there). The p is the
    test's chi-square approximation, rough at a handful of seeds; the p is NaN when no seed of
    either group got there, or all at one time."""
    if len(a) < 2 or len(b) < 2:
        return None
    times = np.asarray([*a, *b], dtype=float)
    if not np.isfinite(times).any():
        return Comparison(0.0, float("nan"), float("nan"), float("nan"), "log-rank")
    # A censored seed is at risk at every event time, so the test is the same for any censoring
    # time from the last event on: the records' horizons need not be known.
    horizon = times[np.isfinite(times)].max()

    def censored(values):
        values = np.asarray(values, dtype=float)
        reached = np.isfinite(values)
        return stats.CensoredData(uncensored=values[reached],
                                  right=np.full(int((~reached).sum()), horizon))
    # When every event ties at one time with every seed at risk failing there, the variance is
    # 0 and the p NaN (not settled): nothing tells the groups apart.
    with np.errstate(invalid="ignore", divide="ignore"):
        p = stats.logrank(censored(a), censored(b)).pvalue
    return Comparison(_median_difference(a, b), float("nan"), float("nan"), float(p), "log-rank")


def _median_difference(a: Sequence[float], b: Sequence[float]) -> float:
    median_a, median_b = np.median(a), np.median(b)
    return 0.0 if median_a == median_b else float(median_a - median_b)  # inf - inf: no difference


def fisher(hits_a: Sequence[bool], hits_b: Sequence[bool]) -> Comparison:
    """Fisher's exact test on how many seeds of A and of B reached a target; the effect is the
    difference of the two fractions (no interval: too few seeds for one to mean much)."""
    a, b = int(sum(hits_a)), int(sum(hits_b))
    table = [[a, len(hits_a) - a], [b, len(hits_b) - b]]
    p = stats.fisher_exact(table).pvalue
    effect = a / len(hits_a) - b / len(hits_b)
    return Comparison(effect, float("nan"), float("nan"), float(p), "Fisher")


MOST_SEEDS = 10_000  # where seeds_for_power stops looking


def seeds_for_power(a: Sequence[float], b: Sequence[float], power: float = 0.8,
                    most: int = MOST_SEEDS) -> int | None:
    """The seeds per side at which Welch's test would reach p < ALPHA (in either direction) with
    probability `power` if the true means and standard deviations were the observed ones: a
    guide to what would settle a claim, not a promise (the observed effect of a few seeds is
    itself uncertain, and the t-test assumes roughly normal values). 2 for two distinct
    constants, which any seeds tell apart; None when the means are equal or it needs more than
    `most` seeds. Needs 2 seeds a side, for their spreads."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"seeds_for_power needs 2 seeds a side for their spreads, got "
                         f"{len(a)} and {len(b)}")
    effect = abs(float(np.mean(a) - np.mean(b)))
    var_a, var_b = np.var(a, ddof=1), np.var(b, ddof=1)
    if effect == 0:
        return None
    if var_a + var_b == 0:
        return 2
    n = np.arange(2, most + 1)
    # The t statistic of n seeds a side is noncentral t, with the Welch-Satterthwaite degrees
    # of freedom of equal group sizes; power counts rejections in either direction.
    df = (n - 1) * (var_a + var_b) ** 2 / (var_a ** 2 + var_b ** 2)
    shift = effect / np.sqrt((var_a + var_b) / n)
    critical = stats.t.ppf(1 - ALPHA / 2, df)
    reached = stats.nct.sf(critical, df, shift) + stats.nct.cdf(-critical, df, shift) >= power
    return int(n[reached.argmax()]) if reached.any() else None


# The seed counts seeds_for_power_by_resampling tries, and how many experiments it draws at each.
RESAMPLED_SEEDS = (2, 3, 4, 5, 6, 7, 8, 10, 12, 15, 20, 25, 30, 40, 50, 60, 80, 100)
RESAMPLING_DRAWS = 400


def seeds_for_power_by_resampling(a: Sequence, b: Sequence,
                                  test: Callable[[Sequence, Sequence], Comparison | None],
                                  power: float = 0.8, draws: int = RESAMPLING_DRAWS,
                                  grid: Sequence[int] = RESAMPLED_SEEDS) -> int | None:
    """The seeds per side, of `grid`'s, from which `test` would reach p < ALPHA (settling the
    claim either way, as seeds_for_power) in at least `power` of `draws` simulated experiments,
    each side drawn with replacement from its observed values; None past the grid's last. For
    the claims no formula covers: ranks, censored times, counts of seeds that reached a target.
    Rougher than seeds_for_power:
    - the few observed seeds stand in for the whole distribution (a group whose seeds all failed
      is taken never to succeed), and resampling a few values makes ties, which the exact rank
      test does not correct for (its p is then only approximate);
    - the grid is bisected, which assumes power grows with the seeds. It does on average, but
      an exact test's discreteness can make it dip from one count to the next, so the answer is
      a point where the power crosses `power`, not always the first.
    Each seed count draws from its own fixed random stream, so the answer does not depend on
    the search's path."""
    a, b = np.asarray(a), np.asarray(b)

    def settles(n: int) -> bool:
        rng = np.random.default_rng(n)
        rejected = 0
        for _ in range(draws):
            comparison = test(rng.choice(a, n), rng.choice(b, n))
            rejected += comparison is not None and comparison.p < ALPHA  # a NaN p is not
        return rejected >= power * draws

    low, high = 0, len(grid)  # the first grid index that settles lies in [low, high]
    while low < high:
        middle = (low + high) // 2
        if settles(grid[middle]):
            high = middle
        else:
            low = middle + 1
    return grid[low] if low < len(grid) else None


def verdict(comparison: Comparison | None, claimed_sign: int) -> str:
    """'holds' when the test rejects equality at ALPHA in the claimed direction (claimed_sign:
    -1 if the paper says A is lower than B, +1 if higher), 'does not hold' when it rejects it in
    the other direction, 'not settled' otherwise (a p that is NaN included)."""
    if comparison is None:
        return "not settled (under 2 seeds a side)"
    if not comparison.p < ALPHA:
        return "not settled"
    return "holds" if np.sign(comparison.effect) == claimed_sign else "does not hold"
