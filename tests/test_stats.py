"""Intervals and seed planning of fusion_lab.analysis.stats against answers worked out by hand.

Quantiles are the printed table values (Student t, 97.5%: df 1 -> 12.706, df 2 -> 4.303,
df 4 -> 2.776; normal 1.960); the seed counts are Cohen's (1988) table for a two-sided
two-sample t test at alpha 0.05 and power 0.80 (d = 0.5 -> 64, 0.8 -> 26, 1.0 -> 17 per
group). Nothing here is copied from the code's output.
"""

from __future__ import annotations

import math

import pytest

from fusion_lab.analysis.stats import (
    binomial_interval,
    difference_interval,
    paired_interval,
    pooled_sd,
    seeds_needed,
    welch_interval,
)

T975 = {1: 12.706, 2: 4.303, 4: 2.776}
Z975 = 1.960
BASE = [80.0, 82.0, 84.0]  # mean 82, sd 2
PAIRED = [83.0, 84.0, 88.0]  # differences by seed 3, 2, 4: mean 3, sd 1
SHIFTED = [84.0, 86.0, 88.0]  # mean 86, sd 2


def test_paired_interval_by_hand():
    iv = paired_interval(PAIRED, BASE)
    half = T975[2] * 1 / math.sqrt(3)  # sd of the differences / sqrt(n), df = n - 1 = 2
    assert iv.basis == "paired" and iv.df == 2
    assert iv.delta == pytest.approx(3.0)
    assert (iv.low, iv.high) == pytest.approx((3 - half, 3 + half), abs=1e-3)
    assert not iv.contains_zero  # [0.52, 5.48]


def test_pairing_shrinks_the_interval_of_the_same_numbers():
    paired = paired_interval(PAIRED, BASE)
    welch = welch_interval(PAIRED, BASE)
    # Welch by hand: variances 7 and 4, se = sqrt(7/3 + 4/3), df = se^4 / sum((v/n)^2/(n-1))
    se = math.sqrt(11 / 3)
    df = (11 / 3) ** 2 / ((7 / 3) ** 2 / 2 + (4 / 3) ** 2 / 2)
    assert welch.se == pytest.approx(se) and welch.df == pytest.approx(df)
    assert df == pytest.approx(3.723, abs=1e-3)
    assert paired.high - paired.low < (welch.high - welch.low) / 2
    assert welch.contains_zero and not paired.contains_zero


def test_welch_with_three_seeds_each_is_wider_than_the_normal_rule():
    iv = welch_interval(SHIFTED, BASE)
    se = math.sqrt(4 / 3 + 4 / 3)  # equal n and variances: df = 2n - 2 = 4
    assert iv.df == pytest.approx(4.0) and iv.se == pytest.approx(se)
    assert (iv.low, iv.high) == pytest.approx((4 - T975[4] * se, 4 + T975[4] * se), abs=1e-3)
    # |Δ| = 4 > 2·SE = 3.27: the old normal rule called it real; the t interval holds 0
    assert 4 > 2 * se and iv.contains_zero


def test_two_seeds_against_two():
    iv = welch_interval([75.0, 77.0], [70.0, 72.0])
    se = math.sqrt(2 / 2 + 2 / 2)
    assert iv.df == pytest.approx(2.0)
    assert (iv.low, iv.high) == pytest.approx((5 - T975[2] * se, 5 + T975[2] * se), abs=1e-3)
    assert iv.contains_zero  # a 5-point gap is not resolved by 2 vs 2 seeds of sd 1.41
    one = paired_interval([80.2, 80.8], [80.0, 80.4])  # differences 0.2, 0.4: sd 0.1414
    half = T975[1] * math.sqrt(0.02) / math.sqrt(2)
    assert (one.low, one.high) == pytest.approx((0.3 - half, 0.3 + half), abs=1e-3)


def test_binomial_interval_by_hand():
    iv = binomial_interval(83.0, 81.0, 1000, 1000)
    se = 100 * math.sqrt(0.83 * 0.17 / 1000 + 0.81 * 0.19 / 1000)
    assert iv.basis == "binomial" and math.isinf(iv.df)
    assert (iv.low, iv.high) == pytest.approx((2 - Z975 * se, 2 + Z975 * se), abs=1e-3)
    assert binomial_interval(83.0, 81.0, None, 1000) is None


def test_difference_interval_picks_its_basis():
    base = dict(zip([0, 1, 2], BASE))
    assert difference_interval(dict(zip([0, 1, 2], PAIRED)), base, 1e3, 1e3).basis == "paired"
    other_seeds = dict(zip([1, 2, 3], SHIFTED))
    assert difference_interval(other_seeds, base, 1e3, 1e3).basis == "welch"
    # same seeds but a constant difference: zero spread says nothing, Welch is used
    constant = {s: a + 4 for s, a in base.items()}
    assert difference_interval(constant, base, 1e3, 1e3).basis == "welch"
    assert difference_interval({0: 83.0}, base, 1e3, 1e3).basis == "binomial"
    same = {0: 80.0, 1: 80.0}  # identical seeds on both rows: binomial
    iv = difference_interval({0: 80.6, 1: 80.6}, same, 1e3, 1e3)
    assert iv.basis == "binomial" and iv.delta == pytest.approx(0.6)
    assert difference_interval({}, base, 1e3, 1e3) is None


def test_pooled_sd_by_hand():
    sd, df = pooled_sd([[1.0, 2.0, 3.0], [2.0, 4.0], [7.0]])  # SS 2 + 2 over df 2 + 1
    assert df == 3 and sd == pytest.approx(math.sqrt(4 / 3))
    assert math.isnan(pooled_sd([[1.0], [2.0]])[0])
    # a group without spread adds no degrees of freedom (the intervals refuse it too)
    assert pooled_sd([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]]) == (pytest.approx(1.0), 2)
    assert math.isnan(pooled_sd([[5.0, 5.0], [6.0, 6.0, 6.0]])[0])


@pytest.mark.parametrize("effect, n", [(1.0, 17), (0.8, 26), (0.5, 64)])
def test_seeds_needed_matches_cohens_table(effect, n):
    assert seeds_needed(effect * 1.5, 1.5, limit=100) == n


def test_seeds_needed_is_capped():
    assert seeds_needed(0.5, 1.0) is None  # 64 > 50
    assert seeds_needed(0.0, 1.0) is None
    assert seeds_needed(-1.0, 1.0) == 17  # the sign of Δ does not matter
    with pytest.raises(ValueError):
        seeds_needed(1.0, 0.0)
