"""Several runs side by side: a table of what each run reached and what it took to reach a common target
loss, and the run report's figures overlaid, one colour per run (the same in every figure).

Runs whose resolved scenarios differ only in their seed form a seed group: the page then opens with the groups
(analysis/seeds.py), each figure's mean over the seeds with its 95% interval, and the loss curves as bands.

    write_comparison([RUN_DIR, ...], Path("comparison.html"))      one self-contained page
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis import detection as dt
from analysis import figures as fg
from analysis.metrics import final_loss, losses, to_target, with_cumulative
from analysis.page import PALETTE, write_page
from analysis.recorder import load_run
from analysis.seeds import resolved_scenario, seed_section

__all__ = ["comparison_figures", "comparison_table", "to_target", "write_comparison", "write_page"]

NOT_MEASURED = "not measured"
LOSS_COLUMNS = ("final_loss", "final_personal_loss", "time_to_target_s", "uplink_bytes_to_target",
                "downlink_bytes_to_target", "energy_to_target_j")
HEADINGS = {  # comparison_table column -> what the page calls it
    "versions": "server versions", "simulated_s": "simulated time (s)",
    "final_loss": "final held-out loss", "final_personal_loss": "final loss on devices' own text",
    "uplink_bytes": "uplink bytes", "downlink_bytes": "downlink bytes", "energy_j": "fleet energy (J)",
    "updates_aggregated": "updates aggregated", "time_to_target_s": "time to target (s)",
    "uplink_bytes_to_target": "uplink bytes to target", "downlink_bytes_to_target": "downlink bytes to target",
    "energy_to_target_j": "fleet energy to target (J)", "uplink_fraction_of_full": "uplink, share of full-model",
    **dt.HEADINGS,
}


@dataclass(frozen=True)
class Run:
    """One run folder, loaded; `colour` is its colour in every figure."""
    label: str
    colour: str
    rounds: pd.DataFrame  # with analysis.metrics.with_cumulative's columns
    clients: pd.DataFrame
    summary: dict

    @property
    def measured(self) -> bool:
        return not losses(self.rounds).empty


def load_runs(runs: dict[str, Path]) -> list[Run]:
    """The runs in order, run i coloured PALETTE[i]; NotARunFolder for a folder without rounds.parquet."""
    loaded = []
    for i, (label, run_dir) in enumerate(runs.items()):
        rounds, clients, summary = load_run(run_dir)
        loaded.append(Run(label, PALETTE[i % len(PALETTE)], with_cumulative(rounds), clients, summary))
    return loaded


def default_target(runs: list[Run]) -> float | None:
    """The highest final held-out loss among the runs that measured one, so that every such run reaches it."""
    finals = [final_loss(r.rounds) for r in runs if r.measured]
    return max(finals) if finals else None


def detection_target(runs: list[Run]) -> float | None:
    """The lowest of the runs' own fault-detection targets (runs of one scenario share it); None without."""
    targets = [r.summary.get("detection_target_auroc") for r in runs]
    targets = [t for t in targets if t is not None]
    return min(targets) if targets else None


def unique_labels(run_dirs: list[Path]) -> list[str]:
    """The run folders' names; a name used twice gets ' (2)', ' (3)', ... from its second use on."""
    labels: list[str] = []
    for run_dir in run_dirs:
        label, k = Path(run_dir).name, 1
        while label in labels:
            k += 1
            label = f"{Path(run_dir).name} ({k})"
        labels.append(label)
    return labels


# --- the table ---------------------------------------------------------------------------------------------

def run_row(run: Run, target: float | None, auroc_target: float | None = None) -> dict:
    rounds, summary = run.rounds, run.summary
    personal = rounds["personal_loss"].dropna() if "personal_loss" in rounds else pd.Series(dtype=float)
    return {
        "run": run.label,
        "strategy": summary.get("strategy"),
        "versions": int(rounds["version"].iloc[-1]),
        "simulated_s": float(rounds["t_end"].iloc[-1]),
        "final_loss": final_loss(rounds),
        "final_personal_loss": float(personal.iloc[-1]) if len(personal) else np.nan,
        "uplink_bytes": int(rounds["bytes_up"].sum()),
        "downlink_bytes": int(rounds["bytes_down"].sum()),
        "energy_j": float(rounds["energy_j"].sum()),
        "updates_aggregated": int(rounds["completed"].sum()),
        "target_loss": target if target is not None else np.nan,
        **to_target(rounds, target),
        "uplink_fraction_of_full": float(summary.get("uplink_fraction_of_full") or np.nan),
        **dt.detection_columns(rounds, summary, auroc_target),
    }


def comparison_table(runs: dict[str, Path], target: float | None = None) -> pd.DataFrame:
    """One row per run: strategy, versions, simulated time, final loss, bytes, energy, and simulated time,
    bytes and energy to `target` (None: the highest final loss among the runs). NaN: not measured or not
    reached."""
    loaded = load_runs(runs)
    return _table(loaded, default_target(loaded) if target is None else target)


def _table(runs: list[Run], target: float | None) -> pd.DataFrame:
    return pd.DataFrame([run_row(r, target, detection_target(runs)) for r in runs])


def shown_table(table: pd.DataFrame, runs: list[Run]) -> pd.DataFrame:
    """The table as the page shows it: 'not measured' for the losses of systems-only runs, uplink share in
    percent, the target (the same for every row) left to the text above, headings in words."""
    shown = table.drop(columns="target_loss").astype(object)
    shown.loc[[not r.measured for r in runs], list(LOSS_COLUMNS)] = NOT_MEASURED
    shown["uplink_fraction_of_full"] = [f"{v:.1%}" if pd.notna(v) else "not recorded"
                                        for v in table["uplink_fraction_of_full"]]
    return shown.rename(columns=HEADINGS)


# --- the figures -------------------------------------------------------------------------------------------

def loss_overlay(runs: list[Run], x: str, y: str, title: str, x_title: str, target: float | None) -> go.Figure | None:
    measured = [(r, r.rounds.dropna(subset=[y])) for r in runs if y in r.rounds]
    measured = [(r, rows) for r, rows in measured if len(rows)]
    if not measured:
        return None
    fig = go.Figure([go.Scatter(x=rows[x], y=rows[y], mode="lines+markers", name=r.label,
                                line_color=r.colour, marker_color=r.colour) for r, rows in measured])
    fg.add_target(fig, target)
    return fg.layout(fig, title, x_title, fg.LOSS_AXIS)


def completion_overlay(runs: list[Run]) -> go.Figure | None:
    bars = []
    for r in runs:
        if not r.clients.empty:
            rate = fg.completion_by_class(r.clients)["rate"]
            bars.append(go.Bar(x=rate.index, y=rate, name=r.label, marker_color=r.colour))
    if not bars:
        return None
    return fg.layout(go.Figure(bars), "Completion rate per device class (sessions that reported, of those invited)",
                     "device class", "share of sessions completed", barmode="group", yaxis_range=[0, 1.05])


def round_overlay(runs: list[Run]) -> go.Figure | None:
    boxes = [fg.box({r.label: r.rounds.loc[r.rounds["round"] > 0, "duration_s"]}, r.label, r.colour) for r in runs]
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    return fg.layout(go.Figure(boxes), "Round duration: simulated time from one server version to the next",
                     "run", "simulated seconds")


def battery_overlay(runs: list[Run]) -> go.Figure | None:
    lines = []
    for r in runs:
        columns = list(fg.charge_columns(r.rounds).values())
        if columns:
            lines.append(go.Scatter(x=r.rounds["t_end"], y=r.rounds[columns].mean(axis=1), mode="lines",
                                    name=r.label, line_color=r.colour))
    if not lines:
        return None
    return fg.layout(go.Figure(lines), "Battery charge over time: mean over the battery-powered device classes "
                     "of each class's mean charge", "simulated time (s)", "charge (share of capacity)",
                     yaxis_tickformat=".0%")


def staleness_overlay(runs: list[Run]) -> go.Figure | None:
    bars = []
    for r in runs:
        counts = fg.staleness_counts(r.clients) if not r.clients.empty else ()
        if len(counts):
            bars.append(go.Bar(x=counts.index, y=counts / counts.sum(), name=r.label, marker_color=r.colour))
    if not bars:
        return None
    return fg.layout(go.Figure(bars), "Staleness of arrived updates, asynchronous runs (server versions "
                     "published while they trained)", "staleness (versions)", "share of arrived updates",
                     barmode="group")


def detection_overlay(runs: list[Run]) -> go.Figure | None:
    """Fault-detection AUROC of the sites' own adapters against simulated time, for runs that measured it."""
    lines = [go.Scatter(x=r.rounds["t_end"], y=r.rounds[dt.DEPLOYED], mode="lines+markers", name=r.label,
                        line_color=r.colour, marker_color=r.colour) for r in runs if dt.DEPLOYED in r.rounds]
    if not lines:
        return None
    fig = go.Figure(lines)
    fg.add_target(fig, detection_target(runs))
    return fg.layout(fig, "Fault-detection AUROC of the sites' own adapters against simulated time (mean over "
                     "the evaluated sites)", "simulated time (s)", dt.AUROC_AXIS)


def _figures(runs: list[Run], target: float | None) -> list[go.Figure]:
    figures = [loss_overlay(runs, x, "eval_loss", title, x_title, target) for x, title, x_title in fg.LOSS_VIEWS]
    figures += [
        loss_overlay(runs, "t_end", "personal_loss", "Loss on devices' own held-out text, with their personal "
                     "part, against simulated time", "simulated time (s)", None),
        detection_overlay(runs), completion_overlay(runs), round_overlay(runs), battery_overlay(runs), staleness_overlay(runs),
    ]
    figures = [f for f in figures if f is not None]
    for fig in figures:
        fig.update_layout(showlegend=True)  # name the run even when it is alone in a figure
    return figures


def comparison_figures(runs: dict[str, Path], target: float | None = None) -> list[go.Figure]:
    """The run report's figures overlaid, run i in PALETTE[i] everywhere; loss figures leave out runs
    without a measured loss, and a figure no run has data for is left out."""
    loaded = load_runs(runs)
    return _figures(loaded, default_target(loaded) if target is None else target)


def write_comparison(run_dirs: list[Path], out: Path, target: float | None = None) -> Path:
    """One self-contained page comparing the runs in `run_dirs` (labelled by folder name), written to `out`
    (an .html file). `target`: the loss that time, bytes and energy are measured to; None: the highest final
    loss among the runs, so that every run that measured a loss reaches it."""
    runs = load_runs(dict(zip(unique_labels(run_dirs), run_dirs)))
    chosen = target if target is not None else default_target(runs)
    if chosen is None:
        about = "No run measured a held-out loss (systems-only runs): there is no target."
    else:
        how = "as given" if target is not None else "the highest final loss among the runs, so every run reaches it"
        about = (f"Target held-out loss: {chosen:.4g} ({how}). Time, bytes and energy to target: at the first "
                 "evaluated server version at or below it.")
    auroc_target = detection_target(runs)
    if auroc_target is not None:
        about += (f" Fault-detection target AUROC: {auroc_target:.3g} (the lowest of the runs' own targets); "
                  f"reached at the first evaluated version from which it holds for {dt.HOLD} versions.")
    table = shown_table(_table(runs, chosen), runs)
    figures = _figures(runs, chosen)
    seeds = seed_section(runs, [resolved_scenario(d) for d in run_dirs], chosen)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    intro = "Times are simulated seconds. Each run has one colour in every figure."
    sections = ([seeds] if seeds else []) + [("Runs", about, table, figures)]
    return write_page(out, f"fedfleet: {len(runs)} runs compared", sections, intro)
