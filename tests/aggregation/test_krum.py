"""Krum and Multi-Krum: scores by hand, against brute force, and against sign-flipped attackers."""

import itertools

import numpy as np
import pytest
import torch

import aggregation.krum  # noqa: F401  (registers "krum", "multikrum")
from aggregation import AdapterLayout, AggregationError, ClientUpdate, StrategyContext, build_strategy
from aggregation.krum import krum_scores
from aggregation.registry import strategy_parameters

CENTER = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 2.0])
LAYOUT = AdapterLayout.from_shapes(
    [("x.lora_A.default.weight", (1, 1)), ("x.lora_B.default.weight", (1, 1))], rank=1, scaling=1.0
)
# a, b, c, d close together, e far; n = 5, f = 1: each score sums the 2 nearest squared distances
POINTS = [[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [10.0, 10.0]]
SCORES = [3.0, 2.0, 6.0, 3.0, 326.0]  # a: 1 + 2, b: 1 + 1, c: 2 + 4, d: 1 + 2, e: 162 + 164


def update(client, delta, n=1):
    delta = torch.as_tensor(delta, dtype=torch.float32)
    return ClientUpdate(client=client, delta=delta, num_samples=n, base_version=0, steps=1)


def built(name, **params):
    strategy = build_strategy(name, **params)
    strategy.setup(StrategyContext(layout=LAYOUT))
    return strategy


def points():
    return [update(k, p) for k, p in enumerate(POINTS)]


def test_defaults_and_registry():
    assert strategy_parameters("krum") == {"f": 1}
    assert strategy_parameters("multikrum") == {"f": 1, "m": 0}
    assert built("krum").config.f == 1 and built("multikrum").config.m == 0
    assert built("krum", f=2).traits.min_updates == 7  # n > 2f + 2


def test_scores_by_hand():
    assert torch.allclose(krum_scores(torch.tensor(POINTS), 1), torch.tensor(SCORES, dtype=torch.float64))


def test_scores_match_brute_force():
    gen = torch.Generator().manual_seed(3)
    deltas = torch.randn(9, 40, generator=gen) * torch.arange(1, 10)[:, None]
    x = deltas.double().numpy()
    brute = [
        sum(sorted(float(((x[i] - x[j]) ** 2).sum()) for j in range(9) if j != i)[: 9 - 2 - 2]) for i in range(9)
    ]
    assert np.allclose(krum_scores(deltas, 2).numpy(), brute, rtol=1e-9)


def test_krum_picks_the_lowest_score():
    strategy = built("krum")
    assert torch.equal(strategy.aggregate(torch.ones(2), 0, points()), torch.tensor([2.0, 1.0]))  # b
    assert strategy.metrics() == {"rejected": 4.0}


def test_multikrum_by_hand():
    # m = 2: b (2), then a and d tie at 3 and the lower client, a, wins
    strategy = built("multikrum", m=2)
    assert torch.allclose(strategy.aggregate(torch.zeros(2), 0, points()), torch.tensor([0.5, 0.0]))
    assert strategy.metrics() == {"rejected": 3.0}
    # m = 3: b, a, d
    assert torch.allclose(built("multikrum", m=3).aggregate(torch.zeros(2), 0, points()), torch.tensor([2 / 3, 1 / 3]))
    # m = 0 means n - f = 4: all but e, averaged plainly whatever the sample counts
    ups = [update(k, p, n=10**k) for k, p in enumerate(POINTS)]
    strategy = built("multikrum")
    assert torch.allclose(strategy.aggregate(torch.zeros(2), 0, ups), torch.tensor([0.5, 0.75]))
    assert strategy.metrics() == {"rejected": 1.0}
    # m above n - f is capped so that f updates are always left out
    assert torch.allclose(built("multikrum", m=9).aggregate(torch.zeros(2), 0, points()), torch.tensor([0.5, 0.75]))


def test_too_few_updates_names_n_and_f():
    with pytest.raises(AggregationError, match=r"n = 4 with f = 1"):
        built("krum").aggregate(torch.zeros(2), 0, points()[:4])
    with pytest.raises(AggregationError, match=r"n = 5 with f = 2"):
        built("multikrum", f=2).aggregate(torch.zeros(2), 0, points())


def test_sign_flipped_attackers():
    gen = torch.Generator().manual_seed(7)
    honest = CENTER + 0.1 * torch.randn(10, CENTER.numel(), generator=gen)
    ups = [update(k, honest[k]) for k in range(10)] + [update(10 + j, -10 * CENTER, n=100) for j in range(2)]
    x, mean = torch.zeros_like(CENTER), honest.mean(dim=0)
    for name in ("krum", "multikrum"):
        strategy = built(name, f=2)
        out = strategy.aggregate(x, 0, ups)
        # Krum returns one honest delta (within the noise), Multi-Krum the mean of n - f = 10 honest ones
        assert torch.linalg.norm(out - mean) < (0.6 if name == "krum" else 1e-5)
        assert strategy.metrics()["rejected"] == (11.0 if name == "krum" else 2.0)
    assert torch.linalg.norm(build_strategy("fedavg").aggregate(x, 0, ups) - mean) > 20


@pytest.mark.parametrize(
    "name, bad",
    list(itertools.product(["krum", "multikrum"], [{"f": -1}, {"f": 1.5}, {"f": True}])) + [("multikrum", {"m": -1})],
)
def test_invalid_parameters(name, bad):
    with pytest.raises(ValueError, match=f"{name}: {next(iter(bad))}"):
        build_strategy(name, **bad)
