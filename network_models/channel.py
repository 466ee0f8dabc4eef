"""Noise, SNR and Shannon rates of transfers sharing a cell's band (REFERENCE.md section 5).

Scenario: a device sends with power p (dBm) over its share b (Hz) of the cell's band, and the signal loses
`loss_db` on the way (path loss and shadowing, minus any fading gain). Its rate is b log2(1 + p g / (N0 b)) bit/s,
g the linear path gain, N0 the thermal noise density raised by the receiver's noise figure.
With OFDMA, K concurrent transfers in a cell split the band equally, b = B / K; the noise falls with b, so each
rate falls less than linearly in K. With TDMA they take turns on the whole band: r = (1/K) B log2(1 + p g / (N0 B)).
Below an SNR threshold a link is in outage and carries nothing.
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


def _cell_counts(cell: np.ndarray) -> np.ndarray:
    """How many of the transfers share each transfer's cell."""
    _, inverse, counts = np.unique(np.asarray(cell), return_inverse=True, return_counts=True)
    return counts[inverse.reshape(-1)]


def ofdma_rates_bps(
    cell: np.ndarray, band_hz: float, tx_power_dbm: np.ndarray | float, loss_db: np.ndarray, noise_figure_db: float
) -> np.ndarray:
    """Rate of each of a set of concurrent transfers when those in one cell share its band equally."""
    share = band_hz / _cell_counts(cell)
    return shannon_rate_bps(share, tx_power_dbm, loss_db, noise_figure_db)


def tdma_rates_bps(
    cell: np.ndarray, band_hz: float, tx_power_dbm: np.ndarray | float, loss_db: np.ndarray, noise_figure_db: float
) -> np.ndarray:
    """Rate of each of a set of concurrent transfers when those in one cell take equal turns on its whole band."""
    return shannon_rate_bps(band_hz, tx_power_dbm, loss_db, noise_figure_db) / _cell_counts(cell)


def apply_outage(rate_bps: np.ndarray, snr_db: np.ndarray, threshold_db: float) -> np.ndarray:
    """`rate_bps` where the link's SNR reaches `threshold_db` dB, 0 bit/s where it is in outage.

    >>> apply_outage(np.array([5e6, 1e6]), np.array([3.0, -8.0]), -5.0)
    array([5000000.,       0.])
    """
    return np.where(np.asarray(snr_db) >= threshold_db, rate_bps, 0.0)
