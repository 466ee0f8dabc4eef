"""Radio links between devices and the server. Pure numpy: no Ray, no SimPy. Units: metres, GHz, dB, dBm,
Hz, bits per second, seconds.

- pathloss: 3GPP TR 38.901 UMa/UMi/RMa, free space and log-distance path loss; LOS probability; shadowing
  sigmas.
- fading: block fading power gains (none, Rayleigh, Rician).
- channel: noise, SNR and the Shannon rate of one link (with interference).
- sharing: one band shared by transfers that come and go (fluid model, clock passed in), radio energy
  integrated over the rates each transfer actually had.
- transfer: radio power as a function of the rate, and what a finished or cut-short transfer delivered.
- interference: inter-cell interference densities (load-factor model) to add to the noise, for SINR.
- layout: cell sites on a grid or hexagonal rings, devices dropped in cells.
- traces: replay of Mahimahi and two-column throughput traces.
"""

from network_models.channel import (
    THERMAL_NOISE_DBM_PER_HZ,
    noise_dbm,
    shannon_rate_bps,
    snr_db,
)
from network_models.fading import DEFAULT_K_FACTOR_DB, FADING_MODELS, FadingModel, fading_gain_db
from network_models.interference import downlink_interference_mw_per_hz, uplink_interference_mw_per_hz
from network_models.layout import MIN_DISTANCE_M, Layout, cell_sites, place_devices
from network_models.pathloss import (
    MIXED_FAMILIES,
    PATH_LOSS_MODELS,
    SHADOWING_SIGMA_DB,
    PathLossModel,
    los_probability,
    path_loss_db,
    shadowing_sigma_db,
)
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
from network_models.transfer import NO_POWER, Delivery, RadioPower

__all__ = [
    "THERMAL_NOISE_DBM_PER_HZ",
    "noise_dbm",
    "shannon_rate_bps",
    "snr_db",
    "DEFAULT_K_FACTOR_DB",
    "FADING_MODELS",
    "FadingModel",
    "fading_gain_db",
    "downlink_interference_mw_per_hz",
    "uplink_interference_mw_per_hz",
    "Layout",
    "cell_sites",
    "place_devices",
    "MIN_DISTANCE_M",
    "MIXED_FAMILIES",
    "PATH_LOSS_MODELS",
    "los_probability",
    "shadowing_sigma_db",
    "SHADOWING_SIGMA_DB",
    "PathLossModel",
    "path_loss_db",
    "Scheme",
    "SharedBand",
    "NO_POWER",
    "Delivery",
    "RadioPower",
    "RateTrace",
    "TraceFormat",
    "load_mahimahi",
    "load_trace",
    "load_two_column",
    "parse_mahimahi",
    "parse_two_column",
]
