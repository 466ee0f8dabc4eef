"""Where per-client vectors live on the server's side: one row per client that has one, in fixed blocks.

A fleet of 100,000 devices may leave a vector behind for most of them (a personal adapter part, an
error-feedback residual). Held as a dict of tensors, each costs its values plus a tensor object, a
storage and a dict entry (several hundred bytes); here each costs its values plus 4 bytes of index.
Rows are allocated in blocks of `block_rows`, so growing never copies what is stored and the store
holds at most one partly used block beyond the rows in use. The store only ever holds clients that
have put a row: memory is bounded by the clients that took part, never by the fleet or the rounds.

Values are stored in `dtype` (a client's row is converted on `put`, with torch's round-to-nearest) and
come back as float32 copies. Pure: numpy and torch only.
"""

from __future__ import annotations

import numpy as np
import torch

NO_ROW = -1


class RowStore:
    """Vectors of one shape, keyed by non-negative client id; the shape is fixed by the first `put`."""

    def __init__(self, dtype: torch.dtype = torch.float32, block_rows: int = 1024):
        if block_rows < 1:
            raise ValueError(f"block_rows must be >= 1, got {block_rows}")
        self.dtype, self.block_rows = dtype, block_rows
        self.shape: tuple[int, ...] | None = None
        self._width = 0
        self._row_of = np.full(0, NO_ROW, dtype=np.int32)  # client id -> row, NO_ROW where it has none
        self._blocks: list[torch.Tensor] = []  # each (block_rows, width) of dtype
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
        """The store as named tensors (its index, row shape and blocks, not copied): what a checkpoint
        saves. `load` of the same dict rebuilds it."""
        out = {"index": torch.from_numpy(self._row_of), "rows": torch.tensor(self._rows),
               "shape": torch.tensor(self.shape if self.shape is not None else [-1], dtype=torch.int64)}
        return out | {f"block{i}": block for i, block in enumerate(self._blocks)}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        """Replace the contents with what `export` gave."""
        shape = tuple(tensors["shape"].tolist())
        self.shape = None if shape == (-1,) else shape
        self._width = 0 if self.shape is None else int(np.prod(self.shape))
        self._row_of = tensors["index"].numpy().astype(np.int32, copy=True)
        self._rows = int(tensors["rows"])
        blocks = [tensors[f"block{i}"] for i in range(sum(k.startswith("block") for k in tensors))]
        if blocks:
            self.block_rows = blocks[0].shape[0]
        self._blocks = [b.to(self.dtype, copy=True) for b in blocks]

    @property
    def nbytes(self) -> int:
        """Bytes held: the blocks and the index."""
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
            self._blocks.append(torch.zeros((self.block_rows, self._width), dtype=self.dtype))
        row, self._rows = self._rows, self._rows + 1
        self._row_of[client] = row
        return row
