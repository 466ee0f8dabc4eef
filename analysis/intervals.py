"""How much of a difference is seed noise: the mean of a figure over seeds, its sample standard deviation and
the 95% confidence interval of the mean (Student t with n - 1 degrees of freedom), and the 95% Welch interval
of the difference of two such means.

A figure a seed did not measure is NaN: a target that seed never reached, a trial that failed. Such values
are left out, not counted as zero or as the run's end: the interval is over the seeds that measured the
figure, and `Interval.n` against `Interval.of` says how many did (shown as "reached k of n").

    interval([1, 2, 3])                 mean 2, sd 1, 2 +- t(0.975, 2) / sqrt(3) = 2 +- 2.484
    welch([4, 5, 6], [1, 2, 3]).holds   True: the interval of 5 - 2 excludes zero
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

LEVEL = 0.95
NAN = math.nan


@dataclass(frozen=True)
class Interval:
    """Mean of the measured values and its confidence interval [low, high]; NaN bounds with fewer than two
    values (one value says nothing about the spread)."""

    n: int  # values measured (finite)
    of: int  # values given, NaN included
    mean: float
    sd: float  # sample standard deviation (n - 1 in the denominator)
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class Difference:
    """mean(a) - mean(b) and its Welch confidence interval; `holds` when the interval excludes zero."""

    a: Interval
    b: Interval
    diff: float
    low: float
    high: float
    df: float  # Welch-Satterthwaite degrees of freedom

    @property
    def holds(self) -> bool:
        return self.low > 0 or self.high < 0


def t_quantile(df: float, level: float = LEVEL) -> float:
    """The two-sided Student t quantile: t(0.975, df) for a 95% interval."""
    return float(stats.t.ppf(0.5 + level / 2, df))


def measured(values) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).ravel()
    return v[np.isfinite(v)]


def interval(values, level: float = LEVEL) -> Interval:
    """Mean, sample standard deviation and confidence interval of the finite `values` (NaN: not measured)."""
    of = np.asarray(values, dtype=np.float64).size
    v = measured(values)
    n = v.size
    if n == 0:
        return Interval(0, of, NAN, NAN, NAN, NAN)
    mean = float(v.mean())
    if n == 1:
        return Interval(1, of, mean, NAN, NAN, NAN)
    sd = float(v.std(ddof=1))
    half = t_quantile(n - 1, level) * sd / math.sqrt(n)
    return Interval(n, of, mean, sd, mean - half, mean + half)


def welch(a, b, level: float = LEVEL) -> Difference:
    """The confidence interval of mean(a) - mean(b) without assuming equal variances (Welch): standard error
    sqrt(s_a^2/n_a + s_b^2/n_b), degrees of freedom by Welch-Satterthwaite. NaN values are left out of each
    group; with fewer than two values in either the interval is NaN and nothing holds."""
    ia, ib = interval(a, level), interval(b, level)
    diff = ia.mean - ib.mean
    if ia.n < 2 or ib.n < 2:
        return Difference(ia, ib, diff, NAN, NAN, NAN)
    va, vb = ia.sd ** 2 / ia.n, ib.sd ** 2 / ib.n
    se = math.sqrt(va + vb)
    if se == 0:  # every seed of both groups gave the same value: no spread to widen the interval
        return Difference(ia, ib, diff, diff, diff, NAN)
    df = (va + vb) ** 2 / (va ** 2 / (ia.n - 1) + vb ** 2 / (ib.n - 1))
    half = t_quantile(df, level) * se
    return Difference(ia, ib, diff, diff - half, diff + half, df)


def interval_table(rows: pd.DataFrame, by: list[str], columns: list[str]) -> pd.DataFrame:
    """One row per group of `rows` (grouped by the `by` columns, in order of first appearance; no columns: one
    group): `seeds`, the rows in the group, and per column C: C_n (rows that measured it), C_mean, C_sd,
    C_low, C_high."""
    out = []
    for key, group in rows.groupby(by, sort=False, dropna=False) if by else [((), rows)]:
        row = dict(zip(by, key if isinstance(key, tuple) else (key,)))
        row["seeds"] = len(group)
        for column in columns:
            iv = interval(group[column])
            row |= {f"{column}_n": iv.n, f"{column}_mean": iv.mean, f"{column}_sd": iv.sd,
                    f"{column}_low": iv.low, f"{column}_high": iv.high}
        out.append(row)
    return pd.DataFrame(out)


@dataclass(frozen=True)
class Band:
    """Pointwise mean and confidence interval of several curves y(x) over a common grid."""

    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int  # curves


def curve_band(curves: list[tuple[np.ndarray, np.ndarray]], points: int = 200,
               level: float = LEVEL) -> Band | None:
    """Each curve (x ascending, y) interpolated linearly onto one grid: every curve's x values within the
    range all curves cover (where one curve has no value, the others would be averaged over a moving set of
    seeds), evenly thinned to at most `points`. None for fewer than two curves or no common range."""
    curves = [(np.asarray(x, np.float64), np.asarray(y, np.float64)) for x, y in curves if len(x)]
    if len(curves) < 2:
        return None
    lo, hi = max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves)
    if lo > hi:
        return None
    grid = np.unique(np.concatenate([x[(x >= lo) & (x <= hi)] for x, _ in curves]))
    if len(grid) > points:
        grid = grid[np.linspace(0, len(grid) - 1, points).round().astype(int)]
    ys = np.array([np.interp(grid, x, y) for x, y in curves])  # (curves, grid points)
    n = len(curves)
    mean = ys.mean(axis=0)
    half = t_quantile(n - 1, level) * ys.std(axis=0, ddof=1) / math.sqrt(n)
    return Band(grid, mean, mean - half, mean + half, n)
