"""Which LoRA aggregators reproduce the ideal update sum_k p_k B_k A_k (REFERENCE.md section 1).

Exact: FFA-LoRA (A frozen and shared), FLoRA (stacking, merged into the base), FlexLoRA (products, SVD with
enough rank). Not exact: FedIT (FedAvg on A and B separately), whose error is the cross terms
sum_{k != j} p_k p_j B_k A_j - sum_k p_k (1 - p_k) B_k A_k.

The ideal is computed here from the client adapters directly (slicing the first r_k components), not with the
helpers the strategies use.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import aggregation.flexlora  # noqa: F401  (registers "flexlora")
import aggregation.flora  # noqa: F401  (registers "flora")
from aggregation import AdapterLayout, ClientUpdate, StrategyContext, build_strategy
from aggregation.lora_math import average_shared
from aggregation.partial import FFA_LORA

CASES = settings(max_examples=25, deadline=None)


def layout(modules, rank, alpha=16.0):
    shapes = []
    for i, (d_out, d_in) in enumerate(modules):
        shapes += [(f"m{i}.lora_A.default.weight", (rank, d_in)), (f"m{i}.lora_B.default.weight", (d_out, rank))]
    return AdapterLayout.from_shapes(shapes, rank=rank, scaling=alpha / rank)


def clients(lay, ranks, seed, train_a=True):
    """A random global adapter and one update per rank, as the trainer sends it: zero beyond the client's
    rank (the global is not: a truncated client must drop it)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(lay.size, generator=gen)
    updates = []
    for k, r in enumerate(ranks):
        delta = torch.randn(lay.size, generator=gen)
        delta[lay.beyond_rank(r)] = 0.0
        if not train_a:
            for pair in lay.pairs:
                pair.a.view(delta).zero_()
        n = int(torch.randint(1, 100, (1,), generator=gen))
        updates.append(ClientUpdate(client=k, delta=delta, num_samples=n, base_version=0, steps=1, rank=r))
    return x, updates


def ideal(lay, x, updates):
    """Per module, sum_k p_k B_k A_k with A_k, B_k the first r_k components of x + delta_k, float64."""
    n = torch.tensor([u.num_samples for u in updates], dtype=torch.float64)
    p = n / n.sum()
    out = []
    for pair in lay.pairs:
        total = torch.zeros(pair.b.shape[0], pair.a.shape[1], dtype=torch.float64)
        for pk, u in zip(p, updates):
            xk = (x + u.delta).double()
            total += pk * pair.b.view(xk)[:, : u.rank] @ pair.a.view(xk)[: u.rank]
        out.append(total)
    return out


def assert_close(actual, expected):
    for a, e in zip(actual, expected, strict=True):
        scale = float(e.abs().max()) + 1.0
        torch.testing.assert_close(a.double(), e, rtol=1e-5, atol=1e-5 * scale)


def relative_error(actual, expected):
    num = sum(float((a.double() - e).square().sum()) for a, e in zip(actual, expected))
    den = sum(float(e.square().sum()) for e in expected)
    return (num / den) ** 0.5


modules = st.lists(st.tuples(st.integers(1, 16), st.integers(1, 16)), min_size=1, max_size=2)
seeds = st.integers(0, 2**31 - 1)


@CASES
@given(modules=modules, r=st.integers(1, 8), k=st.integers(1, 5), seed=seeds)
def test_ffa_lora_fedavg_on_b_is_exact(modules, r, k, seed):
    lay = layout(modules, r)
    x, updates = clients(lay, [r] * k, seed, train_a=False)
    out = build_strategy("fedavg").aggregate(x, 0, updates)
    for pair in lay.pairs:  # A stays A_0
        assert torch.equal(pair.a.view(out), pair.a.view(x))
    assert_close(lay.products(out.double()), ideal(lay, x, updates))

    # the same through the shared mask, even if a client sent something for the frozen A
    shared, _, _ = FFA_LORA.masks(lay)
    deltas = torch.stack([u.delta for u in updates])
    deltas[:, ~shared] = 1.0
    n = torch.tensor([float(u.num_samples) for u in updates])
    masked = average_shared(x, deltas, n / n.sum(), shared)
    assert_close(lay.products(masked.double()), ideal(lay, x, updates))


def flora_step_is_exact(lay, x, updates):
    strategy = build_strategy("flora")
    strategy.setup(StrategyContext(layout=lay))
    # a first step so that the base already holds something, then the step under test
    strategy.aggregate(x, 0, updates[:1])
    before = strategy.base_delta.clone()
    out = strategy.aggregate(x, 1, updates)
    s = lay.scaling
    offsets = torch.tensor([0] + [d_out * d_in for d_out, d_in in lay.dense_shapes()]).cumsum(0).tolist()
    new, old = [], []
    for (d_out, d_in), lo, fresh in zip(lay.dense_shapes(), offsets, lay.products(out.double())):
        new.append(s * (strategy.base_delta[lo : lo + d_out * d_in].view(d_out, d_in).double() + fresh))
        old.append(s * before[lo : lo + d_out * d_in].view(d_out, d_in).double())
    assert_close(new, [o + s * i for o, i in zip(old, ideal(lay, x, updates))])


@CASES
@given(modules=modules, r=st.integers(1, 8), k=st.integers(1, 5), seed=seeds)
def test_flora_is_exact_with_equal_ranks(modules, r, k, seed):
    lay = layout(modules, r)
    x, updates = clients(lay, [r] * k, seed)
    flora_step_is_exact(lay, x, updates)


@CASES
@given(modules=modules, r=st.integers(2, 8), seed=seeds, data=st.data())
def test_flora_is_exact_with_mixed_ranks(modules, r, seed, data):
    ranks = data.draw(st.lists(st.integers(1, r), min_size=2, max_size=5))
    lay = layout(modules, r)
    x, updates = clients(lay, ranks, seed)
    flora_step_is_exact(lay, x, updates)


@CASES
@given(modules=modules, seed=seeds, data=st.data())
def test_flexlora_is_exact_when_its_rank_holds_every_client(modules, seed, data):
    ranks = data.draw(st.lists(st.integers(1, 3), min_size=1, max_size=5).filter(lambda rs: sum(rs) <= 8))
    r_max = data.draw(st.integers(max(sum(ranks), max(ranks)), 8))
    lay = layout(modules, r_max)
    x, updates = clients(lay, ranks, seed)
    strategy = build_strategy("flexlora")
    strategy.setup(StrategyContext(layout=lay))
    out = strategy.aggregate(x, 0, updates)
    assert_close(lay.products(out.double()), ideal(lay, x, updates))
    assert strategy.metrics()["truncation_error"] < 1e-5


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("k", [2, 5])
def test_fedit_is_not_exact(seed, k):
    lay = layout([(8, 6), (4, 5)], rank=4)
    x, updates = clients(lay, [4] * k, seed)
    out = build_strategy("fedavg").aggregate(x, 0, updates)
    assert relative_error(lay.products(out.double()), ideal(lay, x, updates)) > 1e-3


def test_fedit_aggregation_noise_by_hand():
    # One 1x1 module: flat (A, B). Clients from x = 0: (A_1, B_1) = (1, 2) with n = 1, (A_2, B_2) = (3, 4) with
    # n = 3, so p = (1/4, 3/4). FedIT: mean A = 0.25 + 2.25 = 2.5, mean B = 0.5 + 3 = 3.5, product 8.75. Ideal:
    # 0.25 * 2 + 0.75 * 12 = 9.5. Noise -0.75 = cross terms p_1 p_2 (B_1 A_2 + B_2 A_1) = 0.1875 * (6 + 4) = 1.875
    # minus sum_k p_k (1 - p_k) B_k A_k = 0.1875 * (2 + 12) = 2.625.
    lay = layout([(1, 1)], rank=1)
    ups = [ClientUpdate(0, torch.tensor([1.0, 2.0]), 1, 0, 1), ClientUpdate(1, torch.tensor([3.0, 4.0]), 3, 0, 1)]
    out = build_strategy("fedavg").aggregate(torch.zeros(2), 0, ups)
    assert out.tolist() == [2.5, 3.5]
    assert float(lay.products(out.double())[0]) == 8.75  # 9.5 - 0.75


@CASES
@given(modules=modules, r=st.integers(1, 8), k=st.integers(2, 5), seed=seeds)
def test_fedit_error_is_the_aggregation_noise_identity(modules, r, k, seed):
    # REFERENCE.md section 1: mean(B) mean(A) = sum_k p_k^2 B_k A_k + sum_{k != j} p_k p_j B_k A_j, so FedIT's
    # product minus the ideal is sum_{k != j} p_k p_j B_k A_j - sum_k p_k (1 - p_k) B_k A_k. The right side is
    # summed pair by pair in float64 from each client's factors; FedAvg runs in float64 here too.
    lay = layout(modules, r)
    x, updates = clients(lay, [r] * k, seed)
    x = x.double()
    updates = [ClientUpdate(u.client, u.delta.double(), u.num_samples, 0, 1, u.rank) for u in updates]
    out = build_strategy("fedavg").aggregate(x, 0, updates)
    n = [u.num_samples for u in updates]
    p = [nk / sum(n) for nk in n]
    fedit, ideal_products = lay.products(out), ideal(lay, x, updates)
    for m, pair in enumerate(lay.pairs):
        a = [pair.a.view(x + u.delta) for u in updates]
        b = [pair.b.view(x + u.delta) for u in updates]
        noise = torch.zeros_like(ideal_products[m])
        for i in range(k):
            noise -= p[i] * (1 - p[i]) * (b[i] @ a[i])
            for j in range(k):
                if j != i:
                    noise += p[i] * p[j] * (b[i] @ a[j])
        scale = float(ideal_products[m].abs().max()) + 1.0
        torch.testing.assert_close(fedit[m] - ideal_products[m], noise, rtol=0, atol=1e-12 * scale)
