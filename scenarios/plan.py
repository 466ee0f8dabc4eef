"""Capacity planning: for a scenario's fleet, model and network, how long are its synchronous rounds, what do
they cost each cell, device and battery per day, and how much uplink bandwidth per cell keeps the 95th
percentile round under a target?

Every figure comes from systems-only probes (no training): a probe is the scenario run through
scenarios.runner.run_scenario with run.mode=systems, run.rounds=plan.rounds, one network.uplink_mhz and no
report, into OUT/probes/uplink-<X>MHz/. Every probe keeps the scenario's seed (common random numbers), so
probes differ only in bandwidth and round duration falls with bandwidth in practice. The probe at the
scenario's own uplink_mhz (the baseline) gives the percentiles and the per-day figures. The rules behind
the figures are RULES (analysis/capacity.py); plan.json and plan.html repeat them.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from analysis.capacity import (
    RULES,
    SECONDS_PER_DAY,
    cell_load,
    class_table,
    duration_percentiles,
    per_day_scale,
    round_durations,
    session_profile,
)
from analysis.plan_report import seconds, write_outputs
from analysis.recorder import load_run
from scenarios.errors import ScenarioError
from scenarios.loader import parse_scenario
from scenarios.assembly import build_fleet, device_ranks
from scenarios.checks import target_architecture
from scenarios.runner import RunOptions, run_scenario
from scenarios.schema import Scenario


def fleet_classes(scenario: Scenario) -> pd.DataFrame:
    """Devices per class, how many can train the model (memory), and which classes run on battery."""
    fleet = build_fleet(scenario, num_data_clients=1)
    eligible = device_ranks(scenario, target_architecture(scenario), fleet) > 0
    k = len(fleet.classes)
    return pd.DataFrame({
        "devices": np.bincount(fleet.cls, minlength=k),
        "eligible": np.bincount(fleet.cls, eligible, minlength=k).astype(int),
        "battery_powered": [c.battery_wh is not None for c in fleet.classes],
    }, index=pd.Index([c.name for c in fleet.classes], name="device_class"))


# --- probes and the search ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    uplink_mhz: float
    run_dir: str  # relative to the plan folder
    durations_s: list[float]  # per round; inf: short of K reports
    percentiles_s: dict[str, float]
    short_rounds: int
    meets: bool
    wall_s: float  # host time of the probe


def probe_scenario(scenario: Scenario, uplink_mhz: float) -> Scenario:
    tree = scenario.model_dump(mode="json")
    # A probe takes a minute and is simply run again: no checkpoints (they would save the state of every device).
    tree["run"].update(mode="systems", rounds=scenario.plan.rounds, checkpoint_every=0)
    tree["network"]["uplink_mhz"] = uplink_mhz
    tree["output"]["report"] = False
    return parse_scenario(tree, source=f"{scenario.name} at {uplink_mhz:g} MHz")


class Prober:
    """Runs each probe once, into folder/uplink-<X>MHz, and reports a line per probe."""

    def __init__(self, scenario: Scenario, folder: Path, progress: bool):
        self.scenario, self.folder, self.progress = scenario, folder, progress
        self.probes: dict[float, Probe] = {}

    def __call__(self, uplink_mhz: float) -> Probe:
        uplink_mhz = round_mhz(uplink_mhz)
        if uplink_mhz not in self.probes:
            self.probes[uplink_mhz] = self._run(uplink_mhz)
        return self.probes[uplink_mhz]

    def _run(self, uplink_mhz: float) -> Probe:
        run_dir = self.folder / f"uplink-{uplink_mhz:g}MHz"
        start = time.perf_counter()
        run_scenario(probe_scenario(self.scenario, uplink_mhz), RunOptions(out=run_dir, progress=False))
        rounds, _, _ = load_run(run_dir)
        durations = round_durations(rounds, self.scenario.run.clients_per_round)
        percentiles = duration_percentiles(durations)
        probe = Probe(uplink_mhz, str(run_dir.relative_to(self.folder.parent)), durations.tolist(), percentiles,
                      int(np.isinf(durations).sum()), percentiles["p95"] <= self.scenario.plan.round_p95_target_s,
                      time.perf_counter() - start)
        if self.progress:
            print(f"probe {len(self.probes) + 1}: uplink {uplink_mhz:g} MHz: p95 {seconds(percentiles['p95'])} "
                  f"({'meets' if probe.meets else 'over'} {self.scenario.plan.round_p95_target_s:g} s), "
                  f"{probe.short_rounds} of {len(durations)} rounds short of K, {probe.wall_s:.0f} s wall",
                  file=sys.stderr, flush=True)
        return probe


def round_mhz(mhz: float) -> float:
    """6 significant digits: probes are named by their band."""
    return float(f"{mhz:.6g}")


def search_uplink(meets: Callable[[float], bool], lo: float, hi: float, tolerance: float) -> tuple[str, float | None]:
    """(status, answer): 'unreachable' (None) if hi does not meet the target, 'minimum_meets' (lo) if lo
    already does, else 'found' with the narrowest band that met it, within a factor 1 + tolerance of one
    that did not."""
    if not meets(hi):
        return "unreachable", None
    if meets(lo):
        return "minimum_meets", lo
    while hi / lo > 1.0 + tolerance:
        mid = round_mhz(math.sqrt(lo * hi))
        if not lo < mid < hi:  # the bracket is as narrow as the rounding allows
            break
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return "found", hi


# --- the plan ----------------------------------------------------------------------------------------


@dataclass
class Plan:
    scenario: str
    seed: int
    fleet_size: int
    cells: int
    clients_per_round: int
    invited_per_round: int
    deadline_s: float
    emulated_model: str
    target_p95_s: float
    uplink_mhz_min: float
    uplink_mhz_max: float
    tolerance: float
    rounds_per_probe: int
    baseline: Probe
    simulated_s: float  # of the baseline's rounds
    per_day_scale: float
    cells_per_day: dict[str, float]  # GB per cell per day, mean and busiest
    energy_wh_per_device_per_day: float
    classes: list[dict]
    status: str  # found, minimum_meets, unreachable
    answer_mhz: float | None
    message: str
    probes: list[Probe]  # in the order they ran
    monotonic: bool  # every wider probe met the target if a narrower one did
    at_max: dict  # session_profile at plan.uplink_mhz_max
    wall_s: float
    rules: list[str] = field(default_factory=lambda: list(RULES))

    def to_json(self) -> dict:
        """A JSON-safe dict: unbounded durations (inf) become null."""
        return _finite(asdict(self))


def _finite(value):
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def plan_dir(scenario: Scenario, out: Path | None) -> Path:
    if out is not None:
        if out.exists() and any(out.iterdir()):
            raise ScenarioError(f"--out: {out} exists and is not empty")
        return out
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(scenario.output.dir) / f"plan-{scenario.name}-{stamp}"


def check_plannable(scenario: Scenario) -> None:
    if scenario.strategy.build().traits.asynchronous:
        raise ScenarioError(f"strategy: plan measures synchronous rounds; {scenario.strategy.name} is "
                            "asynchronous")


def explain(scenario: Scenario, status: str, answer: float | None, prober: Prober, at_max: dict) -> str:
    p, k = scenario.plan, scenario.run.clients_per_round
    if status == "found":
        below = max(x for x, probe in prober.probes.items() if x < answer and not probe.meets)
        return (f"{answer:.3g} MHz of uplink per cell keeps the p95 round at "
                f"{seconds(prober(answer).percentiles_s['p95'])}, within the {p.round_p95_target_s:g} s target; "
                f"{below:.3g} MHz gives {seconds(prober(below).percentiles_s['p95'])}.")
    if status == "minimum_meets":
        return (f"Already the minimum searched, {p.uplink_mhz_min:g} MHz per cell, keeps the p95 round at "
                f"{seconds(prober(answer).percentiles_s['p95'])}, within the {p.round_p95_target_s:g} s target: "
                "uplink bandwidth is not what limits round time here (lower plan.uplink_mhz_min to find the limit).")
    top, phases, failures = prober(p.uplink_mhz_max), at_max["seconds"], at_max["failures"]
    dominant = max(phases, key=phases.get)
    remedy = {"upload": "raise plan.uplink_mhz_max or compress the upload (strategy.compression)",
              "train": "more uplink cannot shorten training: a smaller model, fewer local steps or faster devices can",
              "download": "more uplink cannot shorten the download: widen network.downlink_mhz or multicast"}[dominant]
    return (f"Even the maximum searched, {p.uplink_mhz_max:g} MHz per cell, does not keep the p95 round within "
            f"{p.round_p95_target_s:g} s: p95 there is {seconds(top.percentiles_s['p95'])}, {top.short_rounds} of "
            f"{len(top.durations_s)} rounds short of K={k:,} reports by the {scenario.run.deadline_s:g} s deadline. "
            f"Sessions spent on average {phases['train']:,.0f} s training, {phases['upload']:,.0f} s uploading and "
            f"{phases['download']:,.0f} s downloading: {dominant} dominates; {remedy}."
            + (" Sessions that did not report: " + ", ".join(f"{n:,} {why}" for why, n in failures.items()) + "."
               if failures else ""))


def is_monotonic(probes: list[Probe]) -> bool:
    met = [p.meets for p in sorted(probes, key=lambda p: p.uplink_mhz)]
    return all(a <= b for a, b in zip(met, met[1:]))


def run_plan(scenario: Scenario, out: Path | None = None, progress: bool = True) -> Path:
    """Probe the scenario, search the uplink band, write plan.json, plan.csv, plan.txt and plan.html into
    OUT (default: output.dir/plan-NAME-UTCSTAMP; an existing non-empty OUT is refused); returns OUT."""
    start = time.perf_counter()
    check_plannable(scenario)
    out = plan_dir(scenario, out)
    classes = fleet_classes(scenario)
    p = scenario.plan
    prober = Prober(scenario, out / "probes", progress)
    baseline = prober(scenario.network.uplink_mhz)
    status, answer = search_uplink(lambda mhz: prober(mhz).meets, p.uplink_mhz_min, p.uplink_mhz_max, p.tolerance)
    at_max = session_profile(load_run(out / prober(p.uplink_mhz_max).run_dir)[1])
    probes = list(prober.probes.values())
    message = explain(scenario, status, answer, prober, at_max)
    if not is_monotonic(probes):
        message += (" The probes were not monotonic in bandwidth (a narrower band met the target where a wider "
                    "one did not): the answer is the bisection's, see the probes.")

    rounds, clients, summary = load_run(out / baseline.run_dir)
    scale = per_day_scale(rounds)
    cells = cell_load(clients, scenario.network.cells, scale)
    plan = Plan(
        scenario=scenario.name, seed=scenario.seed, fleet_size=scenario.fleet.size, cells=scenario.network.cells,
        clients_per_round=scenario.run.clients_per_round, invited_per_round=scenario.run.selected,
        deadline_s=scenario.run.deadline_s, emulated_model=summary["emulated_model"],
        target_p95_s=p.round_p95_target_s, uplink_mhz_min=p.uplink_mhz_min, uplink_mhz_max=p.uplink_mhz_max,
        tolerance=p.tolerance, rounds_per_probe=p.rounds, baseline=baseline,
        simulated_s=SECONDS_PER_DAY / scale, per_day_scale=scale,
        cells_per_day={
            "uplink_gb_mean": float(cells["uplink_gb_per_day"].mean()),
            "uplink_gb_busiest": float(cells["uplink_gb_per_day"].max()),
            "downlink_gb_mean": float(cells["downlink_gb_per_day"].mean()),
            "downlink_gb_busiest": float(cells["downlink_gb_per_day"].max()),
        },
        energy_wh_per_device_per_day=float(clients["energy_j"].sum()) / 3600.0 * scale / scenario.fleet.size,
        classes=json.loads(class_table(clients, classes, scale).to_json(orient="records")),
        status=status, answer_mhz=answer, message=message,
        probes=probes, monotonic=is_monotonic(probes), at_max=at_max,
        wall_s=time.perf_counter() - start,
    )
    write_outputs(out, plan.to_json(), cells)
    return out
