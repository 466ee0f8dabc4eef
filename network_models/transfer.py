"""What a transfer costs the radio that sends or receives it.

A device's radio draws a power that grows with the rate it moves data at, up to what the radio can draw at
all: P(r) = min(base + slope x r, max). The rate of a shared link changes whenever another transfer joins
or leaves, so the energy of a transfer is the integral of P over its air time, taken piece by piece at the
rates it actually had (`SharedBand` keeps that integral). `Delivery` is what a link reports when a transfer
ends, finished or cut short.

Units: watts, bit/s, bits, seconds, joules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RadioPower:
    """Radio power as a function of the rate: base_w + w_per_mbps x Mb/s, never above max_w."""

    base_w: float
    w_per_mbps: float
    max_w: float

    def __post_init__(self) -> None:
        if not (self.base_w >= 0 and self.w_per_mbps >= 0 and self.max_w >= self.base_w):
            raise ValueError(f"radio power needs base_w >= 0, w_per_mbps >= 0 and max_w >= base_w, got {self}")

    def watts(self, rate_bps: np.ndarray | float) -> np.ndarray | float:
        return np.minimum(self.base_w + self.w_per_mbps * np.asarray(rate_bps) / 1e6, self.max_w)

    def energy_j(self, bits: float, seconds: float) -> float:
        """Energy of a transfer at a constant rate (bits / seconds)."""
        if seconds <= 0:
            return 0.0
        return float(self.watts(bits / seconds)) * seconds


NO_POWER = RadioPower(0.0, 0.0, 0.0)  # a link end whose energy is not counted


@dataclass(frozen=True)
class Delivery:
    """What one transfer moved and cost: bits through, seconds on the air, joules drawn by its radio."""

    bits: float
    seconds: float
    energy_j: float

    @property
    def mean_rate_bps(self) -> float:
        """The rate the transfer got on average: bits over air time (NaN when it never was on the air)."""
        return self.bits / self.seconds if self.seconds > 0 else float("nan")
