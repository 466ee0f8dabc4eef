"""Partial aggregation: which entries of the adapter are shared, kept on the device, or frozen.

Parameter groups are chosen by regular expressions over parameter names. Shared entries are trained,
sent up and aggregated; personal entries are trained and stay on the device between its sessions (the
client's own part, never sent); frozen entries keep their initial value everywhere (same seed on every
client and the server) and are neither trained nor sent. Presets:

- PWFF (Jiang et al., arXiv 2404.13238): the bottleneck adapters are shared, the LoRA part is personal,
  and the local loss adds a proximal penalty toward the global part.
- FedSA-LoRA (Guo et al., ICLR 2025): A shared, B personal.
- FFA-LoRA (Sun et al., ICLR 2024): A frozen at its initial value, only B trained and sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from aggregation.layout import AdapterLayout


@dataclass(frozen=True)
class ParameterGroups:
    personal: tuple[str, ...] = ()  # name patterns kept on the device
    frozen: tuple[str, ...] = ()  # name patterns never trained

    def masks(self, layout: AdapterLayout) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(shared, personal, frozen) bool masks (P,); frozen wins over personal where both match."""
        frozen = layout.mask(self.frozen)
        personal = layout.mask(self.personal) & ~frozen
        return ~(frozen | personal), personal, frozen

    @property
    def partial(self) -> bool:
        return bool(self.personal or self.frozen)

    def replaced(self, personal: Sequence[str] | None = None, frozen: Sequence[str] | None = None) -> ParameterGroups:
        """These groups with a scenario's `personal` and `frozen` patterns in place of the preset's (None: keep
        the preset's; an empty list shares everything the preset kept)."""
        return ParameterGroups(
            personal=self.personal if personal is None else tuple(personal),
            frozen=self.frozen if frozen is None else tuple(frozen),
        )


PWFF = ParameterGroups(personal=(r"\.lora_[AB]\.",))
FEDSA_LORA = ParameterGroups(personal=(r"\.lora_B\.",))
FFA_LORA = ParameterGroups(frozen=(r"\.lora_A\.",))
