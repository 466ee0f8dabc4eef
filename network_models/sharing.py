"""One shared band (a cell's uplink or downlink) as a fluid: active transfers split it equally.

Scenario: devices in a cell start and finish uploads at arbitrary times. While n transfers are active each gets
an equal share of the band: with OFDMA a slice b = B / n at rate b log2(1 + p g / (N0 b)), with TDMA 1/n of the
airtime at rate (1/n) B log2(1 + p g / (N0 B)). Whenever a transfer starts or ends, every active transfer is
advanced by (elapsed seconds) x (its current rate) and the rates are recomputed for the new n, in O(n) numpy.

The band keeps no clock of its own: callers pass `now` (seconds, never decreasing) to every change, and ask
`next_completion()` when to come back. This keeps it usable from SimPy, a plain event loop or a test. A transfer
whose rate is 0 (outage) never completes; only `remove` takes it out.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from network_models.channel import THERMAL_NOISE_DBM_PER_HZ

Scheme = Literal["ofdma", "tdma"]

_INITIAL_CAPACITY = 16


class SharedBand:
    """Equal sharing of `band_hz` Hz among the active transfers, by `scheme` ("ofdma" or "tdma").

    `outage_snr_db`: a transfer whose SNR on its share is below this many dB gets rate 0 (None: never). It still
    holds its share: the scheduler does not know the device is in outage, so the others do not speed up.

    >>> band = SharedBand(20e6, noise_figure_db=5.0)
    >>> band.start(7, bits=8e6, tx_power_dbm=23.0, loss_db=121.3, now=0.0)
    >>> time, transfer = band.next_completion()
    >>> round(time, 2), transfer
    (0.6, 7)
    >>> band.complete(time)
    7
    """

    def __init__(
        self, band_hz: float, noise_figure_db: float, scheme: Scheme = "ofdma", outage_snr_db: float | None = None
    ) -> None:
        if not band_hz > 0:
            raise ValueError(f"band must be positive, got {band_hz} Hz")
        if scheme not in ("ofdma", "tdma"):
            raise ValueError(f"unknown sharing scheme {scheme!r}; choose 'ofdma' or 'tdma'")
        self._band_hz = float(band_hz)
        self._scheme = scheme
        # Noise density in mW/Hz; received power over it is an "SNR x Hz" that each share divides by its width.
        self._noise_mw_per_hz = 10.0 ** ((THERMAL_NOISE_DBM_PER_HZ + noise_figure_db) / 10.0)
        self._outage_snr = -np.inf if outage_snr_db is None else 10.0 ** (outage_snr_db / 10.0)
        self._now = -np.inf
        self._n = 0
        self._slot: dict[int, int] = {}
        self._ids = np.empty(_INITIAL_CAPACITY, dtype=np.int64)
        self._bits = np.empty(_INITIAL_CAPACITY)  # size of each transfer, bits
        self._left = np.empty(_INITIAL_CAPACITY)  # bits still to send
        self._signal_hz = np.empty(_INITIAL_CAPACITY)  # p g / N0, Hz
        self._rate = np.empty(_INITIAL_CAPACITY)  # current rate, bit/s
        self._next: tuple[float, int] | None | bool = False  # cached next_completion(); False: stale

    @property
    def active(self) -> int:
        """Number of transfers sharing the band now."""
        return self._n

    def __contains__(self, transfer_id: int) -> bool:
        return transfer_id in self._slot

    def rate_bps(self, transfer_id: int) -> float:
        """Current rate of a transfer in bit/s (0 in outage)."""
        return float(self._rate[self._slot_of(transfer_id)])

    def remaining_bits(self, transfer_id: int) -> float:
        """Bits the transfer still had to send at the last change (start, remove or complete)."""
        return float(self._left[self._slot_of(transfer_id)])

    def start(self, transfer_id: int, bits: float, tx_power_dbm: float, loss_db: float, now: float) -> None:
        """A transfer of `bits` bits joins at `now` s; the sender transmits at `tx_power_dbm` and loses `loss_db` dB."""
        if transfer_id in self._slot:
            raise ValueError(f"transfer {transfer_id} is already active")
        if not (np.isfinite(bits) and bits >= 0):
            raise ValueError(f"transfer {transfer_id}: bits must be finite and >= 0, got {bits}")
        if not np.isfinite(tx_power_dbm) or np.isnan(loss_db) or loss_db == -np.inf:
            raise ValueError(f"transfer {transfer_id}: bad power {tx_power_dbm} dBm or loss {loss_db} dB")
        self._advance(now)
        if self._n == len(self._ids):
            self._grow()
        i = self._n
        self._ids[i] = transfer_id
        self._bits[i] = bits
        self._left[i] = bits
        # An infinite loss (a -inf dB fade) gives 0 Hz of signal: a link that never delivers.
        self._signal_hz[i] = 10.0 ** ((tx_power_dbm - loss_db) / 10.0) / self._noise_mw_per_hz
        self._slot[transfer_id] = i
        self._n += 1
        self._recompute_rates()

    def remove(self, transfer_id: int, now: float) -> float:
        """Cancel a transfer at `now` s (the device went away); returns the bits it had sent."""
        i = self._slot_of(transfer_id)
        self._advance(now)
        sent = float(self._bits[i] - self._left[i])
        self._pop(i)
        return sent

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

    def complete(self, now: float) -> int:
        """Advance to `now` s, when a transfer finishes, and take it out; returns its id."""
        upcoming = self.next_completion()
        self._advance(now)
        if self._n == 0:
            raise ValueError(f"no transfer is active at {now} s")
        if upcoming is not None and abs(upcoming[0] - now) <= self._tolerance_s(now):
            # The transfer the cache named is the one due now: no need to scan the band again.
            transfer_id = upcoming[1]
            self._pop(self._slot[transfer_id])
            return transfer_id
        wait = self._time_left()
        i = int(np.argmin(wait))
        if wait[i] > self._tolerance_s(now):
            raise ValueError(f"no transfer finishes at {now} s; the next one needs {wait[i]} s more")
        transfer_id = int(self._ids[i])
        self._pop(i)
        return transfer_id

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
        """Send at current rates from the last change until `now`."""
        if now < self._now - self._tolerance_s(now) or np.isnan(now):
            raise ValueError(f"time went backwards: {now} s after {self._now} s")
        if self._n:
            elapsed = max(now - self._now, 0.0)
            rate = self._rate[: self._n]
            left = self._left[: self._n] - rate * elapsed
            # Sending past a finish means the caller skipped a completion; the bits would silently vanish.
            overshoot = left < 0
            if overshoot.any() and (-left[overshoot] / rate[overshoot]).max() > self._tolerance_s(now):
                late = int(self._ids[: self._n][overshoot][0])
                raise ValueError(f"transfer {late} finished before {now} s; call complete() at its completion time")
            np.maximum(left, 0.0, out=self._left[: self._n])
            self._next = False
        self._now = max(now, self._now)

    def _recompute_rates(self) -> None:
        self._next = False
        n = self._n
        if n == 0:
            return
        signal_hz = self._signal_hz[:n]
        # OFDMA: a slice B/n, whose noise shrinks with it. TDMA: the whole band (and its noise), 1/n of the time.
        width = self._band_hz / n if self._scheme == "ofdma" else self._band_hz
        snr = signal_hz / width
        rate = width * np.log2(1.0 + snr)
        if self._scheme == "tdma":
            rate /= n
        rate[snr < self._outage_snr] = 0.0
        self._rate[:n] = rate

    def _pop(self, i: int) -> None:
        """Take out slot i by moving the last active transfer into it, then share the band anew."""
        last = self._n - 1
        del self._slot[int(self._ids[i])]
        if i != last:
            for array in (self._ids, self._bits, self._left, self._signal_hz, self._rate):
                array[i] = array[last]
            self._slot[int(self._ids[i])] = i
        self._n = last
        self._recompute_rates()

    def _grow(self) -> None:
        size = 2 * len(self._ids)
        for name in ("_ids", "_bits", "_left", "_signal_hz", "_rate"):
            old = getattr(self, name)
            new = np.empty(size, dtype=old.dtype)
            new[: self._n] = old[: self._n]
            setattr(self, name, new)
