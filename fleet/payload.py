"""How many adapter values a session moves, for the emulated architecture.

The trained model and the emulated one share the adapter's structure (LoRA on the same projections, the
same bottleneck width), not its size. What a strategy sends is chosen on the trained model's layout (a
mask over its entries: shared, not personal, not frozen); each kind of tensor (A or B of a projection, a
bottleneck weight or bias) keeps the same sent fraction in the emulated architecture, whose sizes come from
its own dimensions and the device's rank.
"""

from __future__ import annotations

import torch

from aggregation import AdapterLayout
from fleet.architectures import Architecture


def _key(segment) -> tuple[str, str]:
    if segment.kind in ("A", "B"):
        return segment.module.rsplit(".", 1)[-1], segment.kind
    return "bottleneck", segment.name.split(".bottleneck.", 1)[-1]


def _emulated_count(arch: Architecture, key: tuple[str, str], rank: int, bottleneck: int) -> int:
    name, part = key
    if name == "bottleneck":
        h, b = arch.hidden, bottleneck
        per_layer = {"down.weight": b * h, "down.bias": b, "up.weight": h * b, "up.bias": h}[part]
        return arch.layers * per_layer
    d_in, d_out = arch.projections[name]
    return arch.layers * rank * (d_in if part == "A" else d_out)


def emulated_values(arch: Architecture, layout: AdapterLayout, mask: torch.Tensor, rank: int,
                    bottleneck: int = 0) -> int:
    """Values of the emulated adapter in the entries `mask` selects, at LoRA rank `rank`."""
    total: dict[tuple[str, str], int] = {}
    chosen: dict[tuple[str, str], int] = {}
    for s in layout.segments:
        key = _key(s)
        total[key] = total.get(key, 0) + s.size
        chosen[key] = chosen.get(key, 0) + int(mask[s.offset : s.offset + s.size].sum())
    return int(round(sum(_emulated_count(arch, k, rank, bottleneck) * chosen[k] / total[k] for k in total)))
