"""The scenario file, as typed and validated sections. Every field states its unit and why its default.

A scenario is parsed once, at the edge; everything past `load_scenario` sees only these models. Unknown
keys are errors (a typo must not silently fall back to a default), and so are values that cannot work.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aggregation.base import Strategy
from aggregation.compression import CODECS, Codec
from aggregation.registry import STRATEGIES, Registry, RegistryError
from aggregation.screening import DEFAULT_NORM_FACTOR
from fleet.attacks import ATTACKS
from fleet.architectures import PROJECTIONS, get_architecture
from fleet.availability import build_availability
from fleet.devices import CATALOG, device_class
from fleet.model_files import BUILTIN
from fleet.selection import SELECTORS
from network_models import FADING_MODELS, PATH_LOSS_MODELS, SHADOWING_SIGMA_DB, load_trace


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def typed_config(registry: Registry, name: str, params: dict[str, Any], label: str) -> Any:
    """The registered config of `name` from a section's values, its own checks run; a bad value's message
    names the parameter, prefixed with what it belongs to (`strategy 'fedbuff': buffer_size: ...`)."""
    try:
        return registry.config(name, **params)
    except RegistryError:
        raise  # the message already says which name or parameter
    except (TypeError, ValueError) as err:
        raise ValueError(f"{label} {name!r}: {err}") from None


class DeviceMix(Section):
    name: str = Field(description="device class from the catalog in fleet/devices.py")
    fraction: float = Field(gt=0, le=1, description="share of the fleet; fractions are normalised to sum 1")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="class parameters to replace, e.g. {peak_tflops: [1, 2], failures_per_hour: 0.5}",
    )

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in CATALOG:
            raise ValueError(f"unknown device class {v!r}; known: {', '.join(CATALOG)}")
        return v

    @model_validator(mode="after")
    def _overrides_apply(self) -> "DeviceMix":
        try:
            spec = device_class(self.name, self.overrides)
            build_availability(spec.availability, seed=0, n_devices=1)
        except (TypeError, ValueError) as err:
            raise ValueError(f"overrides of {self.name}: {err}") from None
        return self


class AttackSection(Section):
    fraction: float = Field(0.0, ge=0, lt=1, description="share of the fleet that attacks")
    kind: Literal[ATTACKS] = Field(
        "sign_flip",
        description="sign_flip: sends -scale x its update; scale: scale x its update; gaussian: adds "
        "N(0, noise_std^2) per entry; poison_data: trains on random tokens",
    )
    scale: float = Field(1.0, gt=0, description="magnitude for sign_flip and scale")
    noise_std: float = Field(0.01, ge=0, description="per-entry noise for gaussian")


class FleetSection(Section):
    size: int = Field(1000, ge=1, le=10_000_000, description="number of devices")
    classes: list[DeviceMix] = Field(
        default_factory=lambda: [
            DeviceMix(name="flagship_phone", fraction=0.3),
            DeviceMix(name="low_end_phone", fraction=0.5),
            DeviceMix(name="iot_gateway", fraction=0.2),
        ],
        min_length=1,
        description="device classes and their shares",
    )
    initial_charge: tuple[float, float] = Field(
        (0.3, 1.0), description="range of battery charge at start, as fractions of capacity"
    )
    min_charge: float = Field(
        0.3, ge=0, le=1, description="devices below this charge fraction are not invited (battery saver)"
    )
    cutoff_charge: float = Field(
        0.1, ge=0, le=1, description="a session stops when the battery falls to this fraction of capacity"
    )
    only_while_charging: bool = Field(False, description="invite battery devices only while they are plugged in")
    attack: AttackSection = Field(default_factory=lambda: AttackSection(), description="adversarial devices")

    @field_validator("classes")
    @classmethod
    def _distinct(cls, v: list[DeviceMix]) -> list[DeviceMix]:
        names = [m.name for m in v]
        if len(set(names)) != len(names):
            raise ValueError("each device class may appear once")
        return v

    @field_validator("initial_charge")
    @classmethod
    def _charge_range(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= v[0] <= v[1] <= 1:
            raise ValueError("must be [low, high] with 0 <= low <= high <= 1")
        return v

    @model_validator(mode="after")
    def _invited_above_cutoff(self) -> "FleetSection":
        if self.min_charge < self.cutoff_charge:
            raise ValueError(f"min_charge ({self.min_charge:g}) is below cutoff_charge ({self.cutoff_charge:g}): a "
                             "device invited there would stop at once; raise min_charge or lower cutoff_charge")
        return self


class TraceSpec(Section):
    path: str = Field(description="trace file; relative to the current folder")
    format: Literal["mahimahi", "two_column"] = Field(
        description="mahimahi: one line per 1500-byte delivery (ms); two_column: 'time_s Mbps' lines"
    )

    @model_validator(mode="after")
    def _parses(self) -> "TraceSpec":
        if not Path(self.path).is_file():
            raise ValueError(f"no such file: {self.path}")
        load_trace(self.path, self.format)  # a malformed file names its line
        return self


class NetworkSection(Section):
    cells: int = Field(10, ge=1, description="radio cells (base stations)")
    layout: Literal["hex", "grid"] = Field("hex", description="how the sites are laid out")
    inter_site_m: float = Field(500.0, gt=0, description="distance between neighbouring sites (urban macro: 500 m)")
    cell_radius_m: float = Field(300.0, ge=50, le=20_000, description="devices lie in a disc of this radius")
    carrier_ghz: float = Field(3.5, gt=0.4, le=100, description="carrier frequency (5G mid band)")
    path_loss: Literal[PATH_LOSS_MODELS] = Field(
        "uma", description="path loss model (3GPP TR 38.901): uma, umi, rma draw each device's line of sight by "
        "its distance (Table 7.4.2-1); *_los or *_nlos force one for every device; free_space, log_distance")
    shadowing_db: float | None = Field(
        None, ge=0, description="log-normal shadowing sigma; None: the path loss model's own (UMa: 4 dB LOS, "
        "6 dB NLOS)"
    )
    interference_load: float = Field(
        0.5, ge=0, le=1, description="inter-cell interference (frequency reuse 1): the share of time a neighbouring "
        "cell transmits on the same band; rates use SINR. 0 switches interference off, 1 is the full-buffer worst "
        "case")
    fading: Literal[FADING_MODELS] = Field("rayleigh", description="block fading, drawn per transfer")
    rician_k_db: float = Field(9.0, ge=-30, le=40, description="Rician K-factor when fading is 'rician'")
    sharing: Literal["ofdma", "tdma"] = Field("ofdma", description="how concurrent transfers in a cell share it")
    uplink_mhz: float = Field(20.0, gt=0, description="uplink band of one cell, shared by its uploaders")
    downlink_mhz: float = Field(20.0, gt=0, description="downlink band of one cell, shared by its downloaders")
    bs_power_dbm: float = Field(46.0, ge=0, le=80, description="base station transmit power (macro cell: 46 dBm; "
                                "80 dBm, 100 kW, is beyond any base station)")
    noise_figure_db: float = Field(7.0, ge=0, le=30, description="receiver noise figure (5-9 dB typical)")
    outage_snr_db: float = Field(
        -10.0, description="a transfer whose SNR over network.outage_reference_mhz is below this cannot start "
        "(link outage)"
    )
    outage_reference_mhz: float = Field(
        20.0, gt=0, description="width over which the outage test judges SNR: coverage is a link budget, so "
        "reserving more band must not put more devices out of reach"
    )
    multicast_download: bool = Field(
        False, description="send the global adapter once per cell (at the weakest invitee's rate), not per device"
    )
    backhaul_mbps: float = Field(1000.0, gt=0, description="cell-to-server backhaul rate")
    backhaul_latency_ms: float = Field(5.0, ge=0, description="cell-to-server one-way latency")

    uplink_trace: TraceSpec | None = Field(None, description="replay a throughput trace as every device's uplink")
    downlink_trace: TraceSpec | None = Field(None, description="replay a throughput trace as every downlink")

    def shadowing_sigma(self) -> float:
        """The largest sigma a device can have (a mixed family's is its NLOS one)."""
        return SHADOWING_SIGMA_DB[self.path_loss] if self.shadowing_db is None else self.shadowing_db


class LoraSection(Section):
    r: int = Field(8, ge=1, le=1024, description="LoRA rank")
    alpha: float = Field(16.0, gt=0, description="LoRA scale numerator: dW = (alpha / r) B A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] | None = Field(
        None,
        description="names of the decoder blocks' linear layers that get adapters, as the model calls them (Llama, "
        "Qwen2: q_proj ... down_proj; GPT-2: c_attn, c_proj, c_fc; GPT-NeoX: query_key_value, ...), checked "
        "against the model before the run. Left out: for the built-in model every projection of its blocks, for "
        "any other PEFT's default for its model type",
    )
    bottleneck: int = Field(
        0, ge=0, le=4096,
        description="width of a bottleneck adapter after each block's MLP (PWFF's shared part); 0: none",
    )
    ranks: dict[str, int] = Field(
        default_factory=dict,
        description="LoRA rank per device class (at most r; others train at r), for heterogeneous-rank "
        "strategies (hetlora, flexlora, flora); memory_policy may lower them further",
    )

    @field_validator("target_modules")
    @classmethod
    def _module_names(cls, v: list[str] | None) -> list[str] | None:
        # Only the spelling can be judged here; scenarios/checks.py holds the names against the model's layers.
        if v is None:
            return v
        if not v:
            raise ValueError("give at least one module name, or leave the field out for the model's default")
        odd = [name for name in v if not name.isidentifier()]
        if odd:
            raise ValueError(f"{odd[0]!r} is not a module name: give the last part of a layer's name, as PEFT "
                             "matches it (q_proj, not model.layers.0.self_attn.q_proj)")
        return v

    @model_validator(mode="after")
    def _ranks_within_r(self) -> "LoraSection":
        for name, rank in self.ranks.items():
            if name not in CATALOG:
                raise ValueError(f"ranks: unknown device class {name!r}; known: {', '.join(CATALOG)}")
            if not 1 <= rank <= self.r:
                raise ValueError(f"ranks.{name}: must be between 1 and r ({self.r}), got {rank}")
        return self


class ModelSection(Section):
    path: str = Field(
        "builtin",
        description="'builtin' (the tiny Llama shipped in fleet/base_model), a local Hugging Face model folder, "
        "or a hub id",
    )
    lora: LoraSection = Field(default_factory=LoraSection)
    emulate: str | None = Field(
        None,
        description="architecture whose timing, memory and bytes the clock uses (fleet/architectures.py: "
        "smollm2-135m, qwen2.5-0.5b, llama-3.2-1b); None: the trained model itself",
    )
    weight_dtype: Literal["bf16", "int8", "nf4"] = Field("bf16", description="frozen base weights on the device")
    memory_policy: Literal["exclude", "shrink_rank", "ignore"] = Field(
        "exclude",
        description="devices whose memory cannot hold LoRA training at model.lora.r: never invited (exclude), "
        "given the largest rank r/2, r/4, ... that fits (shrink_rank; zero-padded updates), or ignored",
    )

    @model_validator(mode="before")
    @classmethod
    def _builtin_targets(cls, data: Any) -> Any:
        """The built-in model's default target modules need no file read: every projection of its blocks."""
        if not isinstance(data, dict) or data.get("path", BUILTIN) != BUILTIN:
            return data
        lora = data.get("lora") or {}
        if isinstance(lora, LoraSection) and lora.target_modules is None:
            return {**data, "lora": lora.model_copy(update={"target_modules": list(PROJECTIONS)})}
        if isinstance(lora, dict) and lora.get("target_modules") is None:
            return {**data, "lora": {**lora, "target_modules": list(PROJECTIONS)}}
        return data

    @field_validator("emulate")
    @classmethod
    def _known_architecture(cls, v: str | None) -> str | None:
        if v is not None:
            get_architecture(v)
        return v


class CellSiteSection(Section):
    """Cell-site operations logs (fleet/cellsite.py, docs/cellsite_logs.md), generated from the scenario's
    seed: one data client per site, which trains on the site's past and holds out its last `test_days` days
    (in time order); a site's model then scores windows of those days as a fault detector."""

    sites: int = Field(1000, ge=2, le=100_000, description="cell sites, one data client each; give the fleet as "
                       "many devices so that each site has its own edge server")
    days: int = Field(3, ge=2, le=60, description="days of log per site: 3 at 15-minute periods is about 86,000 "
                      "tokens a site with the built-in tokenizer")
    period_min: int = Field(15, ge=1, le=1440, description="KPI reporting period (minutes); must divide a day")
    fault_rate_per_day: float = Field(0.15, ge=0, le=24, description="faults per site per day of fault-free time")
    test_days: int = Field(1, ge=1, description="last days of each site held out for testing: the model trains on "
                           "the past and detects in the future")
    window_lines: int = Field(1, ge=1, le=64, description="log lines per scored window; a KPI line is about 99 "
                              "tokens with the built-in tokenizer, whose context is 256 tokens: 1 or 2")
    eval_sites: int = Field(16, ge=1, description="sites whose fault detection is measured: a seeded uniform "
                            "sample of the sites whose held-out days have both fault and normal windows (AUROC is "
                            "undefined for the others)")
    windows_per_site: int = Field(32, ge=2, description="windows scored per evaluated site, up to half of them "
                                  "fault windows (sampled, seeded), the rest normal; AUROC does not depend on the "
                                  "mix, and 16 x 32 windows of one line take about a second on two workers")
    local_sessions: int = Field(1, ge=1, description="sessions of training.local_steps that each evaluated site "
                                "trains alone on its own past after the run, once from the initial adapter "
                                "(local-only) and once from its own final adapter (same batches); 1: the compute a "
                                "site spends each time it takes part")
    target_auroc: float | None = Field(None, gt=0.5, le=1, description="detection AUROC that 'time to detection "
                                       "target' is measured to; None: halfway from the base model's to the highest "
                                       "reached")

    @model_validator(mode="after")
    def _consistent(self) -> "CellSiteSection":
        if self.test_days >= self.days:
            raise ValueError(f"test_days ({self.test_days}) must be below days ({self.days}): a site needs a past "
                             "to train on")
        if 1440 % self.period_min:
            raise ValueError(f"period_min must divide a day (1440 minutes), got {self.period_min}")
        return self


GENERATED = ("cellsite", "assistant")  # data sources fedfleet generates, each configured by its own section


class AssistantSection(Section):
    """Phone-assistant transcripts (fleet/assistant.py), generated from the scenario's seed: one data client per
    device owner, each with their own name, contacts, habits, phrasing and assistant tone."""

    owners: int = Field(1000, ge=2, le=1_000_000, description="device owners, one data client each")
    exchanges: int = Field(80, ge=2, le=10_000, description="request-and-answer exchanges per owner, about 20 "
                           "tokens each with the built-in tokenizer; data.test_fraction of them are held out")


class DataSection(Section):
    source: Literal["shakespeare", "jsonl", "cellsite", "assistant"] = Field(
        "shakespeare", description="where client text comes from: Shakespeare's roles, a JSONL file, generated "
        "cell-site logs (data.cellsite) or generated phone-assistant transcripts (data.assistant)")
    path: str | None = Field(None, description="the JSONL file when source is 'jsonl'")
    public_plays: list[str] | None = Field(
        None, description="plays kept out of every client (default: the six the built-in model was trained on)"
    )
    min_lines: int = Field(16, ge=2, description="a client needs at least this many lines of text")
    test_fraction: float = Field(0.2, gt=0, lt=1, description="share of each client's speeches held out")
    eval_windows: int = Field(
        256, ge=1, description="held-out windows (one per client, cycling) on which the global loss is measured"
    )

    cellsite: CellSiteSection | None = Field(
        None, description="the cell-site logs when source is 'cellsite' (every field defaults)")
    assistant: AssistantSection | None = Field(
        None, description="the transcripts when source is 'assistant' (every field defaults)")

    @model_validator(mode="before")
    @classmethod
    def _generated_defaults(cls, data: Any) -> Any:
        """`source: cellsite` or `source: assistant` alone gets the default generator, written out in the
        resolved scenario."""
        if isinstance(data, dict) and data.get("source") in GENERATED and data.get(data["source"]) is None:
            return {**data, data["source"]: {}}
        return data

    @model_validator(mode="after")
    def _path_for_jsonl(self) -> "DataSection":
        if self.source == "jsonl" and not self.path:
            raise ValueError("data.path is required when data.source is 'jsonl'")
        for generated in GENERATED:
            if self.source != generated and getattr(self, generated) is not None:
                raise ValueError(f"data.{generated} applies to source {generated!r} only, not {self.source!r}")
        return self


class TrainingSection(Section):
    local_steps: int = Field(8, ge=1, description="optimiser steps per client session")
    batch_size: int = Field(16, ge=1, description="sequences per step")
    seq_len: int = Field(64, ge=8, description="tokens per sequence")
    lr: float = Field(1e-3, gt=0, description="client AdamW learning rate")
    local_time_budget_s: float | None = Field(
        None, gt=0, description="heterogeneous local work (FedNova, FedProx): each device trains the steps that fit "
        "in this many simulated seconds at its own speed, at least 1 and at most local_steps; None: every device "
        "trains local_steps")
    weight_decay: float = Field(0.0, ge=0)


class CompressionSection(Section):
    """`name` picks a codec from aggregation/compression.py; the other fields are parameters of the codecs that
    take them (the codec checks them)."""

    name: Literal[tuple(CODECS.names())] = Field(
        "none", description="upload codec: float32, top-k with error feedback, 8- or 4-bit quantisation"
    )
    fraction: float = Field(0.01, description="top-k: share of the entries sent, in (0, 1]")

    @model_validator(mode="after")
    def _valid(self) -> "CompressionSection":
        typed_config(CODECS, self.name, self.params(), "compression")
        return self

    def params(self) -> dict[str, Any]:
        """The section's values for the parameters the named codec has."""
        return {key: getattr(self, key) for key in CODECS.parameters(self.name) if key in type(self).model_fields}

    def build(self) -> Codec:
        return CODECS.build(self.name, **self.params())


class StrategySection(BaseModel):
    """`name` picks a registered strategy; every other key is one of its parameters, except `personal`,
    `frozen` and `compression`, which apply to any strategy."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str = Field("fedavg", description="a strategy from aggregation/ (the table in docs/strategies.md)")
    personal: list[str] | None = Field(
        None, description="regular expressions of parameter names kept on each device (default: the preset's)"
    )
    frozen: list[str] | None = Field(
        None, description="regular expressions of parameter names never trained (default: the preset's)"
    )
    compression: CompressionSection = Field(default_factory=CompressionSection)

    @model_validator(mode="after")
    def _valid(self) -> "StrategySection":
        typed_config(STRATEGIES, self.name, self.params(), "strategy")
        return self

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def build(self) -> Strategy:
        """A fresh strategy, its preset's parameter groups replaced by `personal` and `frozen` where given."""
        strategy = STRATEGIES.build(self.name, **self.params())
        strategy.groups = strategy.groups.replaced(self.personal, self.frozen)
        return strategy


class SelectionSection(BaseModel):
    """`name` picks a policy from fleet/selection.py; every other key is one of its parameters."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: Literal[tuple(SELECTORS.names())] = Field("uniform", description="how invitees are chosen")

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _valid(self) -> "SelectionSection":
        typed_config(SELECTORS, self.name, self.params(), "selection")
        return self

    def build(self):
        """The policy (fleet/selection.py), which is its own config."""
        return SELECTORS.build(self.name, **self.params())


class RunSection(Section):
    mode: Literal["train", "systems"] = Field(
        "train", description="train: real LoRA training; systems: timing, bytes and energy only (no training)"
    )
    rounds: int = Field(25, ge=1, description="server versions to produce")
    clients_per_round: int = Field(10, ge=1, description="K, the reports a synchronous round waits for")
    over_selection: float = Field(
        1.3, ge=1, le=5, description="select this multiple of K and keep the first K (Bonawitz et al. 2019)"
    )
    policy: Literal["deadline", "k_fastest"] = Field(
        "deadline",
        description="deadline: the first K reports before the deadline; k_fastest (FedScale): the first K, no deadline",
    )
    selection: SelectionSection = Field(default_factory=SelectionSection)
    engine: Literal["auto", "events", "fast"] = Field(
        "auto", description="the clock of a systems-only run. events: one SimPy process per session, the reference; "
        "fast: every session's events in one compiled loop (fleet/fast_clock.py), the same sessions to float "
        "rounding, tens of times faster; auto: fast in systems mode, events when training (the fast clock trains "
        "nothing)",
    )
    deadline_s: float = Field(60.0, gt=0, description="a round closes at this simulated time after it opens")
    min_reports: int = Field(1, ge=1, description="fewer reports than this by the deadline abandon the round")
    eval_every: int = Field(1, ge=1, description="measure held-out loss every this many server versions")
    checkpoint_every: int = Field(
        5, ge=0, description="write a checkpoint every this many rounds (0: never); `fedfleet run --resume RUN_DIR` "
        "goes on from the last one",
    )
    reject_norm_factor: float | None = Field(
        DEFAULT_NORM_FACTOR, gt=1,
        description="an update whose L2 norm is above this multiple of the median norm of the updates aggregated "
        "with it is rejected, never aggregated (needs 3 or more finite updates to judge); null: off. Updates with "
        "NaN or Inf entries are always rejected. 10: honest deltas of one cohort differ by a few times at most",
    )

    @property
    def selected(self) -> int:
        """Devices invited to each round: ceil(K x over_selection)."""
        return math.ceil(self.clients_per_round * self.over_selection - 1e-9)

    @model_validator(mode="after")
    def _consistent(self) -> "RunSection":
        if self.min_reports > self.clients_per_round:
            raise ValueError("min_reports cannot exceed clients_per_round")
        if self.engine == "fast" and self.mode == "train":
            raise ValueError("engine: the fast clock trains nothing, it runs systems-only mode (mode: systems); "
                             "use engine: events or auto to train")
        return self


class RuntimeSection(Section):
    workers: int = Field(2, ge=1, le=4096, description="Ray actors that train clients")
    threads_per_worker: int = Field(1, ge=1, le=256, description="torch threads (and Ray CPUs) per actor")
    group_size: int | Literal["auto"] = Field(
        1, description="clients a worker trains in one pass over the base model (fleet/grouped.py), 1 to 1024; 1: "
        "one at a time. Groups are cut by the schedule, so results do not depend on the number of workers; a "
        "client's update in a group equals its update alone to float rounding. 'auto': as many as "
        "worker_memory_gb holds by an estimate of one client's training memory on the trained model (at most "
        "run.clients_per_round), computed from the scenario alone, so the same on every host; summary.json says "
        "what it came to")
    worker_memory_gb: float = Field(
        4.0, gt=0, le=4096, description="memory (GB, decimal) one worker's training may take, which "
        "group_size: auto fills: host RAM on CPU, the worker's share of its GPU's memory with gpus_per_worker above "
        "0. 4 GB is a CPU worker's share of a 16 GB machine running a few of them; on a GPU give the card's memory "
        "times gpus_per_worker, less a margin. Only group_size: auto reads it")
    gpus_per_worker: float = Field(
        0.0, ge=0, le=64, description="GPUs each worker holds through Ray's resource accounting (a fraction "
        "shares one card between workers: 0.25 puts four on it); above 0 its trainer runs on CUDA. 0: CPU only, "
        "the default and the path tested everywhere. A run stops at once if the Ray cluster has fewer GPUs than "
        "one worker needs")
    train_dtype: Literal["fp32", "bf16"] = Field(
        "fp32", description="arithmetic of local training's matmuls: bf16 runs the frozen base's (and the "
        "adapters') matmuls in bfloat16 under torch.autocast, on CPU or CUDA, while the adapters, their optimiser "
        "state and every update stay float32; held-out evaluation stays float32 either way. fp32: exact float32, "
        "the default; a bf16 update lies a few percent (relative L2) from the float32 one (docs/performance.md)")
    address: str | None = Field(None, description="Ray cluster to attach to ('auto' or host:port); None: a new "
                                "local Ray, whatever RAY_ADDRESS says")
    connect_timeout_s: float = Field(20.0, gt=0, le=600, description="how long attaching to `address` may wait for "
                                     "the cluster to answer before the run stops with the reason")
    dashboard: bool = Field(False, description="start Ray's dashboard with a local Ray (off: one web server "
                            "fewer, and nothing to reach from outside)")
    loopback_only: bool = Field(True, description="a local Ray listens on 127.0.0.1 only (its dashboard too); "
                                "false: on every interface, as Ray does by default")

    @field_validator("group_size", mode="before")
    @classmethod
    def _group_size_word(cls, v: Any) -> Any:
        if isinstance(v, str) and v != "auto":
            raise ValueError(f"a number of clients, or 'auto'; got {v!r}")
        return v

    @field_validator("group_size")
    @classmethod
    def _group_size(cls, v: int | str) -> int | str:
        from fleet.grouping import MAX_GROUP_SIZE

        if v != "auto" and not 1 <= v <= MAX_GROUP_SIZE:
            raise ValueError(f"a group holds 1 to {MAX_GROUP_SIZE} clients, or 'auto'; got {v}")
        return v

    @field_validator("gpus_per_worker")
    @classmethod
    def _gpu_share(cls, v: float) -> float:
        # Ray schedules fractions of one GPU, or whole GPUs: 1.5 would be refused when a worker starts
        if v > 1 and not float(v).is_integer():
            raise ValueError(f"a worker holds a fraction of one GPU or a whole number of GPUs, not {v:g}")
        return v


class OutputSection(Section):
    dir: str = Field("runs", description="run folders are created under this folder")
    report: bool = Field(True, description="write report.html at the end")
    target_loss: float | None = Field(
        None, gt=0, description="held-out loss that 'time, bytes and energy to target' are measured to; None: "
        "halfway from the base model's loss to the lowest reached"
    )


class PlanSection(Section):
    """`fedfleet plan`: the uplink bandwidth per cell that keeps synchronous rounds fast enough, found by
    systems-only probes of this scenario (no training)."""

    round_p95_target_s: float = Field(
        300.0, gt=0,
        description="simulated seconds the 95th percentile of the round duration (time to the K-th report) must "
        "not exceed; 300 s lets about a hundred rounds run in a 9-hour overnight charging window",
    )
    uplink_mhz_min: float = Field(1.0, gt=0, description="lowest uplink band per cell (MHz) the search tries")
    uplink_mhz_max: float = Field(
        400.0, gt=0, description="highest uplink band per cell (MHz) the search tries; 400 MHz is the widest 5G "
        "NR carrier"
    )
    tolerance: float = Field(
        0.05, gt=0, description="relative precision of the answer: the search stops when its bracket is "
        "narrower than a factor 1 + tolerance"
    )
    rounds: int = Field(
        10, ge=1, description="synchronous rounds emulated per probe; with n rounds a single round short of K "
        "reports lifts p95 to unbounded unless n >= 21"
    )
    horizon_h: int | None = Field(
        None, ge=1, le=168,
        description="whole simulated hours of rounds, back to back from t = 0 (midnight of the reference time "
        "zone), under the classes' daily availability and charging, at the band the plan recommends (the "
        "scenario's network.uplink_mhz when none meets the target); the plan then reports round duration, "
        "participation and cell load per hour and the busy hour. 24: a day. At most 168 (a week: every daily "
        "pattern has repeated by then). None: no horizon",
    )

    @model_validator(mode="after")
    def _range(self) -> "PlanSection":
        if self.uplink_mhz_min >= self.uplink_mhz_max:
            raise ValueError(f"uplink_mhz_min ({self.uplink_mhz_min}) must be below uplink_mhz_max "
                             f"({self.uplink_mhz_max})")
        return self


class Scenario(Section):
    name: str = Field("scenario", pattern=r"^[A-Za-z0-9_.-]+$", description="used in the run folder's name")
    seed: int = Field(0, ge=0, description="every random stream of the run derives from it")
    fleet: FleetSection = Field(default_factory=FleetSection)
    network: NetworkSection = Field(default_factory=NetworkSection)
    model: ModelSection = Field(default_factory=ModelSection)
    data: DataSection = Field(default_factory=DataSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    strategy: StrategySection = Field(default_factory=StrategySection)
    run: RunSection = Field(default_factory=RunSection)
    runtime: RuntimeSection = Field(default_factory=RuntimeSection)
    output: OutputSection = Field(default_factory=OutputSection)
    plan: PlanSection = Field(default_factory=PlanSection)

    @model_validator(mode="after")
    def _fits(self) -> "Scenario":
        if self.run.selected > self.fleet.size:
            raise ValueError(
                f"run.clients_per_round x run.over_selection selects {self.run.selected} devices, "
                f"more than fleet.size ({self.fleet.size})"
            )
        return self
