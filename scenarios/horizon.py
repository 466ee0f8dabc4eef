"""A capacity plan's horizon (`plan.horizon_h`): the synchronous rounds of whole simulated hours, back to
back from t = 0 (midnight of the reference time zone), under the classes' daily availability and charging,
and what they look like hour by hour (analysis/horizon.py): round duration, participation, cell load and
the busy hour.

The plan's probes each emulate plan.rounds rounds from midnight, when phones are on charge; the horizon
shows whether the band holds through the day. It runs at the band the plan recommends (its answer, where
the search found one that meets the target), else at the scenario's network.uplink_mhz, and says which. It
is one systems-only run of horizon_h hours into OUT/horizon/, with as many rounds as fit: the clock ends it
(scenarios.runner.RunOptions.until_s), not run.rounds.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from analysis.horizon import HOUR_S, SESSION_COLUMNS, busy_hour, hourly_table
from analysis.plan_report import hour_label
from scenarios.plan_runs import PlanRuns, RunRequest, systems_scenario
from scenarios.schema import Scenario

# run.rounds of the horizon's run: only a bound, as the clock ends the run. A million rounds in a week is a
# round every 0.6 simulated seconds.
MAX_ROUNDS = 1_000_000
BANDS = {"answer": "the band the plan recommends",
         "scenario": "the scenario's network.uplink_mhz, as no band searched meets the target"}


@dataclass(frozen=True)
class Horizon:
    hours: int
    uplink_mhz: float
    band: str  # a key of BANDS: why this band
    run_dir: str  # relative to the plan folder
    rounds: int  # rounds that opened within the horizon
    busy_hour: int  # hours since t = 0
    busy_hour_of_day: int
    hours_meeting_target: int  # hours in which rounds opened and their p95 met the target
    hours_with_rounds: int
    message: str
    wall_s: float
    node: str | None  # the Ray node that ran it; None: this process
    table: list[dict]  # one row per hour, the columns of analysis.horizon.HOUR_COLUMNS


def horizon_band(scenario: Scenario, answer: float | None) -> tuple[float, str]:
    if answer is not None:
        return answer, "answer"
    return scenario.network.uplink_mhz, "scenario"


def horizon_request(scenario: Scenario, out: Path, uplink_mhz: float) -> RunRequest:
    return RunRequest(systems_scenario(scenario, uplink_mhz, MAX_ROUNDS), out / "horizon",
                      scenario.plan.horizon_h * HOUR_S)


def run_horizon(scenario: Scenario, answer: float | None, runs: PlanRuns, out: Path, progress: bool) -> Horizon:
    """Run the horizon into OUT/horizon/ and read its hours."""
    hours = scenario.plan.horizon_h
    mhz, band = horizon_band(scenario, answer)
    request = horizon_request(scenario, out, mhz)
    with tqdm(total=hours, desc=f"horizon at {mhz:g} MHz", unit="simulated h", disable=not progress,
              bar_format="{l_bar}{bar}| {n:.1f}/{total} simulated h [{elapsed}{postfix}]") as bar:
        def advance(row: dict) -> None:  # the bar follows the simulated clock, round by round
            bar.set_postfix(round=row["round"], refresh=False)
            bar.update(min(row["t_end"] / HOUR_S, hours) - bar.n)

        done = runs.finish(request, on_round=advance)
        bar.update(hours - bar.n)
    rounds = pd.read_parquet(request.run_dir / "rounds.parquet")
    sessions = pd.read_parquet(request.run_dir / "clients.parquet", columns=SESSION_COLUMNS)
    table = hourly_table(rounds, sessions, scenario.run.clients_per_round, scenario.network.cells, hours)
    busy = busy_hour(table)
    meeting = int(((table["rounds"] > 0) & (table["p95_s"] <= scenario.plan.round_p95_target_s)).sum())
    with_rounds = int((table["rounds"] > 0).sum())
    message = describe(scenario, table, busy, mhz, band, meeting, with_rounds)
    ended_s = float(rounds["t_end"].max())
    if ended_s < request.until_s:  # the bound on rounds came first (rounds that took no simulated time)
        message += (f" The run stopped at its bound of {MAX_ROUNDS:,} rounds, {ended_s:,.0f} simulated s in: the "
                    "hours after that are empty.")
    horizon = Horizon(hours=hours, uplink_mhz=mhz, band=band, run_dir=str(request.run_dir.relative_to(out)),
                      rounds=int((rounds["round"] > 0).sum()), busy_hour=busy, busy_hour_of_day=busy % 24,
                      hours_meeting_target=meeting, hours_with_rounds=with_rounds, message=message,
                      wall_s=done.wall_s, node=done.node, table=table_records(table))
    if progress:
        print(f"horizon: {horizon.message}", file=sys.stderr, flush=True)
    return horizon


def describe(scenario: Scenario, table: pd.DataFrame, busy: int, mhz: float, band: str, meeting: int,
             with_rounds: int) -> str:
    row = table.iloc[busy]
    quiet = int((table["invited"] == 0).sum())
    return (f"{len(table)} simulated hours from midnight at {mhz:g} MHz of uplink per cell, {BANDS[band]}. The "
            f"p95 round met the {scenario.plan.round_p95_target_s:g} s target in {meeting} of the {with_rounds} "
            f"hours in which rounds opened. "
            + (f"Busy hour: {hour_label(busy)} (hour {busy}), {row['load_mb_mean']:,.1f} MB over the air per cell "
               f"on average, {row['load_mb_peak']:,.1f} MB in cell {int(row['busiest_cell'])}, "
               f"{int(row['invited']):,} devices invited." if row["load_mb_peak"] > 0 else
               "No byte crossed the air in any hour.")
            + (f" In {quiet} hour(s) no device could be invited (none available, charged enough and able to train)."
               if quiet else ""))


def table_records(table: pd.DataFrame) -> list[dict]:
    """JSON-ready rows: numpy scalars as Python numbers (inf and NaN stay floats; plan.json makes them null)."""
    return [{k: (v.item() if isinstance(v, np.generic) else v) for k, v in row.items()}
            for row in table.to_dict("records")]
