"""Where a capacity plan's systems-only runs (its probes and its horizon) happen.

`LocalRuns` runs each in this process, when the plan asks for its result: `fedfleet plan` without an
address. `ClusterRuns` runs each as a Ray task on any node of a cluster (`fedfleet plan --address`), the
way sweep trials run (scenarios/sweep.py): with no shared disk, the task writes its run folder to a
temporary folder on its node and returns the folder's files as bytes, and this process writes them where
the local run would have. A run is a pure function of its scenario, so a run's records are the same
wherever it ran, and a task lost with its node is simply run again.

The plan may name runs it will probably need before it needs them (`start`): on a cluster they begin at
once, as many as the cluster has CPUs, so the bisection's next probes are already running while the
current one finishes; here `start` does nothing. Only the runs the plan then asks for (`finish`) are
written and reported, so the plan is the same with and without a cluster; runs started and never asked
for are cancelled at the end (`close`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from scenarios.errors import ScenarioError
from scenarios.loader import parse_scenario
from scenarios.run_files import folder_files, write_files
from scenarios.schema import Scenario

# A task whose node dies is run again this many times before the plan fails (sweeps allow trials as many).
RUN_RETRIES = 3


def systems_scenario(scenario: Scenario, uplink_mhz: float, rounds: int) -> Scenario:
    """The scenario as a plan runs it: systems-only, `rounds` rounds, at `uplink_mhz` per cell, with no
    report and no checkpoints (a plan's run is simply run again; checkpoints would save every device)."""
    tree = scenario.model_dump(mode="json")
    tree["run"].update(mode="systems", rounds=rounds, checkpoint_every=0)
    tree["network"]["uplink_mhz"] = uplink_mhz
    tree["output"]["report"] = False
    return parse_scenario(tree, source=f"{scenario.name} at {uplink_mhz:g} MHz")


@dataclass(frozen=True)
class RunRequest:
    """One systems-only run of a plan: what to run and the folder its records go to."""

    scenario: Scenario
    run_dir: Path
    until_s: float | None = None  # the horizon's end in simulated seconds (RunOptions.until_s)


@dataclass(frozen=True)
class Finished:
    wall_s: float  # host time of the run itself
    node: str | None  # the Ray node that ran it; None: this process


class PlanRuns(Protocol):
    runs_ahead: bool  # whether `start` begins anything

    def start(self, request: RunRequest) -> None:
        """A run the plan will probably ask for: begin it now if runs can go ahead of the plan."""

    def keep_only(self, run_dirs: set[Path]) -> None:
        """Runs started ahead that the plan can no longer ask for (not in `run_dirs`) are abandoned, so that
        they do not hold CPUs the next ones need."""

    def finish(self, request: RunRequest, on_round: Callable[[dict], None] | None = None) -> Finished:
        """The run done and its folder written at request.run_dir. `on_round` sees each round's row as it
        is recorded, where the run is in this process."""

    def close(self) -> None:
        """Runs started and never asked for are abandoned."""


class LocalRuns:
    """Each run in this process, one after another, when the plan asks for it."""

    runs_ahead = False

    def start(self, request: RunRequest) -> None:
        pass

    def keep_only(self, run_dirs: set[Path]) -> None:
        pass

    def finish(self, request: RunRequest, on_round: Callable[[dict], None] | None = None) -> Finished:
        from scenarios.runner import RunOptions, run_scenario

        start = time.perf_counter()
        run_scenario(request.scenario, RunOptions(out=request.run_dir, progress=False, on_round=on_round,
                                                  until_s=request.until_s))
        return Finished(time.perf_counter() - start, None)

    def close(self) -> None:
        pass


@dataclass(frozen=True)
class RemoteRun:
    """What a run's task sends back: its run folder's files, the node it ran on and how long it took."""

    files: dict[str, bytes]  # path relative to the run folder -> content
    node: str
    wall_s: float


def run_remote(scenario: Scenario, until_s: float | None) -> RemoteRun:
    """Inside a Ray task: the run in a temporary folder on this node, its files returned. An error is raised
    to the plan, as it would be here."""
    import ray

    from scenarios.runner import RunOptions, run_scenario

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="fedfleet-plan-") as tmp:
        run_dir = Path(tmp) / "run"
        run_scenario(scenario, RunOptions(out=run_dir, progress=False, until_s=until_s))
        files = folder_files(run_dir)
    return RemoteRun(files, ray.get_runtime_context().get_node_id(), time.perf_counter() - start)


class ClusterRuns:
    """Each run a Ray task of one CPU on the cluster this process is attached to (ray.init done)."""

    runs_ahead = True

    def __init__(self) -> None:
        import ray

        cpus = ray.cluster_resources().get("CPU", 0)
        if cpus < 1:
            raise ScenarioError(f"--address: the Ray cluster has {cpus:g} CPUs; a plan's run needs 1")
        self._slots = int(cpus)
        # Ray retries only a task that was lost (its node died); an error of the run itself is the plan's.
        self._task = ray.remote(run_remote).options(num_cpus=1, max_retries=RUN_RETRIES, retry_exceptions=False)
        self._pending: dict[Path, object] = {}  # run folder -> the task's result, not yet asked for

    def start(self, request: RunRequest) -> None:
        if request.run_dir not in self._pending and self._running() < self._slots:
            self._submit(request)

    def keep_only(self, run_dirs: set[Path]) -> None:
        import ray

        for run_dir in [d for d in self._pending if d not in run_dirs]:
            ray.cancel(self._pending.pop(run_dir))

    def finish(self, request: RunRequest, on_round: Callable[[dict], None] | None = None) -> Finished:
        import ray

        ref = self._pending.pop(request.run_dir, None) or self._task.remote(request.scenario, request.until_s)
        result: RemoteRun = ray.get(ref)
        write_files(request.run_dir, result.files)
        return Finished(result.wall_s, result.node)

    def close(self) -> None:
        import ray

        for ref in self._pending.values():
            ray.cancel(ref)
        self._pending.clear()

    def _submit(self, request: RunRequest) -> None:
        self._pending[request.run_dir] = self._task.remote(request.scenario, request.until_s)

    def _running(self) -> int:
        """Tasks started ahead and not finished yet."""
        import ray

        refs = list(self._pending.values())
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0) if refs else ([], [])
        return len(refs) - len(ready)
