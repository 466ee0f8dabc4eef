"""Cell-site operations logs: what a site's edge (MEC) server sees of its own radio, period by period.

Scenario: telecom self-healing. Each cell site fine-tunes a small language model, federated across sites, on its
own operations log; the site's model then scores new log windows, and a window it finds surprising (high loss)
is a candidate fault. This module writes those logs, with the truth about every line.

A site logs one KPI line per sector per reporting period (15 minutes by default), stamped with the end of the
period it reports, plus ALARM and CFG lines as they happen (docs/cellsite_logs.md shows the format). Sites are
not alike: each has a type (business district, residential, highway, rural, stadium) with its own daily and
weekly traffic shape and busy-hour load, its own signal level, SINR and interference, and the weather of its
region (rain episodes lasting hours lower SINR). All KPIs follow from load and SINR by one model: PRB
utilisation tracks offered traffic, user throughput falls as SINR falls and as the cell saturates (processor
sharing: C (1 - u)), drops and handover failures rise at low SINR and high load. Faults
(fleet.cellsite_faults) act on the same model, and every line carries a label.

Every draw comes from a fleet.rng stream keyed by (seed, purpose, site) or (seed, purpose, region): a site's
log depends on the seed, the config and its own index, not on how many sites are generated, and its normal
KPIs do not depend on the faults injected (the KPI noise is drawn before faults are applied).

`python -m fleet.cellsite_files` writes the logs to files (fleet/cellsite_files.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from functools import cache

import numpy as np

from fleet.cellsite_faults import (
    FaultEvent,
    FaultKind,
    Impairments,
    event_lines,
    fault_events,
    impairments,
    schedule,
    stamp,
)
from fleet.data import ClientText
from fleet.rng import stream

CHUNK_LINES = 48  # lines per "speech": 16 periods of a 3-sector site, 4 hours at 15 minutes
RAIN_PER_DAY = 0.4  # rain episodes per region per day


class SiteType(StrEnum):
    BUSINESS = "business"
    RESIDENTIAL = "residential"
    HIGHWAY = "highway"
    RURAL = "rural"
    STADIUM = "stadium"


@dataclass(frozen=True)
class _Shape:
    """What sites of one type have in common; each site varies around it."""

    share: float  # of all sites
    weekday: tuple[tuple[float, float, float], ...]  # traffic bumps: (local hour, width h, height)
    weekend: tuple[tuple[float, float, float], ...]
    floor: float  # night traffic, relative to the bumps
    busy_ues: float  # active users per sector at the weekday busy hour
    rsrp_dbm: float
    sinr_db: float  # with no neighbour load and no rain
    interference_db: float  # SINR lost when the whole area is at busy-hour load
    bandwidth_mhz: float  # 100 MHz mid-band NR in town, narrower LTE carriers outside
    hof_pct: float  # handover failures; fast highway users hand over most


_SHAPES = {
    SiteType.BUSINESS: _Shape(0.2, ((10.0, 1.8, 1.0), (15.0, 2.2, 0.95), (12.5, 0.8, 0.25)), ((14.0, 4.0, 0.3),),
                              0.06, 220, -88, 10, 4.0, 100, 1.3),
    SiteType.RESIDENTIAL: _Shape(0.35, ((7.5, 1.0, 0.35), (13.0, 3.0, 0.35), (20.5, 2.0, 1.0)),
                                 ((11.0, 2.5, 0.6), (20.5, 2.5, 1.05)), 0.08, 160, -95, 12, 3.0, 100, 0.9),
    SiteType.HIGHWAY: _Shape(0.15, ((8.0, 1.2, 1.0), (17.5, 1.5, 1.0), (12.5, 4.0, 0.35)),
                             ((11.5, 3.0, 0.6), (17.0, 3.0, 0.7)), 0.04, 90, -100, 13, 1.5, 40, 2.2),
    SiteType.RURAL: _Shape(0.2, ((12.0, 4.0, 0.6), (20.0, 2.0, 1.0)), ((12.0, 4.0, 0.7), (20.0, 2.0, 1.0)),
                           0.1, 35, -106, 14, 0.8, 20, 0.7),
    SiteType.STADIUM: _Shape(0.1, ((12.5, 4.0, 0.6), (18.0, 2.5, 0.5)), ((14.0, 4.0, 0.7),),
                             0.05, 60, -90, 9, 4.5, 100, 1.6),
}


@dataclass(frozen=True)
class CellSiteConfig:
    sites: int = 100
    days: int = 7
    period_min: int = 15  # KPI reporting period (minutes)
    sectors: int = 3
    fault_rate_per_day: float = 0.15  # faults per site per day of fault-free time
    changes_per_day: float = 0.3  # benign CFG changes per site per day
    regions: int = 20  # weather regions: the sites of a region share their rain
    start: str = "2026-03-02"  # ISO date of the first day (a Monday); the log starts at its midnight, UTC

    def __post_init__(self):
        for name in ("sites", "days", "period_min", "sectors", "regions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if 1440 % self.period_min:
            raise ValueError(f"period_min must divide a day (1440 minutes), got {self.period_min}")
        if self.sectors > 9:
            raise ValueError(f"sectors must be at most 9 (one digit in the log), got {self.sectors}")
        for name in ("fault_rate_per_day", "changes_per_day"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        try:
            date.fromisoformat(self.start)
        except (TypeError, ValueError):
            raise ValueError(f"start must be an ISO date such as 2026-03-02, got {self.start!r}") from None

    @property
    def periods_per_day(self) -> int:
        return 1440 // self.period_min

    @property
    def periods(self) -> int:
        return self.days * self.periods_per_day

    @property
    def origin(self) -> datetime:
        return datetime.combine(date.fromisoformat(self.start), datetime.min.time())


@dataclass(frozen=True)
class SiteLog:
    site_id: str
    site_type: SiteType
    region: int
    lines: list[str]  # in time order
    labels: np.ndarray  # (len(lines),) int8 FaultKind of each line
    period: np.ndarray  # (len(lines),) int32 reporting period each line falls in (non-decreasing)
    faults: tuple[FaultEvent, ...]
    rain: np.ndarray  # (periods,) rain intensity 0..1 over the site: a cause the text never names
    periods_per_day: int

    @property
    def days(self) -> int:
        return (int(self.period[-1]) + 1) // self.periods_per_day


@dataclass(frozen=True)
class CellSiteLogs:
    config: CellSiteConfig
    seed: int
    sites: tuple[SiteLog, ...]

    @property
    def faults(self) -> list[FaultEvent]:
        return [f for site in self.sites for f in site.faults]


@dataclass(frozen=True)
class _Site:
    """One site's own draw around its type."""

    kind: SiteType
    region: int
    busy_ues: np.ndarray  # (sectors,)
    rsrp_dbm: np.ndarray  # (sectors,)
    sinr_db: np.ndarray  # (sectors,)
    interference_db: float
    rain_db: float  # SINR lost in the heaviest rain
    demand_mbps: float  # offered DL traffic per active user
    drop_pct: float
    hof_pct: float
    shift_h: float  # the site's day runs a little early or late


def generate(config: CellSiteConfig, seed: int) -> CellSiteLogs:
    origin = config.origin
    stamps = [stamp(origin, (k + 1) * config.period_min) for k in range(config.periods)]
    prefixes = [f"{ts} site=" for ts in stamps for _ in range(config.sectors)]
    sectors = [f" sec={s}" for _ in stamps for s in range(1, config.sectors + 1)]
    rain = {r: _rain(stream(seed, "cellsite-rain", r), config) for r in range(config.regions)}
    width = max(4, len(str(config.sites - 1)))
    sites = []
    for i in range(config.sites):
        site_id = f"S{i:0{width}d}"
        site_rng, fault_rng = stream(seed, "cellsite", i), stream(seed, "cellsite-faults", i)
        site = _draw_site(site_rng, config)
        load = _traffic(site, config, site_rng)
        faults = schedule(fault_rng, config.periods, config.period_min, config.sectors, config.fault_rate_per_day)
        imp = impairments(faults, config.periods, config.sectors)
        kpi = _kpis(site, load, rain[site.region], imp, config.period_min, stream(seed, "cellsite-kpi", i))
        kpi_lines = _format(site_id, prefixes, sectors, kpi, imp.dark)
        extra = event_lines(fault_rng, site_id, origin, faults, config.sectors, config.days, config.changes_per_day)
        lines, labels, period = _merge(kpi_lines, imp.label.ravel(), extra, config)
        sites.append(SiteLog(site_id, site.kind, site.region, lines, labels, period,
                             tuple(fault_events(site_id, origin, faults)), rain[site.region], config.periods_per_day))
    return CellSiteLogs(config, seed, tuple(sites))


def _draw_site(rng: np.random.Generator, config: CellSiteConfig) -> _Site:
    kinds = list(_SHAPES)
    kind = kinds[rng.choice(len(kinds), p=[s.share for s in _SHAPES.values()])]
    shape, n = _SHAPES[kind], config.sectors
    return _Site(
        kind=kind,
        region=int(rng.integers(config.regions)),
        busy_ues=shape.busy_ues * rng.lognormal(0.0, 0.3) * rng.uniform(0.6, 1.3, n),
        rsrp_dbm=shape.rsrp_dbm + rng.normal(0, 3) + rng.normal(0, 2, n),
        sinr_db=shape.sinr_db + rng.normal(0, 2) + rng.normal(0, 1.5, n),
        interference_db=shape.interference_db * rng.uniform(0.6, 1.4),
        rain_db=rng.uniform(2.0, 5.0),
        demand_mbps=rng.uniform(0.5, 1.0) * shape.bandwidth_mhz / 100 + 0.3,
        drop_pct=rng.uniform(0.1, 0.35),
        hof_pct=shape.hof_pct * rng.uniform(0.7, 1.3),
        shift_h=rng.normal(0.0, 0.5),
    )


def _traffic(site: _Site, config: CellSiteConfig, rng: np.random.Generator) -> np.ndarray:
    """(periods,) load relative to the weekday busy hour, at the middle of each period."""
    shape = _SHAPES[site.kind]
    hours = (np.arange(config.periods) + 0.5) * config.period_min / 60  # since the start
    day = (hours // 24).astype(int)
    weekend = (config.origin.weekday() + day) % 7 >= 5
    clock = hours % 24 - site.shift_h
    peak = _curve(shape.weekday, shape.floor, np.linspace(0, 24, 97)).max()
    load = np.where(weekend, _curve(shape.weekend, shape.floor, clock), _curve(shape.weekday, shape.floor, clock))
    load /= peak
    if site.kind is SiteType.STADIUM:  # match days: the crowd arrives before kick-off and leaves after
        match = rng.random(config.days) < np.where((config.origin.weekday() + np.arange(config.days)) % 7 >= 5,
                                                   0.5, 0.15)
        for d in np.flatnonzero(match):
            middle = 24 * d + rng.uniform(18.5, 21.0)
            load *= 1 + rng.uniform(3, 6) * np.exp(-0.5 * ((hours - middle) / 1.2) ** 2)
    return load


def _curve(bumps, floor: float, clock: np.ndarray) -> np.ndarray:
    out = np.full(clock.shape, floor)
    for hour, width, height in bumps:
        apart = (clock - hour + 12) % 24 - 12  # around the clock: 23:00 is an hour from midnight
        out += height * np.exp(-0.5 * (apart / width) ** 2)
    return out


def _rain(rng: np.random.Generator, config: CellSiteConfig) -> np.ndarray:
    """(periods,) rain intensity 0..1 of one region: episodes of a few hours that swell and fade."""
    hours = (np.arange(config.periods) + 0.5) * config.period_min / 60
    out = np.zeros(config.periods)
    for _ in range(rng.poisson(RAIN_PER_DAY * config.days)):
        start, length = rng.uniform(-6, 24 * config.days), float(np.clip(rng.lognormal(np.log(3.0), 0.5), 0.5, 12))
        x = (hours - start) / length
        out += rng.uniform(0.3, 1.0) * np.where((x > 0) & (x < 1), np.sin(np.pi * np.clip(x, 0, 1)), 0.0)
    return np.minimum(out, 1.0)


def _efficiency(sinr_db: np.ndarray) -> np.ndarray:
    """Bits/s/Hz: Shannon with a 0.75 implementation loss, capped at the top modulation and coding."""
    return np.clip(0.75 * np.log2(1 + 10 ** (sinr_db / 10)), 0.05, 5.5)


def _saturate(rho: np.ndarray) -> np.ndarray:
    """Share of PRBs busy at offered load rho (1 = the cell's capacity): linear when light, below 1 when full."""
    return rho / (1 + rho**8) ** 0.125


def _kpis(site: _Site, load: np.ndarray, rain: np.ndarray, imp: Impairments, period_min: int,
          rng: np.random.Generator) -> dict:
    """KPI arrays (periods, sectors) in the log's units."""
    periods, n = imp.label.shape
    z = rng.standard_normal((8, periods, n))  # white noise, one slice per KPI
    slow = _slow_noise(rng, periods, n, tau=90 / period_min)  # traffic and SINR wander over hours
    area = np.minimum(load, 1.5)[:, None]  # neighbour cells are as busy as this site
    wet = site.rain_db * rain[:, None]
    sinr = site.sinr_db + slow[1] + 0.5 * z[0] - site.interference_db * area - wet - imp.sinr_loss_db
    rsrp = site.rsrp_dbm + 0.6 * z[1] - 0.3 * wet - 0.8 * area - imp.rsrp_loss_db
    mean_ues = site.busy_ues * load[:, None] * np.exp(0.12 * slow[0]) * imp.load
    ues = np.maximum(0, np.rint(mean_ues + np.sqrt(mean_ues) * z[2])).astype(np.int64)
    ues[imp.dark] = 0
    bandwidth = _SHAPES[site.kind].bandwidth_mhz
    capacity = bandwidth * _efficiency(sinr)  # Mbps with every PRB
    # Users share the cell (processor sharing); a failing backhaul starves them, and the scheduler then
    # uses only the PRBs the carried traffic needs.
    util = _saturate(ues * site.demand_mbps / capacity)
    prb = np.clip(100 * _saturate(ues * site.demand_mbps * imp.carried / capacity) + 1.0 + 0.8 * z[3], 0.1, 99.9)
    thp_dl = capacity * np.clip(1 - util, 0.03, 1) * imp.carried * np.exp(0.06 * z[4])
    # Uplink: about a third of the slots (TDD) and 3 dB less SINR than the downlink.
    thp_ul = 0.3 * bandwidth * _efficiency(sinr - 3) * np.clip(1 - 0.8 * util, 0.05, 1) * imp.carried
    thp_ul *= np.exp(0.08 * z[5])
    counting = 0.1 + 0.4 / np.sqrt(1 + ues)  # a ratio over few sessions is noisy
    weak = np.maximum(0, 8 - sinr)
    drop = site.drop_pct * np.exp(0.18 * weak) * (1 + 4 * np.maximum(0, util - 0.85)) * imp.drop_factor
    drop = (drop + imp.drop_add_pct) * np.exp(counting * z[6])
    hof = site.hof_pct * np.exp(0.08 * weak) * imp.hof_factor * np.exp(counting * z[7])
    idle = ues == 0  # no sessions: the ratio counters read zero
    for kpi in (thp_dl, thp_ul, drop, hof):
        kpi[idle] = 0.0
    prb[imp.dark] = 0.0
    return {"ues": ues, "prb_dl": prb, "rsrp": rsrp, "sinr": sinr, "thp_dl": thp_dl, "thp_ul": thp_ul,
            "drop": np.minimum(drop, 100), "hof": np.minimum(hof, 100)}


def _slow_noise(rng: np.random.Generator, periods: int, n: int, tau: float) -> np.ndarray:
    """(2, periods, n) unit-variance noise correlated over about tau periods (an exponential moving sum)."""
    kernel = np.exp(-np.arange(math.ceil(4 * tau) + 1) / tau)
    kernel /= np.sqrt((kernel**2).sum())
    white = rng.standard_normal((2, n, periods + len(kernel) - 1))
    return np.stack([[np.convolve(w, kernel, "valid") for w in pair] for pair in white]).transpose(0, 2, 1)


# Value range of each precision: one decimal for levels, rates and throughputs, two for drop percentages.
_RANGE = {1: (-200, 3000), 2: (0, 100)}


@cache
def _decimal_strings(places: int) -> np.ndarray:
    """Every value of the range at `places` decimals, as text: indexing this table formats a whole array
    several times faster than formatting each float."""
    low, high = (v * 10**places for v in _RANGE[places])
    return np.array([f"{k / 10**places:.{places}f}" for k in range(low, high + 1)], dtype=object)


def _text(values: np.ndarray, places: int = 1) -> np.ndarray:
    table = _decimal_strings(places)
    index = np.rint(values * 10**places).astype(np.int64) - _RANGE[places][0] * 10**places
    return table[np.clip(index, 0, len(table) - 1).ravel()]


def _format(site_id: str, prefixes: list[str], sectors: list[str], kpi: dict, dark: np.ndarray) -> list[str]:
    rsrp, sinr = _text(kpi["rsrp"]), _text(kpi["sinr"])
    off = dark.ravel()
    rsrp[off] = sinr[off] = "na"  # a dark sector measures no signal
    columns = [
        kpi["ues"].ravel().tolist(), _text(kpi["prb_dl"]).tolist(), rsrp.tolist(), sinr.tolist(),
        _text(kpi["thp_dl"]).tolist(), _text(kpi["thp_ul"]).tolist(), _text(kpi["drop"], 2).tolist(),
        _text(kpi["hof"]).tolist(),
    ]
    return [
        f"{p}{site_id}{s} ues={u} prb_dl={b} rsrp={r} sinr={q} thp_dl={d} thp_ul={ul} drop={x} hof={h}"
        for p, s, u, b, r, q, d, ul, x, h in zip(prefixes, sectors, *columns)
    ]


def _merge(kpi_lines: list[str], kpi_labels: np.ndarray, extra: list, config: CellSiteConfig):
    """Event lines go before the KPI lines of the period they happen in: those are stamped at its end."""
    n = config.sectors
    positions = [minute // config.period_min * n for minute, _, _ in extra]
    lines, done = [], 0
    for at, (_, text, _) in zip(positions, extra):
        lines.extend(kpi_lines[done:at])
        lines.append(text)
        done = at
    lines.extend(kpi_lines[done:])
    labels = np.insert(kpi_labels, positions, [kind for _, _, kind in extra]).astype(np.int8)
    period = np.insert(np.repeat(np.arange(config.periods, dtype=np.int32), n), positions,
                       [minute // config.period_min for minute, _, _ in extra])
    return lines, labels, period


def split_site(site: SiteLog, test_days: int) -> tuple[list[str], list[str], np.ndarray]:
    """(train lines, test lines, test labels): the last `test_days` days are the test part, so a model trains on
    the past and detects in the future."""
    if isinstance(test_days, bool) or not isinstance(test_days, int) or not 0 < test_days < site.days:
        raise ValueError(f"test_days must be an integer from 1 to days - 1 = {site.days - 1}, got {test_days!r}")
    cut = int(np.searchsorted(site.period, (site.days - test_days) * site.periods_per_day))
    return site.lines[:cut], site.lines[cut:], site.labels[cut:]


def to_clients(logs: CellSiteLogs, chunk_lines: int = CHUNK_LINES, test_days: int = 0) -> list[ClientText]:
    """One client per site; its "speeches" are consecutive chunks of lines, so that fleet.data.split_client,
    which holds out whole speeches, keeps text windows contiguous. With test_days, the last days are left out."""
    if isinstance(chunk_lines, bool) or not isinstance(chunk_lines, int) or chunk_lines < 1:
        raise ValueError(f"chunk_lines must be a positive integer, got {chunk_lines!r}")
    clients = []
    for site in logs.sites:
        lines = split_site(site, test_days)[0] if test_days else site.lines
        chunks = tuple(tuple(lines[i : i + chunk_lines]) for i in range(0, len(lines), chunk_lines))
        clients.append(ClientText(site.site_id, chunks))
    return clients


def windows_with_labels(lines: list[str], labels, window_lines: int) -> list[tuple[str, bool]]:
    """Back-to-back windows of `window_lines` consecutive lines (a last, shorter rest is dropped), each a fault
    window when any of its lines is labelled a fault."""
    if window_lines < 1:
        raise ValueError(f"window_lines must be a positive integer, got {window_lines!r}")
    faulty = np.asarray(labels) != FaultKind.NORMAL
    return [
        ("\n".join(lines[i : i + window_lines]), bool(faulty[i : i + window_lines].any()))
        for i in range(0, len(lines) - window_lines + 1, window_lines)
    ]
