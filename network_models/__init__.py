"""Radio links between devices and the server. Pure numpy: no Ray, no SimPy. Units: metres, GHz, dB, dBm,
Hz, bits per second."""

from network_models.channel import (
    path_loss_db,
    noise_dbm,
    shannon_rate_bps,
    ofdma_rates_bps,
)

__all__ = ["path_loss_db", "noise_dbm", "shannon_rate_bps", "ofdma_rates_bps"]
