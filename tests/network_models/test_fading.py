"""Block fading gains: mean power 1, Rician spread shrinking with its K-factor."""

import numpy as np
import pytest

from network_models import FADING_MODELS, fading_gain_db

N = 200_000


@pytest.mark.parametrize("model", ["rayleigh", "rician"])
def test_mean_linear_gain_is_one(model):
    gain = 10 ** (fading_gain_db(np.random.default_rng(1), model, N) / 10)
    assert gain.mean() == pytest.approx(1.0, abs=0.01)


def test_rayleigh_power_is_exponential():
    gain = 10 ** (fading_gain_db(np.random.default_rng(2), "rayleigh", N) / 10)
    assert gain.var() == pytest.approx(1.0, abs=0.03)
    # P(|h|^2 < 0.1) = 1 - exp(-0.1): about one transfer in ten sits in a 10 dB fade.
    assert (gain < 0.1).mean() == pytest.approx(1 - np.exp(-0.1), abs=0.005)


def test_rician_variance_shrinks_as_k_grows():
    variances = []
    for k_db in (-10.0, 0.0, 10.0, 20.0):
        gain = 10 ** (fading_gain_db(np.random.default_rng(3), "rician", N, k_factor_db=k_db) / 10)
        k = 10 ** (k_db / 10)
        assert gain.var() == pytest.approx((1 + 2 * k) / (1 + k) ** 2, rel=0.05)
        variances.append(gain.var())
    assert variances == sorted(variances, reverse=True)


def test_no_fading_shapes_and_seeding():
    assert FADING_MODELS == ("none", "rayleigh", "rician")
    assert (fading_gain_db(np.random.default_rng(0), "none", (2, 3)) == 0).all()
    a = fading_gain_db(np.random.default_rng(7), "rician", (4, 5))
    b = fading_gain_db(np.random.default_rng(7), "rician", (4, 5))
    assert a.shape == (4, 5) and (a == b).all()
    with pytest.raises(ValueError, match="unknown fading model"):
        fading_gain_db(np.random.default_rng(0), "nakagami", 3)
