"""A cell's shared link as the clock sees it: transfers join and leave, and each finishes when its bits are
through. The band itself (who gets which share at which rate) is `network_models.SharedBand`; this module
only turns its next completion into a SimPy event, and wakes up whenever a transfer joins or leaves, since
that changes everybody's share.

Devices never wait out transfer time themselves: they ask the link and wait for the event it returns.
"""

from __future__ import annotations

import simpy

from network_models import SharedBand


class CellLink:
    def __init__(self, env: simpy.Environment, band: SharedBand):
        self.env, self.band = env, band
        self.bits_carried = 0.0
        self._done: dict[int, tuple[simpy.Event, float]] = {}  # transfer -> (finish event, bits)
        self._changed = env.event()
        env.process(self._serve())

    def send(self, transfer_id: int, bits: float, tx_power_dbm: float, loss_db: float) -> simpy.Event:
        """An event that fires when `bits` have crossed the link."""
        self.band.start(transfer_id, bits, tx_power_dbm, loss_db, self.env.now)
        done = self.env.event()
        self._done[transfer_id] = (done, bits)
        self._wake()
        return done

    def cancel(self, transfer_id: int) -> float:
        """Stop a transfer (the device left); returns the bits it had sent."""
        if self._done.pop(transfer_id, None) is None:
            return 0.0
        sent = self.band.remove(transfer_id, self.env.now)
        self.bits_carried += sent
        self._wake()
        return sent

    def rate_bps(self, transfer_id: int) -> float:
        return self.band.rate_bps(transfer_id)

    def _wake(self) -> None:
        if not self._changed.triggered:
            self._changed.succeed()

    def _serve(self):
        while True:
            upcoming = self.band.next_completion()
            if upcoming is None:
                yield self._changed
            else:
                yield self.env.timeout(max(0.0, upcoming[0] - self.env.now)) | self._changed
            if self._changed.triggered:
                self._changed = self.env.event()
            # Everything due by now finishes now (several transfers may end in the same instant).
            while (upcoming := self.band.next_completion()) is not None and upcoming[0] <= self.env.now:
                done, bits = self._done.pop(self.band.complete(self.env.now))
                self.bits_carried += bits
                done.succeed()
