"""How long does `fedfleet plan` take on scenarios/capacity_planning.yaml (1,000,000 devices, 1,000 cells)?
Prints the wall time, the probes run, seconds per probe, the peak memory of the process and the answer; with
a horizon (--set plan.horizon_h=24), its wall time, its rounds and its busy hour too.

    python benchmarks/plan.py [--scale 10] [--set plan.rounds=5 ...] [--out DIR] [--address ADDR]

--scale F divides the fleet, the cells and K by F, so devices per cell and reports per cell stay the same.
--address runs the probes and the horizon as Ray tasks on that cluster (the peak memory is then this
process's, the driver's, alone).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

from scenarios.plan import run_plan
from analysis.plan_report import format_plan
from scenarios.loader import load_scenario


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1, help="divide fleet.size, network.cells and K by this")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any scenario field")
    parser.add_argument("--out", type=Path, help="keep the plan folder here (default: a temporary one)")
    parser.add_argument("--address", help="run the plan's runs as Ray tasks on this cluster ('auto' or host:port)")
    args = parser.parse_args()
    base = load_scenario("capacity_planning")
    shrink = [f"fleet.size={base.fleet.size // args.scale}", f"network.cells={max(1, base.network.cells // args.scale)}",
              f"run.clients_per_round={max(1, base.run.clients_per_round // args.scale)}"] if args.scale > 1 else []
    scenario = load_scenario("capacity_planning", shrink + args.set)

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = run_plan(scenario, args.out or Path(tmp) / "plan", address=args.address)
        wall = time.perf_counter() - start
        plan = json.loads((out / "plan.json").read_text())
    probes = len(plan["probes"])
    print(format_plan(plan))
    print()
    print(f"fleet: {scenario.fleet.size:,} devices in {scenario.network.cells:,} cells, K = "
          f"{scenario.run.clients_per_round:,}, {scenario.plan.rounds} rounds per probe")
    print(f"wall time:         {wall:8.1f} s")
    print(f"probes:            {probes:8d}")
    print(f"seconds per probe: {sum(p['wall_s'] for p in plan['probes']) / probes:8.1f}")
    print(f"peak memory:       {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:8.2f} GB")
    answer = "not reachable" if plan["answer_mhz"] is None else f"{plan['answer_mhz']:.3g} MHz per cell"
    print(f"answer:            {answer} ({plan['status']})")
    horizon = plan["horizon"]
    if horizon:
        print(f"horizon:           {horizon['hours']} simulated h at {horizon['uplink_mhz']:g} MHz, "
              f"{horizon['rounds']:,} rounds, {horizon['wall_s']:.1f} s wall, busy hour "
              f"{horizon['busy_hour_of_day']:02d}:00")


if __name__ == "__main__":
    main()
