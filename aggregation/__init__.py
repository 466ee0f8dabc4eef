"""Server strategies over flat adapter tensors. Pure: torch and numpy only, no Ray, no SimPy."""

from aggregation.base import AggregationError, ClientConfig, ClientUpdate, RunSetting, Strategy, StrategyContext, Traits
from aggregation.layout import AdapterLayout
from aggregation.partial import ParameterGroups
from aggregation.registry import build_strategy, register_strategy, strategy_names

# Importing the strategy modules registers them.
from aggregation import (  # noqa: E402,F401
    dp,
    fedasync,
    fedavg,
    fedavgm,
    fedbuff,
    fednova,
    fedopt,
    fedprox,
    flexlora,
    flora,
    hetlora,
    krum,
    median,
    presets,
    secagg,
    trimmed_mean,
)

__all__ = [
    "AdapterLayout",
    "AggregationError",
    "ClientConfig",
    "ClientUpdate",
    "ParameterGroups",
    "RunSetting",
    "Strategy",
    "StrategyContext",
    "Traits",
    "build_strategy",
    "register_strategy",
    "strategy_names",
]
