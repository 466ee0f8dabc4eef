"""FedBuff (Nguyen et al., "Federated Learning with Buffered Asynchronous Aggregation", AISTATS 2022).

Clients train asynchronously, at most `concurrency` at once. The server buffers arriving deltas and, once
it holds K = `buffer_size`, applies their staleness-weighted mean with a server learning rate:

    x <- x + eta * (1/K) sum_k s(t - tau_k) delta_k,   s(t - tau) = 1 / sqrt(1 + t - tau)   (default)

Updates staler than `max_staleness` versions are dropped on arrival (0: no limit).

Client duties: none beyond local training from the version it downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aggregation.base import ClientUpdate, Strategy, Traits, stack_deltas
from aggregation.registry import param, register_strategy
from aggregation.staleness import STALENESS_FUNCTIONS, check_staleness, staleness_weight


@dataclass(frozen=True)
class FedBuffConfig:
    buffer_size: int = param(10, "K: buffered updates that make one server step, >= 1")
    server_lr: float = param(1.0, "server learning rate eta, > 0")
    concurrency: int = param(0, "clients at work at once; 0: run.clients_per_round x run.over_selection")
    staleness: str = param("polynomial", f"staleness function s(t - tau): {', '.join(STALENESS_FUNCTIONS)}")
    staleness_a: float = param(0.5, "exponent a of polynomial, slope a of hinge, >= 0")
    staleness_b: float = param(4.0, "staleness up to which hinge weighs 1, >= 0")
    max_staleness: int = param(0, "updates staler than this many versions are dropped on arrival; 0: no limit")

    def __post_init__(self) -> None:
        if self.buffer_size < 1:
            raise ValueError(f"buffer_size: must be >= 1, got {self.buffer_size}")
        if self.server_lr <= 0:
            raise ValueError(f"server_lr: must be > 0, got {self.server_lr}")
        if self.concurrency < 0 or self.max_staleness < 0:
            raise ValueError("concurrency and max_staleness must be >= 0 (0: the run's selection / no limit)")
        check_staleness(self.staleness, self.staleness_a, self.staleness_b)


@register_strategy
class FedBuff(Strategy):
    name = "fedbuff"
    config_class = FedBuffConfig

    @property
    def traits(self) -> Traits:
        c = self.config
        return Traits(asynchronous=True, concurrency=c.concurrency or None, max_staleness=c.max_staleness or None)

    def ready(self, buffered: int) -> bool:
        return buffered >= self.config.buffer_size

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        c = self.config
        deltas, _ = stack_deltas(updates)
        staleness = torch.tensor([u.staleness(version) for u in updates])
        s = staleness_weight(c.staleness, staleness, c.staleness_a, c.staleness_b)
        return global_adapter + c.server_lr * (s.to(deltas.dtype) @ deltas) / len(updates)
