"""A plan on a Ray cluster (`fedfleet plan --address`): the bands the search is told it may need next cover
every band it then probes, and a plan whose runs are Ray tasks (on a local Ray, and on a cluster of two
nodes) gives the answer, the probes' figures, the horizon and the run folders of the same plan run here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from scenarios.loader import load_scenario
from scenarios.plan import first_probes, run_plan, search_uplink

ROOT = Path(__file__).resolve().parents[2]


# --- the search's look ahead -------------------------------------------------------------------------------


@given(st.floats(0.5, 500.0) | st.none(), st.sampled_from([0.01, 0.05, 0.5, 1.0]))
def test_every_band_the_search_probes_was_named_ahead_of_it(threshold, tolerance):
    calls, named = [], []

    def meets(mhz: float) -> bool:
        calls.append(mhz)
        assert mhz in named[-1], (mhz, named[-1])  # the latest look ahead named this band
        return threshold is not None and mhz >= threshold

    found = search_uplink(meets, 1.0, 400.0, tolerance, ahead=named.append)
    # the look ahead changes nothing the search asks or answers
    plain_calls = []
    plain = search_uplink(lambda mhz: plain_calls.append(mhz) or (threshold is not None and mhz >= threshold),
                          1.0, 400.0, tolerance)
    assert found == plain and calls == plain_calls
    assert named[0] == first_probes(1.0, 400.0, tolerance) and named[0][:2] == [400.0, 1.0]


# --- the same plan here and as Ray tasks -------------------------------------------------------------------


@pytest.fixture(scope="module")
def small(tiny_jsonl) -> list[str]:
    """A plan of about 4 probes of 3 rounds over 100 devices, and a horizon of one hour."""
    return ["run.mode=systems", "fleet.size=100", "model.emulate=qwen2.5-0.5b", "data.source=jsonl",
            f"data.path={tiny_jsonl}", "training.batch_size=16",
            "fleet.classes=[{name: flagship_phone, fraction: 0.8}, {name: mec_t4, fraction: 0.2}]",
            "run.over_selection=2", "run.deadline_s=600", "network.uplink_mhz=8", "plan.uplink_mhz_min=1",
            "plan.uplink_mhz_max=8", "plan.tolerance=0.5", "plan.rounds=3", "plan.round_p95_target_s=60",
            "plan.horizon_h=1"]


SAME = ["status", "answer_mhz", "message", "monotonic", "simulated_s", "per_day_scale", "cells_per_day",
        "energy_wh_per_device_per_day", "classes", "at_max"]
PROBE_FIGURES = ["uplink_mhz", "run_dir", "durations_s", "percentiles_s", "short_rounds", "meets"]
HORIZON_FIGURES = ["hours", "uplink_mhz", "band", "run_dir", "rounds", "busy_hour", "hours_meeting_target",
                   "message", "table"]


def assert_same_plan(here: Path, there: Path) -> tuple[dict, dict]:
    """The two plan folders hold the same figures and the same records of every run; returns both plans."""
    a, b = (json.loads((out / "plan.json").read_text()) for out in (here, there))
    for key in SAME:
        assert a[key] == b[key], key
    assert [{k: p[k] for k in PROBE_FIGURES} for p in a["probes"]] == [
        {k: p[k] for k in PROBE_FIGURES} for p in b["probes"]]
    assert {k: a["baseline"][k] for k in PROBE_FIGURES} == {k: b["baseline"][k] for k in PROBE_FIGURES}
    assert {k: a["horizon"][k] for k in HORIZON_FIGURES} == {k: b["horizon"][k] for k in HORIZON_FIGURES}
    run_dirs = [p["run_dir"] for p in a["probes"]] + [a["horizon"]["run_dir"]]
    for run_dir in run_dirs:
        for table in ("rounds.parquet", "clients.parquet"):
            pd.testing.assert_frame_equal(pd.read_parquet(here / run_dir / table),
                                          pd.read_parquet(there / run_dir / table))
    # only the runs the search asked for are written: the probes started ahead and not needed are not
    assert sorted(p.name for p in (there / "probes").iterdir()) == sorted(p.name for p in (here / "probes").iterdir())
    assert (here / "plan_hours.csv").read_text() == (there / "plan_hours.csv").read_text()
    return a, b


@pytest.fixture(scope="module")
def plan_here(small, tmp_path_factory) -> Path:
    return run_plan(load_scenario("quickstart", small), tmp_path_factory.mktemp("here") / "plan", progress=False)


# 20-40 s: each of the local Ray's two workers imports torch before its first probe
def test_a_plan_of_ray_tasks_equals_the_plan_run_here(ray_local, small, plan_here, tmp_path):
    # Ray is running (ray_local): the address attaches to it, and every run becomes a task
    there = run_plan(load_scenario("quickstart", small), tmp_path / "plan", progress=False, address="auto")
    a, b = assert_same_plan(plan_here, there)
    assert len(a["probes"]) >= 3  # the search went past its ends: some probes ran ahead of the search
    assert a["cluster"] is None and all(p["node"] is None for p in a["probes"]) and a["horizon"]["node"] is None
    assert b["cluster"] == "auto" and all(p["node"] for p in b["probes"]) and b["horizon"]["node"]


# Run in a process of its own: starting cluster nodes re-points Ray's process-wide state at them.
CLUSTER_PLAN = """
import json, sys
from ray.cluster_utils import Cluster
from scenarios.cli import main

node = {"num_cpus": 1}
cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
try:
    worker = cluster.add_node(**node)
    cluster.wait_for_nodes()
    status = main(["plan", *sys.argv[1:], "--address", cluster.address])
    print(json.dumps({"status": status, "nodes": [cluster.head_node.node_id, worker.node_id]}))
finally:
    cluster.shutdown()
"""


# 40-70 s: a cluster of two nodes, and each node's worker imports torch
@pytest.mark.slow
def test_fedfleet_plan_on_a_two_node_cluster(small, plan_here, tmp_path):
    """`fedfleet plan --address` on two 1-CPU nodes: the baseline (the widest band) and the narrowest band
    start together, one on each node, and the plan is the one run here."""
    sets = [arg for item in small for arg in ("--set", item)]
    with tempfile.TemporaryDirectory(prefix="rp", dir="/tmp", ignore_cleanup_errors=True) as ray_tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        done = subprocess.run([sys.executable, "-c", CLUSTER_PLAN, "quickstart", *sets, "--quiet",
                               "--out", str(tmp_path / "plan")], cwd=ROOT, capture_output=True, text=True,
                              timeout=400, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 0
    _, there = assert_same_plan(plan_here, tmp_path / "plan")
    first_two = {p["node"] for p in there["probes"][:2]}  # submitted together, one CPU per node
    assert first_two == set(result["nodes"])
