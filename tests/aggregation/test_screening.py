"""The update screen on hand-computed cohorts."""

import math

import pytest
import torch

from aggregation.screening import screen_updates


def vec(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_nan_and_inf_are_rejected_whatever_the_cohort_size():
    s = screen_updates([vec(1.0, float("nan")), vec(0.0, 1.0), vec(float("-inf"), 0.0)])
    assert s.nonfinite == (0, 2) and s.too_large == () and s.accepted == (1,)
    assert s.median_norm == 1.0  # of the one finite update
    assert [s.verdict(i) for i in range(3)] == ["nonfinite", "accepted", "nonfinite"]


def test_norm_above_factor_times_median_is_rejected():
    # norms 3-4-5: 5, 1, 2, 100; median of four = (2 + 5) / 2 = 3.5, so the cut at factor 10 is 35
    deltas = [vec(3.0, 4.0), vec(1.0, 0.0), vec(0.0, 2.0), vec(60.0, 80.0)]
    s = screen_updates(deltas, norm_factor=10.0)
    assert s.median_norm == pytest.approx(3.5)
    assert s.too_large == (3,) and s.accepted == (0, 1, 2)
    # at factor 1.5 (cut 5.25) the 5 stays, only the 100 goes
    assert screen_updates(deltas, norm_factor=1.5).too_large == (3,)
    # at factor 1.2 (cut 4.2) the 5 goes too
    assert screen_updates(deltas, norm_factor=1.2).too_large == (0, 3)


def test_the_median_ignores_the_outliers_size():
    honest = [vec(1.0, 0.0), vec(0.0, 2.0), vec(3.0, 0.0)]  # norms 1, 2, 3
    for size in (1e2, 1e6, 1e30):
        s = screen_updates(honest + [vec(size, 0.0)], norm_factor=10.0)
        assert s.median_norm == pytest.approx(2.5)  # (2 + 3) / 2, whatever the outlier's size
        assert s.too_large == (3,)


def test_nonfinite_updates_do_not_count_towards_the_median():
    # finite norms 1, 1, 1, 50: median 1; the NaN one is neither judged nor counted
    deltas = [vec(1.0), vec(float("nan")), vec(1.0), vec(1.0), vec(50.0)]
    s = screen_updates(deltas, norm_factor=10.0)
    assert s.median_norm == 1.0 and s.nonfinite == (1,) and s.too_large == (4,) and s.accepted == (0, 2, 3)


@pytest.mark.parametrize("n", [1, 2])
def test_one_or_two_updates_cannot_judge_norms(n):
    deltas = [vec(1.0), vec(1e9)][:n] if n == 2 else [vec(1e9)]
    s = screen_updates(deltas, norm_factor=10.0)
    assert s.too_large == () and s.accepted == tuple(range(n))


def test_two_finite_among_three_cannot_judge_either():
    s = screen_updates([vec(1.0), vec(1e9), vec(float("inf"))], norm_factor=10.0)
    assert s.nonfinite == (2,) and s.too_large == () and s.accepted == (0, 1)


def test_zero_median_gives_no_scale():
    s = screen_updates([vec(0.0), vec(0.0), vec(0.0), vec(5.0)], norm_factor=10.0)
    assert s.median_norm == 0.0 and s.accepted == (0, 1, 2, 3)


def test_off_keeps_every_finite_update():
    s = screen_updates([vec(1.0), vec(1.0), vec(1.0), vec(1e9), vec(float("nan"))], norm_factor=None)
    assert s.accepted == (0, 1, 2, 3) and s.nonfinite == (4,)


def test_huge_finite_entries_are_judged_by_norm_not_overflow():
    # float32 squares of 1e20 overflow; the norm is taken in float64, so this is a finite, too large update
    s = screen_updates([vec(1.0), vec(1.0), vec(1.0), vec(1e20, 1e20)], norm_factor=10.0)
    assert s.nonfinite == () and s.too_large == (3,)


def test_empty_cohort():
    s = screen_updates([])
    assert s.accepted == () and math.isnan(s.median_norm)


@pytest.mark.parametrize("factor", [1.0, 0.5, -3.0])
def test_factor_must_exceed_one(factor):
    with pytest.raises(ValueError, match="norm_factor"):
        screen_updates([vec(1.0)], norm_factor=factor)
