"""Fault detection of a run on cell-site logs: how well a site's model, scoring windows of its held-out log
by their loss, tells fault windows from normal ones (AUROC), for the base model, the site trained alone, the
global adapter, the site's own adapter (with its personal part) and that adapter trained on alone for the
same local budget; and how long, in simulated time and bytes, the fleet took to reach a detection target.

    RUN_DIR/detection.parquet   one row per evaluated site: its windows and the five AUROCs
    RUN_DIR/detection.json      the means over the sites, the target and what it took to reach it

rounds.parquet carries `detection_auroc` (global adapter) and `detection_auroc_personal` (each site with its
personal part; the global adapter where a strategy keeps none) at every evaluated version, averaged over the
evaluated sites; version 0 is the base model.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from analysis.figures import layout
from analysis.metrics import with_cumulative
from analysis.page import Section

#: The per-site AUROC columns of detection.parquet and their names in figures and tables.
MODELS = {
    "auroc_base": "base model",
    "auroc_local": "local-only",
    "auroc_global": "global adapter",
    "auroc_personal": "site's own adapter (personal part)",
    "auroc_tuned": "own adapter, then local training",
}
DEPLOYED = "detection_auroc_personal"  # what a site runs: with its personal part, where it keeps one
AUROC_AXIS = "fault-detection AUROC"
HOLD = 3  # evaluated versions a target must hold for to count as reached


def detection_target(rounds: pd.DataFrame, target: float | None) -> tuple[float | None, str]:
    """The detection target and how it was chosen: the scenario's, else halfway from the base model's AUROC
    to the highest reached by the sites' own adapters."""
    if target is not None:
        return float(target), "set by the scenario (data.cellsite.target_auroc)"
    measured = rounds[DEPLOYED].dropna() if DEPLOYED in rounds else pd.Series(dtype=float)
    if measured.empty:
        return None, "not measured"
    base, best = float(measured.iloc[0]), float(measured.max())
    if best <= base:
        return None, f"none: the AUROC never rose above the base model's {base:.3f}"
    return base + (best - base) / 2, f"halfway from the base model's AUROC {base:.3f} to the highest, {best:.3f}"


def to_detection_target(rounds: pd.DataFrame, target: float | None, hold: int = HOLD) -> dict:
    """Simulated time and uplink and downlink bytes until the sites' own adapters reach `target` mean AUROC
    and hold it: at the first evaluated version from which the next `hold` evaluated versions (fewer at the
    end of the run) all score at or above it. A single version's AUROC swings by 0.1 and more as the global
    adapter moves, so a first crossing alone would often time a lucky version. NaN: never, or no target."""
    rounds = with_cumulative(rounds)
    scored = rounds.dropna(subset=[DEPLOYED]) if target is not None and DEPLOYED in rounds else rounds.iloc[0:0]
    above = (scored[DEPLOYED] >= target).to_numpy()
    held = [i for i in range(len(above)) if above[i: i + hold].all()]
    first = scored.iloc[held[0]] if held else None

    def at(column: str) -> float:
        return float(first[column]) if first is not None else math.nan

    return {"time_to_detection_target_s": at("t_end"), "uplink_bytes_to_detection_target": at("cum_bytes_up"),
            "downlink_bytes_to_detection_target": at("cum_bytes_down")}


def detection_summary(rounds: pd.DataFrame, sites: pd.DataFrame, target: float | None) -> dict:
    """Flat figures for summary.json: the mean AUROC of each model over the evaluated sites, the target and
    what it took to reach it."""
    chosen, how = detection_target(rounds, target)
    return {
        "detection_sites": len(sites),
        "detection_windows": int(sites["windows"].sum()),
        "detection_fault_windows": int(sites["fault_windows"].sum()),
        "detection_local_steps": int(sites["local_steps"].iloc[0]) if len(sites) else 0,
        **{f"detection_{column}": float(sites[column].mean()) for column in MODELS},
        # the typical site: per-site AUROCs over a few dozen windows are coarse, and a few sites sit at 0 or 1
        **{f"detection_{column}_median": float(sites[column].median()) for column in MODELS},
        "detection_target_auroc": chosen,
        "detection_target_how": how,
        **to_detection_target(rounds, chosen),
    }


#: summary.json's fault-detection figures that a comparison or sweep table shows, and their headings.
HEADINGS = {
    "detection_auroc_base": "detection AUROC, base model",
    "detection_auroc_local": "detection AUROC, local-only",
    "detection_auroc_personal": "detection AUROC at the end (sites' own adapters)",
    "detection_auroc_tuned": "detection AUROC, own adapter then local training",
    "detection_target_auroc": "detection target (AUROC)",
    "time_to_detection_target_s": "time to detection target (s)",
    "uplink_bytes_to_detection_target": "uplink bytes to detection target",
    "downlink_bytes_to_detection_target": "downlink bytes to detection target",
}


def detection_columns(rounds: pd.DataFrame, summary: dict, target: float | None = None) -> dict:
    """A run's fault-detection figures for a table beside other runs ({} for a run without): its final AUROCs
    and what it took to reach `target` (None: the run's own target)."""
    if "detection_sites" not in summary:
        return {}
    target = summary["detection_target_auroc"] if target is None else target
    finals = {column: summary[column] for column in HEADINGS if column.startswith("detection_auroc")}
    return {**finals, "detection_target_auroc": target, **to_detection_target(rounds, target)}


def write_detection(run_dir: Path, sites: pd.DataFrame, summary: dict) -> None:
    sites.to_parquet(Path(run_dir) / "detection.parquet", index=False)
    (Path(run_dir) / "detection.json").write_text(json.dumps(summary, indent=2, default=float) + "\n")


def load_detection(run_dir: Path) -> tuple[pd.DataFrame, dict] | None:
    """The run's per-site table and summary; None for a run without fault detection."""
    path = Path(run_dir) / "detection.parquet"
    if not path.exists():
        return None
    return pd.read_parquet(path), json.loads((Path(run_dir) / "detection.json").read_text())


def auroc_figure(rounds: pd.DataFrame, summary: dict) -> go.Figure:
    """Mean AUROC over the evaluated sites against simulated time: the global adapter and the sites' own
    adapters, with the base model and local-only training as horizontal lines."""
    rows = rounds.dropna(subset=["detection_auroc"])
    fig = go.Figure(go.Scatter(x=rows["t_end"], y=rows["detection_auroc"], mode="lines+markers",
                               name=MODELS["auroc_global"]))
    if not (rows[DEPLOYED] == rows["detection_auroc"]).all():
        fig.add_scatter(x=rows["t_end"], y=rows[DEPLOYED], mode="lines+markers", name=MODELS["auroc_personal"])
    for column, dash in (("auroc_base", "dot"), ("auroc_local", "dash")):
        fig.add_hline(y=summary[f"detection_{column}"], line_dash=dash,
                      annotation_text=f"{MODELS[column]} {summary[f'detection_{column}']:.3f}")
    if summary.get("detection_target_auroc") is not None:
        fig.add_hline(y=summary["detection_target_auroc"], line_dash="longdashdot", line_color="grey",
                      annotation_text="target", annotation_position="bottom right")
    return layout(fig, "Fault-detection AUROC against simulated time (mean over the evaluated sites)",
                  "simulated time (s)", AUROC_AXIS)


def site_figure(sites: pd.DataFrame) -> go.Figure:
    """Final AUROC of each evaluated site, one box per model, every site a point."""
    fig = go.Figure()
    for column, name in MODELS.items():
        fig.add_box(y=sites[column], name=name, boxpoints="all", jitter=0.3, pointpos=0,
                    text=sites["site"], hovertemplate="%{text}: %{y:.3f}<extra></extra>")
    return layout(fig, "Final fault-detection AUROC per evaluated site", None, AUROC_AXIS, showlegend=False)


def detection_table(summary: dict) -> pd.DataFrame:
    rows = [(f"AUROC, {name}: mean (median site)",
             f"{summary[f'detection_{column}']:.3f} ({summary[f'detection_{column}_median']:.3f})")
            for column, name in MODELS.items()]
    rows += [
        ("evaluated sites", summary["detection_sites"]),
        ("windows scored per version (fault windows)",
         f"{summary['detection_windows']:,} ({summary['detection_fault_windows']:,})"),
        ("local training steps per site (local-only, and after the run)", summary["detection_local_steps"]),
        ("detection target (AUROC)", summary["detection_target_auroc"]),
        ("how the target was chosen", summary["detection_target_how"]),
        ("simulated time to target (s)", summary["time_to_detection_target_s"]),
        ("uplink bytes to target", summary["uplink_bytes_to_detection_target"]),
        ("downlink bytes to target", summary["downlink_bytes_to_detection_target"]),
    ]
    return pd.DataFrame(rows, columns=["", "this run"])


def detection_section(run_dir: Path, rounds: pd.DataFrame) -> Section:
    """The report's "Fault detection" section; empty (left out of the page) for a run without one."""
    found = load_detection(run_dir)
    if found is None:
        return "Fault detection", "", None, []
    sites, summary = found
    text = ("Each evaluated site's model scores fixed windows of the site's held-out log by their mean token "
            "loss; AUROC is the chance that a fault window scores above a normal one (0.5: no better than "
            "chance). Local-only: the site trained alone on its own past from the initial adapter; own adapter, "
            "then local training: the same local steps on the same batches, from the site's adapter at the end "
            "of the run. Means are over the evaluated sites. The target counts as reached at the first evaluated "
            f"version from which the sites' own adapters hold it for {HOLD} evaluated versions.")
    figures = [auroc_figure(rounds, summary), site_figure(sites)] if len(sites) else []
    return "Fault detection", text, detection_table(summary), figures
