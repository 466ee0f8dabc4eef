"""FedAvg on known tensors."""

import pytest
import torch

from aggregation import AggregationError, ClientUpdate, build_strategy


def update(client, delta, n):
    return ClientUpdate(client=client, delta=torch.tensor(delta), num_samples=n, base_version=0, steps=1)


def test_sample_weighted_mean():
    strategy = build_strategy("fedavg")
    x = torch.tensor([1.0, 1.0, 1.0])
    out = strategy.aggregate(x, 0, [update(0, [1.0, 0.0, -3.0], 1), update(1, [4.0, 2.0, 1.0], 3)])
    # p = (1/4, 3/4): x + (0.25 + 3, 1.5, -0.75 + 0.75)
    assert torch.allclose(out, torch.tensor([4.25, 2.5, 1.0]))


def test_server_learning_rate_scales_the_step():
    x = torch.zeros(2)
    ups = [update(0, [2.0, -2.0], 5)]
    assert torch.allclose(build_strategy("fedavg", server_lr=0.5).aggregate(x, 0, ups), torch.tensor([1.0, -1.0]))


def test_errors():
    strategy = build_strategy("fedavg")
    with pytest.raises(AggregationError, match="no client update"):
        strategy.aggregate(torch.zeros(2), 0, [])
    with pytest.raises(AggregationError, match="different shapes"):
        strategy.aggregate(torch.zeros(2), 0, [update(0, [1.0, 2.0], 1), update(1, [1.0], 1)])
    with pytest.raises(ValueError, match="no parameter"):
        build_strategy("fedavg", mu=1.0)
