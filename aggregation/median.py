"""Coordinate-wise median (Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal Statistical
Rates", ICML 2018).

Rule: x_{t+1} = x_t + med_k (x_k - x_t), the median taken per coordinate over the K client deltas,
unweighted (n_k plays no part: a weight would let one client claim a large n_k and win). For even K the
median is the mean of the two middle values, so it does not lean toward the lower one.

Up to ceil(K/2) - 1 arbitrary (Byzantine) updates cannot push a coordinate outside the range of the honest
values. The median of A and of B separately is not the median of the products B A, the same aggregation
noise as FedIT's averaging.

Client duties: none beyond local training from the global adapter.
"""

from __future__ import annotations

import torch

from aggregation.base import ClientUpdate, Strategy, stack_deltas
from aggregation.registry import register_strategy


def coordinate_median(deltas: torch.Tensor) -> torch.Tensor:
    """(P,) median over the rows of (K, P), averaging the two middle values when K is even."""
    k = deltas.shape[0]
    s = deltas.sort(dim=0).values
    if k % 2:
        return s[k // 2]
    return (s[k // 2 - 1] + s[k // 2]) / 2


@register_strategy
class Median(Strategy):
    name = "median"

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        deltas, _ = stack_deltas(updates)
        return global_adapter + coordinate_median(deltas)

