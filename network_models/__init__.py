"""Radio links between devices and the server. Pure numpy: no Ray, no SimPy. Units: metres, GHz, dB, dBm,
Hz, bits per second, seconds.

- pathloss: 3GPP TR 38.901 UMa/UMi/RMa, free space and log-distance path loss; shadowing sigmas.
- fading: block fading power gains (none, Rayleigh, Rician).
- channel: noise, SNR, Shannon rates under OFDMA or TDMA sharing, outage.
- sharing: one band shared by transfers that come and go (fluid model, clock passed in).
- layout: cell sites on a grid or hexagonal rings, devices dropped in cells.
- traces: replay of Mahimahi and two-column throughput traces.
"""

from network_models.channel import (
    THERMAL_NOISE_DBM_PER_HZ,
    apply_outage,
    noise_dbm,
    ofdma_rates_bps,
    shannon_rate_bps,
    snr_db,
    tdma_rates_bps,
)
from network_models.fading import DEFAULT_K_FACTOR_DB, FADING_MODELS, FadingModel, fading_gain_db
from network_models.layout import MIN_DISTANCE_M, Layout, cell_sites, place_devices
from network_models.pathloss import PATH_LOSS_MODELS, SHADOWING_SIGMA_DB, PathLossModel, path_loss_db
from network_models.sharing import Scheme, SharedBand
from network_models.traces import (
    RateTrace,
    TraceFormat,
    load_mahimahi,
    load_trace,
    load_two_column,
    parse_mahimahi,
    parse_two_column,
)

__all__ = [
    "THERMAL_NOISE_DBM_PER_HZ",
    "apply_outage",
    "noise_dbm",
    "ofdma_rates_bps",
    "shannon_rate_bps",
    "snr_db",
    "tdma_rates_bps",
    "DEFAULT_K_FACTOR_DB",
    "FADING_MODELS",
    "FadingModel",
    "fading_gain_db",
    "Layout",
    "cell_sites",
    "place_devices",
    "MIN_DISTANCE_M",
    "PATH_LOSS_MODELS",
    "SHADOWING_SIGMA_DB",
    "PathLossModel",
    "path_loss_db",
    "Scheme",
    "SharedBand",
    "RateTrace",
    "TraceFormat",
    "load_mahimahi",
    "load_trace",
    "load_two_column",
    "parse_mahimahi",
    "parse_two_column",
]
