"""The server's side of federated fine-tuning, as a small explicit interface.

The emulator owns the loop, the clock and the buffer of arrived updates, and calls a strategy at its events:

    configure(client, version)     a client is selected: what should it run? (ClientConfig)
    admit(base_version, version)   an update arrives: keep it, or drop it as too stale?
    ready(buffered)                asynchronous strategies: aggregate now? (FedBuff: K buffered, FedAsync: 1)
    aggregate(global, version, updates)
                                   a round closes (K reports or its deadline passed) or `ready` said so:
                                   the next global adapter from the buffered updates, sorted by client

Synchronous, buffered and fully asynchronous methods thus share one code path; only `asynchronous` and
`ready` tell them apart. Adapters travel as flat float32 vectors (the trainable tensors of the model
concatenated in `named_parameters` order, described by an `AdapterLayout`), so rules work on stacked
[clients x params] matrices.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

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
    """A server rule. Subclasses set `name` and implement `aggregate`; asynchronous ones set
    `asynchronous` and override `ready`."""

    name: str = ""
    asynchronous: bool = False
    concurrency: int | None = None  # asynchronous: clients at work at once (None: the run's selection size)
    max_staleness: int | None = None  # updates staler than this are dropped on arrival
    min_updates: int = 1  # fewest updates the rule can aggregate (Krum: 2f + 3)
    extra_round_trips: int = 0  # message rounds beyond the upload before aggregating (secure aggregation)
    partial_work: bool = False  # under a deadline, stragglers send the steps they finished (FedProx)
    sees_updates: bool = True  # does the server see each update alone (False: only their masked sum)?
    groups: ParameterGroups = ParameterGroups()  # entries kept on the device or frozen (partial aggregation)
    # Dense weight deltas merged into the frozen base, per adapted module in layout order, in product units
    # (sum p_k B_k A_k; the trainer applies the LoRA scaling). None: the base never changes (all but FLoRA).
    base_delta: torch.Tensor | None = None

    # Attributes that aggregation changes (server optimiser moments, kept versions, ...): what a checkpoint
    # saves. Everything else is configuration, rebuilt from the scenario.
    state_attrs: tuple[str, ...] = ()

    @property
    def traits(self) -> Traits:
        return Traits(self.asynchronous, self.concurrency, self.max_staleness, self.min_updates,
                      self.extra_round_trips, self.sees_updates)

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
        """Keep an arrived update unless it is staler than `max_staleness`."""
        return self.max_staleness is None or version - base_version <= self.max_staleness

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
