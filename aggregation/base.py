"""The server's side of federated fine-tuning, as a small explicit interface.

The emulator owns the loop, the clock and the buffer of arrived updates, and calls a strategy at its events:

    configure(client, version)     a client is selected: what should it run? (ClientConfig)
    admit(base_version, version)   an update arrives: keep it, or drop it as too stale?
    ready(buffered)                asynchronous strategies: aggregate now? (FedBuff: K buffered, FedAsync: 1)
    aggregate(global, version, updates)
                                   a round closes (K reports or its deadline passed) or `ready` said so:
                                   the next global adapter from the buffered updates, sorted by client

Synchronous, buffered and fully asynchronous methods thus share one code path; only `traits.asynchronous`
and `ready` tell them apart. A strategy's parameters are a typed config (aggregation/registry.py), its
capabilities one `Traits` record, and what it cannot work with in a scenario its `objections`.

Adapters travel as flat float32 vectors (the trainable tensors of the model concatenated in `named_parameters`
order, described by an `AdapterLayout`), so rules work on stacked [clients x params] matrices.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from aggregation.layout import AdapterLayout
from aggregation.partial import ParameterGroups


class AggregationError(ValueError):
    """The updates cannot be aggregated (none arrived, shapes differ, ...)."""


@dataclass(frozen=True)
class ClientUpdate:
    client: int  # device index in the fleet table
    delta: torch.Tensor  # (P,) float32: trained adapter minus the global adapter it started from
    num_samples: int  # n_k, the client's training tokens
    base_version: int  # the global version it trained from; staleness = current - base_version
    steps: int  # local optimiser steps actually run (tau_k)
    rank: int | None = None  # LoRA rank the client trained at; None: the full rank

    def staleness(self, version: int) -> int:
        return version - self.base_version


@dataclass(frozen=True)
class ClientConfig:
    """What the server asks of a client it selects (Flower's configure_train)."""

    prox_mu: float = 0.0  # local loss + mu/2 ||w - w_global||^2 over the shared entries (FedProx, PWFF)
    partial_work: bool = False  # under a deadline, a straggler sends the steps it finished (FedProx)
    clip_norm: float = 0.0  # > 0: the client clips its delta to this L2 norm before sending (DP-FedAvg)


@dataclass(frozen=True)
class Traits:
    """What the emulator must know of a strategy to drive it."""

    asynchronous: bool = False
    concurrency: int | None = None  # asynchronous: clients at work at once (None: the run's selection size)
    max_staleness: int | None = None  # updates staler than this are dropped on arrival
    min_updates: int = 1  # fewest updates the rule can aggregate (Krum: 2f + 3)
    extra_round_trips: int = 0  # message rounds beyond the upload before aggregating (secure aggregation)
    sees_updates: bool = True  # does the server see each update alone (False: only their masked sum)?


@dataclass(frozen=True)
class RunSetting:
    """What a scenario asks of a strategy, for `Strategy.objections`; None: not known yet, so not judged."""

    compression: str | None = None  # the upload codec's name
    min_reports: int | None = None  # fewest reports a synchronous round aggregates
    multicast_download: bool = False  # one broadcast of the global adapter per cell and cohort
    shared_entries: int | None = None  # adapter entries left to aggregate (None: the layout is not built yet)


@dataclass(frozen=True)
class NoParameters:
    """The config of a strategy that takes no parameter."""


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may know of the run, given once before the first round."""

    layout: AdapterLayout
    population: int = 1  # devices that can be invited (DP accounting: sampling rate = cohort / population)
    cohort: int = 1  # clients expected per aggregation (K)
    seed: int = 0


def stack_deltas(updates: list[ClientUpdate]) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, P) deltas and (K,) weights p_k = n_k / sum n_j, in the order given."""
    if not updates:
        raise AggregationError("no client update to aggregate")
    sizes = {u.delta.shape for u in updates}
    if len(sizes) != 1:
        raise AggregationError(f"client updates have different shapes: {sorted(sizes)}")
    deltas = torch.stack([u.delta for u in updates])
    n = torch.tensor([u.num_samples for u in updates], dtype=torch.float64)
    if (n <= 0).any():
        raise AggregationError("every client update needs num_samples > 0")
    return deltas, (n / n.sum()).to(deltas.dtype)


class Strategy(ABC):
    """A server rule. Subclasses set `name` and `config_class` (their typed parameters, a frozen dataclass) and
    implement `aggregate`; asynchronous ones set `traits` and override `ready`."""

    name: ClassVar[str] = ""
    config_class: ClassVar[type] = NoParameters
    # What the emulator must know to drive it; a property where it depends on the config.
    traits: Traits = Traits()
    groups: ParameterGroups = ParameterGroups()  # entries kept on the device or frozen (partial aggregation)
    # Dense weight deltas merged into the frozen base, per adapted module in layout order, in product units
    # (sum p_k B_k A_k; the trainer applies the LoRA scaling). None: the base never changes (all but FLoRA).
    base_delta: torch.Tensor | None = None

    # Attributes that aggregation changes (server optimiser moments, kept versions, ...): what a checkpoint
    # saves. Everything else is configuration, rebuilt from the scenario.
    state_attrs: tuple[str, ...] = ()

    def __init__(self, config=None):
        config = self.config_class() if config is None else config
        if not isinstance(config, self.config_class):
            raise TypeError(f"{self.name} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    def objections(self, setting: RunSetting) -> list[tuple[str, str]]:
        """(scenario field, reason) for each thing in `setting` this strategy cannot work with."""
        found = []
        if setting.shared_entries == 0:
            found.append(("strategy", self.nothing_shared()))
        traits = self.traits
        if not traits.asynchronous and setting.min_reports is not None and setting.min_reports < traits.min_updates:
            need = traits.min_updates
            found.append(("run.min_reports", f"{self.name} needs at least {need} updates to aggregate; "
                                             f"set run.min_reports to {need} or more"))
        if traits.asynchronous and setting.multicast_download:
            found.append(("network.multicast_download", (
                f"{self.name} invites devices a few at a time; a broadcast per cohort would each take the whole "
                "downlink band at once, so the cells' downlinks would be overstated: set it false, or use a "
                "synchronous strategy")))
        return found

    def nothing_shared(self) -> str:
        """Why a layout whose entries are all personal or frozen cannot be aggregated."""
        return (f"{self.name} with personal {list(self.groups.personal)} and frozen {list(self.groups.frozen)} "
                "leaves no parameter to aggregate")

    def setup(self, context: StrategyContext) -> None:
        self.context = context

    def state_dict(self) -> dict:
        return {name: getattr(self, name) for name in self.state_attrs}

    def load_state_dict(self, state: dict) -> None:
        """Continue from `state_dict()` of a strategy set up the same way."""
        for name in self.state_attrs:
            setattr(self, name, state[name])

    @property
    def layout(self) -> AdapterLayout:
        return self.context.layout

    def configure(self, client: int, version: int) -> ClientConfig:
        return ClientConfig()

    def admit(self, base_version: int, version: int) -> bool:
        """Keep an arrived update unless it is staler than `traits.max_staleness`."""
        limit = self.traits.max_staleness
        return limit is None or version - base_version <= limit

    def ready(self, buffered: int) -> bool:
        """Asynchronous strategies: aggregate now, with `buffered` updates waiting?"""
        return buffered >= 1

    def metrics(self) -> dict[str, float]:
        """Figures of the last step for the round's row (privacy spent, updates rejected, ...)."""
        return {}

    def accounting(self) -> dict:
        """What a privacy accountant assumed (population, sampling), for the run's summary; {} without one."""
        return {}

    def extra_bytes(self, cohort_size: int) -> tuple[int, int]:
        """(up, down) bytes per client of protocol messages beyond the adapter's upload and download."""
        return 0, 0

    def download_values(self) -> int:
        """Values a client downloads to start training (FLoRA sends its stacked factors)."""
        return self.layout.size

    @abstractmethod
    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        """Return the next global adapter (P,) from the current one and the updates of one server step."""
