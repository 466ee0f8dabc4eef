"""The radio against the worked example of REFERENCE.md section 5 (3.5 GHz, UMa NLOS, 300 m, 23 dBm,
20 MHz, noise figure 5 dB)."""

import numpy as np
import pytest

from network_models import (
    apply_outage,
    noise_dbm,
    ofdma_rates_bps,
    path_loss_db,
    shannon_rate_bps,
    snr_db,
    tdma_rates_bps,
)


def test_uma_nlos_path_loss():
    assert path_loss_db("uma_nlos", np.array([300.0]), 3.5)[0] == pytest.approx(121.3, rel=0.01)
    # The same place with a line of sight, before the 560 m breakpoint, by hand:
    # 28 + 22 log10(sqrt(300^2 + 23.5^2)) + 20 log10(3.5) = 28 + 54.52 + 10.88 = 93.40 dB, about 28 dB less
    assert path_loss_db("uma_los", 300.0, 3.5) == pytest.approx(93.40, abs=0.01)


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


def test_tdma_share_of_ten():
    loss = np.repeat(path_loss_db("uma_nlos", np.array([300.0]), 3.5), 10)
    rates = tdma_rates_bps(np.zeros(10, int), 20e6, 23.0, loss, 5.0)
    assert rates / 1e6 == pytest.approx(np.full(10, 1.34), rel=0.05)


def test_tdma_alone_equals_ofdma_alone_and_loses_when_shared():
    loss = np.array([110.0, 121.3, 121.3, 130.0])
    cells = np.array([0, 1, 1, 2])
    tdma = tdma_rates_bps(cells, 20e6, 23.0, loss, 5.0)
    ofdma = ofdma_rates_bps(cells, 20e6, 23.0, loss, 5.0)
    assert tdma[[0, 3]] == pytest.approx(ofdma[[0, 3]])
    assert (tdma[1:3] < ofdma[1:3]).all()
    assert tdma[1] == pytest.approx(shannon_rate_bps(20e6, 23.0, 121.3, 5.0) / 2)


def test_snr_of_the_worked_example():
    # Noise over 20 MHz with a 5 dB noise figure is -95.99 dBm; 23 - 121.3 + 95.99 = -2.31 dB.
    assert noise_dbm(20e6, 5.0) == pytest.approx(-95.99, abs=0.01)
    assert snr_db(20e6, 23.0, 121.3, 5.0) == pytest.approx(-2.31, abs=0.01)
    # A narrower share has less noise: ten times narrower, 10 dB more SNR.
    assert snr_db(2e6, 23.0, 121.3, 5.0) - snr_db(20e6, 23.0, 121.3, 5.0) == pytest.approx(10.0)


def test_outage_zeroes_links_below_the_threshold():
    loss = np.array([100.0, 121.3, 140.0])
    snr = snr_db(20e6, 23.0, loss, 5.0)
    rates = apply_outage(shannon_rate_bps(20e6, 23.0, loss, 5.0), snr, threshold_db=-5.0)
    assert rates[0] > rates[1] > 0 and rates[2] == 0.0
