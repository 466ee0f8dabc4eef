"""Recorded availability: a FedScale-style client_behave_trace, read from JSON or CSV and flattened for
vectorised lookup. fleet/availability.py's TraceAvailability replays it onto the fleet's devices.

FedScale ships pickles; they are converted once, outside fedfleet, to JSON or CSV, because unpickling a
downloaded file runs whatever code it carries. Times are seconds.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True, eq=False)
class BehaveTrace:
    """Availability intervals of recorded clients, validated and flattened for vectorised lookup.

    Client c owns intervals first[c] .. first[c + 1] - 1 of starts/ends, sorted, disjoint, and merged where
    one ends as the next begins; all lie within [0, finish_time_s[c]], and the trace repeats with that period.
    """

    source: str  # the file it came from, for messages
    client_ids: tuple[str, ...]
    finish_time_s: np.ndarray  # (C,) period of each client's trace
    first: np.ndarray  # (C + 1,) offsets into starts and ends
    starts: np.ndarray  # (M,) s
    ends: np.ndarray  # (M,) s
    _keys: np.ndarray = field(init=False, repr=False)
    _owner: np.ndarray = field(init=False, repr=False)
    _wrap_s: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        counts = np.diff(self.first)
        owner = np.repeat(np.arange(len(self.client_ids)), counts)
        # Complex numbers sort by real part, then imaginary part, so (client + i * start) lets one
        # searchsorted over all clients find, for each device, the last interval of its own client that
        # starts before its phase, exactly; adding client * period to times would round them.
        object.__setattr__(self, "_keys", owner + 1j * self.starts)
        object.__setattr__(self, "_owner", owner)
        # A client whose last interval reaches the end of the period and whose first starts at 0 stays
        # available across the wrap: a session in the last interval continues into the first one.
        wrap = np.zeros(len(self.client_ids))
        has = counts > 0
        last = self.first[1:] - 1
        lo, hi = self.first[:-1][has], last[has]
        wraps = (self.starts[lo] <= 0.0) & (self.ends[hi] >= self.finish_time_s[has])
        wrap[np.flatnonzero(has)[wraps]] = np.where(lo[wraps] == hi[wraps], np.inf, self.ends[lo[wraps]])
        object.__setattr__(self, "_wrap_s", wrap)

    def __len__(self) -> int:
        return len(self.client_ids)

    def lookup(self, t: float, clients: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(available, seconds until unavailable; 0 where unavailable) for trace clients at t."""
        if not self.ends.size:  # no client is ever available
            return np.zeros(len(clients), dtype=bool), np.zeros(len(clients))
        phase = np.mod(t, self.finish_time_s[clients])
        j = np.searchsorted(self._keys, clients + 1j * phase, side="right") - 1
        jj = np.maximum(j, 0)
        inside = (j >= 0) & (self._owner[jj] == clients) & (phase <= self.ends[jj])
        remaining = np.where(inside, self.ends[jj] - phase, 0.0)
        last = inside & (jj == self.first[clients + 1] - 1)
        remaining[last] += self._wrap_s[clients[last]]
        return inside, remaining



CSV_COLUMNS = ("client_id", "active_s", "inactive_s", "finish_time_s")
_JSON_KEYS = {"active", "inactive", "finish_time", "duration", "model"}  # duration, model: kept by FedScale


@dataclass
class _RawClient:
    client_id: str
    where: str  # record or line that introduced it, for messages
    finish_time_s: float
    intervals: list[tuple[float, float, str]]  # (active, inactive, where)


def _number(path: Path, where: str, name: str, value: Any) -> float:
    # bool is an int in Python, and JSON's true would otherwise read as 1 s.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{path}: {where}: {name} must be a number of seconds, got {value!r}")
    try:
        seconds = float(value)
    except OverflowError:  # an integer beyond float's range
        raise ValueError(f"{path}: {where}: {name} must be finite and >= 0, got an integer of {len(str(value))} "
                         "digits") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{path}: {where}: {name} must be finite and >= 0, got {value!r}")
    return seconds


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r}")
        seen[key] = value
    return seen


def _json_clients(path: Path, text: str) -> list[_RawClient]:
    try:
        data = json.loads(text, object_pairs_hook=_no_duplicate_keys)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: line {e.lineno} column {e.colno}: not valid JSON: {e.msg}") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    except RecursionError:
        raise ValueError(f"{path}: JSON nested too deeply") from None
    if isinstance(data, dict):
        records = [(str(key), f"client {key!r}", record, False) for key, record in data.items()]
    elif isinstance(data, list):
        records = [
            (str(r.get("client_id", i)) if isinstance(r, dict) else str(i), f"record {i}", r, True)
            for i, r in enumerate(data)
        ]
    else:
        raise ValueError(f"{path}: expected a JSON object keyed by client id or a list of client records")
    clients = []
    for client_id, where, record, listed in records:
        if not isinstance(record, dict):
            raise ValueError(f"{path}: {where}: expected an object with active, inactive, finish_time")
        allowed = _JSON_KEYS | ({"client_id"} if listed else set())
        unknown = sorted(set(record) - allowed)
        if unknown:
            raise ValueError(f"{path}: {where}: unknown keys {unknown}; allowed: {sorted(allowed)}")
        missing = [k for k in ("active", "inactive", "finish_time") if k not in record]
        if missing:
            raise ValueError(f"{path}: {where}: missing {', '.join(missing)}")
        active, inactive = record["active"], record["inactive"]
        if not isinstance(active, list) or not isinstance(inactive, list):
            raise ValueError(f"{path}: {where}: active and inactive must be lists of seconds")
        if len(active) != len(inactive):
            raise ValueError(
                f"{path}: {where}: {len(active)} active times but {len(inactive)} inactive times"
            )
        if "duration" in record:
            _number(path, where, "duration", record["duration"])
        intervals = [
            (
                _number(path, where, f"active[{i}]", a),
                _number(path, where, f"inactive[{i}]", b),
                f"{where} interval {i}",
            )
            for i, (a, b) in enumerate(zip(active, inactive))
        ]
        finish = _number(path, where, "finish_time", record["finish_time"])
        clients.append(_RawClient(client_id, where, finish, intervals))
    return clients


def _csv_clients(path: Path, text: str) -> list[_RawClient]:
    try:
        return _csv_rows(path, text)
    except csv.Error as e:  # a NUL byte, a field over the csv module's size limit
        raise ValueError(f"{path}: not a readable CSV file: {e}") from None


def _csv_rows(path: Path, text: str) -> list[_RawClient]:
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    names = [h.strip() for h in header] if header else []
    if sorted(names) != sorted(CSV_COLUMNS):
        raise ValueError(f"{path}: line 1: expected the header {','.join(CSV_COLUMNS)}, got {','.join(names)!r}")
    col = {name: names.index(name) for name in CSV_COLUMNS}
    clients: dict[str, _RawClient] = {}
    for row in reader:
        where = f"line {reader.line_num}"
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(names):
            raise ValueError(f"{path}: {where}: expected {len(names)} fields, got {len(row)}")
        values = {}
        for name in CSV_COLUMNS[1:]:
            cell = row[col[name]].strip()
            try:
                number = float(cell)
            except ValueError:
                raise ValueError(f"{path}: {where}: {name} {cell!r} is not a number") from None
            values[name] = _number(path, where, name, number)
        client_id = row[col["client_id"]].strip()
        if not client_id:
            raise ValueError(f"{path}: {where}: empty client_id")
        client = clients.setdefault(client_id, _RawClient(client_id, where, values["finish_time_s"], []))
        if values["finish_time_s"] != client.finish_time_s:
            raise ValueError(
                f"{path}: {where}: finish_time_s {values['finish_time_s']:g} for client {client_id!r} differs "
                f"from {client.finish_time_s:g} given on {client.where}"
            )
        client.intervals.append((values["active_s"], values["inactive_s"], where))
    return list(clients.values())


def _build_trace(path: Path, clients: list[_RawClient]) -> BehaveTrace:
    if not clients:
        raise ValueError(f"{path}: no clients")
    ids = [c.client_id for c in clients]
    seen: set[str] = set()
    for client in clients:
        if client.client_id in seen:
            raise ValueError(f"{path}: {client.where}: client id {client.client_id!r} appears twice")
        seen.add(client.client_id)
    first, starts, ends = [0], [], []
    for client in clients:
        if client.finish_time_s <= 0:
            raise ValueError(f"{path}: {client.where}: finish_time must be > 0")
        merged: list[list[float]] = []
        previous = None
        for a, b, where in sorted(client.intervals):
            if a > b:
                raise ValueError(f"{path}: {where}: active {a:g} is after inactive {b:g}")
            if b > client.finish_time_s:
                # Never reached by t mod finish_time; most likely times in a different unit (ms).
                raise ValueError(
                    f"{path}: {where}: inactive {b:g} is past finish_time {client.finish_time_s:g}"
                )
            if merged and a < merged[-1][1]:
                raise ValueError(
                    f"{path}: {where}: interval [{a:g}, {b:g}] overlaps [{merged[-1][0]:g}, {merged[-1][1]:g}] "
                    f"from {previous}"
                )
            if merged and a == merged[-1][1]:
                merged[-1][1] = b  # back-to-back intervals: the device never leaves in between
            else:
                merged.append([a, b])
            previous = where
        starts += [m[0] for m in merged]
        ends += [m[1] for m in merged]
        first.append(len(starts))
    return BehaveTrace(
        source=str(path),
        client_ids=tuple(ids),
        finish_time_s=np.array([c.finish_time_s for c in clients]),
        first=np.array(first, dtype=np.int64),
        starts=np.array(starts, dtype=float),
        ends=np.array(ends, dtype=float),
    )


def load_behave_trace(path: str | Path) -> BehaveTrace:
    """Read a behave trace converted to JSON (an object keyed by client id, or a list of records, each with
    active, inactive, finish_time and optionally duration, model) or CSV (header client_id, active_s,
    inactive_s, finish_time_s; one row per active interval). Times are seconds. Raises ValueError naming the
    file, the record or line, and the reason."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".json", ".csv"):
        raise ValueError(f"{path}: expected a .json or .csv behave trace, got {suffix or 'no extension'!r}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read: {e}") from None
    clients = _json_clients(path, text) if suffix == ".json" else _csv_clients(path, text)
    return _build_trace(path, clients)
