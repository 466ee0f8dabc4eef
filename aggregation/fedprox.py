"""FedProx (Li et al., "Federated Optimization in Heterogeneous Networks", MLSys 2020).

Server rule: the same as FedAvg, x_{t+1} = x_t + eta * sum_k p_k (x_k - x_t), p_k = n_k / sum_j n_j.

Client duties (what `configure` asks for):
- minimise the local loss plus the proximal term mu/2 ||w - w_t||^2 over the shared adapter entries, where
  w_t is the global adapter the client started from (`ClientConfig.prox_mu = mu`);
- under a round deadline, a straggler sends the gamma-inexact solution it has, i.e. the update after the
  local steps it finished, instead of being dropped (`ClientConfig.partial_work = partial_work`), and
  reports those steps in `ClientUpdate.steps`.

mu = 0 with partial work is FedAvg that tolerates stragglers; the paper tunes mu in {0.001, 0.01, 0.1, 0.5, 1}.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from aggregation.base import ClientConfig
from aggregation.fedavg import FedAvg
from aggregation.registry import param, register_strategy


@dataclass(frozen=True)
class FedProxConfig:
    mu: float = param(0.01, "weight of the proximal term mu/2 ||w - w_t||^2 in the local loss, >= 0")
    server_lr: float = param(1.0, "server learning rate eta")
    partial_work: bool = param(True, "under a deadline, a straggler sends the steps it finished")

    def __post_init__(self) -> None:
        if not math.isfinite(self.mu) or self.mu < 0:
            raise ValueError(f"fedprox: mu must be a finite number >= 0, got {self.mu!r}")
        if not math.isfinite(self.server_lr) or self.server_lr <= 0:
            raise ValueError(f"fedprox: server_lr must be a finite number > 0, got {self.server_lr!r}")


@register_strategy
class FedProx(FedAvg):
    name = "fedprox"
    config_class = FedProxConfig

    def configure(self, client: int, version: int) -> ClientConfig:
        return ClientConfig(prox_mu=float(self.config.mu), partial_work=bool(self.config.partial_work))
