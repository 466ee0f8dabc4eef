"""FlexLoRA: aggregate the full-size products, redistribute by SVD (Bai et al., "Federated Fine-tuning of
Large Language Models under Heterogeneous Tasks and Client Resources", NeurIPS 2024).

Rule, per adapted module, with x_k = trunc_{r_k}(x_t + delta_k) and p_k = n_k / sum_j n_j:

    dW = sum_k p_k B_k A_k = U S V^T                  (SVD in float64)
    B_{t+1} = U[:, :r_max] sqrt(S[:r_max]),   A_{t+1} = sqrt(S[:r_max]) V^T[:r_max]

Components are ordered by singular value, so a rank-r_k client that takes the first r_k of them (the
trainer's truncation) starts from B[:, :r_k] A[:r_k] = U_{r_k} S_{r_k} V_{r_k}^T, the best rank-r_k
approximation of dW: exactly FlexLoRA's per-client truncation. The global product equals dW whenever
rank(dW) <= r_max (e.g. sum_k r_k <= r_max, or min(d_out, d_in) <= r_max); otherwise the discarded share
is reported as `truncation_error` = ||dW - B A||_F / ||dW||_F over all modules (0 when dW = 0). Entries
that are not LoRA factors (bottleneck adapters) take the FedAvg step x_t + sum_k p_k delta_k.

Client duties: train the first r_k components of the global adapter (the trainer's truncation) and send the
zero-padded delta. The scaling alpha / r_max is the same for every rank, so products compare across ranks.
"""

from __future__ import annotations

import torch

from aggregation.base import ClientUpdate, Strategy, stack_deltas
from aggregation.lora_math import client_adapters, lora_mask, svd_factors, weighted_products, with_factors
from aggregation.registry import register_strategy


@register_strategy
class FlexLoRA(Strategy):
    name = "flexlora"
    truncation_error: float | None = None  # of the last step

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        layout = self.layout
        deltas, p = stack_deltas(updates)
        dws = weighted_products(layout, client_adapters(layout, global_adapter, updates), p)
        factors = [svd_factors(dw, layout.rank) for dw in dws]

        residual = sum(float((dw - b @ a).square().sum()) for dw, (a, b) in zip(dws, factors))
        energy = sum(float(dw.square().sum()) for dw in dws)
        self.truncation_error = (residual / energy) ** 0.5 if energy > 0 else 0.0

        others = torch.where(lora_mask(layout), global_adapter, global_adapter + p @ deltas)
        return with_factors(layout, others, factors)

    def metrics(self) -> dict[str, float]:
        return {} if self.truncation_error is None else {"truncation_error": self.truncation_error}

