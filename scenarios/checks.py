"""Can this scenario run at all? Checks made before any work starts (tokenising, Ray, actors), each naming the
field to change and the reason.

The schema checks each section on its own; these need several at once, and the files on disk:
- every file the scenario names exists and can be read (data, link traces, availability traces, the model);
- the model fits some device class of the fleet at the smallest rank model.memory_policy allows;
- a synchronous round invites no more devices than there are devices whose class can hold the model;
- a synchronous round's deadline leaves time for at least one session: the fastest class's local work plus
  the adapter's download and upload at the best rate any link can have.
Each is a bound from the device classes' ranges, not from the sampled fleet: a scenario it refuses can never
work, whatever the seed. Problems are reported together, one line each.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from aggregation.base import RunSetting, Strategy
from fleet.architectures import Architecture, get_architecture
from fleet.devices import DeviceClass, class_counts, device_class
from fleet.memory import MemoryEstimate, lora_param_count, lora_training_memory_bytes
from fleet.model_files import BUILTIN, config_file, looks_local, model_folder_problem, unreadable
from network_models import MIN_DISTANCE_M, load_trace, path_loss_db, shannon_rate_bps
from scenarios.errors import ScenarioError
from scenarios.schema import Scenario

# Shadowing and fading are unbounded draws; the best link is taken at +6 sigma of shadowing and +20 dB of
# fading gain, which a transfer exceeds with probability below 1e-9 (normal tail) and e^-100 (Rayleigh).
SHADOWING_SIGMAS = 6.0
FADING_GAIN_DB = 20.0


@dataclass(frozen=True)
class Problem:
    field: str
    reason: str


def check_scenario(scenario: Scenario, source: str = "scenario") -> None:
    """Raise a ScenarioError listing every problem found (files first: the others need the model's files)."""
    problems = file_problems(scenario)
    if not problems:
        problems = fleet_problems(scenario)
    if problems:
        lines = [f"{source}: {len(problems)} problem(s) found before the run"]
        lines += [f"  {p.field}: {p.reason}" for p in problems]
        raise ScenarioError("\n".join(lines))


# --- files -------------------------------------------------------------------------------------------


def named_files(scenario: Scenario) -> list[tuple[str, str]]:
    """(field, path) of every file the scenario names, the model folder aside."""
    files = []
    if scenario.data.source == "jsonl" and scenario.data.path:
        files.append(("data.path", scenario.data.path))
    for direction in ("uplink_trace", "downlink_trace"):
        trace = getattr(scenario.network, direction)
        if trace is not None:
            files.append((f"network.{direction}.path", trace.path))
    for i, mix in enumerate(scenario.fleet.classes):
        availability = mix.overrides.get("availability")
        if isinstance(availability, dict) and availability.get("kind") == "trace" and "path" in availability:
            files.append((f"fleet.classes.{i}.overrides.availability.path", str(availability["path"])))
    return files


def file_problems(scenario: Scenario) -> list[Problem]:
    problems = [Problem(field, problem) for field, path in named_files(scenario)
                if (problem := unreadable(Path(path).expanduser()))]
    model = scenario.model.path
    if model != BUILTIN and looks_local(model):
        problem = model_folder_problem(model)
        if problem:
            problems.append(Problem("model.path", problem))
    elif config_file(model) is None:
        problems.append(Problem("model.path", (
            f"{model!r} is neither a model folder on this machine nor a hub model in its Hugging Face cache; a run "
            "never downloads: save the model to a folder (save_pretrained) and give the folder")))
    return problems


# --- what the clock times ----------------------------------------------------------------------------


def target_architecture(scenario: Scenario) -> Architecture:
    """What the clock times: the emulated architecture, or the trained model itself."""
    if scenario.model.emulate:
        return get_architecture(scenario.model.emulate)
    config = json.loads(config_file(scenario.model.path).read_text())
    return Architecture.from_hf_config(config, name=scenario.model.path)


def memory_estimate(scenario: Scenario, arch: Architecture, rank: int | None = None) -> MemoryEstimate:
    t, lora = scenario.training, scenario.model.lora
    return lora_training_memory_bytes(arch, rank or lora.r, lora.target_modules, t.batch_size, t.seq_len,
                                      scenario.model.weight_dtype)


def no_device_fits(arch: Architecture, need_bytes: float, largest_gb: float) -> Problem:
    return Problem("model", f"LoRA training of {arch.name} needs {need_bytes / 1e9:.2f} GB, more than any device "
                   f"has (largest: {largest_gb:.1f} GB); lower training.batch_size or training.seq_len, quantise "
                   "(model.weight_dtype) or add larger devices")


# --- the fleet against the model, the cohort and the deadline -----------------------------------------


@dataclass(frozen=True)
class ClassFit:
    spec: DeviceClass
    devices: int
    rank: int  # the smallest rank the memory policy lets this class train at
    fits: bool  # can its largest device hold LoRA training at that rank?


def class_fits(scenario: Scenario, arch: Architecture) -> list[ClassFit]:
    lora, policy = scenario.model.lora, scenario.model.memory_policy
    mix = scenario.fleet.classes
    counts = class_counts([m.fraction for m in mix], scenario.fleet.size)
    out = []
    for m, n in zip(mix, counts):
        spec = device_class(m.name, m.overrides)
        rank = 1 if policy == "shrink_rank" else lora.ranks.get(m.name, lora.r)
        fits = policy == "ignore" or spec.memory_gb[1] * 1e9 >= memory_estimate(scenario, arch, rank).total_bytes
        out.append(ClassFit(spec, int(n), rank, fits))
    return out


def fleet_problems(scenario: Scenario) -> list[Problem]:
    arch = target_architecture(scenario)
    fits = class_fits(scenario, arch)
    trainable = [f for f in fits if f.fits and f.devices > 0]
    if not trainable:
        smallest = min(f.rank for f in fits)
        return [no_device_fits(arch, memory_estimate(scenario, arch, smallest).total_bytes,
                               max(f.spec.memory_gb[1] for f in fits))]
    strategy = scenario.strategy.build()
    # Only the network is judged here; the codec, the reports and the adapter's layout are judged when the run
    # is assembled (the layout needs the model).
    setting = RunSetting(multicast_download=scenario.network.multicast_download)
    problems = [Problem(field, reason) for field, reason in strategy.objections(setting)]
    if strategy.traits.asynchronous:  # no cohort to fill and no deadline to meet
        return problems
    r, can_train = scenario.run, sum(f.devices for f in trainable)
    if r.selected > can_train:
        problems.append(Problem("run.clients_per_round", (
            f"a round invites {r.selected} devices (run.clients_per_round x run.over_selection), more than the "
            f"{can_train} devices whose class can hold LoRA training of {arch.name}")))
    if r.policy == "deadline":
        shortest = shortest_session_s(scenario, arch, trainable, strategy)
        if math.isinf(shortest):
            problems.append(Problem("run.deadline_s", "no session can ever finish: even the best possible link "
                                    "carries nothing (check network.noise_figure_db, the powers and the traces)"))
        elif shortest > r.deadline_s:
            problems.append(Problem("run.deadline_s", (
                f"{r.deadline_s:g} s is shorter than any session can be: at least {shortest:.4g} s for the fastest "
                "device's local work and the adapter's download and upload on the best possible link")))
    return problems


def shortest_session_s(scenario: Scenario, arch: Architecture, trainable: list[ClassFit], strategy: Strategy) -> float:
    """A lower bound of any session's duration: local work on the fastest device (one step where stragglers
    may send partial work), plus download and upload of the smallest adapter on the best link and the
    backhaul's latency. Without the adapter's layout, strategies that keep or freeze parts of it, and
    codecs, make the transfers count as nothing but the backhaul latency."""
    t, net = scenario.training, scenario.network
    partial_work = strategy.configure(0, 0).partial_work  # the same for every client and version
    steps = 1 if partial_work or t.local_time_budget_s else t.local_steps
    fastest = max(f.spec.peak_tflops[1] * 1e12 * f.spec.utilisation for f in trainable)
    compute_s = arch.training_flops_per_token(t.seq_len) * steps * t.batch_size * t.seq_len / fastest
    whole = not strategy.groups.partial
    values = lora_param_count(arch, min(f.rank for f in trainable), scenario.model.lora.target_modules) if whole else 0
    codec = scenario.strategy.compression.build()
    down_bits, up_bits = 8.0 * 4 * values, 8.0 * codec.encoded_bytes(values) if values else 0.0
    tx_dbm = max(f.spec.tx_power_dbm for f in trainable)
    down_s = transfer_s(down_bits, best_rate_bps(scenario, net.downlink_mhz, net.bs_power_dbm, net.downlink_trace))
    up_s = transfer_s(up_bits, best_rate_bps(scenario, net.uplink_mhz, tx_dbm, net.uplink_trace))
    latency_s, backhaul_bps = net.backhaul_latency_ms / 1e3, net.backhaul_mbps * 1e6
    transfers = []
    if not all(f.spec.at_site for f in trainable):  # over the radio, then the cell's backhaul
        transfers.append(down_s + up_s + latency_s + up_bits / backhaul_bps)
    if any(f.spec.at_site for f in trainable):  # servers at the site: the backhaul both ways
        transfers.append(2 * latency_s + (down_bits + up_bits) / backhaul_bps)
    return compute_s + min(transfers)


def transfer_s(bits: float, rate_bps: float) -> float:
    """Seconds to send `bits`; infinite where the link carries nothing (the SNR underflows, a silent trace)."""
    if bits == 0:
        return 0.0
    return bits / rate_bps if rate_bps > 0 else float("inf")


def best_rate_bps(scenario: Scenario, band_mhz: float, tx_power_dbm: float, trace) -> float:
    """The fastest a link can carry: a trace's peak rate, or one device alone on the whole band at the
    closest distance, with shadowing and fading in its favour."""
    if trace is not None:
        return float(load_trace(trace.path, trace.format).rates_bps.max())
    net = scenario.network
    loss = float(path_loss_db(net.path_loss, MIN_DISTANCE_M, net.carrier_ghz, los=np.True_))
    loss -= SHADOWING_SIGMAS * net.shadowing_sigma() + FADING_GAIN_DB
    return float(shannon_rate_bps(band_mhz * 1e6, tx_power_dbm, np.float64(loss), net.noise_figure_db))
