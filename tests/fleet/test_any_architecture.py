"""A local model folder of any common decoder family as the trained model. A tiny random model of each (GPT-2,
Llama, Qwen2, GPT-NeoX, OPT, Phi, Phi-3), saved as a Hugging Face folder beside the built-in tokenizer, passes
the scenario check; its Architecture counts what the real model has (`num_parameters`, PEFT's trainable
parameters, FLOPs counted on a real training step, the activations GPT-2 keeps); it trains, alone and in a
group; and what cannot work is refused with the field named."""

import json
import shutil

import pytest
import torch

from fleet.architectures import Architecture, Linear, Measured, emulated_layers, get_architecture
from fleet.base_model import load_base_model, load_tokenizer, quiet_transformers
from fleet.grouped import GroupedTrainer
from fleet.memory import activation_bytes, lora_param_count
from fleet.model_files import BUILTIN_DIR
from fleet.trainer import (
    LocalTrainer,
    LoraSpec,
    TrainJob,
    TrainSettings,
    adapter_layout,
    get_flat,
    set_flat,
    wrap_with_lora,
)
from scenarios.assembly import lora_spec, session_cost
from scenarios.checks import target_architecture, target_modules, timed_modules
from scenarios.cli import main
from scenarios.errors import ScenarioError
from scenarios.loader import load_scenario

VOCAB = 512  # the built-in tokenizer's

# Each family's target modules: fused attention (c_attn, query_key_value, qkv_proj), ungated MLPs (c_fc and
# c_proj, fc1 and fc2, dense_h_to_4h), gated and fused gated MLPs (gate_up_proj), and GPT-2's two c_proj.
TARGETS = {
    "gpt2": ("c_attn", "c_proj", "c_fc"),
    "llama": ("q_proj", "v_proj", "down_proj"),
    "qwen2": ("q_proj", "k_proj", "v_proj", "o_proj"),
    "gpt_neox": ("query_key_value", "dense_4h_to_h"),
    "opt": ("q_proj", "v_proj", "out_proj", "fc1", "fc2"),
    "phi": ("q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"),
    "phi3": ("qkv_proj", "o_proj", "gate_up_proj", "down_proj"),
}


def config_of(family: str, layers: int = 2, **extra):
    """A tiny config of `family`: width 64, 4 heads, 128 positions, the built-in tokenizer's vocabulary."""
    import transformers as tf

    common = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0, pad_token_id=0)
    width = dict(hidden_size=64, num_hidden_layers=layers, num_attention_heads=4, max_position_embeddings=128)
    make = {
        "gpt2": lambda: tf.GPT2Config(n_embd=64, n_layer=layers, n_head=4, n_positions=128, **common),
        "llama": lambda: tf.LlamaConfig(intermediate_size=128, num_key_value_heads=2, **width, **common),
        "qwen2": lambda: tf.Qwen2Config(intermediate_size=128, num_key_value_heads=2, **width, **common),
        "gpt_neox": lambda: tf.GPTNeoXConfig(intermediate_size=128, **width, **common),
        "opt": lambda: tf.OPTConfig(ffn_dim=128, word_embed_proj_dim=64, **width, **common),
        "phi": lambda: tf.PhiConfig(intermediate_size=128, **width, **common),
        "phi3": lambda: tf.Phi3Config(intermediate_size=128, num_key_value_heads=2, **width, **common),
    }
    config = make[family]()
    for key, value in extra.items():
        setattr(config, key, value)
    return config


def save_folder(model, folder):
    """`model` saved as a Hugging Face model folder, safetensors weights and the built-in tokenizer."""
    model.save_pretrained(folder, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(BUILTIN_DIR / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    root = tmp_path_factory.mktemp("models")
    out = {}
    for family in TARGETS:
        torch.manual_seed(0)
        out[family] = save_folder(AutoModelForCausalLM.from_config(config_of(family)), root / family)
    return out


def scenario_of(folder, *sets):
    """quickstart on the model of `folder`, timing the model itself unless `sets` says otherwise."""
    return load_scenario("quickstart", [f"model.path={folder}", "model.emulate=null", *sets])


def targets_set(targets) -> str:
    return f"model.lora.target_modules=[{', '.join(targets)}]"


# --- the check, and what the Architecture counts -------------------------------------------------------------


@pytest.mark.parametrize("family", TARGETS)
def test_the_check_passes_and_the_counts_are_the_real_models(folders, family):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    targets = TARGETS[family]
    scenario = scenario_of(folders[family], targets_set(targets))  # would raise a ScenarioError
    arch = target_architecture(scenario)
    real = AutoModelForCausalLM.from_pretrained(folders[family])
    assert arch.params == real.num_parameters()
    peft = get_peft_model(real, LoraConfig(r=8, target_modules=list(targets), fan_in_fan_out=family == "gpt2"))
    trainable, _ = peft.get_nb_trainable_parameters()
    assert lora_param_count(arch, 8, targets) == trainable
    # what a session moves: the whole adapter, float32, both ways
    lora = lora_spec(scenario)
    layout = adapter_layout(wrap_with_lora(load_base_model(str(folders[family])), lora, seed=0), lora)
    cost = session_cost(scenario, arch, layout, scenario.strategy.build(), torch.tensor([8]).numpy(),
                        scenario.strategy.compression.build())
    assert cost.bytes_up.tolist() == cost.bytes_down.tolist() == [4 * trainable]


@pytest.mark.parametrize("family", TARGETS)
def test_training_flops_match_a_counted_step(family):
    # FlopCounterMode counts the matmuls of one LoRA step, forward and backward, with eager attention (the
    # products are plain matmuls). The estimate leaves out the rank-1 adapters' matmuls and the biases and
    # counts 4 FLOPs per norm weight: within 2% on these 64-wide models (0.2% to 1.8%).
    from peft import LoraConfig, get_peft_model
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoModelForCausalLM

    from fleet.architectures import meta_model, read_architecture

    quiet_transformers()
    config = config_of(family, use_cache=False, _attn_implementation="eager")
    arch = read_architecture(meta_model(config), family)
    torch.manual_seed(0)
    lora = LoraConfig(r=1, target_modules=list(TARGETS[family]), fan_in_fan_out=family == "gpt2")
    model = get_peft_model(AutoModelForCausalLM.from_config(config), lora)
    model.enable_input_require_grads()  # the first block's input carries a gradient too, as every other's
    model.train()
    ids = torch.randint(0, VOCAB, (2, 32))
    with FlopCounterMode(display=False) as counter:
        model(input_ids=ids, labels=ids).loss.backward()
    counted = counter.get_total_flops() / ids.numel()
    assert arch.training_flops_per_token(seq_len=32) == pytest.approx(counted, rel=0.02)


def test_gpt2_activations_match_what_it_keeps():
    # GPT-2's blocks: fused q/k/v (c_attn), an ungated MLP, LayerNorms, Conv1D layers. Measured as the Llama
    # test measures (tests/fleet/test_memory.py): one more block's kept tensors, float32 halved to bf16. With
    # transformers' exact GELU, as a runtime's fused kernel keeps it (its default, gelu_new, is a chain of
    # Python operations that keeps three more tensors of the MLP's width), and no dropout masks.
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from fleet.architectures import meta_model, read_architecture
    from tests.fleet.test_memory import kept_bytes

    quiet_transformers()
    targets = list(TARGETS["gpt2"])
    extra = dict(activation_function="gelu", resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, use_cache=False,
                 _attn_implementation="eager")
    found = []
    for layers in (2, 3):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config_of("gpt2", layers, **extra))
        model = get_peft_model(model, LoraConfig(r=2, target_modules=targets, fan_in_fan_out=True)).train()
        found.append(kept_bytes(model, torch.randint(0, VOCAB, (2, 32))))
    measured = (found[1] - found[0]) / 2
    one_block = read_architecture(meta_model(config_of("gpt2", 1, **extra)), "gpt2")
    assert activation_bytes(one_block, 2, 32, target_modules=targets, rank=2) == pytest.approx(measured, rel=0.01)


# --- training ---------------------------------------------------------------------------------------------


SETTINGS = TrainSettings(seed=0, batch_size=2, seq_len=32, lr=1e-2, weight_decay=0.0)


@pytest.fixture(scope="module")
def tokens():
    text = "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n" * 20
    return torch.tensor(load_tokenizer("builtin")(text)["input_ids"], dtype=torch.int32).numpy()


def trainer_of(folder, targets, bottleneck=0) -> LocalTrainer:
    lora = LoraSpec(r=4, alpha=8.0, dropout=0.0, target_modules=tuple(targets), bottleneck=bottleneck)
    model = wrap_with_lora(load_base_model(str(folder)), lora, seed=0)
    return LocalTrainer(model, SETTINGS, adapter_layout(model, lora))


@pytest.mark.parametrize("family", TARGETS)
def test_a_client_trains_alone_and_in_a_group(folders, family, tokens):
    local = trainer_of(folders[family], TARGETS[family])
    start = get_flat(local.model)
    jobs = [TrainJob(client=c, data_client=c, round=1, base_version=0, steps=4) for c in (1, 2)]
    alone = [local.train(job, start, tokens[c * 7:]) for c, job in enumerate(jobs)]
    assert all(r.loss_last < r.loss_first for r in alone)
    together = GroupedTrainer(local).train(jobs, [start, start], [tokens, tokens[7:]])
    for a, g in zip(alone, together):
        torch.testing.assert_close(g.delta, a.delta, atol=2e-5, rtol=1e-3)


def test_bottleneck_adapters_follow_gpt2s_mlp(folders, tokens):
    local = trainer_of(folders["gpt2"], ("c_attn",), bottleneck=8)
    assert sum(1 for s in local.layout.segments if ".bottleneck." in s.name) == 2 * 4  # 2 blocks, 4 tensors
    result = local.train(TrainJob(1, 0, 1, 0, steps=3), get_flat(local.model), tokens)
    assert torch.isfinite(result.delta).all() and result.delta.abs().max() > 0


def test_flora_merges_into_gpt2s_transposed_weights(folders):
    # FLoRA's merged products W0 + s B A, written into Conv1D weights stored (d_in, d_out), give the model
    # that the adapter itself gives.
    trainer = trainer_of(folders["gpt2"], TARGETS["gpt2"])
    flat = torch.randn(trainer.layout.size, generator=torch.Generator().manual_seed(0)) * 0.1
    ids = torch.randint(0, VOCAB, (1, 16))
    trainer.model.eval()
    set_flat(trainer.model, flat)
    with torch.no_grad():
        with_adapter = trainer.model(input_ids=ids).logits
    set_flat(trainer.model, torch.zeros_like(flat))
    trainer.set_base_delta(torch.cat([p.reshape(-1) for p in trainer.layout.products(flat)]))
    with torch.no_grad():
        merged = trainer.model(input_ids=ids).logits
    torch.testing.assert_close(merged, with_adapter, atol=1e-4, rtol=1e-4)


# --- target modules: defaults and the emulated architecture --------------------------------------------------


def test_left_out_targets_are_peft_s_default_for_the_model_type(folders):
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    assert target_modules(scenario_of(folders["gpt2"])) == tuple(PEFT_DEFAULTS["gpt2"]) == ("c_attn",)
    assert target_modules(scenario_of(folders["gpt_neox"])) == ("query_key_value",)
    # the built-in model keeps every projection of its blocks, as before
    builtin = load_scenario("quickstart")
    assert target_modules(builtin) == ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def test_fused_layers_stand_for_their_counterparts_in_the_emulated_model(folders):
    scenario = scenario_of(folders["gpt2"], targets_set(["c_attn", "c_fc"]), "model.emulate=SmolLM2-135M")
    assert timed_modules(scenario) == {"c_attn": ("q_proj", "k_proj", "v_proj"), "c_fc": ("gate_proj", "up_proj")}
    smol = get_architecture("SmolLM2-135M")
    lora = lora_spec(scenario)
    layout = adapter_layout(wrap_with_lora(load_base_model(str(folders["gpt2"])), lora, seed=0), lora)
    cost = session_cost(scenario, smol, layout, scenario.strategy.build(), torch.tensor([8]).numpy(),
                        scenario.strategy.compression.build())
    assert cost.bytes_up[0] == 4 * lora_param_count(smol, 8, ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj"])
    # Phi-3's names partly match Llama's: o_proj and down_proj keep theirs
    phi3 = scenario_of(folders["phi3"], targets_set(TARGETS["phi3"]), "model.emulate=Llama-3.2-1B")
    assert timed_modules(phi3) == {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "o_proj": ("o_proj",),
                                   "gate_up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}


def test_targets_without_one_counterpart_are_refused_under_emulate():
    def measured(*linears):
        layers = tuple(Linear(name, role, 64, 64, 2) for name, role in linears)
        return Architecture("trained", 64, 128, 2, 4, 4, 512, True, measured=Measured(layers, 1, 1, 1, 1))

    llama = get_architecture("Llama-3.2-1B")
    with pytest.raises(ValueError, match="'in_proj' has no counterpart"):
        emulated_layers(measured(("in_proj", None)), llama, ["in_proj"])
    with pytest.raises(ValueError, match="query, key all stand for q_proj, k_proj, v_proj"):
        emulated_layers(measured(("query", "attention_in"), ("key", "attention_in")), llama, ["query", "key"])


# --- what cannot work is a field error -------------------------------------------------------------------


def refused(tmp_path, capsys, *sets) -> str:
    """`fedfleet run quickstart --set ...` exits 2 before any work; its message."""
    out = tmp_path / "run"
    args = [arg for s in sets for arg in ("--set", s)]
    assert main(["run", "quickstart", *args, "--out", str(out), "--quiet"]) == 2
    assert not out.exists()
    return capsys.readouterr().err


def test_a_module_the_model_lacks_lists_the_ones_it_has(folders, tmp_path, capsys):
    message = refused(tmp_path, capsys, f"model.path={folders['gpt2']}", "model.lora.target_modules=[q_proj]")
    assert "model.lora.target_modules: the model has no module 'q_proj'" in message
    assert "c_attn, c_proj, c_fc" in message


@pytest.mark.parametrize("family, name, kind", [("gpt2", "ln_1", "LayerNorm"), ("llama", "input_layernorm", "RMSNorm"),
                                                ("gpt2", "wte", "Embedding"), ("gpt2", "lm_head", "Linear")])
def test_a_target_that_is_not_a_block_linear_layer(folders, tmp_path, capsys, family, name, kind):
    message = refused(tmp_path, capsys, f"model.path={folders[family]}", f"model.lora.target_modules=[{name}]")
    assert f"model.lora.target_modules: '{name}' is not a linear layer of the decoder blocks (it is a " in message
    assert kind in message


def encoder_folder(tmp_path, kind):
    import transformers as tf

    config = {"bert": lambda: tf.BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2,
                                            num_attention_heads=4, intermediate_size=128),
              "t5": lambda: tf.T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, d_ff=128, num_layers=2,
                                        num_heads=4, decoder_start_token_id=0)}[kind]()
    model = {"bert": tf.BertModel, "t5": tf.T5Model}[kind](config)
    return save_folder(model, tmp_path / kind)


@pytest.mark.parametrize("kind, says", [("bert", "bert is an encoder"), ("t5", "t5 is an encoder-decoder model")])
def test_a_model_that_is_not_a_causal_lm(tmp_path, capsys, kind, says):
    message = refused(tmp_path, capsys, f"model.path={encoder_folder(tmp_path, kind)}")
    assert f"model.path: {says}" in message


def test_an_unreadable_config(folders, tmp_path, capsys):
    folder = shutil.copytree(folders["gpt2"], tmp_path / "broken")
    (folder / "config.json").write_text('{"model_type": "gpt2", "n_embd": ')  # cut short
    assert "model.path: transformers cannot read the model's config" in refused(tmp_path, capsys,
                                                                                 f"model.path={folder}")
    (folder / "config.json").write_text(json.dumps({"model_type": "no_such_family"}))
    assert "model.path:" in refused(tmp_path, capsys, f"model.path={folder}")


def test_what_the_model_cannot_do_names_its_field(folders, tmp_path, capsys):
    # PEFT has no default for Phi-3: its layers must be named
    message = refused(tmp_path, capsys, f"model.path={folders['phi3']}")
    assert "model.lora.target_modules: PEFT has no default for phi3" in message and "qkv_proj" in message
    # OPT keeps fc1 and fc2 in the block itself: no MLP module for a bottleneck adapter to follow
    message = refused(tmp_path, capsys, f"model.path={folders['opt']}", "model.lora.bottleneck=8")
    assert "model.lora.bottleneck:" in message
    # GPT-2's learned position table has 128 rows here
    message = refused(tmp_path, capsys, f"model.path={folders['gpt2']}", "training.seq_len=256")
    assert "training.seq_len: 256 tokens do not fit the 128 positions" in message
    # a leaf name, not a path
    message = refused(tmp_path, capsys, "model.lora.target_modules=[model.layers.0.self_attn.q_proj]")
    assert "model.lora.target_modules" in message and "not a module name" in message


def test_an_unusable_model_is_a_scenario_error_not_a_traceback(folders):
    with pytest.raises(ScenarioError, match="model.lora.target_modules"):
        scenario_of(folders["gpt_neox"], "model.lora.target_modules=[q_proj]")


# --- whole runs -------------------------------------------------------------------------------------------


def smoke_run(folder, tmp_path, *sets) -> dict:
    out = tmp_path / "run"
    args = [arg for s in (f"model.path={folder}", *sets) for arg in ("--set", s)]
    assert main(["run", "quickstart", "--smoke", *args, "--out", str(out), "--quiet"]) == 0
    return json.loads((out / "summary.json").read_text())


def test_a_gpt2_folder_runs_end_to_end(folders, tmp_path, ray_local):
    summary = smoke_run(folders["gpt2"], tmp_path, "model.emulate=null", "output.report=false")
    assert summary["final_eval_loss"] < summary["base_eval_loss"]
    assert summary["adapter_params"] == 2 * 8 * (64 + 3 * 64)  # c_attn (PEFT's default) at rank 8, two blocks


@pytest.mark.slow
@pytest.mark.parametrize("family", TARGETS)
def test_every_family_runs_end_to_end_as_an_emulated_models_proxy(folders, tmp_path, ray_local, family):
    summary = smoke_run(folders[family], tmp_path, targets_set(TARGETS[family]), "output.report=false")
    assert summary["emulated_model"] == "SmolLM2-135M" and summary["sessions"] > 0
