"""FedAvgM: server momentum over two steps computed by hand."""

import pytest
import torch

import aggregation.fedavgm  # noqa: F401  (registers "fedavgm")
from aggregation import AdapterLayout, ClientUpdate, StrategyContext, build_strategy
from aggregation.registry import strategy_parameters

LAYOUT = AdapterLayout.from_shapes(
    [("x.lora_A.default.weight", (1, 1)), ("x.lora_B.default.weight", (1, 1))], rank=1, scaling=1.0
)


def update(client, delta, n):
    return ClientUpdate(client=client, delta=torch.tensor(delta), num_samples=n, base_version=0, steps=1)


def built(**params):
    strategy = build_strategy("fedavgm", **params)
    strategy.setup(StrategyContext(layout=LAYOUT))
    return strategy


def test_defaults_and_registry():
    assert strategy_parameters("fedavgm") == {"server_lr": 1.0, "momentum": 0.9}
    strategy = built()
    assert (strategy.config.server_lr, strategy.config.momentum) == (1.0, 0.9)


def test_two_steps_by_hand():
    strategy = built(server_lr=0.5, momentum=0.5)
    x0 = torch.tensor([0.0, 1.0])
    # D_1 = 0.25 (4, 0) + 0.75 (0, 4) = (1, 3); m_1 = D_1; x_1 = x_0 + 0.5 (1, 3)
    x1 = strategy.aggregate(x0, 0, [update(0, [4.0, 0.0], 1), update(1, [0.0, 4.0], 3)])
    assert torch.allclose(x1, torch.tensor([0.5, 2.5]))
    # D_2 = (2, -2); m_2 = 0.5 (1, 3) + (2, -2) = (2.5, -0.5); x_2 = x_1 + 0.5 m_2
    x2 = strategy.aggregate(x1, 1, [update(0, [2.0, -2.0], 1)])
    assert torch.allclose(x2, torch.tensor([1.75, 2.25]))


def test_zero_momentum_is_fedavg_every_step():
    strategy, fedavg = built(momentum=0.0, server_lr=0.3), build_strategy("fedavg", server_lr=0.3)
    x = torch.zeros(2)
    for ups in ([update(0, [1.0, 2.0], 2), update(1, [3.0, -1.0], 1)], [update(0, [-1.0, 0.5], 1)]):
        assert torch.allclose(strategy.aggregate(x, 0, ups), fedavg.aggregate(x, 0, ups))


def test_setup_resets_momentum():
    strategy = built()
    ups = [update(0, [1.0, 1.0], 1)]
    first = strategy.aggregate(torch.zeros(2), 0, ups)
    strategy.aggregate(torch.zeros(2), 1, ups)
    strategy.setup(StrategyContext(layout=LAYOUT))
    assert torch.equal(strategy.aggregate(torch.zeros(2), 0, ups), first)


@pytest.mark.parametrize("bad", [{"momentum": 1.0}, {"momentum": -0.1}, {"server_lr": 0.0}])
def test_invalid_parameters(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        build_strategy("fedavgm", **bad)
