"""Upload codecs for client deltas, with bytes counted from the encoded payload.

A codec turns a flat float32 delta (n,) into real bytes and back; `encoded_bytes(n)` is exact, equal to
len(encode(x)) for every x of size n, so the clock can charge uploads before they are encoded.

- "none": float32, 4 n bytes.
- "topk" (fraction rho): the k = ceil(rho n) entries of largest magnitude, as k uint32 indices (ascending)
  and k float32 values, 8 k bytes; the rest decode to zero (Lin et al., "Deep Gradient Compression",
  ICLR 2018).
- "q8", "q4": symmetric uniform quantisation with one float32 scale per chunk of C values:
  s_c = max_{i in c} |x_i| / L, q_i = round(x_i / s_c) in [-L, L], L = 2^(b-1) - 1 (127 or 7), decoded
  q_i s_c. Rounding is deterministic (to nearest), so runs are reproducible without a seed; its bias is
  what error feedback corrects. Zero stays exactly zero (entries a client does not train stay zero). The
  error is at most s_c / 2 per entry. 4-bit codes are stored offset by 8, two per byte (low nibble
  first): 4 ceil(n/C) + ceil(n/2) bytes, about 1/8 of float32.

Error feedback (Stich et al., "Sparsified SGD with Memory", NeurIPS 2018; DGC): the client keeps the part
of its corrected delta that was not sent, e_k, and adds it to its next upload:

    c_k = Delta_k + e_k,   send C(c_k),   e_k <- c_k - C(c_k)

so the sum of what a client sent over its sessions equals the sum of its true deltas minus its current
e_k, which stays bounded. `ErrorFeedback` holds e_k per client (in the emulator, on the server's side of
the wire, standing in for each device's memory) in a `RowStore`, in float32: e_k is the small difference
between two float32 vectors, and rounding it to 16 bits would change what later uploads send, so the
store bounds its memory by the clients that have sent (4 n bytes each) instead of by precision. Given a
directory, the store keeps its blocks in files there, out of the driver's memory.

Client duties: compress the delta with the configured codec (with error feedback, keep e_k across
sessions). Pure: numpy and torch only.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from aggregation.registry import Registry, param
from aggregation.rowstore import RowStore

F32 = np.dtype("<f4")
U32 = np.dtype("<u4")


def _as_float32(x: torch.Tensor) -> np.ndarray:
    a = x.detach().reshape(-1).to(torch.float32).cpu().numpy()
    if not np.isfinite(a).all():
        raise ValueError("cannot encode a delta with NaN or infinite entries")
    return a


class Codec(ABC):
    """A codec is its own typed config (a frozen dataclass of its parameters): it holds no state."""

    name: ClassVar[str] = ""

    @abstractmethod
    def encode(self, x: torch.Tensor) -> bytes:
        """The payload for a flat delta x (n,)."""

    @abstractmethod
    def _decode(self, payload: bytes, n: int) -> np.ndarray:
        """(n,) float32 from a payload of the right length."""

    @abstractmethod
    def encoded_bytes(self, n: int) -> int:
        """len(encode(x)) for any x of n entries."""

    def decode(self, payload: bytes, n: int) -> torch.Tensor:
        if len(payload) != self.encoded_bytes(n):
            raise ValueError(f"{self.name} payload of {len(payload)} bytes, expected {self.encoded_bytes(n)} for n={n}")
        return torch.from_numpy(self._decode(payload, n).astype(np.float32, copy=True))

    def roundtrip(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(what the server decodes, bytes sent) for one upload without error feedback."""
        payload = self.encode(x)
        return self.decode(payload, x.numel()), len(payload)


@dataclass(frozen=True)
class NoCompression(Codec):
    name = "none"

    def encode(self, x: torch.Tensor) -> bytes:
        return _as_float32(x).astype(F32).tobytes()

    def _decode(self, payload: bytes, n: int) -> np.ndarray:
        return np.frombuffer(payload, dtype=F32)

    def encoded_bytes(self, n: int) -> int:
        return 4 * n


@dataclass(frozen=True)
class TopK(Codec):
    name = "topk"
    fraction: float = param(0.1, "share rho of the entries sent, in (0, 1]: the ceil(rho n) largest in magnitude")

    def __post_init__(self) -> None:
        if not 0 < self.fraction <= 1:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")

    def k(self, n: int) -> int:
        return min(n, max(1, math.ceil(self.fraction * n)))

    def encode(self, x: torch.Tensor) -> bytes:
        a = _as_float32(x)
        if a.size >= 2**32:
            raise ValueError("topk indexes entries with uint32: at most 2^32 - 1 entries")
        # Stable sort: ties go to the lower index, so the payload does not depend on the sort algorithm.
        idx = np.sort(np.argsort(-np.abs(a), kind="stable")[: self.k(a.size)])
        return idx.astype(U32).tobytes() + a[idx].astype(F32).tobytes()

    def _decode(self, payload: bytes, n: int) -> np.ndarray:
        k = self.k(n)
        idx = np.frombuffer(payload, dtype=U32, count=k)
        values = np.frombuffer(payload, dtype=F32, count=k, offset=4 * k)
        if k and int(idx.max()) >= n:
            raise ValueError(f"topk payload indexes entry {int(idx.max())} of a vector of {n}")
        out = np.zeros(n, dtype=np.float32)
        out[idx] = values
        return out

    def encoded_bytes(self, n: int) -> int:
        return 8 * self.k(n)


@dataclass(frozen=True)
class Quantize(Codec):
    """Q8 and Q4 fix `bits`; the chunk is their parameter."""

    bits: ClassVar[int]
    chunk: int = param(256, "values sharing one float32 scale, >= 1")

    def __post_init__(self) -> None:
        if self.chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {self.chunk}")

    @property
    def L(self) -> int:
        """The largest code magnitude, 2^(bits - 1) - 1."""
        return 2 ** (self.bits - 1) - 1

    def _chunks(self, n: int) -> int:
        return -(-n // self.chunk)

    def encode(self, x: torch.Tensor) -> bytes:
        a = _as_float32(x)
        n, C = a.size, self.chunk
        padded = np.zeros(self._chunks(n) * C, dtype=np.float64)
        padded[:n] = a
        padded = padded.reshape(-1, C)
        s = (np.abs(padded).max(axis=1) / self.L).astype(F32)  # s_c, rounded as it is sent
        safe = np.where(s > 0, s, 1.0).astype(np.float64)[:, None]
        q = np.clip(np.rint(padded / safe), -self.L, self.L).astype(np.int8).reshape(-1)[:n]
        if self.bits == 8:
            codes = q.tobytes()
        else:
            u = (q + 8).astype(np.uint8)
            if n % 2:
                u = np.append(u, np.uint8(0))
            codes = (u[0::2] | (u[1::2] << 4)).astype(np.uint8).tobytes()
        return s.tobytes() + codes

    def _decode(self, payload: bytes, n: int) -> np.ndarray:
        m = self._chunks(n)
        s = np.frombuffer(payload, dtype=F32, count=m)
        raw = np.frombuffer(payload, dtype=np.uint8, offset=4 * m)
        if self.bits == 8:
            q = raw.view(np.int8).astype(np.float32)
        else:
            q = (np.stack([raw & 0x0F, raw >> 4], axis=1).reshape(-1)[:n].astype(np.int16) - 8).astype(np.float32)
        return q * np.repeat(s, self.chunk)[:n]

    def encoded_bytes(self, n: int) -> int:
        return 4 * self._chunks(n) + (n if self.bits == 8 else -(-n // 2))


@dataclass(frozen=True)
class Q8(Quantize):
    name = "q8"
    bits = 8


@dataclass(frozen=True)
class Q4(Quantize):
    name = "q4"
    bits = 4


class ErrorFeedback:
    """Per-client residuals e_k: compress(client, Delta) sends C(Delta + e_k) and keeps the rest."""

    def __init__(self, codec: Codec, directory: Path | None = None):
        self.codec = codec
        self.residual = RowStore(torch.float32, directory=directory)

    def compress(self, client: int, delta: torch.Tensor) -> tuple[torch.Tensor, int]:
        """(the decoded upload the server aggregates, payload bytes)."""
        e = self.residual.get(client)
        if e is not None and e.shape != delta.shape:
            raise ValueError(f"client {client} delta has shape {tuple(delta.shape)}, its residual "
                             f"{tuple(e.shape)}")
        c = delta.to(torch.float32) if e is None else delta.to(torch.float32) + e
        sent, nbytes = self.codec.roundtrip(c)
        self.residual.put(client, c - sent.reshape(c.shape))
        return sent.reshape(delta.shape), nbytes


CODECS: Registry[Codec] = Registry("codec")
for _codec in (NoCompression, TopK, Q8, Q4):
    CODECS.register(_codec.name, _codec)


def codec_names() -> list[str]:
    return CODECS.names()


def build_codec(name: str, **params) -> Codec:
    return CODECS.build(name, **params)
