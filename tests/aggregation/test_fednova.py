"""FedNova: normalised averaging on known tensors."""

import pytest
import torch

import aggregation.fednova  # noqa: F401  (registers "fednova")
from aggregation import AdapterLayout, AggregationError, ClientUpdate, StrategyContext, build_strategy
from aggregation.registry import strategy_parameters

LAYOUT = AdapterLayout.from_shapes(
    [("x.lora_A.default.weight", (1, 1)), ("x.lora_B.default.weight", (1, 1))], rank=1, scaling=1.0
)


def update(client, delta, n, steps):
    return ClientUpdate(client=client, delta=torch.tensor(delta), num_samples=n, base_version=0, steps=steps)


def built(**params):
    strategy = build_strategy("fednova", **params)
    strategy.setup(StrategyContext(layout=LAYOUT))
    return strategy


def test_defaults_and_registry():
    assert strategy_parameters("fednova") == {"server_lr": 1.0}
    assert built().config.server_lr == 1.0


def test_equal_steps_is_fedavg():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, generator=gen)
    ups = [update(k, torch.randn(2, generator=gen).tolist(), n, steps=5) for k, n in enumerate([3, 1, 6])]
    fedavg = build_strategy("fedavg", server_lr=0.7)
    assert torch.allclose(built(server_lr=0.7).aggregate(x, 0, ups), fedavg.aggregate(x, 0, ups), atol=1e-6)


def test_unequal_steps_by_hand():
    x = torch.tensor([1.0, 1.0])
    ups = [update(0, [2.0, 4.0], 1, steps=2), update(1, [6.0, -6.0], 3, steps=6)]
    # p = (1/4, 3/4); d = (1, 2), (1, -1); sum p d = (1, -0.25); tau_eff = 0.5 + 4.5 = 5 -> step (5, -1.25)
    assert torch.allclose(built().aggregate(x, 0, ups), torch.tensor([6.0, -0.25]))
    # FedAvg would step (5, -3.5): the client with more steps pulls harder
    assert torch.allclose(build_strategy("fedavg").aggregate(x, 0, ups), torch.tensor([6.0, -2.5]))
    assert torch.allclose(built(server_lr=0.5).aggregate(x, 0, ups), torch.tensor([3.5, 0.375]))


def test_zero_steps_is_an_error():
    with pytest.raises(AggregationError, match=r"\[4\]"):
        built().aggregate(torch.zeros(2), 0, [update(1, [1.0, 1.0], 1, steps=3), update(4, [0.0, 0.0], 1, steps=0)])


def test_invalid_server_lr():
    with pytest.raises(ValueError, match="server_lr"):
        build_strategy("fednova", server_lr=-1.0)
