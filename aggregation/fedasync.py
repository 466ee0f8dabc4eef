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

from dataclasses import dataclass

import torch

from aggregation.base import AggregationError, ClientUpdate, Strategy, StrategyContext, Traits
from aggregation.registry import param, register_strategy
from aggregation.staleness import STALENESS_FUNCTIONS, check_staleness, staleness_weight


@dataclass(frozen=True)
class FedAsyncConfig:
    alpha: float = param(0.6, "mixing weight of a fresh arrival, in (0, 1]")
    staleness: str = param("polynomial", f"staleness function s(t - tau): {', '.join(STALENESS_FUNCTIONS)}")
    staleness_a: float = param(0.5, "exponent a of polynomial, slope a of hinge, >= 0")
    staleness_b: float = param(4.0, "staleness up to which hinge weighs 1, >= 0")
    max_staleness: int = param(0, "updates staler than this many versions are dropped on arrival; 0: history")
    concurrency: int = param(0, "clients at work at once; 0: run.clients_per_round x run.over_selection")
    history: int = param(64, "global versions kept for clients still training from them, >= 1")

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError(f"alpha: must be in (0, 1], got {self.alpha}")
        check_staleness(self.staleness, self.staleness_a, self.staleness_b)
        if self.max_staleness < 0 or self.concurrency < 0 or self.history < 1:
            raise ValueError("max_staleness and concurrency must be >= 0 (0: no limit / the run's selection), "
                             "history >= 1")


@register_strategy
class FedAsync(Strategy):
    name = "fedasync"
    config_class = FedAsyncConfig
    state_attrs = ("_versions",)

    @property
    def traits(self) -> Traits:
        c = self.config
        return Traits(asynchronous=True, concurrency=c.concurrency or None, max_staleness=c.max_staleness or c.history)

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self._versions: dict[int, torch.Tensor] = {}

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        if not updates:
            raise AggregationError("no client update to aggregate")
        self._versions[version] = global_adapter
        x, c = global_adapter, self.config
        for u in updates:  # one at a time, as they would have arrived
            if u.base_version not in self._versions:
                raise AggregationError(f"version {u.base_version} is no longer kept (current {version})")
            a_t = c.alpha * float(staleness_weight(c.staleness, torch.tensor(u.staleness(version)),
                                                   c.staleness_a, c.staleness_b))
            x = (1 - a_t) * x + a_t * (self._versions[u.base_version] + u.delta)
        # Keep only the versions an admitted update can still start from.
        oldest = version + 1 - self.traits.max_staleness
        self._versions = {v: t for v, t in self._versions.items() if v >= oldest}
        self._versions[version + 1] = x
        return x
