"""HetLoRA: heterogeneous ranks by zero-padding and norm-weighted averaging (Cho et al., "Heterogeneous
LoRA for Federated Fine-tuning of On-Device Foundation Models", EMNLP 2024).

Client k of rank r_k <= r_max trains the first r_k components of the global adapter (rows of A, columns of
B); its adapter x_k = trunc_{r_k}(x_t + delta_k) is zero-padded back to r_max. The server weighs clients by
the size of what they learned, not by their data:

    w_k = ||B_k A_k||_F / sum_j ||B_j A_j||_F,   ||B_k A_k||_F = sqrt(sum_m ||B_k^m A_k^m||_F^2)  (all modules)
    x_{t+1} = x_t + eta (sum_k w_k pad(x_k) - x_t)                (eta = server_lr; eta = 1: sum_k w_k pad(x_k))

The weights apply to every entry, non-LoRA ones included. If every client product is zero (no client has
moved B off zero) the norms carry no information and the sample weights p_k = n_k / sum_j n_j are used.
Components beyond a client's rank count as zeros in the mean, so components only high-rank clients train
are shrunk toward zero, as in the paper. The paper's rank self-pruning (clients dropping their weakest
components over rounds) is not implemented: ranks are the ones the fleet assigns.

Client duties: train the first r_k components of the global adapter (the trainer's truncation) and send the
zero-padded delta.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aggregation.base import ClientUpdate, Strategy, stack_deltas
from aggregation.lora_math import client_adapters, frobenius_norms
from aggregation.registry import param, register_strategy


@dataclass(frozen=True)
class HetLoRAConfig:
    server_lr: float = param(1.0, "server learning rate eta toward the norm-weighted mean of the padded adapters")

    def __post_init__(self) -> None:
        if not self.server_lr > 0:
            raise ValueError(f"server_lr must be positive, got {self.server_lr}")


@register_strategy
class HetLoRA(Strategy):
    name = "hetlora"
    config_class = HetLoRAConfig

    def weights(self, adapters: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        """(K,) w_k from the (K, P) zero-padded client adapters; p_k if every product is zero. float64."""
        norms = frobenius_norms(self.layout, adapters)
        total = norms.sum()
        return norms / total if total > 0 else p.double()

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        _, p = stack_deltas(updates)
        x = client_adapters(self.layout, global_adapter, updates)
        mean = (self.weights(x, p) @ x.double()).float()
        return global_adapter + self.config.server_lr * (mean - global_adapter)
