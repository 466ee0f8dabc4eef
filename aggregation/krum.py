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

from dataclasses import dataclass
from typing import ClassVar

import torch

from aggregation.base import AggregationError, ClientUpdate, Strategy, StrategyContext, Traits, stack_deltas
from aggregation.registry import param, register_strategy


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


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@dataclass(frozen=True)
class KrumConfig:
    strategy: ClassVar[str] = "krum"  # for messages
    f: int = param(1, "the assumed number of attackers; a round needs n > 2f + 2 updates")

    def __post_init__(self) -> None:
        if not _is_count(self.f):
            raise ValueError(f"{self.strategy}: f (the assumed number of attackers) must be an integer >= 0, "
                             f"got {self.f!r}")


@dataclass(frozen=True)
class MultiKrumConfig(KrumConfig):
    strategy: ClassVar[str] = "multikrum"
    m: int = param(0, "updates of lowest score averaged, at most n - f; 0: n - f")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not _is_count(self.m):
            raise ValueError(f"multikrum: m (updates averaged; 0 = n - f) must be an integer >= 0, got {self.m!r}")


@register_strategy
class Krum(Strategy):
    name = "krum"
    config_class = KrumConfig

    def __init__(self, config: KrumConfig | None = None):
        super().__init__(config)
        self.rejected = 0

    @property
    def traits(self) -> Traits:
        return Traits(min_updates=2 * self.config.f + 3)  # Krum needs n > 2f + 2

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.rejected = 0

    def _select(self, deltas: torch.Tensor, m: int) -> torch.Tensor:
        """Indices of the m lowest-scoring deltas; records the rest as rejected."""
        scores = krum_scores(deltas, self.config.f)
        chosen = torch.argsort(scores, stable=True)[:m]
        self.rejected = deltas.shape[0] - m
        return chosen

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        deltas, _ = stack_deltas(updates)
        return global_adapter + deltas[self._select(deltas, 1)[0]]

    def metrics(self) -> dict[str, float]:
        return {"rejected": float(self.rejected)}


@register_strategy
class MultiKrum(Krum):
    name = "multikrum"
    config_class = MultiKrumConfig

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        deltas, _ = stack_deltas(updates)
        n, f, m = deltas.shape[0], self.config.f, self.config.m
        m = n - f if m == 0 else min(m, n - f)
        return global_adapter + deltas[self._select(deltas, m)].mean(dim=0)
