"""Replay of measured link rates from trace files, looping, in bit/s over seconds.

Scenario: instead of computing a rate from path loss, a link follows a recorded throughput trace. Two formats:
- Mahimahi: one line per 1500-byte delivery opportunity, an integer timestamp in ms; repeated timestamps are
  several packets in that ms; after its last timestamp P the trace starts again (period P ms, as mahimahi's
  link shell does). Each millisecond's packets are spread evenly over that millisecond.
- Two columns "time_s throughput_Mbps" (Pensieve): whitespace or comma separated, '#' starts a comment, blank
  lines are skipped, times strictly increase, each throughput holds from its time to the next one. The last
  throughput holds for as long as the interval before it, then the trace loops.
Both become a `RateTrace`: piecewise-constant rates whose phase 0 is the trace's first sample, so simulated time
t reads the trace at t modulo its period.

Files are text and are parsed defensively: nothing is unpickled or evaluated, numbers must be plain decimals,
and every malformed input raises ValueError naming the file, the line and the reason.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

TraceFormat = Literal["mahimahi", "two_column"]

MAHIMAHI_PACKET_BITS = 1500 * 8
# Timestamps past this (about 31 years) would lose millisecond resolution once turned into float seconds.
_MAX_MAHIMAHI_MS = 10**12
_INTEGER = re.compile(r"[0-9]+")
# Plain decimals only: float() would also take "nan", "inf", "1_000" and non-ASCII digits.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SEPARATORS = re.compile(r"[\s,]+")


@dataclass(frozen=True, eq=False)
class RateTrace:
    """A looping piecewise-constant rate: `rates_bps[i]` from `starts_s[i]` to the next start (or `period_s`).

    >>> trace = RateTrace(np.array([0.0, 1.0]), np.array([8e6, 0.0]), period_s=2.0)
    >>> float(trace.rate_bps(2.5)), trace.transfer_time_s(12e6, start_s=0.5)
    (8000000.0, 2.5)
    """

    starts_s: np.ndarray
    rates_bps: np.ndarray
    period_s: float
    _delivered: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        starts = np.asarray(self.starts_s, dtype=float)
        rates = np.asarray(self.rates_bps, dtype=float)
        period = float(self.period_s)
        if starts.ndim != 1 or starts.shape != rates.shape or len(starts) == 0:
            raise ValueError("a rate trace needs matching, non-empty 1-D starts and rates")
        if starts[0] != 0.0 or not (np.diff(starts) > 0).all() or not (starts[-1] < period < math.inf):
            raise ValueError("trace starts must begin at 0, strictly increase and stay below a finite period")
        if not (np.isfinite(rates).all() and (rates >= 0).all()):
            raise ValueError("trace rates must be finite and >= 0")
        widths = np.diff(np.append(starts, period))
        # Bits delivered from phase 0 to each segment start; the last entry is one loop's total.
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is caught just below, not warned about
            delivered = np.concatenate([[0.0], np.cumsum(rates * widths)])
        if not np.isfinite(delivered[-1]):
            raise ValueError("trace capacity over one loop overflows")
        object.__setattr__(self, "starts_s", starts)
        object.__setattr__(self, "rates_bps", rates)
        object.__setattr__(self, "period_s", period)
        object.__setattr__(self, "_delivered", delivered)

    @property
    def loop_bits(self) -> float:
        """Bits the link can deliver over one loop of the trace."""
        return float(self._delivered[-1])

    @property
    def delivered_bits(self) -> np.ndarray:
        """Bits delivered from phase 0 to each segment start, then over the whole loop (one more entry)."""
        return self._delivered

    @property
    def mean_rate_bps(self) -> float:
        return self.loop_bits / self.period_s

    def rate_bps(self, t: np.ndarray | float) -> np.ndarray:
        """Rate in bit/s at simulated time `t` s (any shape), the trace looping."""
        phase = np.mod(np.asarray(t, dtype=float), self.period_s)
        return self.rates_bps[np.searchsorted(self.starts_s, phase, side="right") - 1]

    def transfer_time_s(self, bits: float, start_s: float) -> float:
        """Seconds needed to deliver `bits` bits starting at `start_s` s, integrating the looping rate."""
        if not self.loop_bits > 0:
            raise ValueError("the trace delivers nothing over a whole loop; no transfer would ever finish")
        if not (bits >= 0 and math.isfinite(bits)):
            raise ValueError(f"bits must be finite and >= 0, got {bits}")
        if not math.isfinite(start_s):
            raise ValueError(f"start time must be finite, got {start_s}")
        if bits == 0:
            return 0.0
        phase = float(np.mod(start_s, self.period_s))
        target = self._delivered_by(phase) + bits
        if not math.isfinite(target / self.loop_bits):
            return math.inf  # more loops than a float can count: never, for any simulation
        # Whole loops first, then the earliest phase of the last loop at which the remainder is reached.
        loops = math.ceil(target / self.loop_bits) - 1
        rest = min(max(target - loops * self.loop_bits, 0.0), self.loop_bits)
        j = max(int(np.searchsorted(self._delivered, rest, side="left")) - 1, 0)
        while self.rates_bps[j] == 0:  # rounding landed on a dead segment; the bits arrive at the next live one
            j += 1
        end = min(self.starts_s[j] + (rest - self._delivered[j]) / self.rates_bps[j], self._segment_end(j))
        return float(max(loops * self.period_s + end - phase, 0.0))

    def _delivered_by(self, phase: float) -> float:
        i = int(np.searchsorted(self.starts_s, phase, side="right")) - 1
        return float(self._delivered[i] + self.rates_bps[i] * (phase - self.starts_s[i]))

    def _segment_end(self, j: int) -> float:
        return float(self.starts_s[j + 1]) if j + 1 < len(self.starts_s) else self.period_s


def load_trace(path: str | os.PathLike, format: TraceFormat) -> RateTrace:
    """Read a trace file in the given format ("mahimahi" or "two_column")."""
    if format == "mahimahi":
        return load_mahimahi(path)
    if format == "two_column":
        return load_two_column(path)
    raise ValueError(f"unknown trace format {format!r}; choose 'mahimahi' or 'two_column'")


def load_mahimahi(path: str | os.PathLike) -> RateTrace:
    """Read a Mahimahi trace file (ms timestamps, one 1500-byte opportunity per line)."""
    with open(path, "rb") as f:
        return parse_mahimahi(f.read(), name=os.fspath(path))


def load_two_column(path: str | os.PathLike) -> RateTrace:
    """Read a "time_s throughput_Mbps" trace file."""
    with open(path, "rb") as f:
        return parse_two_column(f.read(), name=os.fspath(path))


def parse_mahimahi(data: bytes, name: str = "<mahimahi>") -> RateTrace:
    """A Mahimahi trace from its bytes; `name` labels error messages."""
    stamps = []
    last_line = 0
    for number, text in _lines(data, name):
        if not text:
            continue
        last_line = number
        if not _INTEGER.fullmatch(text):
            raise _error(name, number, f"expected a timestamp in whole ms, got {text[:40]!r}")
        # Check the length before int(): a megabyte of digits is a slow parse and far past the bound anyway.
        if len(text) > 20 or int(text) > _MAX_MAHIMAHI_MS:
            raise _error(name, number, f"timestamp {text[:20]} ms is beyond {_MAX_MAHIMAHI_MS} ms")
        ms = int(text)
        if stamps and ms < stamps[-1]:
            raise _error(name, number, f"timestamp {ms} ms goes back in time (previous {stamps[-1]} ms)")
        stamps.append(ms)
    if not stamps:
        raise _error(name, _line_count(data), "empty trace: no timestamps")
    period_ms = stamps[-1]
    if period_ms == 0:
        raise _error(name, last_line, "the trace must last longer than 0 ms (its last timestamp is its period)")
    # The opportunity at the period itself is the next loop's opportunity at 0.
    busy, packets = np.unique(np.mod(stamps, period_ms), return_counts=True)
    # Each busy millisecond delivers its packets over that millisecond; the idle gaps after them carry nothing.
    idle = np.setdiff1d(np.append(busy + 1, 0), busy)
    idle = idle[idle < period_ms]
    starts = np.concatenate([busy, idle])
    values = np.concatenate([packets * MAHIMAHI_PACKET_BITS / 1e-3, np.zeros(len(idle))])
    order = np.argsort(starts)
    starts, values = starts[order], values[order]
    return RateTrace(starts / 1e3, values, period_ms / 1e3)


def parse_two_column(data: bytes, name: str = "<two-column>") -> RateTrace:
    """A "time_s throughput_Mbps" trace from its bytes; `name` labels error messages."""
    times: list[float] = []
    mbps: list[float] = []
    last_line = 0
    for number, text in _lines(data, name):
        text = text.split("#", 1)[0].strip()
        if not text:
            continue
        last_line = number
        fields = _SEPARATORS.split(text)
        if len(fields) != 2:
            raise _error(name, number, f"expected 2 columns (time_s throughput_Mbps), got {len(fields)}")
        time_s, rate = (_decimal(name, number, field) for field in fields)
        if time_s < 0 or rate < 0:
            raise _error(name, number, f"negative {'time' if time_s < 0 else 'throughput'} {min(time_s, rate)}")
        if times and time_s <= times[-1]:
            raise _error(name, number, f"time {time_s} s does not increase (previous {times[-1]} s)")
        times.append(time_s)
        mbps.append(rate)
    if not times:
        raise _error(name, _line_count(data), "empty trace: no 'time_s throughput_Mbps' lines")
    t = [time_s - times[0] for time_s in times]
    # The last throughput holds as long as the interval before it; a single line is a constant rate.
    # Plain floats: their overflow to inf is silent, and caught here.
    period = t[-1] + (t[-1] - t[-2] if len(t) > 1 else 1.0)
    if not math.isfinite(period) or period <= t[-1]:
        raise _error(name, last_line, "trace times are too large to loop over")
    try:
        return RateTrace(np.array(t), np.array(mbps) * 1e6, period)
    except ValueError as err:
        raise _error(name, last_line, str(err)) from None


def _lines(data: bytes, name: str):
    """(line number from 1, text without its line ending or surrounding blanks) for each line."""
    if not isinstance(data, (bytes, bytearray)):
        raise TypeError(f"{name}: expected bytes, got {type(data).__name__}")
    for number, raw in enumerate(_split_lines(data), start=1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise _error(name, number, f"not UTF-8 text ({err.reason} at byte {err.start})") from None
        yield number, text.strip()


def _split_lines(data: bytes) -> list[bytes]:
    lines = bytes(data).split(b"\n")
    return lines[:-1] if lines[-1] == b"" else lines  # a final newline ends the last line, it starts none


def _line_count(data: bytes) -> int:
    """Where a whole-file complaint points: the last line, or line 1 of an empty file."""
    return max(len(_split_lines(data)), 1)


def _decimal(name: str, number: int, field: str) -> float:
    if not _DECIMAL.fullmatch(field):
        raise _error(name, number, f"not a number: {field[:40]!r}")
    value = float(field)
    if not math.isfinite(value):
        raise _error(name, number, f"number out of range: {field[:40]!r}")
    return value


def _error(name: str, number: int, reason: str) -> ValueError:
    return ValueError(f"{name}, line {number}: {reason}")
