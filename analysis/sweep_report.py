"""What a sweep shows: one table over its trials (sweep.parquet, sweep.csv) and one page (sweep.html), from
the trials' run folders under SWEEP_DIR/trials/. `fedfleet sweep` (scenarios/sweep.py) runs the trials; this
module only reads what they wrote.

A trial is described by its index, name and swept settings (scenarios.grid.Trial), and how it ran by its
result (scenarios.sweep.TrialResult: files, node, wall_start, wall_end, error).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import yaml

from analysis.compare import comparison_figures, to_target, write_page
from analysis.detection import detection_columns

BANDWIDTH = "network.uplink_mhz"
NAN = float("nan")
# What a failed trial measured: no rounds (to_target then gives NaN for each of its columns).
NO_ROUNDS = pd.DataFrame({c: pd.Series(dtype=float) for c in ("t_end", "bytes_up", "bytes_down", "energy_j",
                                                               "eval_loss")})


def write_sweep(sweep_dir: Path, trials: list, results: dict[int, Any], target: float | None,
                scenario_target: float | None, title: str) -> pd.DataFrame:
    """Read the trials' runs, choose the target loss, write sweep.parquet, sweep.csv and sweep.html."""
    runs = {t.index: load_trial(sweep_dir / "trials" / t.name, results[t.index]) for t in trials}
    target, how = choose_target(target, scenario_target, runs)
    table = sweep_table(sweep_dir, trials, results, runs, target)
    table.to_parquet(sweep_dir / "sweep.parquet", index=False)
    table.to_csv(sweep_dir / "sweep.csv", index=False)
    write_sweep_page(sweep_dir, table, target, how, title)
    return table


def load_trial(folder: Path, result) -> tuple[pd.DataFrame, dict] | None:
    """A finished trial's rounds and summary; None for a failed one."""
    if result.error is not None:
        return None
    return pd.read_parquet(folder / "rounds.parquet"), json.loads((folder / "summary.json").read_text())


def choose_target(target: float | None, scenario_target: float | None,
                  runs: dict[int, tuple[pd.DataFrame, dict] | None]) -> tuple[float | None, str]:
    """The loss every trial's 'to target' figures are measured to, and where it came from."""
    if target is not None:
        return target, "given"
    if scenario_target is not None:
        return scenario_target, "the scenario's output.target_loss"
    finals = [s["final_eval_loss"] for _, s in filter(None, runs.values()) if s.get("final_eval_loss") is not None]
    if not finals:
        return None, "no trial measured a held-out loss"
    return max(finals), "the highest final loss among the trials, so that every trial reaches it"


def sweep_table(sweep_dir: Path, trials: list, results: dict[int, Any],
                runs: dict[int, tuple[pd.DataFrame, dict] | None], target: float | None) -> pd.DataFrame:
    """One row per trial; the swept fields are the columns between `trial` and `status`."""
    rows = []
    for trial in trials:
        result, run = results[trial.index], runs[trial.index]
        rounds, summary = run if run is not None else (None, {})
        folder = sweep_dir / "trials" / trial.name
        rows.append({
            "trial": trial.index,
            **dict(trial.settings),
            "status": "failed" if run is None else "ok",
            "run": folder.relative_to(sweep_dir).as_posix() if result.files else None,
            "final_loss": NAN if summary.get("final_eval_loss") is None else summary["final_eval_loss"],
            "simulated_s": summary.get("simulated_time_s", NAN),
            "bytes_up": summary.get("bytes_up", NAN),
            "bytes_down": summary.get("bytes_down", NAN),
            "energy_j": summary.get("energy_j", NAN),
            **to_target(rounds if rounds is not None else NO_ROUNDS, target),
            "completion_rate": summary.get("completion_rate", NAN),
            "mean_round_s": summary.get("mean_round_s", NAN),
            **(detection_columns(rounds, summary) if rounds is not None else {}),
            "node": result.node,
            "wall_start": result.wall_start,
            "wall_end": result.wall_end,
            "wall_s": result.wall_end - result.wall_start,
            "error": result.error,
        })
    table = pd.DataFrame(rows)
    for field, _ in trials[0].settings:
        table[field] = field_values(table[field])
    return table


def field_values(texts: pd.Series) -> pd.Series:
    """A swept field's values as YAML reads them where they are all numbers or all strings (so they sort
    and plot), else as the text given."""
    values = [yaml.safe_load(t) for t in texts]
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
    if numbers or all(isinstance(v, str) for v in values):
        return pd.Series(values, index=texts.index)
    return texts


def swept_fields(table: pd.DataFrame) -> list[str]:
    return list(table.columns[1:table.columns.get_loc("status")])


def bandwidth_figures(table: pd.DataFrame, target: float | None = None) -> list[go.Figure]:
    """Convergence against bandwidth: time, uplink bytes and energy to the target loss against the uplink
    band per cell, one line per combination of the other swept fields; without any held-out loss (systems
    mode), the mean round duration instead. Empty when the uplink band was not swept."""
    if BANDWIDTH not in table:
        return []
    ok = table[table["status"] == "ok"]
    others = [f for f in swept_fields(table) if f != BANDWIDTH and ok[f].nunique() > 1]
    if ok["final_loss"].notna().any():
        loss = "" if target is None else f" {target:.4g}"
        panels = [("time_to_target_s", f"Time to target loss{loss} against uplink bandwidth", "simulated time (s)"),
                  ("uplink_bytes_to_target", f"Uplink bytes to target loss{loss} against uplink bandwidth",
                   "uplink bytes"),
                  ("energy_to_target_j", f"Fleet energy to target loss{loss} against uplink bandwidth",
                   "energy (J)")]
    else:
        panels = [("mean_round_s", "Mean round duration against uplink bandwidth (systems mode: no loss, so no "
                   "time to target)", "simulated seconds per round")]
    figures = []
    for column, title, y_title in panels:
        fig = go.Figure()
        for key, group in ok.groupby(others) if others else [((), ok)]:
            points = group.dropna(subset=[column]).sort_values(BANDWIDTH)
            if len(points):
                name = ", ".join(f"{f}={v}" for f, v in zip(others, key)) or "all trials"
                fig.add_scatter(x=points[BANDWIDTH], y=points[column], mode="lines+markers", name=name)
        fig.update_layout(title=title, xaxis_title="uplink band per cell (MHz)", yaxis_title=y_title, height=400)
        fig.update_xaxes(type="log")
        if fig.data:
            figures.append(fig)
    return figures


def write_sweep_page(sweep_dir: Path, table: pd.DataFrame, target: float | None, how: str, title: str) -> Path:
    ok = table[table["status"] == "ok"]
    failed = len(table) - len(ok)
    fields = ", ".join(swept_fields(table)) or "nothing"
    text = f"{len(table)} trials over {fields}: {len(ok)} ran, {failed} failed. "
    text += (f"Target held-out loss {target:.4g}: {how}. " if target is not None else f"No target: {how}. ")
    text += "Times are simulated seconds; wall_s is the host's."
    # The page shows an empty cell as 'not reached': blank the cells that measure nothing instead.
    shown = table.drop(columns=["wall_start", "wall_end"]).dropna(axis=1, how="all").astype(object)
    shown[table["status"] != "ok"] = shown[table["status"] != "ok"].fillna("")
    if "error" in shown:
        shown["error"] = shown["error"].fillna("")
    runs = {Path(run).name: sweep_dir / run for run in ok["run"]}
    sections = [("Trials", text, shown, bandwidth_figures(table, target)),
                ("All trials overlaid", "The runs' figures, one colour per trial.", None,
                 comparison_figures(runs, target))]
    return write_page(sweep_dir / "sweep.html", title, sections)
