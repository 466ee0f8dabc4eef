"""The radio against the worked example of REFERENCE.md section 5 (3.5 GHz, UMa NLOS, 300 m, 23 dBm,
20 MHz, noise figure 5 dB)."""

import numpy as np
import pytest

from network_models import SharedBand, noise_dbm, path_loss_db, shannon_rate_bps, snr_db


def test_uma_nlos_path_loss():
    assert path_loss_db("uma_nlos", np.array([300.0]), 3.5)[0] == pytest.approx(121.3, rel=0.01)
    # The same place with a line of sight, before the 560 m breakpoint, by hand:
    # 28 + 22 log10(sqrt(300^2 + 23.5^2)) + 20 log10(3.5) = 28 + 54.52 + 10.88 = 93.40 dB, about 28 dB less
    assert path_loss_db("uma_los", 300.0, 3.5) == pytest.approx(93.40, abs=0.01)


def test_single_uploader_rate():
    loss = path_loss_db("uma_nlos", np.array([300.0]), 3.5)
    assert shannon_rate_bps(20e6, 23.0, loss, 5.0)[0] / 1e6 == pytest.approx(13.4, rel=0.05)


def rates_of(n: int, scheme: str, loss: float) -> list[float]:
    """Rates of n equal uploads sharing one 20 MHz band from the same instant."""
    band = SharedBand(20e6, 5.0, scheme)
    for k in range(n):
        band.start(k, 8e6, 23.0, loss, now=0.0)
    return [band.rate_bps(k) for k in range(n)]


def test_ofdma_share_of_ten():
    loss = float(path_loss_db("uma_nlos", np.array([300.0]), 3.5)[0])
    assert np.array(rates_of(10, "ofdma", loss)) / 1e6 == pytest.approx(np.full(10, 5.6), rel=0.05)


def test_tdma_share_of_ten():
    loss = float(path_loss_db("uma_nlos", np.array([300.0]), 3.5)[0])
    assert np.array(rates_of(10, "tdma", loss)) / 1e6 == pytest.approx(np.full(10, 1.34), rel=0.05)


def test_tdma_alone_equals_ofdma_alone_and_loses_when_shared():
    for loss in (110.0, 130.0):
        assert rates_of(1, "tdma", loss) == pytest.approx(rates_of(1, "ofdma", loss))
    tdma, ofdma = rates_of(2, "tdma", 121.3), rates_of(2, "ofdma", 121.3)
    assert tdma[0] < ofdma[0]
    assert tdma[0] == pytest.approx(shannon_rate_bps(20e6, 23.0, 121.3, 5.0) / 2)


def test_snr_of_the_worked_example():
    # Noise over 20 MHz with a 5 dB noise figure is -95.99 dBm; 23 - 121.3 + 95.99 = -2.31 dB.
    assert noise_dbm(20e6, 5.0) == pytest.approx(-95.99, abs=0.01)
    assert snr_db(20e6, 23.0, 121.3, 5.0) == pytest.approx(-2.31, abs=0.01)
    # A narrower share has less noise: ten times narrower, 10 dB more SNR.
    assert snr_db(2e6, 23.0, 121.3, 5.0) - snr_db(20e6, 23.0, 121.3, 5.0) == pytest.approx(10.0)
