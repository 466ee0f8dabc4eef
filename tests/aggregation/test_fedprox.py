"""FedProx: FedAvg on the server, proximal term and partial work asked of the clients."""

import pytest
import torch

import aggregation.fedprox  # noqa: F401  (registers "fedprox")
from aggregation import AdapterLayout, ClientConfig, ClientUpdate, StrategyContext, build_strategy
from aggregation.registry import strategy_parameters

LAYOUT = AdapterLayout.from_shapes(
    [("x.lora_A.default.weight", (1, 2)), ("x.lora_B.default.weight", (1, 1))], rank=1, scaling=2.0
)


def update(client, delta, n, steps=1):
    return ClientUpdate(client=client, delta=torch.tensor(delta), num_samples=n, base_version=0, steps=steps)


def test_defaults_and_registry():
    assert strategy_parameters("fedprox") == {"mu": 0.01, "server_lr": 1.0, "partial_work": True}
    strategy = build_strategy("fedprox")
    strategy.setup(StrategyContext(layout=LAYOUT))
    assert strategy.configure(3, 0) == ClientConfig(prox_mu=0.01, partial_work=True)


def test_configure_passes_mu_and_partial_work():
    strategy = build_strategy("fedprox", mu=0.5, partial_work=False)
    strategy.setup(StrategyContext(layout=LAYOUT))
    config = strategy.configure(0, 7)
    assert config.prox_mu == 0.5 and config.partial_work is False


def test_server_rule_is_the_weighted_mean_of_partial_work():
    # a straggler's partial update (2 steps) counts with its sample weight, like any other
    strategy = build_strategy("fedprox", mu=1.0, server_lr=0.5)
    strategy.setup(StrategyContext(layout=LAYOUT))
    x = torch.tensor([1.0, 0.0, -1.0])
    out = strategy.aggregate(x, 0, [update(0, [2.0, 4.0, 0.0], 3, steps=10), update(1, [-2.0, 0.0, 8.0], 1, steps=2)])
    # mean = 0.75 (2, 4, 0) + 0.25 (-2, 0, 8) = (1, 3, 2); half of it added to x
    assert torch.allclose(out, torch.tensor([1.5, 1.5, 0.0]))


@pytest.mark.parametrize("bad", [{"mu": -0.1}, {"mu": float("nan")}, {"server_lr": 0.0}])
def test_invalid_parameters(bad):
    name = next(iter(bad))
    with pytest.raises(ValueError, match=name):
        build_strategy("fedprox", **bad)
