"""The radio against the worked example of REFERENCE.md section 5 (3.5 GHz, UMa NLOS, 300 m, 23 dBm,
20 MHz, noise figure 5 dB)."""

import numpy as np
import pytest

from network_models import ofdma_rates_bps, path_loss_db, shannon_rate_bps


def test_uma_nlos_path_loss():
    assert path_loss_db("uma_nlos", np.array([300.0]), 3.5)[0] == pytest.approx(121.3, rel=0.01)
    # NLOS is never below LOS
    d = np.linspace(40, 2000, 50)
    assert (path_loss_db("uma_nlos", d, 3.5) >= path_loss_db("uma_los", d, 3.5)).all()


def test_single_uploader_rate():
    loss = path_loss_db("uma_nlos", np.array([300.0]), 3.5)
    assert shannon_rate_bps(20e6, 23.0, loss, 5.0)[0] / 1e6 == pytest.approx(13.4, rel=0.05)


def test_ofdma_share_of_ten():
    loss = np.repeat(path_loss_db("uma_nlos", np.array([300.0]), 3.5), 10)
    rates = ofdma_rates_bps(np.zeros(10, int), 20e6, 23.0, loss, 5.0)
    assert rates / 1e6 == pytest.approx(np.full(10, 5.6), rel=0.05)


def test_cells_do_not_share():
    loss = np.full(4, 121.3)
    rates = ofdma_rates_bps(np.array([0, 1, 1, 2]), 20e6, 23.0, loss, 5.0)
    assert rates[0] == rates[3] > rates[1] == rates[2]
