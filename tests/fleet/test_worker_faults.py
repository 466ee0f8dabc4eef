"""A worker process killed in the middle of a training job: the pool replaces the worker and submits the job
again, and the result is that of the same job without the fault: for one job on a one-worker pool (the retry
waits for the new worker), and for a whole run, whose records match an unfaulted run and whose summary.json
counts the fault (slow).

The kill is made to land inside a job: one actor's first training call writes the actor's process id to a
file and waits; a thread of this test reads the file and sends SIGKILL to that process. If the kill never
came, the job would go on after its wait and the run would record no retry, failing the test.
"""

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import torch

import scenarios.runner
from fleet.data import PackedTokens
from fleet.pool import WorkerFaults, WorkerPool
from fleet.trainer import LoraSpec, TrainJob, TrainSettings
from scenarios.loader import load_scenario
from scenarios.runner import RunOptions, run_scenario

STALL_S = 120.0  # how long the stalled job waits for its kill; far beyond the test's own run

# Functions of this module run inside actors, whose processes cannot import a test module: send them by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def overrides(tiny_jsonl) -> list[str]:
    """Real training, two workers, three rounds of six clients over a few clients' short text."""
    return ["fleet.size=60", "run.rounds=3", "run.clients_per_round=6", "run.deadline_s=600",
            "training.local_steps=2", "training.batch_size=4", "data.eval_windows=16", "data.source=jsonl",
            f"data.path={tiny_jsonl}", "output.report=false", "runtime.workers=2"]


def stall(actor, marker_path: str) -> None:
    """Run inside an actor (Ray's __ray_call__): its next training call writes the actor's process id to
    `marker_path` and waits STALL_S before training."""
    train = actor.trainer.train

    def stalled(*args, **kwargs):
        actor.trainer.train = train  # only this call stalls (a restarted actor has a new trainer anyway)
        Path(marker_path).write_text(str(os.getpid()))
        time.sleep(STALL_S)
        return train(*args, **kwargs)

    actor.trainer.train = stalled


def stalling_pool(marker: Path) -> type[WorkerPool]:
    """A WorkerPool whose first actor, once ready, stalls its next training call until it is killed."""

    class StallingPool(WorkerPool):
        def wait_ready(self) -> None:
            super().wait_ready()
            ray.get(self._actors[0].__ray_call__.remote(stall, str(marker)))

    return StallingPool


def kill_when_stalled(marker: Path, killed: list[int]) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + STALL_S
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text():
                pid = int(marker.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def records(run: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """rounds.parquet and clients.parquet without host wall-clock columns (the only ones a fault may move)."""
    frames = [pd.read_parquet(run / name) for name in ("rounds.parquet", "clients.parquet")]
    return tuple(f.drop(columns=[c for c in f.columns if c.startswith("wall")]) for f in frames)


def small_pool(workers: int, pool: type[WorkerPool] = WorkerPool) -> WorkerPool:
    rng = np.random.default_rng(0)
    texts = PackedTokens.pack([rng.integers(0, 200, 300) for _ in range(3)])
    lora = LoraSpec(r=4, alpha=8.0, dropout=0.1, target_modules=("q_proj", "v_proj"))
    settings = TrainSettings(seed=0, batch_size=4, seq_len=32, lr=1e-2, weight_decay=0.0)
    return pool(workers, 1, "builtin", lora, settings, texts, texts, torch.zeros(2, 33, dtype=torch.int64))


@ray.remote(num_cpus=1)
class StuckStart:
    """A worker whose start-up never ends (as if loading its model hung): it writes its process id and waits."""

    def __init__(self, marker_path: str):
        Path(marker_path).write_text(str(os.getpid()))
        time.sleep(STALL_S)


def test_a_worker_killed_while_starting_is_started_again(tmp_path, ray_local):
    marker, killed = tmp_path / "starting.pid", []

    class FirstStartStuck(WorkerPool):
        stuck = False

        def _new_actor(self):
            if FirstStartStuck.stuck:
                return super()._new_actor()
            FirstStartStuck.stuck = True
            return StuckStart.remote(str(marker))

    job = TrainJob(client=3, data_client=0, round=1, base_version=0, steps=2)
    watcher = kill_when_stalled(marker, killed)
    with small_pool(1, FirstStartStuck) as pool:
        pool.wait_ready()
        watcher.join(timeout=1)
        assert len(killed) == 1 and pool.faults() == WorkerFaults(jobs_retried=0, workers_replaced=1)
        start = torch.from_numpy(np.random.default_rng(1).normal(0, 0.02, pool_adapter_size(pool))).float()
        started_again = pool.get([pool.train(job, pool.put(start), None)])[0]
    with small_pool(1) as pool:
        expected = pool.get([pool.train(job, pool.put(start), None)])[0]
    assert torch.equal(started_again.delta, expected.delta) and expected.delta.abs().sum() > 0


def test_a_job_whose_worker_is_killed_gives_the_same_result(tmp_path, ray_local):
    job = TrainJob(client=7, data_client=1, round=2, base_version=0, steps=3)
    with small_pool(workers=1) as pool:
        pool.wait_ready()
        start = pool.put(torch.from_numpy(np.random.default_rng(1).normal(0, 0.02, pool_adapter_size(pool))).float())
        expected = pool.get([pool.train(job, start, None)])[0]
        assert pool.faults() == WorkerFaults(jobs_retried=0, workers_replaced=0)

        marker, killed = tmp_path / "stalled.pid", []
        ray.get(pool._actors[0].__ray_call__.remote(stall, str(marker)))
        watcher = kill_when_stalled(marker, killed)
        retried = pool.get([pool.train(job, start, None)])[0]
        watcher.join(timeout=1)
        assert len(killed) == 1
        assert pool.faults() == WorkerFaults(jobs_retried=1, workers_replaced=1)
    assert torch.equal(retried.delta, expected.delta)
    assert (retried.loss_first, retried.loss_last, retried.num_samples) == (
        expected.loss_first, expected.loss_last, expected.num_samples)
    assert expected.delta.abs().sum() > 0  # the job trained something


def pool_adapter_size(pool: WorkerPool) -> int:
    return ray.get(pool._actors[0].__ray_call__.remote(lambda actor: actor.trainer.layout.size))


@pytest.mark.slow
def test_a_worker_killed_mid_job_changes_no_result(tmp_path, overrides, monkeypatch, ray_local):
    clean = run_scenario(load_scenario("quickstart", overrides), RunOptions(out=tmp_path / "clean", progress=False))

    marker, killed = tmp_path / "stalled.pid", []
    monkeypatch.setattr(scenarios.runner, "WorkerPool", stalling_pool(marker))
    watcher = kill_when_stalled(marker, killed)
    faulted = run_scenario(load_scenario("quickstart", overrides),
                           RunOptions(out=tmp_path / "faulted", progress=False))
    watcher.join(timeout=1)

    assert len(killed) == 1  # the kill landed inside a training job of the faulted run
    for a, b in zip(records(clean), records(faulted)):
        assert len(a) > 0
        pd.testing.assert_frame_equal(a, b)
    summary = json.loads((faulted / "summary.json").read_text())
    assert summary["jobs_retried"] >= 1
    assert summary["workers_replaced"] == 1
    plain = json.loads((clean / "summary.json").read_text())
    assert (plain["jobs_retried"], plain["workers_replaced"]) == (0, 0)
    assert summary["final_eval_loss"] == plain["final_eval_loss"]
