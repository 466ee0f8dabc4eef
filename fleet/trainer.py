"""Local LoRA training of one client, as a worker runs it. Plain torch and peft: no Ray, no clock.

A worker holds one frozen base model wrapped with LoRA. A client is only its tokens plus the adapter it
starts from, so serving a client means copying a flat vector into the LoRA tensors, running a few optimiser
steps and copying the result out. Every random draw (batch windows, dropout) is seeded from
(seed, client, round), so the result does not depend on which worker runs it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from fleet.rng import stream, stream_key


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]


@dataclass(frozen=True)
class TrainJob:
    client: int  # device index: the update's identity
    data_client: int  # row of the packed token arrays
    round: int
    base_version: int
    steps: int
    rank: int | None = None  # a device that cannot hold the full rank trains only the first `rank` components


@dataclass(frozen=True)
class TrainSettings:
    seed: int
    batch_size: int
    seq_len: int
    lr: float
    weight_decay: float


@dataclass(frozen=True)
class TrainResult:
    job: TrainJob
    delta: torch.Tensor  # (P,) float32
    num_samples: int
    loss_first: float  # training loss of the first and last local step
    loss_last: float


def wrap_with_lora(base: torch.nn.Module, lora: LoraSpec, seed: int) -> torch.nn.Module:
    """The base model with LoRA adapters; only the adapters are trainable. A is initialised from the
    run's seed so that every worker and the server agree on the initial global adapter."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(stream_key(seed, "lora-init") % 2**63)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, config)


def adapter_params(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for _, p in model.named_parameters() if p.requires_grad]


def get_flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in adapter_params(model)]).clone()


@torch.no_grad()
def set_flat(model: torch.nn.Module, flat: torch.Tensor) -> None:
    """Copy `flat` into the adapter tensors. A copy, not a view (as vector_to_parameters makes): training
    must not write into the global adapter it started from."""
    params = adapter_params(model)
    size = sum(p.numel() for p in params)
    if size != flat.numel():
        raise ValueError(f"adapter has {size} parameters, the vector {flat.numel()}")
    offset = 0
    for p in params:
        p.copy_(flat[offset : offset + p.numel()].view_as(p))
        offset += p.numel()


def windows(tokens: np.ndarray, starts: np.ndarray, length: int) -> torch.Tensor:
    """(len(starts), length) token windows; a text shorter than a window is repeated to fill it."""
    if len(tokens) < length + 1:
        tokens = np.resize(tokens, length + 1)
    idx = starts[:, None] % (len(tokens) - length + 1) + np.arange(length)[None, :]
    return torch.from_numpy(tokens[idx].astype(np.int64))


def lm_loss(model: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over a (B, T+1) batch."""
    logits = model(input_ids=batch[:, :-1]).logits
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


class LocalTrainer:
    """What one worker does: train a client from a global adapter, or evaluate an adapter."""

    def __init__(self, model: torch.nn.Module, settings: TrainSettings):
        self.model = model
        self.settings = settings

    def train(self, job: TrainJob, global_adapter: torch.Tensor, tokens: np.ndarray) -> TrainResult:
        s = self.settings
        set_flat(self.model, global_adapter)
        masks = self._truncation(job.rank)
        if masks is not None:  # rank r_k: components beyond r_k are absent on this device (HetLoRA-style)
            with torch.no_grad():
                for p, m in zip(adapter_params(self.model), masks):
                    p[m] = 0.0
        torch.manual_seed(stream_key(s.seed, "dropout", job.client, job.round) % 2**63)
        rng = stream(s.seed, "batches", job.client, job.round)
        opt = torch.optim.AdamW(adapter_params(self.model), lr=s.lr, weight_decay=s.weight_decay)
        self.model.train()
        losses = []
        for _ in range(job.steps):
            batch = windows(tokens, rng.integers(0, 2**31, s.batch_size), s.seq_len + 1)
            loss = lm_loss(self.model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if masks is not None:
                for p, m in zip(adapter_params(self.model), masks):
                    p.grad[m] = 0.0
            opt.step()
            losses.append(loss.item())
        delta = get_flat(self.model) - global_adapter
        if masks is not None:  # the server receives a zero-padded update: absent components are unchanged
            delta[torch.cat([m.reshape(-1) for m in masks])] = 0.0
        return TrainResult(job, delta, int(len(tokens)), losses[0], losses[-1])

    def _truncation(self, rank: int | None) -> list[torch.Tensor] | None:
        """Per adapter tensor, the entries beyond `rank`: rows of A (r x d_in), columns of B (d_out x r)."""
        params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        full = next(p.shape[0] for n, p in params if "lora_A" in n)
        if rank is None or rank >= full:
            return None
        masks = []
        for name, p in params:
            m = torch.zeros_like(p, dtype=torch.bool)
            if "lora_A" in name:
                m[rank:, :] = True
            elif "lora_B" in name:
                m[:, rank:] = True
            masks.append(m)
        return masks

    @torch.no_grad()
    def evaluate(self, adapter: torch.Tensor, eval_windows: torch.Tensor, batch_size: int = 64) -> float:
        """Mean token loss of the model with `adapter` over fixed held-out windows (W, T+1)."""
        set_flat(self.model, adapter)
        self.model.eval()
        total, count = 0.0, 0
        for batch in eval_windows.split(batch_size):
            n = batch[:, 1:].numel()
            total += lm_loss(self.model, batch).item() * n
            count += n
        return total / count
