"""Faults of a cell site: when they strike, what they do to the radio, and which lines the site logs about them.

Scenario: four kinds of trouble show in a site's operations log. A radio unit fails (hardware: an ALARM line
and one sector degraded, or dark until a field crew repairs it); the transport link to the core drops
(backhaul: an S1-LINK-DOWN ALARM, throughput collapses and calls drop on every sector); an outside source jams
a sector (interference: SINR collapses, no alarm); an engineer pushes a bad handover parameter (misconfig: a CFG
line, then handover failures climb until the change is rolled back; no alarm). Benign CFG changes happen as
well, mostly in the night maintenance window, so a CFG line alone is no fault.

The faults of one site never overlap, and no benign change is made during a fault. Time is counted in
reporting periods (index k covers minutes [k p, (k+1) p) of the log) and in minutes since the log's start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import IntEnum

import numpy as np


class FaultKind(IntEnum):
    """Per-line label codes."""

    NORMAL = 0
    HARDWARE = 1
    BACKHAUL = 2
    INTERFERENCE = 3
    MISCONFIG = 4


# Share of faults and median duration in hours: a crew takes hours to reach a site, a link usually comes
# back by itself, a bad parameter lasts until someone notices the handover statistics.
_KINDS = (FaultKind.HARDWARE, FaultKind.BACKHAUL, FaultKind.INTERFERENCE, FaultKind.MISCONFIG)
_SHARE = (0.3, 0.2, 0.3, 0.2)
_MEDIAN_HOURS = (4.0, 1.0, 2.0, 8.0)
# Alarm code: (severity, sector off the air). The first three come from a radio unit (hardware faults).
_ALARMS = {
    "RU-VSWR-HIGH": ("major", False),
    "RU-TEMP-HIGH": ("minor", False),
    "RU-CPRI-LOS": ("critical", True),
    "S1-LINK-DOWN": ("critical", False),
}
_HARDWARE_CODES = ("RU-VSWR-HIGH", "RU-TEMP-HIGH", "RU-CPRI-LOS")
# Handover parameters (dB, dB, ms) and antenna tilt (degrees): the values a tuning engineer moves between,
# and the values that break handovers (a huge offset or trigger time makes handovers far too late).
_TUNING = {
    "a3Offset": (1, 2, 3, 4, 5),
    "hysteresisA3": (1, 2, 3, 4),
    "timeToTriggerA3": (160, 256, 320, 480, 640),
    "antennaTilt": tuple(range(13)),
}
_DEFAULTS = {"a3Offset": 3, "hysteresisA3": 2, "timeToTriggerA3": 320}
_BAD = {"a3Offset": (10, 12, 15), "hysteresisA3": (8, 10), "timeToTriggerA3": (2560, 5120)}
_NIGHT_H = 5  # the maintenance window runs from midnight to 05:00


@dataclass(frozen=True)
class FaultEvent:
    """One labelled fault. A KPI line belongs to it when the line's period overlaps [start, end] and its sector
    is one of `sectors`; the ALARM and CFG lines it causes are stamped within [start, end]."""

    site: str
    kind: FaultKind
    start: datetime  # the minute trouble begins (the raised ALARM or the CFG change)
    end: datetime  # the minute it is cleared or rolled back; the log's end when still open
    sectors: tuple[int, ...]  # 1-based
    detail: str  # alarm code, or parameter=bad value


@dataclass(frozen=True)
class Fault:
    """A fault as the generator schedules it: periods [first, stop) are affected."""

    kind: FaultKind
    first: int
    stop: int
    start_min: int
    end_min: int
    still_open: bool  # runs past the end of the log: no clear or rollback line
    sectors: tuple[int, ...]
    detail: str
    severity: float  # 0..1, scales the effect within the kind's range


@dataclass
class Impairments:
    """What faults do to one site's radio, per (period, sector); multiplicative factors are 1 and additive
    losses 0 where nothing is wrong."""

    sinr_loss_db: np.ndarray
    rsrp_loss_db: np.ndarray
    load: np.ndarray  # factor on active users (users move away from a failing sector)
    carried: np.ndarray  # share of the offered traffic the backhaul still carries
    drop_factor: np.ndarray
    drop_add_pct: np.ndarray
    hof_factor: np.ndarray
    dark: np.ndarray  # bool: sector off the air
    label: np.ndarray  # int8 FaultKind of each KPI line


def stamp(origin: datetime, minutes: int) -> str:
    return f"{origin + timedelta(minutes=int(minutes)):%Y-%m-%dT%H:%M}Z"


def schedule(rng: np.random.Generator, periods: int, period_min: int, sectors: int, rate_per_day: float) -> list[Fault]:
    """Non-overlapping faults: gaps of fault-free time are exponential with mean 1 / rate days."""
    per_day = 1440 // period_min
    faults: list[Fault] = []
    t = rng.exponential(per_day / rate_per_day) if rate_per_day > 0 else math.inf
    while t < periods:
        i = rng.choice(len(_KINDS), p=_SHARE)
        kind = _KINDS[i]
        first = int(t)
        if kind is FaultKind.MISCONFIG:  # pushed in the next maintenance window
            first = (first // per_day + 1) * per_day + int(rng.integers(0, max(1, _NIGHT_H * 60 // period_min)))
        hours = _MEDIAN_HOURS[i] * rng.lognormal(0.0, 0.6)
        length = max(1, math.ceil(hours * 60 / period_min))
        if first >= periods:
            break
        stop = min(first + length, periods)
        start_min = first * period_min + int(rng.integers(0, max(1, period_min // 2)))
        end_min = (stop - 1) * period_min + int(rng.integers(period_min // 2, period_min))
        still_open = first + length > periods
        detail, affected = _detail(rng, kind), _sectors(rng, kind, sectors)
        faults.append(
            Fault(kind, first, stop, start_min, periods * period_min if still_open else end_min, still_open,
                  affected, detail, float(rng.random()))
        )
        t = stop + rng.exponential(per_day / rate_per_day)
    return faults


def _detail(rng: np.random.Generator, kind: FaultKind) -> str:
    if kind is FaultKind.HARDWARE:
        return _HARDWARE_CODES[rng.integers(len(_HARDWARE_CODES))]
    if kind is FaultKind.BACKHAUL:
        return "S1-LINK-DOWN"
    if kind is FaultKind.MISCONFIG:
        param = list(_BAD)[rng.integers(len(_BAD))]
        return f"{param}={_BAD[param][rng.integers(len(_BAD[param]))]}"
    return ""


def _sectors(rng: np.random.Generator, kind: FaultKind, sectors: int) -> tuple[int, ...]:
    if kind is FaultKind.BACKHAUL:
        return tuple(range(1, sectors + 1))
    # A jammer is sometimes seen by two neighbouring sectors.
    n = 2 if kind is FaultKind.INTERFERENCE and sectors > 1 and rng.random() < 0.3 else 1
    return tuple(sorted(int(s) + 1 for s in rng.choice(sectors, n, replace=False)))


def impairments(faults: list[Fault], periods: int, sectors: int) -> Impairments:
    shape = (periods, sectors)
    imp = Impairments(
        sinr_loss_db=np.zeros(shape), rsrp_loss_db=np.zeros(shape), load=np.ones(shape), carried=np.ones(shape),
        drop_factor=np.ones(shape), drop_add_pct=np.zeros(shape), hof_factor=np.ones(shape),
        dark=np.zeros(shape, bool), label=np.zeros(shape, np.int8),
    )
    for f in faults:
        rows = slice(f.first, f.stop)
        cols = [s - 1 for s in f.sectors]
        m = f.severity
        if f.kind is FaultKind.HARDWARE and _ALARMS[f.detail][1]:
            imp.dark[rows, cols] = True
            others = [c for c in range(sectors) if c not in cols]
            imp.load[rows, others] *= 1.25  # the neighbouring sectors pick up part of its users
        elif f.kind is FaultKind.HARDWARE:  # power backoff: weaker signal, edge users reselect elsewhere
            imp.rsrp_loss_db[rows, cols] += 2 + 6 * m
            imp.sinr_loss_db[rows, cols] += 1 + 5 * m
            imp.load[rows, cols] *= 0.75
        elif f.kind is FaultKind.BACKHAUL:
            imp.carried[rows, cols] = 0.01 + 0.09 * (1 - m)
            imp.drop_add_pct[rows, cols] += 4 + 11 * m
        elif f.kind is FaultKind.INTERFERENCE:
            imp.sinr_loss_db[rows, cols] += 3 + 12 * m
        else:
            imp.hof_factor[rows, cols] *= 2 + 6 * m
            imp.drop_factor[rows, cols] *= 1.2 + 1.3 * m
        imp.label[rows, cols] = f.kind
    return imp


def fault_events(site: str, origin: datetime, faults: list[Fault]) -> list[FaultEvent]:
    return [
        FaultEvent(site, f.kind, origin + timedelta(minutes=f.start_min), origin + timedelta(minutes=f.end_min),
                   f.sectors, f.detail)
        for f in faults
    ]


def event_lines(
    rng: np.random.Generator, site: str, origin: datetime, faults: list[Fault], sectors: int, days: int,
    changes_per_day: float,
) -> list[tuple[int, str, FaultKind]]:
    """(minute, line, label) of every ALARM and CFG line of one site, in time order. CFG lines carry the
    parameter's value before and after, so the site's configuration is tracked as changes accumulate."""
    config = {(s, p): v for s in range(1, sectors + 1) for p, v in _DEFAULTS.items()}
    config.update({(s, "antennaTilt"): int(rng.integers(2, 9)) for s in range(1, sectors + 1)})
    actions: list[tuple[int, Fault | None, bool]] = []  # (minute, fault or None for tuning, trouble begins)
    for f in faults:
        if f.kind is not FaultKind.INTERFERENCE:  # nothing on site notices a jammer
            actions.append((f.start_min, f, True))
            if not f.still_open:
                actions.append((f.end_min, f, False))
    busy = [(f.start_min, f.end_min) for f in faults]
    changes = _change_minutes(rng, days, changes_per_day)
    actions += [(m, None, True) for m in changes if not any(a <= m <= b for a, b in busy)]  # none during incidents
    out: list[tuple[int, str, FaultKind]] = []

    def change(minute: int, sector: int, param: str, new: int, kind: FaultKind) -> int:
        old, config[sector, param] = config[sector, param], new
        line = f"{stamp(origin, minute)} CFG site={site} sec={sector} param={param} old={old} new={new}"
        out.append((minute, line, kind))
        return old

    undo = {}
    for minute, f, begins in sorted(actions, key=lambda a: a[0]):
        if f is None:
            sector, param = int(rng.integers(1, sectors + 1)), list(_TUNING)[rng.integers(len(_TUNING))]
            change(minute, sector, param, _step(rng, _TUNING[param], config[sector, param]), FaultKind.NORMAL)
        elif f.kind is FaultKind.MISCONFIG:
            param, bad = f.detail.split("=")
            if begins:
                undo[f] = change(minute, f.sectors[0], param, int(bad), f.kind)
            else:
                change(minute, f.sectors[0], param, undo[f], f.kind)
        else:
            where = f" sec={f.sectors[0]}" if f.kind is FaultKind.HARDWARE else ""
            state = "raised" if begins else "cleared"
            out.append((minute, f"{stamp(origin, minute)} ALARM site={site}{where} code={f.detail} "
                                f"sev={_ALARMS[f.detail][0]} state={state}", f.kind))
    return out


def _change_minutes(rng: np.random.Generator, days: int, per_day: float) -> list[int]:
    n = int(rng.poisson(per_day * days))
    day = rng.integers(0, days, n)
    night = rng.random(n) < 0.8
    minute = np.where(night, rng.integers(0, _NIGHT_H * 60, n), rng.integers(_NIGHT_H * 60, 1440, n))
    return sorted((day * 1440 + minute).tolist())


def _step(rng: np.random.Generator, values: tuple[int, ...], current: int) -> int:
    """A neighbouring allowed value: tuning moves a parameter one notch at a time."""
    i = values.index(current)
    j = i + (1 if i == 0 else -1 if i == len(values) - 1 else int(rng.choice((-1, 1))))
    return values[j]
