"""Synchronous federated rounds on a simulated clock (SimPy). Time unit: simulated seconds.

Scenario: each round the server invites ceil(1.3 K) available devices. Each invited device downloads the
global adapter over its cell's shared downlink, trains it for the scenario's local steps at its own speed,
and uploads its update over the shared uplink. A device may go offline at a sampled instant (its class's
failure rate); the round closes when K updates have arrived or its deadline passes, and whoever is still
working then is cut off as a straggler. With at least `min_reports` updates the server aggregates them into
a new global version; otherwise the round is abandoned.

The clock decides first, the host works second: a session's fate depends only on sampled device, channel
and hazard draws, never on training results, so the emulator asks the worker pool to train a client only
once its update has arrived in time. Training is a pure function of (global version, client, round, seed),
so when it is submitted changes no number, and a dropped session costs no host compute.

Covers: selection with over-selection, per-device compute time from FLOPs, OFDMA link rates from the
actual adapter bytes, offline hazards, deadline and surplus stragglers, energy drained from batteries.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import simpy
import torch

from aggregation import ClientUpdate, Strategy
from fleet.devices import Fleet
from fleet.rng import stream
from fleet.trainer import TrainJob, TrainResult
from network_models import ofdma_rates_bps, path_loss_db

# LTE radio power (Huang et al., MobiSys 2012), in W: 0.438 W per Mb/s up, 0.052 W per Mb/s down, 1.288 W base.
UPLINK_W_PER_MBPS, DOWNLINK_W_PER_MBPS, RADIO_BASE_W = 0.438, 0.052, 1.288


class Host(Protocol):
    """Where real training happens (fleet.pool.WorkerPool); handles are opaque."""

    def put_adapter(self, adapter: torch.Tensor) -> Any: ...
    def train(self, job: TrainJob, adapter: Any) -> Any: ...
    def evaluate(self, adapter: Any) -> Any: ...
    def get(self, handles: list) -> list: ...


class Sink(Protocol):
    """Where records go (analysis.recorder.RunRecorder)."""

    def round(self, row: dict) -> None: ...
    def sessions(self, rows: list[dict]) -> None: ...


@dataclass(frozen=True)
class RoundRules:
    rounds: int
    clients_per_round: int
    selected: int
    deadline_s: float
    min_reports: int
    eval_every: int
    local_steps: int
    min_charge: float


@dataclass(frozen=True)
class Radio:
    path_loss: str
    carrier_ghz: float
    uplink_hz: float
    downlink_hz: float
    bs_power_dbm: float
    noise_figure_db: float


@dataclass(frozen=True)
class SessionPlan:
    """What the clock knows about one invited device when its session starts."""

    device: int
    download_s: float
    train_s: float
    upload_s: float
    offline_after_s: float  # sampled hazard; inf if it never goes offline this round
    uplink_bps: float
    downlink_bps: float

    @property
    def total_s(self) -> float:
        return self.download_s + self.train_s + self.upload_s

    def phase_at(self, elapsed: float) -> str:
        if elapsed < self.download_s:
            return "download"
        return "train" if elapsed < self.download_s + self.train_s else "upload"

    def time_in_phases(self, elapsed: float) -> tuple[float, float, float]:
        down = min(elapsed, self.download_s)
        train = min(max(elapsed - self.download_s, 0.0), self.train_s)
        up = min(max(elapsed - self.download_s - self.train_s, 0.0), self.upload_s)
        return down, train, up


class Emulator:
    def __init__(
        self,
        *,
        seed: int,
        fleet: Fleet,
        num_samples: np.ndarray,
        rules: RoundRules,
        radio: Radio,
        flops_per_session: float,
        adapter: torch.Tensor,
        strategy: Strategy,
        host: Host,
        sink: Sink,
        on_progress=lambda row: None,
    ):
        self.env = simpy.Environment()
        self.seed, self.fleet, self.num_samples = seed, fleet, num_samples
        self.rules, self.radio, self.strategy = rules, radio, strategy
        self.host, self.sink, self.on_progress = host, sink, on_progress
        self.flops_per_session = flops_per_session
        self.adapter = adapter
        self.version = 0
        # Bytes on the wire come from the tensors as sent: float32 adapter down, float32 delta up.
        self.bytes_down = self.bytes_up = adapter.numel() * adapter.element_size()
        self.loss_db = path_loss_db(radio.path_loss, fleet.distance_m, radio.carrier_ghz) + fleet.shadowing_db
        self._pending_eval: tuple[dict, Any] | None = None

    def run(self) -> torch.Tensor:
        """Run every round; returns the final global adapter."""
        self.env.process(self.server())
        self.env.run()
        self._finish_eval()
        return self.adapter

    # --- the server's story -----------------------------------------------------------------------

    def server(self):
        self._evaluate(self._round_row(0, 0.0, [], [], abandoned=False, train_loss=float("nan")))
        for rnd in range(1, self.rules.rounds + 1):
            opened = self.env.now
            plans = self.plan_sessions(rnd, self.select(rnd))
            adapter_ref = self.host.put_adapter(self.adapter)
            state = RoundState(self.env, rnd, self.version, self.rules.clients_per_round)
            sessions = {p.device: self.env.process(self.session(state, p, adapter_ref)) for p in plans}
            deadline = self.env.timeout(self.rules.deadline_s)
            yield state.enough | deadline
            reason = "surplus" if state.enough.triggered else "missed_deadline"
            for proc in sessions.values():
                if proc.is_alive:
                    proc.interrupt(reason)
            yield self.env.timeout(0)  # let the cut-off sessions record themselves
            self.close_round(state, plans, opened)

    def session(self, state: "RoundState", plan: SessionPlan, adapter_ref):
        """One device's part in a round: download, train, upload, unless it goes offline or is cut off."""
        start = self.env.now
        try:
            if plan.offline_after_s < plan.total_s:
                yield self.env.timeout(plan.offline_after_s)
                state.end(plan, "offline", self.env.now - start)
                return
            yield self.env.timeout(plan.total_s)
            if state.enough.triggered:  # arrived in the same instant as the K-th
                state.end(plan, "surplus", self.env.now - start)
                return
            job = TrainJob(
                client=plan.device,
                data_client=int(self.fleet.data_client[plan.device]),
                round=state.round,
                base_version=state.version,
                steps=self.rules.local_steps,
            )
            state.arrive(plan, self.host.train(job, adapter_ref), self.env.now - start)
        except simpy.Interrupt as stop:
            state.end(plan, stop.cause, self.env.now - start)

    # --- the clock's decisions ---------------------------------------------------------------------

    def select(self, rnd: int) -> np.ndarray:
        """Uniform among devices that are online and above the battery threshold; sorted device ids."""
        fleet = self.fleet
        online = stream(self.seed, "availability", rnd).random(len(fleet)) < fleet.availability
        charged = fleet.charge_wh >= self.rules.min_charge * fleet.battery_wh  # inf >= inf for mains
        candidates = np.flatnonzero(online & charged)
        take = min(self.rules.selected, len(candidates))
        return np.sort(stream(self.seed, "select", rnd).choice(candidates, size=take, replace=False))

    def plan_sessions(self, rnd: int, devices: np.ndarray) -> list[SessionPlan]:
        """Rates from an equal OFDMA share among this round's invitees in each cell, fixed for the round."""
        fleet, radio = self.fleet, self.radio
        cells, loss = fleet.cell[devices], self.loss_db[devices]
        up = ofdma_rates_bps(cells, radio.uplink_hz, fleet.tx_power_dbm[devices], loss, radio.noise_figure_db)
        down = ofdma_rates_bps(cells, radio.downlink_hz, radio.bs_power_dbm, loss, radio.noise_figure_db)
        hazard_rate = fleet.failures_per_hour[devices] / 3600.0
        offline = stream(self.seed, "offline", rnd).exponential(1.0, len(devices)) / np.maximum(hazard_rate, 1e-300)
        train_s = self.flops_per_session / fleet.flops[devices]
        return [
            SessionPlan(
                device=int(d),
                download_s=8 * self.bytes_down / down[i],
                train_s=float(train_s[i]),
                upload_s=8 * self.bytes_up / up[i],
                offline_after_s=float(offline[i]),
                uplink_bps=float(up[i]),
                downlink_bps=float(down[i]),
            )
            for i, d in enumerate(devices)
        ]

    # --- the server's books ------------------------------------------------------------------------

    def close_round(self, state: "RoundState", plans: list[SessionPlan], opened: float) -> None:
        sessions = [self._session_row(state, plan, *state.ended[plan.device]) for plan in plans]
        self.sink.sessions(sessions)
        arrived = sorted(state.arrived)  # fixed order: sums do not depend on arrival order or worker count
        abandoned = len(arrived) < self.rules.min_reports
        train_loss = float("nan")
        if not abandoned:
            results: list[TrainResult] = self.host.get([state.arrived[d] for d in arrived])
            updates = [
                ClientUpdate(r.job.client, r.delta, int(self.num_samples[r.job.data_client]), r.job.base_version, r.job.steps)
                for r in results
            ]
            self.adapter = self.strategy.aggregate(self.adapter, self.version, updates)
            self.version += 1
            train_loss = float(np.mean([r.loss_last for r in results]))
        row = self._round_row(state.round, opened, sessions, arrived, abandoned, train_loss)
        last = state.round == self.rules.rounds
        if abandoned or (state.round % self.rules.eval_every and not last):
            self._finish_eval()  # rows stay in round order
            self._emit({**row, "eval_loss": float("nan"), "eval_ppl": float("nan")})
        else:
            self._evaluate(row)

    def _round_row(
        self, rnd: int, opened: float, sessions: list[dict], arrived: list[int], abandoned: bool, train_loss: float
    ) -> dict:
        outcomes = [s["outcome"] for s in sessions]
        return {
            "round": rnd,
            "version": self.version,
            "t_start": opened,
            "t_end": self.env.now,
            "duration_s": self.env.now - opened,
            "selected": len(sessions),
            "completed": len(arrived),
            "dropped": outcomes.count("offline"),
            "missed_deadline": outcomes.count("missed_deadline"),
            "surplus": outcomes.count("surplus"),
            "abandoned": abandoned,
            "bytes_up": sum(s["bytes_up"] for s in sessions),
            "bytes_down": sum(s["bytes_down"] for s in sessions),
            "energy_j": sum(s["energy_j"] for s in sessions),
            "train_loss": train_loss,
        }

    def _session_row(self, state: "RoundState", plan: SessionPlan, outcome: str, elapsed: float) -> dict:
        fleet, d = self.fleet, plan.device
        completed = outcome == "completed"
        down_s, train_s, up_s = plan.time_in_phases(plan.total_s if completed else elapsed)
        radio_w_up = RADIO_BASE_W + UPLINK_W_PER_MBPS * plan.uplink_bps / 1e6
        radio_w_down = RADIO_BASE_W + DOWNLINK_W_PER_MBPS * plan.downlink_bps / 1e6
        energy = down_s * radio_w_down + train_s * fleet.compute_power_w[d] + up_s * radio_w_up
        fleet.charge_wh[d] -= energy / 3600.0  # inf stays inf for mains-powered devices
        return {
            "round": state.round,
            "device": d,
            "device_class": fleet.classes[fleet.cls[d]],
            "cell": int(fleet.cell[d]),
            "data_client": int(fleet.data_client[d]),
            "base_version": state.version,
            "outcome": outcome,
            "phase": "done" if completed else plan.phase_at(elapsed),
            "t_start": state.opened,
            "t_end": state.opened + elapsed,
            "download_s": down_s,
            "train_s": train_s,
            "upload_s": up_s,
            "uplink_mbps": plan.uplink_bps / 1e6,
            "downlink_mbps": plan.downlink_bps / 1e6,
            # A transfer cut short moved only its share of the bytes.
            "bytes_down": round(self.bytes_down * down_s / plan.download_s),
            "bytes_up": round(self.bytes_up * up_s / plan.upload_s),
            "energy_j": float(energy),
            "steps": self.rules.local_steps if completed else 0,
        }

    def _evaluate(self, row: dict) -> None:
        """Held-out loss of the new version, computed while the next round trains and recorded after it."""
        ref = self.host.evaluate(self.host.put_adapter(self.adapter))
        self._finish_eval()
        self._pending_eval = (row, ref)

    def _finish_eval(self) -> None:
        if self._pending_eval is not None:
            row, ref = self._pending_eval
            self._pending_eval = None
            loss = float(self.host.get([ref])[0])
            row.update(eval_loss=loss, eval_ppl=float(np.exp(loss)))
            self._emit(row)

    def _emit(self, row: dict) -> None:
        self.sink.round(row)
        self.on_progress(row)


class RoundState:
    """Who has arrived in one round, and the event that fires at the K-th arrival."""

    def __init__(self, env: simpy.Environment, rnd: int, version: int, k: int):
        self.round, self.version, self.k, self.opened = rnd, version, k, env.now
        self.enough = env.event()
        self.arrived: dict[int, Any] = {}  # device -> training handle
        self.ended: dict[int, tuple[str, float]] = {}  # device -> (outcome, elapsed seconds)

    def arrive(self, plan: SessionPlan, handle: Any, elapsed: float) -> None:
        self.arrived[plan.device] = handle
        self.end(plan, "completed", elapsed)
        if len(self.arrived) == self.k:
            self.enough.succeed()

    def end(self, plan: SessionPlan, outcome: str, elapsed: float) -> None:
        self.ended[plan.device] = (outcome, elapsed)
