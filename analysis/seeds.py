"""Runs of one scenario that differ only in seed: how much of a difference is seed noise. A seed group's figures
as the mean over its seeds with a 95% confidence interval (analysis/intervals.py), and its held-out loss
curves as a mean with a 95% band. Comparisons (analysis/compare.py) find the groups among their runs by their
resolved scenarios; sweeps over seeds (analysis/sweep_report.py) know them from the grid.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import yaml

from analysis import figures as fg
from analysis.detection import detection_columns
from analysis.intervals import curve_band, interval_table
from analysis.metrics import final_loss, loss_gain, to_target
from analysis.page import fmt

# Scenario fields that may differ between the runs of a seed group: where and how a run ran changes none of
# its numbers (README: a scenario and a seed give the same numbers on one worker or many).
NOT_COMPARED = ("seed", "output", "runtime", "git_sha")
SEED_METRICS = {  # seed_table column -> what the page calls its mean and interval
    "final_loss": "final held-out loss",
    "loss_gain": "loss gain (1 - final / base)",
    "simulated_s": "simulated time (s)",
    "bytes_up": "uplink bytes",
    "energy_j": "fleet energy (J)",
    "time_to_target_s": "simulated time to target (s)",
    "uplink_bytes_to_target": "uplink bytes to target",
    "energy_to_target_j": "fleet energy to target (J)",
    "completion_rate": "completion rate",
    "uplink_fraction_of_full": "LoRA uplink, share of full-model fine-tuning",
}
#: Fault-detection figures (analysis/detection.py) a group gets where its runs scored cell-site logs.
DETECTION_SEED_METRICS = {
    "detection_auroc_personal": "detection AUROC at the end (sites' own adapters)",
    "detection_auroc_base": "detection AUROC, base model",
    "detection_auroc_local": "detection AUROC, local-only",
    "time_to_detection_target_s": "simulated time to detection target (s)",
    "uplink_bytes_to_detection_target": "uplink bytes to detection target",
}
TO_TARGET = ("time_to_target_s", "uplink_bytes_to_target", "energy_to_target_j", "time_to_detection_target_s",
             "uplink_bytes_to_detection_target")
BAND_VIEWS = (  # x column of the rounds (with_cumulative columns), what the title calls it, axis title
    ("t_end", "simulated time", "simulated time (s)"),
    ("version", "server version", "server version"),
    ("cum_bytes_up", "cumulative uplink bytes", "uplink bytes, cumulative"),
    ("cum_energy_j", "cumulative fleet energy", "fleet energy (J), cumulative"),
)
SEEDS_ABOUT = ("Each cell: the mean over the group's seeds and, in brackets, the 95% confidence interval of "
               "that mean (Student t with n - 1 degrees of freedom). A seed that did not reach the target is "
               "left out of the figures to target, not counted as zero: their mean and interval are over the "
               "seeds that reached it, and 'reached target' says how many did. The bands: each seed's held-out "
               "loss curve interpolated onto a common grid over the range every seed covers, the mean line and "
               "its pointwise 95% interval shaded.")


@dataclass(frozen=True)
class SeedGroup:
    """Runs of one scenario that differ only in seed; its band takes `colour`."""
    label: str
    colour: str
    seeds: tuple[int, ...]
    rounds: tuple[pd.DataFrame, ...]  # one per seed, with analysis.metrics.with_cumulative's columns


def resolved_scenario(run_dir: Path) -> dict | None:
    """The run's scenario.resolved.yaml as a tree; None where the folder has none."""
    path = Path(run_dir) / "scenario.resolved.yaml"
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def flatten(tree: dict, prefix: str = "") -> dict[str, str]:
    """'section.field' -> the value as compact JSON, for every leaf (a list is one leaf)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return out


def seed_groups(scenarios: list[dict | None]) -> list[list[int]]:
    """Indices of the runs whose scenarios differ only in seed (and in NOT_COMPARED), groups of two or more
    in order of their first run. A run repeating a seed already in its group adds no seed and is left out."""
    groups: dict[str, list[int]] = {}
    for i, tree in enumerate(scenarios):
        if tree is None:
            continue
        key = json.dumps({k: v for k, v in tree.items() if k not in NOT_COMPARED}, sort_keys=True)
        members = groups.setdefault(key, [])
        if tree.get("seed") not in [scenarios[j].get("seed") for j in members]:
            members.append(i)
    return [members for members in groups.values() if len(members) >= 2]


def group_labels(scenarios: list[dict]) -> list[str]:
    """Each group's name: the fields whose values tell the groups apart and that it has
    ('strategy.name=fedbuff, strategy.buffer_size=10'), or the scenario's name where that leaves nothing."""
    flat = [flatten({k: v for k, v in tree.items() if k not in NOT_COMPARED}) for tree in scenarios]
    fields = sorted({f for f in set().union(*flat) if len({t.get(f) for t in flat}) > 1})
    labels = [", ".join(f"{f}={shown_value(t[f])}"[:80] for f in fields if f in t) for t in flat]
    return [label or str(tree.get("name", "runs")) for label, tree in zip(labels, scenarios)]


def shown_value(text: str) -> str:
    """A flattened value as a label shows it: strings without their JSON quotes."""
    value = json.loads(text)
    return value if isinstance(value, str) else text


def seed_row(run, target: float | None) -> dict:
    """The SEED_METRICS of one run (an analysis.compare.Run), and its DETECTION_SEED_METRICS where it has
    them; NaN where not measured or not reached."""
    rounds, summary = run.rounds, run.summary
    detection = detection_columns(rounds, summary)
    return {
        "final_loss": final_loss(rounds),
        "loss_gain": loss_gain(summary),
        "simulated_s": float(rounds["t_end"].iloc[-1]),
        "bytes_up": float(rounds["bytes_up"].sum()),
        "energy_j": float(rounds["energy_j"].sum()),
        **{k: v for k, v in to_target(rounds, target).items() if k in SEED_METRICS},
        "completion_rate": math.nan if summary.get("completion_rate") is None else summary["completion_rate"],
        "uplink_fraction_of_full": summary.get("uplink_fraction_of_full") or math.nan,
        **{k: v for k, v in detection.items() if k in DETECTION_SEED_METRICS},
    }


def seed_metrics(columns) -> dict[str, str]:
    """SEED_METRICS, and the DETECTION_SEED_METRICS among `columns` (of the rows, or of their seed_table, whose
    metric C has C_n): column -> heading."""
    return SEED_METRICS | {k: v for k, v in DETECTION_SEED_METRICS.items() if k in columns or f"{k}_n" in columns}


def seed_table(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One row per seed group of `rows` (one row per seed, seed_metrics columns): `seeds`, and per metric
    its count measured, mean, standard deviation and 95% interval (analysis.intervals.interval_table)."""
    return interval_table(rows, by, list(seed_metrics(rows.columns)))


def interval_cell(row, column: str, show=fmt) -> str:
    """One seed_table row's `column` as 'mean [low, high]', each number written by `show`."""
    n, mean, low, high = (getattr(row, f"{column}_{k}") for k in ("n", "mean", "low", "high"))
    if n == 0:
        return "not reached" if column in TO_TARGET else "not measured"
    return show(mean) + (f" [{show(low)}, {show(high)}]" if n >= 2 else " (one seed: no interval)")


def interval_text(table: pd.DataFrame, column: str) -> list[str]:
    """interval_cell per row, and where fewer seeds measured it than the group has, how many did."""
    cells = []
    for row in table.itertuples(index=False):
        cell, n = interval_cell(row, column), getattr(row, f"{column}_n")
        cells.append(cell if n in (0, row.seeds) or column in TO_TARGET else f"{cell}, {n} of {row.seeds} seeds")
    return cells


def shown_seed_table(table: pd.DataFrame, first: list[str]) -> pd.DataFrame:
    """seed_table as the page shows it: the `first` columns as they are (the group, the seeds), 'reached
    target' (k of n), then each metric as 'mean [95% interval]'."""
    shown = table[first].astype(object)
    for column, what in (("time_to_target_s", "reached target"),
                         ("time_to_detection_target_s", "reached detection target")):
        if f"{column}_n" in table:
            shown[what] = [f"{n} of {s}" for n, s in zip(table[f"{column}_n"], table["seeds"])]
    for column, heading in seed_metrics(table.columns).items():
        shown[heading] = interval_text(table, column)
    return shown


def loss_curves(rounds: tuple[pd.DataFrame, ...], x: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each seed's held-out loss against `x`, at its evaluated versions."""
    measured = [r.dropna(subset=["eval_loss"]) for r in rounds]
    return [(r[x].to_numpy(np.float64), r["eval_loss"].to_numpy(np.float64)) for r in measured]


def seed_band_figures(groups: list[SeedGroup], target: float | None = None) -> list[go.Figure]:
    """The held-out loss against server version, simulated time, cumulative uplink bytes and cumulative
    energy: per group, the mean over its seeds and the 95% band; a figure no group has a band for is left out."""
    figures = []
    for x, what, x_title in BAND_VIEWS:
        fig = go.Figure()
        for group in groups:
            band = curve_band(loss_curves(group.rounds, x))
            if band is not None:
                name = f"{group.label} ({band.n} seeds)"
                fig.add_traces(fg.band_traces(band.x, band.mean, band.low, band.high, name, group.colour))
        if fig.data:
            fg.add_target(fig, target)
            fig.update_layout(showlegend=True)
            figures.append(fg.layout(fig, f"Seeds: held-out loss against {what}, mean over seeds and 95% band",
                                     x_title, fg.LOSS_AXIS))
    return figures


def seed_section(runs: list, scenarios: list[dict | None], target: float | None):
    """The page section over the seed groups among `runs` (analysis.compare.Run); None where no two runs differ
    only in seed."""
    groups = seed_groups(scenarios)
    if not groups:
        return None
    labels = group_labels([scenarios[g[0]] for g in groups])
    rows = pd.DataFrame([{"group": label, **seed_row(runs[i], target)} for g, label in zip(groups, labels)
                         for i in g])
    table = shown_seed_table(seed_table(rows, ["group"]), ["group", "seeds"])
    bands = [SeedGroup(label, runs[g[0]].colour, tuple(scenarios[i].get("seed") for i in g),
                       tuple(runs[i].rounds for i in g)) for g, label in zip(groups, labels)]
    members = "; ".join(f"{b.label}: {', '.join(runs[i].label for i in g)} (seeds "
                        f"{', '.join(map(str, b.seeds))})" for g, b in zip(groups, bands))
    text = (f"Runs whose scenarios differ only in seed: {members}. {SEEDS_ABOUT} A group's band has the colour "
            "of its first run.")
    return "Seed groups", text, table, seed_band_figures(bands, target)
