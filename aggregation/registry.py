"""Strategies by name, so that a scenario says `strategy: {name: fedavg, server_lr: 1.0}`."""

from __future__ import annotations

import inspect
from typing import Any, Callable

from aggregation.base import Strategy

_REGISTRY: dict[str, Callable[..., Strategy]] = {}


def register_strategy(name: str, factory: Callable[..., Strategy]) -> None:
    if name in _REGISTRY:
        raise ValueError(f"strategy {name!r} is registered twice")
    _REGISTRY[name] = factory


def strategy_names() -> list[str]:
    return sorted(_REGISTRY)


def strategy_parameters(name: str) -> dict[str, Any]:
    """Parameter names of a strategy with their defaults, for validation and documentation."""
    signature = inspect.signature(_REGISTRY[name])
    return {k: p.default for k, p in signature.parameters.items()}


def coerce_parameters(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Values in the type of each parameter's default: YAML reads `1e-5` as a string and `1` as an int."""
    defaults = strategy_parameters(name)
    out = {}
    for key, value in params.items():
        kind = type(defaults.get(key))
        if kind is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{key}: expected a number, got {value!r}") from None
        out[key] = value
    return out


def build_strategy(name: str, **params: Any) -> Strategy:
    if name not in _REGISTRY:
        raise ValueError(f"unknown strategy {name!r}; known: {', '.join(strategy_names())}")
    unknown = set(params) - set(strategy_parameters(name))
    if unknown:
        raise ValueError(f"strategy {name!r} has no parameter {', '.join(sorted(unknown))}")
    return _REGISTRY[name](**coerce_parameters(name, params))
