"""FedAsync (Xie et al., "Asynchronous Federated Optimization", OPT 2020 / arXiv 1903.03934).

The server steps at every arrival. A client trained from version tau and returns x_new = x_tau + delta;
at version t the server mixes

    x_{t+1} = (1 - alpha_t) x_t + alpha_t x_new,   alpha_t = alpha * s(t - tau)

with s a staleness function (aggregation/staleness.py). The server keeps the recent global versions that
clients may still be training from; an update whose base version is older than what it kept (more than
`max_staleness` versions, or `history` when that is not set) is dropped on arrival.

Client duties: none beyond local training from the version it downloaded.
"""

from __future__ import annotations

import torch

from aggregation.base import AggregationError, ClientUpdate, Strategy, StrategyContext
from aggregation.registry import register_strategy
from aggregation.staleness import check_staleness, staleness_weight


class FedAsync(Strategy):
    name = "fedasync"
    state_attrs = ("_versions",)
    asynchronous = True

    def __init__(self, alpha: float = 0.6, staleness: str = "polynomial", staleness_a: float = 0.5,
                 staleness_b: float = 4.0, max_staleness: int = 0, concurrency: int = 0, history: int = 64):
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha: must be in (0, 1], got {alpha}")
        check_staleness(staleness, staleness_a, staleness_b)
        if max_staleness < 0 or concurrency < 0 or history < 1:
            raise ValueError("max_staleness and concurrency must be >= 0 (0: no limit / the run's selection), "
                             "history >= 1")
        self.alpha, self.function, self.a, self.b = alpha, staleness, staleness_a, staleness_b
        self.max_staleness = max_staleness or history
        self.concurrency = concurrency or None

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self._versions: dict[int, torch.Tensor] = {}

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        if not updates:
            raise AggregationError("no client update to aggregate")
        self._versions[version] = global_adapter
        x = global_adapter
        for u in updates:  # one at a time, as they would have arrived
            if u.base_version not in self._versions:
                raise AggregationError(f"version {u.base_version} is no longer kept (current {version})")
            a_t = self.alpha * float(staleness_weight(self.function, torch.tensor(u.staleness(version)),
                                                      self.a, self.b))
            x = (1 - a_t) * x + a_t * (self._versions[u.base_version] + u.delta)
        # Keep only the versions an admitted update can still start from.
        self._versions = {v: t for v, t in self._versions.items() if v >= version + 1 - self.max_staleness}
        self._versions[version + 1] = x
        return x


register_strategy("fedasync", FedAsync)
