"""Composition of a run: what the clock charges for the emulated model, and who can hold it in memory."""

import numpy as np
import pytest

from fleet.memory import lora_param_count
from scenarios.loader import load_scenario
from scenarios.runner import device_ranks, memory_estimate, session_cost, target_architecture


class MemoryOnly:
    def __init__(self, memory_gb):
        self.memory_gb = np.asarray(memory_gb, dtype=float)

    def __len__(self):
        return len(self.memory_gb)


@pytest.fixture(scope="module")
def llama_1b():
    scenario = load_scenario("quickstart", ["model.emulate=Llama-3.2-1B", "model.memory_policy=shrink_rank"])
    return scenario, target_architecture(scenario)


def test_ranks_shrink_to_what_fits(llama_1b):
    scenario, arch = llama_1b
    need = {r: memory_estimate(scenario, arch, r).total_bytes / 1e9 for r in (8, 4, 2, 1)}
    assert need[8] > need[4] > need[2] > need[1]
    fleet = MemoryOnly([need[8] + 1, need[4], need[1], need[1] - 0.001])
    assert device_ranks(scenario, arch, fleet).tolist() == [8, 4, 1, 0]
    exclude = scenario.model_copy(update={"model": scenario.model.model_copy(update={"memory_policy": "exclude"})})
    assert device_ranks(exclude, arch, fleet).tolist() == [8, 0, 0, 0]


def test_bytes_follow_each_device_rank(llama_1b):
    scenario, arch = llama_1b
    cost = session_cost(scenario, arch, np.array([8, 4, 1, 0]))
    per_rank = [4 * lora_param_count(arch, r, scenario.model.lora.target_modules) for r in (8, 4, 1)]
    assert cost.bytes_up.tolist() == per_rank + [0]
    assert per_rank[0] == 2 * per_rank[1] == 8 * per_rank[2]  # LoRA parameters are linear in the rank
    assert session_cost(scenario, arch).bytes_up == per_rank[0]


def test_emulated_model_sets_the_clock(llama_1b):
    scenario, arch = llama_1b
    t = scenario.training
    assert arch.params > 1.2e9
    tokens = t.local_steps * t.batch_size * t.seq_len
    assert session_cost(scenario, arch).flops == pytest.approx(arch.training_flops_per_token(t.seq_len) * tokens)
