"""Pure LoRA algebra over flat adapters, shared by the rank-aware rules (FLoRA, HetLoRA, FlexLoRA).

For every adapted module m the flat adapter holds A^m (r_max x d_in) and B^m (d_out x r_max); the model's
weight is W^m + s B^m A^m with one scaling s = alpha / r_max for every client. A client of rank r_k < r_max
has only the first r_k rows of A and columns of B (the rest are absent on its device), so its adapter is

    x_k = trunc_{r_k}(x_t + delta_k)        (entries in layout.beyond_rank(r_k) set to 0)

and, being a truncation of the same module, its product B_k A_k is comparable to any other client's.
Products are computed in float64 and returned without the scaling (product units).
"""

from __future__ import annotations

import torch

from aggregation.base import AggregationError, ClientUpdate
from aggregation.layout import AdapterLayout


def client_rank(layout: AdapterLayout, rank: int | None) -> int:
    """r_k: the rank a client trained at, None meaning the full rank r_max; ranks above r_max are r_max
    (as the trainer treats them)."""
    if rank is None:
        return layout.rank
    if rank < 1:
        raise AggregationError(f"a client update has rank {rank}; ranks are at least 1")
    return min(rank, layout.rank)


def client_adapter(
    layout: AdapterLayout, global_adapter: torch.Tensor, delta: torch.Tensor, rank: int | None
) -> torch.Tensor:
    """x_k = x_t + delta_k with the components beyond r_k zeroed: the adapter the client ended with, zero-
    padded to r_max. The global's components beyond r_k were never part of the client's model."""
    if delta.shape != global_adapter.shape:
        raise AggregationError(
            f"a client delta has shape {tuple(delta.shape)}, the global adapter {tuple(global_adapter.shape)}"
        )
    x = global_adapter + delta
    r = client_rank(layout, rank)
    if r < layout.rank:
        x = x.masked_fill(layout.beyond_rank(r), 0.0)
    return x


def client_adapters(layout: AdapterLayout, global_adapter: torch.Tensor, updates: list[ClientUpdate]) -> torch.Tensor:
    """(K, P) zero-padded client adapters x_k, in the order of `updates`."""
    return torch.stack([client_adapter(layout, global_adapter, u.delta, u.rank) for u in updates])


def weighted_products(layout: AdapterLayout, adapters: torch.Tensor, w: torch.Tensor) -> list[torch.Tensor]:
    """sum_k w_k B_k A_k per adapted module (float64, d_out x d_in), from (K, P) adapters and (K,) weights."""
    x = adapters.double()
    w = w.double()
    return [torch.einsum("k,kor,kri->oi", w, p.b.view(x), p.a.view(x)) for p in layout.pairs]


def frobenius_norms(layout: AdapterLayout, adapters: torch.Tensor) -> torch.Tensor:
    """(K,) ||B_k A_k||_F over the whole adapter: sqrt(sum_m ||B_k^m A_k^m||_F^2), float64."""
    x = adapters.double()
    squares = torch.zeros(x.shape[0], dtype=torch.float64)
    for p in layout.pairs:
        squares += (p.b.view(x) @ p.a.view(x)).square().sum(dim=(-2, -1))
    return squares.sqrt()


def stacked_factors(
    layout: AdapterLayout, adapters: torch.Tensor, p: torch.Tensor, ranks: list[int]
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """FLoRA's stacking per module: A = concat_rows(p_k A_k[:r_k]) (sum r_k x d_in) and
    B = concat_cols(B_k[:, :r_k]) (d_out x sum r_k), so that B A = sum_k p_k B_k A_k. float64."""
    x = adapters.double()
    p = p.double()
    out = []
    for pair in layout.pairs:
        a, b = pair.a.view(x), pair.b.view(x)
        a_stack = torch.cat([p[k] * a[k, :r] for k, r in enumerate(ranks)], dim=0)
        b_stack = torch.cat([b[k, :, :r] for k, r in enumerate(ranks)], dim=1)
        out.append((a_stack, b_stack))
    return out


def svd_factors(dw: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank-`rank` factors of a dense dW = U S V^T: A = sqrt(S_r) V_r^T (rank x d_in), B = U_r sqrt(S_r)
    (d_out x rank), components in decreasing singular value, so the first j of them are the best rank-j
    approximation of dW (Eckart-Young). Zero-padded when min(d_out, d_in) < rank. float64."""
    u, s, vh = torch.linalg.svd(dw.double(), full_matrices=False)
    j = min(rank, s.numel())
    root = s[:j].sqrt()
    a = torch.zeros(rank, dw.shape[1], dtype=torch.float64)
    b = torch.zeros(dw.shape[0], rank, dtype=torch.float64)
    a[:j] = root[:, None] * vh[:j]
    b[:, :j] = u[:, :j] * root[None, :]
    return a, b


def with_factors(
    layout: AdapterLayout, adapter: torch.Tensor, factors: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor:
    """A copy of `adapter` (P,) with each module's (A, B) replaced by `factors` (layout.pairs order)."""
    out = adapter.clone()
    for pair, (a, b) in zip(layout.pairs, factors, strict=True):
        pair.a.view(out).copy_(a)
        pair.b.view(out).copy_(b)
    return out


def lora_mask(layout: AdapterLayout) -> torch.Tensor:
    """(P,) bool: the LoRA A and B entries of adapted modules (the rest: bottleneck adapters and the like)."""
    out = torch.zeros(layout.size, dtype=torch.bool)
    for pair in layout.pairs:
        pair.a.view(out).fill_(True)
        pair.b.view(out).fill_(True)
    return out


def dense_size(layout: AdapterLayout) -> int:
    """Values of the dense per-module products, concatenated (the length of a strategy's base_delta)."""
    return sum(d_out * d_in for d_out, d_in in layout.dense_shapes())


def flatten_dense(matrices: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate dense (d_out x d_in) matrices, row-major, in layout.pairs order."""
    if not matrices:
        return torch.zeros(0)
    return torch.cat([m.reshape(-1) for m in matrices])


def average_shared(
    global_adapter: torch.Tensor, deltas: torch.Tensor, p: torch.Tensor, shared: torch.Tensor
) -> torch.Tensor:
    """FedAvg restricted to the shared entries (FFA-LoRA: B; FedSA-LoRA: A): x_t + sum_k p_k delta_k there,
    x_t elsewhere, so frozen and personal entries keep the server's value whatever a client sent."""
    return torch.where(shared, global_adapter + p @ deltas, global_adapter)
