"""A sweep: one scenario over a grid of overrides, each trial a full run in its own folder, the trials in
parallel as Ray tasks; one table (sweep.parquet, sweep.csv) and one page (sweep.html) over them all.

Each trial runs in a placement group of its own: one bundle for the trial's driver and, in train mode, one
per training actor, which the group captures. Ray queues whole groups, so a trial never starts with its
driver holding CPUs that its actors then wait for behind other trials' drivers. A trial may run on any
node, with no shared disk: it writes its run folder to a temporary folder there and sends the files back,
and this process writes them under SWEEP_DIR/trials/ as each trial ends, so a crash loses only the trials
still running.

    fedfleet sweep SCENARIO --set network.uplink_mhz=5,10,20 --set strategy.name=fedavg,fedbuff
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import yaml
from tqdm import tqdm

from analysis.compare import comparison_figures, to_target, write_page
from analysis.detection import detection_columns
from analysis.grid import Trial, grid
from scenarios.errors import ScenarioError
from scenarios.loader import load_scenario
from scenarios.schema import Scenario

BANDWIDTH = "network.uplink_mhz"
NAN = float("nan")
# What a failed trial measured: no rounds (to_target then gives NaN for each of its columns).
NO_ROUNDS = pd.DataFrame({c: pd.Series(dtype=float) for c in ("t_end", "bytes_up", "bytes_down", "energy_j",
                                                               "eval_loss")})


@dataclass(frozen=True)
class TrialResult:
    """What a trial sends back: its run folder's files, where and when it ran, and why it failed."""

    files: dict[str, bytes]  # path relative to the run folder -> content
    node: str
    wall_start: float
    wall_end: float
    error: str | None = None


def run_sweep(scenario: str | Path, sets: list[str], out: Path | None = None, address: str | None = None,
              target: float | None = None, progress: bool = True, fixed: list[str] = ()) -> Path:
    """Run every trial of the grid `sets` ('field.path=v1,v2,...'; `fixed` overrides apply to all) and
    return the sweep folder. Every trial's scenario is validated before anything runs."""
    trials = grid(sets)
    scenarios = [trial_scenario(scenario, fixed, trial) for trial in trials]
    sweep_dir = new_sweep_dir(scenarios[0], out)
    # Imported here: Ray starts only once every trial is valid, and the figures need neither Ray nor fleet.
    from fleet.pool import ray_session

    runtime = scenarios[0].runtime
    with ray_session(address or runtime.address, os.cpu_count() or 1, runtime.dashboard, runtime.loopback_only):
        check_capacity(trials, scenarios)
        (sweep_dir / "trials").mkdir(parents=True, exist_ok=True)
        results = run_trials(trials, scenarios, sweep_dir, progress)

    runs = {t.index: load_trial(sweep_dir / "trials" / t.name, results[t.index]) for t in trials}
    target, how = choose_target(target, scenarios[0], runs)
    table = sweep_table(sweep_dir, trials, results, runs, target)
    table.to_parquet(sweep_dir / "sweep.parquet", index=False)
    table.to_csv(sweep_dir / "sweep.csv", index=False)
    write_sweep_page(sweep_dir, table, target, how, f"fedfleet sweep: {scenarios[0].name}")
    return sweep_dir


def trial_scenario(scenario: str | Path, fixed: list[str], trial: Trial) -> Scenario:
    try:
        return load_scenario(scenario, [*fixed, *trial.overrides])
    except ScenarioError as err:
        raise ScenarioError(f"trial {trial.index} ({', '.join(trial.overrides)}): {err}") from None


def new_sweep_dir(scenario: Scenario, out: Path | None) -> Path:
    if out is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        return Path(scenario.output.dir) / f"sweep-{scenario.name}-{stamp}"
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ScenarioError(f"--out: {out} exists and is not empty")
    return out


def trial_bundles(scenario: Scenario) -> list[dict[str, float]]:
    """The trial's driver first, then one bundle per training actor (systems mode trains nothing)."""
    rt = scenario.runtime
    actors = rt.workers if scenario.run.mode == "train" else 0
    return [{"CPU": 1}] + [{"CPU": rt.threads_per_worker}] * actors


def check_capacity(trials: list[Trial], scenarios: list[Scenario]) -> None:
    """A trial that needs more CPUs than the cluster has would wait for ever."""
    import ray

    cpus = ray.cluster_resources().get("CPU", 0)
    for trial, scenario in zip(trials, scenarios):
        need = sum(b["CPU"] for b in trial_bundles(scenario))
        if need > cpus:
            raise ScenarioError(
                f"trial {trial.index} ({', '.join(trial.overrides)}): runtime.workers x "
                f"runtime.threads_per_worker + 1 for its driver needs {need} CPUs; the Ray cluster has {cpus:g}")


def run_trial(scenario: Scenario) -> TrialResult:
    """Runs inside a Ray task: the trial in a temporary folder on this node, its files returned."""
    import ray

    from scenarios.runner import RunOptions, run_scenario

    wall_start, error = time.time(), None
    with tempfile.TemporaryDirectory(prefix="fedfleet-trial-") as tmp:
        run_dir = Path(tmp) / "run"
        try:
            run_scenario(scenario, RunOptions(out=run_dir, progress=False))
        except Exception as err:  # a failed trial is a result too: the others go on
            error = f"{type(err).__name__}: {err}"
        files = {p.relative_to(run_dir).as_posix(): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}
    return TrialResult(files, ray.get_runtime_context().get_node_id(), wall_start, time.time(), error)


def run_trials(trials: list[Trial], scenarios: list[Scenario], sweep_dir: Path,
               progress: bool) -> dict[int, TrialResult]:
    """All trials submitted at once, each with its placement group; results written as they arrive."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    task = ray.remote(run_trial)
    pending = {}
    for trial, scenario in zip(trials, scenarios):
        group = placement_group(trial_bundles(scenario))
        # The driver takes bundle 0; the actors it creates are captured into the group's other bundles.
        strategy = PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=0,
                                                    placement_group_capture_child_tasks=True)
        pending[task.options(num_cpus=1, scheduling_strategy=strategy).remote(scenario)] = (trial, group)
    results = {}
    try:
        with tqdm(total=len(trials), desc="sweep", unit="trial", disable=not progress) as bar:
            while pending:
                [ref], _ = ray.wait(list(pending))
                trial, group = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as err:  # the task itself was lost: a node died, a worker crashed
                    result = TrialResult({}, "", NAN, NAN, f"{type(err).__name__}: {err}")
                remove_placement_group(group)
                write_files(sweep_dir / "trials" / trial.name, result.files)
                results[trial.index] = result
                bar.update()
                bar.set_postfix(failed=sum(r.error is not None for r in results.values()))
    finally:
        for _, group in pending.values():
            remove_placement_group(group)
    return results


def write_files(folder: Path, files: dict[str, bytes]) -> None:
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def load_trial(folder: Path, result: TrialResult) -> tuple[pd.DataFrame, dict] | None:
    """A finished trial's rounds and summary; None for a failed one."""
    if result.error is not None:
        return None
    return pd.read_parquet(folder / "rounds.parquet"), json.loads((folder / "summary.json").read_text())


def choose_target(target: float | None, scenario: Scenario,
                  runs: dict[int, tuple[pd.DataFrame, dict] | None]) -> tuple[float | None, str]:
    """The loss every trial's 'to target' figures are measured to, and where it came from."""
    if target is not None:
        return target, "given"
    if scenario.output.target_loss is not None:
        return scenario.output.target_loss, "the scenario's output.target_loss"
    finals = [s["final_eval_loss"] for _, s in filter(None, runs.values()) if s.get("final_eval_loss") is not None]
    if not finals:
        return None, "no trial measured a held-out loss"
    return max(finals), "the highest final loss among the trials, so that every trial reaches it"


def sweep_table(sweep_dir: Path, trials: list[Trial], results: dict[int, TrialResult],
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
