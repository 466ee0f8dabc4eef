"""Per-client rows in blocks: what goes in comes back (exactly in float32, rounded once in float16), rows
are overwritten in place, and memory follows the clients that have a row."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.rowstore import RowStore


def test_float32_rows_round_trip_exactly_across_blocks():
    store, g = RowStore(torch.float32, block_rows=3), torch.Generator().manual_seed(0)
    rows = {c: torch.randn(5, generator=g) for c in (40, 2, 17, 0, 99, 5, 8)}  # more rows than a block
    for c, v in rows.items():
        store.put(c, v)
    assert len(store) == 7 and list(store.clients()) == sorted(rows)
    for c, v in rows.items():
        assert torch.equal(store[c], v)
    assert store.get(1) is None and 1 not in store and 1000 not in store
    with pytest.raises(KeyError):
        store[3]


def test_float16_rows_equal_a_half_precision_copy():
    store, g = RowStore(torch.float16), torch.Generator().manual_seed(1)
    v = torch.randn(1000, generator=g) * 3
    store.put(4, v)
    out = store[4]
    assert out.dtype == torch.float32
    assert torch.equal(out, v.half().float())  # rounded once, to nearest, as Tensor.half does
    assert not torch.equal(out, v)  # float16 does round: the store is not lossless here


def test_put_overwrites_and_returns_copies():
    store = RowStore(torch.float32)
    store.put(3, torch.tensor([1.0, 2.0]))
    got = store[3]
    got += 10  # a copy: the stored row does not change
    assert torch.equal(store[3], torch.tensor([1.0, 2.0]))
    store.put(3, torch.tensor([5.0, 6.0]))
    assert torch.equal(store[3], torch.tensor([5.0, 6.0])) and len(store) == 1


def test_rows_keep_their_shape_and_refuse_another():
    store = RowStore()
    store.put(0, torch.ones(2, 3))
    assert store[0].shape == (2, 3)
    with pytest.raises(ValueError, match="shape"):
        store.put(1, torch.ones(6))
    with pytest.raises(ValueError, match="non-negative"):
        store.put(-1, torch.ones(2, 3))


def test_memory_follows_rows_not_client_ids():
    width, block = 100, 16
    store = RowStore(torch.float16, block_rows=block)
    for c in range(0, 50_000, 1000):  # 50 clients with ids up to 49,000
        store.put(c, torch.ones(width))
    values = 2 * width * block * -(-50 // block)  # four blocks of float16 rows
    assert store.nbytes - values <= 4 * 2 * 50_000  # the int32 index: at most twice the largest id
    assert values <= 2 * width * (50 + block)  # at most one block beyond the rows in use


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 300), st.floats(-1e4, 1e4, width=32)), max_size=60),
       st.integers(1, 8))
def test_behaves_like_a_dict_of_rows(puts, block_rows):
    store, reference = RowStore(torch.float32, block_rows=block_rows), {}
    for client, x in puts:
        row = torch.tensor([x, -x, 2 * x], dtype=torch.float32)
        store.put(client, row)
        reference[client] = row
    assert len(store) == len(reference)
    assert list(store.clients()) == sorted(reference)
    for client, row in reference.items():
        assert torch.equal(store[client], row)
    assert all(c not in store for c in set(range(301)) - set(reference))


def test_export_then_load_gives_the_same_store():
    store, g = RowStore(torch.float16, block_rows=2), torch.Generator().manual_seed(3)
    for c in (7, 1, 30, 4, 12):
        store.put(c, torch.randn(2, 3, generator=g))
    copy = RowStore(torch.float16, block_rows=4)
    copy.load({k: v.clone() for k, v in store.export().items()})
    assert list(copy.clients()) == [1, 4, 7, 12, 30] and copy.shape == (2, 3) and len(copy) == 5
    for c in store.clients().tolist():
        assert torch.equal(copy[c], store[c])
    copy.put(99, torch.ones(2, 3))  # the loaded store goes on growing, and is its own
    copy.put(7, torch.zeros(2, 3))
    assert 99 in copy and 99 not in store and not torch.equal(store[7], copy[7])
    empty = RowStore()
    empty.load(RowStore().export())
    assert len(empty) == 0 and empty.shape is None
