"""The headline physical figures of run and plan folders, side by side: what a change to the models moved.

    python benchmarks/fidelity_table.py BEFORE_RUN AFTER_RUN [BEFORE_RUN AFTER_RUN ...]
    python benchmarks/fidelity_table.py --plan BEFORE_PLAN AFTER_PLAN

For a run: energy per session and per participating device (and its compute and radio parts, compute being
the class's compute power over the training time), the radio's mean power while on the air, mean download,
training and upload time of the sessions that reported, completion rate per device class, and the 95th percentile of the round duration. For a plan
(`fedfleet plan`): the answer (uplink MHz per cell), the baseline probe's p95, energy per device per day and
the cells' daily load. Each figure is printed with the relative change from the first folder to the second.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from fleet.devices import CATALOG


def run_figures(run: Path) -> dict[str, float]:
    clients = pd.read_parquet(run / "clients.parquet")
    rounds = pd.read_parquet(run / "rounds.parquet")
    done = clients[clients["outcome"] == "completed"]
    compute_j = clients["device_class"].map({name: c.compute_power_w for name, c in CATALOG.items()}) * clients["train_s"]
    radio_j = clients["energy_j"] - compute_j
    air_s = clients["download_s"] + clients["upload_s"]
    figures = {
        "energy per session (J)": clients["energy_j"].mean(),
        "energy per participating device (J)": clients.groupby("device")["energy_j"].sum().mean(),
        "compute energy per session (J)": compute_j.mean(),
        "radio energy per session (J)": radio_j.mean(),
        "radio power on the air, mean of sessions (W)": (radio_j / air_s)[air_s > 0].mean(),
        "mean download time, reports (s)": done["download_s"].mean(),
        "mean train time, reports (s)": done["train_s"].mean(),
        "mean upload time, reports (s)": done["upload_s"].mean(),
        "p95 round time (s)": float(np.percentile(rounds.loc[rounds["round"] > 0, "duration_s"], 95)),
    }
    completion = clients.groupby("device_class")["outcome"].apply(lambda o: (o == "completed").mean())
    figures.update({f"completion, {name}": rate for name, rate in completion.items()})
    return figures


def plan_figures(plan: Path) -> dict[str, float]:
    p = json.loads((plan / "plan.json").read_text())
    figures = {
        "answer: uplink MHz per cell": p["answer_mhz"],
        "p95 round time at the whole carrier (s)": p["baseline"]["percentiles_s"]["p95"],
        "energy per device per day (Wh)": p["energy_wh_per_device_per_day"],
        "uplink GB per cell per day": p["cells_per_day"]["uplink_gb_mean"],
        "downlink GB per cell per day": p["cells_per_day"]["downlink_gb_mean"],
    }
    for row in p["classes"]:
        figures[f"Wh per device per day, {row['device_class']}"] = row["energy_wh_per_device_per_day"]
        figures[f"completion, {row['device_class']}"] = row["completion_rate"]
    return figures


def table(before: dict[str, float], after: dict[str, float]) -> str:
    lines = ["| figure | before | after | change |", "|---|---|---|---|"]
    for key in dict.fromkeys([*before, *after]):
        b, a = (float("nan") if v is None else v for v in (before.get(key), after.get(key)))
        change = (a - b) / b if b else float("nan")
        lines.append(f"| {key} | {b:.4g} | {a:.4g} | {change:+.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="pairs: before, after")
    parser.add_argument("--plan", action="store_true", help="the folders are plan folders")
    args = parser.parse_args()
    if len(args.folders) % 2:
        parser.error("give folders in pairs: before, after")
    figures = plan_figures if args.plan else run_figures
    for before, after in zip(args.folders[::2], args.folders[1::2]):
        print(f"\n{before} -> {after}\n")
        print(table(figures(before), figures(after)))


if __name__ == "__main__":
    main()
