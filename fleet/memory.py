"""Peak memory of LoRA fine-tuning on one device: does the target model fit, and at which rank?

Scenario: a phone with 4 GB cannot fine-tune what a 16 GB cell-site server can. Before a device joins, the
emulator asks whether the target architecture, adapter rank, batch and sequence length fit in its memory;
under model.memory_policy shrink_rank each device gets the largest rank that does (scenarios/assembly.py).
The estimate follows REFERENCE.md section 6, term by term:

    peak = frozen weights + 16 B x trainable parameters + activations + logits + runtime overhead

The same terms size the groups a host worker trains in one pass (runtime.group_size: auto): see
`grouped_training_memory`.

Units: bytes (decimal: 1 GB = 1e9 B, as in the device table), parameters, tokens.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from fleet.architectures import Architecture, Linear

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

#: Bytes of a float32 value: what a host worker keeps its activations and logits in (fleet/trainer.py).
FP32_BYTES = 4.0

#: fp32 adapter weight, its gradient and Adam's two moments.
BYTES_PER_TRAINABLE = 16.0

#: Logits, their fp32 copy for the loss and its gradient: about 10 B per token per vocabulary entry.
LOGIT_BYTES_PER_ENTRY = 10.0

#: What a grouped pass (fleet/grouped.py) holds per trainable parameter of each client: the adapter, its
#: gradient and Adam's moments (16 B), its start, its copy with absent entries zeroed, its final copy once its
#: steps are done and its update (4 x 4 B), and its masks of fixed and proximal entries (2 x 1 B).
GROUPED_BYTES_PER_TRAINABLE = BYTES_PER_TRAINABLE + 4 * 4.0 + 2 * 1.0

#: CUDA or mobile runtime context, allocator slack, tokenizer and data: a fixed cost whatever the model.
DEFAULT_OVERHEAD_BYTES = 300e6

#: A host worker's fixed cost: a Ray worker process with torch, transformers, peft and the built-in model
#: loaded peaked at about 0.65 GiB training one or two clients at a time, some 0.05 to 0.1 GB of it theirs
#: (VmHWM on Linux, benchmarks/throughput.py); on a GPU the CUDA context takes a few hundred MB of the card.
WORKER_OVERHEAD_BYTES = 650e6

#: A step's peak holds more than what autograd saves: each layer's gradients during the backward pass, the
#: forward's temporaries and, on CPU, what the allocator keeps of them. A grouped pass's peak resident memory
#: (built-in model, 8 x 64 tokens, 17 clients against 1) grew by 1.9 times the saved activations and logits per
#: client in float32 and 1.2 times in bf16; the estimate takes twice, for both.
WORKING_SET_FACTOR = 2.0


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


def _adapted(arch: Architecture, target_modules: str | Iterable[str]) -> tuple[Linear, ...]:
    """The block layers adapted, from PEFT's spellings: a list of module names, one name, or "all-linear"
    (every linear layer of the blocks)."""
    known = arch.linear_names
    if isinstance(target_modules, str):
        target_modules = known if target_modules == "all-linear" else (target_modules,)
    names = tuple(dict.fromkeys(target_modules))  # a module named twice is still adapted once
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(
            f"target_modules {list(names)!r}: unknown {unknown!r}; choose from {list(known)} or 'all-linear'"
        )
    return tuple(layer for layer in arch.linears if layer.name in names)


def lora_param_count(arch: Architecture, rank: int, target_modules: str | Iterable[str]) -> int:
    """Trainable parameters: each adapted W (d_out x d_in) gets B (d_out x r) and A (r x d_in)."""
    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    return sum(layer.count * rank * (layer.d_in + layer.d_out) for layer in _adapted(arch, target_modules))


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
    Models", section 4.1 (34 s b h + 5 a s^2 b bytes per layer of a GPT block, full training), redone for
    LoRA on a Llama block (RMSNorm, no dropout, grouped-query attention, gated MLP) and on the ungated MLP of
    GPT-2, OPT or GPT-NeoX. Autograd keeps a matmul's input only to form its weight's gradient, so the input
    of a frozen layer is kept only when an adapter sits on it. Values per token of one layer whose input
    carries a gradient, with Q = a d query width and G = g d key/value width:

        norm inputs (two)                                   2 h
        Q, K, V after RoPE, for the attention products      Q + 2 G (eager: K, V repeated to Q each)
        attention input (first norm's output)               h, if q, k or v (or a fused qkv, c_attn) is adapted
        attention output (o_proj's input)                   Q, if o is adapted or attention is fused
        MLP input (second norm's output)                    h, if gate or up (c_fc, fc1) is adapted
        gated: SiLU input, SiLU output, up output           3 i  (the product's backward needs both factors)
        ungated: the activation's input                     i
        down_proj's input (fc2's, GPT-2's mlp.c_proj's)     i, if it is adapted
        a layer of a role not known (`role_of`)             its d_in, if it is adapted
        each adapter's A output                             r per adapted layer

    so the gated MLP keeps 6 s b i bytes, 8 s b i with down_proj adapted, where Korthikanti's GeLU MLP
    keeps 4 s b i in full training and 2 s b i under LoRA. An unfused attention adds its softmax
    probabilities, a s^2 b values; fused kernels (flash_attention) keep a log-sum-exp per row instead (a s b,
    left out, as are the per-token norm statistics). Across target modules and attention kernels this count
    matches, to a fraction of a percent, the tensors transformers' Llama keeps in float32, and GPT-2's to a
    fraction of a percent with exact GELU (tests/fleet/test_memory.py, tests/fleet/test_any_architecture.py).
    Where blocks differ from this table the count is an estimate: a ReLU MLP (OPT) keeps the activation's
    output, which is also fc2's input (i fewer with fc2 adapted); parallel blocks (GPT-NeoX, Phi) keep one norm
    input, not two; transformers' gelu_new (GPT-2's and Phi's default) keeps three more tensors of width i
    than a fused kernel does. In bfloat16, transformers computes RMSNorm and softmax in float32 and PEFT casts
    each adapted projection's input to its float32 adapter, which keeps 1.4 to 1.9 times as much on a
    64-wide model: this is the count for a runtime that keeps every activation in bf16.

    With activation checkpointing only each block's input survives (2 s b h bytes per layer) and one block
    at a time is recomputed with its full activations.
    """
    if batch_size <= 0 or seq_len <= 0:
        raise ValueError(f"batch_size and seq_len must be positive, got {batch_size} and {seq_len}")
    if rank < 0:
        raise ValueError(f"rank must be non-negative, got {rank}")
    per_layer = BF16_BYTES * _layer_values(arch, batch_size, seq_len, _adapted(arch, target_modules), rank,
                                           flash_attention)
    if checkpointing:
        return arch.layers * BF16_BYTES * seq_len * batch_size * arch.hidden + per_layer
    return arch.layers * per_layer


def _layer_values(arch: Architecture, b: int, s: int, adapted: tuple[Linear, ...], rank: int, fused: bool) -> float:
    """Values one layer keeps for the backward pass (the table in `activation_bytes`)."""
    h, i, a, layers = arch.hidden, arch.intermediate, arch.heads, arch.layers
    q_width, kv_width = a * arch.head_dim, arch.kv_heads * arch.head_dim
    roles = {layer.role for layer in adapted}
    per_token = 2 * h + q_width + 2 * (kv_width if fused else q_width)  # eager attention repeats K and V
    per_token += h if "attention_in" in roles else 0  # q, k and v (or their fused layer) read one input
    per_token += q_width if fused or "attention_out" in roles else 0  # a fused kernel's backward reads its output
    per_token += h if "mlp_in" in roles else 0
    per_token += _mlp_values(arch) + (i if "mlp_out" in roles else 0)
    per_token += sum(layer.count * layer.d_in for layer in adapted if layer.role is None) / layers  # unknown: alone
    per_token += rank * sum(layer.count for layer in adapted) / layers
    scores = 0.0 if fused else float(a) * s * s * b
    return float(per_token) * s * b + scores


def _mlp_values(arch: Architecture) -> float:
    """Values per token the MLP keeps between its layers, none adapted: a gated MLP its two inputs' outputs and
    the activation's output, 3 i (the product's backward needs both factors); an ungated one (GPT-2, OPT,
    GPT-NeoX) only the activation's input, i."""
    i = arch.intermediate
    width = sum(layer.count * layer.d_out for layer in arch.linears if layer.role == "mlp_in") / arch.layers
    if not width:  # no MLP layer this table knows: counted as ungated
        return float(i)
    return width + (i if width >= 2 * i else 0)


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


@dataclass(frozen=True)
class GroupMemory:
    """Memory of a host worker that trains clients in groups (fleet/grouped.py): a part paid once, whatever the
    group's size, and a part each client of a group adds."""

    shared_bytes: float  # the frozen base in float32, and the runtime's fixed overhead
    per_client_bytes: float  # a client's activations, logits and adapter state

    def clients(self, budget_bytes: float) -> int:
        """The most clients a group may hold within `budget_bytes` (0: not even one)."""
        return max(0, int((budget_bytes - self.shared_bytes) // self.per_client_bytes))


def bottleneck_param_count(arch: Architecture, width: int) -> int:
    """A bottleneck adapter per block: down (h x w, bias w) and up (w x h, bias h); width 0: none."""
    return arch.layers * (2 * arch.hidden * width + width + arch.hidden) if width else 0


def grouped_training_memory(
    arch: Architecture,
    rank: int,
    target_modules: str | Iterable[str],
    batch_size: int,
    seq_len: int,
    bottleneck: int = 0,
    overhead_bytes: float = WORKER_OVERHEAD_BYTES,
) -> GroupMemory:
    """Memory of a host worker training clients of `batch_size` x `seq_len` tokens together on a float32 copy of
    `arch` (the trained model, not an emulated one), from the same terms as one device's estimate. Activations
    are the count of `activation_bytes` (eager attention) in float32: that count matches what transformers'
    Llama keeps in float32. With runtime.train_dtype bf16, autocast keeps bfloat16 copies of matmul inputs
    beside float32 tensors (the residual stream, norms), so the float32 count stands for both. Logits take
    4 B more per entry than a device's bf16 ones. Activations and logits are taken WORKING_SET_FACTOR times,
    for what a step holds beyond them; LoRA dropout's masks and bottleneck adapters' activations are left out."""
    one = lora_training_memory_bytes(arch, rank, target_modules, batch_size, seq_len, "fp32",
                                     overhead_bytes=overhead_bytes)
    activations = one.activation_bytes / BF16_BYTES * FP32_BYTES
    logits = one.logits_bytes + (FP32_BYTES - BF16_BYTES) * batch_size * seq_len * arch.vocab
    trainable = one.trainable_params + bottleneck_param_count(arch, bottleneck)
    return GroupMemory(shared_bytes=one.weights_bytes + one.overhead_bytes,
                       per_client_bytes=WORKING_SET_FACTOR * (activations + logits)
                       + trainable * GROUPED_BYTES_PER_TRAINABLE)
