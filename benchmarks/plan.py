"""How long does `fedfleet plan` take on scenarios/capacity_planning.yaml (1,000,000 devices, 1,000 cells)?
Runs the plan with the engine under test (run.engine, default fast), then, in the same run, a shorter plan of
the same fleet with the event-driven engine (events, the reference) as the baseline: --baseline-rounds rounds
per probe and, with a horizon, --baseline-hours of it. Prints the plan and, for each, the wall time, the
probes run, seconds per probe and per probe-round, the peak memory of its own process and the answer; with a
horizon (--set plan.horizon_h=24), its wall time, its rounds, seconds per round and its busy hour too. Then
the ratios and the targets (the plan under 60 s; a 24-hour horizon over 1,000,000 devices under 10 minutes).

    python benchmarks/plan.py [--scale 10] [--set plan.rounds=5 ...] [--out DIR] [--address ADDR]
                              [--engine fast] [--baseline-rounds 2] [--baseline-hours 1] [--baseline-scale 1]

--scale F divides the fleet, the cells and K by F, so devices per cell and reports per cell stay the same;
--baseline-scale B divides the baseline's by B more (the events engine's time per round does not scale with
the fleet: a baseline smaller than the plan under test is not like for like). --set applies to both plans,
before the baseline's rounds and hours; --out keeps the plan under test. Each plan runs in a process of its
own (measure.py), so each peak memory is that plan's alone. --address runs the probes and the horizon as Ray
tasks on that cluster (the peak memory is then the driver's alone).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from measure import cores, in_child
from scenarios.plan import run_plan
from analysis.plan_report import format_plan
from scenarios.loader import load_scenario

TARGET_DEVICES = 1_000_000
TARGET_PLAN_S = 60.0
TARGET_HORIZON_H, TARGET_HORIZON_S = 24, 600.0


def shrink(factor: int) -> list[str]:
    """Fields dividing capacity_planning's fleet, cells and K by `factor`."""
    base = load_scenario("capacity_planning")
    return [f"fleet.size={base.fleet.size // factor}", f"network.cells={max(1, base.network.cells // factor)}",
            f"run.clients_per_round={max(1, base.run.clients_per_round // factor)}"] if factor > 1 else []


def measure_plan(fields: list[str], out: Path | None, address: str | None) -> dict:
    """The plan of capacity_planning with `fields` set; run in a child process."""
    scenario = load_scenario("capacity_planning", fields)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        out = run_plan(scenario, out or Path(tmp) / "plan", address=address)
        wall = time.perf_counter() - start
        plan = json.loads((out / "plan.json").read_text())
    return {"plan": plan, "text": format_plan(plan), "wall_s": wall, "engine": scenario.run.engine,
            "fleet": scenario.fleet.size, "cells": scenario.network.cells, "k": scenario.run.clients_per_round,
            "rounds": scenario.plan.rounds}


def per_probe_round(m: dict) -> float:
    probes = m["plan"]["probes"]
    return sum(p["wall_s"] for p in probes) / (len(probes) * m["rounds"])


def per_horizon_round(m: dict) -> float:
    horizon = m["plan"]["horizon"]
    return horizon["wall_s"] / max(1, horizon["rounds"])


def report(title: str, m: dict, peak_gb: float) -> None:
    plan = m["plan"]
    probes = len(plan["probes"])
    print(f"{title}: run.engine={m['engine']}")
    print(f"  fleet: {m['fleet']:,} devices in {m['cells']:,} cells, K = {m['k']:,}, {m['rounds']} rounds per probe")
    print(f"  wall time:               {m['wall_s']:8.1f} s")
    print(f"  probes:                  {probes:8d}")
    print(f"  seconds per probe:       {sum(p['wall_s'] for p in plan['probes']) / probes:8.1f}")
    print(f"  seconds per probe-round: {per_probe_round(m):8.3f}")
    print(f"  peak memory:             {peak_gb:8.2f} GB")
    answer = "not reachable" if plan["answer_mhz"] is None else f"{plan['answer_mhz']:.3g} MHz per cell"
    print(f"  answer:                  {answer} ({plan['status']})")
    horizon = plan["horizon"]
    if horizon:
        print(f"  horizon:                 {horizon['hours']} simulated h at {horizon['uplink_mhz']:g} MHz, "
              f"{horizon['rounds']:,} rounds, {horizon['wall_s']:.1f} s wall, busy hour "
              f"{horizon['busy_hour_of_day']:02d}:00")
        print(f"  seconds per horizon round: {per_horizon_round(m):6.3f}")


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=1, help="divide fleet.size, network.cells and K by this")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="any scenario field")
    parser.add_argument("--out", type=Path, help="keep the plan folder here (default: a temporary one)")
    parser.add_argument("--address", help="run the plan's runs as Ray tasks on this cluster ('auto' or host:port)")
    parser.add_argument("--engine", choices=["fast", "auto", "events"], default="fast",
                        help="run.engine of the plan under test (events: check this script without the fast clock)")
    parser.add_argument("--baseline-rounds", type=int, default=2, help="plan.rounds of the events baseline")
    parser.add_argument("--baseline-hours", type=int, default=1,
                        help="plan.horizon_h of the events baseline, where the plan under test has a horizon")
    parser.add_argument("--baseline-scale", type=int, default=1,
                        help="divide the events baseline's fleet, cells and K by this more")
    args = parser.parse_args()

    tested, tested_gb = in_child(measure_plan, shrink(args.scale) + [f"run.engine={args.engine}"] + args.set,
                                 args.out, args.address)
    horizon = tested["plan"]["horizon"]
    baseline_fields = (shrink(args.scale * args.baseline_scale) + args.set + [f"plan.rounds={args.baseline_rounds}"]
                       + ([f"plan.horizon_h={args.baseline_hours}"] if horizon else []) + ["run.engine=events"])
    baseline, baseline_gb = in_child(measure_plan, baseline_fields, None, args.address)

    print(tested["text"])
    print()
    print(f"cores: {cores()}")
    report("under test", tested, tested_gb)
    report("baseline", baseline, baseline_gb)
    unlike = f" (baseline fleet 1/{args.baseline_scale}: not like for like)" if args.baseline_scale > 1 else ""
    print(f"seconds per probe-round, baseline / under test: {per_probe_round(baseline) / per_probe_round(tested):.1f}x"
          + unlike)
    if horizon:
        print(f"seconds per horizon round, baseline / under test: "
              f"{per_horizon_round(baseline) / per_horizon_round(tested):.1f}x" + unlike)

    full = tested["fleet"] >= TARGET_DEVICES
    changed = f" (with --set {' '.join(args.set)})" if args.set else ""
    plan_s = tested["wall_s"] - (horizon["wall_s"] if horizon else 0.0)
    if full:
        print(f"target: the plan under {TARGET_PLAN_S:.0f} s: {met(plan_s < TARGET_PLAN_S)} ({plan_s:.1f} s"
              f"{' without the horizon' if horizon else ''}, peak {tested_gb:.2f} GB){changed}")
    else:
        print(f"target: the plan under {TARGET_PLAN_S:.0f} s: not judged ({tested['fleet']:,} devices)")
    if horizon:
        target = f"target: a {TARGET_HORIZON_H}-hour horizon over {TARGET_DEVICES:,} devices under " \
                 f"{TARGET_HORIZON_S / 60:.0f} min"
        if full and horizon["hours"] >= TARGET_HORIZON_H:
            print(f"{target}: {met(horizon['wall_s'] < TARGET_HORIZON_S)} ({horizon['wall_s']:.1f} s, "
                  f"peak {tested_gb:.2f} GB for the whole plan){changed}")
        else:
            print(f"{target}: not judged ({horizon['hours']} h over {tested['fleet']:,} devices: "
                  f"{horizon['wall_s']:.1f} s)")


if __name__ == "__main__":
    main()
