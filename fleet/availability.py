"""Availability: when each device is online and idle, able to join a round, and for how much longer.

Scenario: phones train only while idle, plugged in and on Wi-Fi, mostly at night in their owners' time zones;
gateways come and go with their links; a recorded fleet replays its own trace. The emulator asks two
questions at a simulated instant t about an array of device indices: which are available now
(`available`), and for how many more seconds each stays so (`offline_after`, the hazard that ends a
session when the device leaves). Battery devices also ask whether they are charging (`charging`).

Each model is built by name from a scenario's spec (`build_availability`); recorded traces are read by
fleet/availability_traces.py. Every model is deterministic in (seed, device index): per-device draws come
from named streams (fleet.rng.stream), never from a shared generator, so the answer for a device does not
depend on which other devices were asked about, in which order, or at which times.

Units: t is simulated seconds since the run started, at midnight of the reference time zone (t = 0);
durations are seconds; clock times and time-zone offsets are hours.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from aggregation.registry import REQUIRED, Registry, param
from fleet.availability_traces import BehaveTrace, load_behave_trace
from fleet.rng import stream

HOUR = 3600.0  # s
DAY = 24.0  # h


class Availability(Protocol):
    def available(self, t: float, devices: np.ndarray) -> np.ndarray:
        """(n,) bool: online and idle at t."""

    def offline_after(self, t: float, devices: np.ndarray) -> np.ndarray:
        """(n,) float seconds from t until the device next becomes unavailable; 0 where it is unavailable now,
        inf where it never leaves."""

    def charging(self, t: float, devices: np.ndarray) -> np.ndarray:
        """(n,) bool: plugged in at t, so a battery device gains charge instead of losing it."""

    def ever_available(self, devices: np.ndarray) -> np.ndarray:
        """(n,) bool: available at some time at all (privacy accounting samples from these alone)."""

    # How `charging` follows from availability: True, plugged in exactly while available; False, never
    # plugged in. A device at work is available until its `offline_after`, so a clock that knows when a session
    # began knows the device's charging all through it without asking again (fleet/fast_clock.py).
    plugged_while_available: bool


def _always(devices: np.ndarray) -> np.ndarray:
    return np.ones(_indices(devices).shape, dtype=bool)


def _query(t: float, devices: np.ndarray) -> tuple[float, np.ndarray]:
    t = float(t)
    if not math.isfinite(t) or t < 0:
        raise ValueError(f"t must be finite simulated seconds >= 0, got {t}")
    return t, _indices(devices)


def _indices(devices: np.ndarray) -> np.ndarray:
    d = np.asarray(devices)
    if d.ndim != 1 or (d.size and d.dtype.kind not in "iu"):
        raise ValueError(f"devices must be a 1-D array of integer indices, got shape {d.shape} {d.dtype}")
    d = d.astype(np.int64, copy=False)
    if d.size and d.min() < 0:  # numpy would wrap a negative index round to the end of a table
        raise ValueError(f"device indices must be >= 0, got {d.min()}")
    return d


class _PerDeviceUniforms:
    """u[d, :] for device d, from one stream, drawn for the first devices and extended when a larger index
    is asked for. Generator.random fills row by row, one 64-bit draw per value, so a longer draw starts with
    the shorter one: a device's values do not depend on how many were drawn."""

    def __init__(self, seed: int, purpose: str, columns: int) -> None:
        self._seed, self._purpose, self._columns = seed, purpose, columns
        self._u = np.empty((0, columns))

    def reserve(self, n: int) -> None:
        if n > len(self._u):
            size = max(n, 2 * len(self._u))  # doubling keeps repeated extension linear overall
            self._u = stream(self._seed, self._purpose).random((size, self._columns))

    def __call__(self, devices: np.ndarray) -> np.ndarray:
        if devices.size:
            self.reserve(int(devices.max()) + 1)
        return self._u[devices]


@dataclass(frozen=True)
class AlwaysOn:
    """Every device is always available and never charging (mains-powered or on its own battery)."""

    plugged_while_available = False

    def available(self, t: float, devices: np.ndarray) -> np.ndarray:
        _, d = _query(t, devices)
        return np.ones(d.shape, dtype=bool)

    def offline_after(self, t: float, devices: np.ndarray) -> np.ndarray:
        _, d = _query(t, devices)
        return np.full(d.shape, np.inf)

    def charging(self, t: float, devices: np.ndarray) -> np.ndarray:
        _, d = _query(t, devices)
        return np.zeros(d.shape, dtype=bool)

    def ever_available(self, devices: np.ndarray) -> np.ndarray:
        return _always(devices)


@dataclass(frozen=True)
class Diurnal:
    """Available only inside a nightly charging window, in each device's local time.

    Each device gets its own window start, window_start_h plus a uniform jitter in [-jitter_h, +jitter_h],
    and a time zone drawn uniformly from timezone_offsets_h (list a zone twice to weight it). Both draws are
    made once, from the stream (seed, "diurnal"). Local clock = t / 3600 + offset, in hours. The window is
    half-open: [start, start + window_hours). The device is plugged in exactly while it is available.
    """

    plugged_while_available = True
    window_start_h: float = param(22.0, "local clock time at which phones are typically put on charge")
    window_hours: float = param(9.0, "length of the window, in (0, 24]: 9 is 22:00 to 07:00")
    jitter_h: float = param(1.0, "half-width of the spread of window starts across owners, in [0, 12]")
    timezone_offsets_h: tuple[float, ...] = param((0.0,), "time zones, hours ahead of the reference zone")
    seed: int = param(0, "the scenario's seed (never set in a scenario)")
    _draws: _PerDeviceUniforms = field(init=False, repr=False, compare=False)
    _table: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        offsets = tuple(float(x) for x in np.atleast_1d(np.asarray(self.timezone_offsets_h, dtype=float)))
        if not offsets or not all(math.isfinite(x) for x in offsets):
            raise ValueError(f"timezone_offsets_h must list at least one finite offset, got {offsets}")
        if not 0.0 < self.window_hours <= DAY:
            raise ValueError(f"window_hours must be in (0, 24], got {self.window_hours}")
        if not 0.0 <= self.jitter_h <= DAY / 2:
            raise ValueError(f"jitter_h must be in [0, 12], got {self.jitter_h}")
        if not math.isfinite(self.window_start_h):
            raise ValueError(f"window_start_h must be finite, got {self.window_start_h}")
        object.__setattr__(self, "timezone_offsets_h", offsets)
        # Column 0 places the window start, column 1 picks the time zone.
        object.__setattr__(self, "_draws", _PerDeviceUniforms(self.seed, "diurnal", 2))
        object.__setattr__(self, "_table", (np.empty(0), np.empty(0)))

    def window_start_local_h(self, devices: np.ndarray) -> np.ndarray:
        """(n,) each device's window start, local clock hours in [0, 24)."""
        d = _indices(devices)
        return self._per_device(d)[0][d]

    def timezone_h(self, devices: np.ndarray) -> np.ndarray:
        """(n,) each device's offset from the reference zone, hours."""
        d = _indices(devices)
        return self._per_device(d)[1][d]

    def _per_device(self, devices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Window starts and time zones of every device drawn so far, worked out once: a round asks about the
        whole fleet, a million devices, several times."""
        if devices.size and int(devices.max()) >= len(self._table[0]):
            u = self._draws(np.arange(int(devices.max()) + 1))
            zones = np.asarray(self.timezone_offsets_h)
            object.__setattr__(self, "_table", (
                np.mod(self.window_start_h + self.jitter_h * (2.0 * u[:, 0] - 1.0), DAY),
                zones[np.minimum((u[:, 1] * len(zones)).astype(np.int64), len(zones) - 1)]))
        return self._table

    def _hours_into_window(self, t: float, devices: np.ndarray) -> np.ndarray:
        local_h = t / HOUR + self.timezone_h(devices)
        return np.mod(local_h - self.window_start_local_h(devices), DAY)

    def available(self, t: float, devices: np.ndarray) -> np.ndarray:
        t, d = _query(t, devices)
        return self._hours_into_window(t, d) < self.window_hours

    def offline_after(self, t: float, devices: np.ndarray) -> np.ndarray:
        t, d = _query(t, devices)
        if self.window_hours >= DAY:
            return np.full(d.shape, np.inf)
        into = self._hours_into_window(t, d)
        return np.where(into < self.window_hours, (self.window_hours - into) * HOUR, 0.0)

    def charging(self, t: float, devices: np.ndarray) -> np.ndarray:
        return self.available(t, devices)

    def ever_available(self, devices: np.ndarray) -> np.ndarray:
        return _always(devices)  # a charging window every day

    def _reserve(self, n_devices: int) -> None:
        self._draws.reserve(n_devices)


# Segments per cached window. Even, so that every window starts in the device's first state; 32 segments
# cover about a day at typical means, and 100,000 cached devices cost 26 MB.
_CHUNK = 32


class _MarkovSegments:
    """For each device asked about so far, the window of _CHUNK on/off segments around the last queried time.

    Device d's segment lengths are the successive exponential draws of its stream (seed, "markov", d), and
    switch times are their running sums, added one by one. Drawing more values, or summing further, never
    changes earlier ones, so the window around any t is rebuilt bit for bit by replaying the stream from its
    start: a query outside the cached window does exactly that, backwards or forwards in time. Replaying
    costs one stream plus a vectorised draw per device, and memory is one window per device, whatever the
    simulated horizon.
    """

    def __init__(self, seed: int, mean_on_s: float, mean_off_s: float) -> None:
        self._seed = seed
        self._p_on = mean_on_s / (mean_on_s + mean_off_s)
        self._cycle_s = mean_on_s + mean_off_s
        self._mean_on_s, self._mean_off_s = mean_on_s, mean_off_s
        self._pattern = np.empty(0)
        self._row = np.full(0, -1, dtype=np.int64)  # device index -> row of the tables below, -1 if none yet
        self._first_on = np.empty(0, dtype=bool)
        self._edges = np.empty((0, _CHUNK + 1))  # absolute switch times; [:, 0] is the window's start
        self._rows = 0

    def _lengths(self, first_on: bool, n: int) -> np.ndarray:
        """Mean length of each of the first n segments: on, off, on, ... or off, on, off, ..."""
        if n >= len(self._pattern):  # the off-first pattern is the on-first one shifted by one
            self._pattern = np.resize([self._mean_on_s, self._mean_off_s], 2 * n)
        return self._pattern[0 if first_on else 1 :][:n]

    def _draw(self, row: int, device: int, t: float) -> None:
        """Replay the device's stream up to the window holding t and cache that window in `row`."""
        rng = stream(self._seed, "markov", device)
        # Stationary start: on with probability p_on; by memorylessness the first segment's remaining length
        # has the same exponential law as a whole one.
        first_on = bool(rng.random() < self._p_on)
        # Enough segments to pass t on average and a window more; if still short, draw more in stream order.
        n = _CHUNK * (int(2.5 * t / self._cycle_s) // _CHUNK + 2)
        lengths = rng.standard_exponential(n) * self._lengths(first_on, n)
        switches = np.cumsum(lengths)
        while switches[-1] <= t:
            more = rng.standard_exponential(n) * self._lengths(first_on, n)  # n is even: same phase
            lengths = np.concatenate([lengths, more])
            switches = np.cumsum(lengths)  # summed again from 0, so every switch time is added the same way
            n *= 2
        k = int(switches.searchsorted(t, side="right")) // _CHUNK  # the window holding t
        self._first_on[row] = first_on
        self._edges[row, 0] = switches[k * _CHUNK - 1] if k else 0.0
        self._edges[row, 1:] = switches[k * _CHUNK : (k + 1) * _CHUNK]

    def _grow(self, devices: np.ndarray) -> None:
        if devices.size and devices.max() >= len(self._row):
            grown = np.full(max(int(devices.max()) + 1, 2 * len(self._row)), -1, dtype=np.int64)
            grown[: len(self._row)] = self._row
            self._row = grown
        new = np.unique(devices[self._row[devices] < 0])
        need = self._rows + len(new)
        if need > len(self._first_on):
            size = max(need, 2 * len(self._first_on))
            self._first_on = np.resize(self._first_on, size)
            edges = np.full((size, _CHUNK + 1), np.nan)  # nan: no window yet, so every query redraws
            edges[: self._rows] = self._edges[: self._rows]
            self._edges = edges
        self._row[new] = np.arange(self._rows, need)
        self._rows = need

    def at(self, t: float, devices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(on, seconds until the current segment ends) for each device at t."""
        self._grow(devices)
        rows = self._row[devices]
        edges = self._edges[rows]
        outside = ~((edges[:, 0] <= t) & (t < edges[:, -1]))
        for i in np.flatnonzero(outside).tolist():
            row = int(rows[i])
            if not self._edges[row, 0] <= t < self._edges[row, -1]:  # a repeated device is redrawn once
                self._draw(row, int(devices[i]), t)
            edges[i] = self._edges[row]
        # Segment j covers [edges[j], edges[j + 1]); t lies inside the window, so 0 <= j < _CHUNK.
        j = (edges[:, 1:] <= t).sum(axis=1)
        on = self._first_on[rows] ^ (j % 2 == 1)
        return on, edges[np.arange(len(rows)), j + 1] - t


@dataclass(frozen=True)
class MarkovOnOff:
    """Each device flips between on and off, staying an exponential time in each state (a two-state
    continuous-time Markov chain), independently of every other device.

    The chain starts stationary: on with probability mean_on_s / (mean_on_s + mean_off_s), the long-run
    fraction of time on. Segments are generated lazily per queried device (see _MarkovSegments), so asking
    about the few hundred selected devices per round costs little, and queries may go back in time.
    """

    plugged_while_available = False
    mean_on_s: float = param(help="mean time on, seconds > 0")
    mean_off_s: float = param(help="mean time off, seconds > 0")
    seed: int = param(0, "the scenario's seed (never set in a scenario)")
    _segments: _MarkovSegments = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("mean_on_s", "mean_off_s"):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            if not (ok and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number of seconds, got {value!r}")
        object.__setattr__(self, "_segments", _MarkovSegments(self.seed, self.mean_on_s, self.mean_off_s))

    @property
    def on_fraction(self) -> float:
        return self.mean_on_s / (self.mean_on_s + self.mean_off_s)

    def available(self, t: float, devices: np.ndarray) -> np.ndarray:
        t, d = _query(t, devices)
        return self._segments.at(t, d)[0]

    def offline_after(self, t: float, devices: np.ndarray) -> np.ndarray:
        t, d = _query(t, devices)
        on, remaining = self._segments.at(t, d)
        return np.where(on, remaining, 0.0)

    def charging(self, t: float, devices: np.ndarray) -> np.ndarray:
        _, d = _query(t, devices)
        return np.zeros(d.shape, dtype=bool)  # the chain says nothing about power

    def ever_available(self, devices: np.ndarray) -> np.ndarray:
        return _always(devices)


@dataclass(frozen=True, eq=False)
class TraceAvailability:
    """Replay of a FedScale-style client_behave_trace (REFERENCE.md section 7): a device is available while
    active[i] <= t mod finish_time <= inactive[i] for its trace client. In the source data "available" means
    charging, so charging is the same answer.

    Devices are dealt onto trace clients in a seeded order, stream (seed, "trace"): device d replays client
    perm[d mod C], so with more devices than clients the clients repeat, each used as evenly as possible.
    """

    plugged_while_available = True
    trace: BehaveTrace
    seed: int = 0
    _perm: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not len(self.trace):
            raise ValueError(f"{self.trace.source}: the trace has no clients")
        object.__setattr__(self, "_perm", stream(self.seed, "trace").permutation(len(self.trace)))

    def client_of(self, devices: np.ndarray) -> np.ndarray:
        """(n,) index of the trace client each device replays."""
        return self._perm[_indices(devices) % len(self.trace)]

    def available(self, t: float, devices: np.ndarray) -> np.ndarray:
        t, d = _query(t, devices)
        return self.trace.lookup(t, self.client_of(d))[0]

    def offline_after(self, t: float, devices: np.ndarray) -> np.ndarray:
        t, d = _query(t, devices)
        return self.trace.lookup(t, self.client_of(d))[1]

    def charging(self, t: float, devices: np.ndarray) -> np.ndarray:
        return self.available(t, devices)

    def ever_available(self, devices: np.ndarray) -> np.ndarray:
        """Devices whose trace client has at least one interval online."""
        return np.diff(self.trace.first)[self.client_of(devices)] > 0


@dataclass(frozen=True)
class TraceFile:
    """The config of a replayed trace: which file, and the seed that deals devices onto its clients."""

    path: str = param(help="behave trace converted to JSON or CSV (fleet/availability_traces.py)")
    seed: int = param(0, "the scenario's seed (never set in a scenario)")


def _replay(config: TraceFile) -> TraceAvailability:
    return TraceAvailability(load_behave_trace(config.path), seed=config.seed)


# ----- Building a model from a scenario's availability spec. The models hold no state beyond draws made from
# ----- their seed, so each is its own typed config; a trace is read from its file.

AVAILABILITY: Registry = Registry("availability kind")
AVAILABILITY.register("always_on", AlwaysOn)
AVAILABILITY.register("diurnal", Diurnal)
AVAILABILITY.register("markov", MarkovOnOff)
AVAILABILITY.register("trace", TraceFile, _replay)


def build_availability(spec: Mapping[str, Any], seed: int, n_devices: int) -> Availability:
    """A model from e.g. {"kind": "markov", "mean_on_s": 3600, "mean_off_s": 1800}. Kinds: always_on,
    diurnal (the Diurnal fields), markov (mean_on_s, mean_off_s), trace (path). The seed comes from the
    scenario, not the spec; per-device draws for the n_devices of the fleet are made here, up front."""
    spec = dict(spec)
    kind = spec.pop("kind", None)
    if kind not in AVAILABILITY:
        raise ValueError(f"availability kind {kind!r}: choose from {AVAILABILITY.names()}")
    if n_devices < 0:
        raise ValueError(f"n_devices must be >= 0, got {n_devices}")
    parameters = AVAILABILITY.parameters(kind)
    allowed = [name for name in parameters if name != "seed"]  # the seed is the scenario's
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ValueError(f"availability {kind}: unknown keys {unknown}; allowed: {allowed}")
    missing = [name for name in allowed if parameters[name] is REQUIRED and name not in spec]
    if missing:
        raise ValueError(f"availability {kind}: missing {', '.join(missing)}")
    if "seed" in parameters:
        spec["seed"] = seed
    model = AVAILABILITY.build(kind, **spec)
    if isinstance(model, Diurnal):
        model._reserve(n_devices)
    return model
