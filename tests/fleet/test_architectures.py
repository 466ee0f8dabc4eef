"""Target architectures: parameter counts against published sizes and the real built-in model; training FLOPs
against published counts (Kaplan et al. 2020, Megatron-LM), a hand count and FLOPs counted on a real step."""

import json

import pytest

from fleet.architectures import CATALOG, Architecture, get_architecture


# `model.num_parameters()` of the Hugging Face checkpoints, also the safetensors "total" of their hub pages and
# llama.cpp's n_params. Qwen2.5-0.5B's includes the q/k/v biases that the count leaves out:
# 24 layers x (896 + 128 + 128) = 27,648.
PUBLISHED_PARAMS = {"SmolLM2-135M": 134_515_008, "Qwen2.5-0.5B": 494_032_768, "Llama-3.2-1B": 1_235_814_400}
QWEN_BIASES = 24 * (896 + 128 + 128)


def test_catalog_counts_are_exact_up_to_the_biases_left_out():
    assert get_architecture("SmolLM2-135M").params == PUBLISHED_PARAMS["SmolLM2-135M"]
    assert get_architecture("Llama-3.2-1B").params == PUBLISHED_PARAMS["Llama-3.2-1B"]
    assert get_architecture("Qwen2.5-0.5B").params == PUBLISHED_PARAMS["Qwen2.5-0.5B"] - QWEN_BIASES


def test_head_dim_and_embedding_split():
    llama = get_architecture("llama-3.2-1b")  # names are case-insensitive
    assert llama.head_dim == 64
    assert llama.non_embedding_params == llama.params - 128256 * 2048
    untied = Architecture("untied", 64, 128, 2, 4, 2, 100, tied_embeddings=False)
    assert untied.params - untied.non_embedding_params == 2 * 100 * 64


def test_unknown_architecture_lists_known_names():
    with pytest.raises(ValueError) as info:
        get_architecture("GPT-5")
    assert all(name in str(info.value) for name in CATALOG)


@pytest.fixture(scope="module")
def builtin():
    """The shipped base model and the architecture read from its config.json."""
    from transformers import AutoModelForCausalLM

    from fleet.base_model import BUILTIN_DIR, quiet_transformers

    quiet_transformers()
    model = AutoModelForCausalLM.from_pretrained(BUILTIN_DIR)
    config = json.loads((BUILTIN_DIR / "config.json").read_text())
    return model, Architecture.from_hf_config(config, "builtin")


def test_builtin_config_counts_the_real_parameters(builtin):
    model, arch = builtin
    assert (arch.hidden, arch.layers, arch.vocab, arch.tied_embeddings) == (128, 4, 512, True)
    assert arch.params == model.num_parameters()


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_lora_weight_flops_are_two_thirds_of_kaplans_six_n(name):
    # Kaplan et al. (2020), "Scaling Laws for Neural Language Models", sec. 2.1: training costs C = 6 N per
    # token, 2 N forward and 4 N backward, half of it the weights' gradients, which LoRA does not form: 4 N.
    # These models tie the LM head to the embedding, so the published count holds each matrix that a
    # token's matmuls run through exactly once (the input embedding is a lookup). Biases (Qwen) and the
    # norms' weights are within 1e-4 of N.
    assert get_architecture(name).training_flops_per_token() == pytest.approx(
        2 / 3 * 6 * PUBLISHED_PARAMS[name], rel=1e-4)


def test_lora_weight_flops_count_the_tied_head_of_the_loaded_model(builtin):
    model, arch = builtin
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight  # tied, counted once
    assert arch.training_flops_per_token() == pytest.approx(4 * model.num_parameters(), rel=1e-3)


def megatron_training_flops_per_token(hidden, intermediate, layers, heads, kv_heads, head_dim, vocab, seq_len):
    """Megatron-LM's num_floating_point_operations (megatron/training/training.py) for a dense SwiGLU model
    with grouped-query attention, per token, split into (weight matmuls, attention products). Full training
    without recomputation: 12 = 3 matmuls per weight (forward, input gradient, weight gradient) x 2 stacked
    x 2 FLOPs per multiply-add; Narayanan et al. (2021), "Efficient Large-Scale Language Model Training on
    GPU Clusters Using Megatron-LM", appendix."""
    h, ratio = hidden, heads * head_dim / hidden  # query width over hidden
    scale = 12 * layers * h * h
    weights = scale * ((1 + kv_heads / heads) * ratio + intermediate / h * 3 / 2 + vocab / (2 * layers * h))
    attention = scale * (seq_len / h) * ratio
    return weights, attention


def test_training_flops_match_megatron_lm_without_the_weight_gradients():
    # Llama-3.2-1B (hidden 2048, intermediate 8192, 16 layers, 32 heads of 64, 8 key/value heads, vocabulary
    # 128,256) at 2048 tokens. LoRA keeps two of the three matmuls per frozen weight; the attention products
    # have no weight, so their whole training cost remains: 12 L s (a d), 805 MFLOP per token here, which
    # the forward-only 4 L s h would undercount by 537 MFLOP, 9% of the total.
    weights, attention = megatron_training_flops_per_token(2048, 8192, 16, 32, 8, 64, 128256, seq_len=2048)
    assert attention == 12 * 16 * 2048 * 32 * 64
    found = get_architecture("Llama-3.2-1B").training_flops_per_token(seq_len=2048)
    assert found == pytest.approx(2 / 3 * weights + attention, rel=1e-4)  # Megatron-LM leaves out the norms


def test_checkpointed_training_flops_match_narayanan_et_al():
    # Narayanan et al. (2021), appendix: full training with recomputation costs
    # 96 B s l h^2 (1 + s / (6 h) + V / (16 l h)): each layer's matmuls run 4 times (forward, recomputed
    # forward, input and weight gradients), the LM head 3 times (no recomputation). A GPT-2 small shape with
    # a gated MLP of the same weight count (3 x 768 x 2048 = 8 x 768^2) and 1024 tokens. LoRA drops the
    # weight gradients: 3 of 4 for the layers' weights, 2 of 3 for the head, none of the attention products.
    h, i, layers, vocab, s = 768, 2048, 12, 50257, 1024
    gpt = Architecture("gpt2-gated", h, i, layers, 12, 12, vocab, tied_embeddings=True)
    per_token = 96 * layers * h**2  # 96 B s l h^2 over B s tokens
    lora = per_token * (3 / 4 + s / (6 * h) + 2 / 3 * vocab / (16 * layers * h))
    assert gpt.training_flops_per_token(seq_len=s, checkpointing=True) == pytest.approx(lora, rel=1e-3)


def test_training_flops_hand_count_of_a_toy_model():
    # hidden 8, intermediate 16, 2 layers, 2 query heads and 1 key/value head of 4, vocabulary 10, 5 tokens.
    toy = Architecture("toy", hidden=8, intermediate=16, layers=2, heads=2, kv_heads=1, vocab=10,
                       tied_embeddings=True)
    s = 5
    # Multiply-adds per token through the weights, one layer: q 8x8, k 8x4, v 8x4, o 8x8, gate/up/down 8x16.
    layer = 64 + 32 + 32 + 64 + 128 + 128 + 128  # 576
    head = 8 * 10
    forward = 2 * (2 * layer + head)  # 2 FLOPs per multiply-add: 2464
    backward = forward  # input gradients only; no frozen weight gets one
    norms = 4 * 8 * (2 * 2 + 1)  # 5 RMSNorm weight vectors, 4 FLOPs each per token like any parameter
    # Attention per token and layer: scores 5 keys x 8 query values, weighted sum 5 x 8: 80 multiply-adds.
    attention_forward = 2 * 2 * (s * 8 + s * 8)  # 2 layers: 320
    attention_backward = 2 * attention_forward  # gradients of Q and K, of the probabilities and V
    total = forward + backward + norms + attention_forward + attention_backward
    assert total == 6048
    assert toy.training_flops_per_token(seq_len=s) == total
    # Checkpointing recomputes the blocks' forward (their weights and 4 norm vectors, attention), not the head.
    recomputed = 2 * 2 * layer + 2 * 8 * 4 + attention_forward
    assert toy.training_flops_per_token(seq_len=s, checkpointing=True) == total + recomputed


def counted_step_flops(checkpointing: bool) -> tuple[float, float, "Architecture"]:
    """(all, attention products) FLOPs per token of one LoRA training step of a tiny random Llama, counted
    by torch's FlopCounterMode (matmuls forward and backward), and its Architecture."""
    import torch
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LlamaConfig, LlamaForCausalLM

    from fleet.base_model import quiet_transformers

    quiet_transformers()
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=100, tie_word_embeddings=True, use_cache=False,
                         attn_implementation="eager")  # eager: the attention products are plain bmm calls
    model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=1, target_modules=["q_proj", "v_proj"]))
    model.enable_input_require_grads()  # the first block's input carries a gradient too, as every other's
    if checkpointing:  # reentrant: recomputes each block's whole forward
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    model.train()
    ids = torch.randint(0, 100, (2, 32))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    counts = counter.get_flop_counts()["Global"]
    tokens = ids.numel()
    attention = sum(n for op, n in counts.items() if "bmm" in str(op))
    return counter.get_total_flops() / tokens, attention / tokens, Architecture.from_hf_config(config.to_dict(), "tiny")


@pytest.mark.parametrize("checkpointing", [False, True])
def test_training_flops_match_a_counted_training_step(checkpointing):
    # The rank-1 adapters' matmuls (about 0.6%) are counted by torch and left out by the estimate, the
    # norms the other way round (0.3%): within 1%. The attention products are counted exactly.
    counted, attention, arch = counted_step_flops(checkpointing)
    assert attention == (16 if checkpointing else 12) * 2 * 32 * 64  # layers 2, 32 tokens, query width 64
    assert arch.training_flops_per_token(seq_len=32, checkpointing=checkpointing) == pytest.approx(counted, rel=0.01)


def test_from_hf_config_defaults_and_explicit_head_dim():
    # Qwen3-0.6B sets head_dim 128 although hidden / heads is 64; published 596,049,920 parameters include
    # per-head q/k norms (28 layers x 256) that the Llama-style count leaves out.
    qwen3 = {
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    }
    arch = Architecture.from_hf_config(qwen3, "Qwen3-0.6B")
    assert arch.head_dim == 128
    assert arch.params == 596_049_920 - 28 * 256
    no_gqa = {k: v for k, v in qwen3.items() if k not in ("num_key_value_heads", "head_dim")}
    assert Architecture.from_hf_config(no_gqa, "mha").kv_heads == 16


def test_from_hf_config_rejects_incomplete_or_inconsistent_configs():
    with pytest.raises(ValueError, match="lacks intermediate_size"):
        config = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": 4}
        Architecture.from_hf_config(config, "x")
    with pytest.raises(ValueError, match="multiple of kv_heads"):
        Architecture("x", 64, 128, 2, 4, 3, 100, True)
    with pytest.raises(ValueError, match="hidden must be a positive integer"):
        Architecture("x", 64.0, 128, 2, 4, 2, 100, True)
