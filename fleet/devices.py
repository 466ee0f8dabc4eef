"""Devices: what each one computes, how much battery it has, when it is there, and how often it fails.

Scenario: a fleet is sampled from device classes mixed by fraction. Each class is a set of distributions
(figures from REFERENCE.md section 6); each device draws its own values once, from the stream
(seed, "fleet"), and is dropped in a cell of the radio layout. A scenario may override any parameter of a
class. The fleet is a columnar table of numpy arrays, not N Python objects: 100,000 devices sample in well
under a second and take a few megabytes.

Where a device stands: phones, gateways and Jetson boxes at a random spot of their cell; servers of an
`at_site` class (the cell-site MEC boxes) at the site itself, distance 0, where they reach the aggregation
server over the backhaul and never use the cellular radio. Whether a device sees its site: for a mixed
path-loss family ("uma", "umi", "rma") each device draws LOS from its own stream (seed, "los") with TR 38.901's
LOS probability at its distance, so the fleet's other draws do not move; its shadowing sigma is then the LOS
or NLOS one of that family unless the scenario fixes a sigma.

Radio power: P(r) = base + slope x r, at most max_w, per direction (`network_models.RadioPower`). The phone
figures are the 5G power-throughput regression of Narayanan et al., "A Variegated Look at 5G in the Wild:
Performance, Power, and QoE Implications", SIGCOMM 2021, Section 4.3, Figure 11: a Samsung Galaxy S20 Ultra on
Verizon, whole-phone power on a Monsoon monitor, iPerf at fixed rates. We take its sub-6 GHz (NSA low-band)
lines, the band family nearest the 3.5 GHz carrier the radio layer models. The uplink slopes the paper
reports (low-band 29.15 mW per Mb/s; mmWave 9.42 and LTE 80.21 for comparison) are what the same regression
gives when recomputed from the authors' released data (SIGCOMM21-5G/artifact,
Data-Transfer-Power/MN-Transfer) with their figure script's bins, to 0.01 mW per Mb/s; the intercepts and the
downlink slope come from that recomputation (drawn in the figure, not checked against printed numbers). The
fit is linear only over the rates measured (uplink 1-40 Mb/s, downlink 1-100 Mb/s on that band); past them
power is held at the highest mean power measured on that band rather than extrapolated, since a linear fit
run out to 200 Mb/s or 1 Gb/s charges watts no handset radio draws (the LTE fit this replaces, Huang et al.
MobiSys 2012, 1.288 W + 0.438 W per Mb/s, measured up to about 20 Mb/s, gave 86 W at 193 Mb/s). The same
phone on mmWave drew 7.2 W at 190 Mb/s: the bound may understate a sub-6 radio's power at such rates by up
to about 2.7 W, and nothing measured says by how much.

Units: FLOP/s, GB, Wh, W, dBm, seconds, failures per hour.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from fleet.availability import Availability, build_availability
from fleet.rng import stream
from network_models import (
    MIXED_FAMILIES,
    NO_POWER,
    PATH_LOSS_MODELS,
    RadioPower,
    cell_sites,
    los_probability,
    place_devices,
)
from network_models import shadowing_sigma_db as model_sigma_db

ALWAYS = {"kind": "always_on"}
NIGHT_CHARGING = {"kind": "diurnal", "window_start_h": 22.0, "window_hours": 9.0, "jitter_h": 1.0}

# Sub-6 GHz 5G phone radio, Narayanan et al. SIGCOMM 2021 Figure 11 (Galaxy S20 Ultra, Verizon NSA low-band),
# whole-phone watts. Uplink slope: the paper's 29.15 mW per Mb/s; base and downlink slope: the Figure 11
# regression recomputed from the released data (see the module docstring). max_w: the highest mean power
# measured on that band in that direction (uplink 4.558 W at 39.9 Mb/s, downlink 4.198 W at 100.5 Mb/s),
# beyond which the fit is not extrapolated.
SUB6_PHONE_UP = RadioPower(base_w=3.204, w_per_mbps=0.02915, max_w=4.558)
SUB6_PHONE_DOWN = RadioPower(base_w=2.925, w_per_mbps=0.01352, max_w=4.198)


def _is_range(value) -> bool:
    return (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


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
    radio_up: RadioPower = SUB6_PHONE_UP  # power while uploading, by rate
    radio_down: RadioPower = SUB6_PHONE_DOWN  # power while downloading, by rate
    at_site: bool = False  # stands at its cell's site and reaches the server over the backhaul, not the radio

    def __post_init__(self) -> None:
        """Refuse values no device has, naming the field (a scenario's overrides come through here)."""
        for name in ("peak_tflops", "memory_gb", "battery_wh"):
            value = getattr(self, name)
            if value is None and name == "battery_wh":
                continue
            if not (_is_range(value) and 0 < value[0] <= value[1] < math.inf):
                raise ValueError(f"{name}: must be [low, high] with 0 < low <= high, got {value!r}")
        if not 0 < self.utilisation <= 1:
            raise ValueError(f"utilisation: the achieved fraction of peak must lie in (0, 1], got {self.utilisation!r}")
        for name in ("compute_power_w", "charger_w", "failures_per_hour"):
            if not 0 <= getattr(self, name) < math.inf:
                raise ValueError(f"{name}: must be a finite number >= 0, got {getattr(self, name)!r}")
        if not -50 <= self.tx_power_dbm <= 50:
            raise ValueError(f"tx_power_dbm: a device transmits between -50 and 50 dBm (phones: 23), got "
                             f"{self.tx_power_dbm!r}")


CATALOG: dict[str, DeviceClass] = {
    c.name: c
    for c in (
        # Phones: the measured S20 Ultra radio (a flagship); the low-end phone is assumed to draw the same.
        DeviceClass("flagship_phone", (2.0, 4.0), 0.15, (8, 16), (12, 20), 4.5, 15.0, 23, NIGHT_CHARGING, 0.5,
                    radio_up=SUB6_PHONE_UP, radio_down=SUB6_PHONE_DOWN),
        DeviceClass("low_end_phone", (0.2, 0.5), 0.10, (3, 4), (11, 15), 2.5, 10.0, 23, NIGHT_CHARGING, 1.0,
                    radio_up=SUB6_PHONE_UP, radio_down=SUB6_PHONE_DOWN),
        # Gateway (Raspberry Pi with a 5G/LTE modem) and Jetson: no rate-resolved modem measurement found;
        # assumed to draw what the phone does, with its bound.
        DeviceClass("iot_gateway", (0.1, 0.15), 0.20, (4, 16), None, 9.0, 0.0, 20, ALWAYS, 0.2,
                    radio_up=SUB6_PHONE_UP, radio_down=SUB6_PHONE_DOWN),
        DeviceClass("jetson_orin_nano", (10.0, 17.0), 0.20, (8, 8), None, 15.0, 0.0, 23, ALWAYS, 0.1,
                    radio_up=SUB6_PHONE_UP, radio_down=SUB6_PHONE_DOWN),
        # Cell-site servers: at the site, on the backhaul; no cellular radio to power.
        DeviceClass("mec_t4", (65.0, 65.0), 0.30, (16, 16), None, 70.0, 0.0, 30, ALWAYS, 0.01,
                    radio_up=NO_POWER, radio_down=NO_POWER, at_site=True),
        DeviceClass("mec_l4", (121.0, 121.0), 0.30, (24, 24), None, 72.0, 0.0, 30, ALWAYS, 0.01,
                    radio_up=NO_POWER, radio_down=NO_POWER, at_site=True),
    )
}


def device_class(name: str, overrides: dict | None = None) -> DeviceClass:
    """A catalog class with a scenario's overrides applied. A radio power may be given as a mapping
    ({base_w, w_per_mbps, max_w}, as a YAML file writes it) or as a RadioPower."""
    if name not in CATALOG:
        raise ValueError(f"unknown device class {name!r}; known: {', '.join(CATALOG)}")
    overrides = dict(overrides or {})
    for key in ("radio_up", "radio_down"):
        if isinstance(overrides.get(key), dict):
            overrides[key] = RadioPower(**overrides[key])
    return replace(CATALOG[name], **overrides)


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
    los: np.ndarray  # (N,) bool: line of sight to the site (path loss and shadowing sigma depend on it)
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

    def charge_fraction(self, devices: np.ndarray | slice) -> np.ndarray:
        """Charge over capacity; 1 for mains-powered devices (`slice(None)`: every device, without a copy of the
        index)."""
        battery = self.battery_wh[devices]
        return np.where(np.isinf(battery), 1.0, self.charge_wh[devices] / np.where(np.isinf(battery), 1.0, battery))

    def battery_level(self, d: int) -> float:
        """Device d's charge over capacity, NaN on mains power; scalar code, as it runs twice per session."""
        capacity = self.battery_wh[d]
        return float(self.charge_wh[d] / capacity) if np.isfinite(capacity) else float("nan")

    def seconds_to_cutoff(self, d: int, power_w: float, now: float, cutoff_charge: float) -> float:
        """How long device d's battery lasts above `cutoff_charge` (a fraction of capacity) at `power_w` of
        load from `now`: a plugged-in device drains only by what its charger does not cover. Inf on mains."""
        if not np.isfinite(self.battery_wh[d]):
            return float("inf")
        if self.charging(now, np.array([d]))[0]:
            power_w -= self.classes[self.cls[d]].charger_w
        if power_w <= 0:
            return float("inf")
        above = self.charge_wh[d] - cutoff_charge * self.battery_wh[d]
        return max(0.0, above * 3600.0 / power_w)  # Wh to J over W

    def drain(self, d: int, energy_j: float) -> None:
        """Take `energy_j` out of device d's battery (mains: inf stays inf)."""
        self.charge_wh[d] -= energy_j / 3600.0  # J to Wh

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
    shadowing_sigma_db: float | None = None,
    path_loss: str = "uma_nlos",
    initial_charge: tuple[float, float],
    num_data_clients: int,
) -> Fleet:
    """Sample `size` devices of the classes in `mix`. `path_loss` is the scenario's model: a mixed family
    draws each device's LOS, a *_los / *_nlos model fixes it (free space and log-distance: LOS).
    `shadowing_sigma_db`: one sigma for every device, or None for the model's own, per device (LOS or NLOS)."""
    if path_loss not in PATH_LOSS_MODELS:
        raise ValueError(f"unknown path-loss model {path_loss!r}; known: {', '.join(PATH_LOSS_MODELS)}")
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
    # Every device draws a spot, servers at the site too: the draws of the others do not depend on which
    # classes stand at their site.
    cell, distance, xy = place_devices(rng, size, sites, cell_radius_m)
    at_site = per_class(lambda s: s.at_site).astype(bool)
    distance = np.where(at_site, 0.0, distance)
    xy[at_site] = sites[cell[at_site]]
    if path_loss in MIXED_FAMILIES:
        # Its own stream, so that the choice of path-loss model moves none of the fleet's other draws.
        los = stream(seed, "los").random(size) < los_probability(path_loss, distance)
    else:
        los = np.full(size, not path_loss.endswith("_nlos"))
    sigma = model_sigma_db(path_loss, los) if shadowing_sigma_db is None else shadowing_sigma_db
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
        # Standard normals times each device's sigma: the same draws whatever the sigmas are.
        shadowing_db=rng.normal(0.0, sigma, size),
        los=los,
        # More devices than data clients: clients are dealt round-robin in a seeded order, so some share text.
        data_client=rng.permutation(np.resize(np.arange(num_data_clients), size)),
        availability=[build_availability(s.availability, _class_seed(seed, s.name), size) for s in specs],
    )


def _class_seed(seed: int, name: str) -> int:
    # Each class's availability model gets its own stream, so adding a class does not reshuffle another's.
    return int(stream(seed, "availability-class", name).integers(2**62))
