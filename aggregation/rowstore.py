"""Where per-client vectors live on the server's side: one row per client that has one, in fixed blocks.

A fleet of 100,000 devices may leave a vector behind for most of them (a personal adapter part, an
error-feedback residual). Held as a dict of tensors, each costs its values plus a tensor object, a
storage and a dict entry (several hundred bytes); here each costs its values plus 4 bytes of index.
Rows are allocated in blocks of `block_rows`, so growing never copies what is stored and the store
holds at most one partly used block beyond the rows in use. The store only ever holds clients that
have put a row: memory is bounded by the clients that took part, never by the fleet or the rounds.

Values are stored in `dtype` (a client's row is converted on `put`, with torch's round-to-nearest) and
come back as float32 copies. Given a `directory`, each block is a file there mapped into memory
(`block_000000.bin`, ...): the operating system keeps the pages in use and writes the rest out, so the
driver's own memory stays bounded even when most of a large fleet holds a row. Pages once touched stay
counted in the process's resident memory until the kernel needs them back; so each time a block fills, the
store hands the pages of its blocks back (MADV_DONTNEED: written values are in the file's page cache, and a
later read faults them in again), and the resident memory a store adds stays about one block's worth
however many rows it holds. Pure: numpy, torch and the standard library only.
"""

from __future__ import annotations

import mmap
from pathlib import Path

import numpy as np
import torch

NO_ROW = -1


class RowStore:
    """Vectors of one shape, keyed by non-negative client id; the shape is fixed by the first `put`."""

    def __init__(self, dtype: torch.dtype = torch.float32, block_rows: int = 1024, directory: Path | None = None):
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        self.dtype, self.block_rows = dtype, block_rows
        self.directory = None if directory is None else Path(directory)
        if self.directory is not None:
            _numpy_dtype(dtype)  # refuse a dtype numpy cannot map before any row is put
        self.shape: tuple[int, ...] | None = None
        self._width = 0
        self._row_of = np.full(0, NO_ROW, dtype=np.int32)  # client id -> row, NO_ROW where it has none
        self._blocks: list[torch.Tensor] = []  # each (block_rows, width) of dtype
        self._maps: list[mmap.mmap] = []  # the files the blocks map, where the store has a directory
        self._rows = 0

    def __len__(self) -> int:
        return self._rows

    def __contains__(self, client: int) -> bool:
        return self._row(client) != NO_ROW

    def __getitem__(self, client: int) -> torch.Tensor:
        row = self._row(client)
        if row == NO_ROW:
            raise KeyError(client)
        return self._view(row).to(torch.float32, copy=True).reshape(self.shape)

    def get(self, client: int, default: torch.Tensor | None = None) -> torch.Tensor | None:
        """The client's row as a float32 copy, or `default` where it has none."""
        return self[client] if client in self else default

    def put(self, client: int, values: torch.Tensor) -> None:
        if client < 0:
            raise ValueError(f"client ids are non-negative, got {client}")
        if self.shape is None:
            self.shape, self._width = tuple(values.shape), values.numel()
        elif tuple(values.shape) != self.shape:
            raise ValueError(f"client {client} row has shape {tuple(values.shape)}, the store's is {self.shape}")
        row = self._row(client)
        if row == NO_ROW:
            row = self._new_row(client)
        self._view(row).copy_(values.detach().reshape(-1))

    def clients(self) -> np.ndarray:
        """Client ids with a row, ascending."""
        return np.flatnonzero(self._row_of != NO_ROW)

    def export(self) -> dict[str, torch.Tensor]:
        """The store as named tensors (its index, row shape and the used rows of its blocks, not copied): what
        a checkpoint saves. `load` of the same dict rebuilds it."""
        out = {"index": torch.from_numpy(self._row_of), "rows": torch.tensor(self._rows),
               "rows_per_block": torch.tensor(self.block_rows),
               "shape": torch.tensor(self.shape if self.shape is not None else [-1], dtype=torch.int64)}
        for i, block in enumerate(self._blocks):  # the last block only as far as it is used
            out[f"block{i}"] = block[: min(self.block_rows, self._rows - i * self.block_rows)]
        return out

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Replace the contents with what `export` gave."""
        shape = tuple(tensors["shape"].tolist())
        self.shape = None if shape == (-1,) else shape
        self._width = 0 if self.shape is None else int(np.prod(self.shape))
        self._row_of = tensors["index"].numpy().astype(np.int32, copy=True)
        self._rows, self.block_rows = int(tensors["rows"]), int(tensors["rows_per_block"])
        blocks = [tensors[f"block{i}"] for i in range(sum(k.startswith("block") for k in tensors))]
        self._remove_files()
        self._blocks, self._maps = [], []
        for block in blocks:
            self._blocks.append(self._new_block())
            self._blocks[-1][: len(block)].copy_(block)
        self.release_pages()

    def release_pages(self) -> None:
        """Hand the pages of the mapped blocks back to the kernel; the values stay in their files."""
        if hasattr(mmap, "MADV_DONTNEED"):  # Linux and macOS
            for mapped in self._maps:
                mapped.madvise(mmap.MADV_DONTNEED)

    @property
    def nbytes(self) -> int:
        """Bytes held: the blocks (in RAM, or in files where the store has a directory) and the index."""
        return sum(b.numel() * b.element_size() for b in self._blocks) + self._row_of.nbytes

    def _row(self, client: int) -> int:
        return int(self._row_of[client]) if 0 <= client < len(self._row_of) else NO_ROW

    def _view(self, row: int) -> torch.Tensor:
        return self._blocks[row // self.block_rows][row % self.block_rows]

    def _new_row(self, client: int) -> int:
        if client >= len(self._row_of):  # grow the index geometrically: amortised O(1) per new client
            grown = np.full(max(client + 1, 2 * len(self._row_of)), NO_ROW, dtype=np.int32)
            grown[: len(self._row_of)] = self._row_of
            self._row_of = grown
        if self._rows == len(self._blocks) * self.block_rows:
            self.release_pages()
            self._blocks.append(self._new_block())
        row, self._rows = self._rows, self._rows + 1
        self._row_of[client] = row
        return row

    def _new_block(self) -> torch.Tensor:
        """Zeros of (block_rows, width): in RAM, or mapped from the next block's file."""
        shape = (self.block_rows, self._width)
        if self.directory is None or self._width == 0:  # numpy cannot map an empty file; nothing to hold
            return torch.zeros(shape, dtype=self.dtype)
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"block_{len(self._blocks):06d}.bin"
        nbytes = self.block_rows * self._width * torch.empty(0, dtype=self.dtype).element_size()
        with open(path, "w+b") as f:
            f.truncate(nbytes)  # sparse: disk is taken only as rows are written
            mapped = mmap.mmap(f.fileno(), nbytes)
        self._maps.append(mapped)
        return torch.frombuffer(mapped, dtype=self.dtype).view(shape)

    def _remove_files(self) -> None:
        # The tensors being loaded may map these very files (a store loading its own export): unlinking
        # keeps their pages readable, where reopening a file for writing would truncate it under them.
        if self.directory is not None and self.directory.exists():
            for path in self.directory.glob("block_*.bin"):
                path.unlink()


def _numpy_dtype(dtype: torch.dtype) -> np.dtype:
    try:
        return torch.empty(0, dtype=dtype).numpy().dtype
    except TypeError as err:  # bfloat16 has no numpy type
        raise ValueError(f"a store with a directory needs a dtype numpy has, not {dtype}") from err
