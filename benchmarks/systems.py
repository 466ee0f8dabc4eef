"""How fast is the clock alone? One systems-only round (no training: timing, bytes and energy) over a large
fleet, every available device invited. Prints the wall time of the round, simulated client sessions per
wall second, and the peak memory of the process.

    python benchmarks/systems.py [--devices 1000000] [--cells 1000]
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

from scenarios.loader import load_scenario
from scenarios.assembly import build_fleet
from scenarios.runner import RunOptions, run_scenario


def fleet_sampling_seconds(scenario) -> float:
    start = time.perf_counter()
    build_fleet(scenario, num_data_clients=664)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1_000_000)
    parser.add_argument("--cells", type=int, default=1000)
    args = parser.parse_args()
    scenario = load_scenario("quickstart", [
        "name=systems_benchmark", "run.mode=systems", "run.rounds=1", f"fleet.size={args.devices}",
        f"run.clients_per_round={args.devices}", "run.over_selection=1.0", "run.deadline_s=3600",
        f"network.cells={args.cells}", "output.report=false",
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
    total = time.perf_counter() - start
    round_wall = stamps[1] - stamps[0]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"fleet: {args.devices:,} devices in {args.cells} cells; {sessions:,} sessions in one round")
    print(f"round: {rounds['duration_s'].iloc[1]:.1f} simulated s, {rounds['completed'].iloc[1]:,} completed")
    print(f"fleet sampling (table, cells, availability): {sampling_s:.2f} s")
    print(f"wall time of the round:       {round_wall:8.1f} s (whole run {total:.1f} s)")
    print(f"simulated sessions per second: {sessions / round_wall:8.0f}")
    print(f"peak memory:                   {peak_gb:8.2f} GB")


if __name__ == "__main__":
    main()
