"""Staleness functions s(t - tau) that discount an update trained from an old global version
(Xie et al., "Asynchronous Federated Optimization", 2019):

    constant     s = 1
    polynomial   s = (t - tau + 1)^(-a)
    hinge        s = 1                          if t - tau <= b
                 s = 1 / (a (t - tau - b) + 1)  otherwise

FedBuff's weight 1 / sqrt(1 + staleness) is `polynomial` with a = 0.5.
"""

from __future__ import annotations

import torch

STALENESS_FUNCTIONS = ("constant", "polynomial", "hinge")


def check_staleness(function: str, a: float, b: float) -> None:
    if function not in STALENESS_FUNCTIONS:
        raise ValueError(f"staleness: unknown function {function!r}; known: {', '.join(STALENESS_FUNCTIONS)}")
    if a < 0:
        raise ValueError(f"staleness_a: must be >= 0, got {a}")
    if b < 0:
        raise ValueError(f"staleness_b: must be >= 0, got {b}")


def staleness_weight(function: str, staleness: torch.Tensor, a: float = 0.5, b: float = 4.0) -> torch.Tensor:
    """s(t - tau) for a tensor of staleness values t - tau >= 0."""
    s = staleness.to(torch.float64)
    if function == "constant":
        return torch.ones_like(s)
    if function == "polynomial":
        return (s + 1.0) ** (-a)
    if function == "hinge":
        return torch.where(s <= b, torch.ones_like(s), 1.0 / (a * (s - b) + 1.0))
    raise ValueError(f"unknown staleness function {function!r}")
