"""Where each LoRA tensor sits in the flat adapter vector.

A flat adapter concatenates the trainable tensors of the model in `named_parameters` order. For every
adapted module there is an A (r x d_in) and a B (d_out x r); dW = scaling * B A with scaling = alpha / r.
Other trainable tensors (bottleneck adapters) are kind "other". Pure: no model needed, only names and
shapes, so tests build layouts by hand.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import torch


@dataclass(frozen=True)
class Segment:
    name: str  # full parameter name
    module: str  # the adapted module (name up to ".lora_A"/".lora_B"); the name itself for "other"
    kind: str  # "A", "B" or "other"
    shape: tuple[int, ...]
    offset: int

    @property
    def size(self) -> int:
        return int(torch.Size(self.shape).numel())

    def view(self, flat: torch.Tensor) -> torch.Tensor:
        """This tensor inside `flat` (P,), or inside each row of a stack (K, P)."""
        part = flat[..., self.offset : self.offset + self.size]
        return part.reshape(*flat.shape[:-1], *self.shape)


@dataclass(frozen=True)
class LoraPair:
    module: str
    a: Segment  # (r, d_in)
    b: Segment  # (d_out, r)


_LORA = re.compile(r"^(?P<module>.*)\.lora_(?P<kind>[AB])(\.|$)")


@dataclass(frozen=True)
class AdapterLayout:
    segments: tuple[Segment, ...]
    rank: int
    scaling: float  # alpha / r

    @classmethod
    def from_shapes(cls, named_shapes: list[tuple[str, tuple[int, ...]]], rank: int, scaling: float) -> "AdapterLayout":
        segments, offset = [], 0
        for name, shape in named_shapes:
            m = _LORA.match(name)
            module, kind = (m["module"], m["kind"]) if m else (name, "other")
            segments.append(Segment(name, module, kind, tuple(shape), offset))
            offset += segments[-1].size
        return cls(tuple(segments), rank, scaling)

    @cached_property
    def size(self) -> int:
        return sum(s.size for s in self.segments)

    @cached_property
    def pairs(self) -> tuple[LoraPair, ...]:
        by_module: dict[str, dict[str, Segment]] = {}
        for s in self.segments:
            if s.kind in ("A", "B"):
                by_module.setdefault(s.module, {})[s.kind] = s
        return tuple(LoraPair(m, d["A"], d["B"]) for m, d in by_module.items() if {"A", "B"} <= d.keys())

    def mask(self, patterns: tuple[str, ...] | list[str]) -> torch.Tensor:
        """(P,) bool: entries of the tensors whose name matches any regular expression in `patterns`."""
        out = torch.zeros(self.size, dtype=torch.bool)
        for s in self.segments:
            if any(re.search(p, s.name) for p in patterns):
                out[s.offset : s.offset + s.size] = True
        return out

    def beyond_rank(self, rank: int) -> torch.Tensor:
        """(P,) bool: the components a rank-`rank` client does not have (rows of A, columns of B)."""
        out = torch.zeros(self.size, dtype=torch.bool)
        for p in self.pairs:
            p.a.view(out)[rank:, :] = True
            p.b.view(out)[:, rank:] = True
        return out

    def products(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """B A per adapted module (without the scaling), from one flat adapter (P,)."""
        return [p.b.view(flat) @ p.a.view(flat) for p in self.pairs]

    def dense_shapes(self) -> list[tuple[int, int]]:
        return [(p.b.shape[0], p.a.shape[1]) for p in self.pairs]
