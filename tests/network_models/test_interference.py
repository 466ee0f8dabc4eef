"""Inter-cell interference densities (load-factor model, REFERENCE.md section 5) and the SINR they give."""

import numpy as np
import pytest

from network_models import (
    SharedBand,
    cell_sites,
    downlink_interference_mw_per_hz,
    place_devices,
    uplink_interference_mw_per_hz,
)

B, NF, F_GHZ = 20e6, 5.0, 3.5

# TR 38.901 UMa NLOS by hand, 3.5 GHz, BS 25 m, device 1.5 m (so d3D = sqrt(d^2 + 23.5^2)):
#   300 m: d3D = 300.919; NLOS' = 13.54 + 39.08 x 2.478449 + 20 x 0.544068 = 121.279 dB;
#          LOS = 28 + 22 x 2.478449 + 10.881 = 93.41 dB (before the 560 m breakpoint), so PL = max = 121.279 dB.
#   500 m: d3D = 500.552; NLOS' = 13.54 + 39.08 x 2.699449 + 10.881 = 129.916 dB (LOS 98.27 dB).
PL_300_DB = 121.279
PL_500_DB = 129.916

# Two sites 600 m apart; a device of cell 0 halfway, 300 m from both.
SITES = np.array([[0.0, 0.0], [600.0, 0.0]])
MIDWAY = np.array([[300.0, 0.0]])


def test_downlink_two_sites_by_hand():
    # A busy neighbour at 46 dBm puts 10^((46 - 121.279) / 10) mW = 2.9654e-8 mW over 20 MHz: 1.4827e-15 mW/Hz.
    i = downlink_interference_mw_per_hz(MIDWAY, np.array([0]), SITES, 46.0, B, F_GHZ, load=1.0)
    assert i.shape == (1,)
    assert i[0] == pytest.approx(1.4827e-15, rel=1e-3)
    half = downlink_interference_mw_per_hz(MIDWAY, np.array([0]), SITES, 46.0, B, F_GHZ, load=0.5)
    assert half[0] == pytest.approx(0.5 * 1.4827e-15, rel=1e-3)


def test_cell_edge_downlink_sinr_at_full_load_is_about_0_db():
    """The device hears its own site and the neighbour equally (both 300 m): with the neighbour always busy,
    SINR = S / (N + S). By hand: S = 46 - 121.279 = -75.279 dBm, N = -95.990 dBm, SNR = 20.711 dB = 117.77;
    SINR = 117.77 / 118.77 = 0.99158; rate alone on 20 MHz = 20e6 log2(1.99158) = 19.878 Mb/s
    (137.84 Mb/s without interference). At half load: SINR = 117.77 / 59.89 = 1.9665, 31.376 Mb/s."""
    rates = {}
    for load in (0.0, 0.5, 1.0):
        i = downlink_interference_mw_per_hz(MIDWAY, np.array([0]), SITES, 46.0, B, F_GHZ, load=load)
        band = SharedBand(B, NF, split_power=True)
        band.start(1, 8e6, 46.0, PL_300_DB, now=0.0, interference_mw_per_hz=float(i[0]))
        rates[load] = band.rate_bps(1)
    assert rates[1.0] == pytest.approx(19.878e6, rel=1e-3)
    assert rates[0.5] == pytest.approx(31.376e6, rel=1e-3)
    # load 0: no interference at all, the plain SNR rate.
    assert rates[0.0] == pytest.approx(137.84e6, rel=1e-3)
    quiet = SharedBand(B, NF, split_power=True)
    quiet.start(1, 8e6, 46.0, PL_300_DB, now=0.0)
    assert rates[0.0] == quiet.rate_bps(1)


def test_uplink_two_sites_by_hand():
    """Cell 0 has devices 300 m and 500 m from site 1; cell 1 one device 300 m from site 0. All at 23 dBm.
    At site 0: 10^((23 - 121.279) / 10) mW / 20 MHz = 7.4311e-18 mW/Hz.
    At site 1: the mean of 10^((23 - 121.279) / 10) and 10^((23 - 129.916) / 10) mW, over 20 MHz = 4.2241e-18."""
    xy = np.array([[300.0, 0.0], [100.0, 0.0], [300.0, 0.0]])
    cell = np.array([0, 0, 1])
    i = uplink_interference_mw_per_hz(xy, cell, 23.0, SITES, B, F_GHZ, load=1.0)
    assert i.shape == (2,)
    np.testing.assert_allclose(i, [7.4311e-18, 4.2241e-18], rtol=1e-3)
    # Each cell's own load scales what it puts on the other: cell 0 busy 20 %, cell 1 busy 70 %.
    np.testing.assert_allclose(uplink_interference_mw_per_hz(xy, cell, 23.0, SITES, B, F_GHZ, load=[0.2, 0.7]),
                               [0.7 * 7.4311e-18, 0.2 * 4.2241e-18], rtol=1e-3)
    # Per-device powers: 3 dB less from cell 1's device halves what site 0 hears.
    powers = np.array([23.0, 23.0, 20.0])
    assert uplink_interference_mw_per_hz(xy, cell, powers, SITES, B, F_GHZ, load=1.0)[0] == pytest.approx(
        7.4311e-18 / 10 ** 0.3, rel=1e-3)


def test_load_zero_and_a_single_cell_give_zeros():
    xy, cell = np.array([[300.0, 0.0], [100.0, 0.0]]), np.array([0, 1])
    assert (downlink_interference_mw_per_hz(xy, cell, SITES, 46.0, B, F_GHZ, load=0.0) == 0).all()
    assert (uplink_interference_mw_per_hz(xy, cell, 23.0, SITES, B, F_GHZ, load=0.0) == 0).all()
    one = np.array([[0.0, 0.0]])
    lone = np.array([[100.0, 0.0], [-50.0, 20.0]])
    np.testing.assert_array_equal(
        downlink_interference_mw_per_hz(lone, np.zeros(2, int), one, 46.0, B, F_GHZ, load=1.0), [0.0, 0.0])
    np.testing.assert_array_equal(
        uplink_interference_mw_per_hz(lone, np.zeros(2, int), 23.0, one, B, F_GHZ, load=1.0), [0.0])


def test_only_sites_within_reach_interfere():
    # Sites at 0, 500 and 2000 m: nearest-site distances 500, 500, 1500, median 500 m; reach 2.5 -> 1250 m.
    # The third site is out of everybody's reach; the first two hear each other.
    sites = np.array([[0.0, 0.0], [500.0, 0.0], [2000.0, 0.0]])
    xy = np.array([[600.0, 0.0], [2100.0, 0.0]])
    i = downlink_interference_mw_per_hz(xy, np.array([1, 2]), sites, 46.0, B, F_GHZ, load=1.0)
    assert i[1] == 0.0
    # The device of cell 1 (600 m from site 0) hears only site 0; with a long reach, site 2 (1400 m) too.
    wide = downlink_interference_mw_per_hz(xy, np.array([1, 2]), sites, 46.0, B, F_GHZ, load=1.0, neighbours=10.0)
    assert wide[0] > i[0] > 0 and wide[1] > 0


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="load"):
        downlink_interference_mw_per_hz(MIDWAY, np.array([0]), SITES, 46.0, B, F_GHZ, load=-0.1)
    with pytest.raises(ValueError, match="cells must be integers"):
        downlink_interference_mw_per_hz(MIDWAY, np.array([2]), SITES, 46.0, B, F_GHZ, load=1.0)
    with pytest.raises(ValueError, match="band"):
        uplink_interference_mw_per_hz(MIDWAY, np.array([0]), 23.0, SITES, 0.0, F_GHZ, load=1.0)
    with pytest.raises(ValueError, match="reach"):
        downlink_interference_mw_per_hz(MIDWAY, np.array([0]), SITES, 46.0, B, F_GHZ, load=1.0, neighbours=0.0)


def test_a_thousand_cells_and_a_hundred_thousand_devices():
    """Runs at the scale of a capacity plan (without a dense devices x cells matrix); in a 1000-site hexagonal
    layout every device has neighbours, and the edge of a cell hears them more than its centre does."""
    sites = cell_sites(1000, 500.0, "hex")
    cell, distance, xy = place_devices(np.random.default_rng(1), 100_000, sites, 289.0)
    down = downlink_interference_mw_per_hz(xy, cell, sites, 46.0, B, F_GHZ, load=0.5)
    up = uplink_interference_mw_per_hz(xy, cell, 23.0, sites, B, F_GHZ, load=0.5)
    assert down.shape == (100_000,) and up.shape == (1000,)
    assert np.isfinite(down).all() and (down > 0).all() and (up > 0).all()
    assert np.median(down[distance > 200]) > 2 * np.median(down[distance < 100])
