"""Staleness functions, FedAsync and FedBuff against their formulas."""

import pytest
import torch

from aggregation import AdapterLayout, ClientUpdate, StrategyContext, build_strategy
from aggregation.staleness import staleness_weight

LAYOUT = AdapterLayout.from_shapes([("w", (3,))], rank=1, scaling=1.0)


def update(client, delta, base_version, n=1):
    return ClientUpdate(client, torch.tensor(delta, dtype=torch.float32), n, base_version, steps=1)


def built(name, **params):
    strategy = build_strategy(name, **params)
    strategy.setup(StrategyContext(LAYOUT))
    return strategy


@pytest.mark.parametrize("s", [0, 1, 2, 5, 9])
def test_staleness_functions_match_xie_et_al(s):
    t = torch.tensor([s])
    assert staleness_weight("constant", t).item() == 1.0
    assert staleness_weight("polynomial", t, a=0.5).item() == pytest.approx((s + 1) ** -0.5)
    assert staleness_weight("polynomial", t, a=2.0).item() == pytest.approx((s + 1) ** -2.0)
    hinge = 1.0 if s <= 4 else 1.0 / (0.5 * (s - 4) + 1.0)
    assert staleness_weight("hinge", t, a=0.5, b=4.0).item() == pytest.approx(hinge)


def test_fedbuff_applies_the_staleness_weighted_mean():
    strategy = built("fedbuff", buffer_size=2, server_lr=0.5)
    assert not strategy.ready(1) and strategy.ready(2)
    x = torch.zeros(3)
    ups = [update(0, [1.0, 0.0, 2.0], base_version=3), update(1, [0.0, 4.0, 2.0], base_version=0)]
    out = strategy.aggregate(x, 3, ups)  # staleness 0 and 3: weights 1 and 1/2
    expected = 0.5 * (torch.tensor([1.0, 0.0, 2.0]) * 1.0 + torch.tensor([0.0, 4.0, 2.0]) * 0.5) / 2
    assert torch.allclose(out, expected)


def test_fedasync_mixes_the_client_model_from_its_base_version():
    strategy = built("fedasync", alpha=0.5, staleness="constant")
    x0 = torch.tensor([0.0, 0.0, 0.0])
    x1 = strategy.aggregate(x0, 0, [update(0, [2.0, 2.0, 2.0], base_version=0)])
    assert torch.allclose(x1, torch.tensor([1.0, 1.0, 1.0]))  # (1 - a) x0 + a (x0 + delta)
    # a client that trained from x0 arrives at version 1: x_new = x0 + delta, mixed into x1
    x2 = strategy.aggregate(x1, 1, [update(1, [4.0, 0.0, 0.0], base_version=0)])
    assert torch.allclose(x2, 0.5 * x1 + 0.5 * (x0 + torch.tensor([4.0, 0.0, 0.0])))


def test_fedasync_polynomial_weight_and_forgotten_versions():
    strategy = built("fedasync", alpha=0.8, staleness="polynomial", staleness_a=1.0, max_staleness=1)
    x = torch.zeros(3)
    x = strategy.aggregate(x, 0, [update(0, [1.0, 1.0, 1.0], 0)])
    x2 = strategy.aggregate(x, 1, [update(1, [1.0, 1.0, 1.0], 0)])  # staleness 1: a_t = 0.8 / 2
    assert torch.allclose(x2, 0.6 * x + 0.4 * torch.ones(3))
    assert not strategy.admit(base_version=0, version=2) and strategy.admit(base_version=1, version=2)


@pytest.mark.parametrize("params, field", [
    ({"alpha": 0.0}, "alpha"), ({"staleness": "linear"}, "staleness"), ({"staleness_a": -1.0}, "staleness_a"),
])
def test_bad_parameters_name_the_field(params, field):
    with pytest.raises(ValueError, match=field):
        build_strategy("fedasync", **params)
    if field != "alpha":
        with pytest.raises(ValueError, match=field):
            build_strategy("fedbuff", **params)


# Staleness weights worked out by hand (Xie et al. 2019, sec. 5.2 / REFERENCE.md section 2), as literals: the
# test above recomputes each formula with the same expression as the code, this one does not.
HAND_WEIGHTS = [
    # polynomial s = (t - tau + 1)^(-a)
    ("polynomial", 0.5, 4.0, 0, 1.0),  # 1^-0.5
    ("polynomial", 0.5, 4.0, 3, 0.5),  # 4^-0.5 = 1/2
    ("polynomial", 0.5, 4.0, 8, 1 / 3),  # 9^-0.5 = 1/3
    ("polynomial", 0.5, 4.0, 99, 0.1),  # 100^-0.5
    ("polynomial", 2.0, 4.0, 1, 0.25),  # 2^-2
    ("polynomial", 2.0, 4.0, 9, 0.01),  # 10^-2
    # hinge s = 1 if t - tau <= b else 1 / (a (t - tau - b) + 1)
    ("hinge", 0.5, 4.0, 4, 1.0),  # at the hinge: still 1
    ("hinge", 0.5, 4.0, 5, 2 / 3),  # 1 / (0.5 * 1 + 1) = 1 / 1.5
    ("hinge", 0.5, 4.0, 6, 0.5),  # 1 / (0.5 * 2 + 1)
    ("hinge", 0.5, 4.0, 12, 0.2),  # 1 / (0.5 * 8 + 1)
    ("hinge", 10.0, 0.0, 1, 1 / 11),  # 1 / (10 * 1 + 1)
    ("constant", 0.5, 4.0, 50, 1.0),
]


@pytest.mark.parametrize("function, a, b, s, expected", HAND_WEIGHTS)
def test_staleness_weights_by_hand(function, a, b, s, expected):
    assert staleness_weight(function, torch.tensor([s]), a=a, b=b).item() == pytest.approx(expected, rel=1e-12)


def test_fedbuff_default_weight_is_one_over_sqrt_one_plus_staleness_by_hand():
    # Defaults: K = 10, eta = 1, s = 1 / sqrt(1 + staleness) (Nguyen et al. 2022; FLSim's
    # PolynomialStalenessWeight with exponent 0.5). At version 15, three updates with staleness 0, 8 and 15
    # weigh 1, 1/3 and 1/4: (1 * (3, 0, 0) + 1/3 * (0, 3, 0) + 1/4 * (0, 0, 4)) / 3 = (1, 1/3, 1/3).
    strategy = built("fedbuff")
    assert not strategy.ready(9) and strategy.ready(10)
    ups = [update(0, [3.0, 0.0, 0.0], 15), update(1, [0.0, 3.0, 0.0], 7), update(2, [0.0, 0.0, 4.0], 0)]
    out = strategy.aggregate(torch.tensor([1.0, 1.0, 1.0]), 15, ups)
    assert torch.allclose(out, torch.tensor([2.0, 4 / 3, 4 / 3]), rtol=1e-6, atol=0)
    # the test above as literals: 0.5 * (1 * (1, 0, 2) + 1/2 * (0, 4, 2)) / 2 = 0.25 * (1, 2, 3)
    strategy = built("fedbuff", buffer_size=2, server_lr=0.5)
    ups = [update(0, [1.0, 0.0, 2.0], base_version=3), update(1, [0.0, 4.0, 2.0], base_version=0)]
    out = strategy.aggregate(torch.zeros(3), 3, ups)
    assert torch.allclose(out, torch.tensor([0.25, 0.5, 0.75]), rtol=1e-6, atol=0)


def test_fedasync_hinge_sequence_by_hand():
    # alpha = 0.6, hinge a = 0.5, b = 2. Three fresh updates (staleness 0, alpha_t = 0.6), then one trained
    # from version 0 arriving at version 3 (staleness 3 > b: s = 1 / (0.5 * 1 + 1) = 2/3, alpha_t = 0.4).
    strategy = built("fedasync", alpha=0.6, staleness="hinge", staleness_a=0.5, staleness_b=2.0)
    x0 = torch.zeros(3)
    x1 = strategy.aggregate(x0, 0, [update(0, [1.0, 2.0, 3.0], 0)])  # 0.4 * 0 + 0.6 * (1, 2, 3)
    assert torch.allclose(x1, torch.tensor([0.6, 1.2, 1.8]), rtol=1e-6, atol=0)
    x2 = strategy.aggregate(x1, 1, [update(1, [1.0, 0.0, 0.0], 1)])  # x1 + 0.6 * (1, 0, 0)
    assert torch.allclose(x2, torch.tensor([1.2, 1.2, 1.8]), rtol=1e-6, atol=0)
    x3 = strategy.aggregate(x2, 2, [update(2, [0.0, 1.0, 0.0], 2)])  # x2 + 0.6 * (0, 1, 0)
    assert torch.allclose(x3, torch.tensor([1.2, 1.8, 1.8]), rtol=1e-6, atol=0)
    # x_new = x0 + (2, 2, 2); x4 = 0.6 * (1.2, 1.8, 1.8) + 0.4 * (2, 2, 2) = (1.52, 1.88, 1.88). The polynomial
    # weight (4^-0.5 = 0.5, alpha_t = 0.3) would give (1.44, 1.86, 1.86); a hinge without "- b"
    # (1 / (0.5 * 3 + 1) = 0.4, alpha_t = 0.24) (1.392, 1.848, 1.848); mixing into x0 instead of x3 (0.8, 0.8, 0.8).
    x4 = strategy.aggregate(x3, 3, [update(3, [2.0, 2.0, 2.0], 0)])
    assert torch.allclose(x4, torch.tensor([1.52, 1.88, 1.88]), rtol=1e-6, atol=0)
