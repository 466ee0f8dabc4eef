"""Federated training on a simulated clock (SimPy), synchronous or asynchronous. Time unit: simulated seconds.

Scenario, synchronous strategies: each round the server invites ceil(1.3 K) devices among those that are
available, charged enough and able to hold the model in memory. Each invited device downloads the global
adapter over its cell's downlink, shared with the other downloads in the cell; trains for the scenario's
local steps at its own speed; and uploads its update over the cell's shared uplink, then the cell's
backhaul carries it to the server. A session can end early, at a sampled instant, for a recorded reason:
the device went offline (its availability pattern), failed, ran its battery down to the cutoff, or had no
usable link (SNR below the outage threshold after fading). With the `deadline` policy the round closes
when K updates have arrived or the deadline passes; with `k_fastest` (FedScale) it closes at the K-th
arrival. Whoever is still working then is cut off as a straggler. With at least `min_reports` updates the
server aggregates them into a new global version; otherwise the round is abandoned. Under FedProx a
straggler that would miss the deadline trains only the steps that fit and sends that partial work.

Scenario, asynchronous strategies (FedBuff, FedAsync): the server keeps `concurrency` devices at work.
Each starts from the global version current when it is invited; whenever a session ends, another device
is invited. Each arrival is admitted (or dropped as too stale) into a buffer, and the server aggregates
whenever the strategy says the buffer is ready. There are no deadlines: stragglers are late, not lost.

Every transfer crosses a `fleet.cells.Link`: the cell's shared band, a recorded trace, the cell's multicast of
the global adapter, or, for servers standing at the cell site, the backhaul alone. A session asks each the
same way and waits for the Delivery (bits, air time, radio energy) it answers with.

The clock decides first, the host works second: a session's fate depends only on sampled device, channel
and hazard draws, never on training results, so the emulator asks the worker pool to train a client only
once its update has arrived in time. Training is a pure function of (global version, client, round, seed),
so when it is submitted changes no number, and a dropped session costs no host compute. Without a host
(systems-only mode) nothing is trained: timing, bytes and energy only.

Systems-only runs use these servers on a compiled clock instead of SimPy (fleet/fast_emulator.py), with the
same sessions; trained runs, and `run.engine: events`, use this one.

Checkpoints: every `checkpoint_every` rounds the emulator hands its sink what training has built (global
adapter, strategy state, what devices keep, the start adapters of sessions still at work) together with a
journal of what each server step decided from training results (`fleet.replay.Journal`). A resumed run
replays the clock from time 0 with nothing trained, taking those decisions from the journal, until it
reaches the checkpoint; it checks that the replayed clock, version and batteries equal the saved ones, loads
the saved state and goes on training. A stop asked for (`stop_requested`) is taken at the end of a live server
step, with a checkpoint of it, so a stopped run loses no finished round.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any, Callable, Protocol

import numpy as np
import simpy
import torch

from aggregation import AggregationError, ClientConfig, Strategy
from aggregation.screening import DEFAULT_NORM_FACTOR, screen_updates
from fleet.cells import CellNetwork, Link, Multicast, Radio
from fleet.clients import ClientSide
from fleet.devices import Fleet
from fleet.replay import Journal, Step
from fleet.rng import stream
from fleet.selection import DeviceHistory, SelectionContext
from fleet.trainer import TrainJob, TrainResult
from network_models import NO_POWER, Delivery, RadioPower, fading_gain_db, snr_db

NOT_EVALUATED = {"eval_loss": float("nan"), "eval_ppl": float("nan"), "personal_loss": float("nan"),
                 "personal_global_loss": float("nan")}
OUTCOMES = ("completed", "offline", "device_failure", "battery", "link_outage", "missed_deadline", "surplus",
            "stale", "rejected_nonfinite", "rejected_norm")

# An asynchronous server that receives no update for this long is stuck: no device it can invite ever
# completes. A week spans every daily availability and charging pattern.
STALL_LIMIT_S = 7 * 86_400.0
# Devices (of those able to train) whose own held-out text each evaluated version is scored on, with their
# personal part: a fixed sample, so that versions compare on the same text; and windows of each one's text.
PERSONAL_EVAL_CLIENTS = 32
PERSONAL_EVAL_WINDOWS = 4
# Seconds a server with nobody to invite waits before asking again, when no round deadline gives the pace.
RETRY_S = 60.0
# Under a local time budget, a budget that is an exact multiple of the step time fits that many steps,
# whatever the division rounds to.
STEP_FIT_TOLERANCE = 1e-9
# Floor of the rate a device expects for its upload, bit/s: a device in outage plans with a very long upload
# rather than a division by zero.
MIN_EXPECTED_RATE_BPS = 1.0


class Host(Protocol):
    """Where real training happens (fleet.pool.WorkerPool); handles are opaque."""

    def put(self, tensor: torch.Tensor | None) -> Any: ...
    def train(self, job: TrainJob, start: Any, base_delta: Any) -> Any: ...
    def evaluate(self, adapter: Any, base_delta: Any) -> Any: ...
    def evaluate_clients(self, adapter: Any, groups: Any, clients: list, n_windows: int,
                         base_delta: Any) -> Any: ...
    def get(self, handles: list) -> list: ...


class Probe(Protocol):
    """A measurement of each evaluated version besides the held-out loss: called with the version's adapter
    and base handles when it is evaluated (work may start on the host then), it returns a function that gives
    the row's extra columns once the row is recorded."""

    def __call__(self, adapter: Any, base_delta: Any) -> Callable[[], dict]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...


class Sink(Protocol):
    """Where records go (analysis.recorder.RunRecorder)."""

    def round(self, row: dict) -> None: ...
    def sessions(self, columns: dict[str, list]) -> None: ...
    def checkpoint(self, state: dict) -> None: ...


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
    # Updates with a norm above this multiple of their cohort's median norm are rejected (None: never);
    # updates with NaN or Inf entries always are (aggregation.screening).
    reject_norm_factor: float | None = DEFAULT_NORM_FACTOR
    # Heterogeneous local work (FedNova, FedProx): each device trains the steps that fit in this many seconds
    # at its own speed, at least one and at most local_steps. None: every device trains local_steps.
    local_time_budget_s: float | None = None
    # A planning horizon (scenarios/horizon.py): no round opens, and no asynchronous server step waits, at or
    # after this simulated time, whatever `rounds` says. inf: `rounds` alone ends the run.
    until_s: float = float("inf")


@dataclass(frozen=True)
class SessionCost:
    """What one client session moves and computes (for the emulated architecture): a number for every
    device, or one per device where ranks differ."""

    flops: float
    bytes_down: int | np.ndarray
    bytes_up: int | np.ndarray
    # What a full-rank device downloads: stacked factors (FLoRA) are the same download whatever the rank of
    # the device that receives them. None: the largest of bytes_down.
    bytes_down_full_rank: int | None = None


class EmulationStalled(RuntimeError):
    """The run cannot go on: no update reaches the server however long it waits."""


class StopRequested(Exception):
    """The run was asked to stop, and did so at the end of a server step, with a checkpoint of it."""

    def __init__(self, rnd: int):
        super().__init__(f"stopped after round {rnd}")
        self.round = rnd


class Dropped(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Direction(Enum):
    """Which way a transfer goes; its value is the session's phase meanwhile."""

    DOWN = "download"
    UP = "upload"


class SessionLog:
    """One device's part in one round, filled in as it happens."""

    __slots__ = ("device", "round", "base_version", "t_start", "t_end", "outcome", "phase", "download_s",
                 "train_s", "upload_s", "bytes_down", "bytes_up", "bytes_down_air", "bytes_up_air", "energy_j",
                 "uplink_mbps", "downlink_mbps", "steps", "staleness", "charge_start", "charge_end")
    COLUMNS = __slots__
    # Each column's type, so that a step with no session records the same types as one with many.
    DTYPES = {c: object if c in ("outcome", "phase") else np.int64 if c in (
        "device", "round", "base_version", "bytes_down", "bytes_up", "bytes_up_air", "steps", "staleness") else float
        for c in COLUMNS}

    def __init__(self, device: int, rnd: int, base_version: int, t_start: float):
        self.device, self.round, self.base_version, self.t_start = device, rnd, base_version, t_start
        self.t_end, self.outcome, self.phase = t_start, "", "download"
        self.download_s = self.train_s = self.upload_s = 0.0
        self.bytes_down = self.bytes_up = 0
        self.bytes_down_air = 0.0  # this session's share of what the cell's downlink sent (multicast: 1/n)
        self.bytes_up_air = 0  # what crossed the cell's uplink (devices at the site use the backhaul alone)
        self.energy_j = 0.0
        self.uplink_mbps = self.downlink_mbps = float("nan")  # bits over air time: the rate each transfer got
        self.steps = 0  # local steps trained (fewer than asked for: partial work)
        self.staleness = -1  # server versions published while it trained; -1: no update arrived
        self.charge_start = self.charge_end = float("nan")  # battery fraction; NaN on mains power


@dataclass(frozen=True)
class SessionPlan:
    """An invitee's draws for one session, made when it is invited."""

    device: int
    multicast: Multicast | None  # its cell's broadcast of the global adapter, if the radio multicasts
    hazard_s: float  # seconds until the device leaves (inf: it stays)
    hazard: str  # why it leaves then: "offline" or "device_failure"
    fade_up_db: float  # fading gain of its upload's channel, dB
    fade_down_db: float  # and of its download's
    steps: int  # local steps asked for
    train_s: float  # seconds they take at the device's speed
    upload_estimate_s: float  # its upload when the round's K devices share the cell's uplink (partial work)


@dataclass(frozen=True)
class Draws:
    """The invitees' draws for one round (or one invitation of an asynchronous server), one entry each."""

    offline_s: np.ndarray  # seconds until the device's availability ends (inf: never)
    hazard_s: np.ndarray  # seconds until it leaves, offline or failed, whichever comes first
    offline: np.ndarray  # bool: it leaves because it goes offline (else: it fails)
    fade_up_db: np.ndarray
    fade_down_db: np.ndarray
    steps: np.ndarray
    train_s: np.ndarray
    upload_estimate_s: np.ndarray
    broadcasts: dict[int, tuple[float, float, int]]  # cell -> its broadcast's (bits, rate bit/s, receivers)


@dataclass
class Arrival:
    """An update that reached the server: its session, what it was asked, and the training handle."""

    log: SessionLog
    config: ClientConfig
    handle: Any


class Cohort:
    """Sessions invited together, from one global version. Synchronous rounds have one cohort; an
    asynchronous server opens one each time it invites."""

    def __init__(self, env: simpy.Environment, key: int, version: int, adapter: torch.Tensor, adapter_ref: Any,
                 base_ref: Any, deadline_at: float, k: int | None):
        self.key, self.version, self.adapter = key, version, adapter
        self.adapter_ref, self.base_ref, self.deadline_at, self.k = adapter_ref, base_ref, deadline_at, k
        self.enough = env.event()  # the K-th arrival (synchronous rounds)


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
        clients: ClientSide,
        host: Host | None,
        sink: Sink,
        ranks: np.ndarray | None = None,
        personal_eval_clients: int = PERSONAL_EVAL_CLIENTS,
        probes: tuple[Probe, ...] = (),
        on_progress=lambda row: None,
        checkpoint_every: int = 0,
        resume: dict | None = None,
        stop_requested: Callable[[], bool] = lambda: False,
    ):
        """`checkpoint_every`: rounds between checkpoints (0: none). `resume`: a checkpoint's state, to go on
        from. `stop_requested`: asked after each server step; when it holds, the emulator checkpoints that
        step and raises StopRequested."""
        self.env = simpy.Environment()
        self.seed, self.fleet, self.num_samples = seed, fleet, num_samples
        self.rules, self.radio, self.cost, self.selector = rules, radio, cost, selector
        self.strategy, self.clients, self.host, self.sink = strategy, clients, host, sink
        self.probes, self.on_progress = probes, on_progress
        self.adapter = adapter
        self.version = 0
        # The LoRA rank each device can train at (model.memory_policy); 0: it cannot train. None: all full rank.
        self.ranks = ranks
        self.eligible = np.ones(len(fleet), bool) if ranks is None else ranks > 0
        self.bytes_down = np.broadcast_to(np.asarray(cost.bytes_down, dtype=np.int64), len(fleet))
        self.bytes_up = np.broadcast_to(np.asarray(cost.bytes_up, dtype=np.int64), len(fleet))
        self.history = DeviceHistory.empty(len(fleet))
        self.bytes_down_full_rank = int(self.bytes_down.max() if cost.bytes_down_full_rank is None
                                        else cost.bytes_down_full_rank)
        self.cells = CellNetwork(self.env, seed, fleet, radio)  # path losses, interference, links
        self._charged_until = 0.0
        self._pending_eval: tuple[dict, Any, Any, list] | None = None
        candidates = np.flatnonzero(self.eligible)
        self._own_eval_devices = np.sort(stream(seed, "own-eval").choice(
            candidates, size=min(personal_eval_clients, len(candidates)), replace=False))
        self._adapter_ref = self._base_ref = None
        self._ended: list[SessionLog] = []  # sessions ended since the server last looked
        self._finished: list[int] = []  # devices whose session ended since the asynchronous server woke
        self._arrivals: list[Arrival] = []
        self._unrecorded_payload = 0  # payload bytes of a rejected buffer, booked with the next row
        self._wake: simpy.Event | None = None
        self._at_work: dict[int, Cohort] = {}  # device -> the cohort of the session it is in
        self.checkpoint_every, self.stop_requested = checkpoint_every, stop_requested
        # Per server step, what it decided from training results; resuming, the replay up to the checkpoint.
        self.journal = Journal(resume)

    def run(self) -> torch.Tensor:
        """Run until `rules.rounds` server versions (or rounds) are done, or the clock reaches `rules.until_s`;
        returns the final global adapter."""
        story = self.asynchronous_server() if self.strategy.traits.asynchronous else self.synchronous_server()
        server = self.env.process(story)
        self.env.run(until=server)  # pending hazard timers of closed rounds are not waited for
        self._finish_eval()
        return self.adapter

    # --- the server's stories ----------------------------------------------------------------------

    def synchronous_server(self):
        self._start()
        for rnd in range(1, self.rules.rounds + 1):
            if self.env.now >= self.rules.until_s:
                break
            opened = self.env.now
            self._charge()
            invited = self.select(rnd)
            deadline_at = opened + self.rules.deadline_s if self.rules.policy == "deadline" else float("inf")
            cohort = self._cohort(rnd, deadline_at, self.rules.clients_per_round)
            sessions = [self.env.process(self.session(cohort, plan)) for plan in self.plan(rnd, invited)]
            waits = [cohort.enough, self.env.all_of(sessions)]
            if self.rules.policy == "deadline":
                waits.append(self.env.timeout(self.rules.deadline_s))
            if not sessions:  # nobody to invite: wait before asking again
                waits = [self.env.timeout(self._retry_s())]
            yield self.env.any_of(waits)
            reason = "surplus" if cohort.enough.triggered else "missed_deadline"
            for proc in sessions:
                if proc.is_alive:
                    proc.interrupt(reason)
            yield self.env.timeout(0)  # let the cut-off sessions record themselves
            arrivals, self._arrivals = sorted(self._arrivals, key=lambda a: a.log.device), []
            aggregate = len(arrivals) >= self.rules.min_reports
            if aggregate:
                yield from self._extra_round_trips()
            self._close(rnd, opened, arrivals if aggregate else [])

    def asynchronous_server(self):
        """Keep `concurrency` devices at work; aggregate whenever the strategy's buffer is ready."""
        self._start()
        concurrency = self.strategy.traits.concurrency or self.rules.selected
        busy: dict[int, simpy.Process] = {}
        buffer: list[Arrival] = []
        invitations, opened, last_update = 0, 0.0, 0.0
        while self.version < self.rules.rounds and self.env.now < self.rules.until_s:
            self._charge()
            if len(busy) < concurrency:
                invitations += 1
                invited = self.select(invitations, busy=np.fromiter(busy, dtype=np.int64),
                                      k=concurrency - len(busy))
                cohort = self._cohort(invitations, float("inf"), None)
                for plan in self.plan(invitations, invited):
                    busy[plan.device] = self.env.process(self.session(cohort, plan))
            self._wake = self.env.event()
            yield self._wake if busy else self._wake | self.env.timeout(self._retry_s())
            for device in self._finished:
                busy.pop(device, None)
            self._finished = []
            if self._arrivals:
                last_update = self.env.now
            elif self.env.now - last_update > STALL_LIMIT_S:
                raise EmulationStalled(self._stalled_message())
            elif not busy:  # everyone invited ended without an update: wait before inviting again
                yield self.env.timeout(self._retry_s())
            buffer += self._arrivals
            self._arrivals = []
            if buffer and self.strategy.ready(len(buffer)):
                if self._close(self.version + 1, opened, sorted(buffer, key=lambda a: a.log.device)):
                    opened = self.env.now
                buffer = []
        for proc in busy.values():  # the run has its versions: whoever still works is not needed
            if proc.is_alive:
                proc.interrupt("surplus")
        yield self.env.timeout(0)
        self._record_sessions(self.version)
        self._charge()

    def _start(self) -> None:
        """Publish version 0 and evaluate it (a replayed run has its row on record already)."""
        self._publish()
        if not self.journal.replaying:
            self._evaluate(self._row(0, 0.0, self._ended_columns(), [], False))

    def _stalled_message(self) -> str:
        """Why no update arrives: who cannot be invited, and how the sessions of those who were ended."""
        fleet, now = self.fleet, self.env.now
        able = np.flatnonzero(self.eligible)
        low = int((fleet.charge_fraction(able) < self.rules.min_charge).sum())
        away = int((~fleet.available(now, able)).sum())
        ended: dict[str, int] = {}
        for outcome in self._ended_outcomes():
            ended[outcome] = ended.get(outcome, 0) + 1
        how = ", ".join(f"{n} {outcome}" for outcome, n in sorted(ended.items())) or "none"
        return (f"no update reached the asynchronous server in {STALL_LIMIT_S / 86_400:.0f} simulated days "
                f"(t = {now:.0f} s, version {self.version} of {self.rules.rounds}). Of the {len(able)} devices able "
                f"to train, {low} are below fleet.min_charge and {away} are unavailable now; sessions ended "
                f"since the last update: {how}. Check fleet.min_charge, the classes' availability and charging, "
                f"and the radio (network.outage_snr_db, powers, cell_radius_m)")

    def _retry_s(self) -> float:
        return self.rules.deadline_s if np.isfinite(self.rules.deadline_s) else RETRY_S

    def _cohort(self, key: int, deadline_at: float, k: int | None) -> Cohort:
        return Cohort(self.env, key, self.version, self.adapter, self._adapter_ref, self._base_ref, deadline_at, k)

    def _extra_round_trips(self):
        """Protocols with message rounds beyond the upload (secure aggregation) wait a round trip (there and
        back over the backhaul) for each."""
        trips = self.strategy.traits.extra_round_trips
        if trips:
            yield self.env.timeout(trips * 2 * self.radio.backhaul_latency_s)

    # --- a device's story --------------------------------------------------------------------------

    def session(self, cohort: Cohort, plan: SessionPlan):
        """One device's session: download, train, upload, unless something ends it first."""
        d = plan.device
        log = SessionLog(d, cohort.key, cohort.version, self.env.now)
        self._at_work[d] = cohort
        log.charge_start = self.fleet.battery_level(d)
        hazard = self._arm_hazard(self.env.active_process, log, plan.hazard_s, plan.hazard, cohort.deadline_at)
        fleet, radio, cells = self.fleet, self.radio, self.cells
        cls, cell = fleet.classes[fleet.cls[d]], fleet.cell[d]
        config = self.strategy.configure(d, cohort.version)
        if cells.at_site[d]:  # a server at the cell site: the backhaul both ways, no radio
            downlink, uplink, radio_down, radio_up = cells.backhaul, cells.backhaul, NO_POWER, NO_POWER
        else:
            downlink, uplink = plan.multicast or cells.downlinks[cell], cells.uplinks[cell]
            radio_down, radio_up = cls.radio_down, cls.radio_up
        try:
            yield from self.transfer(log, Direction.DOWN, downlink, self._download_bytes(d), radio.bs_power_dbm,
                                     cells.loss_db[d] - plan.fade_down_db, radio_down, cells.interference_down[d])
            log.phase = "train"
            log.steps, train_s = self._local_work(cohort, plan, config)
            yield from self.train_locally(log, self.env.timeout(train_s), cls.compute_power_w)
            yield from self.transfer(log, Direction.UP, uplink, self.bytes_up[d], cls.tx_power_dbm,
                                     cells.loss_db[d] - plan.fade_up_db, radio_up, cells.interference_up[cell])
            if not cells.at_site[d]:
                log.phase = "backhaul"  # the device is done; the cell's backhaul carries the update on
                yield self.env.timeout(radio.backhaul_latency_s + 8 * self.bytes_up[d] / radio.backhaul_bps)
            if cohort.enough.triggered:  # arrived in the same instant as the K-th
                raise Dropped("surplus")
            if not self.strategy.admit(cohort.version, self.version):
                raise Dropped("stale")
            log.outcome, log.phase, log.staleness = "completed", "done", self.version - cohort.version
            self._arrivals.append(Arrival(log, config, self._train(cohort, d, log.steps, config)))
            if cohort.k is not None and len(self._arrivals) == cohort.k:
                cohort.enough.succeed()
        except Dropped as drop:
            log.outcome = drop.reason
        except simpy.Interrupt as stop:
            log.outcome = stop.cause
        hazard.clear()  # its timer may lie in the queue for hours more: let it hold nothing
        log.t_end = self.env.now
        log.charge_end = self.fleet.battery_level(d)
        del self._at_work[d]
        self._ended.append(log)
        self._finished.append(d)
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def _local_work(self, cohort: Cohort, plan: SessionPlan, config: ClientConfig) -> tuple[int, float]:
        """Local steps and their duration. With partial work (FedProx), a device that would miss the
        deadline trains only the steps that leave time for its upload (estimated at its share of the
        uplink when the round's K devices upload at once)."""
        steps, train_s = plan.steps, plan.train_s
        if config.partial_work and np.isfinite(cohort.deadline_at):
            step_s = train_s / steps
            fit = int((cohort.deadline_at - self.env.now - plan.upload_estimate_s) // step_s)
            if 1 <= fit < steps:
                return fit, fit * step_s
        return steps, train_s

    def _download_bytes(self, d: int) -> int:
        """What the device downloads: FLoRA's stacked factors grow with the cohort that made them."""
        values = self.journal.download_values(self.strategy)
        if values == self.clients.layout.size:
            return int(self.bytes_down[d])
        # A stack is made of every contributor's factors, whatever the rank of the device that receives it.
        return int(self.bytes_down_full_rank * values / self.clients.layout.size)

    def _arm_hazard(self, session: simpy.Process, log: SessionLog, after_s: float, reason: str,
                    deadline_at: float) -> list:
        """The sampled instant at which the device leaves; it only matters while the device still has work
        to do (once its update is on the backhaul, leaving changes nothing). Returns what the timer holds, for
        the session to clear when it ends. No timer is set past the round's deadline, where the session is
        over whatever happens: an ended session's timer stays in SimPy's queue until its instant, hours or
        days of simulated time away, and a long run would pile them up."""
        armed = [session, log]

        def strike(_) -> None:
            if armed and armed[0].is_alive and armed[1].phase in ("download", "train", "upload"):
                armed[0].interrupt(reason)

        if np.isfinite(after_s) and self.env.now + after_s <= deadline_at:
            self.env.timeout(after_s).callbacks.append(strike)
        return armed

    def transfer(self, log: SessionLog, direction: Direction, link: Link, nbytes: int, tx_power_dbm: float,
                 loss_db: float, power: RadioPower, interference_mw_per_hz: float):
        """Send over a link. A shared link integrates the radio's power over the rates the transfer had as
        others came and went; the battery cutoff is judged at the radio's highest power, so a transfer is
        never cut later than the battery allows."""
        log.phase = direction.value
        if link.snr_applies and snr_db(self.radio.outage_reference_hz, tx_power_dbm, loss_db,
                                       self.radio.noise_figure_db) < self.radio.outage_snr_db:
            raise Dropped("link_outage")
        done = link.send(log.device, 8.0 * nbytes, tx_power_dbm, loss_db, power, interference_mw_per_hz)
        try:
            yield from self._until_cutoff(log.device, done, power.max_w)
        except BaseException:
            self._book(log, direction, link.cancel(log.device), link.air_share)
            raise
        self._book(log, direction, done.value, link.air_share)

    def _book(self, log: SessionLog, direction: Direction, delivery: Delivery, air_share: float) -> None:
        """What a transfer moved, how long and at what rate, and the energy its radio drew. `air_share`: the
        part of it the cell's radio carried for this device (`Link.air_share`)."""
        nbytes = int(round(delivery.bits / 8))
        if direction is Direction.DOWN:
            log.bytes_down, log.downlink_mbps = nbytes, delivery.mean_rate_bps / 1e6
            log.bytes_down_air = nbytes * air_share
            log.download_s += delivery.seconds
        else:
            log.bytes_up, log.uplink_mbps = nbytes, delivery.mean_rate_bps / 1e6
            log.bytes_up_air = round(nbytes * air_share)
            log.upload_s += delivery.seconds
        self._drain(log, delivery.energy_j)

    def train_locally(self, log: SessionLog, event, power_w: float):
        """Train until `event` while drawing `power_w`, unless the battery reaches its cutoff first."""
        start = self.env.now
        try:
            yield from self._until_cutoff(log.device, event, power_w)
        finally:
            seconds = self.env.now - start
            log.train_s += seconds
            self._drain(log, power_w * seconds)

    def _until_cutoff(self, d: int, event, power_w: float):
        """Wait for `event`, unless drawing `power_w` the battery reaches its cutoff first (Dropped)."""
        budget_s = self.fleet.seconds_to_cutoff(d, power_w, self.env.now, self.rules.cutoff_charge)
        if np.isfinite(budget_s):
            fired = yield event | self.env.timeout(budget_s)
            if event not in fired:
                raise Dropped("battery")
        else:
            yield event

    def _drain(self, log: SessionLog, energy_j: float) -> None:
        log.energy_j += energy_j
        self.fleet.drain(log.device, energy_j)

    # --- the clock's decisions ---------------------------------------------------------------------

    def select(self, key: int, busy: np.ndarray | None = None, k: int | None = None) -> np.ndarray:
        """Invite up to k (default: the round's selection) devices among those available, eligible, charged
        enough and not already at work; sorted device ids."""
        fleet, rules, now = self.fleet, self.rules, self.env.now
        ok = self.eligible & (fleet.charge_fraction(slice(None)) >= rules.min_charge)
        if busy is not None:
            ok[busy] = False
        candidates = np.flatnonzero(ok)
        candidates = candidates[fleet.available(now, candidates)]
        if rules.only_while_charging:
            batteries = np.isfinite(fleet.battery_wh[candidates])
            candidates = candidates[~batteries | fleet.charging(now, candidates)]
        if len(candidates) == 0:
            return candidates
        ctx = SelectionContext(
            candidates=candidates,
            history=self.history,
            charge_fraction=lambda: fleet.charge_fraction(candidates),
            link_rate_bps=lambda: self.cells.uplink_rate_bps(candidates, self.radio.uplink_hz),
            flops=lambda: fleet.flops[candidates],
            samples=lambda: self.num_samples[fleet.data_client[candidates]],
        )
        return np.sort(self.selector.select(ctx, k or rules.selected, stream(self.seed, "select", key)))

    def plan(self, rnd: int, devices: np.ndarray) -> list[SessionPlan]:
        """Each invitee's draws for this round (`draws`), one SessionPlan each."""
        draws = self.draws(rnd, devices)
        multicasts = {cell: Multicast(self.env, *broadcast) for cell, broadcast in draws.broadcasts.items()}
        return [
            SessionPlan(
                device=int(d),
                multicast=multicasts.get(int(self.fleet.cell[d])),
                hazard_s=float(draws.hazard_s[i]),
                hazard="offline" if draws.offline[i] else "device_failure",
                fade_up_db=float(draws.fade_up_db[i]),
                fade_down_db=float(draws.fade_down_db[i]),
                steps=int(draws.steps[i]),
                train_s=float(draws.train_s[i]),
                upload_estimate_s=float(draws.upload_estimate_s[i]),
            )
            for i, d in enumerate(devices)
        ]

    def draws(self, rnd: int, devices: np.ndarray) -> Draws:
        """Each invitee's draws for this round, all vectorised: fading per transfer, the first hazard
        (availability ends or the device fails), training time from FLOPs and the device's speed, and each
        cell's broadcast when the radio multicasts."""
        fleet, n = self.fleet, len(devices)
        offline_s = fleet.offline_after(self.env.now, devices)
        rate = fleet.per_class("failures_per_hour", devices) / 3600.0
        with np.errstate(divide="ignore"):
            failure_s = stream(self.seed, "failure", rnd).exponential(1.0, n) / rate
        fade_up = fading_gain_db(stream(self.seed, "fading-up", rnd), self.radio.fading, n, self.radio.k_factor_db)
        fade_down = fading_gain_db(stream(self.seed, "fading-down", rnd), self.radio.fading, n, self.radio.k_factor_db)
        steps, train_s = self._steps(devices)
        # What a device expects its upload to take when the round's K devices share the cell's uplink.
        upload_rate = self.cells.uplink_rate_bps(devices, self.radio.uplink_hz / self.rules.clients_per_round, fade_up)
        broadcasts = self.cells.broadcasts(devices, fade_down, self._download_bytes) if self.radio.multicast else {}
        return Draws(offline_s=offline_s, hazard_s=np.minimum(offline_s, failure_s), offline=offline_s <= failure_s,
                     fade_up_db=fade_up, fade_down_db=fade_down, steps=steps, train_s=train_s,
                     upload_estimate_s=8.0 * self.bytes_up[devices] / np.maximum(upload_rate, MIN_EXPECTED_RATE_BPS),
                     broadcasts=broadcasts)

    def _steps(self, devices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Local steps of each invitee and the seconds they take at its speed: local_steps each, or under a
        local time budget the steps that fit in it (at least one, at most local_steps)."""
        steps = np.full(len(devices), self.rules.local_steps)
        step_s = self.cost.flops / self.rules.local_steps / self.fleet.flops[devices]
        if self.rules.local_time_budget_s is not None:
            fit = np.floor(self.rules.local_time_budget_s / step_s + STEP_FIT_TOLERANCE).astype(np.int64)
            steps = np.clip(fit, 1, self.rules.local_steps)
        return steps, steps * step_s

    # --- the server's books ------------------------------------------------------------------------

    def _charge(self) -> None:
        self.fleet.charge(self._charged_until, self.env.now)
        self._charged_until = self.env.now

    @property
    def _trainer(self) -> Host | None:
        """The host, when it trains: none in systems-only mode, nor while the clock is replayed."""
        return None if self.journal.replaying else self.host

    def _publish(self) -> None:
        """Put the current global adapter (and FLoRA's merged base) where workers can read it."""
        host = self._trainer
        if host is not None:
            self._adapter_ref = host.put(self.adapter)
            self._base_ref = host.put(self.strategy.base_delta)

    def _train(self, cohort: Cohort, d: int, steps: int, config: ClientConfig):
        """Ask the host to train what the clock says arrived; a handle to the result."""
        host = self._trainer
        if host is None:
            return None
        start = cohort.adapter_ref
        if self.clients.keeps_personal:
            start = host.put(self.clients.start(d, cohort.adapter))
        job = TrainJob(client=d, data_client=int(self.fleet.data_client[d]), round=cohort.key,
                       base_version=cohort.version, steps=steps,
                       rank=None if self.ranks is None else int(self.ranks[d]), prox_mu=config.prox_mu,
                       groups=self.strategy.groups, poison=bool(self.clients.poisons(d)))
        return host.train(job, start, cohort.base_ref)

    def _ended_outcomes(self) -> list[str]:
        """How the sessions ended since the server last looked ended."""
        return [log.outcome for log in self._ended]

    def _ended_columns(self) -> dict[str, np.ndarray]:
        """The sessions ended since the server last looked, as columns (SessionLog.COLUMNS), by device."""
        logs, self._ended, self._finished = sorted(self._ended, key=lambda s: (s.device, s.t_start)), [], []
        return {c: np.array([getattr(s, c) for s in logs], dtype=SessionLog.DTYPES[c]) for c in SessionLog.COLUMNS}

    def _record_sessions(self, rnd: int) -> dict[str, np.ndarray]:
        """The sessions ended since the server last looked, by device, on record (replayed sessions are on
        record already); as columns."""
        columns = self._ended_columns()
        devices = np.asarray(columns["device"], dtype=np.int64)
        if not self.journal.replaying:
            names = np.array([c.name for c in self.fleet.classes], dtype=object)
            self.sink.sessions({**columns, "round": np.full(len(devices), rnd, dtype=np.int64),
                                "device_class": names[self.fleet.cls[devices]],
                                "cell": self.fleet.cell[devices].astype(np.int64),
                                "data_client": self.fleet.data_client[devices].astype(np.int64)})
        done = np.asarray(columns["outcome"]) == "completed"
        self.history.last_duration_s[devices[done]] = (np.asarray(columns["t_end"], dtype=float)[done]
                                                       - np.asarray(columns["t_start"], dtype=float)[done])
        return columns

    def _close(self, rnd: int, opened: float, arrivals: list[Arrival]) -> bool:
        """Aggregate what arrived and passed the screen (nothing: an abandoned round), record the sessions
        and the round. An asynchronous server whose whole buffer was rejected records nothing yet: its
        sessions go into the row of the next version, so that every row has its own round number. Returns
        whether a row was recorded."""
        if self.journal.replaying:
            return self._close_replayed(rnd, arrivals)
        asynchronous = self.strategy.traits.asynchronous
        train_loss, payload, error = float("nan"), 0, ""
        rejected, losses = [], []  # what this step decides from training results (the journal)
        if arrivals and self.host is not None:
            results: list[TrainResult] = self.host.get([a.handle for a in arrivals])
            sent = [self.clients.send(r, a.config, int(self.num_samples[r.job.data_client]))
                    for r, a in zip(results, arrivals)]
            payload = sum(n for _, n in sent)  # rejected updates crossed the air all the same
            kept = self._screen(arrivals, [u for u, _ in sent])
            rejected = [[i, arrivals[i].log.outcome] for i in sorted(set(range(len(arrivals))) - set(kept))]
            arrivals, results, sent = ([seq[i] for i in kept] for seq in (arrivals, results, sent))
            if len(arrivals) < self._fewest_updates():
                if asynchronous:
                    self._unrecorded_payload += payload
                    self._note(rejected, losses, recorded=False, published=False)
                    return False
                error, arrivals = f"{len(arrivals)} update(s) left after screening, too few to aggregate", []
            else:
                try:
                    self.adapter = self.strategy.aggregate(self.adapter, self.version, [u for u, _ in sent])
                except AggregationError as err:  # the protocol aborts this step (secure aggregation short of
                    error, arrivals = str(err), []  # survivors); the run goes on from the same version
            if results:
                train_loss = float(np.mean([r.loss_last for r in results]))
            for r in results:
                self.history.last_loss[r.job.client] = r.loss_first
            losses = [[r.job.client, float(r.loss_first)] for r in results]
        # Bytes of the trained model's updates (the proxy's), beside bytes_up of the emulated model.
        payload, self._unrecorded_payload = payload + self._unrecorded_payload, 0
        sessions = self._record_sessions(rnd)
        if arrivals:
            self.version += 1
            self._publish()
        self._note(rejected, losses, recorded=True, published=bool(arrivals))
        row = self._row(rnd, opened, sessions, arrivals, not arrivals)
        row.update(train_loss=train_loss, trained_payload_bytes=payload, aggregation_error=error,
                   **self.strategy.metrics())
        last = self.version >= self.rules.rounds if asynchronous else rnd == self.rules.rounds
        if not arrivals or (self.version % self.rules.eval_every and not last):
            self._finish_eval()  # rows stay in round order
            self._emit({**row, **NOT_EVALUATED})
        else:
            self._evaluate(row)  # without a host, this records the row without a loss
        stopping = self.stop_requested()
        if stopping or (self.checkpoint_every and rnd % self.checkpoint_every == 0):
            self._checkpoint()
        if stopping:
            raise StopRequested(rnd)
        return True

    def _screen(self, arrivals: list[Arrival], updates: list) -> list[int]:
        """Indices of the updates fit to aggregate; the others' sessions are marked rejected, with the reason.
        Under secure aggregation the server never sees an update alone, so it cannot screen them."""
        if not self.strategy.traits.sees_updates:
            return list(range(len(updates)))
        screening = screen_updates([u.delta for u in updates], self.rules.reject_norm_factor)
        for i in screening.nonfinite:
            arrivals[i].log.outcome = "rejected_nonfinite"
        for i in screening.too_large:
            arrivals[i].log.outcome = "rejected_norm"
        return list(screening.accepted)

    def _fewest_updates(self) -> int:
        """Fewest screened updates a server step needs: the strategy's own minimum, and for synchronous
        rounds `min_reports` as well."""
        traits = self.strategy.traits
        return max(traits.min_updates, 1 if traits.asynchronous else self.rules.min_reports)

    def _row(self, rnd: int, opened: float, sessions: dict[str, np.ndarray], arrivals: list[Arrival],
             abandoned: bool) -> dict:
        """A server step's row from its sessions' columns (`_record_sessions`)."""
        outcomes = np.asarray(sessions["outcome"], dtype=object)
        devices = np.asarray(sessions["device"], dtype=np.int64)
        staleness = self._staleness(arrivals)
        # sent by the network: a cell's broadcast once for all its receivers, a site's backhaul per copy
        down = np.where(self.cells.at_site[devices], np.asarray(sessions["bytes_down"], dtype=float),
                        np.asarray(sessions["bytes_down_air"], dtype=float))
        return {
            "round": rnd,
            "version": self.version,
            "t_start": opened,
            "t_end": self.env.now,
            "duration_s": self.env.now - opened,
            "selected": len(devices),  # sessions that ended in this round (asynchronous: since the last version)
            "completed": len(arrivals),
            **{outcome: int((outcomes == outcome).sum()) for outcome in OUTCOMES if outcome != "completed"},
            "abandoned": abandoned,
            "bytes_up": int(np.sum(sessions["bytes_up"], dtype=np.int64)),
            "bytes_down": int(round(float(down.sum()))),
            "energy_j": float(np.sum(sessions["energy_j"], dtype=float)),
            "staleness_mean": float(np.mean(staleness)) if staleness else float("nan"),
            "staleness_max": int(max(staleness)) if staleness else 0,
            **{f"charge_{name}": level for name, level in self.fleet.mean_battery_level().items()},
        }

    def _staleness(self, arrivals: list[Arrival]) -> list[int]:
        return [a.log.staleness for a in arrivals]

    def _evaluate(self, row: dict) -> None:
        """Held-out loss of the new version, computed while the next round trains and recorded after it:
        on the shared held-out windows, and on a fixed sample of devices' own held-out text with their
        personal part (for strategies without one, the global adapter alone); and what the probes measure."""
        if self.host is None:
            self._emit({**row, **NOT_EVALUATED})
            return
        ref = self.host.evaluate(self._adapter_ref, self._base_ref)
        mine = [(int(self.fleet.data_client[d]),
                 self.clients.personal_part(int(d)) if self.clients.keeps_personal else None)
                for d in self._own_eval_devices]
        own = self.host.evaluate_clients(self._adapter_ref, self.strategy.groups, mine, PERSONAL_EVAL_WINDOWS,
                                         self._base_ref)
        extra = [probe(self._adapter_ref, self._base_ref) for probe in self.probes]
        self._finish_eval()
        self._pending_eval = (row, ref, own, extra)

    def _finish_eval(self) -> None:
        if self._pending_eval is None:
            return
        row, ref, own, extra = self._pending_eval
        self._pending_eval = None
        loss, pairs = self.host.get([ref, own])
        pairs = np.array(pairs).reshape(-1, 2)  # per device: its own part, the global adapter alone
        self._emit({**row, "eval_loss": float(loss), "eval_ppl": float(np.exp(loss)),
                    "personal_loss": float(pairs[:, 0].mean()), "personal_global_loss": float(pairs[:, 1].mean()),
                    **{k: v for finish in extra for k, v in finish().items()}})

    def _emit(self, row: dict) -> None:
        self.sink.round(row)
        self.on_progress(row)

    # --- checkpoints -------------------------------------------------------------------------------

    def _note(self, rejected: list, losses: list, recorded: bool, published: bool) -> None:
        self.journal.note(Step(rejected, losses, recorded, published, self.strategy.download_values()))

    def _clock_state(self) -> dict:
        """What the clock alone determines: a resumed run's replay must arrive at the same."""
        return {"now": self.env.now, "version": self.version, "charge_wh": self.fleet.charge_wh.copy(),
                "last_loss": self.history.last_loss.copy(), "last_duration_s": self.history.last_duration_s.copy()}

    def _checkpoint(self) -> None:
        self._finish_eval()  # the checkpoint covers the rows of every version up to this one
        self.sink.checkpoint(self.journal.checkpoint(self._clock_state(), {
            "adapter": self.adapter,
            "strategy": self.strategy.state_dict(),
            "clients": self.clients.state_dict(),
            # Sessions still at work (asynchronous servers) train from the version they downloaded.
            "cohorts": {c.version: c.adapter for c in self._at_work.values()},
            "probes": [probe.state_dict() for probe in self.probes],
        }))
        self.clients.release_pages()

    def _close_replayed(self, rnd: int, arrivals: list[Arrival]) -> bool:
        """A server step before the checkpoint: the clock's side of `_close`, with what training decided
        read from the journal."""
        step = self.journal.next_step()
        for i, outcome in step.rejected:
            arrivals[i].log.outcome = outcome
        for device, loss in step.losses:
            self.history.last_loss[device] = loss
        if step.recorded:
            self._record_sessions(rnd)
            self.version += step.published
        if self.journal.at_checkpoint:
            self._go_live()
        return step.recorded

    def _go_live(self) -> None:
        """The replay reached the checkpoint: check the clock against it, load what training had built."""
        saved = self.journal.go_live(self._clock_state())
        self.adapter = saved["adapter"]
        self.strategy.load_state_dict(saved["strategy"])
        self.clients.load_state_dict(saved["clients"])
        for probe, state in zip(self.probes, saved["probes"], strict=True):
            probe.load_state_dict(state)
        self._publish()
        for cohort in {id(c): c for c in self._at_work.values()}.values():
            cohort.adapter = saved["cohorts"][cohort.version]
            cohort.adapter_ref = None if self.host is None else self.host.put(cohort.adapter)
            cohort.base_ref = self._base_ref
