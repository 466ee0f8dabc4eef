"""Server strategies over flat adapter tensors. Pure: torch and numpy only, no Ray, no SimPy."""

from aggregation.base import ClientUpdate, Strategy, AggregationError
from aggregation.registry import build_strategy, register_strategy, strategy_names

# Importing the strategy modules registers them.
from aggregation import fedavg  # noqa: E402,F401

__all__ = [
    "AggregationError",
    "ClientUpdate",
    "Strategy",
    "build_strategy",
    "register_strategy",
    "strategy_names",
]
