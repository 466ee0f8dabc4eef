"""Path loss models of 3GPP TR 38.901 Table 7.4.1-1, free space and log-distance (REFERENCE.md section 5)."""

import math

import numpy as np
import pytest

from network_models import PATH_LOSS_MODELS, SHADOWING_SIGMA_DB, los_probability, path_loss_db, shadowing_sigma_db
from network_models.pathloss import _effective_breakpoint_m



def test_worked_example_and_every_model_is_listed():
    assert path_loss_db("uma_nlos", 300.0, 3.5) == pytest.approx(121.3, abs=0.05)
    assert set(SHADOWING_SIGMA_DB) == set(PATH_LOSS_MODELS)
    assert SHADOWING_SIGMA_DB["umi_nlos"] == 7.82 and SHADOWING_SIGMA_DB["free_space"] == 0.0


# Hand evaluations of the table's formulas at 3.5 GHz, device at 1.5 m, default heights.
@pytest.mark.parametrize(
    "model, d2, expected",
    [
        # UMa LOS before d'_BP = 4 * 24 * 0.5 * 3.5e9 / 3e8 = 560 m
        ("uma_los", 200.0, 28.0 + 22 * math.log10(math.hypot(200, 23.5)) + 20 * math.log10(3.5)),
        # UMa LOS after the breakpoint
        ("uma_los", 1500.0, 28.0 + 40 * math.log10(math.hypot(1500, 23.5)) + 20 * math.log10(3.5)
         - 9 * math.log10(560.0**2 + 23.5**2)),
        # UMi NLOS (its formula is above LOS here); BS at 10 m
        ("umi_nlos", 100.0, 22.4 + 35.3 * math.log10(math.hypot(100, 8.5)) + 21.3 * math.log10(3.5)),
        # UMi LOS after d'_BP = 4 * 9 * 0.5 * 3.5e9 / 3e8 = 210 m
        ("umi_los", 400.0, 32.4 + 40 * math.log10(math.hypot(400, 8.5)) + 20 * math.log10(3.5)
         - 9.5 * math.log10(210.0**2 + 8.5**2)),
        # RMa LOS before d_BP = 2 pi * 35 * 1.5 * 3.5e9 / 3e8 = 3848 m; h = 5 m
        ("rma_los", 1000.0, 20 * math.log10(40 * math.pi * math.hypot(1000, 33.5) * 3.5 / 3)
         + min(0.03 * 5**1.72, 10) * math.log10(math.hypot(1000, 33.5)) - min(0.044 * 5**1.72, 14.77)
         + 0.002 * math.log10(5) * math.hypot(1000, 33.5)),
        # RMa NLOS with W = 20 m, h = 5 m, h_BS = 35 m
        ("rma_nlos", 1000.0, 161.04 - 7.1 * math.log10(20) + 7.5 * math.log10(5)
         - (24.37 - 3.7 * (5 / 35) ** 2) * math.log10(35)
         + (43.42 - 3.1 * math.log10(35)) * (math.log10(math.hypot(1000, 33.5)) - 3)
         + 20 * math.log10(3.5) - (3.2 * math.log10(11.75 * 1.5) ** 2 - 4.97)),
    ],
)
def test_formulas_by_hand(model, d2, expected):
    assert path_loss_db(model, d2, 3.5) == pytest.approx(expected, abs=1e-9)


def test_breakpoint_bends_los_from_22_to_40_db_per_decade():
    bp = _effective_breakpoint_m(3.5, 25.0, 1.5)
    assert bp == pytest.approx(560.0)
    # Continuous at the breakpoint: the standard chose the 9 log10(.) term for that.
    below, above = path_loss_db("uma_los", np.array([bp * (1 - 1e-9), bp * (1 + 1e-9)]), 3.5)
    assert below == pytest.approx(above, abs=1e-6)
    near = path_loss_db("uma_los", np.array([100.0, 200.0]), 3.5)
    far = path_loss_db("uma_los", np.array([1000.0, 2000.0]), 3.5)
    ratio = math.hypot(200, 23.5) / math.hypot(100, 23.5)
    assert near[1] - near[0] == pytest.approx(22 * math.log10(ratio))
    ratio = math.hypot(2000, 23.5) / math.hypot(1000, 23.5)
    assert far[1] - far[0] == pytest.approx(40 * math.log10(ratio))
    # The breakpoint moves out with frequency, so at 28 GHz 1 km is still before it.
    assert path_loss_db("uma_los", 1000.0, 28.0) == pytest.approx(
        28.0 + 22 * math.log10(math.hypot(1000, 23.5)) + 20 * math.log10(28.0))


def test_rma_los_is_near_continuous_at_its_breakpoint():
    bp = 2 * math.pi * 35 * 1.5 * 3.5e9 / 3e8
    below, above = path_loss_db("rma_los", np.array([bp - 1e-6, bp + 1e-6]), 3.5)
    assert abs(below - above) < 0.05  # PL1(d_BP) is taken at d_BP, the 40 log10 term at the 3D distance


def test_nlos_takes_the_los_value_where_its_own_formula_is_lower():
    """TR 38.901 defines PL_NLOS = max(PL_LOS, PL'_NLOS). RMa at 10 m, 3.5 GHz, h_UT 1.5 m, worked by hand:
    d3D = sqrt(10^2 + 33.5^2) = 34.96 m;
    PL1 = 20 log10(40 pi 34.96 x 3.5 / 3) + 0.03 x 5^1.72 log10(34.96) - 0.044 x 5^1.72 + 0.002 log10(5) 34.96
        = 74.19 + 0.738 - 0.701 + 0.049 = 74.28 dB;
    PL'_NLOS = 161.04 - 7.1 log10(20) + 7.5 log10(5) - (24.37 - 3.7 (5/35)^2) log10(35)
             + (43.42 - 3.1 log10(35)) (log10(34.96) - 3) + 20 log10(3.5) - (3.2 log10(17.625)^2 - 4.97)
             = 161.04 - 9.24 + 5.24 - 37.51 - 56.26 + 10.88 + 0.00 = 74.16 dB, below PL1: so NLOS is 74.28."""
    assert path_loss_db("rma_los", 10.0, 3.5) == pytest.approx(74.28, abs=0.01)
    assert path_loss_db("rma_nlos", 10.0, 3.5) == pytest.approx(74.28, abs=0.01)
    # At 1 km its own formula is far above LOS (hand: 122.1 dB; test_formulas_by_hand has the terms).
    assert path_loss_db("rma_nlos", 1000.0, 3.5) - path_loss_db("rma_los", 1000.0, 3.5) > 10.0


# TR 38.901 Table 7.4.2-1 evaluated by hand at h_UT = 1.5 m unless stated.
@pytest.mark.parametrize(
    "family, d, expected",
    [
        ("uma", 10.0, 1.0),
        ("uma", 18.0, 1.0),
        ("uma", 100.0, 0.18 + math.exp(-100 / 63) * 0.82),  # 0.18 + 0.2045 x 0.82 = 0.3477
        ("uma", 300.0, 0.06 + math.exp(-300 / 63) * 0.94),  # 0.06 + 0.00856 x 0.94 = 0.0680
        ("umi", 100.0, 0.18 + math.exp(-100 / 36) * 0.82),  # 0.18 + 0.0622 x 0.82 = 0.2310
        ("umi", 18.0, 1.0),
        ("rma", 10.0, 1.0),
        ("rma", 1010.0, math.exp(-1.0)),  # 0.3679
    ],
)
def test_los_probability_by_hand(family, d, expected):
    assert los_probability(family, d) == pytest.approx(expected, rel=1e-12)


def test_los_probability_published_points_and_height():
    assert los_probability("uma", 100.0) == pytest.approx(0.3477, abs=5e-5)
    assert los_probability("umi", 100.0) == pytest.approx(0.2310, abs=5e-5)
    # UMa, device at 23 m: C' = ((23 - 13) / 10)^1.5 = 1; at 100 m the factor is 1 + 1.25 x 1 x exp(-2/3) = 1.6418
    assert los_probability("uma", 100.0, ue_height_m=23.0) == pytest.approx(0.3477 * 1.6418, abs=1e-4)
    # A higher device changes nothing below 13 m (C' = 0).
    assert los_probability("uma", 100.0, ue_height_m=12.0) == los_probability("uma", 100.0)
    with pytest.raises(ValueError, match="LOS probability"):
        los_probability("free", 100.0)


def test_mixed_family_uses_each_devices_draw():
    d = np.array([100.0, 100.0, 300.0])
    los = np.array([True, False, False])
    mixed = path_loss_db("uma", d, 3.5, los=los)
    # 100 m LOS before the 560 m breakpoint: 28 + 22 log10(sqrt(100^2 + 23.5^2)) + 20 log10(3.5) = 83.14 dB;
    # 300 m NLOS is the worked example's 121.3 dB.
    assert mixed[0] == pytest.approx(83.14, abs=0.01)
    assert mixed[2] == pytest.approx(121.3, abs=0.05)
    assert mixed[1] > mixed[0] + 10
    with pytest.raises(ValueError, match="line-of-sight"):
        path_loss_db("uma", d, 3.5)
    assert shadowing_sigma_db("uma", los).tolist() == [4.0, 6.0, 6.0]
    assert shadowing_sigma_db("umi_nlos") == 7.82


def test_device_height_and_base_station_height():
    d = np.array([300.0, 1000.0])
    # A higher device clears more clutter: less NLOS loss.
    assert (path_loss_db("uma_nlos", d, 3.5, ue_height_m=10.0) < path_loss_db("uma_nlos", d, 3.5)).all()
    low = path_loss_db("umi_los", d, 3.5, bs_height_m=6.0)
    assert low.shape == (2,) and not np.allclose(low, path_loss_db("umi_los", d, 3.5))
    with pytest.raises(ValueError, match="outside"):
        path_loss_db("uma_nlos", d, 3.5, ue_height_m=0.5)
    with pytest.raises(ValueError, match="outside"):
        path_loss_db("rma_los", d, 3.5, ue_height_m=12.0)
    with pytest.raises(ValueError, match="above the device"):
        path_loss_db("umi_los", d, 3.5, ue_height_m=12.0, bs_height_m=10.0)


def test_free_space_and_log_distance():
    assert path_loss_db("free_space", 1000.0, 2.4) == pytest.approx(100.05, abs=0.01)
    d = np.array([10.0, 20.0, 100.0])
    fs = path_loss_db("free_space", d, 2.4)
    assert fs[1] - fs[0] == pytest.approx(20 * math.log10(2))
    # Log-distance starts from free space at 1 m and adds 10 n dB per decade.
    ld = path_loss_db("log_distance", d, 2.4, exponent=3.0)
    assert path_loss_db("log_distance", 1.0, 2.4) == pytest.approx(path_loss_db("free_space", 1.0, 2.4))
    assert ld[2] - ld[0] == pytest.approx(30.0)
    assert path_loss_db("log_distance", 100.0, 2.4) - path_loss_db("free_space", 1.0, 2.4) == pytest.approx(70.0)
    # Closer than the 1 m reference the loss stays finite.
    assert np.isfinite(path_loss_db("free_space", 0.0, 2.4))
    with pytest.raises(ValueError, match="exponent"):
        path_loss_db("log_distance", d, 2.4, exponent=0.0)


@pytest.mark.parametrize("model", PATH_LOSS_MODELS)
def test_vectorised_over_any_shape(model):
    d = np.linspace(20, 900, 12).reshape(3, 4)
    los = np.arange(12).reshape(3, 4) % 2 == 0
    loss = path_loss_db(model, d, 3.5, los=los)
    assert loss.shape == (3, 4)
    assert loss[1, 2] == pytest.approx(path_loss_db(model, d[1, 2], 3.5, los=los[1, 2]))


def test_rejects_unknown_model_and_bad_carrier():
    with pytest.raises(ValueError, match="unknown path loss model"):
        path_loss_db("cost231", 100.0, 3.5)
    with pytest.raises(ValueError, match="carrier"):
        path_loss_db("uma_los", 100.0, 0.0)
