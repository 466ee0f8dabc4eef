"""Coordinate-wise trimmed mean (Yin et al., "Byzantine-Robust Distributed Learning: Towards Optimal
Statistical Rates", ICML 2018).

Rule: with K client deltas and b = floor(beta K), per coordinate sort the K values, drop the b largest and
the b smallest, and average the K - 2b left, unweighted:

    x_{t+1} = x_t + 1/(K - 2b) sum_{k in U_j} (x_k - x_t)_j      for every coordinate j

U_j is the set of clients kept at coordinate j (it varies by coordinate). It tolerates up to b Byzantine
updates. When b = 0 (beta K < 1) nothing is trimmed and it is the plain mean; beta < 0.5 keeps at least one
value. Unweighted, as in the paper: sample counts are client claims an attacker would inflate.

Client duties: none beyond local training from the global adapter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aggregation.base import ClientUpdate, Strategy, stack_deltas
from aggregation.registry import param, register_strategy


@dataclass(frozen=True)
class TrimmedMeanConfig:
    beta: float = param(0.2, "share of the values dropped at each end of every coordinate, in [0, 0.5)")

    def __post_init__(self) -> None:
        if not 0 <= self.beta < 0.5:
            raise ValueError(f"trimmed_mean: beta must lie in [0, 0.5), got {self.beta!r}")


@register_strategy
class TrimmedMean(Strategy):
    name = "trimmed_mean"
    config_class = TrimmedMeanConfig

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        deltas, _ = stack_deltas(updates)
        k = deltas.shape[0]
        b = math.floor(self.config.beta * k)
        kept = deltas.sort(dim=0).values[b : k - b]
        return global_adapter + kept.mean(dim=0)
