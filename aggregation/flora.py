"""FLoRA: stacking client adapters of any rank (Wang et al., "FLoRA: Federated Fine-Tuning Large Language
Models with Heterogeneous Low-Rank Adaptations", NeurIPS 2024).

Rule, per adapted module, with x_k = trunc_{r_k}(x_t + delta_k) the adapter client k ended with and
p_k = n_k / sum_j n_j:

    A = concat_rows(p_1 A_1, ..., p_K A_K)   (sum_k r_k x d_in)
    B = concat_cols(B_1, ..., B_K)           (d_out x sum_k r_k)      so  B A = sum_k p_k B_k A_k  exactly.

The stacked product is merged into the frozen base and the next round starts from a fresh LoRA (A_0, B_0):

    D_{t+1} = D_t + sum_k p_k B_k A_k - B_0 A_0,    x_{t+1} = (A_0, B_0 = 0)

where D (`self.base_delta`) is the dense merged weight in product units, per module in layout.pairs order,
row-major (d_out x d_in), float32. Client k trained W + s (D_t + B_k A_k) (s = alpha / r_max, the same for
every rank), so its adapter already carries the global adapter it started from: nothing of x_t is
subtracted. The server's model after the step, W + s (D_{t+1} + B_0 A_0) = W + s (D_t + sum_k p_k B_k A_k),
is the p-weighted mean of the client models, for any mix of ranks. B_0 = 0, so B_0 A_0 = 0; the term is
written for the case of a nonzero fresh B.

A_0 is the A of the first global adapter `aggregate` sees (the run's initial LoRA): every round restarts
from it, so it does not depend on a random stream. Entries that are not LoRA factors (bottleneck
adapters) cannot be stacked; they take the FedAvg step x_t + sum_k p_k delta_k.

Client duties: train W + s (D + B A), i.e. add s * base_delta to each adapted module's frozen weight before
training and evaluating (the emulator reads `base_delta` after every step). In the deployed protocol each
client downloads the stacked factors and merges s B A itself; `download_values()` counts them:
sum_m (sum_k r_k)(d_in + d_out) plus the non-LoRA entries. A client that skipped rounds would need every
missed stack; the emulator ships D instead and this count does not include that catch-up.
"""

from __future__ import annotations

import torch

from aggregation.base import ClientUpdate, Strategy, StrategyContext, stack_deltas
from aggregation.lora_math import (
    client_adapters,
    client_rank,
    dense_size,
    flatten_dense,
    lora_mask,
    stacked_factors,
)
from aggregation.registry import register_strategy


@register_strategy
class FLoRA(Strategy):
    name = "flora"
    state_attrs = ("base_delta", "initial_adapter", "_download")

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.base_delta = torch.zeros(dense_size(context.layout))
        self.initial_adapter: torch.Tensor | None = None  # holds A_0
        self._download = context.layout.size

    def download_values(self) -> int:
        return self._download

    def fresh_adapter(self, global_adapter: torch.Tensor) -> torch.Tensor:
        """(A_0, B_0 = 0) on the LoRA entries; `global_adapter` elsewhere."""
        out = global_adapter.clone()
        for pair in self.layout.pairs:
            pair.a.view(out).copy_(pair.a.view(self.initial_adapter))
            pair.b.view(out).zero_()
        return out

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        layout = self.layout
        if self.initial_adapter is None:
            self.initial_adapter = global_adapter.detach().clone()
        deltas, p = stack_deltas(updates)
        ranks = [client_rank(layout, u.rank) for u in updates]
        x = client_adapters(layout, global_adapter, updates)
        stacks = stacked_factors(layout, x, p, ranks)

        # FedAvg on the entries that are not LoRA factors; (A_0, 0) on the ones that are.
        fresh = self.fresh_adapter(torch.where(lora_mask(layout), global_adapter, global_adapter + p @ deltas))
        fresh_products = layout.products(fresh.double())
        merged = [b @ a - bo_ao for (a, b), bo_ao in zip(stacks, fresh_products, strict=True)]
        self.base_delta = (self.base_delta.double() + flatten_dense(merged)).float()

        d_in_out = sum(pair.a.shape[1] + pair.b.shape[0] for pair in layout.pairs)
        self._download = sum(ranks) * d_in_out + int((~lora_mask(layout)).sum())
        return fresh

