"""FedNova (Wang et al., "Tackling the Objective Inconsistency Problem in Heterogeneous Federated
Optimization", NeurIPS 2020).

Rule: with tau_k the local steps client k ran (`ClientUpdate.steps`) and p_k = n_k / sum_j n_j,

    d_k     = (x_k - x_t) / tau_k                (normalised update: the mean change per local step)
    tau_eff = sum_k p_k tau_k
    x_{t+1} = x_t + eta * tau_eff * sum_k p_k d_k

FedAvg weights a client by p_k and, implicitly, by how many steps it ran, so clients that run more steps
(faster devices, bigger shards) pull the fixed point toward their own objective. Normalising by tau_k removes
that bias while keeping the overall step size of FedAvg (tau_eff). With equal tau_k it is FedAvg.

The paper's general form divides by ||a_k||_1, the sum of the local aggregation weights; for plain local
SGD ||a_k||_1 = tau_k, which is what this rule uses whatever the local optimiser.

Client duties: report the local optimiser steps actually run in `steps` (partial work included); a client
that ran no step has nothing to normalise and is an `AggregationError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aggregation.base import AggregationError, ClientUpdate, Strategy, stack_deltas
from aggregation.registry import param, register_strategy


@dataclass(frozen=True)
class FedNovaConfig:
    server_lr: float = param(1.0, "server learning rate eta, applied to tau_eff times the normalised mean")

    def __post_init__(self) -> None:
        if not math.isfinite(self.server_lr) or self.server_lr <= 0:
            raise ValueError(f"fednova: server_lr must be a finite number > 0, got {self.server_lr!r}")


@register_strategy
class FedNova(Strategy):
    name = "fednova"
    config_class = FedNovaConfig

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        deltas, p = stack_deltas(updates)
        idle = [u.client for u in updates if u.steps <= 0]
        if idle:
            raise AggregationError(f"fednova: updates from clients {idle} ran no local step (steps <= 0)")
        tau = torch.tensor([u.steps for u in updates], dtype=deltas.dtype)
        d = deltas / tau[:, None]
        tau_eff = p @ tau
        return global_adapter + self.config.server_lr * tau_eff * (p @ d)
