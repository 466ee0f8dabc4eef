"""FedAvgM: FedAvg with server momentum (Hsu, Qi and Brown, "Measuring the Effects of Non-Identical Data
Distribution for Federated Visual Classification", arXiv 1909.06335, 2019).

Rule, with p_k = n_k / sum_j n_j and m_0 = 0:

    D_t     = sum_k p_k (x_k - x_t)          (pseudo-gradient, pointing downhill)
    m_t     = beta * m_{t-1} + D_t
    x_{t+1} = x_t + eta * m_t

beta = momentum, eta = server_lr. With beta = 0 it is FedAvg. Momentum lives on the server (reset by
`setup`), so the clients run plain local training.

Client duties: none beyond local training from the global adapter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from aggregation.base import AggregationError, ClientUpdate, Strategy, StrategyContext, stack_deltas
from aggregation.registry import param, register_strategy


@dataclass(frozen=True)
class FedAvgMConfig:
    server_lr: float = param(1.0, "server learning rate eta, applied to the momentum")
    momentum: float = param(0.9, "server momentum beta in [0, 1); 0: FedAvg")

    def __post_init__(self) -> None:
        if not math.isfinite(self.server_lr) or self.server_lr <= 0:
            raise ValueError(f"fedavgm: server_lr must be a finite number > 0, got {self.server_lr!r}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"fedavgm: momentum must lie in [0, 1), got {self.momentum!r}")


@register_strategy
class FedAvgM(Strategy):
    name = "fedavgm"
    config_class = FedAvgMConfig
    state_attrs = ("m_t",)

    def __init__(self, config: FedAvgMConfig | None = None):
        super().__init__(config)
        self.m_t: torch.Tensor | None = None

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.m_t = None

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        deltas, p = stack_deltas(updates)
        delta_t = p @ deltas
        if self.m_t is None:
            self.m_t = torch.zeros_like(delta_t)
        elif self.m_t.shape != delta_t.shape:
            shapes = f"{tuple(self.m_t.shape)}, updates {tuple(delta_t.shape)}"
            raise AggregationError(f"fedavgm: momentum has shape {shapes}")
        self.m_t = self.config.momentum * self.m_t + delta_t
        return global_adapter + self.config.server_lr * self.m_t
