"""A client's adapter trained in a group, written the way a run writes its adapter (scenarios.runner.save_adapter:
PEFT's folder, bottleneck adapters beside it in bottleneck.safetensors), loads with
`peft.PeftModel.from_pretrained` and gives the logits that the grouped model (fleet/grouped.py's stacked layers)
gives for that client's rows: on the built-in model and on GPT-2 (fused q/k/v in c_attn, Conv1D layers stored
(d_in, d_out)), with heterogeneous ranks and bottleneck adapters. PEFT does not know bottleneck adapters: they
are attached to the loaded model with fedfleet's own `add_bottlenecks` and read from bottleneck.safetensors.

Float32 throughout: the grouped layers compute y + s B_g (A_g x) in batched products (bmm, baddbmm), PEFT in
separate matmuls, so the two agree to float32 rounding; ATOL is 3e-5 on logits of magnitude up to about 14 (on
one x86 CPU they differed by at most 1.1e-5 on the built-in model, while scaling the grouped LoRA term by
1 + 1e-4 fails the check there).
Another client's adapter moves them by more than 0.8: the check tells clients apart."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from fleet.base_model import load_base_model, load_tokenizer, quiet_transformers
from fleet.grouped import GroupedTrainer
from fleet.trainer import LocalTrainer, LoraSpec, TrainJob, TrainSettings, adapter_layout, add_bottlenecks, get_flat, \
    wrap_with_lora
from scenarios.runner import save_adapter

SETTINGS = TrainSettings(seed=0, batch_size=2, seq_len=32, lr=1e-2, weight_decay=0.01)
ATOL = 3e-5  # float32 rounding of sums taken in another order (3 ulp of the largest logits)
APART = 1e-3  # another client's adapter: logits at least this far off
LLAMA = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
GPT2 = ("c_attn", "c_proj", "c_fc")  # fused q/k/v, both c_proj (attention's and the MLP's), the MLP's input

# model, targets, full rank, each client's rank (None: full), bottleneck width
CASES = {
    "builtin": ("builtin", LLAMA, 4, (None, None, None), 0),
    "builtin-ranks-bottleneck": ("builtin", ("q_proj", "v_proj", "down_proj"), 8, (2, None, 4), 8),
    "gpt2": ("gpt2", GPT2, 4, (None, None), 0),
    "gpt2-ranks-bottleneck": ("gpt2", GPT2, 8, (2, None, 4), 8),
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The built-in model's path, and a tiny random GPT-2 saved beside the built-in tokenizer."""
    from transformers import AutoModelForCausalLM

    from tests.fleet.test_any_architecture import config_of, save_folder

    quiet_transformers()
    torch.manual_seed(0)
    gpt2 = save_folder(AutoModelForCausalLM.from_config(config_of("gpt2")), tmp_path_factory.mktemp("gpt2"))
    return {"builtin": "builtin", "gpt2": str(gpt2)}


@pytest.fixture(scope="module")
def texts():
    tok = load_tokenizer("builtin")
    lines = ["Now is the winter of our discontent", "Made glorious summer by this sun of York;",
             "And all the clouds that lour'd upon our house"]
    return [np.asarray(tok((line + "\n") * 12)["input_ids"], dtype=np.int32) for line in lines]


def client_adapters(local: LocalTrainer, grouped: GroupedTrainer, jobs, texts) -> list[torch.Tensor]:
    """Each client's adapter after training in one group: its start (the components beyond its rank absent,
    zero) plus its update. Distinct starts: the initial adapter moved a little per client (B starts at zero)."""
    init = get_flat(local.model)
    begin = [init + 0.01 * torch.randn(init.shape, generator=torch.Generator().manual_seed(i))
             for i in range(len(jobs))]
    results = grouped.train(jobs, begin, texts[: len(jobs)])
    adapters = []
    for job, start, result in zip(jobs, begin, results):
        assert result.delta.abs().max() > 1e-4  # it trained
        adapter = start.clone()
        adapter[local.masks(job.groups, job.rank)[0]] = 0.0
        adapters.append(adapter + result.delta)
    return adapters


@torch.no_grad()
def grouped_logits(grouped: GroupedTrainer, adapters: list[torch.Tensor], ids: torch.Tensor) -> torch.Tensor:
    """(G, B, T, V): the grouped model's logits, client g's adapter on its rows ids[g] of the (G x B, T) batch."""
    g, b, t = ids.shape
    stacked = torch.stack(adapters)
    params = [seg.view(stacked) for seg in grouped.layout.segments]
    grouped.trainer.model.eval()
    with grouped._installed(params, generators=[]):
        logits = grouped.trainer.model(input_ids=ids.reshape(g * b, t)).logits
    return logits.reshape(g, b, t, -1)


def exported(local: LocalTrainer, adapter: torch.Tensor, folder) -> None:
    """`adapter` written as a run writes its final adapter (no FLoRA base delta here)."""
    save_adapter(local.model, adapter, SimpleNamespace(base_delta=None), folder)


def peft_model(path: str, folder, bottleneck: int) -> torch.nn.Module:
    """The exported adapter loaded onto a fresh base: PEFT for LoRA, bottleneck.safetensors for the rest."""
    from peft import PeftModel
    from safetensors.torch import load_file

    model = PeftModel.from_pretrained(load_base_model(path), folder)
    if bottleneck:
        add_bottlenecks(model, bottleneck)
        saved = load_file(str(folder / "bottleneck.safetensors"))
        missing, unexpected = model.load_state_dict(saved, strict=False)
        assert saved and not unexpected and not [k for k in missing if ".bottleneck." in k]
    else:
        assert not (folder / "bottleneck.safetensors").exists()
    return model.eval()


@pytest.mark.parametrize("case", CASES)
def test_a_grouped_clients_exported_adapter_loads_with_peft_and_gives_its_logits(models, texts, tmp_path, case):
    name, targets, r, ranks, bottleneck = CASES[case]
    path = models[name]
    lora = LoraSpec(r=r, alpha=2.0 * r, dropout=0.0, target_modules=targets, bottleneck=bottleneck)
    model = wrap_with_lora(load_base_model(path), lora, seed=0)
    local = LocalTrainer(model, SETTINGS, adapter_layout(model, lora))
    grouped = GroupedTrainer(local)
    jobs = [TrainJob(client=c, data_client=c, round=1, base_version=0, steps=3, rank=rank)
            for c, rank in enumerate(ranks)]
    adapters = client_adapters(local, grouped, jobs, texts)
    ids = torch.randint(0, 512, (len(jobs), 2, 16), generator=torch.Generator().manual_seed(1))
    together = grouped_logits(grouped, adapters, ids)

    loaded = []
    for i, adapter in enumerate(adapters):
        folder = tmp_path / f"client{i}"
        exported(local, adapter, folder)
        assert (folder / "adapter_config.json").exists() and (folder / "adapter_model.safetensors").exists()
        loaded.append(peft_model(path, folder, bottleneck))

    with torch.no_grad():
        for i, model in enumerate(loaded):
            alone = model(input_ids=ids[i]).logits
            torch.testing.assert_close(alone, together[i], atol=ATOL, rtol=0.0)
            # the test can fail: a neighbour's adapter on these rows gives other logits
            other = loaded[(i + 1) % len(loaded)](input_ids=ids[i]).logits
            assert (other - together[i]).abs().max() > APART
