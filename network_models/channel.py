"""Large-scale path loss and Shannon rates (3GPP TR 38.901 UMa; REFERENCE.md section 5).

Scenario: a device at distance d from its cell's base station sends with power p over its share b of the
cell's bandwidth. Its rate is b log2(1 + p g / (N0 b)), g the linear path gain (shadowing included).
With OFDMA, K concurrent uplinks share the band equally, so each gets b = B / K; the noise falls with b,
so the per-device rate falls less than linearly in K.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

THERMAL_NOISE_DBM_PER_HZ = -174.0
UMA_BS_HEIGHT_M = 25.0

PathLossModel = Literal["uma_nlos", "uma_los"]


def path_loss_db(
    model: PathLossModel, distance_m: np.ndarray, carrier_ghz: float, ue_height_m: float = 1.5
) -> np.ndarray:
    """3GPP TR 38.901 urban macro path loss in dB, before the breakpoint; d is the 2D distance in metres."""
    d3 = np.hypot(np.asarray(distance_m, dtype=float), UMA_BS_HEIGHT_M - ue_height_m)
    los = 28.0 + 22.0 * np.log10(d3) + 20.0 * np.log10(carrier_ghz)
    if model == "uma_los":
        return los
    if model == "uma_nlos":
        nlos = 13.54 + 39.08 * np.log10(d3) + 20.0 * np.log10(carrier_ghz) - 0.6 * (ue_height_m - 1.5)
        return np.maximum(los, nlos)
    raise ValueError(f"unknown path loss model {model!r}")


def noise_dbm(bandwidth_hz: np.ndarray | float, noise_figure_db: float) -> np.ndarray:
    return THERMAL_NOISE_DBM_PER_HZ + 10.0 * np.log10(bandwidth_hz) + noise_figure_db


def shannon_rate_bps(
    bandwidth_hz: np.ndarray | float, tx_power_dbm: np.ndarray | float, loss_db: np.ndarray, noise_figure_db: float
) -> np.ndarray:
    snr_db = np.asarray(tx_power_dbm) - loss_db - noise_dbm(bandwidth_hz, noise_figure_db)
    return np.asarray(bandwidth_hz) * np.log2(1.0 + 10.0 ** (snr_db / 10.0))


def ofdma_rates_bps(
    cell: np.ndarray, band_hz: float, tx_power_dbm: np.ndarray | float, loss_db: np.ndarray, noise_figure_db: float
) -> np.ndarray:
    """Rate of each of a set of concurrent transfers when those in one cell share its band equally."""
    cell = np.asarray(cell)
    _, inverse, counts = np.unique(cell, return_inverse=True, return_counts=True)
    share = band_hz / counts[inverse]
    return shannon_rate_bps(share, tx_power_dbm, loss_db, noise_figure_db)
