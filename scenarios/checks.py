"""Can this scenario run at all? Checks made before any work starts (tokenising, Ray, actors), each naming the
field to change and the reason.

The schema checks each section on its own; these need several at once, and the files on disk:
- every file the scenario names exists and can be read (data, link traces, availability traces, the model);
- the model is a decoder-only causal LM whose config transformers reads, model.lora.target_modules name
  linear layers of its decoder blocks (and, under model.emulate, have counterparts in the emulated
  architecture), and what bottleneck adapters and training.seq_len need of it is there;
- the model fits some device class of the fleet at the smallest rank model.memory_policy allows;
- a synchronous round invites no more devices than there are devices whose class can hold the model;
- a synchronous round's deadline leaves time for at least one session: the fastest class's local work plus
  the adapter's download and upload at the best rate any link can have.
Each is a bound from the device classes' ranges, not from the sampled fleet: a scenario it refuses can never
work, whatever the seed. Problems are reported together, one line each.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from aggregation.base import RunSetting, Strategy
from fleet.architectures import (
    Architecture,
    causal_lm_problem,
    decoder_blocks,
    emulated_layers,
    get_architecture,
    meta_model,
    read_architecture,
)
from fleet.base_model import quiet_transformers
from fleet.devices import DeviceClass, class_counts, device_class
from fleet.memory import MemoryEstimate, lora_param_count, lora_training_memory_bytes
from fleet.model_files import BUILTIN, config_file, looks_local, model_config, model_folder_problem, unreadable
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
        problems = model_problems(scenario)
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


# --- the trained model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainedModel:
    """What the checks and the clock need of the model a run trains, read from its config alone."""

    path: str  # model.path
    arch: Architecture
    model_type: str
    context: int | None  # positions its learned position table holds (GPT-2, OPT); None: no such table
    blocks_have_mlp: bool  # the hook that bottleneck adapters need


def trained_model(path: str) -> TrainedModel:
    """The model at `path` (model.path), read once per version of its config; ValueError says why it cannot be
    used."""
    if path == BUILTIN:
        return _builtin_model()
    file = config_file(path)
    if file is None:
        raise ValueError(f"{path} has no config.json")
    return _read_model(str(file), file.stat().st_mtime_ns, path)


@functools.cache
def _builtin_model() -> TrainedModel:
    """The built-in model is a Llama-style block (fleet/base_model.py) whose config's numbers describe it
    exactly (tests/fleet/test_architectures.py): read without transformers, a scenario on it is checked
    before anything heavy loads. Rotary positions: no table to outgrow."""
    config = json.loads(config_file(BUILTIN).read_text())
    return TrainedModel(BUILTIN, Architecture.from_hf_config(config, BUILTIN), config["model_type"], None, True)


@functools.lru_cache(maxsize=16)
def _read_model(file: str, _version: int, path: str) -> TrainedModel:
    model = _meta_model(file)
    try:
        arch = read_architecture(model, path)
    except (ValueError, AttributeError, TypeError) as err:  # no stack of blocks, a width missing or at odds
        raise ValueError(f"cannot read the {model.config.model_type} model's blocks: {err}") from None
    blocks = decoder_blocks(model)
    in_blocks = {id(m) for m in blocks.modules()}
    positions = [m for m in model.modules() if isinstance(m, torch.nn.Embedding) and id(m) not in in_blocks
                 and m is not model.get_input_embeddings()]
    # Rotary models take longer sequences than they were trained on; a learned table has no row for them
    context = getattr(model.config, "max_position_embeddings", None) if positions else None
    return TrainedModel(path, arch, model.config.model_type, context,
                        all(isinstance(getattr(b, "mlp", None), torch.nn.Module) for b in blocks))


@functools.lru_cache(maxsize=4)
def _meta_model(file: str):
    """The causal LM a config.json describes, on the meta device; ValueError says why there is none."""
    quiet_transformers()
    try:
        config = model_config(file)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        raise ValueError(f"transformers cannot read the model's config ({file}): {err}") from None
    problem = causal_lm_problem(config)
    if problem:
        raise ValueError(problem)
    try:
        return meta_model(config)
    # transformers raises many kinds of errors on a config it cannot build; each is the reason to report
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError, NotImplementedError) as err:
        raise ValueError(f"cannot build the {config.model_type} model its config describes: {err}") from None


def module_kinds(model: TrainedModel) -> dict[str, str]:
    """The class of each module that is not a linear layer of the blocks, by its last name (lm_head, ln_1), for
    messages: only a wrong target asks, so only then is transformers loaded for the built-in model."""
    meta = _meta_model(str(config_file(model.path)))
    linear = set(model.arch.linear_names)
    return {name.rsplit(".", 1)[-1]: type(m).__name__ for name, m in meta.named_modules()
            if name and name.rsplit(".", 1)[-1] not in linear}


def target_modules(scenario: Scenario) -> tuple[str, ...]:
    """The trained model's layers that get adapters: model.lora.target_modules, or PEFT's default for the
    model's type (the built-in model's default is set by the schema)."""
    given = scenario.model.lora.target_modules
    if given is not None:
        return tuple(given)
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as PEFT_DEFAULTS

    model = trained_model(scenario.model.path)
    default = PEFT_DEFAULTS.get(model.model_type)
    if not default:
        raise ValueError(f"PEFT has no default for {model.model_type} models: name the layers to adapt (its "
                         f"blocks' linear layers: {', '.join(model.arch.linear_names)})")
    return tuple(default)


def timed_modules(scenario: Scenario) -> dict[str, tuple[str, ...]]:
    """Each target module of the trained model and the layers it stands for in what the clock times: itself,
    or under model.emulate its counterparts there (fleet.architectures.emulated_layers)."""
    targets = target_modules(scenario)
    if not scenario.model.emulate:
        return {name: (name,) for name in targets}
    trained = trained_model(scenario.model.path).arch
    return emulated_layers(trained, get_architecture(scenario.model.emulate), targets)


def model_problems(scenario: Scenario) -> list[Problem]:
    """What the model cannot do for this scenario: be read, adapt the target modules (or their counterparts in
    the emulated architecture), carry bottleneck adapters, take training.seq_len tokens."""
    try:
        model = trained_model(scenario.model.path)
    except ValueError as err:
        return [Problem("model.path", str(err))]
    problems = []
    try:
        targets = target_modules(scenario)
    except ValueError as err:
        problems.append(Problem("model.lora.target_modules", str(err)))
    else:
        problems += target_problems(model, targets)
    if not problems and scenario.model.emulate:
        try:
            timed_modules(scenario)
        except ValueError as err:
            problems.append(Problem("model.lora.target_modules", f"under model.emulate: {err}"))
    if scenario.model.lora.bottleneck and not model.blocks_have_mlp:
        problems.append(Problem("model.lora.bottleneck", (
            f"the decoder blocks of {model.model_type} models have no `mlp` module for a bottleneck adapter to "
            "follow; set it to 0")))
    if model.context is not None and scenario.training.seq_len > model.context:
        problems.append(Problem("training.seq_len", (
            f"{scenario.training.seq_len} tokens do not fit the {model.context} positions the model's position "
            "table holds (max_position_embeddings)")))
    return problems


def target_problems(model: TrainedModel, targets: tuple[str, ...]) -> list[Problem]:
    """Targets that are not linear layers of the model's decoder blocks, with what each is."""
    linear = model.arch.linear_names
    if all(name in linear for name in targets):
        return []
    kinds, reasons = module_kinds(model), []
    for name in targets:
        if name in kinds:
            reasons.append(f"{name!r} is not a linear layer of the decoder blocks (it is a {kinds[name]})")
        elif name not in linear:
            reasons.append(f"the model has no module {name!r}")
    return [Problem("model.lora.target_modules", f"{'; '.join(reasons)}; the {model.model_type} model's blocks "
                    f"have these linear layers: {', '.join(linear)}")]


# --- what the clock times ----------------------------------------------------------------------------


def target_architecture(scenario: Scenario) -> Architecture:
    """What the clock times: the emulated architecture, or the trained model itself."""
    if scenario.model.emulate:
        return get_architecture(scenario.model.emulate)
    return trained_model(scenario.model.path).arch


def memory_estimate(scenario: Scenario, arch: Architecture, rank: int | None = None) -> MemoryEstimate:
    """LoRA training of `arch` on a device, with the layers the clock times adapted."""
    t, lora = scenario.training, scenario.model.lora
    timed = [name for names in timed_modules(scenario).values() for name in names]
    return lora_training_memory_bytes(arch, rank or lora.r, timed, t.batch_size, t.seq_len,
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
    timed = [name for names in timed_modules(scenario).values() for name in names]
    values = lora_param_count(arch, min(f.rank for f in trainable), timed) if whole else 0
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
