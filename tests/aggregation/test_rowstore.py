"""Per-client rows in blocks: what goes in comes back (exactly in float32, rounded once in float16), rows
are overwritten in place, and memory follows the clients that have a row. A store whose blocks are files
behaves exactly as one in RAM."""

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from aggregation.rowstore import RowStore


@pytest.fixture(params=["ram", "files"])
def make(request, tmp_path):
    """A RowStore factory: blocks in RAM, or in files under a fresh directory per store."""
    count = iter(range(1000))
    if request.param == "ram":
        return RowStore
    return lambda *args, **kwargs: RowStore(*args, **kwargs, directory=tmp_path / f"store{next(count)}")


def test_float32_rows_round_trip_exactly_across_blocks(make):
    store, g = make(torch.float32, block_rows=3), torch.Generator().manual_seed(0)
    rows = {c: torch.randn(5, generator=g) for c in (40, 2, 17, 0, 99, 5, 8)}  # more rows than a block
    for c, v in rows.items():
        store.put(c, v)
    assert len(store) == 7 and list(store.clients()) == sorted(rows)
    for c, v in rows.items():
        assert torch.equal(store[c], v)
    assert store.get(1) is None and 1 not in store and 1000 not in store
    with pytest.raises(KeyError):
        store[3]


def test_float16_rows_equal_a_half_precision_copy(make):
    store, g = make(torch.float16), torch.Generator().manual_seed(1)
    v = torch.randn(1000, generator=g) * 3
    store.put(4, v)
    out = store[4]
    assert out.dtype == torch.float32
    assert torch.equal(out, v.half().float())  # rounded once, to nearest, as Tensor.half does
    assert not torch.equal(out, v)  # float16 does round: the store is not lossless here


def test_put_overwrites_and_returns_copies(make):
    store = make(torch.float32)
    store.put(3, torch.tensor([1.0, 2.0]))
    got = store[3]
    got += 10  # a copy: the stored row does not change
    assert torch.equal(store[3], torch.tensor([1.0, 2.0]))
    store.put(3, torch.tensor([5.0, 6.0]))
    assert torch.equal(store[3], torch.tensor([5.0, 6.0])) and len(store) == 1


def test_rows_keep_their_shape_and_refuse_another(make):
    store = make()
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


def test_export_then_load_gives_the_same_store(make):
    store, g = make(torch.float16, block_rows=2), torch.Generator().manual_seed(3)
    for c in (7, 1, 30, 4, 12):
        store.put(c, torch.randn(2, 3, generator=g))
    exported = store.export()
    assert sum(len(v) for k, v in exported.items() if k.startswith("block")) == 5  # used rows only
    copy = make(torch.float16, block_rows=4)
    copy.load({k: v.clone() for k, v in exported.items()})
    assert list(copy.clients()) == [1, 4, 7, 12, 30] and copy.shape == (2, 3) and len(copy) == 5
    for c in store.clients().tolist():
        assert torch.equal(copy[c], store[c])
    copy.put(99, torch.ones(2, 3))  # the loaded store goes on growing, and is its own
    copy.put(7, torch.zeros(2, 3))
    assert 99 in copy and 99 not in store and not torch.equal(store[7], copy[7])
    empty = make()
    empty.load(make().export())
    assert len(empty) == 0 and empty.shape is None


def test_files_hold_the_same_blocks_as_ram():
    # Overwrites, ids far apart, several blocks, float16 rounding: every row and every block is identical.
    g = torch.Generator().manual_seed(4)
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "deep" / "store"  # created on the first block, parents too
        ram, disk = RowStore(torch.float16, block_rows=4), RowStore(torch.float16, block_rows=4, directory=directory)
        assert not directory.exists()
        for _ in range(60):
            client, values = int(torch.randint(0, 5000, (1,), generator=g)) % 23 * 211, torch.randn(7, generator=g)
            ram.put(client, values)
            disk.put(client, values)
        assert list(disk.clients()) == list(ram.clients()) and len(disk) == len(ram) > 8
        for client in ram.clients().tolist():
            assert torch.equal(disk[client], ram[client])
        exported, files = disk.export(), sorted(directory.iterdir())
        assert [f.name for f in files] == [f"block_{i:06d}.bin" for i in range(-(-len(ram) // 4))]
        assert all(torch.equal(exported[k], v) for k, v in ram.export().items())
        assert disk.nbytes == ram.nbytes
        for i, f in enumerate(files):  # the values are in the files, not only in the process
            used = exported[f"block{i}"].numpy()  # the last block is exported as far as it is used
            assert np.array_equal(np.fromfile(f, dtype=np.float16).reshape(4, 7)[: len(used)], used)


def test_load_writes_files_and_a_store_can_load_its_own_export():
    g = torch.Generator().manual_seed(5)
    ram = RowStore(torch.float32, block_rows=2)
    for c in (3, 9, 1, 40, 7):
        ram.put(c, torch.randn(3, generator=g))
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "s"
        disk = RowStore(torch.float32, block_rows=4, directory=directory)
        for c in range(20):  # five blocks of 4, more than the three the load leaves
            disk.put(c, torch.zeros(3))
        disk.load(ram.export())
        assert sorted(f.name for f in directory.iterdir()) == [f"block_{i:06d}.bin" for i in range(3)]
        assert list(disk.clients()) == [1, 3, 7, 9, 40]
        disk.put(3, torch.full((3,), 2.5))  # writes go to the loaded files, not to a copy in RAM
        first_row = np.fromfile(directory / "block_000000.bin", np.float32)[:3]  # client 3 was put first
        assert np.array_equal(first_row, [2.5] * 3)
        before = {c: disk[c] for c in disk.clients().tolist()}
        disk.load(disk.export())  # the blocks it exports map the very files it rewrites
        assert all(torch.equal(disk[c], v) for c, v in before.items())


def test_a_directory_needs_a_dtype_numpy_can_map():
    with pytest.raises(ValueError, match="bfloat16"):
        RowStore(torch.bfloat16, directory=Path(tempfile.gettempdir()) / "never-created")
    assert RowStore(torch.bfloat16).get(0) is None  # in RAM any dtype torch has will do


def mapped_rss_kb(path) -> int:
    """Resident kB of this process's mapping of `path`, from /proc/self/smaps."""
    lines = Path("/proc/self/smaps").read_text().splitlines()
    for i, line in enumerate(lines):
        if line.endswith(str(path)):
            return next(int(l.split()[1]) for l in lines[i + 1:] if l.startswith("Rss:"))
    raise AssertionError(f"{path} is not mapped")


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_a_full_block_hands_its_pages_back_and_keeps_its_values(tmp_path):
    """The process's resident memory does not grow with the rows a file-backed store holds: once a block is
    full its pages leave the process (the values stay in the file's page cache and on disk)."""
    store = RowStore(torch.float32, block_rows=64, directory=tmp_path)
    rows = {c: torch.full((4096,), float(c)) for c in range(65)}
    for c in range(64):
        store.put(c, rows[c])
    first = tmp_path / "block_000000.bin"
    assert mapped_rss_kb(first) >= 64 * 16  # 64 rows of 16 kB, just written
    store.put(64, rows[64])  # a second block: the first is full
    assert mapped_rss_kb(first) == 0
    assert all(torch.equal(store[c], rows[c]) for c in rows)
