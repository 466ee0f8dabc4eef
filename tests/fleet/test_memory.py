"""Peak memory of LoRA fine-tuning: each term, how it scales, and the largest rank that fits."""

import pytest

from fleet.architectures import Architecture, get_architecture
from fleet.memory import (
    DEFAULT_OVERHEAD_BYTES,
    activation_bytes,
    largest_feasible_rank,
    lora_param_count,
    lora_training_memory_bytes,
)

# head_dim 4: q 8 -> 8, k and v 8 -> 4, o 8 -> 8, gate and up 8 -> 16, down 16 -> 8.
TOY = Architecture("toy", hidden=8, intermediate=16, layers=2, heads=2, kv_heads=1, vocab=10, tied_embeddings=True)
LLAMA = get_architecture("Llama-3.2-1B")


def test_lora_param_count_by_hand():
    # r (d_in + d_out) per adapted matrix, per layer.
    assert lora_param_count(TOY, 2, ["q_proj", "v_proj"]) == 2 * (2 * (8 + 8) + 2 * (8 + 4))
    per_layer = 2 * (16 + 12 + 12 + 16 + 24 + 24 + 24)
    assert lora_param_count(TOY, 2, "all-linear") == 2 * per_layer
    assert lora_param_count(TOY, 2, ["q_proj", "q_proj"]) == lora_param_count(TOY, 2, "q_proj")


def test_lora_param_count_matches_peft_on_the_builtin_model():
    import json

    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from fleet.base_model import BUILTIN_DIR, quiet_transformers

    quiet_transformers()
    arch = Architecture.from_hf_config(json.loads((BUILTIN_DIR / "config.json").read_text()), "builtin")
    modules = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(BUILTIN_DIR), LoraConfig(r=4, target_modules=modules))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == lora_param_count(arch, 4, modules)


def test_unknown_target_module_is_rejected():
    with pytest.raises(ValueError, match="unknown \\['qkv'\\]"):
        lora_param_count(TOY, 4, ["q_proj", "qkv"])
    with pytest.raises(ValueError, match="rank"):
        lora_param_count(TOY, 0, "q_proj")


def test_terms_add_up_and_follow_reference():
    est = lora_training_memory_bytes(LLAMA, 16, ["q_proj", "v_proj"], batch_size=2, seq_len=256)
    assert est.weights_bytes == 2.0 * LLAMA.params
    assert est.trainable_bytes == 16 * est.trainable_params == 16 * lora_param_count(LLAMA, 16, ["q_proj", "v_proj"])
    assert est.logits_bytes == 10 * 2 * 256 * 128256
    assert est.overhead_bytes == DEFAULT_OVERHEAD_BYTES
    parts = est.weights_bytes + est.trainable_bytes + est.activation_bytes + est.logits_bytes + est.overhead_bytes
    assert est.total_bytes == parts
    assert 4e9 < est.total_bytes < 8e9  # a 1B model with batch 2 wants a flagship phone, not a low-end one


def test_quantised_weights_shrink_in_order():
    weights = {
        dtype: lora_training_memory_bytes(LLAMA, 8, "q_proj", 1, 128, weight_dtype=dtype).weights_bytes
        for dtype in ("bf16", "int8", "nf4")
    }
    assert weights["nf4"] < weights["int8"] < weights["bf16"]
    # Embeddings stay in bf16, so NF4 saves less than 4x on a model whose embedding is a fifth of it.
    assert 0.25 < weights["nf4"] / weights["bf16"] < 0.5
    with pytest.raises(ValueError, match="weight_dtype"):
        lora_training_memory_bytes(LLAMA, 8, "q_proj", 1, 128, weight_dtype="fp8")


def test_doubling_the_batch_doubles_activations_and_logits():
    one = lora_training_memory_bytes(LLAMA, 8, "q_proj", 1, 512)
    two = lora_training_memory_bytes(LLAMA, 8, "q_proj", 2, 512)
    assert two.activation_bytes == 2 * one.activation_bytes
    assert two.logits_bytes == 2 * one.logits_bytes
    assert two.weights_bytes == one.weights_bytes and two.trainable_bytes == one.trainable_bytes


def test_activations_reduce_to_korthikanti_for_a_4h_mlp():
    gpt_like = Architecture("gpt", hidden=64, intermediate=256, layers=3, heads=4, kv_heads=4, vocab=100,
                            tied_embeddings=True)
    b, s, h, a = 2, 32, 64, 4
    assert activation_bytes(gpt_like, b, s) == 3 * s * b * h * (34 + 5 * a * s / h)


def test_checkpointing_and_fused_attention_save_activation_memory():
    full = activation_bytes(LLAMA, 1, 1024)
    checkpointed = activation_bytes(LLAMA, 1, 1024, checkpointing=True)
    fused = activation_bytes(LLAMA, 1, 1024, flash_attention=True)
    assert checkpointed < full / 5 and fused < full
    assert checkpointed == 16 * 2 * 1024 * 2048 + full / 16


def test_largest_feasible_rank():
    need = {
        r: lora_training_memory_bytes(LLAMA, r, "all-linear", 1, 256).total_bytes for r in (64, 32, 16, 8, 4, 2, 1)
    }
    kwargs = {"target_modules": "all-linear", "batch_size": 1, "seq_len": 256}
    assert largest_feasible_rank(LLAMA, 100e9, **kwargs) == 64
    assert largest_feasible_rank(LLAMA, (need[64] + need[32]) / 2, **kwargs) == 32
    assert largest_feasible_rank(LLAMA, need[4], **kwargs) == 4
    assert largest_feasible_rank(LLAMA, need[1] - 1, **kwargs) is None
    assert largest_feasible_rank(LLAMA, 100e9, ranks=(2, 128, 8), **kwargs) == 128
    # A low-end phone (3 GB) fits a 512-token step of the 1B model only quantised and with fused attention.
    assert largest_feasible_rank(LLAMA, 3e9, flash_attention=True) is None
    assert largest_feasible_rank(LLAMA, 3e9, weight_dtype="nf4") is None
    assert largest_feasible_rank(LLAMA, 3e9, weight_dtype="nf4", flash_attention=True) == 64
