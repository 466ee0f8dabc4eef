"""One shared band (a cell's uplink or downlink) as a fluid: active transfers split it equally.

Scenario: devices in a cell start and finish transfers at arbitrary times. While n transfers are active each
gets an equal share of the band (REFERENCE.md section 5):
- OFDMA uplink: a slice b = B / n at rate b log2(1 + p g / ((N0 + I) b)). Each device keeps its own transmit
  power, so its power spectral density rises as its slice shrinks.
- OFDMA downlink (`split_power=True`): the base station has one power budget P for the whole band and gives
  each slice P / n, so a device's SINR P g / ((N0 + I) B) does not depend on n and its rate is
  (B / n) log2(1 + P g / ((N0 + I) B)). Giving every slice the full P would overstate downlink rates.
- TDMA (either direction): the whole band at full power, 1/n of the time: (1/n) B log2(1 + p g / ((N0 + I) B)).
N0 is the thermal noise density raised by the receiver's noise figure, I the interference density that other
cells put on that transfer's receiver (see `interference`); both in mW/Hz.

Whenever a transfer starts or ends, every active transfer is advanced by (elapsed seconds) x (its current rate)
and the rates are recomputed for the new n, in O(n) numpy. The same step adds (elapsed) x (radio power at the
current rate) to each transfer's energy: a transfer's rate changes as others come and go, so its energy is
integrated over the rates it actually had, not charged at the rate it started with (which, with five
transfers starting in one instant, would charge the first one at its solo rate).

The band keeps no clock of its own: callers pass `now` (seconds, never decreasing) to every change, and ask
`next_completion()` when to come back. This keeps it usable from SimPy, a plain event loop or a test. A transfer
whose rate is 0 (no signal at all: an infinite loss) never completes; only `remove` takes it out. Links in
outage never start (the emulator tests their SNR first).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from network_models.channel import THERMAL_NOISE_DBM_PER_HZ
from network_models.transfer import NO_POWER, Delivery, RadioPower

Scheme = Literal["ofdma", "tdma"]

_INITIAL_CAPACITY = 16

# Per-slot arrays (one entry per active transfer), kept in step by _pop and _grow.
_SLOT_ARRAYS = ("_ids", "_bits", "_left", "_signal_hz", "_rate", "_air_s", "_energy_j", "_base_w", "_w_per_bps",
                "_max_w")


class SharedBand:
    """Equal sharing of `band_hz` Hz among the active transfers, by `scheme` ("ofdma" or "tdma").

    `split_power`: the transmitter is one base station whose power is split over the OFDMA slices (a cell's
    downlink); False for an uplink, where each device has its own power. No effect under TDMA.

    A 1 MB update, 23 dBm over 121.3 dB on 20 MHz (REFERENCE.md's worked example, 13.4 Mb/s), with a radio
    drawing 1 W + 0.1 W per Mb/s:

    >>> band = SharedBand(20e6, noise_figure_db=5.0)
    >>> band.start(7, bits=8e6, tx_power_dbm=23.0, loss_db=121.3, now=0.0, power=RadioPower(1.0, 0.1, 5.0))
    >>> time, transfer = band.next_completion()
    >>> round(time, 2), transfer
    (0.6, 7)
    >>> transfer, delivery = band.complete(time)
    >>> transfer, delivery.bits, round(delivery.seconds, 2), round(delivery.energy_j, 2)
    (7, 8000000.0, 0.6, 1.4)
    """

    def __init__(
        self, band_hz: float, noise_figure_db: float, scheme: Scheme = "ofdma", split_power: bool = False,
    ) -> None:
        if not band_hz > 0:
            raise ValueError(f"band must be positive, got {band_hz} Hz")
        if scheme not in ("ofdma", "tdma"):
            raise ValueError(f"unknown sharing scheme {scheme!r}; choose 'ofdma' or 'tdma'")
        self._band_hz = float(band_hz)
        self._scheme = scheme
        self._split_power = bool(split_power)
        # Noise density in mW/Hz; received power over it is an "SNR x Hz" that each share divides by its width.
        self._noise_mw_per_hz = 10.0 ** ((THERMAL_NOISE_DBM_PER_HZ + noise_figure_db) / 10.0)
        self._now = -np.inf
        self._n = 0
        self._slot: dict[int, int] = {}
        self._ids = np.empty(_INITIAL_CAPACITY, dtype=np.int64)
        self._bits = np.empty(_INITIAL_CAPACITY)  # size of each transfer, bits
        self._left = np.empty(_INITIAL_CAPACITY)  # bits still to send
        self._signal_hz = np.empty(_INITIAL_CAPACITY)  # p g / (N0 + I), Hz
        self._rate = np.empty(_INITIAL_CAPACITY)  # current rate, bit/s
        self._air_s = np.empty(_INITIAL_CAPACITY)  # seconds on the air so far
        self._energy_j = np.empty(_INITIAL_CAPACITY)  # radio energy so far, J
        # The transfer's RadioPower, per bit/s instead of per Mb/s so the hot path needs no scaling.
        self._base_w = np.empty(_INITIAL_CAPACITY)
        self._w_per_bps = np.empty(_INITIAL_CAPACITY)
        self._max_w = np.empty(_INITIAL_CAPACITY)
        self._next: tuple[float, int] | None | bool = False  # cached next_completion(); False: stale

    @property
    def active(self) -> int:
        """Number of transfers sharing the band now."""
        return self._n

    def __contains__(self, transfer_id: int) -> bool:
        return transfer_id in self._slot

    def rate_bps(self, transfer_id: int) -> float:
        """Current rate of a transfer in bit/s (0 for a link with no signal)."""
        return float(self._rate[self._slot_of(transfer_id)])

    def remaining_bits(self, transfer_id: int) -> float:
        """Bits the transfer still had to send at the last change (start, remove or complete)."""
        return float(self._left[self._slot_of(transfer_id)])

    def start(
        self, transfer_id: int, bits: float, tx_power_dbm: float, loss_db: float, now: float,
        power: RadioPower = NO_POWER, interference_mw_per_hz: float = 0.0,
    ) -> None:
        """A transfer of `bits` bits joins at `now` s.

        The sender transmits at `tx_power_dbm` (with `split_power`: the base station's whole budget over the
        band) and the signal loses `loss_db` dB. `power` is what the radio whose energy is counted draws
        (the device's, for either direction). `interference_mw_per_hz` (mW/Hz) is what other cells add to the
        noise at this transfer's receiver.
        """
        if transfer_id in self._slot:
            raise ValueError(f"transfer {transfer_id} is already active")
        if not (np.isfinite(bits) and bits >= 0):
            raise ValueError(f"transfer {transfer_id}: bits must be finite and >= 0, got {bits}")
        if not np.isfinite(tx_power_dbm) or np.isnan(loss_db) or loss_db == -np.inf:
            raise ValueError(f"transfer {transfer_id}: bad power {tx_power_dbm} dBm or loss {loss_db} dB")
        if not (np.isfinite(interference_mw_per_hz) and interference_mw_per_hz >= 0):
            raise ValueError(f"transfer {transfer_id}: interference must be finite and >= 0, "
                             f"got {interference_mw_per_hz} mW/Hz")
        self._advance(now)
        if self._n == len(self._ids):
            self._grow()
        i = self._n
        self._ids[i] = transfer_id
        self._bits[i] = bits
        self._left[i] = bits
        # An infinite loss (a -inf dB fade) gives 0 Hz of signal: a link that never delivers.
        received_mw = 10.0 ** ((tx_power_dbm - loss_db) / 10.0)
        self._signal_hz[i] = received_mw / (self._noise_mw_per_hz + interference_mw_per_hz)
        self._air_s[i] = 0.0
        self._energy_j[i] = 0.0
        self._base_w[i] = power.base_w
        self._w_per_bps[i] = power.w_per_mbps / 1e6
        self._max_w[i] = power.max_w
        self._slot[transfer_id] = i
        self._n += 1
        self._recompute_rates()

    def remove(self, transfer_id: int, now: float) -> Delivery:
        """Cancel a transfer at `now` s (the device went away); returns what it had sent and spent."""
        i = self._slot_of(transfer_id)
        self._advance(now)
        delivery = self._delivery(i, float(self._bits[i] - self._left[i]))
        self._pop(i)
        return delivery

    def next_completion(self) -> tuple[float, int] | None:
        """(time in s, transfer id) of the next transfer to finish at current rates; None if none ever will."""
        # Asked far more often than the band changes (every wake-up of the clock), so it is cached.
        if self._next is False:
            self._next = self._find_next()
        return self._next

    def _find_next(self) -> tuple[float, int] | None:
        if self._n == 0:
            return None
        wait = self._time_left()
        i = int(np.argmin(wait))
        if not np.isfinite(wait[i]):
            return None
        return float(self._now + wait[i]), int(self._ids[i])

    def complete(self, now: float) -> tuple[int, Delivery]:
        """Advance to `now` s, when a transfer finishes, and take it out; returns its id and its Delivery."""
        upcoming = self.next_completion()
        self._advance(now)
        if self._n == 0:
            raise ValueError(f"no transfer is active at {now} s")
        if upcoming is not None and abs(upcoming[0] - now) <= self._tolerance_s(now):
            # The transfer the cache named is the one due now: no need to scan the band again.
            i = self._slot[upcoming[1]]
        else:
            wait = self._time_left()
            i = int(np.argmin(wait))
            if wait[i] > self._tolerance_s(now):
                raise ValueError(f"no transfer finishes at {now} s; the next one needs {wait[i]} s more")
        transfer_id = int(self._ids[i])
        # It is done: all its bits count, whatever rounding left in the fluid.
        delivery = self._delivery(i, float(self._bits[i]))
        self._pop(i)
        return transfer_id, delivery

    def _delivery(self, i: int, bits: float) -> Delivery:
        return Delivery(bits, float(self._air_s[i]), float(self._energy_j[i]))

    def _slot_of(self, transfer_id: int) -> int:
        try:
            return self._slot[transfer_id]
        except KeyError:
            raise KeyError(f"transfer {transfer_id} is not active") from None

    @staticmethod
    def _tolerance_s(now: float) -> float:
        # Completion times are sums of floats; a nanosecond (relative to the clock) absorbs their rounding.
        return 1e-9 * max(1.0, abs(now))

    def _time_left(self) -> np.ndarray:
        """Seconds each active transfer still needs at current rates (inf if stalled, 0 if done)."""
        left, rate = self._left[: self._n], self._rate[: self._n]
        wait = np.full(self._n, np.inf)
        np.divide(left, rate, out=wait, where=rate > 0)
        wait[left <= 0] = 0.0
        return wait

    def _advance(self, now: float) -> None:
        """Send, and draw radio power, at current rates from the last change until `now`."""
        if now < self._now - self._tolerance_s(now) or np.isnan(now):
            raise ValueError(f"time went backwards: {now} s after {self._now} s")
        n = self._n
        if n:
            elapsed = max(now - self._now, 0.0)
            rate = self._rate[:n]
            left = self._left[:n] - rate * elapsed
            # Sending past a finish means the caller skipped a completion; the bits would silently vanish.
            overshoot = left < 0
            if overshoot.any() and (-left[overshoot] / rate[overshoot]).max() > self._tolerance_s(now):
                late = int(self._ids[:n][overshoot][0])
                raise ValueError(f"transfer {late} finished before {now} s; call complete() at its completion time")
            np.maximum(left, 0.0, out=self._left[:n])
            if elapsed > 0:
                watts = np.minimum(self._base_w[:n] + self._w_per_bps[:n] * rate, self._max_w[:n])
                self._energy_j[:n] += watts * elapsed
                self._air_s[:n] += elapsed
            self._next = False
        self._now = max(now, self._now)

    def _recompute_rates(self) -> None:
        self._next = False
        n = self._n
        if n == 0:
            return
        signal_hz = self._signal_hz[:n]
        # OFDMA: a slice B/n. Its noise shrinks with it, and so does the base station's power when it is split,
        # which leaves the SINR that of the whole band. TDMA: the whole band (and its noise), 1/n of the time.
        width = self._band_hz / n if self._scheme == "ofdma" else self._band_hz
        sinr = signal_hz / (self._band_hz if self._split_power else width)
        rate = width * np.log2(1.0 + sinr)
        if self._scheme == "tdma":
            rate /= n
        self._rate[:n] = rate

    def _pop(self, i: int) -> None:
        """Take out slot i by moving the last active transfer into it, then share the band anew."""
        last = self._n - 1
        del self._slot[int(self._ids[i])]
        if i != last:
            for name in _SLOT_ARRAYS:
                array = getattr(self, name)
                array[i] = array[last]
            self._slot[int(self._ids[i])] = i
        self._n = last
        self._recompute_rates()

    def _grow(self) -> None:
        size = 2 * len(self._ids)
        for name in _SLOT_ARRAYS:
            old = getattr(self, name)
            new = np.empty(size, dtype=old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)
