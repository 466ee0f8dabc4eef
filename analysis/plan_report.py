"""What a capacity plan shows: the printed table, plan.json, plan.csv (per device class), plan_hours.csv (per
hour of a horizon) and plan.html.

Everything here reads the plan as plan.json holds it (a dict; null where a duration is unbounded), so a
plan folder can be printed again without rerunning it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.page import write_page

PERCENTILE_NAMES = ("p50", "p90", "p95", "p99", "max")


def seconds(value: float | None) -> str:
    """A duration, 'unbounded' for a round short of K reports (inf, or null in plan.json)."""
    if value is None or value == float("inf"):
        return "unbounded"
    return f"{value:,.1f} s" if value < 1000 else f"{value:,.0f} s"


def number(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def text_table(header: list[str], rows: list[list[str]], indent: str = "  ") -> str:
    """Columns padded to their widest cell; the first left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [indent + "  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                                for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
             for row in [header, *rows]]
    return "\n".join(lines)


def class_rows(plan: dict) -> list[list[str]]:
    return [[c["device_class"], f"{c['devices']:,}", f"{c['eligible']:,}", number(c["sessions_per_device_per_day"]),
             number(c["reports_per_device_per_day"]), percent(c["completion_rate"]), percent(c["share_of_reports"]),
             number(c["energy_wh_per_device_per_day"]), percent(c["battery_share_per_day"]),
             percent(c["battery_share_per_session"])] for c in plan["classes"]]


CLASS_HEADER = ["class", "devices", "eligible", "sessions", "reports", "completion", "of reports", "Wh",
                "battery/day", "battery/session"]
PROBE_HEADER = ["uplink MHz", "p95", "short rounds", "meets target", "wall s"]
PERCENTILE_HEADER = [*PERCENTILE_NAMES, "short rounds"]


def probe_rows(plan: dict) -> list[list[str]]:
    return [[f"{p['uplink_mhz']:g}", seconds(p["percentiles_s"]["p95"]), str(p["short_rounds"]),
             "yes" if p["meets"] else "no", f"{p['wall_s']:.0f}"] for p in plan["probes"]]


def percentile_row(probe: dict) -> list[str]:
    return ([seconds(probe["percentiles_s"][n]) for n in PERCENTILE_NAMES]
            + [f"{probe['short_rounds']} of {len(probe['durations_s'])}"])


def format_plan(plan: dict) -> str:
    """The plain-text summary printed by `fedfleet plan` (plan is what plan.json holds)."""
    base, cells = plan["baseline"], plan["cells_per_day"]
    lines = [
        f"Capacity plan: {plan['scenario']} (seed {plan['seed']})",
        f"{plan['fleet_size']:,} devices in {plan['cells']:,} cells; K = {plan['clients_per_round']:,} reports per "
        f"round ({plan['invited_per_round']:,} invited), deadline {plan['deadline_s']:g} s; emulated model "
        f"{plan['emulated_model']}",
        f"{plan['rounds_per_probe']} systems-only rounds per probe, back to back; per day = emulated totals x "
        f"86,400 s / {plan['simulated_s']:,.0f} simulated s (x {plan['per_day_scale']:.3g})",
        "",
        f"Uplink per cell for p95 round <= {plan['target_p95_s']:g} s (searched {plan['uplink_mhz_min']:g}-"
        f"{plan['uplink_mhz_max']:g} MHz, tolerance {100 * plan['tolerance']:g}%, {len(plan['probes'])} probes): "
        + ("not reachable" if plan["answer_mhz"] is None else f"{plan['answer_mhz']:.3g} MHz"),
        plan["message"],
        "",
        f"Round duration at the scenario's {base['uplink_mhz']:g} MHz (time to the K-th report; a round short of K "
        "reports is unbounded)",
        text_table(PERCENTILE_HEADER, [percentile_row(base)]),
        "",
        "Per cell per day (GB)",
        text_table(["", "mean", "busiest"], [
            ["uplink", number(cells["uplink_gb_mean"]), number(cells["uplink_gb_busiest"])],
            ["downlink", number(cells["downlink_gb_mean"]), number(cells["downlink_gb_busiest"])],
        ]),
        f"Energy per device per day, fleet mean: {number(plan['energy_wh_per_device_per_day'])} Wh",
        "",
        "Per device class: sessions, reports and Wh per device per day; battery share of capacity (battery classes)",
        text_table(CLASS_HEADER, class_rows(plan)),
        "",
        "Probes (in the order run)",
        text_table(PROBE_HEADER, probe_rows(plan)),
    ]
    if plan.get("horizon"):
        horizon = plan["horizon"]
        lines += ["", HORIZON_HEADING, horizon_text(horizon), text_table(HOUR_HEADER, hour_rows(horizon))]
    return "\n".join(lines)


# --- the horizon, hour by hour -------------------------------------------------------------------------

HOUR_HEADER = ["hour", "rounds", "p50", "p95", "short", "invited", "completed", "completion", "up MB/cell",
               "up MB peak", "down MB/cell", "down MB peak"]


def hour_label(hour: int) -> str:
    """'14:00', or 'day 2 14:00' past the first day (hours count from midnight, t = 0)."""
    clock = f"{hour % 24:02d}:00"
    return clock if hour < 24 else f"day {hour // 24 + 1} {clock}"


HORIZON_HEADING = "Hour by hour over the horizon"


def horizon_text(horizon: dict) -> str:
    return (horizon["message"] + " A round and its sessions count in the hour the round opened; * marks the busy "
            "hour, the most traffic over the air per cell (uplink plus downlink); MB per cell in the hour.")


def hours_frame(horizon: dict) -> pd.DataFrame:
    """The hours as plan.json holds them, with unbounded percentiles (null where rounds opened) back to inf
    and the other nulls (no round, nobody invited) as NaN."""
    table = pd.DataFrame(horizon["table"]).astype({"p50_s": float, "p95_s": float, "completion_rate": float})
    opened = table["rounds"] > 0
    for column in ("p50_s", "p95_s"):
        table.loc[opened & table[column].isna(), column] = math.inf
    return table


def hour_rows(horizon: dict) -> list[list[str]]:
    """One row of text per hour; '-' where no round opened."""
    rows = []
    for h in hours_frame(horizon).itertuples():
        opened = h.rounds > 0
        rows.append([hour_label(h.hour) + (" *" if h.hour == horizon["busy_hour"] else ""), f"{h.rounds:,}",
                     seconds(h.p50_s) if opened else "-", seconds(h.p95_s) if opened else "-", f"{h.short_rounds:,}",
                     f"{h.invited:,}", f"{h.completed:,}", percent(None if np.isnan(h.completion_rate) else
                                                                      h.completion_rate),
                     number(h.uplink_mb_mean), number(h.uplink_mb_peak), number(h.downlink_mb_mean),
                     number(h.downlink_mb_peak)])
    return rows


def hour_duration_figure(plan: dict, hours: pd.DataFrame, labels: list[str]) -> go.Figure:
    """p50 and p95 per hour; an unbounded p95 drawn at the top, marked as such; hours without rounds left out."""
    fig = go.Figure()
    bounded = hours[np.isfinite(hours["p95_s"])]
    top = 1.2 * max([plan["target_p95_s"], *bounded["p95_s"]])
    for column, name in (("p50_s", "p50"), ("p95_s", "p95")):
        finite = np.isfinite(hours[column])
        fig.add_scatter(x=labels, y=hours[column].where(finite), mode="lines+markers", name=f"{name} round duration")
    unbounded = hours[np.isinf(hours["p95_s"])]
    if len(unbounded):
        fig.add_scatter(x=[labels[h] for h in unbounded.index], y=[top] * len(unbounded), mode="markers",
                        marker_symbol="x", marker_size=10, name="p95 unbounded (rounds short of K), drawn at top")
    fig.add_hline(y=plan["target_p95_s"], line_dash="dot", annotation_text=f"target {plan['target_p95_s']:g} s")
    fig.update_layout(title="Round duration by the hour it opened (time to the K-th report)",
                      xaxis_title="hour of day (reference time zone)", yaxis_title="simulated s", height=400)
    return fig


def hour_participation_figure(hours: pd.DataFrame, labels: list[str]) -> go.Figure:
    fig = go.Figure([go.Bar(x=labels, y=hours["invited"], name="invited"),
                     go.Bar(x=labels, y=hours["completed"], name="completed (reported)")])
    fig.update_layout(barmode="group", title="Participation per hour", xaxis_title="hour of day (reference time zone)",
                      yaxis_title="devices (sessions)", height=400)
    return fig


def hour_load_figure(horizon: dict, hours: pd.DataFrame, labels: list[str]) -> go.Figure:
    """Per cell per hour, mean over the cells and the busiest cell; the busy hour starred."""
    fig = go.Figure()
    for column, name in (("uplink_mb_mean", "uplink, mean cell"), ("downlink_mb_mean", "downlink, mean cell"),
                         ("load_mb_mean", "uplink + downlink, mean cell"),
                         ("load_mb_peak", "uplink + downlink, busiest cell")):
        fig.add_scatter(x=labels, y=hours[column], mode="lines+markers", name=name)
    busy = horizon["busy_hour"]
    fig.add_scatter(x=[labels[busy]], y=[hours["load_mb_mean"][busy]], mode="markers+text", marker_symbol="star",
                    marker_size=16, text=["busy hour"], textposition="top center",
                    name="busy hour (uplink + downlink, mean cell)")
    fig.update_layout(title="Traffic over each cell's air per hour", xaxis_title="hour of day (reference time zone)",
                      yaxis_title="MB per cell in the hour", height=400)
    return fig


def horizon_section(plan: dict):
    horizon = plan["horizon"]
    hours = hours_frame(horizon)
    labels = [hour_label(h) for h in hours["hour"]]
    return (HORIZON_HEADING, horizon_text(horizon), pd.DataFrame(hour_rows(horizon), columns=HOUR_HEADER),
            [hour_duration_figure(plan, hours, labels), hour_participation_figure(hours, labels),
             hour_load_figure(horizon, hours, labels)])


# --- plan.html ---------------------------------------------------------------------------------------


def duration_figure(plan: dict) -> go.Figure | None:
    base = plan["baseline"]
    finite = [d for d in base["durations_s"] if d is not None]
    if not finite:
        return None
    fig = go.Figure(go.Histogram(x=finite, name="rounds with K reports"))
    fig.add_vline(x=plan["target_p95_s"], line_dash="dot", annotation_text=f"target {plan['target_p95_s']:g} s")
    fig.update_layout(title=f"Round duration at {base['uplink_mhz']:g} MHz uplink per cell (time to the K-th report)",
                      xaxis_title="round duration (simulated s)", yaxis_title="rounds", height=380)
    return fig


def search_figure(plan: dict) -> go.Figure:
    """p95 against uplink MHz; probes with unbounded p95 drawn at the top, marked as such; the answer as a
    star (a marker, not a vertical line: shapes on a log axis throw its autorange off)."""
    probes = sorted(plan["probes"], key=lambda p: p["uplink_mhz"])
    bounded = [p for p in probes if p["percentiles_s"]["p95"] is not None]
    unbounded = [p for p in probes if p["percentiles_s"]["p95"] is None]
    fig = go.Figure()
    if bounded:
        fig.add_scatter(x=[p["uplink_mhz"] for p in bounded], y=[p["percentiles_s"]["p95"] for p in bounded],
                        mode="lines+markers", name="p95 round duration")
    if unbounded:
        top = 1.2 * max([plan["target_p95_s"], *(p["percentiles_s"]["p95"] for p in bounded)])
        fig.add_scatter(x=[p["uplink_mhz"] for p in unbounded], y=[top] * len(unbounded), mode="markers",
                        marker_symbol="x", marker_size=10, name="p95 unbounded (rounds short of K), drawn at top")
    fig.add_hline(y=plan["target_p95_s"], line_dash="dot", annotation_text=f"target {plan['target_p95_s']:g} s")
    answer = next((p for p in probes if p["uplink_mhz"] == plan["answer_mhz"]), None)
    if answer is not None:
        fig.add_scatter(x=[answer["uplink_mhz"]], y=[answer["percentiles_s"]["p95"]], mode="markers+text",
                        marker_symbol="star", marker_size=16, text=[f"answer {answer['uplink_mhz']:.3g} MHz"],
                        textposition="top right", name="answer")
    fig.update_layout(title="p95 round duration against uplink bandwidth per cell", xaxis_type="log",
                      xaxis_title="uplink per cell (MHz)", yaxis_title="p95 round duration (simulated s)", height=400)
    return fig


def cell_figure(cells: pd.DataFrame) -> go.Figure:
    fig = go.Figure([go.Histogram(x=cells["uplink_gb_per_day"], name="uplink", opacity=0.7),
                     go.Histogram(x=cells["downlink_gb_per_day"], name="downlink", opacity=0.7)])
    fig.update_layout(barmode="overlay", title="Traffic per cell per day at the scenario's uplink",
                      xaxis_title="GB per cell per day", yaxis_title="cells", height=380)
    return fig


def class_figures(classes: pd.DataFrame) -> list[go.Figure]:
    energy = go.Figure(go.Bar(x=classes["device_class"], y=classes["energy_wh_per_device_per_day"]))
    energy.update_layout(title="Energy per device per day", yaxis_title="Wh per device per day", height=380)
    figures = [energy]
    battery = classes[classes["battery_powered"]]
    if len(battery):
        share = go.Figure([
            go.Bar(x=battery["device_class"], y=100 * battery["battery_share_per_day"], name="per device per day"),
            go.Bar(x=battery["device_class"], y=100 * battery["battery_share_per_session"], name="per session"),
        ])
        share.update_layout(barmode="group", title="Battery drawn, as a share of capacity",
                            yaxis_title="% of battery capacity", height=380)
        figures.append(share)
    return figures


def write_html(path: Path, plan: dict, cells: pd.DataFrame) -> Path:
    base = plan["baseline"]
    cell_table = cells.describe(percentiles=[0.5, 0.95]).T.reset_index(names="GB per cell per day")
    duration = duration_figure(plan)
    sections = [
        ("Uplink bandwidth per cell", plan["message"], pd.DataFrame(probe_rows(plan), columns=PROBE_HEADER),
         [search_figure(plan)]),
        (f"Round duration at {base['uplink_mhz']:g} MHz",
         f"{plan['rounds_per_probe']} synchronous rounds; {base['short_rounds']} closed short of K = "
         f"{plan['clients_per_round']:,} reports.", pd.DataFrame([percentile_row(base)], columns=PERCENTILE_HEADER),
         [duration] if duration else []),
        ("Load per cell per day", f"{plan['cells']:,} cells; per day = emulated totals x {plan['per_day_scale']:.3g}.",
         cell_table, [cell_figure(cells)]),
        ("Device classes", f"Fleet mean: {number(plan['energy_wh_per_device_per_day'])} Wh per device per day; "
         "sessions, reports and Wh per device per day.", pd.DataFrame(class_rows(plan), columns=CLASS_HEADER),
         class_figures(pd.DataFrame(plan["classes"]))),
    ]
    if plan.get("horizon"):
        sections.insert(1, horizon_section(plan))
    return write_page(path, f"fedfleet plan: {plan['scenario']}", sections, intro=" ".join(plan["rules"]))


def write_outputs(out: Path, plan: dict, cells: pd.DataFrame) -> None:
    """plan.json (every figure), plan.csv (per device class), plan_hours.csv (per hour of the horizon, if
    any; an unbounded percentile is inf), plan.txt (the printed table), plan.html."""
    (out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    pd.DataFrame(plan["classes"]).to_csv(out / "plan.csv", index=False)
    if plan.get("horizon"):
        hours_frame(plan["horizon"]).to_csv(out / "plan_hours.csv", index=False)
    (out / "plan.txt").write_text(format_plan(plan) + "\n")
    write_html(out / "plan.html", plan, cells)
