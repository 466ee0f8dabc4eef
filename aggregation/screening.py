"""Which client updates are fit to aggregate at all: a screen the server runs before any strategy.

An update whose delta holds NaN or Inf (a diverged client, a broken codec, a hostile sender) would turn the
global adapter into NaN under any averaging rule, robust ones included (a median of NaNs is NaN), so it is
rejected outright. An update whose L2 norm is far above its cohort's is rejected too: with plain averaging a
single update a thousand times larger than the others *is* the next global adapter.

Why `norm > factor x median(norms of the finite updates aggregated together)`:
- the median of the cohort's norms is moved by at most the outliers' count, not their size; a mean, or a
  z-score over mean and standard deviation, is dragged up by the very update it should catch (among n
  updates a single outlier never lies more than sqrt(n - 1) standard deviations from their mean, whatever
  its size (Samuelson's inequality): a 3-sigma rule cannot flag anything in a cohort of ten),
- it has no state, so asynchronous servers and resumed runs screen the same way, and it needs no estimate
  of what a "normal" norm is, which changes with the learning rate, the local steps and the rank,
- it only rejects large updates: a small update (fewer local steps, a lower rank) moves the adapter little.
A cohort of fewer than `MIN_COHORT` finite updates cannot judge norms (the median of two is their mean, and
one update has nothing to be compared with), so there only the non-finite check applies; the same holds when
the median norm is zero (no scale to compare with). The median breaks down only when half the cohort or more
is huge, in which case nothing here can tell which half is honest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

MIN_COHORT = 3  # fewest finite updates whose median norm can judge one of them
DEFAULT_NORM_FACTOR = 10.0  # honest LoRA deltas of one cohort differ by a few times at most


@dataclass(frozen=True)
class Screening:
    """The verdict on one batch of updates, in the order given."""

    accepted: tuple[int, ...]  # indices of the updates to aggregate
    nonfinite: tuple[int, ...]  # indices rejected for NaN or Inf entries
    too_large: tuple[int, ...]  # indices rejected for their norm
    median_norm: float  # of the finite updates; NaN when none is finite

    def verdict(self, i: int) -> str:
        """'accepted', 'nonfinite' or 'norm' for the i-th update."""
        if i in self.nonfinite:
            return "nonfinite"
        return "norm" if i in self.too_large else "accepted"


def screen_updates(deltas: list[torch.Tensor], norm_factor: float | None = DEFAULT_NORM_FACTOR) -> Screening:
    """Screen the deltas that would be aggregated together; `norm_factor` None turns the norm screen off."""
    if norm_factor is not None and not norm_factor > 1:
        raise ValueError(f"norm_factor must be above 1 (or None: off), got {norm_factor}")
    finite = [bool(torch.isfinite(d).all()) for d in deltas]
    # float64 norms: a float32 sum of squares overflows to Inf for finite entries above about 1e19
    norms = [float(torch.linalg.vector_norm(d.double())) if ok else math.nan for d, ok in zip(deltas, finite)]
    finite_norms = sorted(n for n in norms if not math.isnan(n))
    median = _median(finite_norms)
    judge = norm_factor is not None and len(finite_norms) >= MIN_COHORT and median > 0
    too_large = tuple(i for i, n in enumerate(norms) if judge and not math.isnan(n) and n > norm_factor * median)
    nonfinite = tuple(i for i, ok in enumerate(finite) if not ok)
    rejected = set(nonfinite) | set(too_large)
    return Screening(tuple(i for i in range(len(deltas)) if i not in rejected), nonfinite, too_large, median)


def _median(values: list[float]) -> float:
    """Median of sorted values (the mean of the middle two for an even count); NaN when empty."""
    n = len(values)
    if n == 0:
        return math.nan
    mid = n // 2
    return values[mid] if n % 2 else 0.5 * (values[mid - 1] + values[mid])
