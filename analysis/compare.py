"""Several runs side by side: loss against simulated time and against uplink bytes, one colour per run, and
a table of what it took each run to reach a target loss."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.recorder import load_run
from analysis.report import with_cumulative


def to_target(rounds: pd.DataFrame, target: float | None) -> dict:
    """Simulated time, uplink bytes and energy until the held-out loss first reaches `target` (NaN: never)."""
    rounds = with_cumulative(rounds)
    hit = rounds[rounds["eval_loss"] <= target] if target is not None else rounds.iloc[0:0]
    first = hit.iloc[0] if len(hit) else None
    nan = float("nan")
    return {
        "time_to_target_s": float(first["t_end"]) if first is not None else nan,
        "uplink_bytes_to_target": float(first["cum_bytes_up"]) if first is not None else nan,
        "energy_to_target_j": float(first["cum_energy_j"]) if first is not None else nan,
    }


def comparison_table(runs: dict[str, Path], target: float | None = None) -> pd.DataFrame:
    rows = []
    for label, run_dir in runs.items():
        rounds, clients, summary = load_run(run_dir)
        evaluated = rounds.dropna(subset=["eval_loss"])
        rows.append({
            "run": label,
            "strategy": summary.get("strategy"),
            "versions": int(rounds["version"].iloc[-1]),
            "simulated_s": float(rounds["t_end"].iloc[-1]),
            "final_loss": float(evaluated["eval_loss"].iloc[-1]),
            "final_personal_loss": float(evaluated["personal_loss"].iloc[-1]) if "personal_loss" in evaluated
            else np.nan,
            "uplink_bytes": int(rounds["bytes_up"].sum()),
            "updates_aggregated": int(rounds["completed"].sum()),
            **to_target(rounds, target),
        })
    return pd.DataFrame(rows)


def overlay(runs: dict[str, Path], x: str, y: str, title: str, x_title: str, y_title: str,
            target: float | None = None) -> go.Figure:
    fig = go.Figure()
    for label, run_dir in runs.items():
        rounds = with_cumulative(load_run(run_dir)[0]).dropna(subset=[y])
        fig.add_scatter(x=rounds[x], y=rounds[y], mode="lines+markers", name=label)
    if target is not None:
        fig.add_hline(y=target, line_dash="dot", annotation_text=f"target {target}")
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title, height=400)
    return fig


def comparison_figures(runs: dict[str, Path], target: float | None = None) -> list[go.Figure]:
    loss = "held-out loss (nats/token)"
    return [
        overlay(runs, "t_end", "eval_loss", "Held-out loss against simulated time", "simulated time (s)", loss,
                target),
        overlay(runs, "cum_bytes_up", "eval_loss", "Held-out loss against cumulative uplink bytes",
                "uplink bytes", loss, target),
        overlay(runs, "t_end", "personal_loss", "Loss on devices' own held-out text, with their personal part",
                "simulated time (s)", loss),
    ]


def write_page(path: Path, title: str, sections: list[tuple[str, str, pd.DataFrame, list[go.Figure]]]) -> Path:
    """One self-contained page: per section a heading, a paragraph, a table and figures."""
    body, first = [], True
    for heading, text, table, figures in sections:
        body.append(f"<h2>{html.escape(heading)}</h2><p>{html.escape(text)}</p>")
        body.append(table.to_html(index=False, float_format=lambda v: f"{v:,.4g}", na_rep="not reached"))
        for fig in figures:
            body.append(fig.to_html(full_html=False, include_plotlyjs=first))
            first = False
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse}"
            "th,td{padding:3px 10px;border-bottom:1px solid #ddd;text-align:right}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>" + "".join(body) + "</body></html>")
    path.write_text(page, encoding="utf-8")
    return path
