"""Local LoRA training of one client, as a worker runs it. Plain torch and peft: no Ray, no clock.

A worker holds one frozen base model wrapped with LoRA (and, optionally, bottleneck adapters). A client is
only its tokens plus the adapter it starts from, so serving a client means copying a flat vector into the
trainable tensors, running a few optimiser steps and copying the result out. What the server asks of a
client (a proximal term, entries it keeps frozen, a smaller rank) travels in its `TrainJob`. Every random
draw (batch windows, dropout) is seeded from (seed, client, round), so the result does not depend on which
worker runs it.

The trainer computes on its device (CPU, or CUDA for a worker that holds a GPU) and hands back CPU float32
tensors and Python floats, so nothing past it knows where it ran. With `train_dtype` bf16 the matmuls of
training run in bfloat16 (torch.autocast) while every tensor kept (adapters, gradients, Adam's moments, the
update) stays float32; fp32 enters no autocast at all.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from aggregation import AdapterLayout, ParameterGroups
from fleet.architectures import decoder_blocks
from fleet.rng import stream, stream_key


@dataclass(frozen=True)
class LoraSpec:
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]
    bottleneck: int = 0  # width of a bottleneck adapter after each block's `mlp` module; 0: none


@dataclass(frozen=True)
class TrainJob:
    client: int  # device index: the update's identity
    data_client: int  # row of the packed token arrays
    round: int
    base_version: int
    steps: int
    rank: int | None = None  # a device that cannot hold the full rank trains only the first `rank` components
    prox_mu: float = 0.0  # adds mu/2 ||w - w_start||^2 over the entries the client shares (FedProx, PWFF)
    groups: ParameterGroups = ParameterGroups()  # entries kept personal (no proximal term) or frozen
    poison: bool = False  # an attacker: trains on random tokens instead of its data


TrainDtype = Literal["fp32", "bf16"]


@dataclass(frozen=True)
class TrainSettings:
    seed: int
    batch_size: int
    seq_len: int
    lr: float
    weight_decay: float
    train_dtype: TrainDtype = "fp32"  # arithmetic of the training matmuls (runtime.train_dtype)


@dataclass(frozen=True)
class TrainResult:
    job: TrainJob
    delta: torch.Tensor  # (P,) float32
    num_samples: int
    loss_first: float  # training loss of the first and last local step
    loss_last: float


class Bottleneck(torch.nn.Module):
    """A Houlsby-style adapter on a block's MLP output h: h + up(gelu(down(h))). `up` starts at zero, so a
    new adapter leaves the model unchanged."""

    def __init__(self, hidden: int, width: int):
        super().__init__()
        self.down = torch.nn.Linear(hidden, width)
        self.up = torch.nn.Linear(width, hidden)
        torch.nn.init.zeros_(self.up.weight)
        torch.nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(torch.nn.functional.gelu(self.down(h)))


def add_bottlenecks(model: torch.nn.Module, width: int) -> None:
    """Attach a bottleneck adapter to every decoder block (as `block.bottleneck`, applied by a forward hook
    on `block.mlp`), leaving the names of the base and LoRA parameters unchanged."""
    hidden = model.config.hidden_size
    for block in decoder_blocks(model):
        if not isinstance(getattr(block, "mlp", None), torch.nn.Module):  # OPT keeps fc1 and fc2 in the block
            raise ValueError(f"the decoder blocks ({type(block).__name__}) have no `mlp` module to put a "
                             "bottleneck adapter after")
        block.bottleneck = Bottleneck(hidden, width)
        block.mlp.register_forward_hook(lambda module, args, out, adapter=block.bottleneck: adapter(out))


def wrap_with_lora(base: torch.nn.Module, lora: LoraSpec, seed: int) -> torch.nn.Module:
    """The base model with LoRA (and bottleneck) adapters; only the adapters are trainable. They are
    initialised from the run's seed so that every worker and the server agree on the initial global
    adapter."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(stream_key(seed, "lora-init") % 2**63)
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        fan_in_fan_out=transposed_targets(base, lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, config)
    if lora.bottleneck:
        add_bottlenecks(model, lora.bottleneck)
    return model


def transposed_targets(model: torch.nn.Module, target_modules: tuple[str, ...]) -> bool:
    """Do the target layers store their weight (d_in, d_out), as GPT-2's Conv1D does? PEFT must know, to merge
    B A transposed (it would find out and warn)."""
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(m, Conv1D) for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in target_modules)


def train_mode(model: torch.nn.Module) -> None:
    """Training mode for the adapters only. The frozen base computes as it does in inference, without its own
    dropout (GPT-2's and OPT's 0.1; Llama's is 0): model.lora.dropout is the one dropout a run has, drawn from
    each job's own seed, so that a job's result is the same alone or in a group (fleet/grouped.py)."""
    model.eval()
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in ("lora_dropout", "bottleneck"):
            module.train()


def adapter_layout(model: torch.nn.Module, lora: LoraSpec) -> AdapterLayout:
    named = [(n, tuple(p.shape)) for n, p in model.named_parameters() if p.requires_grad]
    return AdapterLayout.from_shapes(named, lora.r, lora.alpha / lora.r)


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
    """Mean next-token cross-entropy over a (B, T+1) batch, taken in float32: bf16 logits (autocast) are cast up
    first, float32 ones used as they are."""
    logits = model(input_ids=batch[:, :-1]).logits.float()
    return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))


def training_precision(device: torch.device, train_dtype: TrainDtype):
    """The context a training forward pass runs in. bf16: torch.autocast to bfloat16 on the trainer's device
    type, which casts each matmul's operands while the float32 tensors themselves stay as they are. fp32: no
    context at all, so float32 training is exactly what it is without this option."""
    if train_dtype == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class LocalTrainer:
    """What one worker does: train a client from a start adapter, or evaluate an adapter. The model moves to
    `device`; every tensor handed in may live anywhere, every one handed back is on the CPU."""

    def __init__(self, model: torch.nn.Module, settings: TrainSettings, layout: AdapterLayout,
                 device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.settings = settings
        self.layout = layout
        self._base_weights: list[torch.Tensor] | None = None  # the base's own weights, kept for FLoRA merges
        self._base_key: bytes | None = None
        self._mask_cache: dict = {}

    def train(self, job: TrainJob, start: torch.Tensor, tokens: np.ndarray,
              base_delta: torch.Tensor | None = None) -> TrainResult:
        """`start`: the adapter the client begins from (the global one, with its personal entries where it
        keeps some). The result's delta covers every entry; the caller decides what is sent."""
        s = self.settings
        self.set_base_delta(base_delta)
        absent, fixed_parts, prox_parts = self.masks(job.groups, job.rank)
        target = start.to(self.device).clone()
        target[absent] = 0.0  # components beyond the client's rank (HetLoRA-style) are absent: zero
        set_flat(self.model, target)
        params = adapter_params(self.model)
        anchors = self._split(target)
        torch.manual_seed(stream_key(s.seed, "dropout", job.client, job.round) % 2**63)
        rng = stream(s.seed, "batches", job.client, job.round)
        if job.poison:
            tokens = stream(s.seed, "poison", job.client, job.round).integers(
                0, self.model.config.vocab_size, len(tokens))
        opt = torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
        train_mode(self.model)
        losses = []
        for _ in range(job.steps):
            batch = windows(tokens, rng.integers(0, 2**31, s.batch_size), s.seq_len + 1).to(self.device)
            with training_precision(self.device, s.train_dtype):
                loss = lm_loss(self.model, batch)
            objective = loss
            if job.prox_mu > 0:
                objective = loss + job.prox_mu / 2 * sum(((p - a)[m] ** 2).sum()
                                                         for p, a, m in zip(params, anchors, prox_parts))
            opt.zero_grad(set_to_none=True)
            objective.backward()
            opt.step()
            with torch.no_grad():  # Adam's moments and weight decay would move fixed entries: put them back
                for p, a, m in zip(params, anchors, fixed_parts):
                    p[m] = a[m]
            losses.append(loss.item())
        delta = (get_flat(self.model) - target).cpu()
        return TrainResult(job, delta, int(len(tokens)), losses[0], losses[-1])

    def masks(self, groups: ParameterGroups, rank: int | None):
        """For a job's groups and rank: the absent entries (flat), and per adapter tensor the entries held
        at a fixed value (frozen or absent) and those under the proximal term. Every job of a run asks for
        one or a few of these, so they are computed once each."""
        key = (groups, rank)
        if key not in self._mask_cache:
            shared, _, frozen = (m.to(self.device) for m in groups.masks(self.layout))
            absent = torch.zeros_like(shared)
            if rank is not None and rank < self.layout.rank:
                absent = self.layout.beyond_rank(rank).to(self.device)
            fixed = frozen | absent
            self._mask_cache[key] = (absent, self._split(fixed), self._split(shared & ~fixed))
        return self._mask_cache[key]

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """A flat vector cut into the shapes of the adapter tensors."""
        return [seg.view(flat) for seg in self.layout.segments]

    @torch.no_grad()
    def set_base_delta(self, base_delta: torch.Tensor | None) -> None:
        """Merge dense LoRA products into the base weights: W = W0 + scaling x base_delta (FLoRA's merged
        stacks). None restores the base's own weights."""
        key = None if base_delta is None else hashlib.blake2b(base_delta.cpu().numpy().tobytes()).digest()
        if key == self._base_key:
            return
        if base_delta is not None:
            base_delta = base_delta.to(self.device)
        modules = [self.model.get_submodule(p.module) for p in self.layout.pairs]
        if self._base_weights is None:
            self._base_weights = [m.base_layer.weight.detach().clone() for m in modules]
        offset = 0
        for pair, module, w0 in zip(self.layout.pairs, modules, self._base_weights):
            if base_delta is None:
                module.base_layer.weight.copy_(w0)
                continue
            part = base_delta[offset : offset + w0.numel()].view(pair.b.shape[0], pair.a.shape[1])  # (d_out, d_in)
            # GPT-2's Conv1D stores its weight (d_in, d_out): PEFT marks such layers fan_in_fan_out
            module.base_layer.weight.copy_(w0 + self.layout.scaling * (part.T if module.fan_in_fan_out else part))
            offset += w0.numel()
        self._base_key = key

    @torch.no_grad()
    def evaluate(self, adapter: torch.Tensor, eval_windows: torch.Tensor, batch_size: int = 64,
                 base_delta: torch.Tensor | None = None) -> float:
        """Mean token loss of the model with `adapter` over fixed held-out windows (W, T+1)."""
        self.set_base_delta(base_delta)
        set_flat(self.model, adapter)
        self.model.eval()
        total, count = 0.0, 0
        for batch in eval_windows.split(batch_size):
            n = batch[:, 1:].numel()
            total += lm_loss(self.model, batch.to(self.device)).item() * n
            count += n
        return total / count

    @torch.no_grad()
    def score(self, adapter: torch.Tensor, texts: list[np.ndarray], batch_size: int = 32,
              base_delta: torch.Tensor | None = None) -> np.ndarray:
        """(len(texts),) mean token loss of each text (token ids, at least two) under the model with `adapter`:
        how surprising the model finds it. Texts of similar length share a padded batch; padding goes at the
        end, where causal attention keeps it out of every real token's loss."""
        self.set_base_delta(base_delta)
        set_flat(self.model, adapter)
        self.model.eval()
        lengths = np.array([len(t) for t in texts])
        if (lengths < 2).any():
            raise ValueError("every text needs at least two tokens to score")
        out = np.empty(len(texts))
        order = np.argsort(lengths, kind="stable")
        for idx in np.array_split(order, -(-len(order) // batch_size)) if len(order) else []:
            batch = torch.zeros(len(idx), int(lengths[idx].max()), dtype=torch.int64)
            for row, i in enumerate(idx):
                batch[row, : lengths[i]] = torch.from_numpy(np.asarray(texts[i], dtype=np.int64))
            batch = batch.to(self.device)
            logits = self.model(input_ids=batch[:, :-1]).logits
            losses = torch.nn.functional.cross_entropy(logits.transpose(1, 2), batch[:, 1:], reduction="none")
            real = torch.arange(batch.shape[1] - 1)[None, :] < torch.from_numpy(lengths[idx] - 1)[:, None]
            real = real.to(self.device)
            out[idx] = ((losses * real).sum(1) / real.sum(1)).cpu().numpy()
        return out
