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
