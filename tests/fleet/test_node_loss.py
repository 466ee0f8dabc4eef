"""A Ray node lost in the middle of the work: nothing the node held changes a result. On a cluster of two
nodes started here, the node that runs the training is removed while one of its workers is inside a job:

- a run whose workers all live on the lost node replaces them on the other node, submits their jobs again,
  and records what an unfaulted run records; its summary.json counts the workers replaced;
- a finished result still in the lost node's object store (results over Ray's 100 KiB inline limit wait
  there until fetched) is computed again by the pool;
- a sweep trial running on the lost node is run again from the start on the other node and records what a
  plain run of its scenario records, while the trial on the other node runs once, untouched.

The loss lands inside a job: a worker's first training job of round 2 (rounds 0 and 1 are on record by then)
writes its node's id to a marker file and waits; a thread of this test sees the file and removes the node. If
the node were never removed, the job would go on after its wait, nothing would be replaced or retried, and the
tests would fail.

The cluster is this module's own: the session's local Ray (conftest.ray_local) is stopped for its length and
started again after it. Its nodes listen on 127.0.0.1 only and keep their files in a private temporary
folder, so no other Ray on this machine finds it. Each test adds a fresh second node, 2 CPUs like the head:
room for the workers that replace the lost node's.
"""

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray
import torch
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

import scenarios.runner
import scenarios.sweep
from fleet.data import PackedTokens
from fleet.pool import TrainerActor, WorkerFaults, WorkerPool, _node_address_is_loopback, start_ray
from fleet.trainer import LoraSpec, TrainJob, TrainSettings
from scenarios.loader import load_scenario
from scenarios.runner import RunOptions, run_scenario
from scenarios.sweep import run_sweep
from tests.fleet.test_worker_faults import records

STALL_S = 150.0  # how long the stalled job waits for its node to go; far beyond the tests' own runs
STALLED_ROUND = 2
NODE_CPUS = 2

# Functions of this module run inside actors and trial tasks, whose processes cannot import a test module:
# send them by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    """A head node of NODE_CPUS CPUs, with this process attached as its driver."""
    had_local = ray.is_initialized()
    if had_local:
        ray.shutdown()
    # Short: Ray's socket paths live under it.
    with tempfile.TemporaryDirectory(prefix="rn", dir="/tmp", ignore_cleanup_errors=True) as ray_tmp, \
            pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_TMPDIR", ray_tmp)
        with _node_address_is_loopback(True):
            head = Cluster(initialize_head=True, head_node_args={"num_cpus": NODE_CPUS, "include_dashboard": False})
            start_ray(head.address, num_cpus=0)  # attaches: num_cpus is the cluster's business
        try:
            yield head
        finally:
            ray.shutdown()
            head.shutdown()
    if had_local:
        start_ray(None, num_cpus=2)  # as conftest.ray_local started it


@pytest.fixture
def second_node(cluster):
    """A node of NODE_CPUS CPUs for the test to lose; removed at the end if the test did not."""
    with _node_address_is_loopback(True):
        node = cluster.add_node(num_cpus=NODE_CPUS)
    cluster.wait_for_nodes()
    yield node
    if node in cluster.worker_nodes:
        cluster.remove_node(node)


@pytest.fixture(scope="module")
def overrides(tiny_jsonl) -> list[str]:
    """Real training, three rounds of six clients over a few clients' short text. LoRA rank 16: an update is
    128 KiB, over Ray's inline limit, so finished results wait in the object store of their worker's node."""
    return ["fleet.size=60", "run.rounds=3", "run.clients_per_round=6", "run.deadline_s=600",
            "training.local_steps=2", "training.batch_size=4", "data.eval_windows=16", "data.source=jsonl",
            f"data.path={tiny_jsonl}", "output.report=false", "model.lora.r=16"]


# --- the fault -----------------------------------------------------------------------------------------------

def stall(actor, marker_path: str) -> None:
    """Run inside an actor (Ray's __ray_call__): its first training job of STALLED_ROUND or later writes the
    actor's node id to `marker_path` and waits STALL_S before training."""
    train = actor.trainer.train

    def stalled(job, *args, **kwargs):
        if job.round >= STALLED_ROUND:
            actor.trainer.train = train  # only this job stalls
            Path(marker_path).write_text(ray.get_runtime_context().get_node_id())
            time.sleep(STALL_S)
        return train(job, *args, **kwargs)

    actor.trainer.train = stalled


def stalling_pool(marker: Path) -> type[WorkerPool]:
    """A WorkerPool whose first actor, once ready, stalls in STALLED_ROUND until its node is lost."""

    class StallingPool(WorkerPool):
        def wait_ready(self) -> None:
            super().wait_ready()
            ray.get(self._actors[0].__ray_call__.remote(stall, str(marker)))

    return StallingPool


def pinned(pool: type[WorkerPool], node_id: str) -> type[WorkerPool]:
    """`pool` with its first actors placed on `node_id`; replacements go wherever Ray puts them, as in any run."""

    class Pinned(pool):
        def __init__(self, *args, **kwargs):
            self._pinned = True
            super().__init__(*args, **kwargs)
            self._pinned = False

        def _new_actor(self):
            if not self._pinned:
                return super()._new_actor()
            on_node = NodeAffinitySchedulingStrategy(node_id, soft=False)
            return TrainerActor.options(num_cpus=self._threads, scheduling_strategy=on_node).remote(*self._init_args)

    return Pinned


def remove_when_stalled(cluster: Cluster, node, marker: Path, removed: list[str]) -> threading.Thread:
    """Remove `node` once a job has stalled on it."""

    def watch() -> None:
        deadline = time.monotonic() + STALL_S
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text():
                cluster.remove_node(node)
                removed.append(marker.read_text())
                return
            time.sleep(0.05)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def assert_same_records(run: Path, expected: Path) -> None:
    for got, want in zip(records(run), records(expected)):
        assert len(want) > 0
        pd.testing.assert_frame_equal(got, want)


def faults(run: Path) -> tuple[int, int]:
    summary = json.loads((run / "summary.json").read_text())
    return summary["jobs_retried"], summary["workers_replaced"]


# --- a run -----------------------------------------------------------------------------------------------------

def test_a_run_whose_node_is_lost_changes_no_result(tmp_path, overrides, cluster, second_node, monkeypatch):
    workers = [*overrides, "runtime.workers=2"]
    clean = run_scenario(load_scenario("quickstart", workers), RunOptions(out=tmp_path / "clean", progress=False))

    marker, removed = tmp_path / "stalled", []
    monkeypatch.setattr(scenarios.runner, "WorkerPool", pinned(stalling_pool(marker), second_node.node_id))
    watcher = remove_when_stalled(cluster, second_node, marker, removed)
    faulted = run_scenario(load_scenario("quickstart", workers), RunOptions(out=tmp_path / "faulted", progress=False))
    watcher.join(timeout=1)

    assert removed == [second_node.node_id]  # the node went while a job ran on it
    assert_same_records(faulted, clean)
    jobs_retried, workers_replaced = faults(faulted)
    assert workers_replaced == 2  # both workers lived on the lost node
    assert jobs_retried >= 1
    assert faults(clean) == (0, 0)
    assert (json.loads((faulted / "summary.json").read_text())["final_eval_loss"]
            == json.loads((clean / "summary.json").read_text())["final_eval_loss"])


# --- a finished result -----------------------------------------------------------------------------------------

def one_worker_pool(pool: type[WorkerPool]) -> WorkerPool:
    """One worker training a rank-16 LoRA (a 128 KiB update) over three short random texts."""
    rng = np.random.default_rng(0)
    texts = PackedTokens.pack([rng.integers(0, 200, 300) for _ in range(3)])
    lora = LoraSpec(r=16, alpha=32.0, dropout=0.1, target_modules=("q_proj", "v_proj"))
    settings = TrainSettings(seed=0, batch_size=4, seq_len=32, lr=1e-2, weight_decay=0.0)
    return pool(1, 1, "builtin", lora, settings, texts, texts, torch.zeros(2, 33, dtype=torch.int64))


def test_a_result_lost_with_its_node_is_computed_again(cluster, second_node):
    job = TrainJob(client=7, data_client=1, round=1, base_version=0, steps=3)
    with one_worker_pool(pinned(WorkerPool, second_node.node_id)) as pool:
        pool.wait_ready()
        size = ray.get(pool._actors[0].__ray_call__.remote(lambda actor: actor.trainer.layout.size))
        assert size * 4 > 100 * 1024  # over Ray's inline limit: the result stays on the node until fetched
        start = pool.put(torch.from_numpy(np.random.default_rng(1).normal(0, 0.02, size)).float())
        expected = pool.get([pool.train(job, start, None)])[0]

        ref = pool.train(job, start, None)
        ray.wait([ref], fetch_local=False)  # finished, and not fetched
        cluster.remove_node(second_node)
        again = pool.get([ref])[0]
        # Submitted again to its worker, which is then found dead (1), replaced, and submitted again (2).
        assert pool.faults() == WorkerFaults(jobs_retried=2, workers_replaced=1)
    assert torch.equal(again.delta, expected.delta) and expected.delta.abs().sum() > 0
    assert (again.loss_first, again.loss_last) == (expected.loss_first, expected.loss_last)


# --- a sweep ---------------------------------------------------------------------------------------------------

def trial_on_lost_node(lost: str, marker: Path, attempts: Path):
    """sweep.run_trial, noting each attempt's node under `attempts` (one file per trial); an attempt on the
    `lost` node stalls in STALLED_ROUND until the node is gone."""
    run_trial = scenarios.sweep.run_trial

    def traced(scenario):
        here = ray.get_runtime_context().get_node_id()
        with (attempts / scenario.strategy.name).open("a") as fh:
            fh.write(here + "\n")
        if here == lost:
            scenarios.runner.WorkerPool = stalling_pool(marker)  # this trial's process only; it dies with the node
        return run_trial(scenario)

    return traced


def test_a_sweep_trial_whose_node_is_lost_is_run_again(tmp_path, overrides, cluster, second_node, monkeypatch):
    # Each trial's group (its driver and one worker) takes a whole node: one trial runs on the node to be lost
    # and one on the head, at the same time.
    fixed = [*overrides, "runtime.workers=1"]
    lost, head = second_node.node_id, cluster.head_node.node_id
    marker, removed, attempts = tmp_path / "stalled", [], tmp_path / "attempts"
    attempts.mkdir()
    monkeypatch.setattr(scenarios.sweep, "run_trial", trial_on_lost_node(lost, marker, attempts))
    watcher = remove_when_stalled(cluster, second_node, marker, removed)
    sweep_dir = run_sweep("quickstart", ["strategy.name=fedavg,fedprox"], out=tmp_path / "sweep",
                          address=cluster.address, progress=False, fixed=fixed)
    watcher.join(timeout=1)

    assert removed == [lost]
    ran_on = {p.name: p.read_text().split() for p in attempts.iterdir()}
    [retried] = [name for name, nodes in ran_on.items() if nodes[0] == lost]
    [other] = set(ran_on) - {retried}
    assert ran_on == {retried: [lost, head], other: [head]}  # the other trial ran once

    table = pd.read_parquet(sweep_dir / "sweep.parquet").set_index("strategy.name")
    assert (table["status"] == "ok").all(), table["error"].tolist()
    assert (table["node"] == head).all()
    for name in (retried, other):
        assert faults(sweep_dir / table.loc[name, "run"]) == (0, 0)  # no worker of the recorded attempt died

    plain = run_scenario(load_scenario("quickstart", [*fixed, f"strategy.name={retried}"]),
                         RunOptions(out=tmp_path / "plain", progress=False))
    assert_same_records(sweep_dir / table.loc[retried, "run"], plain)
