"""A run assembled from its scenario: the sections turned into what the emulator runs on (the fleet and its
ranks, the radio, the round rules, the strategy, the codec, what a session costs) together with the data and
the server's copy of the model. The runner, the capacity plan and the benchmarks all build runs here.

Everything that can fail on bad input happens in `assemble`, before a run folder exists or Ray starts.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aggregation import AdapterLayout, RunSetting, Strategy, StrategyContext
from aggregation.compression import ErrorFeedback
from fleet.architectures import Architecture
from fleet.attacks import Attack
from fleet.base_model import load_base_model
from fleet.cells import Radio
from fleet.clients import ClientSide
from fleet.data import FederatedData
from fleet.devices import Fleet, sample_fleet
from fleet.fast_emulator import FastEmulator
from fleet.emulator import Emulator, Host, Probe, RoundRules, SessionCost, Sink
from fleet.grouping import MAX_GROUP_SIZE
from fleet.memory import GroupMemory, MemoryEstimate, grouped_training_memory
from fleet.payload import emulated_values
from fleet.trainer import LoraSpec, TrainSettings, adapter_layout, get_flat, wrap_with_lora
from network_models import MIXED_FAMILIES, cell_sites, load_trace
from scenarios.checks import (
    check_scenario,
    memory_estimate,
    no_device_fits,
    target_architecture,
    target_modules,
    timed_modules,
    trained_model,
)
from scenarios.client_data import client_data
from scenarios.errors import ScenarioError
from scenarios.schema import Scenario


@dataclass
class Assembly:
    """One run's parts. The fleet's batteries change as the run goes: an assembly is emulated once."""

    scenario: Scenario
    data: FederatedData
    arch: Architecture  # what the clock times (the emulated architecture, or the trained model)
    memory: MemoryEstimate  # LoRA training at model.lora.r on a device
    fleet: Fleet
    ranks: np.ndarray  # per device, the LoRA rank it trains at; 0: it cannot train
    server_model: Any  # the trained model with LoRA: the initial adapter, and the final one saved in PEFT format
    layout: AdapterLayout
    adapter: torch.Tensor  # the initial global adapter
    strategy: Strategy  # set up for this run
    codec: Any  # the upload's encoding
    cost: SessionCost
    attack: Attack

    def client_side(self, state_dir: Path) -> ClientSide:
        """The devices' side of updates, keeping its per-device state in files under `state_dir`."""
        s = self.scenario
        feedback = None if s.strategy.compression.name == "none" else ErrorFeedback(self.codec, state_dir / "residual")
        return ClientSide(self.layout, self.strategy, self.adapter, s.seed, self.attack,
                          self.attack.attackers(s.seed, len(self.fleet)), feedback, state_dir)

    def emulator(self, clients: ClientSide, host: Host | None, sink: Sink, probes: tuple[Probe, ...] = (),
                 on_progress=lambda row: None, resume: dict | None = None,
                 stop_requested=lambda: False, until_s: float = float("inf")) -> Emulator:
        """`until_s`: a planning horizon, the simulated time at which the run ends whatever run.rounds says."""
        s = self.scenario
        clock = FastEmulator if uses_fast_clock(s) else Emulator
        return clock(
            seed=s.seed,
            fleet=self.fleet,
            num_samples=self.data.num_samples,
            rules=replace(round_rules(s), until_s=until_s),
            radio=radio(s),
            cost=self.cost,
            selector=s.run.selection.build(),
            adapter=self.adapter.clone(),  # `adapter` stays the initial one, for the local-only baseline
            strategy=self.strategy,
            clients=clients,
            host=host,
            sink=sink,
            ranks=self.ranks,
            probes=probes,
            on_progress=on_progress,
            checkpoint_every=s.run.checkpoint_every,
            resume=resume,
            stop_requested=stop_requested,
        )


def uses_fast_clock(scenario: Scenario) -> bool:
    """run.engine: fast, or auto in systems mode (checks.py refuses fast with training)."""
    return scenario.run.engine == "fast" or (scenario.run.engine == "auto" and scenario.run.mode == "systems")


def assemble(scenario: Scenario) -> Assembly:
    """Check the scenario and build its run; a ScenarioError names what cannot work."""
    check_scenario(scenario)
    data = client_data(scenario)
    strategy = scenario.strategy.build()
    arch = target_architecture(scenario)
    memory = memory_estimate(scenario, arch)
    fleet = build_fleet(scenario, len(data.client_ids))
    ranks = device_ranks(scenario, arch, fleet)
    if not ranks.any():  # the classes' ranges allow it (scenarios.checks), yet no sampled device fits
        problem = no_device_fits(arch, memory.total_bytes, fleet.memory_gb.max())
        raise ScenarioError(f"{problem.field}: {problem.reason}")
    lora = lora_spec(scenario)
    base = load_base_model(scenario.model.path)
    try:
        server_model = wrap_with_lora(base, lora, scenario.seed)
    except ValueError as err:  # peft: no module of the model has one of these names
        raise ScenarioError(f"model.lora.target_modules: {err}") from None
    layout = adapter_layout(server_model, lora)
    check_strategy(scenario, strategy, layout)
    strategy.setup(StrategyContext(layout, population=int(invitable(fleet, ranks).sum()),
                                   cohort=scenario.run.clients_per_round, seed=scenario.seed))
    codec = scenario.strategy.compression.build()
    return Assembly(scenario, data, arch, memory, fleet, ranks, server_model, layout, get_flat(server_model),
                    strategy, codec, session_cost(scenario, arch, layout, strategy, ranks, codec),
                    Attack(**scenario.fleet.attack.model_dump()))


def lora_spec(scenario: Scenario) -> LoraSpec:
    lora = scenario.model.lora
    return LoraSpec(lora.r, lora.alpha, lora.dropout, target_modules(scenario), lora.bottleneck)


def train_settings(scenario: Scenario) -> TrainSettings:
    t = scenario.training
    return TrainSettings(scenario.seed, t.batch_size, t.seq_len, t.lr, t.weight_decay, scenario.runtime.train_dtype)


def group_memory(scenario: Scenario) -> GroupMemory:
    """A host worker's memory for grouped training of the model the host trains (never model.emulate's)."""
    t, lora = scenario.training, scenario.model.lora
    return grouped_training_memory(trained_model(scenario.model.path).arch, lora.r, target_modules(scenario),
                                   t.batch_size, t.seq_len, lora.bottleneck)


def group_size(scenario: Scenario) -> int:
    """Clients a worker trains per pass: runtime.group_size, or under 'auto' as many as runtime.worker_memory_gb
    holds by `group_memory`, from 1 (even when one does not fit: the run goes on, a client at a time) to
    MAX_GROUP_SIZE and run.clients_per_round. Only the scenario counts, never the host or the number of
    workers: groups decide float rounding, and a scenario and seed must give the same numbers everywhere."""
    rt = scenario.runtime
    if rt.group_size != "auto":
        return rt.group_size
    fits = group_memory(scenario).clients(rt.worker_memory_gb * 1e9)
    return max(1, min(fits, MAX_GROUP_SIZE, scenario.run.clients_per_round))


# --- the fleet ---------------------------------------------------------------------------------------


def build_fleet(scenario: Scenario, num_data_clients: int) -> Fleet:
    net = scenario.network
    return sample_fleet(
        scenario.seed,
        scenario.fleet.size,
        {m.name: m.fraction for m in scenario.fleet.classes},
        overrides={m.name: m.overrides for m in scenario.fleet.classes},
        cells=net.cells,
        layout=net.layout,
        inter_site_m=net.inter_site_m,
        cell_radius_m=net.cell_radius_m,
        path_loss=net.path_loss,
        shadowing_sigma_db=net.shadowing_db,
        initial_charge=scenario.fleet.initial_charge,
        num_data_clients=num_data_clients,
    )


def device_ranks(scenario: Scenario, arch: Architecture, fleet: Fleet) -> np.ndarray:
    """The LoRA rank each device trains at, 0 where it cannot train at all: its class's rank
    (model.lora.ranks), lowered or excluded where memory is short (model.memory_policy)."""
    lora, policy = scenario.model.lora, scenario.model.memory_policy
    cap = np.array([lora.ranks.get(c.name, lora.r) for c in fleet.classes])[fleet.cls]
    if policy == "ignore":
        return cap
    memory = fleet.memory_gb * 1e9
    need = lambda r: memory_estimate(scenario, arch, int(r)).total_bytes  # noqa: E731
    if policy == "exclude":
        values = np.unique(cap)
        needed = np.array([need(v) for v in values])[np.searchsorted(values, cap)]
        return np.where(memory >= needed, cap, 0)
    candidates = sorted({int(c) >> i for c in np.unique(cap) for i in range(int(c).bit_length())})
    ranks = np.zeros(len(fleet), dtype=np.int64)
    for rank in candidates:  # larger ranks overwrite smaller ones where they fit
        ranks[(memory >= need(rank)) & (rank <= cap)] = rank
    return ranks


def invitable(fleet: Fleet, ranks: np.ndarray) -> np.ndarray:
    """Devices a round can ever invite: able to train (memory) and available at some time."""
    ok = ranks > 0
    for k, model in enumerate(fleet.availability):
        members = np.flatnonzero(fleet.cls == k)
        ok[members] &= model.ever_available(members)
    return ok


# --- rounds and radio --------------------------------------------------------------------------------


def round_rules(scenario: Scenario) -> RoundRules:
    r, f = scenario.run, scenario.fleet
    return RoundRules(r.rounds, r.clients_per_round, r.selected, r.deadline_s, r.policy, r.min_reports,
                      r.eval_every, scenario.training.local_steps, f.min_charge, f.cutoff_charge,
                      f.only_while_charging, r.reject_norm_factor, scenario.training.local_time_budget_s)


def radio(scenario: Scenario) -> Radio:
    n = scenario.network
    return Radio(n.path_loss, n.carrier_ghz, n.uplink_mhz * 1e6, n.downlink_mhz * 1e6, n.bs_power_dbm,
                 n.noise_figure_db, n.sharing, n.fading, n.rician_k_db, n.outage_snr_db, n.backhaul_mbps * 1e6,
                 n.backhaul_latency_ms / 1e3,
                 *(load_trace(t.path, t.format) if t else None for t in (n.uplink_trace, n.downlink_trace)),
                 multicast=n.multicast_download, outage_reference_hz=n.outage_reference_mhz * 1e6,
                 sites=cell_sites(n.cells, n.inter_site_m, n.layout), interference_load=n.interference_load,
                 interferer_path_loss=interferer_model(n.path_loss))


def interferer_model(path_loss: str) -> str:
    """Paths from other cells' sites: the family's NLOS model (they rarely have a line of sight); the model
    itself where it has no family."""
    family = path_loss.split("_")[0]
    return f"{family}_nlos" if family in MIXED_FAMILIES else path_loss


# --- the server's rule and what a session costs ------------------------------------------------------


def check_strategy(scenario: Scenario, strategy: Strategy, layout: AdapterLayout) -> None:
    """What only the model's adapter layout can tell, asked of the strategy: does it share anything at all, can a
    round ever bring it enough updates, does it work with the codec?"""
    shared, _, _ = strategy.groups.masks(layout)
    setting = RunSetting(compression=scenario.strategy.compression.name, min_reports=scenario.run.min_reports,
                         multicast_download=scenario.network.multicast_download, shared_entries=int(shared.sum()))
    for field, reason in strategy.objections(setting):
        raise ScenarioError(f"{field}: {reason}")


def session_cost(scenario: Scenario, arch: Architecture, layout: AdapterLayout, strategy: Strategy,
                 ranks: np.ndarray, codec) -> SessionCost:
    """FLOPs and bytes of one session, bytes per device (ranks differ). A device downloads the shared
    entries of the global adapter as float32 and uploads its update of them through the codec, both
    truncated to its rank, for the emulated architecture; protocols with extra messages (secure
    aggregation) add theirs."""
    t = scenario.training
    tokens = t.local_steps * t.batch_size * t.seq_len
    shared, _, _ = strategy.groups.masks(layout)
    lora, timed = scenario.model.lora, timed_modules(scenario)
    values = np.unique(ranks)
    down, up = np.zeros(len(values), np.int64), np.zeros(len(values), np.int64)
    for i, rank in enumerate(values):
        if rank > 0:
            n = emulated_values(arch, layout, shared, int(rank), lora.bottleneck, timed)
            down[i], up[i] = 4 * n, codec.encoded_bytes(n)
    extra_up, extra_down = strategy.extra_bytes(scenario.run.selected)
    where = np.searchsorted(values, ranks)
    full = 4 * emulated_values(arch, layout, shared, lora.r, lora.bottleneck, timed)
    return SessionCost(arch.training_flops_per_token(t.seq_len) * tokens, down[where] + extra_down,
                       up[where] + extra_up, full + extra_down)
