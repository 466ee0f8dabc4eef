"""How fast is the clock alone? One systems-only round (no training: timing, bytes and energy) over a large
fleet, every available device invited, with the engine under test (run.engine, default fast); then, in the
same run, the same round with the event-driven engine (events, the reference) on a smaller fleet with as many
devices per cell, as the baseline. Prints, for each, the wall time of the round, simulated client sessions per
wall second and the peak memory of its own process; then the ratio of sessions per second and the targets
(>= 50,000 sessions per second; a 1,000,000-device round under 60 s).

    python benchmarks/systems.py [--devices 1000000] [--cells 1000] [--baseline-devices 20000] [--engine fast]

Each round runs in a process of its own (measure.py), so each peak memory is that round's alone.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from measure import cores, in_child
from scenarios.loader import load_scenario
from scenarios.assembly import build_fleet
from scenarios.runner import RunOptions, run_scenario

TARGET_SESSIONS_PER_S = 50_000
TARGET_DEVICES, TARGET_ROUND_S = 1_000_000, 60.0


def fleet_sampling_seconds(scenario) -> float:
    start = time.perf_counter()
    build_fleet(scenario, num_data_clients=664)
    return time.perf_counter() - start


def measure_round(devices: int, cells: int, engine: str) -> dict:
    """One round over `devices` devices in `cells` cells with `engine`; run in a child process."""
    scenario = load_scenario("quickstart", [
        "name=systems_benchmark", "run.mode=systems", "run.rounds=1", f"fleet.size={devices}",
        f"run.clients_per_round={devices}", "run.over_selection=1.0", "run.deadline_s=3600",
        f"network.cells={cells}", "output.report=false", f"run.engine={engine}",
        "fleet.classes=[{name: flagship_phone, fraction: 0.3}, {name: low_end_phone, fraction: 0.4},"
        " {name: iot_gateway, fraction: 0.2}, {name: mec_t4, fraction: 0.1}]",
    ])
    sampling_s = fleet_sampling_seconds(scenario)
    stamps: dict[int, float] = {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        run = run_scenario(scenario, RunOptions(out=Path(tmp) / "run", progress=True,
                                                on_round=lambda row: stamps.setdefault(row["round"], time.perf_counter())))
        import pandas as pd

        sessions = len(pd.read_parquet(run / "clients.parquet", columns=["device"]))
        rounds = pd.read_parquet(run / "rounds.parquet")
    round_wall = stamps[1] - stamps[0]
    return {"engine": engine, "devices": devices, "cells": cells, "sessions": sessions,
            "simulated_s": float(rounds["duration_s"].iloc[1]), "completed": int(rounds["completed"].iloc[1]),
            "sampling_s": sampling_s, "round_wall_s": round_wall, "total_s": time.perf_counter() - start,
            "sessions_per_s": sessions / round_wall}


def report(title: str, m: dict, peak_gb: float) -> None:
    print(f"{title}: run.engine={m['engine']}")
    print(f"  fleet: {m['devices']:,} devices in {m['cells']} cells; {m['sessions']:,} sessions in one round")
    print(f"  round: {m['simulated_s']:.1f} simulated s, {m['completed']:,} completed")
    print(f"  fleet sampling (table, cells, availability): {m['sampling_s']:.2f} s")
    print(f"  wall time of the round:        {m['round_wall_s']:8.1f} s (whole run {m['total_s']:.1f} s)")
    print(f"  simulated sessions per second: {m['sessions_per_s']:8.0f}")
    print(f"  peak memory:                   {peak_gb:8.2f} GB")


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--baseline-devices", type=int, default=20_000,
                        help="fleet of the events baseline; its cells are scaled to keep devices per cell")
    parser.add_argument("--engine", choices=["fast", "auto", "events"], default="fast",
                        help="run.engine of the round under test (events: check this script without the fast clock)")
    args = parser.parse_args()
    baseline_cells = max(1, round(args.cells * args.baseline_devices / args.devices))

    tested, tested_gb = in_child(measure_round, args.devices, args.cells, args.engine)
    baseline, baseline_gb = in_child(measure_round, args.baseline_devices, baseline_cells, "events")

    print(f"cores: {cores()}")
    report("under test", tested, tested_gb)
    report("baseline", baseline, baseline_gb)
    rate = tested["sessions_per_s"]
    print(f"sessions per second, under test / baseline: {rate / baseline['sessions_per_s']:.1f}x")
    print(f"target: >= {TARGET_SESSIONS_PER_S:,} simulated sessions/s on 2 cores: {met(rate >= TARGET_SESSIONS_PER_S)} "
          f"({rate:,.0f} on {cores()} cores, peak {tested_gb:.2f} GB)")
    if args.devices >= TARGET_DEVICES:
        print(f"target: a {TARGET_DEVICES:,}-device round under {TARGET_ROUND_S:.0f} s: "
              f"{met(tested['round_wall_s'] < TARGET_ROUND_S)} ({tested['round_wall_s']:.1f} s, peak {tested_gb:.2f} GB)")
    else:
        print(f"target: a {TARGET_DEVICES:,}-device round under {TARGET_ROUND_S:.0f} s: not judged "
              f"(--devices {args.devices:,})")


if __name__ == "__main__":
    main()
