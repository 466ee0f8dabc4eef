"""A cell's shared link as the clock sees it: transfers join and leave, and each finishes when its bits are
through. The band itself (who gets which share at which rate) is `network_models.SharedBand`; this module
only turns its next completion into a SimPy event. Whenever a transfer joins or leaves, everybody's share
changes, so the pending timer is superseded by a new one (a stale timer finds a newer generation and does
nothing), which is cheaper than a process that is woken on every change.

Devices never wait out transfer time themselves: they ask the link and wait for the event it returns.
Three kinds of link share that interface (send, cancel, rate_bps): a cell's shared band (CellLink), a
recorded trace (TraceLink) and a cell's broadcast of the global adapter (Multicast).
"""

from __future__ import annotations

import numpy as np
import simpy

from network_models import RateTrace, SharedBand


class CellLink:
    snr_applies = True

    def __init__(self, env: simpy.Environment, band: SharedBand):
        self.env, self.band = env, band
        self._done: dict[int, simpy.Event] = {}  # transfer -> finish event
        self._generation = 0

    def send(self, transfer_id: int, bits: float, tx_power_dbm: float, loss_db: float) -> simpy.Event:
        """An event that fires when `bits` have crossed the link."""
        self.band.start(transfer_id, bits, tx_power_dbm, loss_db, self.env.now)
        done = self._done[transfer_id] = self.env.event()
        self._schedule()
        return done

    def cancel(self, transfer_id: int) -> float:
        """Stop a transfer (the device left); returns the bits it had sent."""
        if self._done.pop(transfer_id, None) is None:
            return 0.0
        sent = self.band.remove(transfer_id, self.env.now)
        self._schedule()
        return sent

    def rate_bps(self, transfer_id: int) -> float:
        return self.band.rate_bps(transfer_id)

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
            self._done.pop(self.band.complete(now)).succeed()
        self._schedule()


class TraceLink:
    """A recorded throughput trace in place of a cell's shared band: each device replays the trace (looping)
    from its own seeded offset, as its own link; traces already contain whatever sharing there was."""

    snr_applies = False  # a measured rate has no SNR to put in outage

    def __init__(self, env: simpy.Environment, trace: RateTrace, offsets_s: np.ndarray):
        self.env, self.trace, self.offsets_s = env, trace, offsets_s
        self._active: dict[int, tuple[float, float, float]] = {}  # device -> (start, duration, bits)

    def send(self, transfer_id: int, bits: float, tx_power_dbm: float, loss_db: float) -> simpy.Event:
        start = self.env.now
        duration = self.trace.transfer_time_s(bits, start + self.offsets_s[transfer_id])
        self._active[transfer_id] = (start, duration, bits)
        return self.env.timeout(duration)

    def cancel(self, transfer_id: int) -> float:
        """Bits sent before the device left, prorated over the transfer's duration."""
        start, duration, bits = self._active.pop(transfer_id, (0.0, 0.0, 0.0))
        return bits * min(1.0, (self.env.now - start) / duration) if duration > 0 else bits

    def rate_bps(self, transfer_id: int) -> float:
        return float(self.trace.rate_bps(self.env.now + self.offsets_s[transfer_id]))


class Multicast:
    """A cell's broadcast of the global adapter: every receiver is done when the one transmission ends."""

    snr_applies = True

    def __init__(self, env: simpy.Environment, bits: float, rate_bps: float, receivers: int):
        self.env, self.rate, self.receivers, self.start = env, rate_bps, receivers, env.now
        self.done = env.timeout(bits / rate_bps)
        self.bits = bits

    def send(self, transfer_id: int, bits: float, tx_power_dbm: float, loss_db: float) -> simpy.Event:
        return self.done

    def cancel(self, transfer_id: int) -> float:
        return self.bits * min(1.0, (self.env.now - self.start) * self.rate / self.bits)

    def rate_bps(self, transfer_id: int) -> float:
        return self.rate
