"""Capacity planning: for a scenario's fleet, model and network, how long are its synchronous rounds, what do
they cost each cell, device and battery per day, and how much uplink bandwidth per cell keeps the 95th
percentile round under a target?

Every figure comes from systems-only probes (no training): a probe is the scenario run through
scenarios.runner.run_scenario with run.mode=systems, run.rounds=plan.rounds, one network.uplink_mhz and no
report, into OUT/probes/uplink-<X>MHz/. Every probe keeps the scenario's seed (common random numbers), so
probes differ only in bandwidth and round duration falls with bandwidth in practice. The probe at the
scenario's own uplink_mhz (the baseline) gives the percentiles and the per-day figures. The rules behind
the figures are RULES (analysis/capacity.py); plan.json and plan.html repeat them.

With plan.horizon_h, one more run emulates that many hours of rounds from midnight at the recommended band
(scenarios/horizon.py) and the plan adds its figures per hour. With an address, every run is a Ray task on
that cluster, the bisection's next probes running ahead of it (scenarios/plan_runs.py); the plan is the
same as without one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
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
from scenarios.assembly import build_fleet, device_ranks
from scenarios.checks import target_architecture
from scenarios.horizon import Horizon, run_horizon
from scenarios.plan_runs import ClusterRuns, LocalRuns, PlanRuns, RunRequest, systems_scenario
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
    wall_s: float  # host time of the probe's run
    node: str | None = None  # the Ray node that ran it; None: this process


def probe_scenario(scenario: Scenario, uplink_mhz: float) -> Scenario:
    return systems_scenario(scenario, uplink_mhz, scenario.plan.rounds)


class Prober:
    """Runs each probe once, into folder/uplink-<X>MHz, and reports a line per probe. `ahead` names probes
    the search will probably ask for next, for runs that can start them early (on a cluster)."""

    def __init__(self, scenario: Scenario, folder: Path, progress: bool, runs: PlanRuns):
        self.scenario, self.folder, self.progress, self.runs = scenario, folder, progress, runs
        self.probes: dict[float, Probe] = {}

    def __call__(self, uplink_mhz: float) -> Probe:
        uplink_mhz = round_mhz(uplink_mhz)
        if uplink_mhz not in self.probes:
            self.probes[uplink_mhz] = self._run(uplink_mhz)
        return self.probes[uplink_mhz]

    def ahead(self, bands: list[float]) -> None:
        """Start the bands the search may probe next, nearest steps first; abandon those started earlier that
        it can no longer reach."""
        if not self.runs.runs_ahead:  # nothing would start: spare building the probes' scenarios
            return
        requests = [self.request(mhz) for mhz in dict.fromkeys(map(round_mhz, bands)) if mhz not in self.probes]
        self.runs.keep_only({r.run_dir for r in requests})
        for request in requests:
            self.runs.start(request)

    def request(self, uplink_mhz: float) -> RunRequest:
        return RunRequest(probe_scenario(self.scenario, uplink_mhz), self.folder / f"uplink-{uplink_mhz:g}MHz")

    def _run(self, uplink_mhz: float) -> Probe:
        request = self.request(uplink_mhz)
        done = self.runs.finish(request)
        run_dir = request.run_dir
        rounds = pd.read_parquet(run_dir / "rounds.parquet")
        durations = round_durations(rounds, self.scenario.run.clients_per_round)
        percentiles = duration_percentiles(durations)
        probe = Probe(uplink_mhz, str(run_dir.relative_to(self.folder.parent)), durations.tolist(), percentiles,
                      int(np.isinf(durations).sum()), percentiles["p95"] <= self.scenario.plan.round_p95_target_s,
                      done.wall_s, done.node)
        if self.progress:
            print(f"probe {len(self.probes) + 1}: uplink {uplink_mhz:g} MHz: p95 {seconds(percentiles['p95'])} "
                  f"({'meets' if probe.meets else 'over'} {self.scenario.plan.round_p95_target_s:g} s), "
                  f"{probe.short_rounds} of {len(durations)} rounds short of K, {probe.wall_s:.0f} s wall",
                  file=sys.stderr, flush=True)
        return probe


def round_mhz(mhz: float) -> float:
    """6 significant digits: probes are named by their band."""
    return float(f"{mhz:.6g}")


def midpoint(lo: float, hi: float, tolerance: float) -> float | None:
    """The band the bisection probes next inside (lo, hi); None once the bracket is within the tolerance or
    as narrow as the rounding allows."""
    if hi / lo <= 1.0 + tolerance:
        return None
    mid = round_mhz(math.sqrt(lo * hi))
    return mid if lo < mid < hi else None


def bisection_points(lo: float, hi: float, tolerance: float, levels: int = 4) -> list[float]:
    """The bands the bisection of (lo, hi) may probe in its next `levels` steps, nearest steps first: one
    band for the next step, two for the one after (whichever way the first goes), and so on."""
    points, brackets = [], [(lo, hi)]
    for _ in range(levels):
        narrower = []
        for a, b in brackets:
            mid = midpoint(a, b, tolerance)
            if mid is not None:
                points.append(mid)
                narrower += [(a, mid), (mid, b)]
        brackets = narrower
    return points


def search_uplink(meets: Callable[[float], bool], lo: float, hi: float, tolerance: float,
                  ahead: Callable[[list[float]], None] = lambda bands: None) -> tuple[str, float | None]:
    """(status, answer): 'unreachable' (None) if hi does not meet the target, 'minimum_meets' (lo) if lo
    already does, else 'found' with the narrowest band that met it, within a factor 1 + tolerance of one
    that did not. Before each step `ahead` is told the bands the next steps may probe; it changes nothing
    the search asks or answers."""
    ahead(first_probes(lo, hi, tolerance))
    if not meets(hi):
        return "unreachable", None
    if meets(lo):
        return "minimum_meets", lo
    while (mid := midpoint(lo, hi, tolerance)) is not None:
        ahead(bisection_points(lo, hi, tolerance))
        if meets(mid):
            hi = mid
        else:
            lo = mid
    return "found", hi


def first_probes(lo: float, hi: float, tolerance: float) -> list[float]:
    """The search's bands in the order it may need them: the ends, then the first steps of the bisection."""
    return [hi, lo, *bisection_points(lo, hi, tolerance)]


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
    cluster: str | None = None  # the Ray cluster the runs went to (--address); None: this process
    horizon: Horizon | None = None  # plan.horizon_h hours of rounds, per hour
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


@contextlib.contextmanager
def plan_runs(scenario: Scenario, address: str | None):
    """Runs in this process without an address; else Ray tasks on that cluster, attached for the block."""
    if not address:
        yield LocalRuns()
        return
    # Imported here: a plan without a cluster never loads Ray.
    from fleet.pool import ray_session

    rt = scenario.runtime
    with ray_session(address, os.cpu_count() or 1, rt.dashboard, rt.loopback_only, rt.connect_timeout_s):
        runs = ClusterRuns()
        try:
            yield runs
        finally:
            runs.close()


def run_plan(scenario: Scenario, out: Path | None = None, progress: bool = True, address: str | None = None) -> Path:
    """Probe the scenario, search the uplink band, run the horizon (plan.horizon_h), write plan.json,
    plan.csv, plan_hours.csv (with a horizon), plan.txt and plan.html into OUT (default:
    output.dir/plan-NAME-UTCSTAMP; an existing non-empty OUT is refused); returns OUT. With `address` (else
    runtime.address), every run is a Ray task on that cluster, with the same results."""
    start = time.perf_counter()
    check_plannable(scenario)
    out = plan_dir(scenario, out)
    classes = fleet_classes(scenario)
    p = scenario.plan
    address = address or scenario.runtime.address
    with plan_runs(scenario, address) as runs:
        prober = Prober(scenario, out / "probes", progress, runs)
        prober.ahead([scenario.network.uplink_mhz, *first_probes(p.uplink_mhz_min, p.uplink_mhz_max, p.tolerance)])
        baseline = prober(scenario.network.uplink_mhz)
        status, answer = search_uplink(lambda mhz: prober(mhz).meets, p.uplink_mhz_min, p.uplink_mhz_max,
                                       p.tolerance, prober.ahead)
        runs.keep_only(set())  # the search is done: the probes started ahead of it would hold up the horizon
        horizon = None if p.horizon_h is None else run_horizon(scenario, answer, runs, out, progress)
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
        wall_s=time.perf_counter() - start, cluster=address or None, horizon=horizon,
    )
    write_outputs(out, plan.to_json(), cells)
    return out
