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

from aggregation.base import ClientConfig
from aggregation.fedavg import FedAvg
from aggregation.registry import register_strategy


class FedProx(FedAvg):
    name = "fedprox"

    def __init__(self, mu: float = 0.01, server_lr: float = 1.0, partial_work: bool = True):
        if not math.isfinite(mu) or mu < 0:
            raise ValueError(f"fedprox: mu must be a finite number >= 0, got {mu!r}")
        if not math.isfinite(server_lr) or server_lr <= 0:
            raise ValueError(f"fedprox: server_lr must be a finite number > 0, got {server_lr!r}")
        super().__init__(server_lr=server_lr)
        self.mu = float(mu)
        self.partial_work = bool(partial_work)

    def configure(self, client: int, version: int) -> ClientConfig:
        return ClientConfig(prox_mu=self.mu, partial_work=self.partial_work)


register_strategy("fedprox", FedProx)
