"""Devices: what each one computes, how much battery it has, when it is there, and how often it fails.

Scenario: a fleet is sampled from device classes mixed by fraction. Each class is a set of distributions
(figures from REFERENCE.md section 6); each device draws its own values once, from the stream
(seed, "fleet"), and is dropped in a cell of the radio layout. A scenario may override any parameter of a
class. The fleet is a columnar table of numpy arrays, not N Python objects: 100,000 devices sample in well
under a second and take a few megabytes.

Units: FLOP/s, GB, Wh, W, dBm, seconds, failures per hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from fleet.availability import Availability, build_availability
from fleet.rng import stream
from network_models import cell_sites, place_devices

ALWAYS = {"kind": "always_on"}
NIGHT_CHARGING = {"kind": "diurnal", "window_start_h": 22.0, "window_hours": 9.0, "jitter_h": 1.0}


@dataclass(frozen=True)
class DeviceClass:
    name: str
    peak_tflops: tuple[float, float]  # uniform range of peak TFLOP/s at training precision
    utilisation: float  # achieved fraction of peak for small-batch training (10-30% on edge hardware)
    memory_gb: tuple[float, float]
    battery_wh: tuple[float, float] | None  # None: mains powered
    compute_power_w: float  # drawn while training
    charger_w: float  # charging power while plugged in
    tx_power_dbm: float
    availability: dict = field(default_factory=lambda: dict(ALWAYS))  # spec for fleet.availability
    failures_per_hour: float = 0.0  # app killed, device rebooted, moved out of coverage
    # LTE radio power (Huang et al., MobiSys 2012): W = base + up * UL Mb/s (+ down * DL Mb/s).
    radio_base_w: float = 1.288
    radio_up_w_per_mbps: float = 0.438
    radio_down_w_per_mbps: float = 0.052


CATALOG: dict[str, DeviceClass] = {
    c.name: c
    for c in (
        DeviceClass("flagship_phone", (2.0, 4.0), 0.15, (8, 16), (12, 20), 4.5, 15.0, 23, NIGHT_CHARGING, 0.5),
        DeviceClass("low_end_phone", (0.2, 0.5), 0.10, (3, 4), (11, 15), 2.5, 10.0, 23, NIGHT_CHARGING, 1.0),
        DeviceClass("iot_gateway", (0.1, 0.15), 0.20, (4, 16), None, 9.0, 0.0, 20, ALWAYS, 0.2),
        DeviceClass("jetson_orin_nano", (10.0, 17.0), 0.20, (8, 8), None, 15.0, 0.0, 23, ALWAYS, 0.1),
        DeviceClass("mec_t4", (65.0, 65.0), 0.30, (16, 16), None, 70.0, 0.0, 30, ALWAYS, 0.01),
        DeviceClass("mec_l4", (121.0, 121.0), 0.30, (24, 24), None, 72.0, 0.0, 30, ALWAYS, 0.01),
    )
}


def device_class(name: str, overrides: dict | None = None) -> DeviceClass:
    """A catalog class with a scenario's overrides applied."""
    if name not in CATALOG:
        raise ValueError(f"unknown device class {name!r}; known: {', '.join(CATALOG)}")
    return replace(CATALOG[name], **(overrides or {}))


@dataclass
class Fleet:
    """One row per device. Battery charge is the only column that changes during a run."""

    classes: list[DeviceClass]  # indexed by `cls`
    cls: np.ndarray  # (N,) int16
    flops: np.ndarray  # (N,) achieved FLOP/s for training
    memory_gb: np.ndarray
    battery_wh: np.ndarray  # capacity; inf for mains-powered devices
    charge_wh: np.ndarray  # current charge; inf for mains
    charged_wh: np.ndarray  # energy put in by charging so far
    cell: np.ndarray  # (N,) int32
    distance_m: np.ndarray  # to the cell's site
    xy: np.ndarray  # (N, 2) metres
    shadowing_db: np.ndarray
    data_client: np.ndarray  # (N,) index into the federated data's clients
    availability: list[Availability]  # one model per class, indexed by global device id

    def __len__(self) -> int:
        return len(self.cls)

    def per_class(self, attribute: str, devices: np.ndarray) -> np.ndarray:
        """A class attribute for the given devices (only those: rounds ask this of a few out of millions)."""
        return np.array([getattr(c, attribute) for c in self.classes], dtype=float)[self.cls[devices]]

    def _by_class(self, method: str, t: float, devices: np.ndarray, dtype) -> np.ndarray:
        devices = np.asarray(devices)
        out = np.empty(len(devices), dtype=dtype)
        classes = self.cls[devices]
        for k, model in enumerate(self.availability):
            mask = classes == k
            if mask.any():
                out[mask] = getattr(model, method)(t, devices[mask])
        return out

    def available(self, t: float, devices: np.ndarray) -> np.ndarray:
        return self._by_class("available", t, devices, bool)

    def offline_after(self, t: float, devices: np.ndarray) -> np.ndarray:
        return self._by_class("offline_after", t, devices, float)

    def charging(self, t: float, devices: np.ndarray) -> np.ndarray:
        return self._by_class("charging", t, devices, bool)

    def charge_fraction(self, devices: np.ndarray) -> np.ndarray:
        """Charge over capacity; 1 for mains-powered devices."""
        battery = self.battery_wh[devices]
        return np.where(np.isinf(battery), 1.0, self.charge_wh[devices] / np.where(np.isinf(battery), 1.0, battery))

    def mean_battery_level(self) -> dict[str, float]:
        """Per class, the mean charge fraction of its battery-powered devices (NaN: the class has none)."""
        on_battery = np.isfinite(self.battery_wh)
        level = np.where(on_battery, self.charge_wh / np.where(on_battery, self.battery_wh, 1.0), 0.0)
        k = len(self.classes)
        with np.errstate(invalid="ignore"):
            means = np.bincount(self.cls, level, k) / np.bincount(self.cls, on_battery, k)
        return {c.name: float(m) for c, m in zip(self.classes, means)}

    def charge(self, t0: float, t1: float, step_s: float = 900.0) -> None:
        """Charge plugged-in battery devices over [t0, t1]: charger power for the plugged time, up to capacity.
        Plugged time is sampled at the midpoints of steps of at most 15 minutes (charging windows last hours)."""
        if t1 <= t0:
            return
        batteries = np.flatnonzero(np.isfinite(self.battery_wh))
        if len(batteries) == 0:
            return
        steps = max(1, math.ceil((t1 - t0) / step_s))
        dt = (t1 - t0) / steps
        charger = self.per_class("charger_w", batteries)
        for i in range(steps):
            plugged = self.charging(t0 + (i + 0.5) * dt, batteries)
            room = self.battery_wh[batteries] - self.charge_wh[batteries]
            added = np.minimum(room, plugged * charger * dt / 3600.0)
            self.charge_wh[batteries] += added
            self.charged_wh[batteries] += added


def class_counts(fractions: list[float], size: int) -> np.ndarray:
    """Devices of each class: shares of `size` rounded down, the remainder to the largest class."""
    fractions = np.asarray(fractions, dtype=float)
    counts = np.floor(fractions / fractions.sum() * size).astype(int)
    counts[np.argmax(fractions)] += size - counts.sum()
    return counts


def sample_fleet(
    seed: int,
    size: int,
    mix: dict[str, float],
    *,
    overrides: dict[str, dict] | None = None,
    cells: int,
    layout: str = "hex",
    inter_site_m: float = 500.0,
    cell_radius_m: float,
    shadowing_sigma_db: float,
    initial_charge: tuple[float, float],
    num_data_clients: int,
) -> Fleet:
    rng = stream(seed, "fleet")
    specs = [device_class(name, (overrides or {}).get(name)) for name in mix]
    counts = class_counts(list(mix.values()), size)
    cls = rng.permutation(np.repeat(np.arange(len(specs), dtype=np.int16), counts))

    def per_class(get) -> np.ndarray:
        return np.array([get(s) for s in specs], dtype=float)[cls]

    def uniform(get) -> np.ndarray:
        lo, hi = per_class(lambda s: get(s)[0]), per_class(lambda s: get(s)[1])
        return lo + (hi - lo) * rng.random(size)

    mains = per_class(lambda s: s.battery_wh is None).astype(bool)
    battery = np.where(mains, np.inf, uniform(lambda s: s.battery_wh or (0.0, 0.0)))
    charge = np.where(mains, np.inf, battery * rng.uniform(initial_charge[0], initial_charge[1], size))
    sites = cell_sites(cells, inter_site_m, layout)
    cell, distance, xy = place_devices(rng, size, sites, cell_radius_m)
    return Fleet(
        classes=specs,
        cls=cls,
        flops=uniform(lambda s: s.peak_tflops) * 1e12 * per_class(lambda s: s.utilisation),
        memory_gb=uniform(lambda s: s.memory_gb),
        battery_wh=battery,
        charge_wh=charge,
        charged_wh=np.zeros(size),
        cell=cell.astype(np.int32),
        distance_m=distance,
        xy=xy,
        shadowing_db=rng.normal(0.0, shadowing_sigma_db, size),
        # More devices than data clients: clients are dealt round-robin in a seeded order, so some share text.
        data_client=rng.permutation(np.resize(np.arange(num_data_clients), size)),
        availability=[build_availability(s.availability, _class_seed(seed, s.name), size) for s in specs],
    )


def _class_seed(seed: int, name: str) -> int:
    # Each class's availability model gets its own stream, so adding a class does not reshuffle another's.
    return int(stream(seed, "availability-class", name).integers(2**62))
