"""benchmarks/shaped_model.py builds a model of a catalog architecture's shape here, for the throughput
benchmark: it must have the real model's size (SmolLM2-135M: 134,515,008 parameters, as published), load as
any model folder does, and its tokenizer's ids must lie inside its vocabulary."""

import subprocess
import sys
from pathlib import Path

from transformers import AutoModelForCausalLM

from fleet.base_model import load_tokenizer
from scenarios.checks import trained_model

ROOT = Path(__file__).resolve().parents[1]
SMOLLM2_135M_PARAMS = 134_515_008  # HuggingFaceTB/SmolLM2-135M, model.num_parameters()


def test_a_smollm2_shaped_model_has_the_published_size_and_loads(tmp_path):
    folder = tmp_path / "smollm2"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "shaped_model.py"), "SmolLM2-135M", str(folder)],
                   check=True, cwd=ROOT)
    model = AutoModelForCausalLM.from_pretrained(folder)
    assert model.num_parameters() == SMOLLM2_135M_PARAMS
    assert trained_model(str(folder)).arch.params == SMOLLM2_135M_PARAMS
    ids = load_tokenizer(str(folder))("a device learns its owner's habits")["input_ids"]
    assert 0 < len(ids) and max(ids) < model.config.vocab_size
