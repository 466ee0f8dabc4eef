"""Peak memory of LoRA fine-tuning on one device: does the target model fit, and at which rank?

Scenario: a phone with 4 GB cannot fine-tune what a 16 GB cell-site server can. Before a device joins, the
emulator asks whether the target architecture, adapter rank, batch and sequence length fit in its memory;
under model.memory_policy shrink_rank each device gets the largest rank that does (scenarios/assembly.py).
The estimate follows REFERENCE.md section 6, term by term:

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

#: Bytes of an activation kept for the backward pass (bf16).
BF16_BYTES = 2.0

#: fp32 adapter weight, its gradient and Adam's two moments.
BYTES_PER_TRAINABLE = 16.0

#: Logits, their fp32 copy for the loss and its gradient: about 10 B per token per vocabulary entry.
LOGIT_BYTES_PER_ENTRY = 10.0

#: CUDA or mobile runtime context, allocator slack, tokenizer and data: a fixed cost whatever the model.
DEFAULT_OVERHEAD_BYTES = 300e6


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
    arch: Architecture,
    batch_size: int,
    seq_len: int,
    checkpointing: bool = False,
    flash_attention: bool = False,
    *,
    target_modules: str | Iterable[str] = "all-linear",
    rank: int = 0,
) -> float:
    """Activations kept for the backward pass, in bf16 (2 B per value), all layers.

    The count follows Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer
    Models", section 4.1 (34 s b h + 5 a s^2 b bytes per layer of a GPT block, full training), redone for a
    Llama block (RMSNorm, no dropout, grouped-query attention, gated MLP) under LoRA. Autograd keeps a
    matmul's input only to form its weight's gradient, so the input of a frozen projection is kept only when
    an adapter sits on it. Values per token of one layer whose input carries a gradient, with Q = a d query
    width and G = g d key/value width:

        RMSNorm inputs (two)                                2 h
        Q, K, V after RoPE, for the attention products      Q + 2 G (eager: K, V repeated to Q each)
        q/k/v input (first norm's output)                   h, if q, k or v is adapted
        attention output (o_proj input)                     Q, if o is adapted or attention is fused
        gate/up input (second norm's output)                h, if gate or up is adapted
        SiLU input, SiLU output, up output                  3 i  (the product's backward needs both factors)
        product (down_proj input)                           i, if down is adapted
        each adapter's A output                             r per adapted projection

    so the gated MLP keeps 6 s b i bytes, 8 s b i with down_proj adapted, where Korthikanti's GeLU MLP
    keeps 4 s b i. An unfused attention adds its softmax probabilities, a s^2 b values; fused kernels
    (flash_attention) keep a log-sum-exp per row instead (a s b, left out, as are the per-token RMSNorm
    scales). Across target modules and attention kernels this count matches, to a fraction of a percent,
    the tensors transformers' Llama keeps in float32 (tests/fleet/test_memory.py). In bfloat16,
    transformers computes RMSNorm and softmax in float32 and PEFT casts each adapted projection's input to
    its float32 adapter, which keeps 1.4 to 1.9 times as much on a 64-wide model: this is the count for a
    runtime that keeps every activation in bf16.

    With activation checkpointing only each block's input survives (2 s b h bytes per layer) and one block
    at a time is recomputed with its full activations.
    """
    if batch_size <= 0 or seq_len <= 0:
        raise ValueError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
    if rank < 0:
        raise ValueError(f"rank must be non-negative, got {rank}")
    per_layer = BF16_BYTES * _layer_values(arch, batch_size, seq_len, _modules(target_modules), rank,
                                           flash_attention)
    if checkpointing:
        return arch.layers * BF16_BYTES * seq_len * batch_size * arch.hidden + per_layer
    return arch.layers * per_layer


def _layer_values(arch: Architecture, b: int, s: int, modules: tuple[str, ...], rank: int, fused: bool) -> float:
    """Values one layer keeps for the backward pass (the table in `activation_bytes`)."""
    h, i, a = arch.hidden, arch.intermediate, arch.heads
    q_width, kv_width = a * arch.head_dim, arch.kv_heads * arch.head_dim
    adapted = set(modules)
    per_token = 2 * h + q_width + 2 * (kv_width if fused else q_width)  # eager attention repeats K and V
    per_token += h if adapted & {"q_proj", "k_proj", "v_proj"} else 0
    per_token += q_width if fused or "o_proj" in adapted else 0  # a fused kernel's backward reads its output
    per_token += h if adapted & {"gate_proj", "up_proj"} else 0
    per_token += 3 * i + (i if "down_proj" in adapted else 0)
    per_token += rank * len(adapted)
    scores = 0.0 if fused else float(a) * s * s * b
    return float(per_token) * s * b + scores


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
        activation_bytes=activation_bytes(arch, batch_size, seq_len, checkpointing, flash_attention,
                                          target_modules=target_modules, rank=rank),
        logits_bytes=LOGIT_BYTES_PER_ENTRY * batch_size * seq_len * arch.vocab,
        overhead_bytes=float(overhead_bytes),
    )
