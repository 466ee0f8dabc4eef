"""report.html: what a run shows a person. Self-contained (plotly.js inlined once), opens offline."""

from __future__ import annotations

import html
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go

from analysis.recorder import load_run


def loss_figure(rounds: pd.DataFrame, x: str, title: str, x_title: str) -> go.Figure:
    """The global held-out loss and, on a fixed sample of devices' own held-out text, the loss with each
    device's personal part (personalised strategies) and with the global adapter alone."""
    evaluated = rounds.dropna(subset=["eval_loss"])
    fig = go.Figure(go.Scatter(x=evaluated[x], y=evaluated["eval_loss"], mode="lines+markers",
                               name="global, shared held-out windows"))
    if "personal_loss" in evaluated:
        fig.add_scatter(x=evaluated[x], y=evaluated["personal_loss"], mode="lines+markers",
                        name="devices' own text, with their personal part")
        if not (evaluated["personal_loss"] == evaluated["personal_global_loss"]).all():
            fig.add_scatter(x=evaluated[x], y=evaluated["personal_global_loss"], mode="lines+markers",
                            name="devices' own text, global adapter alone")
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title="held-out loss (nats/token)", height=380)
    return fig


def staleness_figure(clients: pd.DataFrame) -> go.Figure:
    arrived = clients.loc[clients["staleness"] >= 0, "staleness"]
    fig = go.Figure(go.Histogram(x=arrived))
    fig.update_layout(title="Staleness of arrived updates (versions published while they trained)",
                      xaxis_title="staleness", yaxis_title="updates", height=380)
    return fig


def outcome_figure(clients: pd.DataFrame) -> go.Figure:
    counts = clients.groupby(["round", "outcome"]).size().unstack(fill_value=0)
    fig = go.Figure([go.Bar(x=counts.index, y=counts[c], name=c) for c in counts.columns])
    fig.update_layout(barmode="stack", title="How each invited session ended", xaxis_title="round",
                      yaxis_title="sessions", height=380)
    return fig


def class_figure(clients: pd.DataFrame) -> go.Figure:
    rate = clients.assign(done=clients["outcome"].eq("completed")).groupby("device_class")["done"].mean()
    fig = go.Figure(go.Bar(x=rate.index, y=rate.values))
    fig.update_layout(title="Completion rate per device class", yaxis_title="share of sessions completed",
                      yaxis_range=[0, 1], height=380)
    return fig


def duration_figure(clients: pd.DataFrame) -> go.Figure:
    """Session time from invitation to report (completed) or to the end (others), per class."""
    duration = clients["t_end"] - clients["t_start"]
    fig = go.Figure([go.Box(y=duration[clients["device_class"] == c], name=c, boxpoints=False)
                     for c in sorted(clients["device_class"].unique())])
    fig.update_layout(title="Session duration per device class", yaxis_title="simulated seconds",
                      yaxis_type="log", height=380)
    return fig


def drop_figure(clients: pd.DataFrame) -> go.Figure:
    reasons = clients.loc[clients["outcome"] != "completed"].groupby(["outcome", "device_class"]).size()
    reasons = reasons.unstack(fill_value=0)
    fig = go.Figure([go.Bar(x=reasons.index, y=reasons[c], name=c) for c in reasons.columns])
    fig.update_layout(barmode="stack", title="Why sessions did not report", yaxis_title="sessions", height=380)
    return fig


def cell_figure(clients: pd.DataFrame) -> go.Figure:
    # bytes_down_air: what the cell sent (a multicast counts once, not once per receiver)
    load = clients.groupby("cell")[["bytes_up", "bytes_down_air"]].sum() / 1e6
    fig = go.Figure([go.Bar(x=load.index, y=load["bytes_up"], name="uplink"),
                     go.Bar(x=load.index, y=load["bytes_down_air"], name="downlink")])
    fig.update_layout(barmode="group", title="Load per cell", xaxis_title="cell", yaxis_title="MB", height=380)
    return fig


def with_cumulative(rounds: pd.DataFrame) -> pd.DataFrame:
    return rounds.assign(
        cum_bytes_up=rounds["bytes_up"].cumsum(),
        cum_bytes_down=rounds["bytes_down"].cumsum(),
        cum_energy_j=rounds["energy_j"].cumsum(),
    )


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    keys = [
        ("scenario", "scenario"),
        ("strategy", "strategy"),
        ("rounds", "rounds run"),
        ("simulated_time_s", "simulated time (s)"),
        ("base_eval_loss", "held-out loss of the base model"),
        ("final_eval_loss", "held-out loss at the end"),
        ("final_personal_loss", "loss on devices' own text, with their personal part, at the end"),
        ("completion_rate", "share of invited sessions that reported"),
        ("mean_round_s", "mean round duration (s)"),
        ("bytes_up", "uplink bytes"),
        ("bytes_down", "downlink bytes"),
        ("energy_j", "fleet energy (J)"),
        ("trained_model", "trained model (host)"),
        ("emulated_model", "emulated model (timing, memory, bytes)"),
        ("adapter_params", "adapter parameters (emulated model)"),
        ("training_memory_gb", "peak training memory per device (GB)"),
        ("eligible_devices", "devices with enough memory"),
        ("fleet_size", "fleet size"),
        ("wall_s", "wall time of the emulation (s)"),
    ]
    return [(label, _fmt(summary[k])) for k, label in keys if k in summary]


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    rounds, clients, summary = load_run(run_dir)
    rounds = with_cumulative(rounds)
    figures = []
    if rounds["eval_loss"].notna().any():
        figures += [
            loss_figure(rounds, "t_end", "Held-out loss against simulated time", "simulated time (s)"),
            loss_figure(rounds, "cum_bytes_up", "Held-out loss against cumulative uplink bytes", "uplink bytes"),
        ]
    if len(clients):
        figures += [outcome_figure(clients), drop_figure(clients), class_figure(clients),
                    duration_figure(clients), cell_figure(clients)]
        if "staleness" in clients and (clients["staleness"] > 0).any():
            figures.append(staleness_figure(clients))
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures)]
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in summary_rows(summary))
    title = html.escape(f"fedfleet run: {summary.get('scenario', run_dir.name)}")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:1100px}"
        "table{border-collapse:collapse}th,td{padding:3px 12px;border-bottom:1px solid #ddd;text-align:left}"
        "</style></head><body>"
        f"<h1>{title}</h1><p>Times are simulated seconds; wall time is the host's.</p><table>{table}</table>"
        + "".join(parts)
        + "</body></html>"
    )
    out = run_dir / "report.html"
    out.write_text(page, encoding="utf-8")
    return out
