"""A sweep: one scenario over a grid of overrides, each trial a full run in its own folder, the trials in
parallel as Ray tasks; one table (sweep.parquet, sweep.csv) and one page (sweep.html) over them all
(analysis/sweep_report.py).

Each trial runs in a placement group of its own: one bundle for the trial's driver and, in train mode, one
per training actor, which the group captures. Ray queues whole groups, so a trial never starts with its
driver holding CPUs that its actors then wait for behind other trials' drivers. A trial may run on any
node, with no shared disk: it writes its run folder to a temporary folder there and sends the files back,
and this process writes them under SWEEP_DIR/trials/ as each trial ends, so a crash loses only the trials
still running.

A trial whose task is lost (its node died, its process was killed) is run again from the start, up to
TRIAL_RETRIES times: Ray moves the bundles its group held on the dead node to another node (the retry waits
until one has room), and the retry starts in a new temporary folder; a trial is a pure function of its
scenario, so the retry's records are those the lost attempt would have written. The other trials go on
untouched. A trial that fails in its own code is not retried: its error is its result.

A sweep over seeds (`seeds=N`) adds the seed as the last axis: the scenario's seed (after the fixed
overrides and the first trial's), then +1, ..., +N-1; the report groups the trials that differ only in seed.

A local Ray (no address) is started with CPUs enough for the largest trial even where the machine has fewer
cores: a trial's driver waits on its actors nearly all the time, so counting it as a CPU of its own would
only refuse, on a small machine, a scenario with two workers. On a cluster the check stands: there the
CPUs are what the nodes declared.

    fedfleet sweep SCENARIO --set network.uplink_mhz=5,10,20 --set strategy.name=fedavg,fedbuff --seeds 3
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from analysis.sweep_report import write_sweep
from scenarios.grid import Trial, grid, seed_values
from scenarios.errors import ScenarioError
from scenarios.loader import load_scenario
from scenarios.run_files import folder_files, write_files
from scenarios.schema import Scenario

NAN = float("nan")
# Node losses are rare; a trial lost this many times more is failed rather than tried for ever.
TRIAL_RETRIES = 3


@dataclass(frozen=True)
class TrialResult:
    """What a trial sends back: its run folder's files, where and when it ran, and why it failed."""

    files: dict[str, bytes]  # path relative to the run folder -> content
    node: str
    wall_start: float
    wall_end: float
    error: str | None = None


def run_sweep(scenario: str | Path, sets: list[str], out: Path | None = None, address: str | None = None,
              target: float | None = None, progress: bool = True, fixed: list[str] = (),
              seeds: int | None = None) -> Path:
    """Run every trial of the grid `sets` ('field.path=v1,v2,...'; `fixed` overrides apply to all), over
    `seeds` seeds when given, and return the sweep folder. Every trial's scenario is validated before
    anything runs."""
    trials = grid(sets)
    if seeds is not None:  # the seeds start from the scenario's own, after the overrides
        trials = grid(sets, seed_values(trial_scenario(scenario, fixed, trials[0]).seed, seeds))
    scenarios = [trial_scenario(scenario, fixed, trial) for trial in trials]
    sweep_dir = new_sweep_dir(scenarios[0], out)
    # Imported here: Ray starts only once every trial is valid, and the figures need neither Ray nor fleet.
    from fleet.pool import ray_session

    runtime = scenarios[0].runtime
    address = address or runtime.address
    cpus = os.cpu_count() or 1
    if not address:
        cpus = max(cpus, *(trial_cpus(s) for s in scenarios))
    with ray_session(address, cpus, runtime.dashboard, runtime.loopback_only, runtime.connect_timeout_s):
        check_capacity(trials, scenarios)
        (sweep_dir / "trials").mkdir(parents=True, exist_ok=True)
        results = run_trials(trials, scenarios, sweep_dir, progress)

    write_sweep(sweep_dir, trials, results, target, scenarios[0].output.target_loss, f"fedfleet sweep: {scenarios[0].name}")
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
    """The trial's driver first, then one bundle per training actor (systems mode trains nothing), with its
    GPU share when it holds one: an actor asks its bundle for what it needs."""
    rt = scenario.runtime
    actors = rt.workers if scenario.run.mode == "train" else 0
    gpus = {"GPU": rt.gpus_per_worker} if rt.gpus_per_worker > 0 else {}
    return [{"CPU": 1}] + [{"CPU": rt.threads_per_worker, **gpus}] * actors


def trial_cpus(scenario: Scenario) -> float:
    return sum(b["CPU"] for b in trial_bundles(scenario))


def check_capacity(trials: list[Trial], scenarios: list[Scenario]) -> None:
    """A trial that needs more CPUs or GPUs than the cluster has would wait for ever."""
    import ray

    have = ray.cluster_resources()
    cpus, gpus = have.get("CPU", 0), have.get("GPU", 0)
    for trial, scenario in zip(trials, scenarios):
        need = trial_cpus(scenario)
        if need > cpus:
            raise ScenarioError(
                f"trial {trial.index} ({', '.join(trial.overrides)}): runtime.workers x "
                f"runtime.threads_per_worker + 1 for its driver needs {need} CPUs; the Ray cluster has {cpus:g}")
        need = sum(b.get("GPU", 0) for b in trial_bundles(scenario))
        if need > gpus:
            raise ScenarioError(
                f"trial {trial.index} ({', '.join(trial.overrides)}): runtime.workers x "
                f"runtime.gpus_per_worker needs {need:g} GPUs; the Ray cluster has {gpus:g}")


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
        files = folder_files(run_dir)
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
        # Ray retries only a task that was lost (retry_exceptions is off); run_trial returns its own errors.
        options = dict(num_cpus=1, scheduling_strategy=strategy, max_retries=TRIAL_RETRIES, retry_exceptions=False)
        pending[task.options(**options).remote(scenario)] = (trial, group)
    results = {}
    try:
        with tqdm(total=len(trials), desc="sweep", unit="trial", disable=not progress) as bar:
            while pending:
                [ref], _ = ray.wait(list(pending))
                trial, group = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as err:  # lost for good: more times than retried
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

