"""FedAvg over LoRA tensors (FedIT: Zhang et al., ICASSP 2024; McMahan et al., AISTATS 2017).

Rule: x_{t+1} = x_t + eta * sum_k p_k (x_k - x_t), p_k = n_k / sum_j n_j, where x stacks every LoRA A and
B matrix. With eta = 1 this is the sample-weighted mean of the client adapters. Averaging A and B
separately is not the average of the products B_k A_k; that aggregation noise is part of FedIT.

Client duties: none beyond local training from the global adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aggregation.base import ClientUpdate, Strategy, stack_deltas
from aggregation.registry import param, register_strategy


@dataclass(frozen=True)
class FedAvgConfig:
    server_lr: float = param(1.0, "server learning rate eta; 1: the sample-weighted mean of the client adapters")


@register_strategy
class FedAvg(Strategy):
    name = "fedavg"
    config_class = FedAvgConfig

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        deltas, p = stack_deltas(updates)
        return global_adapter + self.config.server_lr * (p @ deltas)
