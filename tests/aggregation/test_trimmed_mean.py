"""Coordinate-wise trimmed mean on known tensors and against sign-flipped attackers."""

import pytest
import torch

import aggregation.trimmed_mean  # noqa: F401  (registers "trimmed_mean")
from aggregation import AdapterLayout, ClientUpdate, StrategyContext, build_strategy
from aggregation.registry import strategy_parameters

CENTER = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 2.0])
LAYOUT = AdapterLayout.from_shapes(
    [("x.lora_A.default.weight", (2, 2)), ("x.lora_B.default.weight", (1, 2))], rank=2, scaling=1.0
)


def update(client, delta, n=1):
    delta = torch.as_tensor(delta, dtype=torch.float32)
    return ClientUpdate(client=client, delta=delta, num_samples=n, base_version=0, steps=1)


def built(**params):
    strategy = build_strategy("trimmed_mean", **params)
    strategy.setup(StrategyContext(layout=LAYOUT))
    return strategy


def test_defaults_and_registry():
    assert strategy_parameters("trimmed_mean") == {"beta": 0.2}
    assert built().config.beta == 0.2


def test_trims_one_at_each_end_by_hand():
    # K = 5, beta = 0.2: b = 1; coordinate 0 keeps (1, 2, 3), coordinate 1 keeps (0, 1, 4)
    ups = [update(k, d) for k, d in enumerate([[1.0, 100.0], [2.0, 0.0], [3.0, 4.0], [-50.0, 1.0], [60.0, -9.0]])]
    assert torch.allclose(built().aggregate(torch.ones(2), 0, ups), torch.tensor([3.0, 1.0 + 5.0 / 3.0]))


def test_too_few_to_trim_is_the_plain_mean():
    # K = 4, beta = 0.2: floor(0.8) = 0, the unweighted mean (FedAvg with these counts would give 1.5)
    ups = [update(0, [0.0], 5), update(1, [2.0]), update(2, [4.0]), update(3, [6.0])]
    assert torch.allclose(built().aggregate(torch.zeros(1), 0, ups), torch.tensor([3.0]))
    assert torch.allclose(build_strategy("fedavg").aggregate(torch.zeros(1), 0, ups), torch.tensor([1.5]))


def test_largest_trim_is_the_median():
    # K = 5, beta = 0.4: b = 2, one value left per coordinate
    ups = [update(k, [v, -v]) for k, v in enumerate([7.0, -3.0, 1.0, 20.0, 0.5])]
    assert torch.equal(built(beta=0.4).aggregate(torch.zeros(2), 0, ups), torch.tensor([1.0, -1.0]))


def test_sign_flipped_attackers():
    gen = torch.Generator().manual_seed(7)
    honest = CENTER + 0.1 * torch.randn(10, CENTER.numel(), generator=gen)
    ups = [update(k, honest[k]) for k in range(10)] + [update(10 + j, -10 * CENTER, n=100) for j in range(2)]
    x = torch.zeros_like(CENTER)
    # K = 12, beta = 0.2: b = 2 covers both attackers
    assert torch.linalg.norm(built().aggregate(x, 0, ups) - honest.mean(dim=0)) < 0.2
    assert torch.linalg.norm(build_strategy("fedavg").aggregate(x, 0, ups) - honest.mean(dim=0)) > 20


@pytest.mark.parametrize("beta", [-0.1, 0.5, float("nan")])
def test_invalid_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        build_strategy("trimmed_mean", beta=beta)
