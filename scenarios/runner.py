"""One run: scenario in, run folder out. The story is `run_scenario`: assemble (check the scenario and build
its parts), open the run folder, emulate, record the adapter and the summary, write the report.

Order matters: everything that can fail on bad input (the scenario, its files, the data) is done before
the run folder is created, so a mistake leaves nothing behind. Ray starts only after that, and before the
folder too: a cluster without the GPUs runtime.gpus_per_worker asks for is found out first.

Once the folder exists, whatever stops the run part way (a stop signal, Ctrl-C twice, a full disk) ends in
RunStopped, which says how to go on from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from aggregation import Strategy
from analysis.detection import detection_summary, write_detection
from analysis.recorder import RunRecorder
from analysis.report import write_report
from fleet.base_model import resolve_model_path
from fleet.cluster import check_cluster
from fleet.detection import DetectionProbe
from fleet.emulator import StopRequested
from fleet.grouping import GroupedHost
from fleet.pool import WorkerFaults, WorkerMemory, WorkerPool, missing_gpus, ray_session
from fleet.trainer import set_flat
from scenarios.assembly import Assembly, assemble, group_memory, group_size, lora_spec, train_settings
from scenarios.client_data import eval_windows
from scenarios.errors import RunStopped, ScenarioError
from scenarios.run_lock import run_lock
from scenarios.schema import Scenario
from scenarios.stop import StopSignals
from scenarios.summary import summarise


@dataclass(frozen=True)
class RunOptions:
    """How to run, not what: never part of the scenario's identity."""

    out: Path | None = None
    resume: Path | None = None  # the folder of a stopped run, to go on from its last checkpoint
    progress: bool = True
    on_round: Callable[[dict], None] | None = None  # called with each rounds.parquet row as it is written
    stop_on_signals: bool = False  # SIGINT and SIGTERM stop the run with a checkpoint (main thread only)
    # A plan's horizon (scenarios/horizon.py): the run ends at this simulated time, however many of run.rounds
    # are left; summary.json records it as until_s. None: run.rounds alone end the run.
    until_s: float | None = None


@dataclass(frozen=True)
class Emulated:
    """What an emulation leaves besides its records."""

    adapter: torch.Tensor  # the final global adapter
    detection: pd.DataFrame | None  # per evaluated site, fault detection (cell-site scenarios)
    faults: WorkerFaults  # host health: faults change no result, so they are only counted
    memory: list[WorkerMemory]  # each worker's peak memory (none in systems mode)


def run_scenario(scenario: Scenario, options: RunOptions = RunOptions()) -> Path:
    wall_start = time.time()
    # The RDP accountant warns through absl whenever an order fails to converge (it then skips that order).
    logging.getLogger("absl").setLevel(logging.ERROR)
    run = assemble(scenario)
    if scenario.run.mode == "train" and scenario.runtime.address:  # a cluster that is not there: no run folder
        check_cluster(scenario.runtime.address, scenario.runtime.connect_timeout_s)
    with contextlib.ExitStack() as folder:
        if scenario.run.mode == "train":
            folder.enter_context(host_ray(scenario))
        run_dir, recorder, saved = open_run_folder(scenario, options, folder)
        with resumable(run_dir):
            emulated = emulate(run, run_dir, recorder, saved, options)
            if scenario.run.mode == "train":
                save_adapter(run.server_model, emulated.adapter, run.strategy, run_dir / "adapter")
            summary = (summarise(run, recorder, wall_start) | asdict(emulated.faults) | worker_memory(emulated.memory)
                       | run.strategy.accounting())
            if options.until_s is not None:
                summary["until_s"] = options.until_s
            if emulated.detection is not None:
                found = detection_summary(pd.DataFrame(recorder.rounds_rows), emulated.detection,
                                          scenario.data.cellsite.target_auroc)
                write_detection(run_dir, emulated.detection, found)
                summary.update(found)
            recorder.close(summary)
        if scenario.output.report:
            write_report(run_dir)
    return run_dir


@contextlib.contextmanager
def host_ray(scenario: Scenario):
    """Ray for a training run (a new local one, or the cluster runtime.address names), refused at once when it
    cannot place a worker holding runtime.gpus_per_worker GPUs: Ray itself would wait for one for ever."""
    rt = scenario.runtime
    with ray_session(rt.address, rt.workers * rt.threads_per_worker, rt.dashboard, rt.loopback_only,
                     rt.connect_timeout_s):
        problem = missing_gpus(rt.gpus_per_worker)
        if problem:
            raise ScenarioError(f"runtime.gpus_per_worker: {problem}")
        yield


def worker_memory(memory: list[WorkerMemory]) -> dict:
    """summary.json's figures of the workers' peak memory (MiB), the largest over workers: what
    runtime.worker_memory_gb must cover."""
    cuda = [m.peak_cuda_mb for m in memory if m.peak_cuda_mb is not None]
    return {"worker_peak_rss_mb": max((m.peak_rss_mb for m in memory), default=None),
            "worker_peak_cuda_mb": max(cuda, default=None)}


@contextlib.contextmanager
def resumable(run_dir: Path):
    """A run stopped part way, by request or by a full disk, as RunStopped (the checkpoint is intact: files
    are renamed into place only once written whole)."""
    try:
        yield
    except KeyboardInterrupt:
        raise RunStopped(run_dir, "interrupted", 128 + signal.SIGINT) from None
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        raise RunStopped(run_dir, f"the disk is full ({err.strerror}, writing {err.filename})", 1) from err


def open_run_folder(scenario: Scenario, options: RunOptions,
                    folder: contextlib.ExitStack) -> tuple[Path, RunRecorder, dict | None]:
    """A new run folder, or the stopped run's to go on with, locked until `folder` closes; its recorder, and
    the emulator state saved at its last checkpoint (None: start from the beginning)."""
    if options.resume is None:
        run_dir = new_run_dir(scenario, options)
        recorder = RunRecorder(run_dir, {**scenario.model_dump(mode="json"), "git_sha": git_sha()})
        folder.enter_context(run_lock(run_dir))
        return run_dir, recorder, None
    run_dir = options.resume
    folder.enter_context(run_lock(run_dir))  # before reopening, which cuts the records back
    recorder, saved = RunRecorder.reopen(run_dir)
    if options.progress:
        print(f"{run_dir}: " + ("no checkpoint yet, starting again" if saved is None else
                                f"{len(recorder.rounds_rows)} rows kept; replaying the clock to the checkpoint"),
              file=sys.stderr)
    return run_dir, recorder, saved


def emulate(run: Assembly, run_dir: Path, recorder: RunRecorder, saved: dict | None,
            options: RunOptions) -> Emulated:
    """The clock, with real training on Ray workers in train mode; per-device state lives in files under the
    run folder while it runs and is removed at the end."""
    scenario = run.scenario
    state = run_dir / "state"
    clients = run.client_side(state)
    group = group_size(scenario)
    if scenario.run.mode == "train" and scenario.runtime.group_size == "auto" and options.progress:
        print(auto_group_line(run, group), file=sys.stderr)
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, state, ignore_errors=True)
        bar = stack.enter_context(tqdm(total=scenario.run.rounds + 1, initial=len(recorder.rounds_rows),
                                       desc=scenario.name, unit="round", disable=not options.progress))
        pool = probe = None
        if scenario.run.mode == "train":
            pool = stack.enter_context(start_pool(run))
            if run.data.detection is not None:
                probe = DetectionProbe(pool, run.data.detection, run.fleet, clients, run.strategy.groups)
        signals = StopSignals()
        if options.stop_on_signals:  # after Ray has started: ray.init installs a SIGTERM handler of its own
            stack.enter_context(signals.installed())

        def progress(row: dict) -> None:
            if options.on_round is not None:
                options.on_round(row)
            bar.update(1)
            loss = row["eval_loss"]
            bar.set_postfix(round=row["round"], sim_s=f"{row['t_end']:.0f}",
                            loss="-" if np.isnan(loss) else f"{loss:.3f}")

        host = GroupedHost(pool, group) if pool is not None and group > 1 else pool
        try:
            until_s = float("inf") if options.until_s is None else options.until_s
            final = run.emulator(clients, host, recorder, (probe,) if probe else (), progress, saved,
                                 signals.requested, until_s).run()
        except StopRequested as stop:
            raise RunStopped(run_dir, f"{signals.name}: {stop}, with a checkpoint", 128 + signals.signum) from None
        detection = None if probe is None else local_baselines(run, probe, clients, final)
        faults = pool.faults() if pool is not None else WorkerFaults(jobs_retried=0, workers_replaced=0)
        memory = pool.peak_memory() if pool is not None else []
    return Emulated(final, detection, faults, memory)


def auto_group_line(run: Assembly, group: int) -> str:
    """What runtime.group_size: auto came to, and from what."""
    memory, rt = group_memory(run.scenario), run.scenario.runtime
    return (f"runtime.group_size: auto -> {group} clients per pass ({memory.per_client_bytes / 1e6:.1f} MB per "
            f"client + {memory.shared_bytes / 1e6:.0f} MB per worker, estimated, in runtime.worker_memory_gb "
            f"{rt.worker_memory_gb:g}; at most run.clients_per_round {run.scenario.run.clients_per_round})")


@contextlib.contextmanager
def start_pool(run: Assembly):
    """Ray, and the workers that train: each loads the base model and the client data once."""
    s, rt = run.scenario, run.scenario.runtime
    with ray_session(rt.address, rt.workers * rt.threads_per_worker, rt.dashboard, rt.loopback_only,
                     rt.connect_timeout_s):
        windows = eval_windows(run.data, s.data.eval_windows, s.training.seq_len, s.seed)
        with WorkerPool(rt.workers, rt.threads_per_worker, resolve_model_path(s.model.path), lora_spec(s),
                        train_settings(s), run.data.train, run.data.test, windows, rt.gpus_per_worker) as pool:
            pool.wait_ready()
            yield pool


def local_baselines(run: Assembly, probe: DetectionProbe, clients, final: torch.Tensor) -> pd.DataFrame:
    """Per evaluated site, detection after it trains alone: from the initial adapter (local-only) and from its
    own final one (fine-tuned further)."""
    steps = run.scenario.data.cellsite.local_sessions * run.scenario.training.local_steps
    own = [clients.start(int(d), final) for d in probe.devices]
    return probe.sites_table(run.data, steps, probe.alone([run.adapter] * len(own), steps),
                             probe.alone(own, steps, probe.pool.put(run.strategy.base_delta)))


def new_run_dir(scenario: Scenario, options: RunOptions) -> Path:
    if options.out is not None:
        if options.out.exists() and any(options.out.iterdir()):
            raise ScenarioError(f"--out: {options.out} exists and is not empty")
        if options.out.exists():
            options.out.rmdir()
        return options.out
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path(scenario.output.dir) / f"{scenario.name}-seed{scenario.seed}-{stamp}"


def git_sha() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def save_adapter(model, adapter: torch.Tensor, strategy: Strategy, folder: Path) -> None:
    """The final global adapter in PEFT format; bottleneck adapters and FLoRA's merged weights, which PEFT
    does not know, beside it."""
    from safetensors.torch import save_file

    set_flat(model, adapter)
    model.save_pretrained(folder, safe_serialization=True)
    extra = {n: p.detach().contiguous() for n, p in model.named_parameters() if ".bottleneck." in n}
    if extra:
        save_file(extra, str(folder / "bottleneck.safetensors"))
    if strategy.base_delta is not None:
        save_file({"base_delta": strategy.base_delta.contiguous()}, str(folder / "base_delta.safetensors"))
