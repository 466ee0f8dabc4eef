"""Composition of a run: what the clock charges for the emulated model, who can hold it in memory, and at
which rank."""

from types import SimpleNamespace

import numpy as np
import pytest

from aggregation.compression import build_codec
from fleet.base_model import load_base_model
from fleet.devices import device_class
from fleet.memory import lora_param_count
from fleet.trainer import adapter_layout, wrap_with_lora
from scenarios.loader import load_scenario
from fleet.emulator import SessionCost
from scenarios.assembly import device_ranks, lora_spec, session_cost
from scenarios.checks import memory_estimate, target_architecture
from scenarios.summary import full_model_uplink


class Fleetish(SimpleNamespace):
    """A fleet with only what device_ranks reads: memory, and one class per device (cycling)."""

    def __len__(self):
        return len(self.memory_gb)


def fleet_of(memory_gb, classes=("flagship_phone",)):
    n = len(memory_gb)
    return Fleetish(memory_gb=np.asarray(memory_gb, dtype=float), classes=[device_class(c) for c in classes],
                    cls=np.arange(n) % len(classes))


@pytest.fixture(scope="module")
def llama_1b():
    scenario = load_scenario("quickstart", ["model.emulate=Llama-3.2-1B", "model.memory_policy=shrink_rank",
                                            "run.deadline_s=600"])  # local work takes over a minute
    return scenario, target_architecture(scenario)


def layout_and_strategy(scenario):
    lora = lora_spec(scenario)
    model = wrap_with_lora(load_base_model("builtin"), lora, seed=0)
    strategy = scenario.strategy.build()
    return adapter_layout(model, lora), strategy


def test_ranks_shrink_to_what_fits(llama_1b):
    scenario, arch = llama_1b
    need = {r: memory_estimate(scenario, arch, r).total_bytes / 1e9 for r in (8, 4, 2, 1)}
    assert need[8] > need[4] > need[2] > need[1]
    fleet = fleet_of([need[8] + 1, need[4], need[1], need[1] - 0.001])
    assert device_ranks(scenario, arch, fleet).tolist() == [8, 4, 1, 0]
    exclude = scenario.model_copy(update={"model": scenario.model.model_copy(update={"memory_policy": "exclude"})})
    assert device_ranks(exclude, arch, fleet).tolist() == [8, 0, 0, 0]


def test_ranks_per_device_class():
    scenario = load_scenario("quickstart", ["model.lora.ranks={low_end_phone: 2, iot_gateway: 4}",
                                            "model.memory_policy=ignore"])
    fleet = fleet_of([8, 8, 8, 8], classes=("flagship_phone", "low_end_phone", "iot_gateway"))
    assert device_ranks(scenario, target_architecture(scenario), fleet).tolist() == [8, 2, 4, 8]


def test_exclude_keeps_each_class_at_its_rank(llama_1b):
    scenario, arch = llama_1b
    scenario = load_scenario("quickstart", ["model.emulate=Llama-3.2-1B", "model.lora.ranks={low_end_phone: 2}",
                                            "run.deadline_s=600"])
    need = {r: memory_estimate(scenario, arch, r).total_bytes / 1e9 for r in (8, 2)}
    fleet = fleet_of([need[8], need[2], need[2], need[2] - 0.001], classes=("flagship_phone", "low_end_phone"))
    # the flagship with memory for rank 2 only is excluded, not shrunk
    assert device_ranks(scenario, arch, fleet).tolist() == [8, 2, 0, 0]


def test_bytes_follow_each_device_rank(llama_1b):
    scenario, arch = llama_1b
    layout, strategy = layout_and_strategy(scenario)
    cost = session_cost(scenario, arch, layout, strategy, np.array([8, 4, 1, 0]), build_codec("none"))
    per_rank = [4 * lora_param_count(arch, r, scenario.model.lora.target_modules) for r in (8, 4, 1)]
    assert cost.bytes_up.tolist() == cost.bytes_down.tolist() == per_rank + [0]
    assert per_rank[0] == 2 * per_rank[1] == 8 * per_rank[2]  # LoRA parameters are linear in the rank


def test_partial_strategies_send_only_their_shared_part(llama_1b):
    scenario, arch = llama_1b
    full = 4 * lora_param_count(arch, 8, scenario.model.lora.target_modules)
    # FedSA-LoRA sends A only: r x d_in per projection
    fedsa = scenario.model_copy(update={"strategy": load_scenario("quickstart", ["strategy.name=fedsa_lora"]).strategy})
    layout, strategy = layout_and_strategy(fedsa)
    cost = session_cost(fedsa, arch, layout, strategy, np.array([8]), build_codec("none"))
    a_only = 4 * arch.layers * 8 * sum(arch.projections[m][0] for m in scenario.model.lora.target_modules)
    assert cost.bytes_up[0] == a_only < full
    # PWFF sends only the bottleneck adapters: 2 h b + b + h per layer
    pwff = load_scenario("quickstart", ["strategy.name=pwff", "model.lora.bottleneck=16",
                                        "model.emulate=Llama-3.2-1B", "run.deadline_s=600"])
    layout, strategy = layout_and_strategy(pwff)
    cost = session_cost(pwff, arch, layout, strategy, np.array([8]), build_codec("none"))
    h = arch.hidden
    assert cost.bytes_up[0] == 4 * arch.layers * (2 * h * 16 + 16 + h)


def test_compression_shrinks_uploads_not_downloads(llama_1b):
    scenario, arch = llama_1b
    layout, strategy = layout_and_strategy(scenario)
    plain = session_cost(scenario, arch, layout, strategy, np.array([8]), build_codec("none"))
    q4 = session_cost(scenario, arch, layout, strategy, np.array([8]), build_codec("q4"))
    assert q4.bytes_down[0] == plain.bytes_down[0]
    assert 0.12 < q4.bytes_up[0] / plain.bytes_up[0] < 0.14  # 4 bits plus a float32 scale per 256 values


def test_emulated_model_sets_the_clock(llama_1b):
    scenario, arch = llama_1b
    t = scenario.training
    layout, strategy = layout_and_strategy(scenario)
    assert arch.params > 1.2e9
    tokens = t.local_steps * t.batch_size * t.seq_len
    cost = session_cost(scenario, arch, layout, strategy, np.array([8]), build_codec("none"))
    assert cost.flops == pytest.approx(arch.training_flops_per_token(t.seq_len) * tokens)


def test_full_model_uplink_scales_each_session_by_its_own_payload():
    import pandas as pd

    arch = SimpleNamespace(params=1000)  # full weights: 4,000 bytes
    cost = SessionCost(flops=1.0, bytes_down=0, bytes_up=np.array([400, 100, 0]))  # rank differs; 0: cannot train
    sessions = pd.DataFrame({"device": [0, 0, 1, 2], "bytes_up": [400, 200, 50, 0]})  # one full, two cut off
    out = full_model_uplink(sessions, arch, cost, fleet_size=3)
    # 400 -> 4,000; 200 of 400 -> 2,000; 50 of 100 -> 2,000
    assert out["full_model_bytes"] == 4000 and out["full_model_uplink_bytes"] == pytest.approx(8000)
    assert out["uplink_fraction_of_full"] == pytest.approx(650 / 8000)


def test_privacy_is_accounted_over_the_devices_that_can_be_invited(tmp_path):
    """Low-end phones (3-4 GB) cannot hold LoRA training of Qwen2.5-0.5B at r = 8 (about 5 GB): DP-FedAvg's
    sampling rate is K over the others, not over the whole fleet."""
    import json

    from scenarios.runner import RunOptions, run_scenario

    scenario = load_scenario("quickstart", [
        "run.mode=systems", "run.rounds=3", "fleet.size=400", "run.deadline_s=3600", "model.emulate=qwen2.5-0.5b",
        "strategy.name=dp_fedavg", "strategy.noise_multiplier=1.0", "output.report=false", "training.batch_size=16"])
    run = run_scenario(scenario, RunOptions(out=tmp_path / "dp", progress=False))
    summary = json.loads((run / "summary.json").read_text())
    # quickstart's mix: 30% flagships (8-16 GB), 50% low-end phones (3-4 GB: too little for Qwen2.5-0.5B at
    # batch 16), 20% gateways (4-16 GB)
    assert summary["dp_population"] == summary["invitable_devices"] < 400 - 0.5 * 400 + 1
    assert summary["dp_sampling_rate"] == pytest.approx(10 / summary["dp_population"])
    assert summary["dp_population"] == summary["eligible_devices"]  # every class is available some time


def test_an_asynchronous_run_that_can_never_receive_an_update_stops_with_a_message(tmp_path, capsys):
    """Every transfer is in outage (an SNR of 200 dB is asked for): FedAsync invites, every session ends at
    once, and after 7 simulated days without an update the run stops, saying why, without a traceback."""
    from scenarios.cli import main

    code = main(["run", "quickstart", "--quiet", "--out", str(tmp_path / "run"), "--set", "run.mode=systems",
                 "--set", "strategy.name=fedasync", "--set", "network.outage_snr_db=200", "--set", "fleet.size=60",
                 "--set", "run.clients_per_round=4", "--set", "run.deadline_s=3600"])
    err = capsys.readouterr().err
    assert code == 1
    assert "the run stopped: no update reached the asynchronous server in 7 simulated days" in err
    assert "link_outage" in err and "Traceback" not in err
