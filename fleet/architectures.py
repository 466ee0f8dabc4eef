"""Target architectures: the model a fleet is pretending to fine-tune, described by its shape alone.

Scenario: the host trains a tiny proxy model so that learning curves are real, while timing, memory and bytes
on the wire are emulated for a larger target, say Llama-3.2-1B on phones (DESIGN.md, "Emulated model vs trained
model"). An `Architecture` is the handful of numbers from a Hugging Face `config.json` that those estimates
need; the catalog holds a few public decoder-only models and `from_hf_config` describes any other one,
including the proxy itself.

Every block is Llama-style: grouped-query attention (q, k, v, o projections), a gated MLP (gate, up, down)
and two RMSNorms. Bias terms are left out (Qwen2 has q/k/v biases: 27,648 parameters in 494 M).

Units: parameter counts, FLOPs per token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: The linear layers of one block that LoRA can adapt, in PEFT's module names.
PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Architecture:
    name: str
    hidden: int  # h, model width
    intermediate: int  # i, width of the gated MLP
    layers: int  # L, decoder blocks
    heads: int  # a, query heads
    kv_heads: int  # key/value heads; fewer than `heads` for grouped-query attention
    vocab: int  # V
    tied_embeddings: bool  # the LM head reuses the input embedding matrix
    # Some configs (Qwen3, Gemma) set head_dim independently of hidden / heads; None means hidden // heads.
    explicit_head_dim: int | None = None

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
        """(d_in, d_out) of each adaptable linear layer in one block."""
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
    def block_linear_params(self) -> int:
        """Weights of the linear layers in all blocks: what weight quantisation (int8, NF4) shrinks."""
        return self.layers * sum(d_in * d_out for d_in, d_out in self.projections.values())

    @property
    def embedding_params(self) -> int:
        """Input embedding plus, when untied, the LM head: the V x h matrices."""
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    @property
    def params(self) -> int:
        """Every stored parameter; tied matrices count once, as `model.num_parameters()` does."""
        norms = self.hidden * (2 * self.layers + 1)  # two RMSNorms per block and a final one
        return self.block_linear_params + norms + self.embedding_params

    @property
    def non_embedding_params(self) -> int:
        return self.params - self.embedding_params

    def training_flops_per_token(self, seq_len: int | None = None, checkpointing: bool = False) -> float:
        """FLOPs per trained token for LoRA fine-tuning (REFERENCE.md section 6), counting 2 per multiply-add.

        Weights: full training runs three matmuls per weight matrix, the forward, the input gradient and the
        weight gradient, 6 N per token (Kaplan et al. 2020, "Scaling Laws for Neural Language Models", C = 6 N).
        LoRA skips the frozen weights' gradients: 4 N (the adapters' own terms are small and left out). N counts
        the LM head (h x V) even when tied, since its matmul runs either way; the input embedding is a lookup
        and costs nothing.

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
        """
        outside = self.hidden + self.hidden * self.vocab  # final norm and LM head: never recomputed
        blocks = self.non_embedding_params - self.hidden
        flops = (6.0 if checkpointing else 4.0) * blocks + 4.0 * outside
        if seq_len is not None:
            if seq_len <= 0:
                raise ValueError(f"seq_len must be positive, got {seq_len}")
            flops += (16.0 if checkpointing else 12.0) * self.layers * seq_len * self.heads * self.head_dim
        return flops

    @classmethod
    def from_hf_config(cls, config: Mapping[str, Any], name: str) -> Architecture:
        """Read a Hugging Face `config.json` (already parsed) of a Llama-style decoder."""
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
        # Configs written before grouped-query attention omit num_key_value_heads or set it to null.
        kv = config.get("num_key_value_heads")
        head_dim = config.get("head_dim")
        hidden, heads = values["hidden"], values["heads"]
        # Llama configs now write head_dim even when it is hidden // heads; keep it only where it differs.
        if head_dim is not None and isinstance(hidden, int) and isinstance(heads, int) and heads > 0:
            if hidden % heads == 0 and head_dim == hidden // heads:
                head_dim = None
        return cls(
            name=name,
            kv_heads=heads if kv is None else kv,
            # transformers' PretrainedConfig defaults tie_word_embeddings to True.
            tied_embeddings=bool(config.get("tie_word_embeddings", True)),
            explicit_head_dim=head_dim,
            **values,
        )


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
