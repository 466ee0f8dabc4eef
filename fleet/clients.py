"""The device's side of an update: what it starts from and what it sends.

A device that keeps a personal part (partial aggregation: PWFF, FedSA-LoRA) starts each session from the
global adapter with its own personal entries, and keeps what it trained there for its next session; it
sends only the shared entries. An attacker corrupts what it sends. A codec encodes the upload; the server
decodes it, and the bytes of the real payload are recorded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from aggregation import AdapterLayout, ClientConfig, ClientUpdate, Strategy
from aggregation.compression import ErrorFeedback
from aggregation.dp import client_clip
from aggregation.rowstore import RowStore
from fleet.attacks import Attack
from fleet.trainer import TrainResult


class ClientSide:
    def __init__(self, layout: AdapterLayout, strategy: Strategy, initial_adapter: torch.Tensor, seed: int,
                 attack: Attack, attackers: np.ndarray, codec=None, state_dir: Path | None = None):
        self.layout = layout
        self.shared, self.personal_mask, _ = strategy.groups.masks(layout)
        self.seed, self.attack, self.attackers, self.codec = seed, attack, attackers, codec
        self._initial_personal = initial_adapter[self.personal_mask].clone()
        self._keeps_personal = bool(self.personal_mask.any())  # asked once per session: computed once
        self._plain_bytes = 4 * int(self.shared.sum())  # float32 upload of the shared entries
        # Personal entries of each device that has trained, stored as float16: 2 bytes a value, since a
        # fleet may hold many of them; only devices that trained have a row. With a state_dir they live in
        # files there, so a large fleet's parts do not stay in the driver's memory.
        self.personal = RowStore(torch.float16, directory=None if state_dir is None else Path(state_dir) / "personal")

    def state_dict(self) -> dict:
        """What devices keep between sessions: personal parts, and error-feedback residuals."""
        state = {"personal": self.personal.export()}
        if isinstance(self.codec, ErrorFeedback):
            state["residual"] = self.codec.residual.export()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.personal.load(state["personal"])
        if isinstance(self.codec, ErrorFeedback):
            self.codec.residual.load(state["residual"])

    def release_pages(self) -> None:
        """Hand the pages of the stored rows back to the kernel, as after a checkpoint has read them all: they
        would stay counted in the driver's resident memory until its stores next fill a block."""
        self.personal.release_pages()
        if isinstance(self.codec, ErrorFeedback):
            self.codec.residual.release_pages()

    @property
    def keeps_personal(self) -> bool:
        return self._keeps_personal

    def poisons(self, device: int) -> bool:
        """Does this device train on poisoned data?"""
        return bool(self.attackers[device]) and self.attack.kind == "poison_data"

    def start(self, device: int, global_adapter: torch.Tensor) -> torch.Tensor:
        """The adapter the device trains from."""
        if not self.keeps_personal:
            return global_adapter
        start = global_adapter.clone()
        start[self.personal_mask] = self.personal_part(device)
        return start

    def personal_part(self, device: int) -> torch.Tensor:
        stored = self.personal.get(device)  # a float32 copy
        return self._initial_personal if stored is None else stored

    def send(self, result: TrainResult, config: ClientConfig, num_samples: int) -> tuple[ClientUpdate, int]:
        """Keep the personal part, send the shared one; returns the update as the server decodes it and
        the bytes of the encoded payload."""
        job, delta = result.job, result.delta
        if self.keeps_personal:
            self.personal.put(job.client, self.personal_part(job.client) + delta[self.personal_mask])
        delta = torch.where(self.shared, delta, torch.zeros_like(delta))
        if self.attackers[job.client]:
            delta = self.attack.corrupt(delta, self.seed, job.client, job.round)
        if config.clip_norm > 0:  # a duty of clients under client-side DP clipping
            delta = client_clip(delta, config.clip_norm)
        payload_bytes = self._plain_bytes
        if self.codec is not None and torch.isfinite(delta).all():
            shared, payload_bytes = self.codec.compress(job.client, delta[self.shared])
            delta = torch.zeros_like(delta)
            delta[self.shared] = shared
        elif self.codec is not None:  # a diverged device: nothing to encode, its residual stays; the server's
            payload_bytes = self.codec.codec.encoded_bytes(int(self.shared.sum()))  # screen rejects the update
        update = ClientUpdate(job.client, delta, num_samples, job.base_version, job.steps, job.rank)
        return update, payload_bytes
