"""Peak memory of LoRA fine-tuning: each term, how it scales, and what fits a phone; activations
against the tensors a real Llama keeps for its backward pass."""

import pytest

from fleet.architectures import Architecture, get_architecture
from fleet.memory import (
    DEFAULT_OVERHEAD_BYTES,
    activation_bytes,
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


def kept_bytes(model, ids) -> int:
    """Bytes of the tensors autograd keeps for the backward pass during one forward, parameters left out;
    views of one storage count once. All are alive together when the forward ends: the peak."""
    import torch

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t  # held by the graph until backward, so no storage is freed and reused meanwhile

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(input_ids=ids)
    return sum(kept.values())


def measured_layer_bytes(intermediate, targets, attention, rank=2, batch=2, seq=32) -> float:
    """Activation bytes one more decoder layer keeps in transformers' Llama with PEFT adapters: a 3-layer model
    minus a 2-layer one, so embeddings, logits and the shared rotary tables cancel. Run in float32, where no
    tensor is upcast or cast for an adapter, and halved to bf16's 2 bytes per value."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    from fleet.base_model import quiet_transformers

    quiet_transformers()
    found = []
    for layers in (2, 3):
        torch.manual_seed(0)
        config = LlamaConfig(hidden_size=64, intermediate_size=intermediate, num_hidden_layers=layers,
                             num_attention_heads=4, num_key_value_heads=2, vocab_size=100, use_cache=False,
                             attn_implementation=attention)
        model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=rank, target_modules=targets)).train()
        found.append(kept_bytes(model, torch.randint(0, 100, (batch, seq))))
    return (found[1] - found[0]) / 2


def tiny(intermediate: int, layers: int = 1) -> Architecture:
    return Architecture("tiny", hidden=64, intermediate=intermediate, layers=layers, heads=4, kv_heads=2, vocab=100,
                        tied_embeddings=True)


QV, ALL = ["q_proj", "v_proj"], ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.mark.parametrize("targets", [QV, ALL, ["down_proj"], ["o_proj", "up_proj"]], ids=["qv", "all", "down", "o_up"])
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_activations_match_what_a_real_llama_keeps(targets, attention):
    # Within 1%: the estimate leaves out the RMSNorm scales (2 per token) and a fused kernel's log-sum-exp
    # (one per head and token): 0.15-0.2% (eager) and 0.5-0.7% (sdpa) below the measurement here.
    measured = measured_layer_bytes(176, targets, attention)
    found = activation_bytes(tiny(176), 2, 32, flash_attention=attention == "sdpa", target_modules=targets, rank=2)
    assert found == pytest.approx(measured, rel=0.01)


@pytest.mark.parametrize("targets, per_value", [(QV, 6), (ALL, 8)], ids=["qv", "all"])
def test_gated_mlp_keeps_six_bytes_per_intermediate_value_eight_with_down_adapted(targets, per_value):
    # Widening the MLP by 112 values per token adds, in bf16: SiLU's input and output and up_proj's output
    # (2 B each, the product's backward needs both factors) = 6 B; 8 B when down_proj's adapter also keeps
    # the product, its input. Korthikanti et al.'s GeLU MLP keeps 4 B (the GeLU's input and output).
    wider = measured_layer_bytes(288, targets, "sdpa") - measured_layer_bytes(176, targets, "sdpa")
    assert wider == per_value * 2 * 32 * 112
    estimate = activation_bytes(tiny(288), 2, 32, target_modules=targets) - activation_bytes(tiny(176), 2, 32,
                                                                                             target_modules=targets)
    assert estimate == wider


def test_checkpointing_and_fused_attention_save_activation_memory():
    full = activation_bytes(LLAMA, 1, 1024)
    checkpointed = activation_bytes(LLAMA, 1, 1024, checkpointing=True)
    fused = activation_bytes(LLAMA, 1, 1024, flash_attention=True)
    assert checkpointed < full / 5 and fused < full
    assert checkpointed == 16 * 2 * 1024 * 2048 + full / 16


def test_a_low_end_phone_fits_the_1b_model_only_quantised():
    # A low-end phone (3 GB) fits a 512-token step of the 1B model (rank 1 on q and v) only quantised: in bf16
    # the weights (2 B x 1,235,814,400 = 2.47 GB) and the logits (10 B x 512 x 128,256 = 0.66 GB) alone exceed it.
    def need(**kwargs) -> float:
        return lora_training_memory_bytes(LLAMA, 1, ("q_proj", "v_proj"), 1, 512, **kwargs).total_bytes

    assert need(flash_attention=True) > 3e9
    assert need(weight_dtype="nf4") <= 3e9
    assert need(weight_dtype="nf4", flash_attention=True) <= need(weight_dtype="nf4")  # no s x s scores
