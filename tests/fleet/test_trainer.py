"""Local LoRA training: only the adapter moves, and a job's result is a function of the job alone."""

import numpy as np
import pytest
import torch

from fleet.base_model import load_base_model, load_tokenizer
from aggregation import ParameterGroups
from fleet.trainer import (
    LocalTrainer,
    LoraSpec,
    TrainJob,
    TrainSettings,
    adapter_layout,
    get_flat,
    set_flat,
    windows,
    wrap_with_lora,
)

LORA = LoraSpec(r=4, alpha=8.0, dropout=0.0, target_modules=("q_proj", "v_proj"))
SETTINGS = TrainSettings(seed=0, batch_size=4, seq_len=32, lr=1e-2, weight_decay=0.0)


@pytest.fixture(scope="module")
def tokens():
    text = "Now is the winter of our discontent\nMade glorious summer by this sun of York;\n" * 20
    return np.asarray(load_tokenizer("builtin")(text)["input_ids"], dtype=np.int32)


def new_trainer(lora=LORA):
    model = wrap_with_lora(load_base_model("builtin"), lora, seed=0)
    return LocalTrainer(model, SETTINGS, adapter_layout(model, lora))


def test_only_the_adapter_changes(tokens):
    trainer = new_trainer()
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" not in n}
    start = get_flat(trainer.model)
    start_copy = start.clone()
    result = trainer.train(TrainJob(client=1, data_client=0, round=1, base_version=0, steps=3), start, tokens)
    for name, p in trainer.model.named_parameters():
        if "lora_" not in name:
            assert torch.equal(p, frozen[name]), name
            assert not p.requires_grad
    assert result.delta.abs().max() > 0
    assert torch.equal(start, start_copy), "training wrote into the global adapter it started from"
    assert torch.allclose(get_flat(trainer.model), start + result.delta)


def test_local_steps_lower_the_training_loss(tokens):
    result = new_trainer().train(TrainJob(1, 0, 1, 0, steps=15), get_flat(new_trainer().model), tokens)
    assert result.loss_last < result.loss_first


def test_same_job_same_result_on_any_trainer(tokens):
    a, b = new_trainer(), new_trainer()
    start = get_flat(a.model)
    job = TrainJob(client=5, data_client=0, round=2, base_version=1, steps=2)
    b.train(TrainJob(9, 0, 1, 0, steps=2), start, tokens)  # b has served another client before
    assert torch.equal(a.train(job, start, tokens).delta, b.train(job, start, tokens).delta)
    other_round = a.train(TrainJob(5, 0, 3, 1, steps=2), start, tokens).delta
    assert not torch.equal(other_round, a.train(job, start, tokens).delta)


def test_set_flat_checks_size():
    trainer = new_trainer()
    with pytest.raises(ValueError, match="parameters"):
        set_flat(trainer.model, torch.zeros(3))


def test_windows_repeat_short_text():
    w = windows(np.arange(5, dtype=np.int32), np.array([0, 7]), 8)
    assert w.shape == (2, 8) and w[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]


def test_adapter_size_matches_the_architecture_count():
    """The bytes the clock charges come from lora_param_count; the trained adapter must have that size."""
    import json

    from fleet.architectures import Architecture
    from fleet.base_model import BUILTIN_DIR
    from fleet.memory import lora_param_count

    arch = Architecture.from_hf_config(json.loads((BUILTIN_DIR / "config.json").read_text()), "builtin")
    assert get_flat(new_trainer().model).numel() == lora_param_count(arch, LORA.r, LORA.target_modules)


def test_truncated_rank_trains_only_its_components(tokens):
    trainer = new_trainer()  # rank 4
    start = get_flat(trainer.model)
    delta = trainer.train(TrainJob(1, 0, 1, 0, steps=3, rank=2), start, tokens).delta
    offset = 0
    for name, p in trainer.model.named_parameters():
        if not p.requires_grad:
            continue
        d = delta[offset: offset + p.numel()].view_as(p)
        offset += p.numel()
        if "lora_A" in name:
            assert d[2:].abs().max() == 0 and d[:2].abs().max() > 0
        else:  # B starts at zero, so its first columns move and the rest stay
            assert d[:, 2:].abs().max() == 0 and d[:, :2].abs().max() > 0
    assert torch.equal(trainer.train(TrainJob(1, 0, 1, 0, steps=3, rank=4), start, tokens).delta,
                       trainer.train(TrainJob(1, 0, 1, 0, steps=3), start, tokens).delta)


def test_frozen_entries_never_move(tokens):
    trainer = new_trainer()
    start = get_flat(trainer.model)
    groups = ParameterGroups(frozen=(r"\.lora_A\.",))
    delta = trainer.train(TrainJob(1, 0, 1, 0, steps=3, groups=groups), start, tokens).delta
    frozen = trainer.layout.mask([r"\.lora_A\."])
    assert torch.count_nonzero(delta[frozen]) == 0 and torch.count_nonzero(delta[~frozen]) > 0


def test_proximal_term_keeps_the_shared_part_closer(tokens):
    trainer = new_trainer()
    start = get_flat(trainer.model)
    free = trainer.train(TrainJob(1, 0, 1, 0, steps=6), start, tokens).delta
    held = trainer.train(TrainJob(1, 0, 1, 0, steps=6, prox_mu=100.0), start, tokens).delta
    assert held.norm() < 0.8 * free.norm()
    # personal entries are not pulled toward the global adapter
    groups = ParameterGroups(personal=(r"\.lora_B\.",))
    mixed = trainer.train(TrainJob(1, 0, 1, 0, steps=6, prox_mu=100.0, groups=groups), start, tokens).delta
    b = trainer.layout.mask([r"\.lora_B\."])
    assert mixed[b].norm() > 2 * held[b].norm()


def test_bottleneck_adapters_start_as_identity_and_train(tokens):
    plain, wide = new_trainer(), new_trainer(LoraSpec(4, 8.0, 0.0, ("q_proj", "v_proj"), bottleneck=8))
    batch = windows(tokens, np.arange(2), 33)
    with torch.no_grad():
        assert torch.allclose(plain.model(input_ids=batch).logits, wide.model(input_ids=batch).logits)
    names = [s.name for s in wide.layout.segments if s.kind == "other"]
    assert names and all(".bottleneck." in n for n in names)
    delta = wide.train(TrainJob(1, 0, 1, 0, steps=3), get_flat(wide.model), tokens).delta
    assert torch.count_nonzero(delta[wide.layout.mask([r"\.bottleneck\."])]) > 0


def test_base_delta_is_merged_and_undone(tokens):
    trainer = new_trainer()
    adapter = get_flat(trainer.model)
    eval_batch = windows(tokens, np.arange(4), 33)
    before = trainer.evaluate(adapter, eval_batch)
    dense = sum(b * a for b, a in trainer.layout.dense_shapes())
    merged = trainer.evaluate(adapter, eval_batch, base_delta=torch.full((dense,), 0.05))
    assert abs(merged - before) > 1e-3
    assert trainer.evaluate(adapter, eval_batch) == pytest.approx(before, abs=1e-6)


def test_poisoned_clients_train_on_other_tokens(tokens):
    trainer = new_trainer()
    start = get_flat(trainer.model)
    honest = trainer.train(TrainJob(1, 0, 1, 0, steps=2), start, tokens)
    poisoned = trainer.train(TrainJob(1, 0, 1, 0, steps=2, poison=True), start, tokens)
    assert poisoned.loss_first > honest.loss_first + 1.0  # random tokens are far harder to predict
