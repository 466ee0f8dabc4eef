"""The figures of one run, from its rounds and sessions: how the loss fell against time, bytes and energy,
who took part and when, why sessions ended, how long they took, what it cost the batteries and the cells.

Each function returns a figure, or None when the run has nothing to draw for it, so that no page shows an
empty figure; those over sessions expect at least one session. Distributions are drawn from summary
statistics (boxes) or counts (bars), not from every session, so a page stays small for runs with millions
of sessions.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.page import HEIGHT, PALETTE

LOSS_AXIS = "held-out loss (nats/token)"
# x column of the rounds (cumulative columns from analysis.report.with_cumulative), title, axis title
LOSS_VIEWS = (
    ("t_end", "Held-out loss against simulated time", "simulated time (s)"),
    ("cum_bytes_up", "Held-out loss against cumulative uplink bytes", "uplink bytes, cumulative"),
    ("cum_bytes_down", "Held-out loss against cumulative downlink bytes", "downlink bytes, cumulative"),
    ("cum_energy_j", "Held-out loss against cumulative fleet energy", "fleet energy (J), cumulative"),
)
PHASES = (("download", "download_s", "#74add1"), ("train", "train_s", "#fdae61"), ("upload", "upload_s", "#66bd63"))
OUTCOMES = {  # colour and marker of each way a session ends
    "completed": ("#1a9850", "circle"),
    "offline": ("#636363", "x"),
    "device_failure": ("#d73027", "x"),
    "battery": ("#f46d43", "triangle-down"),
    "link_outage": ("#762a83", "x"),
    "missed_deadline": ("#8c510a", "hourglass"),
    "surplus": ("#bdbdbd", "diamond"),
    "stale": ("#35978f", "square"),
    "rejected_nonfinite": ("#e7298a", "star"),
    "rejected_norm": ("#c51b7d", "star-open"),
}
OTHER_OUTCOME = ("#000000", "circle-open")


def layout(fig: go.Figure, title: str, x_title: str | None, y_title: str | None, **extra) -> go.Figure:
    """Title, axis titles and the common height; `extra` may override any of them."""
    fig.update_layout(**({"title": title, "xaxis_title": x_title, "yaxis_title": y_title, "height": HEIGHT,
                          "margin": dict(t=60, b=50)} | extra))
    return fig


def loss_figure(rounds: pd.DataFrame, x: str, title: str, x_title: str, target: float | None = None) -> go.Figure:
    """The global held-out loss and, on a fixed sample of devices' own held-out text, the loss with each
    device's personal part (personalised strategies) and with the global adapter alone."""
    rows = rounds.dropna(subset=["eval_loss"])
    fig = go.Figure(go.Scatter(x=rows[x], y=rows["eval_loss"], mode="lines+markers",
                               name="global, shared held-out windows"))
    if "personal_loss" in rows and rows["personal_loss"].notna().any():
        fig.add_scatter(x=rows[x], y=rows["personal_loss"], mode="lines+markers",
                        name="devices' own text, with their personal part")
        if not (rows["personal_loss"] == rows["personal_global_loss"]).all():
            fig.add_scatter(x=rows[x], y=rows["personal_global_loss"], mode="lines+markers",
                            name="devices' own text, global adapter alone")
    add_target(fig, target)
    return layout(fig, title, x_title, LOSS_AXIS)


def add_target(fig: go.Figure, target: float | None) -> None:
    if target is not None:
        fig.add_hline(y=target, line_dash="dot", annotation_text=f"target {target:.4g}")


# --- participation timeline ----------------------------------------------------------------------------

def sample_devices(clients: pd.DataFrame, limit: int = 60) -> np.ndarray:
    """Up to `limit` devices that took part, evenly spread over the sorted device ids (deterministic)."""
    devices = np.unique(clients["device"].to_numpy())
    if len(devices) <= limit:
        return devices
    return devices[np.linspace(0, len(devices) - 1, limit).round().astype(int)]


def timeline_segments(sessions: pd.DataFrame) -> pd.DataFrame:
    """One row per phase a session spent time in: device, phase, start, end. The phases run back to back
    from t_start; what follows the upload until t_end is the backhaul and the server."""
    parts, start = [], sessions["t_start"].to_numpy(np.float64)
    for phase, column, _ in PHASES:
        end = start + sessions[column].to_numpy(np.float64)
        spent = end > start
        parts.append(pd.DataFrame({"device": sessions["device"].to_numpy()[spent], "phase": phase,
                                   "start": start[spent], "end": end[spent]}))
        start = end
    return pd.concat(parts, ignore_index=True)


def _row_labels(sessions: pd.DataFrame) -> tuple[pd.Series, list[str]]:
    """Each session's row name (class and device), and the rows in order: by class, then device id."""
    label = sessions["device_class"].astype(str) + " #" + sessions["device"].astype(str)
    order = sessions[["device_class", "device"]].assign(label=label).drop_duplicates("device")
    return label, order.sort_values(["device_class", "device"])["label"].tolist()


def _gapped(first: np.ndarray, second: np.ndarray) -> list:
    """first[0], second[0], None, first[1], ...: many line segments in one trace."""
    out = np.empty((len(first), 3), dtype=object)
    out[:, 0], out[:, 1], out[:, 2] = first, second, None
    return out.ravel().tolist()


def timeline_figure(clients: pd.DataFrame, limit: int = 60) -> go.Figure:
    """Downloading, training and uploading of a sample of devices over simulated time; a marker where and
    how each session ended. One trace per phase and per outcome, segments separated by None."""
    devices = sample_devices(clients, limit)
    sessions = clients[clients["device"].isin(devices)]
    label, rows = _row_labels(sessions)
    names = dict(zip(sessions["device"], label))
    segments = timeline_segments(sessions)
    fig = go.Figure()
    for phase, _, colour in PHASES:
        seg = segments[segments["phase"] == phase]
        if len(seg):
            y = seg["device"].map(names).to_numpy()
            fig.add_scatter(x=_gapped(seg["start"].to_numpy(), seg["end"].to_numpy()), y=_gapped(y, y),
                            mode="lines", line=dict(color=colour, width=7), name=phase, hoverinfo="name+x")
    for outcome, ended in sessions.groupby("outcome", sort=True):
        colour, symbol = OUTCOMES.get(outcome, OTHER_OUTCOME)
        fig.add_scatter(x=ended["t_end"], y=label[ended.index], mode="markers", name=f"ended: {outcome}",
                        marker=dict(color=colour, symbol=symbol, size=8, line=dict(width=1, color=colour)),
                        text=[f"round {r}, ended in {p}" for r, p in zip(ended["round"], ended["phase"])],
                        hovertemplate="%{y}<br>t=%{x:.4g} s<br>%{text}<extra>" + outcome + "</extra>")
    shown = f"{len(devices)} of {clients['device'].nunique()} devices that took part"
    layout(fig, f"Participation timeline: {shown}", "simulated time (s)", None,
           height=max(HEIGHT, 16 * len(rows) + 140))
    # every row named (plotly would skip labels on a crowded axis), first class on top
    fig.update_yaxes(type="category", categoryorder="array", categoryarray=rows[::-1], tickvals=rows,
                     tickfont_size=10)
    return fig


# --- how sessions ended and how long they took ------------------------------------------------------

def outcome_figure(clients: pd.DataFrame) -> go.Figure:
    counts = clients.groupby(["round", "outcome"]).size().unstack(fill_value=0)
    fig = go.Figure([go.Bar(x=counts.index, y=counts[c], name=c, marker_color=OUTCOMES.get(c, OTHER_OUTCOME)[0])
                     for c in counts.columns])
    return layout(fig, "How each invited session ended, per round", "round (server version)", "sessions",
                  barmode="stack")


def drop_figure(clients: pd.DataFrame) -> go.Figure | None:
    reasons = clients.loc[clients["outcome"] != "completed"].groupby(["outcome", "device_class"]).size()
    if reasons.empty:
        return None
    reasons = reasons.unstack(fill_value=0)
    colours = class_colours(clients["device_class"])
    fig = go.Figure([go.Bar(x=reasons.index, y=reasons[c], name=c, marker_color=colours[c]) for c in reasons.columns])
    return layout(fig, "Why sessions did not report, per device class", "how the session ended", "sessions",
                  barmode="stack")


def class_colours(*classes) -> dict[str, str]:
    """One colour per device class, the same in every figure of a run: by the classes' sorted order."""
    names = sorted(set().union(*(set(c) for c in classes)))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def completion_by_class(clients: pd.DataFrame) -> pd.DataFrame:
    """Per device class: invited sessions, completed sessions and their ratio."""
    done = clients["outcome"].eq("completed")
    table = done.groupby(clients["device_class"]).agg(sessions="size", completed="sum")
    return table.assign(rate=table["completed"] / table["sessions"])


def class_figure(clients: pd.DataFrame) -> go.Figure:
    table = completion_by_class(clients)
    colours = class_colours(table.index)
    fig = go.Figure(go.Bar(x=table.index, y=table["rate"], marker_color=[colours[c] for c in table.index],
                           text=[f"{c:,} of {n:,}" for c, n in zip(table["completed"], table["sessions"])]))
    return layout(fig, "Completion rate per device class (sessions that reported, of those invited)",
                  "device class", "share of sessions completed", yaxis_range=[0, 1.05])


def box_stats(values) -> dict | None:
    """Tukey box of `values` (whiskers at the furthest values within 1.5 IQR), for go.Box's precomputed form."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    q1, median, q3 = np.percentile(v, [25, 50, 75])
    reach = 1.5 * (q3 - q1)
    return {"q1": q1, "median": median, "q3": q3, "mean": v.mean(),
            "lowerfence": v[v >= q1 - reach].min(), "upperfence": v[v <= q3 + reach].max()}


def box(groups: dict[str, np.ndarray], name: str, colour: str | None = None) -> go.Box | None:
    """One box trace with a box per group (groups without values are left out)."""
    stats = {g: s for g, s in ((g, box_stats(v)) for g, v in groups.items()) if s is not None}
    if not stats:
        return None
    columns = {k: [s[k] for s in stats.values()] for k in next(iter(stats.values()))}
    return go.Box(x=list(stats), name=name, marker_color=colour, boxmean=True, **columns)


def duration_figure(clients: pd.DataFrame) -> go.Figure | None:
    """Session time from invitation to report (completed) or to the end (others), per class. Sessions that
    ended the instant they started (refused link) have no place on the log axis and are left out."""
    duration = clients["t_end"] - clients["t_start"]
    done, lasted = clients["outcome"].eq("completed"), duration > 0
    classes = sorted(clients["device_class"].unique())
    traces = [box({c: duration[which & lasted & (clients["device_class"] == c)] for c in classes}, name)
              for name, which in (("completed", done), ("did not report", ~done))]
    traces = [t for t in traces if t is not None]
    if not traces:
        return None
    return layout(go.Figure(traces), "Session duration per device class, invitation to report or end",
                  "device class", "simulated seconds", yaxis_type="log", boxmode="group")


def round_figure(rounds: pd.DataFrame) -> go.Figure | None:
    done = rounds[rounds["round"] > 0]
    if done.empty:
        return None
    fig = go.Figure(go.Bar(x=done["version"], y=done["duration_s"],
                           marker_color=np.where(done["abandoned"], "#d73027", PALETTE[0])))
    return layout(fig, "Round duration: simulated time from one server version to the next (red: abandoned)",
                  "server version", "simulated seconds")


def staleness_counts(clients: pd.DataFrame) -> pd.Series:
    """Arrived updates per staleness (server versions published while they trained); empty for runs where
    no update was stale, which is every synchronous run."""
    if not (clients["staleness"] > 0).any():
        return pd.Series(dtype=np.int64)
    return clients.loc[clients["staleness"] >= 0, "staleness"].value_counts().sort_index()


def staleness_figure(clients: pd.DataFrame) -> go.Figure | None:
    counts = staleness_counts(clients)
    if counts.empty:
        return None
    return layout(go.Figure(go.Bar(x=counts.index, y=counts.values)),
                  "Staleness of arrived updates (server versions published while they trained)",
                  "staleness (versions)", "updates")


# --- energy, battery and cells ---------------------------------------------------------------------

def charge_columns(rounds: pd.DataFrame) -> dict[str, str]:
    """Device class -> its fleet-mean battery charge column, for classes that have batteries."""
    return {c.removeprefix("charge_"): c for c in rounds.columns
            if c.startswith("charge_") and rounds[c].notna().any()}


def _thin(frame: pd.DataFrame, limit: int) -> pd.DataFrame:
    """At most `limit` rows, evenly spread (deterministic), so a page stays small."""
    if len(frame) <= limit:
        return frame
    return frame.iloc[np.linspace(0, len(frame) - 1, limit).round().astype(int)]


def battery_figure(rounds: pd.DataFrame, clients: pd.DataFrame, points: int = 1000) -> go.Figure | None:
    """Per class, the mean charge of its battery-powered devices over time (line), and where participants'
    charge stood at the end of their sessions (up to `points` points per class, drawn under the lines)."""
    columns = charge_columns(rounds)
    if not columns:
        return None
    colours = class_colours(columns, clients.get("device_class", []))
    fig = go.Figure()
    if "charge_end" in clients:
        for cls in columns:
            ended = _thin(clients[(clients["device_class"] == cls) & clients["charge_end"].notna()], points)
            if len(ended):
                fig.add_scatter(x=ended["t_end"], y=ended["charge_end"], mode="markers", legendgroup=cls,
                                name=f"{cls}: participants at session end", legendrank=1001,
                                marker=dict(color=colours[cls], size=4, opacity=0.4))
    for cls, column in columns.items():
        fig.add_scatter(x=rounds["t_end"], y=rounds[column], mode="lines", name=f"{cls}: fleet mean",
                        line=dict(color=colours[cls], width=3), legendgroup=cls)
    return layout(fig, "Battery charge over time, battery-powered devices per class", "simulated time (s)",
                  "charge (share of capacity)", yaxis_tickformat=".0%")


def cell_figure(clients: pd.DataFrame) -> go.Figure:
    # what crossed the cell's air: a multicast counts once, not once per receiver; servers at the site none
    load = clients.groupby("cell")[["bytes_up_air", "bytes_down_air"]].sum() / 1e6
    fig = go.Figure([go.Bar(x=load.index, y=load["bytes_up_air"], name="uplink (sent over the air)"),
                     go.Bar(x=load.index, y=load["bytes_down_air"], name="downlink (sent over the air)")])
    return layout(fig, "Load per cell over the run", "cell", "MB", barmode="group", xaxis_type="category")


# --- mean over seeds with a confidence band ----------------------------------------------------------------

def translucent(colour: str, alpha: float = 0.2) -> str:
    """'#rrggbb' as 'rgba(r,g,b,alpha)', for a band under a line of that colour."""
    r, g, b = (int(colour.lstrip("#")[i:i + 2], 16) for i in (0, 2, 4))
    return f"rgba({r},{g},{b},{alpha})"


def band_traces(x, mean, low, high, name: str, colour: str, mode: str = "lines") -> list[go.Scatter]:
    """A mean line over a shaded band: the band's lower edge, then its upper edge filled down to it
    ('tonexty' fills to the trace just before, so the two must stay adjacent), then the mean on top. Plain
    scatter traces, so the page needs nothing beyond the plotly.js it already inlines."""
    edge = dict(color=colour, width=0)
    return [
        go.Scatter(x=x, y=low, mode="lines", line=edge, name=f"{name}: 95% band", legendgroup=name,
                   showlegend=False, hoverinfo="skip"),
        go.Scatter(x=x, y=high, mode="lines", line=edge, fill="tonexty", fillcolor=translucent(colour),
                   name=f"{name}: 95% band", legendgroup=name, hoverinfo="skip"),
        go.Scatter(x=x, y=mean, mode=mode, line=dict(color=colour, width=2), marker_color=colour, name=name,
                   legendgroup=name),
    ]
