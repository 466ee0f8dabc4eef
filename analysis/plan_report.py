"""What a capacity plan shows: the printed table, plan.json, plan.csv (per device class) and plan.html.

Everything here reads the plan as plan.json holds it (a dict; null where a duration is unbounded), so a
plan folder can be printed again without rerunning it.
"""

from __future__ import annotations

import json
from pathlib import Path

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
    return "\n".join(lines)


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
    return write_page(path, f"fedfleet plan: {plan['scenario']}", sections, intro=" ".join(plan["rules"]))


def write_outputs(out: Path, plan: dict, cells: pd.DataFrame) -> None:
    """plan.json (every figure), plan.csv (per device class), plan.txt (the printed table), plan.html."""
    (out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    pd.DataFrame(plan["classes"]).to_csv(out / "plan.csv", index=False)
    (out / "plan.txt").write_text(format_plan(plan) + "\n")
    write_html(out / "plan.html", plan, cells)
