"""Peak memory of LoRA fine-tuning on one device: does the target model fit, and at which rank?

Scenario: a phone with 4 GB cannot fine-tune what a 16 GB cell-site server can. Before a device joins, the
emulator asks whether the target architecture, adapter rank, batch and sequence length fit in its memory,
and a heterogeneous-rank strategy asks for the largest rank that does. The estimate follows REFERENCE.md
section 6, term by term:

    peak = frozen weights + 16 B x trainable parameters + activations + logits + runtime overhead

Units: bytes (decimal: 1 GB = 1e9 B, as in the device table), parameters, tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from fleet.architectures import PROJECTIONS, Architecture

WeightDtype = Literal["fp32", "bf16", "fp16", "int8", "nf4"]

#: Bytes per frozen weight of a block's linear layers. int8 (LLM.int8) keeps one fp32 scale per row,
#: negligible. NF4 (QLoRA, Dettmers et al. 2023) stores one fp32 absmax per 64 weights: 4 / 64 B per weight
#: on top of the 4 bits; double quantisation would cut that to about 0.016 B.
WEIGHT_BYTES: dict[str, float] = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "int8": 1.0, "nf4": 0.5 + 4 / 64}

#: Quantisation leaves embeddings, LM head and norms alone (bitsandbytes swaps only nn.Linear in the blocks);
#: they stay in bf16, or in fp32 when the whole model is fp32.
UNQUANTISED_BYTES = 2.0

#: fp32 adapter weight, its gradient and Adam's two moments.
BYTES_PER_TRAINABLE = 16.0

#: Logits, their fp32 copy for the loss and its gradient: about 10 B per token per vocabulary entry.
LOGIT_BYTES_PER_ENTRY = 10.0

#: CUDA or mobile runtime context, allocator slack, tokenizer and data: a fixed cost whatever the model.
DEFAULT_OVERHEAD_BYTES = 300e6

DEFAULT_RANKS = (64, 32, 16, 8, 4, 2, 1)


@dataclass(frozen=True)
class MemoryEstimate:
    weights_bytes: float  # frozen base model
    trainable_params: int  # LoRA A and B matrices
    trainable_bytes: float  # adapter weights, gradients and Adam moments
    activation_bytes: float  # saved for the backward pass, all layers
    logits_bytes: float
    overhead_bytes: float

    @property
    def total_bytes(self) -> float:
        return (
            self.weights_bytes
            + self.trainable_bytes
            + self.activation_bytes
            + self.logits_bytes
            + self.overhead_bytes
        )


def _modules(target_modules: str | Iterable[str]) -> tuple[str, ...]:
    """PEFT's spellings: a list of projection names, one name, or "all-linear" (every block projection)."""
    if isinstance(target_modules, str):
        target_modules = PROJECTIONS if target_modules == "all-linear" else (target_modules,)
    names = tuple(dict.fromkeys(target_modules))  # a module named twice is still adapted once
    unknown = [n for n in names if n not in PROJECTIONS]
    if unknown or not names:
        raise ValueError(
            f"target_modules {list(names)!r}: unknown {unknown!r}; choose from {list(PROJECTIONS)} or 'all-linear'"
        )
    return names


def lora_param_count(arch: Architecture, rank: int, target_modules: str | Iterable[str]) -> int:
    """Trainable parameters: each adapted W (d_out x d_in) gets B (d_out x r) and A (r x d_in)."""
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    shapes = arch.projections
    return arch.layers * sum(rank * (shapes[m][0] + shapes[m][1]) for m in _modules(target_modules))


def activation_bytes(
    arch: Architecture, batch_size: int, seq_len: int, checkpointing: bool = False, flash_attention: bool = False
) -> float:
    """Activations kept for the backward pass, in bf16 (Korthikanti et al. 2022, "Reducing Activation
    Recomputation in Large Transformer Models", section 4.1).

    Per layer without recomputation: s b h (34 + 5 a s / h) bytes. Of the 34 s b h, 11 are attention, 4 the
    layer norms and 19 the MLP, which is 3 s b h + 4 s b i for an MLP of width i = 4h; writing the MLP with its
    real width gives s b (18 h + 4 i) + 5 a s^2 b. The 5 a s^2 b are the attention scores, softmax and its
    dropout mask; fused attention kernels (flash_attention) never store them. LoRA does not shrink any of
    this: norms, activations and attention keep their inputs so that the gradient reaches the adapters of
    earlier layers, and each adapted projection keeps its input for its A matrix.

    With activation checkpointing only each block's input survives (2 s b h per layer) and one block at a
    time is recomputed with its full activations.
    """
    if batch_size <= 0 or seq_len <= 0:
        raise ValueError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
    b, s, h, i, a = batch_size, seq_len, arch.hidden, arch.intermediate, arch.heads
    scores = 0.0 if flash_attention else 5.0 * a * s * s * b
    per_layer = s * b * (18.0 * h + 4.0 * i) + scores
    if checkpointing:
        return arch.layers * 2.0 * s * b * h + per_layer
    return arch.layers * per_layer


def lora_training_memory_bytes(
    arch: Architecture,
    rank: int,
    target_modules: str | Iterable[str],
    batch_size: int,
    seq_len: int,
    weight_dtype: WeightDtype = "bf16",
    checkpointing: bool = False,
    overhead_bytes: float = DEFAULT_OVERHEAD_BYTES,
    *,
    flash_attention: bool = False,
) -> MemoryEstimate:
    """Peak memory of one LoRA training step, term by term."""
    if weight_dtype not in WEIGHT_BYTES:
        raise ValueError(f"weight_dtype {weight_dtype!r}: choose from {sorted(WEIGHT_BYTES)}")
    if overhead_bytes < 0:
        raise ValueError(f"overhead_bytes must be non-negative, got {overhead_bytes}")
    linear = arch.block_linear_params
    other = arch.params - linear
    other_bytes = 4.0 if weight_dtype == "fp32" else UNQUANTISED_BYTES
    trainable = lora_param_count(arch, rank, target_modules)
    return MemoryEstimate(
        weights_bytes=linear * WEIGHT_BYTES[weight_dtype] + other * other_bytes,
        trainable_params=trainable,
        trainable_bytes=trainable * BYTES_PER_TRAINABLE,
        activation_bytes=activation_bytes(arch, batch_size, seq_len, checkpointing, flash_attention),
        logits_bytes=LOGIT_BYTES_PER_ENTRY * batch_size * seq_len * arch.vocab,
        overhead_bytes=float(overhead_bytes),
    )


def largest_feasible_rank(
    arch: Architecture,
    memory_bytes: float,
    ranks: Iterable[int] = DEFAULT_RANKS,
    *,
    target_modules: str | Iterable[str] = ("q_proj", "v_proj"),
    batch_size: int = 1,
    seq_len: int = 512,
    weight_dtype: WeightDtype = "bf16",
    checkpointing: bool = False,
    overhead_bytes: float = DEFAULT_OVERHEAD_BYTES,
    flash_attention: bool = False,
) -> int | None:
    """The largest of `ranks` whose peak fits in `memory_bytes`, or None when even the smallest does not.

    The default target_modules are PEFT's default for Llama (q_proj, v_proj); batch 1 and 512 tokens are a
    phone-sized step.
    """
    fitting = [
        r
        for r in ranks
        if lora_training_memory_bytes(
            arch,
            r,
            target_modules,
            batch_size,
            seq_len,
            weight_dtype,
            checkpointing,
            overhead_bytes,
            flash_attention=flash_attention,
        ).total_bytes
        <= memory_bytes
    ]
    return max(fitting) if fitting else None
