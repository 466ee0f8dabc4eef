"""FlexLoRA: SVD redistribution on known values; a rank-r_k client gets the best rank-r_k approximation."""

import math

import torch

import aggregation.flexlora  # noqa: F401  (registers "flexlora")
from aggregation import AdapterLayout, ClientUpdate, StrategyContext, build_strategy


def layout(modules, rank, extra=0):
    shapes = []
    for i, (d_out, d_in) in enumerate(modules):
        shapes += [(f"m{i}.lora_A.default.weight", (rank, d_in)), (f"m{i}.lora_B.default.weight", (d_out, rank))]
    if extra:
        shapes.append(("adapter.up.weight", (extra,)))
    return AdapterLayout.from_shapes(shapes, rank=rank, scaling=1.0)


def update(client, delta, n, rank=None):
    return ClientUpdate(client=client, delta=torch.as_tensor(delta), num_samples=n, base_version=0, steps=1, rank=rank)


def flexlora(lay):
    strategy = build_strategy("flexlora")
    strategy.setup(StrategyContext(layout=lay))
    return strategy


def test_rank_one_redistribution_on_known_values():
    lay = layout([(2, 2)], rank=1)  # flat: A (1x2), B (2x1)
    x = torch.zeros(4)
    c0 = update(0, [3.0, 0.0, 1.0, 0.0], n=1)  # B A = [[3, 0], [0, 0]]
    c1 = update(1, [0.0, 1.0, 0.0, 1.0], n=1)  # B A = [[0, 0], [0, 1]]
    strategy = flexlora(lay)
    assert strategy.metrics() == {}
    out = strategy.aggregate(x, 0, [c0, c1])
    # dW = diag(1.5, 0.5); its best rank-1 part is diag(1.5, 0): A = [sqrt 1.5, 0], B = [sqrt 1.5, 0]^T up to
    # one common sign
    root = math.sqrt(1.5)
    assert torch.allclose(out.abs(), torch.tensor([root, 0.0, root, 0.0]))
    a, b = out[:2].view(1, 2), out[2:].view(2, 1)
    assert torch.allclose(b @ a, torch.tensor([[1.5, 0.0], [0.0, 0.0]]))
    assert math.isclose(strategy.metrics()["truncation_error"], 0.5 / math.sqrt(1.5**2 + 0.5**2), rel_tol=1e-9)


def test_first_components_are_the_best_approximation_of_every_rank():
    gen = torch.Generator().manual_seed(7)
    lay = layout([(6, 5)], rank=4)
    x = torch.randn(lay.size, generator=gen)
    ups = [update(k, torch.randn(lay.size, generator=gen), n=k + 1) for k in range(3)]
    out = flexlora(lay).aggregate(x, 0, ups)

    # independent ideal: sum p_k B_k A_k from the full-rank client adapters
    p = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64) / 6
    dw = sum(p[k] * lay.products((x + u.delta).double())[0] for k, u in enumerate(ups))
    s = torch.linalg.svdvals(dw)
    a, b = lay.pairs[0].a.view(out).double(), lay.pairs[0].b.view(out).double()
    for r in range(1, 5):  # a rank-r client takes the first r components
        err = torch.linalg.matrix_norm(dw - b[:, :r] @ a[:r])
        assert math.isclose(float(err), float(s[r:].square().sum().sqrt()), rel_tol=1e-5)
    # the singular values are split evenly between the factors: B^T B = A A^T = diag(S_r)
    assert torch.allclose(b.T @ b, torch.diag(s[:4]), atol=1e-5)
    assert torch.allclose(a @ a.T, torch.diag(s[:4]), atol=1e-5)


def test_non_lora_entries_take_the_fedavg_step_and_zero_products_give_zero_factors():
    lay = layout([(2, 3)], rank=2, extra=1)
    x = torch.zeros(lay.size)
    x[-1] = 1.0
    d0, d1 = torch.zeros(lay.size), torch.zeros(lay.size)
    d0[0], d0[-1] = 5.0, 4.0  # A moved, B still zero: B A = 0
    d1[-1] = 8.0
    strategy = flexlora(lay)
    out = strategy.aggregate(x, 0, [update(0, d0, 3), update(1, d1, 1)])
    assert out[:-1].abs().max() == 0.0
    assert math.isclose(float(out[-1]), 1.0 + 0.75 * 4 + 0.25 * 8)
    assert strategy.metrics() == {"truncation_error": 0.0}
