"""A model folder shaped like an architecture of the catalog (fleet/architectures.py: SmolLM2-135M,
Qwen2.5-0.5B, Llama-3.2-1B), its weights drawn at random from its config here, with the built-in model's
tokenizer: what `throughput.py --shaped NAME` trains to time a real model's size with nothing downloaded.

    python benchmarks/shaped_model.py SmolLM2-135M DIR

The tokenizer's ids are a small part of the model's vocabulary; the embedding table and the LM head still have
the architecture's full size, so parameters, FLOPs and memory are the real model's.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fleet.architectures import get_architecture
from fleet.model_files import BUILTIN_DIR

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def write_shaped_model(name: str, folder: Path, seed: int = 0) -> Path:
    """Write a randomly initialised Llama-style model with the dimensions of catalog architecture `name`."""
    arch = get_architecture(name)
    builtin = LlamaConfig.from_pretrained(BUILTIN_DIR)
    config = LlamaConfig(
        hidden_size=arch.hidden, intermediate_size=arch.intermediate, num_hidden_layers=arch.layers,
        num_attention_heads=arch.heads, num_key_value_heads=arch.kv_heads, vocab_size=arch.vocab,
        tie_word_embeddings=arch.tied_embeddings, head_dim=arch.explicit_head_dim or arch.hidden // arch.heads,
        max_position_embeddings=2048, bos_token_id=builtin.bos_token_id, eos_token_id=builtin.eos_token_id,
        pad_token_id=builtin.pad_token_id,
    )
    torch.manual_seed(seed)
    folder.mkdir(parents=True, exist_ok=True)
    LlamaForCausalLM(config).save_pretrained(folder)
    for file in TOKENIZER_FILES:
        shutil.copy(BUILTIN_DIR / file, folder / file)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="an architecture of fleet/architectures.py, e.g. SmolLM2-135M")
    parser.add_argument("folder", type=Path)
    args = parser.parse_args()
    print(write_shaped_model(args.name, args.folder))


if __name__ == "__main__":
    main()
