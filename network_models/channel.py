"""Noise, SNR and the Shannon rate of one link (REFERENCE.md section 5).

Scenario: a device sends with power p (dBm) over b Hz, and the signal loses `loss_db` on the way (path loss and
shadowing, minus any fading gain). Its rate is b log2(1 + p g / ((N0 + I) b)) bit/s, g the linear path gain, N0
the thermal noise density raised by the receiver's noise figure, I the density of other cells' interference.
How concurrent transfers share a cell's band (OFDMA slices, TDMA turns) is `sharing.SharedBand`; the emulator
judges outage with `snr_db` against its threshold before a transfer starts.
"""

from __future__ import annotations

import numpy as np

THERMAL_NOISE_DBM_PER_HZ = -174.0


def noise_dbm(bandwidth_hz: np.ndarray | float, noise_figure_db: float) -> np.ndarray:
    """Receiver noise power in dBm over `bandwidth_hz` Hz: -174 dBm/Hz + 10 log10(b) + noise figure."""
    return THERMAL_NOISE_DBM_PER_HZ + 10.0 * np.log10(bandwidth_hz) + noise_figure_db


def snr_db(
    bandwidth_hz: np.ndarray | float,
    tx_power_dbm: np.ndarray | float,
    loss_db: np.ndarray | float,
    noise_figure_db: float,
) -> np.ndarray:
    """Signal-to-noise ratio in dB of a `tx_power_dbm` transmission losing `loss_db` over `bandwidth_hz` Hz.

    >>> round(float(snr_db(20e6, 23.0, 121.3, 5.0)), 1)
    -2.3
    """
    return np.asarray(tx_power_dbm) - loss_db - noise_dbm(bandwidth_hz, noise_figure_db)


def shannon_rate_bps(
    bandwidth_hz: np.ndarray | float, tx_power_dbm: np.ndarray | float, loss_db: np.ndarray, noise_figure_db: float,
    interference_mw_per_hz: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Shannon capacity in bit/s, b log2(1 + SINR), of one link alone on `bandwidth_hz` Hz; interference from
    other cells (mW/Hz) adds to the noise density."""
    noise_mw_per_hz = 10.0 ** ((THERMAL_NOISE_DBM_PER_HZ + noise_figure_db) / 10.0) + interference_mw_per_hz
    signal_mw = 10.0 ** ((np.asarray(tx_power_dbm) - loss_db) / 10.0)
    return np.asarray(bandwidth_hz) * np.log2(1.0 + signal_mw / (noise_mw_per_hz * np.asarray(bandwidth_hz)))
