"""The frozen base model that clients fine-tune, and how fedfleet builds its own.

Scenario: no model can be downloaded at run time, so fedfleet ships a small Llama-architecture causal LM
(byte-level BPE, 512 tokens) pretrained on the public plays only, saved in Hugging Face format in
`fleet/base_model/`. It loads through `AutoModelForCausalLM` / `AutoTokenizer` exactly like a hub model, so
a scenario's `model.path` may name any other local Hugging Face folder (or hub id, where a hub is reachable)
instead.

Rebuild the shipped model with `fedfleet build-base` (a few minutes on two cores, same bytes for the same
seed and torch build).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from fleet.model_files import BUILTIN, BUILTIN_DIR, resolve_model_path  # noqa: F401 (re-exported)
from fleet.rng import stream_key
from fleet.trainer import lm_loss

EOS = "<|endoftext|>"


def quiet_transformers() -> None:
    """Load bars and deprecation notices from transformers would bury the run's own progress bar."""
    import warnings

    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    quiet_transformers()

    return AutoTokenizer.from_pretrained(resolve_model_path(path))


def load_base_model(path: str) -> torch.nn.Module:
    """The base model in float32 and eval mode, every weight frozen."""
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    # safetensors only: pickled weights (pytorch_model.bin) could run code on load (fleet/model_files.py)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(path), dtype=torch.float32, use_safetensors=True)
    model.requires_grad_(False)
    return model.eval()


def build_tokenizer(text: str, vocab_size: int):
    """Byte-level BPE trained on `text`: any Unicode input encodes, nothing is out of vocabulary."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(text.splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=core, eos_token=EOS, pad_token=EOS, bos_token=EOS)


def tiny_llama_config(vocab_size: int, eos_id: int):
    from transformers import LlamaConfig

    # About 0.9 M parameters: small enough to train hundreds of clients a minute on two cores, large enough
    # to learn verse. Tied embeddings keep the LM head from doubling the parameter count.
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
    )


def pretrain(
    out_dir: Path,
    text: str,
    *,
    seed: int = 0,
    steps: int = 600,
    batch_size: int = 32,
    seq_len: int = 128,
    lr: float = 3e-3,
    log=print,
) -> None:
    """Train the tiny Llama on `text` with AdamW and a cosine schedule, then save model and tokenizer."""
    from transformers import LlamaForCausalLM

    tokenizer = build_tokenizer(text, vocab_size=512)
    tokens = torch.tensor(tokenizer(text)["input_ids"], dtype=torch.long)
    torch.manual_seed(stream_key(seed, "pretrain-init") % 2**63)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer), tokenizer.eos_token_id))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    rng = np.random.Generator(np.random.PCG64(stream_key(seed, "pretrain-batches")))
    start = time.time()
    model.train()
    for step in range(steps):
        idx = torch.from_numpy(rng.integers(0, len(tokens) - seq_len - 1, size=batch_size))
        batch = torch.stack([tokens[i : i + seq_len + 1] for i in idx.tolist()])
        loss = lm_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == steps - 1:
            log(f"step {step:5d}  loss {loss.item():.3f}  {time.time() - start:6.1f}s")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


