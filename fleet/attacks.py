"""Adversarial clients: which devices attack, and what they do to the update they send.

Scenario: a fraction of the fleet is compromised. Model poisoning changes the update before it is sent:
`sign_flip` sends -scale x delta, `scale` sends scale x delta, `gaussian` sends delta plus N(0, noise_std^2)
noise per entry. Data poisoning (`poison_data`) trains honestly on garbage: random tokens in place of the
client's text. Attackers are drawn once per run from the seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fleet.rng import stream, stream_key

ATTACKS = ("sign_flip", "scale", "gaussian", "poison_data")


@dataclass(frozen=True)
class Attack:
    fraction: float = 0.0
    kind: str = "sign_flip"
    scale: float = 1.0
    noise_std: float = 0.01

    def __post_init__(self) -> None:
        if self.kind not in ATTACKS:
            raise ValueError(f"unknown attack {self.kind!r}; known: {', '.join(ATTACKS)}")

    def attackers(self, seed: int, n_devices: int) -> np.ndarray:
        """(n_devices,) bool: round(fraction x n) devices, drawn without replacement."""
        out = np.zeros(n_devices, bool)
        k = int(round(self.fraction * n_devices))
        out[stream(seed, "attackers").choice(n_devices, size=k, replace=False)] = True
        return out

    def corrupt(self, delta: torch.Tensor, seed: int, client: int, rnd: int) -> torch.Tensor:
        """What an attacker sends in place of its honest `delta` (data poisoning sends it unchanged)."""
        if self.kind == "sign_flip":
            return -self.scale * delta
        if self.kind == "scale":
            return self.scale * delta
        if self.kind == "gaussian":
            g = torch.Generator().manual_seed(stream_key(seed, "attack-noise", client, rnd) % 2**63)
            return delta + self.noise_std * torch.randn(delta.shape, generator=g, dtype=delta.dtype)
        return delta
