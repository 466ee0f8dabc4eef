"""FLoRA: stacking into the base on hand-computed values; the fresh adapter; what a client downloads."""

import torch

import aggregation.flora  # noqa: F401  (registers "flora")
from aggregation import AdapterLayout, ClientUpdate, StrategyContext, build_strategy


def layout(modules, rank, extra=0):
    """Modules as (d_out, d_in); A then B per module (peft's order); an optional non-LoRA tensor last."""
    shapes = []
    for i, (d_out, d_in) in enumerate(modules):
        shapes += [(f"m{i}.lora_A.default.weight", (rank, d_in)), (f"m{i}.lora_B.default.weight", (d_out, rank))]
    if extra:
        shapes.append(("adapter.up.weight", (extra,)))
    return AdapterLayout.from_shapes(shapes, rank=rank, scaling=2.0 / rank)


def update(client, delta, n, rank=None):
    return ClientUpdate(client=client, delta=torch.tensor(delta), num_samples=n, base_version=0, steps=1, rank=rank)


def flora(lay):
    strategy = build_strategy("flora")
    strategy.setup(StrategyContext(layout=lay))
    return strategy


def test_stacked_product_goes_into_the_base_on_known_values():
    lay = layout([(2, 2)], rank=2)  # flat: A (2x2) row-major, then B (2x2)
    strategy = flora(lay)
    assert strategy.base_delta.tolist() == [0.0] * 4
    assert strategy.download_values() == lay.size == 8
    x = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0])  # A = I, B = 0
    # client 0, rank 1: A_0 = [[2, 0]], B_0 = [[1], [2]]; its second components are absent (row 2 of A is the
    # global's [0, 1], which it never had), so B_0 A_0 = [[2, 0], [4, 0]]
    c0 = update(0, [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 2.0, 0.0], n=1, rank=1)
    # client 1, full rank: A_1 = I, B_1 = [[0, 1], [1, 0]], so B_1 A_1 = [[0, 1], [1, 0]]
    c1 = update(1, [0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0], n=3)
    out = strategy.aggregate(x, 0, [c0, c1])
    # p = (1/4, 3/4): 1/4 [[2, 0], [4, 0]] + 3/4 [[0, 1], [1, 0]]
    assert strategy.base_delta.tolist() == [0.5, 0.75, 1.75, 0.0]
    assert out.tolist() == x.tolist()  # fresh LoRA: the initial A, B = 0
    assert strategy.download_values() == (1 + 2) * (2 + 2)  # stacked A (3 x 2) and B (2 x 3)


def test_untrained_clients_leave_the_model_unchanged():
    # The clients' adapters already contain the global they started from: merging sum p_k B_k A_k must not
    # subtract the starting product as well. With a nonzero global B and zero deltas the model stays put.
    gen = torch.Generator().manual_seed(3)
    lay = layout([(3, 4), (2, 3)], rank=2)
    strategy = flora(lay)
    x = torch.randn(lay.size, generator=gen)
    before = [lay.scaling * m for m in lay.products(x.double())]
    out = strategy.aggregate(x, 0, [update(0, [0.0] * lay.size, 5), update(1, [0.0] * lay.size, 2)])
    after = lay.products(out.double())
    offset = 0
    for m, (d_out, d_in), fresh in zip(before, lay.dense_shapes(), after):
        merged = strategy.base_delta[offset : offset + d_out * d_in].view(d_out, d_in).double()
        offset += d_out * d_in
        assert torch.allclose(lay.scaling * (merged + fresh), m, atol=1e-6)
    assert all(float(f.abs().max()) == 0.0 for f in after)


def test_every_round_restarts_from_the_first_global_A_and_accumulates():
    lay = layout([(1, 1)], rank=1)  # A, B scalars
    strategy = flora(lay)
    out = strategy.aggregate(torch.tensor([2.0, 0.0]), 0, [update(0, [0.0, 3.0], 1)])  # B A = 3 * 2
    assert out.tolist() == [2.0, 0.0]
    # the emulator may hand any adapter back; the fresh A is the first one's
    out = strategy.aggregate(torch.tensor([5.0, 0.0]), 1, [update(0, [-1.0, 1.0], 1)])  # B A = 1 * 4
    assert out.tolist() == [2.0, 0.0]
    assert strategy.base_delta.tolist() == [10.0]


def test_non_lora_entries_take_the_fedavg_step():
    lay = layout([(1, 1)], rank=1, extra=2)
    strategy = flora(lay)
    x = torch.tensor([1.0, 0.0, 10.0, 20.0])
    out = strategy.aggregate(x, 0, [update(0, [0.0, 1.0, 4.0, 0.0], 1), update(1, [0.0, 1.0, 0.0, 8.0], 3)])
    assert out.tolist() == [1.0, 0.0, 11.0, 26.0]
    assert strategy.download_values() == 2 * (1 + 1) + 2
