"""Krum and Multi-Krum (Blanchard et al., "Machine Learning with Adversaries: Byzantine Tolerant Gradient
Descent", NeurIPS 2017).

With n client deltas Delta_k = x_k - x_t, of which at most f may be Byzantine (n > 2f + 2):

    s(k)    = sum_{j in N_k} ||Delta_k - Delta_j||^2     N_k: the n - f - 2 deltas nearest to Delta_k (j != k)
    Krum:       x_{t+1} = x_t + Delta_{k*},  k* = argmin_k s(k)
    Multi-Krum: x_{t+1} = x_t + 1/m sum_{k in M} Delta_k,  M: the m deltas of lowest score

Multi-Krum averages plainly, as in the paper (sample counts are client claims an attacker would inflate);
m = 0 means m = n - f, and m is capped at n - f so that at least f updates are always left out. Ties in the
score go to the lower client index (updates arrive sorted by client). `metrics()` reports "rejected",
the updates not used.

Distances come from the Gram matrix in float64, ||a||^2 + ||b||^2 - 2 a.b, which needs (n x n) memory
instead of the (n x n x P) of pairwise differences.

Client duties: none beyond local training from the global adapter.
"""

from __future__ import annotations

import torch

from aggregation.base import AggregationError, ClientUpdate, Strategy, StrategyContext, stack_deltas
from aggregation.registry import register_strategy


def krum_scores(deltas: torch.Tensor, f: int) -> torch.Tensor:
    """(n,) Krum scores of the rows of (n, P) deltas, in float64."""
    n = deltas.shape[0]
    if n <= 2 * f + 2:
        raise AggregationError(f"krum needs n > 2f + 2 updates, got n = {n} with f = {f}")
    x = deltas.to(torch.float64)
    sq = (x * x).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2 * (x @ x.T)).clamp_min(0)
    # a client's distance to itself must not count among its neighbours
    d2.fill_diagonal_(float("inf"))
    nearest = d2.sort(dim=1).values[:, : n - f - 2]
    return nearest.sum(dim=1)


def _check_f(strategy: str, f: int) -> None:
    if isinstance(f, bool) or not isinstance(f, int) or f < 0:
        raise ValueError(f"{strategy}: f (the assumed number of attackers) must be an integer >= 0, got {f!r}")


class Krum(Strategy):
    name = "krum"

    def __init__(self, f: int = 1):
        _check_f(self.name, f)
        self.f = f
        self.min_updates = 2 * f + 3  # Krum needs n > 2f + 2
        self.rejected = 0

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.rejected = 0

    def _select(self, deltas: torch.Tensor, m: int) -> torch.Tensor:
        """Indices of the m lowest-scoring deltas; records the rest as rejected."""
        scores = krum_scores(deltas, self.f)
        chosen = torch.argsort(scores, stable=True)[:m]
        self.rejected = deltas.shape[0] - m
        return chosen

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        deltas, _ = stack_deltas(updates)
        return global_adapter + deltas[self._select(deltas, 1)[0]]

    def metrics(self) -> dict[str, float]:
        return {"rejected": float(self.rejected)}


class MultiKrum(Krum):
    name = "multikrum"

    def __init__(self, f: int = 1, m: int = 0):
        super().__init__(f)
        if isinstance(m, bool) or not isinstance(m, int) or m < 0:
            raise ValueError(f"multikrum: m (updates averaged; 0 = n - f) must be an integer >= 0, got {m!r}")
        self.m = m

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        deltas, _ = stack_deltas(updates)
        n = deltas.shape[0]
        m = n - self.f if self.m == 0 else min(self.m, n - self.f)
        return global_adapter + deltas[self._select(deltas, m)].mean(dim=0)


register_strategy("krum", Krum)
register_strategy("multikrum", MultiKrum)
