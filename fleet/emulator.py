"""Synchronous federated rounds on a simulated clock (SimPy). Time unit: simulated seconds.

Scenario: each round the server invites ceil(1.3 K) devices among those that are available, charged
enough and able to hold the model in memory. Each invited device downloads the global adapter over its
cell's downlink, shared with the other downloads in the cell; trains for the scenario's local steps at its
own speed; and uploads its update over the cell's shared uplink, then the cell's backhaul carries it to the
server. A session can end early, at a sampled instant, for a recorded reason: the device went offline
(its availability pattern), failed, ran its battery down to the cutoff, or had no usable link (SNR below
the outage threshold after fading). With the `deadline` policy the round closes when K updates have
arrived or the deadline passes; with `k_fastest` (FedScale) it closes at the K-th arrival. Whoever is still
working then is cut off as a straggler. With at least `min_reports` updates the server aggregates them into
a new global version; otherwise the round is abandoned.

The clock decides first, the host works second: a session's fate depends only on sampled device, channel
and hazard draws, never on training results, so the emulator asks the worker pool to train a client only
once its update has arrived in time. Training is a pure function of (global version, client, round, seed),
so when it is submitted changes no number, and a dropped session costs no host compute. Without a host
(systems-only mode) nothing is trained: timing, bytes and energy only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import simpy
import torch

from aggregation import ClientUpdate, Strategy
from fleet.cells import CellLink, Multicast, TraceLink
from fleet.devices import Fleet
from fleet.rng import stream
from fleet.selection import DeviceHistory, SelectionContext
from fleet.trainer import TrainJob, TrainResult
from network_models import RateTrace, SharedBand, fading_gain_db, path_loss_db, shannon_rate_bps, snr_db

OUTCOMES = ("completed", "offline", "device_failure", "battery", "link_outage", "missed_deadline", "surplus")


class Host(Protocol):
    """Where real training happens (fleet.pool.WorkerPool); handles are opaque."""

    def put_adapter(self, adapter: torch.Tensor) -> Any: ...
    def train(self, job: TrainJob, adapter: Any) -> Any: ...
    def evaluate(self, adapter: Any) -> Any: ...
    def get(self, handles: list) -> list: ...


class Sink(Protocol):
    """Where records go (analysis.recorder.RunRecorder)."""

    def round(self, row: dict) -> None: ...
    def sessions(self, columns: dict[str, list]) -> None: ...


@dataclass(frozen=True)
class RoundRules:
    rounds: int
    clients_per_round: int
    selected: int
    deadline_s: float
    policy: str  # "deadline" or "k_fastest"
    min_reports: int
    eval_every: int
    local_steps: int
    min_charge: float  # participation threshold, fraction of capacity
    cutoff_charge: float  # a session stops when the battery falls to this fraction
    only_while_charging: bool


@dataclass(frozen=True)
class Radio:
    path_loss: str
    carrier_ghz: float
    uplink_hz: float
    downlink_hz: float
    bs_power_dbm: float
    noise_figure_db: float
    sharing: str  # "ofdma" or "tdma"
    fading: str
    k_factor_db: float
    outage_snr_db: float
    backhaul_bps: float
    backhaul_latency_s: float
    uplink_trace: RateTrace | None = None  # replaces the shared uplink band when given
    downlink_trace: RateTrace | None = None
    multicast: bool = False  # the global adapter goes out once per cell, at the rate of its weakest invitee


@dataclass(frozen=True)
class SessionCost:
    """What one client session moves and computes (for the emulated architecture): a number for every
    device, or one per device where ranks differ."""

    flops: float
    bytes_down: int | np.ndarray
    bytes_up: int | np.ndarray


class Dropped(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class SessionLog:
    """One device's part in one round, filled in as it happens."""

    __slots__ = ("device", "round", "base_version", "t_start", "t_end", "outcome", "phase", "download_s",
                 "train_s", "upload_s", "bytes_down", "bytes_up", "bytes_down_air", "energy_j", "uplink_mbps",
                 "downlink_mbps")
    COLUMNS = __slots__

    def __init__(self, device: int, rnd: int, base_version: int, t_start: float):
        self.device, self.round, self.base_version, self.t_start = device, rnd, base_version, t_start
        self.t_end, self.outcome, self.phase = t_start, "", "download"
        self.download_s = self.train_s = self.upload_s = 0.0
        self.bytes_down = self.bytes_up = 0
        self.bytes_down_air = 0.0  # this session's share of what the cell's downlink sent (multicast: 1/n)
        self.energy_j = 0.0
        self.uplink_mbps = self.downlink_mbps = float("nan")


class Emulator:
    def __init__(
        self,
        *,
        seed: int,
        fleet: Fleet,
        num_samples: np.ndarray,
        rules: RoundRules,
        radio: Radio,
        cost: SessionCost,
        selector,
        adapter: torch.Tensor,
        strategy: Strategy,
        host: Host | None,
        sink: Sink,
        ranks: np.ndarray | None = None,
        on_progress=lambda row: None,
    ):
        self.env = simpy.Environment()
        self.seed, self.fleet, self.num_samples = seed, fleet, num_samples
        self.rules, self.radio, self.cost, self.selector = rules, radio, cost, selector
        self.strategy, self.host, self.sink, self.on_progress = strategy, host, sink, on_progress
        self.adapter = adapter
        self.version = 0
        # The LoRA rank each device can train at (model.memory_policy); 0: it cannot train. None: all full rank.
        self.ranks = ranks
        self.eligible = np.ones(len(fleet), bool) if ranks is None else ranks > 0
        self.bytes_down = np.broadcast_to(np.asarray(cost.bytes_down, dtype=np.int64), len(fleet))
        self.bytes_up = np.broadcast_to(np.asarray(cost.bytes_up, dtype=np.int64), len(fleet))
        self.history = DeviceHistory.empty(len(fleet))
        self.loss_db = path_loss_db(radio.path_loss, fleet.distance_m, radio.carrier_ghz) + fleet.shadowing_db
        self.uplinks = self._links(radio.uplink_hz, radio.uplink_trace, "uplink")
        self.downlinks = self._links(radio.downlink_hz, radio.downlink_trace, "downlink")
        self._charged_until = 0.0
        self._pending_eval: tuple[dict, Any] | None = None

    def _links(self, band_hz: float, trace, direction: str) -> list:
        """One shared band per cell, or one trace replayed by every device (from its own offset)."""
        cells = int(self.fleet.cell.max()) + 1
        if trace is None:
            return [CellLink(self.env, SharedBand(band_hz, self.radio.noise_figure_db, self.radio.sharing))
                    for _ in range(cells)]
        offsets = stream(self.seed, "trace-offset", direction).uniform(0.0, trace.period_s, len(self.fleet))
        return [TraceLink(self.env, trace, offsets)] * cells

    def run(self) -> torch.Tensor:
        """Run every round; returns the final global adapter."""
        server = self.env.process(self.server())
        self.env.run(until=server)  # pending hazard timers of closed rounds are not waited for
        self._finish_eval()
        return self.adapter

    # --- the server's story -----------------------------------------------------------------------

    def server(self):
        self._evaluate(self._round_row(0, 0.0, {}, 0, False, float("nan")))
        for rnd in range(1, self.rules.rounds + 1):
            opened = self.env.now
            self.fleet.charge(self._charged_until, opened)
            self._charged_until = opened
            invited = self.select(rnd)
            state = RoundState(self.env, rnd, self.version, self.rules.clients_per_round)
            adapter_ref = self.host.put_adapter(self.adapter) if self.host else None
            sessions = [self.env.process(self.session(state, plan, adapter_ref)) for plan in self.plan(rnd, invited)]
            waits = [state.enough, self.env.all_of(sessions)]
            if self.rules.policy == "deadline":
                waits.append(self.env.timeout(self.rules.deadline_s))
            if not sessions:  # nobody to invite: wait before asking again
                waits = [self.env.timeout(self.rules.deadline_s if np.isfinite(self.rules.deadline_s) else 60.0)]
            yield self.env.any_of(waits)
            reason = "surplus" if state.enough.triggered else "missed_deadline"
            for proc in sessions:
                if proc.is_alive:
                    proc.interrupt(reason)
            yield self.env.timeout(0)  # let the cut-off sessions record themselves
            self.close_round(state, opened)
        self.fleet.charge(self._charged_until, self.env.now)

    def session(self, state: "RoundState", plan: dict, adapter_ref):
        """One device's round: download, train, upload, unless something ends it first."""
        d = plan["device"]
        log = SessionLog(d, state.round, state.version, self.env.now)
        if np.isfinite(plan["hazard_s"]):
            self._arm_hazard(self.env.active_process, log, plan["hazard_s"], plan["hazard"])
        fleet, radio = self.fleet, self.radio
        cls = fleet.classes[fleet.cls[d]]
        try:
            downlink = plan["multicast"] or self.downlinks[fleet.cell[d]]
            yield from self.transfer(log, "download", downlink, self.bytes_down[d], radio.bs_power_dbm,
                                     self.loss_db[d] - plan["fade_down_db"], radio.downlink_hz,
                                     lambda rate: cls.radio_base_w + cls.radio_down_w_per_mbps * rate / 1e6)
            log.phase = "train"
            yield from self.spend(log, "train", self.env.timeout(plan["train_s"]), cls.compute_power_w)
            yield from self.transfer(log, "upload", self.uplinks[fleet.cell[d]], self.bytes_up[d],
                                     cls.tx_power_dbm, self.loss_db[d] - plan["fade_up_db"], radio.uplink_hz,
                                     lambda rate: cls.radio_base_w + cls.radio_up_w_per_mbps * rate / 1e6)
            log.phase = "backhaul"  # the device is done; the cell's backhaul carries the update on
            yield self.env.timeout(radio.backhaul_latency_s + 8 * self.bytes_up[d] / radio.backhaul_bps)
            if state.enough.triggered:  # arrived in the same instant as the K-th
                raise Dropped("surplus")
            log.outcome, log.phase = "completed", "done"
            state.arrive(d, self._train(state, d, adapter_ref))
        except Dropped as drop:
            log.outcome = drop.reason
        except simpy.Interrupt as stop:
            log.outcome = stop.cause
        log.t_end = self.env.now
        state.ended.append(log)

    def _arm_hazard(self, session: simpy.Process, log: SessionLog, after_s: float, reason: str) -> None:
        """The sampled instant at which the device leaves; it only matters while the device still has work
        to do (once its update is on the backhaul, leaving changes nothing)."""

        def strike(_) -> None:
            if session.is_alive and log.phase in ("download", "train", "upload"):
                session.interrupt(reason)

        self.env.timeout(after_s).callbacks.append(strike)

    def transfer(self, log, name, link: CellLink | TraceLink, nbytes, tx_power_dbm, loss_db, band_hz, power_at):
        """Send over a shared link; the device draws radio power for the rate it had when it started."""
        log.phase = name
        snr = snr_db(band_hz, tx_power_dbm, loss_db, self.radio.noise_figure_db)
        if link.snr_applies and snr < self.radio.outage_snr_db:
            raise Dropped("link_outage")
        direction = "up" if name == "upload" else "down"
        done = link.send(log.device, 8.0 * nbytes, tx_power_dbm, loss_db)
        rate = link.rate_bps(log.device)
        setattr(log, f"{direction}link_mbps", rate / 1e6)
        try:
            yield from self.spend(log, name, done, power_at(rate))
        except BaseException:
            setattr(log, f"bytes_{direction}", int(link.cancel(log.device) / 8))
            if direction == "down":
                log.bytes_down_air = log.bytes_down / getattr(link, "receivers", 1)
            raise
        setattr(log, f"bytes_{direction}", int(nbytes))
        if direction == "down":
            log.bytes_down_air = nbytes / getattr(link, "receivers", 1)

    def spend(self, log: SessionLog, name: str, event, power_w: float):
        """Wait for `event` while drawing `power_w`, unless the battery reaches its cutoff first."""
        start = self.env.now
        budget_s = self._seconds_to_cutoff(log.device, power_w)
        try:
            if np.isfinite(budget_s):
                fired = yield event | self.env.timeout(budget_s)
                if event not in fired:
                    raise Dropped("battery")
            else:
                yield event
        finally:
            self._drain(log, name, self.env.now - start, power_w)

    # --- the clock's decisions ---------------------------------------------------------------------

    def select(self, rnd: int) -> np.ndarray:
        """Invite devices among those available, eligible and charged enough; sorted device ids."""
        fleet, rules, now = self.fleet, self.rules, self.env.now
        ok = self.eligible & (fleet.charge_fraction(np.arange(len(fleet))) >= rules.min_charge)
        candidates = np.flatnonzero(ok)
        candidates = candidates[fleet.available(now, candidates)]
        if rules.only_while_charging:
            batteries = np.isfinite(fleet.battery_wh[candidates])
            candidates = candidates[~batteries | fleet.charging(now, candidates)]
        if len(candidates) == 0:
            return candidates
        radio = self.radio
        ctx = SelectionContext(
            candidates=candidates,
            charge_fraction=fleet.charge_fraction(candidates),
            link_rate_bps=shannon_rate_bps(radio.uplink_hz, fleet.per_class("tx_power_dbm", candidates),
                                           self.loss_db[candidates], radio.noise_figure_db),
            flops=fleet.flops[candidates],
            samples=self.num_samples[fleet.data_client[candidates]],
            history=self.history,
        )
        return np.sort(self.selector.select(ctx, rules.selected, stream(self.seed, "select", rnd)))

    def plan(self, rnd: int, devices: np.ndarray) -> list[dict]:
        """Each invitee's draws for this round, all vectorised: fading per transfer, the first hazard
        (availability ends or the device fails), training time from FLOPs and the device's speed."""
        fleet, n = self.fleet, len(devices)
        offline_s = fleet.offline_after(self.env.now, devices)
        rate = fleet.per_class("failures_per_hour", devices) / 3600.0
        with np.errstate(divide="ignore"):
            failure_s = stream(self.seed, "failure", rnd).exponential(1.0, n) / rate
        fade_up = fading_gain_db(stream(self.seed, "fading-up", rnd), self.radio.fading, n, self.radio.k_factor_db)
        fade_down = fading_gain_db(stream(self.seed, "fading-down", rnd), self.radio.fading, n, self.radio.k_factor_db)
        train_s = self.cost.flops / fleet.flops[devices]
        multicasts = self._multicasts(devices, fade_down) if self.radio.multicast else {}
        return [
            {
                "multicast": multicasts.get(int(fleet.cell[d])),
                "device": int(d),
                "hazard_s": float(min(offline_s[i], failure_s[i])),
                "hazard": "offline" if offline_s[i] <= failure_s[i] else "device_failure",
                "fade_up_db": float(fade_up[i]),
                "fade_down_db": float(fade_down[i]),
                "train_s": float(train_s[i]),
            }
            for i, d in enumerate(devices)
        ]

    def _multicasts(self, devices: np.ndarray, fade_down_db: np.ndarray) -> dict[int, Multicast]:
        """One broadcast of the global adapter per cell with invitees, over the whole downlink band, at the
        rate of the weakest invitee that is not in outage (all must decode it)."""
        radio, cells = self.radio, self.fleet.cell[devices]
        loss = self.loss_db[devices] - fade_down_db
        snr = snr_db(radio.downlink_hz, radio.bs_power_dbm, loss, radio.noise_figure_db)
        rate = shannon_rate_bps(radio.downlink_hz, radio.bs_power_dbm, loss, radio.noise_figure_db)
        out = {}
        for cell in np.unique(cells):
            ok = (cells == cell) & (snr >= radio.outage_snr_db)
            if ok.any():
                bits = 8.0 * float(self.bytes_down[devices[ok]].max())
                out[int(cell)] = Multicast(self.env, bits, float(rate[ok].min()), int((cells == cell).sum()))
        return out

    # --- energy ------------------------------------------------------------------------------------

    def _seconds_to_cutoff(self, d: int, power_w: float) -> float:
        if not np.isfinite(self.fleet.battery_wh[d]) or power_w <= 0:
            return float("inf")
        above = self.fleet.charge_wh[d] - self.rules.cutoff_charge * self.fleet.battery_wh[d]
        return max(0.0, above * 3600.0 / power_w)

    def _drain(self, log: SessionLog, name: str, seconds: float, power_w: float) -> None:
        setattr(log, f"{name}_s", getattr(log, f"{name}_s") + seconds)
        log.energy_j += power_w * seconds
        self.fleet.charge_wh[log.device] -= power_w * seconds / 3600.0  # inf stays inf for mains

    # --- the server's books ------------------------------------------------------------------------

    def _train(self, state: "RoundState", d: int, adapter_ref):
        if self.host is None:
            return None
        job = TrainJob(client=d, data_client=int(self.fleet.data_client[d]), round=state.round,
                       base_version=state.version, steps=self.rules.local_steps,
                       rank=None if self.ranks is None else int(self.ranks[d]))
        return self.host.train(job, adapter_ref)

    def close_round(self, state: "RoundState", opened: float) -> None:
        logs = sorted(state.ended, key=lambda s: s.device)
        columns = {c: [getattr(s, c) for s in logs] for c in SessionLog.COLUMNS}
        columns["device_class"] = [self.fleet.classes[self.fleet.cls[s.device]].name for s in logs]
        columns["cell"] = [int(self.fleet.cell[s.device]) for s in logs]
        columns["data_client"] = [int(self.fleet.data_client[s.device]) for s in logs]
        self.sink.sessions(columns)
        arrived = sorted(state.arrived)  # fixed order: sums do not depend on arrival order or worker count
        abandoned = len(arrived) < self.rules.min_reports
        train_loss = float("nan")
        for s in logs:
            if s.outcome == "completed":
                self.history.last_duration_s[s.device] = s.t_end - s.t_start
        if not abandoned:
            if self.host is not None:
                results: list[TrainResult] = self.host.get([state.arrived[d] for d in arrived])
                updates = [ClientUpdate(r.job.client, r.delta, int(self.num_samples[r.job.data_client]),
                                        r.job.base_version, r.job.steps) for r in results]
                self.adapter = self.strategy.aggregate(self.adapter, self.version, updates)
                train_loss = float(np.mean([r.loss_last for r in results]))
                for r in results:
                    self.history.last_loss[r.job.client] = r.loss_first
            self.version += 1
        row = self._round_row(state.round, opened, columns, len(arrived), abandoned, train_loss)
        last = state.round == self.rules.rounds
        if abandoned or (state.round % self.rules.eval_every and not last):
            self._finish_eval()  # rows stay in round order
            self._emit({**row, "eval_loss": float("nan"), "eval_ppl": float("nan")})
        else:
            self._evaluate(row)  # without a host, this records the row without a loss

    def _round_row(self, rnd: int, opened: float, columns: dict, completed: int, abandoned: bool,
                   train_loss: float) -> dict:
        outcomes = columns.get("outcome", [])
        return {
            "round": rnd,
            "version": self.version,
            "t_start": opened,
            "t_end": self.env.now,
            "duration_s": self.env.now - opened,
            "selected": len(outcomes),
            "completed": completed,
            **{outcome: outcomes.count(outcome) for outcome in OUTCOMES if outcome != "completed"},
            "abandoned": abandoned,
            "bytes_up": int(sum(columns.get("bytes_up", []))),
            "bytes_down": int(round(sum(columns.get("bytes_down_air", [])))),  # sent by the cells
            "energy_j": float(sum(columns.get("energy_j", []))),
            "train_loss": train_loss,
        }

    def _evaluate(self, row: dict) -> None:
        """Held-out loss of the new version, computed while the next round trains and recorded after it."""
        if self.host is None:
            self._emit({**row, "eval_loss": float("nan"), "eval_ppl": float("nan")})
            return
        ref = self.host.evaluate(self.host.put_adapter(self.adapter))
        self._finish_eval()
        self._pending_eval = (row, ref)

    def _finish_eval(self) -> None:
        if self._pending_eval is not None:
            row, ref = self._pending_eval
            self._pending_eval = None
            loss = float(self.host.get([ref])[0])
            self._emit({**row, "eval_loss": loss, "eval_ppl": float(np.exp(loss))})

    def _emit(self, row: dict) -> None:
        self.sink.round(row)
        self.on_progress(row)


class RoundState:
    """Who has arrived in one round, and the event that fires at the K-th arrival."""

    def __init__(self, env: simpy.Environment, rnd: int, version: int, k: int):
        self.round, self.version, self.k = rnd, version, k
        self.enough = env.event()
        self.arrived: dict[int, Any] = {}  # device -> training handle
        self.ended: list[SessionLog] = []

    def arrive(self, device: int, handle: Any) -> None:
        self.arrived[device] = handle
        if len(self.arrived) == self.k:
            self.enough.succeed()
