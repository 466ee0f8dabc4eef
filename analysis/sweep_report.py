"""What a sweep shows: one table over its trials (sweep.parquet, sweep.csv) and one page (sweep.html), from
the trials' run folders under SWEEP_DIR/trials/. `fedfleet sweep` (scenarios/sweep.py) runs the trials; this
module only reads what they wrote.

A trial is described by its index, name and swept settings (scenarios.grid.Trial), and how it ran by its
result (scenarios.sweep.TrialResult: files, node, wall_start, wall_end, error).

A sweep over seeds (`--seeds N`, or `--set seed=...`) also writes sweep_seeds.parquet / sweep_seeds.csv: one
row per group of trials that differ only in seed, each figure's mean over the seeds and its 95% confidence
interval (analysis/intervals.py); the page opens with that table and the loss curves' mean and 95% band.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import yaml

from analysis import figures as fg
from analysis.compare import comparison_figures, to_target, write_page
from analysis.detection import detection_columns
from analysis.intervals import interval
from analysis.metrics import loss_gain, with_cumulative
from analysis.page import PALETTE, fmt, in_units
from analysis.seeds import (SEED_METRICS, SEEDS_ABOUT, SeedGroup, interval_cell, seed_band_figures, seed_metrics,
                            seed_table, shown_seed_table)

BANDWIDTH = "network.uplink_mhz"
SEED = "seed"
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
    seeds = sweep_seed_table(table)
    if seeds is not None:
        seeds.to_parquet(sweep_dir / "sweep_seeds.parquet", index=False)
        seeds.to_csv(sweep_dir / "sweep_seeds.csv", index=False)
    write_sweep_page(sweep_dir, table, target, how, title, seeds)
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
            "loss_gain": loss_gain(summary),
            "simulated_s": summary.get("simulated_time_s", NAN),
            "bytes_up": summary.get("bytes_up", NAN),
            "bytes_down": summary.get("bytes_down", NAN),
            "energy_j": summary.get("energy_j", NAN),
            **to_target(rounds if rounds is not None else NO_ROUNDS, target),
            "completion_rate": summary.get("completion_rate", NAN),
            "uplink_fraction_of_full": summary.get("uplink_fraction_of_full") or NAN,
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


def group_fields(table: pd.DataFrame) -> list[str]:
    """The swept fields other than the seed: trials equal in these differ only in seed."""
    return [f for f in swept_fields(table) if f != SEED]


def sweep_seed_table(table: pd.DataFrame) -> pd.DataFrame | None:
    """One row per group of trials that differ only in seed: the other swept fields, `seeds` (trials in the
    group), `ran` (those that did not fail), `trials` (their numbers) and each metric's count measured, mean,
    standard deviation and 95% interval (analysis.seeds.seed_table). None for a sweep without a seed axis."""
    if SEED not in swept_fields(table):
        return None
    by = group_fields(table)
    seeds = seed_table(table, by)
    keyed = table.groupby(by, sort=False, dropna=False) if by else [((), table)]
    ran = [int((group["status"] == "ok").sum()) for _, group in keyed]
    trials = [",".join(map(str, group["trial"])) for _, group in keyed]
    at = len(by) + 1  # after the fields and `seeds`
    seeds.insert(at, "ran", ran)
    seeds.insert(at + 1, "trials", trials)
    return seeds


def group_label(fields: list[str], values) -> str:
    return ", ".join(f"{f}={v}" for f, v in zip(fields, values)) or "all trials"


def seed_groups(sweep_dir: Path, table: pd.DataFrame) -> list[SeedGroup]:
    """The trials that ran, per seed group, with their rounds; group i in PALETTE[i]."""
    by = group_fields(table)
    ok = table[table["status"] == "ok"]
    keyed = ok.groupby(by, sort=False, dropna=False) if by else [((), ok)]
    groups = []
    for i, (key, group) in enumerate(keyed):
        rounds = tuple(with_cumulative(pd.read_parquet(sweep_dir / run / "rounds.parquet")) for run in group["run"])
        groups.append(SeedGroup(group_label(by, key if isinstance(key, tuple) else (key,)),
                                PALETTE[i % len(PALETTE)], tuple(group[SEED]), rounds))
    return groups


def bandwidth_figures(table: pd.DataFrame, target: float | None = None) -> list[go.Figure]:
    """Convergence against bandwidth: time, uplink bytes and energy to the target loss against the uplink
    band per cell, one line per combination of the other swept fields (over seeds: their mean, with the 95%
    interval as a band); without any held-out loss (systems mode), the mean round duration instead. Empty when
    the uplink band was not swept."""
    if BANDWIDTH not in table:
        return []
    ok = table[table["status"] == "ok"]
    seeded = SEED in swept_fields(table)
    others = [f for f in group_fields(table) if f != BANDWIDTH and ok[f].nunique() > 1]
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
        for i, (key, group) in enumerate(ok.groupby(others) if others else [((), ok)]):
            points = group.dropna(subset=[column]).sort_values(BANDWIDTH)
            if len(points):
                name = group_label(others, key)
                if seeded:
                    fig.add_traces(bandwidth_band(points, column, name, PALETTE[i % len(PALETTE)]))
                else:
                    fig.add_scatter(x=points[BANDWIDTH], y=points[column], mode="lines+markers", name=name)
        fig.update_layout(title=title, xaxis_title="uplink band per cell (MHz)", yaxis_title=y_title, height=400)
        fig.update_xaxes(type="log")
        if fig.data:
            figures.append(fig)
    return figures


def bandwidth_band(points: pd.DataFrame, column: str, name: str, colour: str) -> list[go.Scatter]:
    """Over seeds, at each bandwidth: the mean of `column` among the seeds that measured it, with its 95%
    interval as a band (none where only one seed did)."""
    per = [(mhz, interval(group[column])) for mhz, group in points.groupby(BANDWIDTH)]
    x = [mhz for mhz, _ in per]
    return fg.band_traces(x, [iv.mean for _, iv in per], [iv.low for _, iv in per], [iv.high for _, iv in per],
                          name, colour, mode="lines+markers")


GLANCE = ("loss_gain", "final_loss", "time_to_target_s", "uplink_bytes_to_target", "energy_to_target_j",
          "completion_rate", "uplink_fraction_of_full")
SHARES = {"loss_gain", "completion_rate", "uplink_fraction_of_full"}  # shown in percent


def glance_table(sweep_dir: Path, table: pd.DataFrame, seeds: pd.DataFrame) -> pd.DataFrame:
    """The page's first table: a row per headline figure and a column per seed group, each cell 'mean [95%
    interval]'; then the models each group trained and emulated (read from its first trial that ran)."""
    by = group_fields(table)
    labels = [group_label(by, row) for row in seeds[by].itertuples(index=False)] if by else ["all trials"]
    rows = {"seeds (reached target)": [f"{s} ({n})" for s, n in zip(seeds["seeds"], seeds["time_to_target_s_n"])]}
    metrics = seed_metrics(seeds.columns)
    for column in GLANCE + tuple(c for c in metrics if c not in SEED_METRICS):
        rows[metrics[column]] = [interval_cell(row, column, glance_number(column))
                                 for row in seeds.itertuples(index=False)]
    ok = table[table["status"] == "ok"]
    keyed = ok.groupby(by, sort=False, dropna=False) if by else [((), ok)]
    summaries = [json.loads((sweep_dir / group["run"].iloc[0] / "summary.json").read_text()) for _, group in keyed]
    rows["trained on the host (learning curves)"] = [s.get("trained_model", "") for s in summaries]
    rows["emulated on the devices (timing, memory, bytes, energy)"] = [s.get("emulated_model", "") for s in summaries]
    return pd.DataFrame([[name, *cells] for name, cells in rows.items()], columns=["", *labels])


def glance_number(column: str):
    """How the glance writes a figure of `column`: shares in percent, bytes in units."""
    return (lambda v: f"{v:.1%}") if column in SHARES else in_units if "bytes" in column else fmt


def write_sweep_page(sweep_dir: Path, table: pd.DataFrame, target: float | None, how: str, title: str,
                     seeds: pd.DataFrame | None = None) -> Path:
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
    if seeds is not None:
        by = group_fields(table)
        groups = "1 group" if len(seeds) == 1 else f"{len(seeds)} groups"
        about = (f"{groups} of trials that differ only in seed; 'ran': the group's trials that did not fail. "
                 f"{SEEDS_ABOUT}")
        about += f" Target held-out loss {target:.4g} ({how})." if target is not None else ""
        headline, *bands = seed_band_figures(seed_groups(sweep_dir, table), target) or [None]
        glance = ("At a glance", "Mean over the seeds, with the 95% confidence interval of that mean in brackets. "
                  + (f"Target held-out loss {target:.4g} ({how})." if target is not None else ""),
                  glance_table(sweep_dir, table, seeds), [headline] if headline is not None else [])
        seed_section = [glance, ("Seeds", about, shown_seed_table(seeds, by + ["seeds", "ran"]), bands)]
    else:
        seed_section = []
    sections = seed_section + [("Trials", text, shown, bandwidth_figures(table, target)),
                               ("All trials overlaid", "The runs' figures, one colour per trial.", None,
                                comparison_figures(runs, target))]
    return write_page(sweep_dir / "sweep.html", title, sections)
