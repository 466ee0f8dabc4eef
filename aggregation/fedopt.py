"""Adaptive server optimisers: FedAdam, FedYogi, FedAdagrad (Reddi et al., "Adaptive Federated
Optimization", ICLR 2021, Algorithm 2).

Rule, with p_k = n_k / sum_j n_j and m_0 = v_0 = 0 (elementwise operations):

    Delta_t = sum_k p_k (x_k - x_t)                                   (pseudo-gradient)
    m_t     = beta_1 m_{t-1} + (1 - beta_1) Delta_t
    v_t     = beta_2 v_{t-1} + (1 - beta_2) Delta_t^2                       FedAdam
    v_t     = v_{t-1} - (1 - beta_2) Delta_t^2 sign(v_{t-1} - Delta_t^2)     FedYogi
    v_t     = v_{t-1} + Delta_t^2                                           FedAdagrad
    x_{t+1} = x_t + eta m_t / (sqrt(v_t) + tau)

eta = server_lr; tau bounds the adaptivity (and keeps coordinates with v_t = 0 finite). No bias correction.

Initial state: the paper asks for v_{-1} >= tau^2; like Flower's FedOpt strategies we start from
m_0 = v_0 = 0, which differs from v = tau^2 by at most tau (1e-9 to 1e-3) in sqrt(v). From zero state the
first FedAdam or FedYogi step is eta * sign(Delta_1) per coordinate (FedAdagrad: eta (1 - beta_1) sign).
The state lives on the server and `setup` resets it.

Defaults follow Flower: FedAdam eta 0.1, tau 1e-9; FedYogi eta 0.01, tau 1e-3; FedAdagrad eta 0.1,
tau 1e-9; beta_1 0.9, beta_2 0.99 (FedAdagrad ignores beta_2).

Client duties: none beyond local training from the global adapter.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from aggregation.base import AggregationError, ClientUpdate, Strategy, StrategyContext, stack_deltas
from aggregation.registry import param, register_strategy


@dataclass(frozen=True)
class FedOptConfig:
    """FedAdam's defaults; FedYogi and FedAdagrad change some."""

    strategy: ClassVar[str] = "fedadam"  # for messages
    server_lr: float = param(0.1, "server learning rate eta")
    beta_1: float = param(0.9, "decay of the first moment m_t, in [0, 1)")
    beta_2: float = param(0.99, "decay of the second moment v_t, in [0, 1) (FedAdagrad ignores it)")
    tau: float = param(1e-9, "adaptivity bound tau > 0 added to sqrt(v_t)")

    def __post_init__(self) -> None:
        name = self.strategy
        if not math.isfinite(self.server_lr) or self.server_lr <= 0:
            raise ValueError(f"{name}: server_lr must be a finite number > 0, got {self.server_lr!r}")
        if not 0 <= self.beta_1 < 1:
            raise ValueError(f"{name}: beta_1 must lie in [0, 1), got {self.beta_1!r}")
        if not 0 <= self.beta_2 < 1:
            raise ValueError(f"{name}: beta_2 must lie in [0, 1), got {self.beta_2!r}")
        if not math.isfinite(self.tau) or self.tau <= 0:
            # tau = 0 would divide 0 by 0 wherever a coordinate has never moved
            raise ValueError(f"{name}: tau must be a finite number > 0, got {self.tau!r}")


@dataclass(frozen=True)
class FedAdamConfig(FedOptConfig):
    pass


@dataclass(frozen=True)
class FedYogiConfig(FedOptConfig):
    strategy: ClassVar[str] = "fedyogi"
    server_lr: float = param(0.01, "server learning rate eta")
    tau: float = param(1e-3, "adaptivity bound tau > 0 added to sqrt(v_t)")


@dataclass(frozen=True)
class FedAdagradConfig(FedOptConfig):
    strategy: ClassVar[str] = "fedadagrad"


class FedOpt(Strategy):
    """Computes Delta_t and m_t and applies the step; subclasses give v_t."""

    state_attrs = ("m_t", "v_t")

    def __init__(self, config: FedOptConfig | None = None):
        super().__init__(config)
        self.m_t: torch.Tensor | None = None
        self.v_t: torch.Tensor | None = None

    def setup(self, context: StrategyContext) -> None:
        super().setup(context)
        self.m_t = None
        self.v_t = None

    def _compute_delta_t_and_m_t(self, updates: list[ClientUpdate]) -> torch.Tensor:
        deltas, p = stack_deltas(updates)
        delta_t = p @ deltas
        if self.m_t is None:
            self.m_t = torch.zeros_like(delta_t)
            self.v_t = torch.zeros_like(delta_t)
        elif self.m_t.shape != delta_t.shape:
            shapes = f"{tuple(self.m_t.shape)}, updates {tuple(delta_t.shape)}"
            raise AggregationError(f"{self.name}: server state has shape {shapes}")
        beta_1 = self.config.beta_1
        self.m_t = beta_1 * self.m_t + (1 - beta_1) * delta_t
        return delta_t

    @abstractmethod
    def _compute_v_t(self, v_prev: torch.Tensor, delta_t: torch.Tensor) -> torch.Tensor:
        """The second-moment estimate v_t from v_{t-1} and Delta_t."""

    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        delta_t = self._compute_delta_t_and_m_t(updates)
        self.v_t = self._compute_v_t(self.v_t, delta_t)
        return global_adapter + self.config.server_lr * self.m_t / (self.v_t.sqrt() + self.config.tau)


@register_strategy
class FedAdam(FedOpt):
    name = "fedadam"
    config_class = FedAdamConfig

    def _compute_v_t(self, v_prev: torch.Tensor, delta_t: torch.Tensor) -> torch.Tensor:
        beta_2 = self.config.beta_2
        return beta_2 * v_prev + (1 - beta_2) * delta_t.square()


@register_strategy
class FedYogi(FedOpt):
    name = "fedyogi"
    config_class = FedYogiConfig

    def _compute_v_t(self, v_prev: torch.Tensor, delta_t: torch.Tensor) -> torch.Tensor:
        # v moves toward Delta^2 by an additive (1 - beta_2) Delta^2, not multiplicatively as in Adam, so a
        # large v shrinks slowly when the pseudo-gradient does; v stays >= 0 since a v above Delta^2 loses
        # only (1 - beta_2) Delta^2 < v
        d2 = delta_t.square()
        return v_prev - (1 - self.config.beta_2) * d2 * torch.sign(v_prev - d2)


@register_strategy
class FedAdagrad(FedOpt):
    name = "fedadagrad"
    config_class = FedAdagradConfig

    def _compute_v_t(self, v_prev: torch.Tensor, delta_t: torch.Tensor) -> torch.Tensor:
        return v_prev + delta_t.square()
