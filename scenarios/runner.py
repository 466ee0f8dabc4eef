"""One run, composed: scenario in, run folder out.

Order matters: everything that can fail on bad input (the scenario, its files, the data) is done before
the run folder is created, so a mistake leaves nothing behind. Ray starts only after that.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from aggregation import AdapterLayout, ParameterGroups, Strategy, StrategyContext, build_strategy
from aggregation.compression import ErrorFeedback, build_codec
from analysis.detection import detection_summary, write_detection
from analysis.recorder import RunRecorder
from analysis.report import write_report
from fleet.architectures import Architecture
from fleet.base_model import load_base_model, load_tokenizer, resolve_model_path
from fleet.cellsite import CellSiteConfig, auroc, generate, split_site, windows_with_labels
from fleet.data import (
    DEFAULT_PUBLIC_PLAYS,
    DetectionWindows,
    FederatedData,
    PackedTokens,
    encode_words,
    jsonl_clients,
    shakespeare_clients,
    split_client,
)
from fleet.devices import Fleet, sample_fleet
from fleet.attacks import Attack
from fleet.clients import ClientSide
from fleet.emulator import Emulator, Radio, RoundRules, SessionCost
from fleet.memory import MemoryEstimate, lora_param_count
from fleet.pool import WorkerFaults, WorkerPool, ray_session
from fleet.rng import stream
from fleet.selection import build_selector
from fleet.payload import emulated_values
from fleet.trainer import (
    LoraSpec,
    TrainJob,
    TrainSettings,
    adapter_layout,
    get_flat,
    set_flat,
    windows,
    wrap_with_lora,
)
from network_models import MIXED_FAMILIES, cell_sites, load_trace
from scenarios.checks import check_scenario, memory_estimate, no_device_fits, target_architecture
from scenarios.errors import ScenarioError
from scenarios.schema import CellSiteSection, Scenario


ALONE_ROUND = -1  # the random streams of a site training alone after the run: no session has this round


@dataclass(frozen=True)
class RunOptions:
    """How to run, not what: never part of the scenario's identity."""

    out: Path | None = None
    resume: Path | None = None  # the folder of a stopped run, to go on from its last checkpoint
    progress: bool = True
    on_round: Callable[[dict], None] | None = None  # called with each rounds.parquet row as it is written


def lora_spec(scenario: Scenario) -> LoraSpec:
    lora = scenario.model.lora
    return LoraSpec(lora.r, lora.alpha, lora.dropout, tuple(lora.target_modules), lora.bottleneck)


def train_settings(scenario: Scenario) -> TrainSettings:
    t = scenario.training
    return TrainSettings(scenario.seed, t.batch_size, t.seq_len, t.lr, t.weight_decay)


def prepare_data(scenario: Scenario, tokenizer) -> FederatedData:
    d = scenario.data
    if d.source == "cellsite":
        return cellsite_data(d.cellsite, scenario.seed, tokenizer)
    if d.source == "shakespeare":
        clients = shakespeare_clients(list(d.public_plays or DEFAULT_PUBLIC_PLAYS), d.min_lines)
    else:
        clients = jsonl_clients(Path(d.path), d.min_lines)
    if not clients:
        raise ScenarioError(f"data: no client has {d.min_lines} lines or more (data.min_lines)")
    splits = [split_client(c, d.test_fraction, scenario.seed) for c in clients]
    train = tokenizer([s.train_text for s in splits])["input_ids"]
    test = tokenizer([s.test_text for s in splits])["input_ids"]
    train_packed = PackedTokens.pack(train)
    return FederatedData(
        client_ids=[s.client_id for s in splits],
        train=train_packed,
        test=PackedTokens.pack(test),
        num_samples=train_packed.lengths(),
    )


def cellsite_data(c: CellSiteSection, seed: int, tokenizer) -> FederatedData:
    """One data client per site, in time order: it trains on the site's past and holds out its last
    `test_days` days; labelled windows of those days, for a seeded sample of sites, are the detection test."""
    logs = generate(CellSiteConfig(sites=c.sites, days=c.days, period_min=c.period_min,
                                   fault_rate_per_day=c.fault_rate_per_day), seed)
    splits = [split_site(site, c.test_days) for site in logs.sites]
    train = PackedTokens.pack(encode_words(tokenizer, ["\n".join(past) + "\n" for past, _, _ in splits]))
    test = PackedTokens.pack(encode_words(tokenizer, ["\n".join(future) + "\n" for _, future, _ in splits]))
    windows = [windows_with_labels(future, labels, c.window_lines) for _, future, labels in splits]
    return FederatedData(client_ids=[site.site_id for site in logs.sites], train=train, test=test,
                         num_samples=train.lengths(), detection=detection_windows(windows, c, seed, tokenizer))


def detection_windows(windows: list[list[tuple[str, bool]]], c: CellSiteSection, seed: int,
                      tokenizer) -> DetectionWindows | None:
    """The windows each evaluated site's model scores: `c.eval_sites` sites drawn uniformly among those whose
    held-out days have both fault and normal windows, and of each site up to half of `c.windows_per_site`
    fault windows, the rest normal, drawn without replacement. None when no site has both."""
    faulty = [np.array([f for _, f in site], dtype=bool) for site in windows]
    eligible = [i for i, f in enumerate(faulty) if f.any() and not f.all()]
    if not eligible:
        return None
    sites = np.sort(stream(seed, "detection-sites").choice(eligible, min(c.eval_sites, len(eligible)), replace=False))
    picks = []
    for i in sites:
        rng, f = stream(seed, "detection-windows", int(i)), faulty[i]
        n_fault = min(int(f.sum()), c.windows_per_site // 2)
        n_normal = min(int((~f).sum()), c.windows_per_site - n_fault)
        picks.append(np.sort(np.concatenate([rng.choice(np.flatnonzero(f), n_fault, replace=False),
                                             rng.choice(np.flatnonzero(~f), n_normal, replace=False)])))
    texts = [windows[i][k][0] for i, pick in zip(sites, picks) for k in pick]
    return DetectionWindows(
        clients=sites,
        windows=PackedTokens.pack(encode_words(tokenizer, texts)),
        offsets=np.concatenate([[0], np.cumsum([len(p) for p in picks])]).astype(np.int64),
        faulty=np.concatenate([faulty[i][pick] for i, pick in zip(sites, picks)]),
    )


@functools.lru_cache(maxsize=1)
def _prepared_data(model_path: str, data_json: str, seed: int) -> FederatedData:
    scenario = Scenario.model_validate({"model": {"path": model_path}, "data": json.loads(data_json), "seed": seed})
    return prepare_data(scenario, load_tokenizer(model_path))


def client_data(scenario: Scenario) -> FederatedData:
    """The scenario's client data, tokenised once per process for runs that share model, data and seed
    (sweep trials, plan probes): tokenising takes seconds, and nothing downstream changes it."""
    return _prepared_data(scenario.model.path, scenario.data.model_dump_json(), scenario.seed)


def eval_windows(data: FederatedData, n: int, seq_len: int, seed: int) -> torch.Tensor:
    """n fixed held-out windows, one per client in a seeded order (cycling when n exceeds the clients).
    Clients whose held-out text is shorter than a window are skipped where possible: a window filled by
    repeating a short text would reward copying."""
    rng = stream(seed, "eval-windows")
    long_enough = np.flatnonzero(data.test.lengths() > seq_len)
    order = rng.permutation(long_enough if len(long_enough) else np.arange(len(data.test)))
    rows = [
        windows(data.test.get(int(order[i % len(order)])), rng.integers(0, 2**31, 1), seq_len + 1)
        for i in range(n)
    ]
    return torch.cat(rows)


class DetectionProbe:
    """Fault detection of each evaluated version (an emulator probe): every evaluated site's windows scored on
    the workers with the global adapter and with the adapter of the site's device (its lowest-id device: the
    global adapter with the device's personal part), AUROC per site against the window labels. The per-site
    AUROCs of the first version (the base model) and of the last are kept for the final comparison."""

    def __init__(self, pool: WorkerPool, detection: DetectionWindows, fleet: Fleet, clients: ClientSide,
                 groups: ParameterGroups):
        self.pool, self.detection, self.clients, self.groups = pool, detection, clients, groups
        self.windows_ref = pool.put((detection.windows.tokens, detection.windows.offsets))
        first: dict[int, int] = {}
        for device, client in enumerate(fleet.data_client.tolist()):
            first.setdefault(client, device)
        # -1: no device has the site's data; it is scored with the initial personal part
        self.devices = np.array([first.get(int(c), -1) for c in detection.clients])
        self.sites = list(range(len(self.devices)))
        self.base: np.ndarray | None = None  # per-site AUROC of the first version
        self.last: tuple[np.ndarray, np.ndarray] | None = None  # of the last: own adapter, global adapter

    def state_dict(self) -> dict:
        return {"base": self.base, "last": self.last}

    def load_state_dict(self, state: dict) -> None:
        self.base, self.last = state["base"], None if state["last"] is None else tuple(state["last"])

    def __call__(self, adapter_ref, base_ref) -> Callable[[], dict]:
        keeps = self.clients.keeps_personal
        personal = [self.clients.personal_part(int(d)) if keeps else None for d in self.devices]
        refs = self.score(adapter_ref, self.sites, personal, base_ref)

        def finish() -> dict:
            own, plain = self.aurocs(refs, self.sites)
            self.base = plain if self.base is None else self.base
            self.last = own, plain
            return {"detection_auroc": float(plain.mean()), "detection_auroc_personal": float(own.mean())}

        return finish

    def score(self, adapter_ref, sites: list[int], personal: list, base_ref) -> list:
        """Refs to the window scores of `sites` (indices into the evaluated sites), each with its personal part."""
        o = self.detection.offsets
        return self.pool.score_windows(adapter_ref, self.groups, self.windows_ref,
                                       [(int(o[j]), int(o[j + 1]), p) for j, p in zip(sites, personal)], base_ref)

    def aurocs(self, refs: list, sites: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Per-site AUROC with the own adapter and with the global adapter alone."""
        pairs = [pair for part in self.pool.get(refs) for pair in part]
        o, faulty = self.detection.offsets, self.detection.faulty
        labels = [faulty[o[j]: o[j + 1]] for j in sites]
        return tuple(np.array([auroc(pair[k], y) for pair, y in zip(pairs, labels)]) for k in (0, 1))

    def alone(self, starts: list[torch.Tensor], steps: int, base_ref=None) -> np.ndarray:
        """Per-site AUROC after each site trains alone on its own training text for `steps` local steps from
        starts[j]: the same batches whatever the start, the strategy's frozen entries held, no proximal term."""
        jobs = [TrainJob(client=int(c), data_client=int(c), round=ALONE_ROUND, base_version=0, steps=steps,
                         groups=self.groups) for c in self.detection.clients]
        results = self.pool.get([self.pool.train(job, self.pool.put(start), base_ref)
                                 for job, start in zip(jobs, starts)])
        refs = [ref for j, (start, r) in enumerate(zip(starts, results))
                for ref in self.score(self.pool.put(start + r.delta), [j], [None], base_ref)]
        return self.aurocs(refs, self.sites)[1]

    def sites_table(self, data: FederatedData, steps: int, local: np.ndarray, tuned: np.ndarray) -> pd.DataFrame:
        d = self.detection
        own, plain = self.last
        return pd.DataFrame({
            "site": [data.client_ids[c] for c in d.clients],
            "data_client": d.clients,
            "device": self.devices,
            "windows": np.diff(d.offsets),
            "fault_windows": np.add.reduceat(d.faulty, d.offsets[:-1]).astype(int),
            "local_steps": steps,
            "auroc_base": self.base,
            "auroc_local": local,
            "auroc_global": plain,
            "auroc_personal": own,
            "auroc_tuned": tuned,
        })


def new_run_dir(scenario: Scenario, options: RunOptions) -> Path:
    if options.out is not None:
        if options.out.exists() and any(options.out.iterdir()):
            raise ScenarioError(f"--out: {options.out} exists and is not empty")
        if options.out.exists():
            options.out.rmdir()
        return options.out
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(scenario.output.dir) / f"{scenario.name}-seed{scenario.seed}-{stamp}"


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def session_cost(scenario: Scenario, arch: Architecture, layout: AdapterLayout, strategy: Strategy,
                 ranks: np.ndarray, codec) -> SessionCost:
    """FLOPs and bytes of one session, bytes per device (ranks differ). A device downloads the shared
    entries of the global adapter as float32 and uploads its update of them through the codec, both
    truncated to its rank, for the emulated architecture; protocols with extra messages (secure
    aggregation) add theirs."""
    t = scenario.training
    tokens = t.local_steps * t.batch_size * t.seq_len
    shared, _, _ = strategy.groups.masks(layout)
    values = np.unique(ranks)
    down, up = np.zeros(len(values), np.int64), np.zeros(len(values), np.int64)
    for i, rank in enumerate(values):
        if rank > 0:
            n = emulated_values(arch, layout, shared, int(rank), scenario.model.lora.bottleneck)
            down[i], up[i] = 4 * n, codec.encoded_bytes(n)
    extra_up, extra_down = strategy.extra_bytes(scenario.run.selected)
    where = np.searchsorted(values, ranks)
    full = 4 * emulated_values(arch, layout, shared, scenario.model.lora.r, scenario.model.lora.bottleneck)
    return SessionCost(arch.training_flops_per_token(t.seq_len) * tokens, down[where] + extra_down,
                       up[where] + extra_up, full + extra_down)


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


def invitable(fleet: Fleet, ranks: np.ndarray) -> np.ndarray:
    """Devices a round can ever invite: able to train (memory) and available at some time."""
    ok = ranks > 0
    for k, model in enumerate(fleet.availability):
        members = np.flatnonzero(fleet.cls == k)
        ok[members] &= model.ever_available(members)
    return ok


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


def run_scenario(scenario: Scenario, options: RunOptions = RunOptions()) -> Path:
    wall_start = time.time()
    # The RDP accountant warns through absl whenever an order fails to converge (it then skips that order).
    logging.getLogger("absl").setLevel(logging.ERROR)
    training = scenario.run.mode == "train"
    check_scenario(scenario)
    data = client_data(scenario)
    t = scenario.training
    lora, settings = lora_spec(scenario), train_settings(scenario)
    strategy = build_scenario_strategy(scenario)
    arch = target_architecture(scenario)
    memory = memory_estimate(scenario, arch)

    fleet = build_fleet(scenario, len(data.client_ids))
    ranks = device_ranks(scenario, arch, fleet)
    if not ranks.any():  # the classes' ranges allow it (scenarios.checks), yet no sampled device fits
        problem = no_device_fits(arch, memory.total_bytes, fleet.memory_gb.max())
        raise ScenarioError(f"{problem.field}: {problem.reason}")

    # The server's copy of the model: the initial global adapter, the adapter layout, the final save.
    server_model = wrap_with_lora(load_base_model(scenario.model.path), lora, scenario.seed)
    layout = adapter_layout(server_model, lora)
    adapter = get_flat(server_model)
    check_strategy(scenario, strategy, layout)
    strategy.setup(StrategyContext(layout, population=int(invitable(fleet, ranks).sum()),
                                   cohort=scenario.run.clients_per_round, seed=scenario.seed))
    compression = scenario.strategy.compression
    codec = build_codec(compression.name, **({"fraction": compression.fraction} if compression.name == "topk" else {}))
    cost = session_cost(scenario, arch, layout, strategy, ranks, codec)
    attack = Attack(**scenario.fleet.attack.model_dump())
    if options.resume is None:
        run_dir = new_run_dir(scenario, options)
        recorder, saved = RunRecorder(run_dir, {**scenario.model_dump(mode="json"), "git_sha": git_sha()}), None
    else:
        run_dir = options.resume
        recorder, saved = RunRecorder.reopen(run_dir)
        if options.progress:
            print(f"{run_dir}: " + ("no checkpoint yet, starting again" if saved is None else
                                    f"{len(recorder.rounds_rows)} rows kept; replaying the clock to the checkpoint"),
                  file=sys.stderr)
    state = run_dir / "state"  # per-device vectors in files, not in the driver's memory; removed at the end
    clients = ClientSide(layout, strategy, adapter, scenario.seed, attack,
                         attack.attackers(scenario.seed, len(fleet)),
                         None if compression.name == "none" else ErrorFeedback(codec, state / "residual"), state)

    r, rt = scenario.run, scenario.runtime
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, state, ignore_errors=True)
        bar = stack.enter_context(tqdm(total=r.rounds + 1, initial=len(recorder.rounds_rows), desc=scenario.name,
                                       unit="round", disable=not options.progress))
        pool = probe = detection = None
        if training:
            stack.enter_context(ray_session(rt.address, rt.workers * rt.threads_per_worker, rt.dashboard,
                                            rt.loopback_only))
            pool = stack.enter_context(
                WorkerPool(rt.workers, rt.threads_per_worker, resolve_model_path(scenario.model.path), lora,
                           settings, data.train, data.test, eval_windows(data, scenario.data.eval_windows, t.seq_len,
                                                              scenario.seed))
            )
            pool.wait_ready()
            if data.detection is not None:
                probe = DetectionProbe(pool, data.detection, fleet, clients, strategy.groups)

        def progress(row: dict) -> None:
            if options.on_round is not None:
                options.on_round(row)
            bar.update(1)
            loss = row["eval_loss"]
            bar.set_postfix(round=row["round"], sim_s=f"{row['t_end']:.0f}",
                            loss="-" if np.isnan(loss) else f"{loss:.3f}")

        final = Emulator(
            seed=scenario.seed,
            fleet=fleet,
            num_samples=data.num_samples,
            rules=round_rules(scenario),
            radio=radio(scenario),
            cost=cost,
            selector=build_selector(r.selection.name, **r.selection.params()),
            adapter=adapter.clone(),  # `adapter` stays the initial one, for the local-only baseline
            strategy=strategy,
            clients=clients,
            host=pool,
            sink=recorder,
            ranks=ranks,
            probes=(probe,) if probe else (),
            on_progress=progress,
            checkpoint_every=r.checkpoint_every,
            resume=saved,
        ).run()
        if probe is not None:  # each site alone, from the initial adapter and from its own final one
            steps = scenario.data.cellsite.local_sessions * t.local_steps
            own = [clients.start(int(d), final) for d in probe.devices]
            detection = probe.sites_table(data, steps, probe.alone([adapter] * len(own), steps),
                                          probe.alone(own, steps, pool.put(strategy.base_delta)))
        faults = pool.faults() if pool is not None else WorkerFaults(jobs_retried=0, workers_replaced=0)

    if training:
        save_adapter(server_model, final, strategy, run_dir / "adapter")
    summary = summarise(scenario, recorder, data, fleet, ranks, arch, cost, memory, layout, wall_start)
    summary.update(asdict(faults))  # host health: faults change no result, so they are only counted
    summary.update(strategy.accounting())
    if detection is not None:
        found = detection_summary(pd.DataFrame(recorder.rounds_rows), detection, scenario.data.cellsite.target_auroc)
        write_detection(run_dir, detection, found)
        summary.update(found)
    recorder.close(summary)
    if scenario.output.report:
        write_report(run_dir)
    return run_dir


def build_scenario_strategy(scenario: Scenario) -> Strategy:
    section = scenario.strategy
    strategy = build_strategy(section.name, **section.params())
    if section.personal is not None or section.frozen is not None:
        preset = strategy.groups
        strategy.groups = ParameterGroups(
            personal=tuple(preset.personal if section.personal is None else section.personal),
            frozen=tuple(preset.frozen if section.frozen is None else section.frozen),
        )
    return strategy


def check_strategy(scenario: Scenario, strategy: Strategy, layout: AdapterLayout) -> None:
    """What only the model's adapter layout can tell: does the strategy share anything at all, and can a
    round ever bring it enough updates?"""
    shared, _, _ = strategy.groups.masks(layout)
    if not shared.any():
        hint = " (PWFF shares the bottleneck adapters: set model.lora.bottleneck)" if strategy.name == "pwff" else ""
        raise ScenarioError(f"strategy: {strategy.name} with personal {list(strategy.groups.personal)} and frozen "
                            f"{list(strategy.groups.frozen)} leaves no parameter to aggregate{hint}")
    compression = scenario.strategy.compression.name
    if compression != "none" and strategy.name == "secagg_fedavg":
        raise ScenarioError("strategy.compression: secure aggregation masks every entry of the upload; "
                            "use compression 'none' with secagg_fedavg")
    if compression != "none" and getattr(strategy, "clipping", None) == "client":
        raise ScenarioError("strategy.compression: error feedback can push a client's upload past its clip "
                            "norm; use clipping 'server' or compression 'none'")
    need = strategy.min_updates
    if not strategy.asynchronous and scenario.run.min_reports < need:
        raise ScenarioError(f"run.min_reports: {strategy.name} needs at least {need} updates to aggregate; "
                            f"set run.min_reports to {need} or more")


def save_adapter(model, adapter: torch.Tensor, strategy: Strategy, folder: Path) -> None:
    """The final global adapter in PEFT format; bottleneck adapters and FLoRA's merged weights, which PEFT
    does not know, beside it."""
    from safetensors.torch import save_file

    set_flat(model, adapter)
    model.save_pretrained(folder, safe_serialization=True)
    extra = {n: p.detach().contiguous() for n, p in model.named_parameters() if ".bottleneck." in n}
    if extra:
        save_file(extra, str(folder / "bottleneck.safetensors"))
    if strategy.base_delta is not None:
        save_file({"base_delta": strategy.base_delta.contiguous()}, str(folder / "base_delta.safetensors"))


def full_model_uplink(sessions, arch: Architecture, cost: SessionCost, fleet_size: int) -> dict:
    """What the same sessions would have uploaded in full-model federated fine-tuning: each session's
    upload scaled from its device's LoRA payload to the emulated model's full weights (float32,
    uncompressed), so cut-off uploads count for the same share they sent."""
    full = 4 * arch.params
    lora = np.broadcast_to(np.asarray(cost.bytes_up, dtype=np.float64), fleet_size)
    sent = sessions["bytes_up"].to_numpy(np.float64) if len(sessions) else np.zeros(0)
    payload = lora[sessions["device"].to_numpy()] if len(sessions) else np.zeros(0)
    full_uplink = float(np.sum(np.divide(sent * full, payload, out=np.zeros_like(sent), where=payload > 0)))
    return {
        "full_model_bytes": full,
        "full_model_uplink_bytes": full_uplink,
        "uplink_fraction_of_full": float(sent.sum() / full_uplink) if full_uplink else None,
    }


def summarise(scenario: Scenario, recorder: RunRecorder, data: FederatedData, fleet: Fleet, ranks: np.ndarray,
              arch: Architecture, cost: SessionCost, memory: MemoryEstimate, layout: AdapterLayout,
              wall_start: float) -> dict:
    rounds = recorder.rounds_rows
    sessions = recorder.sessions_frame(["device", "outcome", "bytes_up"])  # read back from disk: only what is used
    losses = [row["eval_loss"] for row in rounds if not np.isnan(row["eval_loss"])]
    personal = [row for row in rounds if not np.isnan(row.get("personal_loss", np.nan))]
    done = [row for row in rounds if row["round"] > 0]
    return {
        "scenario": scenario.name,
        "seed": scenario.seed,
        "mode": scenario.run.mode,
        "rounds": len(done),
        "versions": rounds[-1]["version"],
        "simulated_time_s": rounds[-1]["t_end"],
        "base_eval_loss": losses[0] if losses else None,
        "final_eval_loss": losses[-1] if losses else None,
        "strategy": scenario.strategy.name,
        "final_personal_loss": personal[-1]["personal_loss"] if personal else None,
        "final_personal_global_loss": personal[-1]["personal_global_loss"] if personal else None,
        "sessions": len(sessions),
        "completion_rate": float((sessions["outcome"] == "completed").mean()) if len(sessions) else 0.0,
        "mean_round_s": float(np.mean([row["duration_s"] for row in done])) if done else 0.0,
        "bytes_up": int(sum(row["bytes_up"] for row in rounds)),
        "bytes_down": int(sum(row["bytes_down"] for row in rounds)),
        "energy_j": float(sum(row["energy_j"] for row in rounds)),
        "target_loss": scenario.output.target_loss,
        **full_model_uplink(sessions, arch, cost, len(fleet)),
        "fleet_size": len(fleet),
        "eligible_devices": int((ranks > 0).sum()),
        "invitable_devices": int(invitable(fleet, ranks).sum()),
        "data_clients": len(data.client_ids),
        "trained_model": scenario.model.path,
        "emulated_model": arch.name,
        "emulated_params": arch.params,
        "adapter_params": emulated_values(arch, layout, torch.ones(layout.size, dtype=torch.bool),
                                          scenario.model.lora.r, scenario.model.lora.bottleneck),
        "devices_per_rank": {int(r): int(n) for r, n in zip(*np.unique(ranks, return_counts=True))},
        "flops_per_session": cost.flops,
        "training_memory_gb": memory.total_bytes / 1e9,
        "wall_s": time.time() - wall_start,
    }
