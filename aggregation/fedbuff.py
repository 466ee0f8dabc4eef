"""FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation", AISTATS 2022).

Clients train asynchronously, at most `concurrency` at once. The server buffers arriving deltas and, once
it holds K = `buffer_size`, applies their staleness-weighted mean with a server learning rate:

    x <- x + eta * (1/K) sum_k s(t - tau_k) delta_k,   s(t - tau) = 1 / sqrt(1 + t - tau)   (default)

Updates staler than `max_staleness` versions are dropped on arrival (0: no limit).

Client duties: none beyond local training from the version it downloaded.
"""

from __future__ import annotations

import torch

from aggregation.base import ClientUpdate, Strategy, stack_deltas
from aggregation.registry import register_strategy
from aggregation.staleness import check_staleness, staleness_weight


class FedBuff(Strategy):
    name = "fedbuff"
    asynchronous = True

    def __init__(self, buffer_size: int = 10, server_lr: float = 1.0, concurrency: int = 0,
                 staleness: str = "polynomial", staleness_a: float = 0.5, staleness_b: float = 4.0,
                 max_staleness: int = 0):
        if buffer_size < 1:
            raise ValueError(f"buffer_size: must be >= 1, got {buffer_size}")
        if server_lr <= 0:
            raise ValueError(f"server_lr: must be > 0, got {server_lr}")
        if concurrency < 0 or max_staleness < 0:
            raise ValueError("concurrency and max_staleness must be >= 0 (0: the run's selection / no limit)")
        check_staleness(staleness, staleness_a, staleness_b)
        self.k, self.eta = buffer_size, server_lr
        self.function, self.a, self.b = staleness, staleness_a, staleness_b
        self.concurrency = concurrency or None
        self.max_staleness = max_staleness or None

    def ready(self, buffered: int) -> bool:
        return buffered >= self.k

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        deltas, _ = stack_deltas(updates)
        s = staleness_weight(self.function, torch.tensor([u.staleness(version) for u in updates]), self.a, self.b)
        return global_adapter + self.eta * (s.to(deltas.dtype) @ deltas) / len(updates)


register_strategy("fedbuff", FedBuff)
