"""Target architectures: the model a fleet is pretending to fine-tune, described by its shape alone.

Scenario: the host trains a tiny proxy model so that learning curves are real, while timing, memory and bytes
on the wire are emulated for a larger target, say Llama-3.2-1B on phones (DESIGN.md, "Emulated model vs trained
model"). An `Architecture` is what those estimates need: the model's widths, its parameter counts and, for each
linear layer of its decoder blocks, the name PEFT matches it by, its role and its shape. The catalog holds a few
public Llama-style models described by their config numbers; `read_architecture` measures any other Hugging Face
causal LM (GPT-2, GPT-NeoX, OPT, Phi, Qwen2, ..., the proxy itself) built on PyTorch's meta device from its
config, which allocates no memory and reads no weights.

A Llama-style block (the catalog, `from_hf_config`): grouped-query attention (q, k, v, o projections), a gated
MLP (gate, up, down) and two RMSNorms. Bias terms are left out (Qwen2 has q/k/v biases: 27,648 parameters in
494 M); a measured model counts every parameter it has.

Units: parameter counts, FLOPs per token.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

#: What a linear layer does in a block: reads the block's stream into attention (q, k, v, or all three fused)
#: or writes attention's result back, and the same for the MLP.
Role = Literal["attention_in", "attention_out", "mlp_in", "mlp_out"]

#: The projections of a Llama-style block, in PEFT's module names, and their roles.
LLAMA_ROLES: dict[str, Role] = {
    "q_proj": "attention_in",
    "k_proj": "attention_in",
    "v_proj": "attention_in",
    "o_proj": "attention_out",
    "gate_proj": "mlp_in",
    "up_proj": "mlp_in",
    "down_proj": "mlp_out",
}
PROJECTIONS = tuple(LLAMA_ROLES)

#: Layer names by part and direction across common families: Llama, Qwen2, Mistral, Gemma (q/k/v/o_proj,
#: gate/up/down_proj); GPT-2 and StarCoder (c_attn, c_proj, c_fc); GPT-NeoX, Falcon, BLOOM (query_key_value,
#: dense, dense_h_to_4h, dense_4h_to_h); OPT (out_proj, fc1, fc2); Phi (dense, fc1, fc2); Phi-3 (qkv_proj,
#: gate_up_proj); GPT-J (fc_in, fc_out); MPT (Wqkv). GPT-2's c_proj is both outputs: its part tells them apart.
_INPUTS = {
    "attention": {"q_proj", "k_proj", "v_proj", "qkv_proj", "c_attn", "query_key_value", "Wqkv", "query", "key",
                  "value"},
    "mlp": {"gate_proj", "up_proj", "gate_up_proj", "c_fc", "fc1", "dense_h_to_4h", "fc_in"},
}
_OUTPUTS = {
    "attention": {"o_proj", "out_proj", "dense", "c_proj"},
    "mlp": {"down_proj", "c_proj", "fc2", "dense_4h_to_h", "fc_out"},
}


def role_of(path: str) -> Role | None:
    """The role of a block's linear layer from its path inside the block (`attn.c_proj`, `mlp.c_proj`, `fc1`):
    attention where a module on the path is named for it, else the MLP (OPT keeps fc1 and fc2 in the block
    itself); input or output by the layer's name. None: a name this table does not know."""
    *parents, leaf = path.split(".")
    part = "attention" if any("attn" in p or "attention" in p for p in parents) else "mlp"
    if leaf in _OUTPUTS[part]:
        return f"{part}_out"  # type: ignore[return-value]
    if leaf in _INPUTS[part]:
        return f"{part}_in"  # type: ignore[return-value]
    return None


@dataclass(frozen=True)
class Linear:
    """The linear layers of the decoder blocks that share a name, a role and a shape."""

    name: str  # leaf module name, as PEFT's target_modules match it
    role: Role | None
    d_in: int
    d_out: int
    count: int  # how many, over all blocks (one per block in a Llama-style model)


@dataclass(frozen=True)
class Measured:
    """What a real model's meta build counts, where the Llama-style formulas would not hold (biases, LayerNorm
    biases, position tables, fused or ungated layers)."""

    linears: tuple[Linear, ...]
    params: int  # every stored parameter, tied ones once (`model.num_parameters()`)
    block_params: int  # inside the decoder blocks: linear layers, norms, biases
    lookup_params: int  # embedding tables outside the blocks (tokens; GPT-2's and OPT's positions): looked up
    head_params: int  # the LM head's matrix, multiplied for every token even when tied to the token embedding


@dataclass(frozen=True)
class Architecture:
    name: str
    hidden: int  # h, model width
    intermediate: int  # i, width of the MLP (of each of its two inputs when gated)
    layers: int  # L, decoder blocks
    heads: int  # a, query heads
    kv_heads: int  # key/value heads; fewer than `heads` for grouped-query attention
    vocab: int  # V
    tied_embeddings: bool  # the LM head reuses the input embedding matrix
    # Some configs (Qwen3, Gemma) set head_dim independently of hidden / heads; None means hidden // heads.
    explicit_head_dim: int | None = None
    # A real model's own layers and counts (`read_architecture`); None: a Llama-style block from the numbers.
    measured: Measured | None = None

    def __post_init__(self) -> None:
        for field in ("hidden", "intermediate", "layers", "heads", "kv_heads", "vocab"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"architecture {self.name!r}: {field} must be a positive integer, got {value!r}")
        if self.explicit_head_dim is None and self.hidden % self.heads:
            raise ValueError(
                f"architecture {self.name!r}: hidden {self.hidden} is not divisible by heads {self.heads}; "
                "give explicit_head_dim"
            )
        if self.explicit_head_dim is not None and self.explicit_head_dim <= 0:
            raise ValueError(f"architecture {self.name!r}: explicit_head_dim must be positive")
        if self.heads % self.kv_heads:
            raise ValueError(
                f"architecture {self.name!r}: heads {self.heads} must be a multiple of kv_heads {self.kv_heads}"
            )

    @property
    def head_dim(self) -> int:
        return self.explicit_head_dim if self.explicit_head_dim is not None else self.hidden // self.heads

    @property
    def projections(self) -> dict[str, tuple[int, int]]:
        """(d_in, d_out) of each projection of one Llama-style block with these numbers (a measured model's
        own layers are in `linears`)."""
        h, i, q, kv = self.hidden, self.intermediate, self.heads * self.head_dim, self.kv_heads * self.head_dim
        return {
            "q_proj": (h, q),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (q, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }

    @property
    def linears(self) -> tuple[Linear, ...]:
        """The linear layers of all blocks, which LoRA can adapt."""
        if self.measured is not None:
            return self.measured.linears
        return tuple(Linear(name, LLAMA_ROLES[name], d_in, d_out, self.layers)
                     for name, (d_in, d_out) in self.projections.items())

    @property
    def linear_names(self) -> tuple[str, ...]:
        """The names target_modules can give, in block order."""
        return tuple(dict.fromkeys(layer.name for layer in self.linears))

    @property
    def block_linear_params(self) -> int:
        """Weights of the linear layers in all blocks: what weight quantisation (int8, NF4) shrinks."""
        return sum(layer.count * layer.d_in * layer.d_out for layer in self.linears)

    @property
    def block_params(self) -> int:
        """Everything inside the decoder blocks."""
        if self.measured is not None:
            return self.measured.block_params
        return self.block_linear_params + 2 * self.hidden * self.layers  # two RMSNorms per block

    @property
    def lookup_params(self) -> int:
        """Embedding tables, which a token looks up rather than multiplies."""
        return self.measured.lookup_params if self.measured is not None else self.vocab * self.hidden

    @property
    def head_params(self) -> int:
        """The LM head's matrix, h x V."""
        return self.measured.head_params if self.measured is not None else self.vocab * self.hidden

    @property
    def embedding_params(self) -> int:
        """Embedding tables plus, when untied, the LM head: the V x h matrices."""
        return self.lookup_params + (0 if self.tied_embeddings else self.head_params)

    @property
    def params(self) -> int:
        """Every stored parameter; tied matrices count once, as `model.num_parameters()` does."""
        if self.measured is not None:
            return self.measured.params
        return self.block_params + self.hidden + self.embedding_params  # and the final RMSNorm

    @property
    def non_embedding_params(self) -> int:
        return self.params - self.embedding_params

    def training_flops_per_token(self, seq_len: int | None = None, checkpointing: bool = False) -> float:
        """FLOPs per trained token for LoRA fine-tuning (REFERENCE.md section 6), counting 2 per multiply-add.

        Weights: full training runs three matmuls per weight matrix, the forward, the input gradient and the
        weight gradient, 6 N per token (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", C = 6 N).
        LoRA skips the frozen weights' gradients: 4 N (the adapters' own terms are small and left out). N counts
        the LM head (h x V) even when tied, since its matmul runs either way; embedding tables (tokens, and
        the positions of GPT-2 or OPT) are lookups and cost nothing.

        Attention, with `seq_len` s: the scores Q K^T and their weighted sum of V cost 2 s Q each per token and
        layer, Q = heads x head_dim, so 4 L s Q forward, counted over the whole s x s matrix as Megatron-LM
        does. Neither product has a weight, so LoRA saves nothing there: the backward pass forms the gradient
        of both operands of each (Q and K, the probabilities and V), twice the forward, so training costs
        12 L s Q. Narayanan et al. 2021, "Efficient Large-Scale Language Model Training on GPU Clusters Using
        Megatron-LM", appendix: a layer's forward is 24 B s h^2 + 4 B s^2 h, training with recomputation
        4 x (24 B s h^2 + 4 B s^2 h) = 96 B s h^2 (1 + s / (6 h)), of which 16 B s^2 h is attention: 12 without
        the recomputation, 16 with it.

        Activation checkpointing recomputes each block's forward during the backward pass: the blocks' weights
        cost 6 instead of 4 per parameter and attention 16 L s Q instead of 12; the LM head sits outside the
        blocks and is not recomputed. That is reentrant checkpointing's cost; PyTorch's non-reentrant one
        (transformers' default) stops recomputing once every kept tensor is back, so it can skip a block's
        last frozen, unadapted projection (down_proj): 7% fewer FLOPs on a small model with q and v adapted.
        What lies outside the blocks (final norm, LM head) is never recomputed.
        """
        tied_head = self.head_params if self.tied_embeddings else 0  # stored once, as the embedding; multiplied
        outside = self.params - self.block_params - self.lookup_params + tied_head  # final norm, LM head
        flops = (6.0 if checkpointing else 4.0) * self.block_params + 4.0 * outside
        if seq_len is not None:
            if seq_len <= 0:
                raise ValueError(f"seq_len must be positive, got {seq_len}")
            flops += (16.0 if checkpointing else 12.0) * self.layers * seq_len * self.heads * self.head_dim
        return flops

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], name: str) -> Architecture:
        """A Llama-style block from the numbers of a Hugging Face `config.json` (already parsed). A model folder
        of any family is read by `read_architecture` instead."""
        required = {
            "hidden": "hidden_size",
            "intermediate": "intermediate_size",
            "layers": "num_hidden_layers",
            "heads": "num_attention_heads",
            "vocab": "vocab_size",
        }
        missing = [key for key in required.values() if key not in config]
        if missing:
            raise ValueError(f"config for {name!r} lacks {', '.join(missing)}")
        values = {field: config[key] for field, key in required.items()}
        return cls(
            name=name,
            # Configs written before grouped-query attention omit num_key_value_heads or set it to null.
            kv_heads=values["heads"] if config.get("num_key_value_heads") is None else config["num_key_value_heads"],
            # transformers' PretrainedConfig defaults tie_word_embeddings to True.
            tied_embeddings=bool(config.get("tie_word_embeddings", True)),
            explicit_head_dim=_explicit_head_dim(config.get("head_dim"), values["hidden"], values["heads"]),
            **values,
        )


def _explicit_head_dim(head_dim: Any, hidden: Any, heads: Any) -> Any:
    """A config's head_dim where it differs from hidden // heads; configs now write it even when it does not."""
    if head_dim is not None and isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
        if hidden % heads == 0 and head_dim == hidden // heads:
            return None
    return head_dim


# --- any Hugging Face causal LM, measured -------------------------------------------------------------------


def causal_lm_problem(config) -> str | None:
    """Why the model of a transformers `config` is not a decoder-only causal LM (None: it is one)."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    kind = config.model_type
    if getattr(config, "is_encoder_decoder", False):
        return f"{kind} is an encoder-decoder model, not a decoder-only causal language model"
    # BERT and its kin have causal heads only to serve as the decoder of an encoder-decoder pair
    if kind in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        return f"{kind} is an encoder (a masked language model), not a decoder-only causal language model"
    if kind not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return f"model type {kind!r} is not a causal language model that transformers knows"
    return None


def meta_model(config):
    """The causal LM of a transformers `config`, built on PyTorch's meta device: every module and shape, no
    memory and no weights, whatever the model's size."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def decoder_blocks(model):
    """The model's stack of decoder blocks: the ModuleList that holds the most parameters (a stack of
    experts sits inside a block, so it holds fewer)."""
    import torch

    stacks = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList)]
    if not stacks:
        raise ValueError(f"{type(model).__name__} has no stack of decoder blocks (a ModuleList)")
    return max(stacks, key=lambda stack: sum(p.numel() for p in stack.parameters()))


def linear_shape(module) -> tuple[int, int] | None:
    """(d_in, d_out) of a linear layer: torch's Linear, or transformers' Conv1D (GPT-2), which stores its weight
    transposed, (d_in, d_out). None for any other module."""
    import torch
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, torch.nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, Conv1D):
        d_in, d_out = module.weight.shape
        return int(d_in), int(d_out)
    return None


def block_linears(blocks: Iterable) -> tuple[Linear, ...]:
    """The linear layers of `blocks`, grouped by name, role and shape, in block order."""
    found: Counter = Counter()
    for block in blocks:
        for path, module in block.named_modules():
            shape = linear_shape(module)
            if shape is not None and path:
                found[(path.rsplit(".", 1)[-1], role_of(path), *shape)] += 1
    return tuple(Linear(name, role, d_in, d_out, n) for (name, role, d_in, d_out), n in found.items())


def read_architecture(model, name: str) -> Architecture:
    """Measure a Hugging Face causal LM (`meta_model` builds one without memory): its blocks' linear layers
    and its parameter counts, with the widths from its config, which transformers maps onto common names
    (GPT-2's n_embd, n_layer, n_head are hidden_size, num_hidden_layers, num_attention_heads)."""
    import torch

    config, blocks = model.config, decoder_blocks(model)
    linears = block_linears(blocks)
    in_blocks = {id(p) for p in blocks.parameters()}
    tables = {id(m.weight): m.weight.numel() for m in model.modules()
              if isinstance(m, torch.nn.Embedding) and id(m.weight) not in in_blocks}
    head = model.get_output_embeddings()
    hidden, heads = config.hidden_size, config.num_attention_heads
    return Architecture(
        name=name,
        hidden=hidden,
        intermediate=_intermediate(linears, config),
        layers=len(blocks),
        heads=heads,
        kv_heads=getattr(config, "num_key_value_heads", None) or heads,
        vocab=config.vocab_size,
        tied_embeddings=head is not None and head.weight is model.get_input_embeddings().weight,
        explicit_head_dim=_explicit_head_dim(getattr(config, "head_dim", None), hidden, heads),
        measured=Measured(
            linears=linears,
            params=model.num_parameters(),
            block_params=sum(p.numel() for p in blocks.parameters()),
            lookup_params=sum(tables.values()),
            head_params=0 if head is None else head.weight.numel(),
        ),
    )


def _intermediate(linears: tuple[Linear, ...], config) -> int:
    """The MLP's width: the input of its output layer (down_proj, GPT-2's mlp.c_proj, fc2), else the config's."""
    widths = [layer.d_in for layer in linears if layer.role == "mlp_out"]
    if widths:
        return widths[0]
    return getattr(config, "intermediate_size", None) or 4 * config.hidden_size


# --- targets of an emulated architecture -------------------------------------------------------------------


def emulated_layers(trained: Architecture, emulated: Architecture,
                    targets: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """The layers of `emulated` that each target module of `trained` stands for: the layer of the same name
    where `emulated` has one, else every layer of the role the target plays in `trained` (GPT-2's c_attn, q, k
    and v fused, stands for q_proj, k_proj and v_proj). ValueError where a target has no known role, or two
    targets stand for one layer (it would be counted twice)."""
    names = set(emulated.linear_names)
    out: dict[str, tuple[str, ...]] = {}
    for target in dict.fromkeys(targets):
        if target in names:
            out[target] = (target,)
            continue
        roles = {layer.role for layer in trained.linears if layer.name == target}
        if not roles or None in roles:
            raise ValueError(f"{target!r} has no counterpart in {emulated.name} (its layers: "
                             f"{', '.join(emulated.linear_names)}), and its role in {trained.name} is not known")
        out[target] = tuple(layer.name for layer in emulated.linears if layer.role in roles)
    claimed = Counter(name for layers in out.values() for name in layers)
    twice = [name for name, n in claimed.items() if n > 1]
    if twice:
        raise ValueError(f"{', '.join(t for t, layers in out.items() if set(layers) & set(twice))} all stand for "
                         f"{', '.join(twice)} of {emulated.name}; adapt only one of them")
    return out


CATALOG: dict[str, Architecture] = {
    a.name: a
    for a in (
        # HuggingFaceTB/SmolLM2-135M: hidden_size 576, intermediate_size 1536, num_hidden_layers 30,
        # num_attention_heads 9, num_key_value_heads 3, vocab_size 49152, tie_word_embeddings true.
        Architecture("SmolLM2-135M", 576, 1536, 30, 9, 3, 49152, True),
        # Qwen/Qwen2.5-0.5B: hidden_size 896, intermediate_size 4864, num_hidden_layers 24,
        # num_attention_heads 14, num_key_value_heads 2, vocab_size 151936, tie_word_embeddings true.
        Architecture("Qwen2.5-0.5B", 896, 4864, 24, 14, 2, 151936, True),
        # meta-llama/Llama-3.2-1B: hidden_size 2048, intermediate_size 8192, num_hidden_layers 16,
        # num_attention_heads 32, num_key_value_heads 8, vocab_size 128256, tie_word_embeddings true.
        Architecture("Llama-3.2-1B", 2048, 8192, 16, 32, 8, 128256, True),
    )
}


def get_architecture(name: str) -> Architecture:
    """A catalog entry by name; case does not matter, since hub ids are written both ways."""
    by_lower = {key.lower(): arch for key, arch in CATALOG.items()}
    try:
        return by_lower[name.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown architecture {name!r}; known: {', '.join(sorted(CATALOG))}"
        ) from None
