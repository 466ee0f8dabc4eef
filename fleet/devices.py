"""Devices: what each one can compute, how much battery it has, when it is there, and how often it fails.

Scenario: a fleet is sampled from device classes mixed by fraction. Each class is a set of ranges (figures
from REFERENCE.md section 6); each device draws its own values once, from the stream (seed, "fleet"). The
fleet is a columnar table of numpy arrays, not N Python objects, so 100,000 devices cost megabytes.

Units: FLOP/s, GB, Wh, W, dBm, probabilities per round, failures per hour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fleet.rng import stream


@dataclass(frozen=True)
class DeviceClass:
    name: str
    peak_flops: tuple[float, float]  # uniform range of peak FLOP/s for training precision
    utilisation: float  # achieved fraction of peak for small-batch training (10-30% on edge hardware)
    memory_gb: tuple[float, float]
    battery_wh: tuple[float, float] | None  # None: mains powered
    compute_power_w: float  # drawn while training
    tx_power_dbm: float
    availability: float  # probability of being online and idle when a round starts
    failures_per_hour: float  # rate of leaving mid-session (app killed, moved away, lost power)


CATALOG: dict[str, DeviceClass] = {
    c.name: c
    for c in (
        DeviceClass("flagship_phone", (2e12, 4e12), 0.15, (8, 16), (12, 20), 4.5, 23, 0.5, 1.0),
        DeviceClass("low_end_phone", (0.2e12, 0.5e12), 0.10, (3, 4), (11, 15), 2.5, 23, 0.4, 2.0),
        DeviceClass("iot_gateway", (0.1e12, 0.15e12), 0.20, (4, 16), None, 9.0, 20, 0.9, 0.2),
        DeviceClass("jetson_orin_nano", (10e12, 17e12), 0.20, (8, 8), None, 15.0, 23, 0.9, 0.1),
        DeviceClass("mec_t4", (65e12, 65e12), 0.30, (16, 16), None, 70.0, 30, 0.99, 0.01),
    )
}


@dataclass
class Fleet:
    """One row per device. Battery charge is the only column that changes during a run."""

    classes: list[str]  # class names, indexed by `cls`
    cls: np.ndarray  # (N,) int16
    flops: np.ndarray  # (N,) achieved FLOP/s for training
    memory_gb: np.ndarray
    battery_wh: np.ndarray  # capacity; inf for mains-powered devices
    charge_wh: np.ndarray  # current charge
    compute_power_w: np.ndarray
    tx_power_dbm: np.ndarray
    availability: np.ndarray
    failures_per_hour: np.ndarray
    cell: np.ndarray  # (N,) int32
    distance_m: np.ndarray  # to the cell's base station
    shadowing_db: np.ndarray
    data_client: np.ndarray  # (N,) index into the federated data's clients

    def __len__(self) -> int:
        return len(self.cls)

    def class_names(self) -> np.ndarray:
        return np.asarray(self.classes)[self.cls]


def sample_fleet(
    seed: int,
    size: int,
    mix: dict[str, float],
    *,
    cells: int,
    cell_radius_m: float,
    shadowing_sigma_db: float,
    initial_charge: tuple[float, float],
    num_data_clients: int,
) -> Fleet:
    rng = stream(seed, "fleet")
    names = list(mix)
    fractions = np.array([mix[n] for n in names], dtype=float)
    counts = np.floor(fractions / fractions.sum() * size).astype(int)
    counts[np.argmax(fractions)] += size - counts.sum()  # rounding remainder to the largest class
    cls = rng.permutation(np.repeat(np.arange(len(names), dtype=np.int16), counts))
    specs = [CATALOG[n] for n in names]

    def per_class(get) -> np.ndarray:
        return np.array([get(s) for s in specs], dtype=float)[cls]

    def uniform(get) -> np.ndarray:
        lo, hi = per_class(lambda s: get(s)[0]), per_class(lambda s: get(s)[1])
        return lo + (hi - lo) * rng.random(size)

    mains = per_class(lambda s: s.battery_wh is None).astype(bool)
    battery = np.where(mains, np.inf, uniform(lambda s: s.battery_wh or (0.0, 0.0)))
    charge_frac = rng.uniform(initial_charge[0], initial_charge[1], size)
    # Uniform over the cell's disc, at least 35 m from the mast (3GPP minimum distance for UMa).
    distance = np.sqrt(rng.uniform(35.0**2, cell_radius_m**2, size))
    return Fleet(
        classes=names,
        cls=cls,
        flops=uniform(lambda s: s.peak_flops) * per_class(lambda s: s.utilisation),
        memory_gb=uniform(lambda s: s.memory_gb),
        battery_wh=battery,
        charge_wh=np.where(mains, np.inf, battery * charge_frac),
        compute_power_w=per_class(lambda s: s.compute_power_w),
        tx_power_dbm=per_class(lambda s: s.tx_power_dbm),
        availability=per_class(lambda s: s.availability),
        failures_per_hour=per_class(lambda s: s.failures_per_hour),
        cell=rng.integers(0, cells, size).astype(np.int32),
        distance_m=distance,
        shadowing_db=rng.normal(0.0, shadowing_sigma_db, size),
        # More devices than data clients: clients are dealt round-robin in a seeded order, so some share text.
        data_client=rng.permutation(np.resize(np.arange(num_data_clients), size)),
    )
