"""HetLoRA: norm weights and zero-padding on hand-computed values."""

import pytest
import torch

import aggregation.hetlora  # noqa: F401  (registers "hetlora")
from aggregation import AdapterLayout, ClientUpdate, StrategyContext, build_strategy


def layout(modules, rank):
    shapes = []
    for i, (d_out, d_in) in enumerate(modules):
        shapes += [(f"m{i}.lora_A.default.weight", (rank, d_in)), (f"m{i}.lora_B.default.weight", (d_out, rank))]
    return AdapterLayout.from_shapes(shapes, rank=rank, scaling=1.0)


def update(client, delta, n, rank=None):
    return ClientUpdate(client=client, delta=torch.tensor(delta), num_samples=n, base_version=0, steps=1, rank=rank)


def hetlora(lay, **params):
    strategy = build_strategy("hetlora", **params)
    strategy.setup(StrategyContext(layout=lay))
    return strategy


def test_weights_follow_product_norms_not_sample_counts():
    lay = layout([(1, 1)], rank=2)  # flat: A (2x1) = a1, a2; B (1x2) = b1, b2
    x = torch.tensor([0.0, 7.0, 0.0, 7.0])  # second components: the rank-1 client never had them
    # client 0, rank 1: A = [3, 0], B = [4, 0] after truncation: B A = 12
    c0 = update(0, [3.0, 0.0, 4.0, 0.0], n=1, rank=1)
    # client 1, full rank: A = [1, 2], B = [1, 2]: B A = 1 + 4 = 5
    c1 = update(1, [1.0, -5.0, 1.0, -5.0], n=1000)
    out = hetlora(lay).aggregate(x, 0, [c0, c1])
    w0, w1 = 12 / 17, 5 / 17
    expected = [3 * w0 + 1 * w1, 2 * w1, 4 * w0 + 1 * w1, 2 * w1]
    assert torch.allclose(out, torch.tensor(expected))


def test_the_norm_is_taken_over_all_modules_together():
    lay = layout([(1, 1), (1, 1)], rank=1)  # flat: A_0, B_0, A_1, B_1
    x = torch.zeros(4)
    # client 0: module products 3 and 4, norm sqrt(9 + 16) = 5; client 1: 5 and 0, norm 5. Equal weights
    # (a sum of per-module norms would give 7 : 5).
    c0 = update(0, [1.0, 3.0, 2.0, 2.0], n=1)
    c1 = update(1, [5.0, 1.0, 0.0, 0.0], n=9)
    out = hetlora(lay).aggregate(x, 0, [c0, c1])
    assert torch.allclose(out, torch.tensor([3.0, 2.0, 1.0, 1.0]))


def test_zero_products_fall_back_to_sample_weights():
    lay = layout([(1, 1)], rank=1)
    x = torch.tensor([1.0, 0.0])  # B = 0 and the clients only moved A: every B_k A_k = 0
    out = hetlora(lay).aggregate(x, 0, [update(0, [4.0, 0.0], 1), update(1, [0.0, 0.0], 3)])
    assert torch.allclose(out, torch.tensor([2.0, 0.0]))


def test_server_learning_rate_and_validation():
    lay = layout([(1, 1)], rank=1)
    x = torch.tensor([1.0, 1.0])
    out = hetlora(lay, server_lr=0.5).aggregate(x, 0, [update(0, [2.0, 4.0], 1)])  # x_k = (3, 5)
    assert torch.allclose(out, torch.tensor([2.0, 3.0]))
    with pytest.raises(ValueError, match="server_lr"):
        build_strategy("hetlora", server_lr=0.0)
