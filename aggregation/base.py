"""The server's side of federated fine-tuning, as a small explicit interface.

The emulator owns the loop and the clock; a strategy only turns the updates that arrived into the next
global adapter. Adapters travel as flat float32 vectors (the LoRA tensors of the model concatenated in
`named_parameters` order), so strategies work on stacked [clients x params] matrices.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch


class AggregationError(ValueError):
    """The updates cannot be aggregated (none arrived, shapes differ, ...)."""


@dataclass(frozen=True)
class ClientUpdate:
    client: int  # device index in the fleet table
    delta: torch.Tensor  # (P,) float32: trained adapter minus the global adapter it started from
    num_samples: int  # n_k, the client's training tokens
    base_version: int  # the global version it trained from; staleness = current - base_version
    steps: int  # local optimiser steps actually run


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
    """A server rule. Subclasses set `name` and implement `aggregate`."""

    name: str = ""

    @abstractmethod
    def aggregate(self, global_adapter: torch.Tensor, version: int, updates: list[ClientUpdate]) -> torch.Tensor:
        """Return the next global adapter (P,) from the current one and the updates of one server step.
        `updates` come sorted by client index so that sums run in a fixed order."""
