"""Means over seeds, their 95% intervals and the Welch interval of a difference, against hand calculations."""

import math

import numpy as np
import pandas as pd
import pytest

from analysis.intervals import curve_band, interval, interval_table, welch


def test_interval_of_one_two_three():
    # mean 2; s^2 = ((1-2)^2 + 0 + (3-2)^2) / (3-1) = 1; t(0.975, 2) = 4.303 (tables);
    # half-width 4.303 * 1 / sqrt(3) = 2.484
    iv = interval([1, 2, 3])
    assert (iv.n, iv.of, iv.mean, iv.sd) == (3, 3, 2.0, 1.0)
    assert iv.half_width == pytest.approx(2.484, abs=1e-3)
    assert (iv.low, iv.high) == pytest.approx((2 - 2.484, 2 + 2.484), abs=1e-3)


def test_interval_of_two_values():
    # [10, 14]: mean 12, s^2 = (4 + 4) / 1 = 8, s = 2.828; t(0.975, 1) = 12.706; half 12.706 * 2.828 / sqrt(2) = 25.41
    iv = interval([10.0, 14.0])
    assert iv.sd == pytest.approx(math.sqrt(8))
    assert iv.half_width == pytest.approx(25.41, abs=1e-2)


def test_a_seed_that_did_not_reach_is_left_out_and_counted():
    # the NaN (not reached) is not a value: the interval is that of [1, 2, 3], and 3 of 4 measured it
    iv = interval([1.0, np.nan, 2.0, 3.0])
    assert (iv.n, iv.of, iv.mean) == (3, 4, 2.0)
    assert iv.half_width == pytest.approx(2.484, abs=1e-3)


def test_one_value_has_a_mean_and_no_interval_and_none_has_neither():
    one = interval([5.0, np.nan])
    assert (one.n, one.of, one.mean) == (1, 2, 5.0) and math.isnan(one.sd) and math.isnan(one.low)
    none = interval([np.nan, np.nan])
    assert (none.n, none.of) == (0, 2) and math.isnan(none.mean)


def test_welch_equal_variances_holds():
    # a = [4, 5, 6], b = [1, 2, 3]: diff 3; s_a^2 = s_b^2 = 1; se^2 = 1/3 + 1/3 = 2/3, se = 0.8165;
    # df = (2/3)^2 / ((1/3)^2 / 2 + (1/3)^2 / 2) = (4/9) / (1/9) = 4; t(0.975, 4) = 2.776;
    # half 2.776 * 0.8165 = 2.267: [0.733, 5.267] excludes zero
    d = welch([4, 5, 6], [1, 2, 3])
    assert d.diff == 3.0 and d.df == pytest.approx(4.0)
    assert (d.low, d.high) == pytest.approx((0.733, 5.267), abs=1e-3)
    assert d.holds


def test_welch_overlapping_groups_do_not_hold():
    # a = [2, 3, 4], b = [1, 2, 3]: diff 1, the same se and df: [1 - 2.267, 1 + 2.267] holds zero
    d = welch([2, 3, 4], [1, 2, 3])
    assert (d.low, d.high) == pytest.approx((-1.267, 3.267), abs=1e-3)
    assert not d.holds
    assert welch([1, 2, 3], [4, 5, 6]).holds  # a difference below zero holds too


def test_welch_unequal_variances():
    # a = [1, 2, 3]: mean 2, s^2 = 1; b = [0, 4, 8]: mean 4, s^2 = (16 + 0 + 16) / 2 = 16
    # se^2 = 1/3 + 16/3 = 17/3, se = 2.3805; df = (17/3)^2 / ((1/3)^2/2 + (16/3)^2/2) = 578/257 = 2.249
    # (a pooled t would take 4); t(0.975, 2.249) = 3.877; half 3.877 * 2.3805 = 9.229: [-11.229, 7.229]
    d = welch([1, 2, 3], [0, 4, 8])
    assert d.diff == -2.0 and d.df == pytest.approx(578 / 257)
    assert (d.low, d.high) == pytest.approx((-11.229, 7.229), abs=1e-3)
    assert not d.holds


def test_welch_needs_two_values_on_each_side():
    d = welch([1.0, np.nan], [3.0, 4.0, 5.0])
    assert d.diff == -3.0 and math.isnan(d.low) and not d.holds


def test_interval_table_groups_in_order_of_appearance():
    rows = pd.DataFrame({"strategy": ["b", "a", "b", "a", "b"], "loss": [1.0, 5.0, 2.0, 7.0, 3.0],
                         "time": [np.nan, 10.0, 20.0, 12.0, np.nan]})
    table = interval_table(rows, ["strategy"], ["loss", "time"])
    assert table["strategy"].tolist() == ["b", "a"] and table["seeds"].tolist() == [3, 2]
    b, a = table.iloc[0], table.iloc[1]
    assert (b["loss_mean"], b["loss_n"]) == (2.0, 3) and b["loss_high"] == pytest.approx(4.484, abs=1e-3)
    # a: [5, 7], mean 6, s = 1.414, half 12.706 * 1.414 / sqrt(2) = 12.706
    assert a["loss_mean"] == 6.0 and a["loss_low"] == pytest.approx(6 - 12.706, abs=1e-3)
    assert b["time_n"] == 1 and b["time_mean"] == 20.0 and math.isnan(b["time_low"])
    whole = interval_table(rows, [], ["loss"])
    assert whole["seeds"].tolist() == [5] and whole["loss_mean"][0] == 3.6


def test_curve_band_on_the_range_every_curve_covers():
    # y = x on [0, 4] and y = x + 2 on [1, 5], both sampled at their own x: common range [1, 4], grid the x
    # values of either curve in it; at each point the two values are x and x + 2: mean x + 1, s = sqrt(2),
    # half 12.706 * sqrt(2) / sqrt(2) = 12.706
    band = curve_band([(np.array([0.0, 2.0, 4.0]), np.array([0.0, 2.0, 4.0])),
                       (np.array([1.0, 3.0, 5.0]), np.array([3.0, 5.0, 7.0]))])
    assert band.n == 2 and band.x.tolist() == [1.0, 2.0, 3.0, 4.0]
    assert band.mean.tolist() == pytest.approx([2.0, 3.0, 4.0, 5.0])
    assert (band.high - band.mean).tolist() == pytest.approx([12.706] * 4, abs=1e-3)
    assert curve_band([(np.array([0.0, 1.0]), np.array([1.0, 1.0]))]) is None  # one curve: no band
    assert curve_band([(np.array([0.0, 1.0]), np.array([1.0, 1.0])),
                       (np.array([2.0, 3.0]), np.array([1.0, 1.0]))]) is None  # no common range
