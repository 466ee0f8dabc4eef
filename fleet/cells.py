"""The fleet's cells as the clock sees them: each device's path loss, the interference of other cells, and the
links a transfer crosses (`CellNetwork` builds them for a fleet and its `Radio`).

On a link, transfers join and leave, and each finishes when its bits are through. The band itself (who gets
which share at which rate, and the radio energy each transfer draws over the rates it actually had) is
`network_models.SharedBand`; this module only turns its next completion into a SimPy event. Whenever a
transfer joins or leaves, everybody's share changes, so the pending timer is superseded by a new one (a stale
timer finds a newer generation and does nothing), which is cheaper than a process that is woken on every
change.

Devices never wait out transfer time themselves: they ask the link and wait for the event it returns, whose
value is the transfer's `Delivery` (bits, air seconds, radio joules). Every link has the one interface `Link`
(send, cancel, snr_applies, air_share): a cell's shared band (CellLink), a recorded trace (TraceLink), a cell's
broadcast of the global adapter (Multicast) and the cell site's backhaul, which devices at the site use instead
of the radio (Backhaul). `cancel` answers with the Delivery of what had gone through.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import simpy

from fleet.devices import Fleet
from fleet.rng import stream
from network_models import (
    NO_POWER,
    Delivery,
    RadioPower,
    RateTrace,
    SharedBand,
    downlink_interference_mw_per_hz,
    path_loss_db,
    shannon_rate_bps,
    snr_db,
    uplink_interference_mw_per_hz,
)

NOTHING = Delivery(0.0, 0.0, 0.0)  # what cancelling a transfer the link does not know delivered
# The neighbouring cells' interference on a band of 1 Hz, for the last fleet and radio asked about: it takes
# seconds over a million devices and scales as 1 / width with the band, so runs of one fleet that differ in
# their bands (a plan's probes) work it out once.
_INTERFERENCE_PER_HZ_OF_BAND: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}


@dataclass(frozen=True)
class Radio:
    """The scenario's radio: propagation, bands and powers, outage, the sites' backhaul. Units: Hz, dBm, dB,
    bit/s, seconds."""

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
    outage_reference_hz: float = 20e6  # the outage test's SNR is over this width, whatever the band
    # Inter-cell interference (frequency reuse 1): the sites, and the fraction of time (or band) a neighbouring
    # cell transmits. None or 0: rates from SNR alone.
    sites: np.ndarray | None = None
    interference_load: float = 0.0
    interferer_path_loss: str = "uma_nlos"  # paths from other sites: mostly without a line of sight


class Link(Protocol):
    """What a session asks of the link a transfer crosses, whichever kind it is.

    `transfer_id` is the device: a device has at most one transfer on a link at a time."""

    # Whether a transfer is refused when the device's SNR is below the outage threshold (a measured trace
    # and the wired backhaul have no SNR to judge).
    snr_applies: bool
    # The part of each transfer the cell's radio carries for its device: 1 for a transfer of its own, 1/n of
    # a broadcast to n receivers, 0 over the backhaul (no radio at all).
    air_share: float

    def send(
        self, transfer_id: int, bits: float, tx_power_dbm: float, loss_db: float, power: RadioPower = NO_POWER,
        interference_mw_per_hz: float = 0.0,
    ) -> simpy.Event:
        """An event that fires, with the transfer's Delivery, when `bits` have crossed the link. The sender
        transmits at `tx_power_dbm` over a path losing `loss_db`, with `interference_mw_per_hz` from other
        cells at the receiver; `power` is what the device's radio draws meanwhile."""
        ...

    def cancel(self, transfer_id: int) -> Delivery:
        """Stop a transfer (the device left); the Delivery of what had gone through (NOTHING if unknown)."""
        ...


class CellLink:
    """A cell's shared band (`network_models.SharedBand`): every transfer's rate changes as others come and go."""

    snr_applies = True
    air_share = 1.0

    def __init__(self, env: simpy.Environment, band: SharedBand):
        self.env, self.band = env, band
        self._done: dict[int, simpy.Event] = {}  # transfer -> finish event
        self._generation = 0

    def send(
        self, transfer_id: int, bits: float, tx_power_dbm: float, loss_db: float, power: RadioPower = NO_POWER,
        interference_mw_per_hz: float = 0.0,
    ) -> simpy.Event:
        """An event that fires, with the transfer's Delivery, when `bits` have crossed the link."""
        self.band.start(transfer_id, bits, tx_power_dbm, loss_db, self.env.now, power, interference_mw_per_hz)
        done = self._done[transfer_id] = self.env.event()
        self._schedule()
        return done

    def cancel(self, transfer_id: int) -> Delivery:
        """Stop a transfer (the device left); returns what it had sent and spent (nothing if unknown)."""
        if self._done.pop(transfer_id, None) is None:
            return NOTHING
        delivery = self.band.remove(transfer_id, self.env.now)
        self._schedule()
        return delivery

    def _schedule(self) -> None:
        self._generation += 1
        upcoming = self.band.next_completion()
        if upcoming is not None:
            generation = self._generation
            timer = self.env.timeout(max(0.0, upcoming[0] - self.env.now))
            timer.callbacks.append(lambda _: self._finish(generation))

    def _finish(self, generation: int) -> None:
        if generation != self._generation:
            return
        now = self.env.now
        # Everything due by now finishes now (several transfers may end in the same instant).
        while (upcoming := self.band.next_completion()) is not None and upcoming[0] - now <= 1e-9 * max(1.0, now):
            transfer_id, delivery = self.band.complete(now)
            self._done.pop(transfer_id).succeed(delivery)
        self._schedule()


class _TimedLink:
    """A link whose transfer takes a time known when it starts (each transfer has the link to itself); a
    cancelled one delivered its bits and energy prorated over that time, at the transfer's mean rate."""

    snr_applies = False
    air_share = 1.0

    def __init__(self, env: simpy.Environment):
        self.env = env
        self._active: dict[int, _TimedTransfer] = {}

    def duration_s(self, transfer_id: int, bits: float) -> float:
        raise NotImplementedError

    def send(
        self, transfer_id: int, bits: float, tx_power_dbm: float, loss_db: float, power: RadioPower = NO_POWER,
        interference_mw_per_hz: float = 0.0,
    ) -> simpy.Event:
        """An event that fires, with the transfer's Delivery, when `bits` are through (power and interference
        do not change the time; `power` is only what the device's radio draws meanwhile)."""
        duration = self.duration_s(transfer_id, bits)
        record = _TimedTransfer(self.env.now, duration, bits, power)
        self._active[transfer_id] = record
        done = self.env.timeout(duration, value=record.delivery(duration))

        def forget(_) -> None:
            # Once through, cancelling it has nothing left to stop (unless the device has sent another since).
            if self._active.get(transfer_id) is record:
                del self._active[transfer_id]

        done.callbacks.append(forget)
        return done

    def cancel(self, transfer_id: int) -> Delivery:
        """What went through before the device left: bits and energy prorated over the transfer's duration."""
        record = self._active.pop(transfer_id, None)
        return NOTHING if record is None else record.delivery(self.env.now - record.start)


class _TimedTransfer:
    """One timed transfer: when it started, how long it takes, its size and the device's radio power."""

    __slots__ = ("start", "duration", "bits", "power")

    def __init__(self, start: float, duration: float, bits: float, power: RadioPower):
        self.start, self.duration, self.bits, self.power = start, duration, bits, power

    def delivery(self, elapsed_s: float) -> Delivery:
        """The share delivered after `elapsed_s` s, at the transfer's mean rate."""
        seconds = min(max(elapsed_s, 0.0), self.duration)
        if seconds >= self.duration:
            bits = self.bits  # also a 0-second, 0-bit transfer
        else:
            bits = self.bits * seconds / self.duration
        # Mean rate bits / duration (0 for a transfer that never ends): energy grows linearly with time.
        mean_rate = self.bits / self.duration if self.duration > 0 else 0.0
        return Delivery(bits, seconds, float(self.power.watts(mean_rate)) * seconds)


class TraceLink(_TimedLink):
    """A recorded throughput trace in place of a cell's shared band: each device replays the trace (looping)
    from its own seeded offset, as its own link; traces already contain whatever sharing there was, and a
    measured rate has no SNR to put in outage.

    Energy is charged at the transfer's mean rate over the trace (bits / duration). With a linear radio power
    that is exactly the integral over the trace's changing rate; where the rate crosses the power cap it
    slightly overstates it (power is concave in the rate), which a trace's own coarse steps dwarf anyway."""

    def __init__(self, env: simpy.Environment, trace: RateTrace, offsets_s: np.ndarray):
        super().__init__(env)
        self.trace, self.offsets_s = trace, offsets_s

    def duration_s(self, transfer_id: int, bits: float) -> float:
        return self.trace.transfer_time_s(bits, self.env.now + self.offsets_s[transfer_id])


class Multicast:
    """A cell's broadcast of the global adapter: every receiver is done when the one transmission ends.

    Each receiver's Delivery is the whole broadcast (its bits and duration) and the energy its own radio
    draws over it at the broadcast rate; a receiver that joins after the broadcast began is still counted
    for all of it (receivers are invited when the broadcast is planned)."""

    snr_applies = True

    def __init__(self, env: simpy.Environment, bits: float, rate_bps: float, receivers: int):
        if not (rate_bps > 0 and np.isfinite(rate_bps)):
            raise ValueError(f"a broadcast needs a positive, finite rate, got {rate_bps} bit/s")
        if not (bits >= 0 and np.isfinite(bits)):
            raise ValueError(f"a broadcast needs finite bits >= 0, got {bits}")
        self.env, self.rate, self.receivers, self.start, self.bits = env, rate_bps, receivers, env.now, bits
        self.air_share = 1 / receivers  # the cell sends it once for all its receivers
        self.duration = bits / rate_bps
        self.done = env.timeout(self.duration)
        # receiver -> (its radio power, the event it waits on), until the broadcast ends or it leaves
        self._listening: dict[int, tuple[RadioPower, simpy.Event]] = {}

    def send(
        self, transfer_id: int, bits: float, tx_power_dbm: float, loss_db: float, power: RadioPower = NO_POWER,
        interference_mw_per_hz: float = 0.0,
    ) -> simpy.Event:
        """An event that fires, with this receiver's Delivery, when the broadcast ends."""
        whole = Delivery(self.bits, self.duration, power.energy_j(self.bits, self.duration))
        if self.done.processed:
            return self.env.timeout(0, value=whole)
        received = self.env.event()
        self._listening[transfer_id] = (power, received)

        def finish(_) -> None:
            # A receiver that left (cancel) is no longer listening and gets nothing.
            if self._listening.get(transfer_id, (None, None))[1] is received:
                del self._listening[transfer_id]
                received.succeed(whole)

        self.done.callbacks.append(finish)
        return received

    def cancel(self, transfer_id: int) -> Delivery:
        """The share of the broadcast the receiver got before it left (nothing if it was not listening)."""
        listening = self._listening.pop(transfer_id, None)
        if listening is None:
            return NOTHING
        power = listening[0]
        seconds = min(self.env.now - self.start, self.duration)
        bits = self.bits * seconds / self.duration if self.duration > 0 else self.bits
        return Delivery(bits, seconds, float(power.watts(self.rate)) * seconds)


class Backhaul(_TimedLink):
    """The cell site's wired link to the server, for devices standing at the site (cell-site servers): its
    latency and rate both ways, no radio, so no SNR, no air time of the cell and no radio energy (they send
    with NO_POWER). Each transfer has the backhaul's rate to itself."""

    air_share = 0.0

    def __init__(self, env: simpy.Environment, rate_bps: float, latency_s: float):
        super().__init__(env)
        self.rate_bps, self.latency_s = rate_bps, latency_s

    def duration_s(self, transfer_id: int, bits: float) -> float:
        return self.latency_s + bits / self.rate_bps


class CellNetwork:
    """A fleet's cells under a `Radio`: each device's path loss to its site (shadowing included), the
    interference of neighbouring cells, and the links: each cell's uplink and downlink (a shared band, or one
    trace replayed by every device from its own offset) and the sites' backhaul, for devices at a site."""

    def __init__(self, env: simpy.Environment, seed: int, fleet: Fleet, radio: Radio):
        self.env, self.seed, self.fleet, self.radio = env, seed, fleet, radio
        self.loss_db = (path_loss_db(radio.path_loss, fleet.distance_m, radio.carrier_ghz, los=fleet.los)
                        + fleet.shadowing_db)
        self.at_site = fleet.per_class("at_site", np.arange(len(fleet))).astype(bool)
        self.interference_down, self.interference_up = self._interference()
        self.uplinks = self._links(radio.uplink_hz, radio.uplink_trace, "uplink")
        self.downlinks = self._links(radio.downlink_hz, radio.downlink_trace, "downlink")
        self.backhaul = Backhaul(env, radio.backhaul_bps, radio.backhaul_latency_s)

    def _links(self, band_hz: float, trace: RateTrace | None, direction: str) -> list[Link]:
        """One shared band per cell, or one trace replayed by every device (from its own offset). A cell's
        downlink splits the base station's one power budget among the devices it serves."""
        cells = int(self.fleet.cell.max()) + 1
        if trace is None:
            return [CellLink(self.env, SharedBand(band_hz, self.radio.noise_figure_db, self.radio.sharing,
                                                  split_power=direction == "downlink"))
                    for _ in range(cells)]
        offsets = stream(self.seed, "trace-offset", direction).uniform(0.0, trace.period_s, len(self.fleet))
        return [TraceLink(self.env, trace, offsets)] * cells

    def _interference(self) -> tuple[np.ndarray, np.ndarray]:
        """Interference power density (mW/Hz) on each device's downlink and at each cell's uplink receiver,
        from neighbouring cells transmitting a `radio.interference_load` share of the time."""
        radio, fleet = self.radio, self.fleet
        cells = int(fleet.cell.max()) + 1
        if radio.sites is None or not radio.interference_load or len(radio.sites) < 2:
            return np.zeros(len(fleet)), np.zeros(cells)
        radio_devices = np.flatnonzero(~self.at_site)
        tx_power_dbm = fleet.per_class("tx_power_dbm", radio_devices)
        key = hashlib.blake2b(b"".join(np.ascontiguousarray(a).tobytes() for a in (
            fleet.xy, fleet.cell, radio_devices, tx_power_dbm, radio.sites,
            np.array([radio.carrier_ghz, radio.bs_power_dbm, radio.interference_load])))
            + radio.interferer_path_loss.encode()).digest()
        if key not in _INTERFERENCE_PER_HZ_OF_BAND:
            common = dict(sites=radio.sites, carrier_ghz=radio.carrier_ghz, load=radio.interference_load,
                          model=radio.interferer_path_loss, band_hz=1.0)
            _INTERFERENCE_PER_HZ_OF_BAND.clear()
            _INTERFERENCE_PER_HZ_OF_BAND[key] = (
                downlink_interference_mw_per_hz(fleet.xy, fleet.cell, bs_power_dbm=radio.bs_power_dbm, **common),
                uplink_interference_mw_per_hz(fleet.xy[radio_devices], fleet.cell[radio_devices], tx_power_dbm,
                                              **common))
        down, up = _INTERFERENCE_PER_HZ_OF_BAND[key]
        return down / radio.downlink_hz, up / radio.uplink_hz

    def uplink_rate_bps(self, devices: np.ndarray, band_hz: float, fade_db: np.ndarray | None = None) -> np.ndarray:
        """Each device's Shannon rate on `band_hz` of its cell's uplink, interference counted, after its fading
        (None: none)."""
        loss = self.loss_db[devices] if fade_db is None else self.loss_db[devices] - fade_db
        return shannon_rate_bps(band_hz, self.fleet.per_class("tx_power_dbm", devices), loss,
                                self.radio.noise_figure_db, self.interference_up[self.fleet.cell[devices]])

    def broadcasts(self, devices: np.ndarray, fade_down_db: np.ndarray,
                   download_bytes: Callable[[int], int]) -> dict[int, tuple[float, float, int]]:
        """One broadcast of the global adapter per cell with invitees, over the whole downlink band at the base
        station's full power, at the rate of the weakest invitee that is not in outage (all must decode it):
        cell -> (bits, rate in bit/s, receivers), the arguments of its `Multicast`. `download_bytes`: what
        each device downloads."""
        radio, cells = self.radio, self.fleet.cell[devices]
        loss = self.loss_db[devices] - fade_down_db
        snr = snr_db(radio.outage_reference_hz, radio.bs_power_dbm, loss, radio.noise_figure_db)
        rate = shannon_rate_bps(radio.downlink_hz, radio.bs_power_dbm, loss, radio.noise_figure_db,
                                self.interference_down[devices])
        out = {}
        for cell in np.unique(cells):
            ok = (cells == cell) & (snr >= radio.outage_snr_db)
            if ok.any():
                bits = 8.0 * max(download_bytes(int(d)) for d in devices[ok])
                out[int(cell)] = (bits, float(rate[ok].min()), int((cells == cell).sum()))
        return out
