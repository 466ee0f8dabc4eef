"""Target architectures: parameter counts against published sizes and against the real built-in model."""

import json

import pytest

from fleet.architectures import CATALOG, Architecture, get_architecture


@pytest.mark.parametrize(
    "name, published",
    [("SmolLM2-135M", 134.5e6), ("Qwen2.5-0.5B", 494e6), ("Llama-3.2-1B", 1.236e9)],
)
def test_catalog_sizes_match_published(name, published):
    assert get_architecture(name).params == pytest.approx(published, rel=0.03)


def test_catalog_counts_are_exact_where_no_bias_is_left_out():
    # Both equal `model.num_parameters()` of the Hugging Face checkpoints.
    assert get_architecture("SmolLM2-135M").params == 134_515_008
    assert get_architecture("Llama-3.2-1B").params == 1_235_814_400


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


def test_training_flops_count_the_head_of_the_loaded_model(builtin):
    model, arch = builtin
    head = model.get_output_embeddings().weight
    assert head is model.get_input_embeddings().weight
    n = model.num_parameters() - head.numel()  # blocks and norms
    n += head.numel()  # tied, but the head's matmul runs for every token all the same
    assert arch.training_flops_per_token() == 4 * n


def test_training_flops_per_token():
    arch = get_architecture("SmolLM2-135M")
    n = arch.non_embedding_params + 576 * 49152
    assert arch.training_flops_per_token() == 4 * n
    assert arch.training_flops_per_token(seq_len=512) == 4 * n + 4 * 30 * 512 * 576
    assert arch.training_flops_per_token(seq_len=512, checkpointing=True) == 1.5 * (4 * n + 4 * 30 * 512 * 576)


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
