"""Systems-only runs on the compiled clock (fleet/fast_clock.py): the emulator's servers, their selection, draws
and books unchanged (fleet/emulator.py), with every session's events in one loop instead of a SimPy process
each. Nothing is trained, so no host; checkpoints and resuming work as in the emulator (a resumed run replays
the clock up to its checkpoint).

The sessions equal the event-driven emulator's to float rounding (tests/fleet/test_fast_clock.py runs both);
what may differ is the order of events falling on the very same instant, which SimPy breaks by its own
scheduling.
"""

from __future__ import annotations

import numpy as np

from aggregation import Strategy
from fleet.emulator import OUTCOMES, STALL_LIMIT_S, EmulationStalled, Emulator, SessionLog
from fleet import fast_clock as fc
from fleet.fast_clock import FastClock
from network_models import THERMAL_NOISE_DBM_PER_HZ, snr_db

# Where the clock's tables keep each of SessionLog's columns.
_INTEGER_COLUMNS = {"device": fc.DEVICE, "round": fc.KEY, "base_version": fc.BASE_VERSION, "outcome": fc.OUTCOME,
                    "phase": fc.PHASE, "bytes_down": fc.BYTES_DOWN, "bytes_up": fc.BYTES_UP,
                    "bytes_up_air": fc.BYTES_UP_AIR, "steps": fc.STEPS_OUT, "staleness": fc.STALENESS}
_FLOAT_COLUMNS = {"t_start": fc.T_START, "t_end": fc.T_END, "download_s": fc.DOWNLOAD_S, "train_s": fc.TRAIN_S,
                  "upload_s": fc.UPLOAD_S, "bytes_down_air": fc.BYTES_DOWN_AIR, "energy_j": fc.ENERGY,
                  "uplink_mbps": fc.UP_MBPS, "downlink_mbps": fc.DN_MBPS, "charge_start": fc.CHARGE_START,
                  "charge_end": fc.CHARGE_END}
_OUTCOME_NAMES = np.array(OUTCOMES, dtype=object)
_PHASE_NAMES = np.array(fc.PHASES, dtype=object)


class Clock:
    """Simulated time as the server's steps read it (`env.now`), without SimPy."""

    def __init__(self) -> None:
        self.now = 0.0


class Arrivals:
    """Updates that reached the server, as its books read them (Emulator._close): how many, their devices and
    their staleness. Nothing is trained, so there is nothing else to hand on."""

    def __init__(self, devices: np.ndarray, staleness: np.ndarray):
        self.devices, self.staleness = devices, staleness

    def __len__(self) -> int:
        return len(self.devices)

    def __add__(self, other: "Arrivals") -> "Arrivals":
        return Arrivals(np.concatenate([self.devices, other.devices]),
                        np.concatenate([self.staleness, other.staleness]))

    def by_device(self) -> "Arrivals":
        order = np.argsort(self.devices, kind="stable")
        return Arrivals(self.devices[order], self.staleness[order])


NONE_ARRIVED = Arrivals(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))


class FastEmulator(Emulator):
    """`Emulator` for systems-only runs: the same constructor, with no host."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.host is not None:
            raise ValueError("the fast clock trains nothing: it runs systems-only mode (run.mode: systems)")
        self._plugged = np.array([model.plugged_while_available for model in self.fleet.availability], dtype=bool)
        self.env = Clock()
        radio, fleet = self.radio, self.fleet
        self.clock = FastClock(fleet.cell, fleet.charge_wh, fleet.battery_wh, self.rules.cutoff_charge,
                               radio.downlink_hz, radio.uplink_hz, radio.sharing == "tdma", radio.uplink_trace)
        self._noise_mw_per_hz = 10.0 ** ((THERMAL_NOISE_DBM_PER_HZ + radio.noise_figure_db) / 10.0)
        # Per class: base W, W per bit/s and cap W of the radio each way.
        self._power = {name: np.array([[p.base_w, p.w_per_mbps / 1e6, p.max_w]
                                       for p in (getattr(c, name) for c in fleet.classes)])
                       for name in ("radio_down", "radio_up")}
        limit = self.strategy.traits.max_staleness
        self._max_staleness = -1 if limit is None else int(limit)
        self._chunks: list[dict[str, np.ndarray]] = []  # sessions ended since the server last looked

    def run(self):
        if self.strategy.traits.asynchronous:
            self._asynchronous()
        else:
            self._synchronous()
        self._finish_eval()
        return self.adapter

    def _staleness(self, arrivals: Arrivals) -> list[int]:
        return arrivals.staleness.tolist() if len(arrivals) else []  # version 0's row has a plain []

    # --- the servers ----------------------------------------------------------------------------------

    def _synchronous(self) -> None:
        """Emulator.synchronous_server, each round's sessions run by the compiled loop."""
        rules, clock = self.rules, self.clock
        self._start()
        for rnd in range(1, rules.rounds + 1):
            if self.env.now >= rules.until_s:
                break
            opened = self.env.now
            self._charge()
            invited = self.select(rnd)
            deadline_at = opened + rules.deadline_s if rules.policy == "deadline" else float("inf")
            if len(invited):
                slots = self._invite(rnd, invited, deadline_at)
                why, t = clock.run(opened, stop_at=deadline_at, enough=rules.clients_per_round, version=self.version)
                if why == fc.RUN_EMPTY:
                    raise EmulationStalled(f"round {rnd}: sessions at work but none can ever end "
                                           "(a link with no signal and no deadline)")
                self.env.now = t
                clock.cut(slots, t, fc.SURPLUS if why == fc.RUN_ENOUGH else fc.MISSED)
                clock.clear_timers()
            else:  # nobody to invite: wait before asking again
                self.env.now += self._retry_s()
            arrivals, _ = self._collect()
            aggregate = len(arrivals) >= rules.min_reports
            if aggregate:
                self.env.now += self.strategy.traits.extra_round_trips * 2 * self.radio.backhaul_latency_s
            self._close(rnd, opened, arrivals if aggregate else NONE_ARRIVED)

    def _asynchronous(self) -> None:
        """Emulator.asynchronous_server: wakes whenever sessions end, as the event-driven one does."""
        self._start()
        concurrency = self.strategy.traits.concurrency or self.rules.selected
        busy: dict[int, int] = {}  # device -> its slot
        buffer = NONE_ARRIVED
        invitations, opened, last_update = 0, 0.0, 0.0
        while self.version < self.rules.rounds and self.env.now < self.rules.until_s:
            self._charge()
            if len(busy) < concurrency:
                invitations += 1
                invited = self.select(invitations, busy=np.fromiter(busy, dtype=np.int64),
                                      k=concurrency - len(busy))
                if len(invited):
                    busy.update(zip(invited.tolist(), self._invite(invitations, invited, float("inf")).tolist()))
            if busy:
                why, t = self.clock.run(self.env.now, return_on_end=True, version=self.version,
                                        max_staleness=self._max_staleness)
                if why == fc.RUN_EMPTY:
                    raise EmulationStalled(self._stalled_message())
                self.env.now = t
            else:
                self.env.now += self._retry_s()
            arrivals, ended = self._collect()
            for device in ended.tolist():
                busy.pop(device, None)
            if len(arrivals):
                last_update = self.env.now
            elif self.env.now - last_update > STALL_LIMIT_S:
                raise EmulationStalled(self._stalled_message())
            elif not busy:  # everyone invited ended without an update: wait before inviting again
                self.env.now += self._retry_s()
            buffer += arrivals
            if len(buffer) and self.strategy.ready(len(buffer)):
                if self._close(self.version + 1, opened, buffer.by_device()):
                    opened = self.env.now
                buffer = NONE_ARRIVED
        # The run has its versions: whoever still works is not needed.
        self.clock.cut(np.fromiter(busy.values(), dtype=np.int64), self.env.now, fc.SURPLUS)
        self._collect()
        self._record_sessions(self.version)
        self._charge()

    # --- sessions in the clock's tables ---------------------------------------------------------------

    def _invite(self, key: int, devices: np.ndarray, deadline_at: float) -> np.ndarray:
        """Fill a slot per invitee with its draws and links (what Emulator.session asks of each link), and
        start them now, in device order."""
        fleet, cells, now = self.fleet, self.cells, self.env.now
        draws = self.draws(key, devices)
        slots = self.clock.allocate(len(devices))
        f, i = self.clock.f, self.clock.i
        cls, cell = fleet.cls[devices], fleet.cell[devices]
        at_site = cells.at_site[devices]
        i[slots, fc.DEVICE], i[slots, fc.CELL], i[slots, fc.KEY] = devices, cell, key
        i[slots, fc.BASE_VERSION] = self.version
        i[slots, fc.STALENESS] = -1
        i[slots, fc.BATTERY_GEN] = i[slots, fc.X_BAND] = -1
        i[slots, fc.AT_SITE] = at_site
        i[slots, fc.STEPS] = draws.steps
        i[slots, fc.PARTIAL] = self._partial_work(devices)
        i[slots, fc.HAZARD_REASON] = np.where(draws.offline, fc.OFFLINE, fc.FAILURE)
        f[slots, fc.T_START] = f[slots, fc.T_END] = now
        armed = np.isfinite(draws.hazard_s) & (now + draws.hazard_s <= deadline_at)
        f[slots, fc.HAZARD_AT] = np.where(armed, now + draws.hazard_s, np.inf)
        f[slots, fc.DEADLINE] = deadline_at
        f[slots, fc.TRAIN], f[slots, fc.UP_EST] = draws.train_s, draws.upload_estimate_s
        f[slots, fc.COMPUTE_W] = fleet.per_class("compute_power_w", devices)
        f[slots, fc.CHARGER_W] = fleet.per_class("charger_w", devices)
        f[slots, fc.PLUGGED_UNTIL] = np.where(self._plugged[cls], now + draws.offline_s, -np.inf)
        for column in (fc.UP_MBPS, fc.DN_MBPS, fc.CHARGE_START, fc.CHARGE_END):
            f[slots, column] = np.nan
        self._downlinks(slots, devices, draws, at_site)
        self._uplinks(slots, devices, draws, at_site)
        self.clock.start(slots, now)
        return slots

    def _partial_work(self, devices: np.ndarray) -> np.ndarray:
        """Whether each invitee sends the steps it finished by the deadline (the strategy's configure, asked of
        each as the emulator does, unless the strategy keeps the default)."""
        if type(self.strategy).configure is Strategy.configure:
            return np.zeros(len(devices), dtype=bool)
        return np.array([self.strategy.configure(int(d), self.version).partial_work for d in devices], dtype=bool)

    def _downlinks(self, slots, devices, draws, at_site) -> None:
        """Each download's link: the site's backhaul, the cell's broadcast, the downlink trace or the band."""
        f, i, radio, cells, now = self.clock.f, self.clock.i, self.radio, self.cells, self.env.now
        bits = 8.0 * self._download_bytes_of(devices)
        loss = cells.loss_db[devices] - draws.fade_down_db
        kind = np.full(len(devices), fc.BAND)
        duration, share = np.zeros(len(devices)), np.ones(len(devices))
        cell = self.fleet.cell[devices]
        for c, (broadcast_bits, rate, receivers) in draws.broadcasts.items():
            here = (cell == c) & ~at_site
            kind[here], bits[here] = fc.TIMED, broadcast_bits
            duration[here], share[here] = broadcast_bits / rate, 1 / receivers
        broadcast = kind == fc.TIMED
        if radio.downlink_trace is not None:
            offsets = cells.downlinks[0].offsets_s
            for k in np.flatnonzero(~broadcast & ~at_site):
                kind[k] = fc.TIMED
                duration[k] = radio.downlink_trace.transfer_time_s(bits[k], now + offsets[devices[k]])
        kind[at_site], share[at_site] = fc.TIMED, 0.0
        duration[at_site] = radio.backhaul_latency_s + bits[at_site] / radio.backhaul_bps
        i[slots, fc.DN_KIND] = kind
        i[slots, fc.DN_OUT] = ((kind == fc.BAND) | broadcast) & (snr_db(
            radio.outage_reference_hz, radio.bs_power_dbm, loss, radio.noise_figure_db) < radio.outage_snr_db)
        f[slots, fc.DN_BITS], f[slots, fc.DN_DUR], f[slots, fc.DN_AIR] = bits, duration, share
        f[slots, fc.DN_SIG] = 10.0 ** ((radio.bs_power_dbm - loss) / 10.0) / (
            self._noise_mw_per_hz + cells.interference_down[devices])
        self._radio_power(slots, devices, at_site, "radio_down", fc.DN_BASE)

    def _uplinks(self, slots, devices, draws, at_site) -> None:
        """Each upload's link: the site's backhaul, the uplink trace or the band; then the cell's backhaul."""
        f, i, radio, cells, fleet = self.clock.f, self.clock.i, self.radio, self.cells, self.fleet
        bits = 8.0 * self.bytes_up[devices]
        tx = fleet.per_class("tx_power_dbm", devices)
        loss = cells.loss_db[devices] - draws.fade_up_db
        kind = np.full(len(devices), fc.BAND if radio.uplink_trace is None else fc.TRACE)
        kind[at_site] = fc.TIMED
        if radio.uplink_trace is not None:
            f[slots, fc.UP_OFFSET] = cells.uplinks[0].offsets_s[devices]
        i[slots, fc.UP_KIND] = kind
        i[slots, fc.UP_OUT] = (kind == fc.BAND) & (snr_db(radio.outage_reference_hz, tx, loss, radio.noise_figure_db)
                                                < radio.outage_snr_db)
        f[slots, fc.UP_BITS] = bits
        f[slots, fc.UP_DUR] = np.where(at_site, radio.backhaul_latency_s + bits / radio.backhaul_bps, 0.0)
        f[slots, fc.UP_AIR] = np.where(at_site, 0.0, 1.0)
        f[slots, fc.BACKHAUL_S] = radio.backhaul_latency_s + 8 * self.bytes_up[devices] / radio.backhaul_bps
        f[slots, fc.UP_SIG] = 10.0 ** ((tx - loss) / 10.0) / (
            self._noise_mw_per_hz + cells.interference_up[fleet.cell[devices]])
        self._radio_power(slots, devices, at_site, "radio_up", fc.UP_BASE)

    def _radio_power(self, slots, devices, at_site, name: str, first: int) -> None:
        """The class's radio power by rate (base W, W per bit/s, cap W); none at the site (no radio)."""
        power = self._power[name][self.fleet.cls[devices]]
        power[at_site] = 0.0
        self.clock.f[slots, first:first + 3] = power

    def _download_bytes_of(self, devices: np.ndarray) -> np.ndarray:
        """Emulator._download_bytes for many devices."""
        values = self.journal.download_values(self.strategy)
        if values == self.clients.layout.size:
            return self.bytes_down[devices].astype(float)
        return np.full(len(devices), float(int(self.bytes_down_full_rank * values / self.clients.layout.size)))

    def _collect(self) -> tuple[Arrivals, np.ndarray]:
        """Read the sessions ended since the last look out of their slots (then free), as columns; the
        arrivals among them, by device, and the devices whose session ended."""
        slots = self.clock.take_ended()
        f, i = self.clock.f, self.clock.i
        chunk = {c: i[slots, _INTEGER_COLUMNS[c]] if c in _INTEGER_COLUMNS else f[slots, _FLOAT_COLUMNS[c]]
                 for c in SessionLog.COLUMNS}
        self.clock.release(slots)
        done = chunk["outcome"] == fc.COMPLETED
        chunk["outcome"], chunk["phase"] = _OUTCOME_NAMES[chunk["outcome"]], _PHASE_NAMES[chunk["phase"]]
        self._chunks.append(chunk)
        return Arrivals(chunk["device"][done], chunk["staleness"][done]).by_device(), chunk["device"]

    def _ended_columns(self) -> dict[str, np.ndarray]:
        chunks, self._chunks = self._chunks, []
        if not chunks:
            return {c: np.zeros(0, dtype=SessionLog.DTYPES[c]) for c in SessionLog.COLUMNS}
        columns = {c: np.concatenate([chunk[c] for chunk in chunks]) for c in SessionLog.COLUMNS}
        order = np.lexsort((columns["t_start"], columns["device"]))
        return {c: v[order] for c, v in columns.items()}

    def _ended_outcomes(self) -> list[str]:
        return [o for chunk in self._chunks for o in chunk["outcome"].tolist()]

