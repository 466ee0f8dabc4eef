"""Named building blocks with typed parameters, so that a scenario says `strategy: {name: fedavg, server_lr: 1.0}`.

Every registered thing (a strategy, an upload codec, a selection policy, an availability model) has a name and
a config: a frozen dataclass whose fields are its parameters, each with a type, a default (none: required) and
`metadata={"help": ...}`, and whose `__post_init__` refuses values that cannot work, naming the field. A
scenario's values are checked once, by building the config; the thing itself is then built from the config
(`impl(config)`), or is the config where it holds no state of its own (codecs, selection policies,
availability models).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar, get_type_hints

from aggregation.base import Strategy

T = TypeVar("T")

REQUIRED = dataclasses.MISSING  # the default of a parameter without one


def param(default: Any = REQUIRED, help: str = "") -> Any:
    """A config field: its default (leave it out for a required parameter) and what it means."""
    return dataclasses.field(default=default, metadata={"help": help})


class RegistryError(ValueError):
    """An unknown name, a parameter the named thing does not have, or a required one left out."""


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    config: type  # the typed parameters, a dataclass
    impl: Callable[[Any], T] | None  # builds the thing from its config; None: the config is the thing


class Registry(Generic[T]):
    """Things of one kind by name: `register` once each, then `config` checks parameters and `build` makes one."""

    def __init__(self, kind: str):
        self.kind = kind  # for messages: "strategy", "codec", ...
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, config: type, impl: Callable[[Any], T] | None = None) -> None:
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if not (dataclasses.is_dataclass(config) and config.__dataclass_params__.frozen):
            raise TypeError(f"{self.kind} {name!r}: its config must be a frozen dataclass, got {config!r}")
        self._entries[name] = Entry(name, config, impl)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise RegistryError(f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}")
        return self._entries[name]

    def fields(self, name: str) -> tuple[dataclasses.Field, ...]:
        """The config's parameters (fields set by its constructor), in declaration order."""
        return tuple(f for f in dataclasses.fields(self.entry(name).config) if f.init)

    def parameters(self, name: str) -> dict[str, Any]:
        """Each parameter with its default (REQUIRED where it has none), for validation and documentation."""
        return {f.name: _default(f) for f in self.fields(name)}

    def config(self, name: str, **params: Any) -> Any:
        """The typed config from a scenario's values; raises RegistryError for an unknown name or parameter or
        a required one left out, ValueError (naming the field) for a value that cannot work."""
        entry = self.entry(name)
        parameters = self.parameters(name)
        unknown = set(params) - set(parameters)
        if unknown:
            raise RegistryError(f"{self.kind} {name!r} has no parameter {', '.join(sorted(unknown))}")
        missing = [key for key, default in parameters.items() if default is REQUIRED and key not in params]
        if missing:
            raise RegistryError(f"{self.kind} {name!r} needs parameter {', '.join(missing)}")
        return entry.config(**coerce(entry.config, params))

    def build(self, name: str, **params: Any) -> T:
        entry = self.entry(name)
        config = self.config(name, **params)
        return config if entry.impl is None else entry.impl(config)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return REQUIRED


def coerce(config: type, params: dict[str, Any]) -> dict[str, Any]:
    """Values in the declared type where YAML reads them otherwise: `1e-5` is a string to YAML and `1` an int,
    where a float is declared. A bool stays a bool (it is an int to Python)."""
    hints = get_type_hints(config)
    out = {}
    for key, value in params.items():
        if hints.get(key) is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{key}: expected a number, got {value!r}") from None
        out[key] = value
    return out


# ----- Strategies: each strategy module registers its class, whose `config_class` holds its parameters.

STRATEGIES: Registry[Strategy] = Registry("strategy")


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    STRATEGIES.register(cls.name, cls.config_class, cls)
    return cls


def strategy_names() -> list[str]:
    return STRATEGIES.names()


def strategy_parameters(name: str) -> dict[str, Any]:
    """Parameter names of a strategy with their defaults."""
    return STRATEGIES.parameters(name)


def strategy_config(name: str, **params: Any) -> Any:
    return STRATEGIES.config(name, **params)


def build_strategy(name: str, **params: Any) -> Strategy:
    """A fresh strategy from a scenario's parameters (YAML values coerced to the declared types)."""
    return STRATEGIES.build(name, **params)
