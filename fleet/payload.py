"""How many adapter values a session moves, for the emulated architecture.

The trained model and the emulated one share the adapter's structure (LoRA on corresponding layers, the
same bottleneck width), not its size. What a strategy sends is chosen on the trained model's layout (a
mask over its entries: shared, not personal, not frozen); each kind of tensor (A or B of a layer, a
bottleneck weight or bias) keeps the same sent fraction in the emulated architecture, whose sizes come from
its own layers and the device's rank. A trained layer stands for the emulated layers of its name, or for
those `fleet.architectures.emulated_layers` maps it to (GPT-2's fused c_attn for q_proj, k_proj, v_proj).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from aggregation import AdapterLayout
from fleet.architectures import Architecture


def _key(segment) -> tuple[str, str]:
    if segment.kind in ("A", "B"):
        return segment.module.rsplit(".", 1)[-1], segment.kind
    return "bottleneck", segment.name.split(".bottleneck.", 1)[-1]


def _emulated_count(arch: Architecture, key: tuple[str, str], rank: int, bottleneck: int,
                    stands_for: Mapping[str, tuple[str, ...]]) -> int:
    name, part = key
    if name == "bottleneck":
        h, b = arch.hidden, bottleneck
        per_layer = {"down.weight": b * h, "down.bias": b, "up.weight": h * b, "up.bias": h}[part]
        return arch.layers * per_layer
    names = stands_for.get(name, (name,))
    layers = [layer for layer in arch.linears if layer.name in names]
    if not layers:
        raise ValueError(f"{arch.name} has no layer that {name!r} stands for (its layers: "
                         f"{', '.join(arch.linear_names)})")
    return sum(layer.count * rank * (layer.d_in if part == "A" else layer.d_out) for layer in layers)


def emulated_values(arch: Architecture, layout: AdapterLayout, mask: torch.Tensor, rank: int,
                    bottleneck: int = 0, stands_for: Mapping[str, tuple[str, ...]] | None = None) -> int:
    """Values of the emulated adapter in the entries `mask` selects, at LoRA rank `rank`. `stands_for`: the
    layers of `arch` each adapted module name of the trained model stands for (left out: the same name)."""
    total: dict[tuple[str, str], int] = {}
    chosen: dict[tuple[str, str], int] = {}
    for s in layout.segments:
        key = _key(s)
        total[key] = total.get(key, 0) + s.size
        chosen[key] = chosen.get(key, 0) + int(mask[s.offset : s.offset + s.size].sum())
    return int(round(sum(_emulated_count(arch, k, rank, bottleneck, stands_for or {}) * chosen[k] / total[k]
                         for k in total)))
