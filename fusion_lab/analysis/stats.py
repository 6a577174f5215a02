"""Small-sample statistics for ablation tables: intervals of a difference, seeds to plan (no torch).

An ablation compares two rows measured over a handful of seeds (2-5). A normal
approximation (|Δ| < 2·SE) calls too many differences real at that size, so every
interval here uses Student's t with the right degrees of freedom:

- **paired**: both rows ran the same seeds; the differences by seed are one sample.
- **welch**: the rows ran different seeds; Welch's t with Welch-Satterthwaite df.
- **binomial**: a row has one seed (or no seed spread at all); the binomial standard
  error of each accuracy on its test set, normal quantile.

The formulas, their assumptions and the power calculation are in docs/tables.md.
scipy is imported inside the functions that need it, so importing this module is cheap.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

CONFIDENCE = 0.95  # two-sided level of every interval
POWER = 0.80  # power the seed planning aims for
MAX_SEEDS = 50  # the planner says "more than MAX_SEEDS" beyond this


@dataclass(frozen=True)
class Interval:
    """A difference of means with its two-sided interval.

    ``basis`` says how it was computed: "paired", "welch" or "binomial"; ``df`` is the
    t distribution's degrees of freedom (infinite for the binomial/normal interval).
    """

    delta: float
    se: float
    df: float
    low: float
    high: float
    basis: str

    @property
    def contains_zero(self) -> bool:
        return bool(self.low <= 0.0 <= self.high)


def binomial_se(acc: float, n_test: float) -> float:
    """Standard error (points) of a percent accuracy measured on ``n_test`` images."""
    p = acc / 100.0
    return 100.0 * math.sqrt(p * (1.0 - p) / n_test) if n_test and n_test > 0 else math.nan


def _t_interval(delta: float, se: float, df: float, basis: str) -> Interval:
    # here, not at the top: scipy (a slow import) only when an interval needs a quantile
    from scipy import stats

    q = stats.norm.ppf(0.5 + CONFIDENCE / 2) if math.isinf(df) else stats.t.ppf(
        0.5 + CONFIDENCE / 2, df)
    q = float(q)
    return Interval(float(delta), float(se), float(df), delta - q * se, delta + q * se, basis)


def paired_interval(a: Sequence[float], b: Sequence[float]) -> Interval | None:
    """t interval of mean(a - b) over paired samples (same seeds, same order).

    Returns None when fewer than 2 pairs, or when every difference is the same (a zero
    spread of differences says nothing about noise).
    """
    if len(a) != len(b) or len(a) < 2:
        return None
    diffs = [x - y for x, y in zip(a, b)]
    sd = statistics.stdev(diffs)
    if not sd > 0:
        return None
    n = len(diffs)
    return _t_interval(statistics.fmean(diffs), sd / math.sqrt(n), n - 1, "paired")


def welch_interval(a: Sequence[float], b: Sequence[float]) -> Interval | None:
    """Welch's t interval of mean(a) - mean(b), Welch-Satterthwaite degrees of freedom.

    Returns None when either sample has fewer than 2 values or both have zero spread.
    """
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se2 = va + vb
    if not se2 > 0:
        return None
    df = se2 ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return _t_interval(statistics.fmean(a) - statistics.fmean(b), math.sqrt(se2), df, "welch")


def binomial_interval(acc_a: float, acc_b: float, n_test_a: float,
                      n_test_b: float) -> Interval | None:
    """Normal interval of acc_a - acc_b from the binomial SE of each (one seed each).

    Returns None when a test-set size is unknown.
    """
    se = math.hypot(binomial_se(acc_a, n_test_a), binomial_se(acc_b, n_test_b))
    if math.isnan(se):
        return None
    return _t_interval(acc_a - acc_b, se, math.inf, "binomial")


def difference_interval(a: Mapping[int, float], b: Mapping[int, float],
                        test_size_a: float, test_size_b: float) -> Interval | None:
    """The interval of mean(a) - mean(b) for two rows given as {seed: accuracy}.

    Paired when both rows finished the same seeds (at least 2) and the differences vary;
    else Welch when both have at least 2 seeds and some spread; else binomial.

    Args:
        a, b: accuracies (percent) by seed of the row and of its baseline.
        test_size_a, test_size_b: test images behind each row's accuracy.
    Returns:
        The interval, or None when it cannot be computed (no runs, no test size).
    """
    if not a or not b:
        return None
    if set(a) == set(b):
        seeds = sorted(a)
        iv = paired_interval([a[s] for s in seeds], [b[s] for s in seeds])
        if iv is not None:
            return iv
    iv = welch_interval(list(a.values()), list(b.values()))
    if iv is not None:
        return iv
    return binomial_interval(statistics.fmean(a.values()), statistics.fmean(b.values()),
                             test_size_a, test_size_b)


def pooled_sd(samples: Sequence[Sequence[float]]) -> tuple[float, int]:
    """Pooled sample standard deviation of several groups and its degrees of freedom.

    Groups with fewer than 2 values add nothing, nor do groups without spread (every value
    the same): the intervals do not trust a zero spread (``paired_interval``,
    ``welch_interval``), and pooling it would shrink s and the seeds planned. Returns
    (nan, 0) when no group is left.
    """
    spread = [s for s in samples if len(s) >= 2 and statistics.variance(s) > 0]
    ss = sum(statistics.variance(s) * (len(s) - 1) for s in spread)
    df = sum(len(s) - 1 for s in spread)
    return (math.sqrt(ss / df), df) if df else (math.nan, 0)


def power_two_sample(n: int, effect: float) -> float:
    """Power of a two-sided two-sample t test, ``n`` per group, effect = Δ / σ."""
    # here, not at the top: scipy only when a power is computed
    from scipy import stats

    df = 2 * n - 2
    q = stats.t.ppf(0.5 + CONFIDENCE / 2, df)
    ncp = effect * math.sqrt(n / 2)
    return float(stats.nct.sf(q, df, ncp) + stats.nct.cdf(-q, df, ncp))


def seeds_needed(delta: float, sd: float, limit: int = MAX_SEEDS) -> int | None:
    """Seeds per row for a two-sample t test to detect ``delta`` with POWER at CONFIDENCE.

    Args:
        delta: the difference to detect (points).
        sd: the seed-to-seed standard deviation of one row (points).
        limit: the largest answer worth computing.
    Returns:
        The smallest n >= 2 per row, or None when it is more than ``limit``.
    """
    if not sd > 0:
        raise ValueError("seeds_needed needs a positive standard deviation")
    effect = abs(delta) / sd
    if effect == 0:
        return None
    for n in range(2, limit + 1):
        if power_two_sample(n, effect) >= POWER:
            return n
    return None
