"""Capacity figures of a systems-only run folder: how long its synchronous rounds took to their K-th report,
their percentiles, and what the rounds cost each cell, device class and battery per day. `fedfleet plan`
(scenarios/plan.py) runs the probes and searches the band; these functions only read what a probe wrote.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

SECONDS_PER_DAY = 86_400.0
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
PHASES = ("download", "train", "upload")
RULES = [
    "A round's duration is the simulated time from its opening to its K-th report (run.clients_per_round); "
    "a round that closes with fewer than K reports (its deadline passed, or every invitee ended first) is "
    "unbounded: it exceeds any target.",
    "Percentiles interpolate linearly between order statistics (numpy's default); next to an unbounded round "
    "they are unbounded, so with n rounds per probe one short round makes p95 unbounded unless n >= 21.",
    "Per day: the emulated rounds run back to back; daily figures are the emulated totals times 86,400 s / "
    "the simulated time of those rounds.",
    "Energy is what devices drew (radio and compute); battery share is that energy over the device's "
    "battery capacity, before any recharging.",
    "Search: bisection on a log scale of network.uplink_mhz between plan.uplink_mhz_min and "
    "plan.uplink_mhz_max until the bracket is narrower than a factor 1 + plan.tolerance; the answer is the "
    "narrowest probe that met the target, and the widest one below it did not.",
]


def round_durations(rounds: pd.DataFrame, k: int) -> np.ndarray:
    """Per synchronous round, the time to its K-th report; inf where it closed with fewer than K."""
    done = rounds[rounds["round"] > 0]
    return np.where(done["completed"] >= k, done["duration_s"], np.inf)


def percentile(values: np.ndarray, q: float) -> float:
    """Linear interpolation between order statistics, like numpy's default, but an unbounded (inf)
    neighbour gives inf rather than NaN."""
    v = np.sort(np.asarray(values, dtype=float))
    pos = q / 100.0 * (len(v) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi:
        return float(v[lo])
    if np.isinf(v[hi]):
        return math.inf
    return float(v[lo] + (v[hi] - v[lo]) * (pos - lo))


def duration_percentiles(durations: np.ndarray) -> dict[str, float]:
    return {name: percentile(durations, q) for name, q in PERCENTILES.items()}


def per_day_scale(rounds: pd.DataFrame) -> float:
    """86,400 s over the simulated time the emulated rounds took, back to back."""
    return SECONDS_PER_DAY / float(rounds["t_end"].iloc[-1] - rounds["t_start"].iloc[0])


def cell_load(clients: pd.DataFrame, cells: int, scale: float) -> pd.DataFrame:
    """Gigabytes per cell per day, every cell listed, of what crossed the cell's air: uplink as its devices
    sent it, downlink as the cell sent it (a multicast counts once); servers at the site use the backhaul."""
    load = clients.groupby("cell")[["bytes_up_air", "bytes_down_air"]].sum().reindex(range(cells), fill_value=0)
    return pd.DataFrame({
        "uplink_gb_per_day": load["bytes_up_air"] * scale / 1e9,
        "downlink_gb_per_day": load["bytes_down_air"] * scale / 1e9,
    }).rename_axis("cell")


def class_table(clients: pd.DataFrame, classes: pd.DataFrame, scale: float) -> pd.DataFrame:
    """Per device class: participation, energy and battery per device per day, battery per session.

    `classes` is indexed by class name with columns devices, eligible and battery_powered. Battery share
    comes from the sessions' charge_start - charge_end (fractions of capacity)."""
    sessions = clients.assign(
        report=clients["outcome"].eq("completed"), drain=clients["charge_start"] - clients["charge_end"]
    ).groupby("device_class").agg(
        sessions=("report", "size"), reports=("report", "sum"), energy_j=("energy_j", "sum"),
        drain=("drain", "sum"), drain_per_session=("drain", "mean"),
    )
    t = classes.join(sessions).fillna({"sessions": 0, "reports": 0, "energy_j": 0.0, "drain": 0.0})
    n, battery = t["devices"], t["battery_powered"]
    return pd.DataFrame({
        "devices": n,
        "eligible": t["eligible"],
        "battery_powered": battery,
        "sessions_per_device_per_day": t["sessions"] * scale / n,
        "reports_per_device_per_day": t["reports"] * scale / n,
        "completion_rate": t["reports"] / t["sessions"].where(t["sessions"] > 0),
        "share_of_reports": t["reports"] / max(t["reports"].sum(), 1),
        "energy_wh_per_device_per_day": t["energy_j"] / 3600.0 * scale / n,
        "battery_share_per_day": (t["drain"] * scale / n).where(battery),
        "battery_share_per_session": t["drain_per_session"].where(battery),
    }).rename_axis("device_class").reset_index()


def session_profile(clients: pd.DataFrame) -> dict:
    """Where sessions spend their time (mean seconds per phase over the sessions that reported, over all if
    none did) and why the others did not report (surplus sessions were merely not needed)."""
    reported = clients[clients["outcome"] == "completed"]
    sessions = reported if len(reported) else clients
    failed = clients.loc[~clients["outcome"].isin(["completed", "surplus"]), "outcome"].value_counts()
    return {"seconds": {phase: float(sessions[f"{phase}_s"].mean()) for phase in PHASES},
            "failures": {str(outcome): int(n) for outcome, n in failed.items()}}
