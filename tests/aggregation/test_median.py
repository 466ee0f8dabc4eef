"""Coordinate-wise median on known tensors and against sign-flipped attackers."""

import torch

import aggregation.median  # noqa: F401  (registers "median")
from aggregation import AdapterLayout, ClientUpdate, StrategyContext, build_strategy
from aggregation.registry import strategy_parameters

CENTER = torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0, 2.0])
LAYOUT = AdapterLayout.from_shapes(
    [("x.lora_A.default.weight", (2, 2)), ("x.lora_B.default.weight", (1, 2))], rank=2, scaling=1.0
)


def update(client, delta, n=1):
    delta = torch.as_tensor(delta, dtype=torch.float32)
    return ClientUpdate(client=client, delta=delta, num_samples=n, base_version=0, steps=1)


def built():
    strategy = build_strategy("median")
    strategy.setup(StrategyContext(layout=LAYOUT))
    return strategy


def attacked_round():
    """10 honest deltas near CENTER, 2 sign-flipped and scaled by 10 that claim many samples."""
    gen = torch.Generator().manual_seed(7)
    honest = CENTER + 0.1 * torch.randn(10, CENTER.numel(), generator=gen)
    ups = [update(k, honest[k]) for k in range(10)] + [update(10 + j, -10 * CENTER, n=100) for j in range(2)]
    return honest.mean(dim=0), ups


def test_registry_without_parameters():
    assert strategy_parameters("median") == {}
    assert built().name == "median"


def test_odd_count_by_hand():
    x = torch.tensor([1.0, 1.0, 1.0])
    ups = [update(0, [1.0, 5.0, -1.0], 9), update(1, [3.0, -2.0, 0.0]), update(2, [2.0, 0.0, 7.0])]
    # sample counts do not matter: per coordinate the middle value of (1, 3, 2), (5, -2, 0), (-1, 0, 7)
    assert torch.equal(built().aggregate(x, 0, ups), torch.tensor([3.0, 1.0, 1.0]))


def test_even_count_averages_the_middle_two():
    ups = [update(k, [v]) for k, v in enumerate([4.0, -1.0, 10.0, 0.0])]
    # sorted (-1, 0, 4, 10): (0 + 4) / 2, where torch.median would give the lower one, 0
    assert torch.equal(built().aggregate(torch.zeros(1), 0, ups), torch.tensor([2.0]))


def test_sign_flipped_attackers():
    honest_mean, ups = attacked_round()
    x = torch.zeros_like(CENTER)
    assert torch.linalg.norm(built().aggregate(x, 0, ups) - honest_mean) < 0.5
    assert torch.linalg.norm(build_strategy("fedavg").aggregate(x, 0, ups) - honest_mean) > 20
