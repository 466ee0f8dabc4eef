"""A cell's shared link as the clock sees it: transfers join and leave, and each finishes when its bits are
through. The band itself (who gets which share at which rate, and the radio energy each transfer draws over
the rates it actually had) is `network_models.SharedBand`; this module only turns its next completion into a
SimPy event. Whenever a transfer joins or leaves, everybody's share changes, so the pending timer is superseded
by a new one (a stale timer finds a newer generation and does nothing), which is cheaper than a process that
is woken on every change.

Devices never wait out transfer time themselves: they ask the link and wait for the event it returns, whose
value is the transfer's `Delivery` (bits, air seconds, radio joules). Three kinds of link share that interface
(send, cancel, snr_applies): a cell's shared band (CellLink), a recorded trace (TraceLink) and a cell's
broadcast of the global adapter (Multicast). `cancel` answers with the Delivery of what had gone through.
"""

from __future__ import annotations

import numpy as np
import simpy

from network_models import NO_POWER, Delivery, RadioPower, RateTrace, SharedBand

NOTHING = Delivery(0.0, 0.0, 0.0)  # what cancelling a transfer the link does not know delivered


class CellLink:
    snr_applies = True

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


class TraceLink:
    """A recorded throughput trace in place of a cell's shared band: each device replays the trace (looping)
    from its own seeded offset, as its own link; traces already contain whatever sharing there was.

    Energy is charged at the transfer's mean rate over the trace (bits / duration). With a linear radio power
    that is exactly the integral over the trace's changing rate; where the rate crosses the power cap it
    slightly overstates it (power is concave in the rate), which a trace's own coarse steps dwarf anyway."""

    snr_applies = False  # a measured rate has no SNR to put in outage

    def __init__(self, env: simpy.Environment, trace: RateTrace, offsets_s: np.ndarray):
        self.env, self.trace, self.offsets_s = env, trace, offsets_s
        self._active: dict[int, _TraceTransfer] = {}

    def send(
        self, transfer_id: int, bits: float, tx_power_dbm: float, loss_db: float, power: RadioPower = NO_POWER,
        interference_mw_per_hz: float = 0.0,
    ) -> simpy.Event:
        """An event that fires, with the transfer's Delivery, when the trace has carried `bits` (power and
        interference do not change a measured rate; `power` is only what the device draws meanwhile)."""
        start = self.env.now
        duration = self.trace.transfer_time_s(bits, start + self.offsets_s[transfer_id])
        record = _TraceTransfer(start, duration, bits, power)
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


class _TraceTransfer:
    """One transfer on a trace: when it started, how long it takes, its size and the device's radio power."""

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
