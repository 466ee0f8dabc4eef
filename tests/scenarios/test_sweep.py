"""Sweeps: the grid of overrides, the headline figure from a table alone, and whole sweeps on Ray: local, on a
two-node cluster, and in train mode (actors created inside each trial's placement group)."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from analysis.sweep_report import bandwidth_figures, field_values
from scenarios.grid import grid, split_values
from scenarios.sweep import run_sweep
from scenarios.errors import ScenarioError
from scenarios.loader import load_scenario

ROOT = Path(__file__).resolve().parents[2]
GRID = ["network.uplink_mhz=5,10,20", "strategy.name=fedavg,fedprox"]
CELLS = list(itertools.product([5, 10, 20], ["fedavg", "fedprox"]))


@pytest.fixture(scope="module")
def small(tiny_jsonl) -> list[str]:
    """Overrides for a quickstart that runs in about a second: 100 devices, three rounds, systems mode and a
    few clients' text."""
    return ["run.mode=systems", "run.rounds=3", "fleet.size=100", "data.source=jsonl", f"data.path={tiny_jsonl}",
            "output.report=false"]


# --- the grid ----------------------------------------------------------------------------------------------

def test_values_split_on_top_level_commas_only():
    assert split_values("5, 10,20") == ["5", "10", "20"]
    assert split_values("[{name: a, fraction: 1}]") == ["[{name: a, fraction: 1}]"]
    assert split_values("[1, 2],{a: 1, b: [3, 4]},'x,y',\"p,q\",z") == [
        "[1, 2]", "{a: 1, b: [3, 4]}", "'x,y'", '"p,q"', "z"]
    assert split_values("o'brien,x") == ["o'brien", "x"]  # a quote inside a plain value quotes nothing


@pytest.mark.parametrize("item", ["fleet.size", "=5", "fleet.size=[1, 2", "fleet.size=5,,6", "fleet.size='a,b"])
def test_bad_set_is_refused_naming_it(item):
    with pytest.raises(ScenarioError, match="--set") as err:
        grid([item])
    assert item in str(err.value)


def test_a_field_swept_twice_is_refused():
    with pytest.raises(ScenarioError, match="fleet.size"):
        grid(["fleet.size=10,20", "seed=1", "fleet.size=30"])


def test_grid_order_is_the_product_in_the_order_given():
    trials = grid(["a.b=1,2", "c=x,y,z"])
    assert [t.settings for t in trials] == [
        (("a.b", "1"), ("c", "x")), (("a.b", "1"), ("c", "y")), (("a.b", "1"), ("c", "z")),
        (("a.b", "2"), ("c", "x")), (("a.b", "2"), ("c", "y")), (("a.b", "2"), ("c", "z")),
    ]
    assert trials[4].overrides == ["a.b=2", "c=y"]


@given(st.lists(st.integers(1, 4), max_size=4))
def test_grid_size_is_the_product_of_the_list_lengths(counts):
    sets = [f"f{i}.x=" + ",".join(str(v) for v in range(n)) for i, n in enumerate(counts)]
    trials = grid(sets)
    assert len(trials) == math.prod(counts)
    assert [t.index for t in trials] == list(range(len(trials)))
    assert len({t.name for t in trials}) == len(trials)  # one folder per trial
    assert len({t.settings for t in trials}) == len(trials)


def test_trial_names_are_safe_folder_names():
    trials = grid(["fleet.classes=[{name: a, fraction: 1}],[{name: b/c, fraction: 1}]"])
    for trial in trials:
        assert all(c.isalnum() or c in "_.-" for c in trial.name), trial.name
        assert trial.name.startswith(f"{trial.index:03d}-classes-")


def test_swept_values_are_typed_when_uniform():
    assert field_values(pd.Series(["5", "10", "2.5"])).tolist() == [5, 10, 2.5]
    assert field_values(pd.Series(["fedavg", "'fedprox'"])).tolist() == ["fedavg", "fedprox"]
    assert field_values(pd.Series(["5", "auto"])).tolist() == ["5", "auto"]  # mixed: the text given


def test_a_bad_value_of_one_trial_fails_before_anything_runs(tmp_path, small):
    out = tmp_path / "sweep"
    with pytest.raises(ScenarioError) as err:
        run_sweep("quickstart", ["strategy.name=fedavg,fedprox", "fleet.size=100,-5"], out=out, fixed=small)
    message = str(err.value)
    assert "trial 1 (strategy.name=fedavg, fleet.size=-5)" in message and "fleet.size" in message
    assert not out.exists()


def test_a_non_empty_out_is_refused(tmp_path, small):
    (tmp_path / "old.txt").write_text("x")
    with pytest.raises(ScenarioError, match="--out"):
        run_sweep("quickstart", ["network.uplink_mhz=5"], out=tmp_path, fixed=small)


# --- the headline figure, from a table alone ---------------------------------------------------------------

def table_of(rows: list[tuple], loss: bool) -> pd.DataFrame:
    """A sweep table as run_sweep writes it, with only the columns the figure reads."""
    frame = pd.DataFrame(rows, columns=["network.uplink_mhz", "strategy.name", "value"])
    return pd.DataFrame({
        "trial": range(len(frame)), "network.uplink_mhz": frame["network.uplink_mhz"],
        "strategy.name": frame["strategy.name"], "status": "ok",
        "final_loss": 3.0 if loss else math.nan,
        "time_to_target_s": frame["value"], "uplink_bytes_to_target": frame["value"] * 1e6,
        "energy_to_target_j": frame["value"] * 2, "mean_round_s": frame["value"] / 10,
    })


def test_bandwidth_figures_one_line_per_strategy_sorted_by_bandwidth():
    rows = [(20, "fedavg", 50.0), (5, "fedavg", 200.0), (5, "fedbuff", 150.0), (10, "fedavg", 90.0),
            (10, "fedbuff", math.nan), (20, "fedbuff", 40.0)]
    figures = bandwidth_figures(table_of(rows, loss=True), target=3.0)
    assert [f.layout.title.text.split(" to target")[0] for f in figures] == [
        "Time", "Uplink bytes", "Fleet energy"]
    time_fig = figures[0]
    assert time_fig.layout.xaxis.type == "log"
    lines = {t.name: (list(t.x), list(t.y)) for t in time_fig.data}
    assert lines == {"strategy.name=fedavg": ([5, 10, 20], [200.0, 90.0, 50.0]),
                     "strategy.name=fedbuff": ([5, 20], [150.0, 40.0])}  # the trial that never reached it: no point
    assert list(figures[1].data[0].y) == [200e6, 90e6, 50e6]


def test_bandwidth_figure_without_loss_shows_round_duration():
    rows = [(5, "fedavg", 30.0), (20, "fedavg", 10.0)]
    [fig] = bandwidth_figures(table_of(rows, loss=False))
    assert "Mean round duration" in fig.layout.title.text and "systems mode" in fig.layout.title.text
    assert list(fig.data[0].y) == [3.0, 1.0] and fig.data[0].name == "all trials"  # one strategy: one line


def test_no_bandwidth_figure_when_bandwidth_is_not_swept():
    table = table_of([(5, "fedavg", 1.0)], loss=True).drop(columns="network.uplink_mhz")
    assert bandwidth_figures(table, 3.0) == []


# --- whole sweeps on Ray -----------------------------------------------------------------------------------

def check_outputs(sweep_dir: Path, trial_count: int) -> pd.DataFrame:
    """Every trial folder, table and page is there; returns the table."""
    folders = sorted((sweep_dir / "trials").iterdir())
    assert len(folders) == trial_count
    for folder in folders:
        assert (folder / "rounds.parquet").is_file() and (folder / "summary.json").is_file(), folder
    table = pd.read_parquet(sweep_dir / "sweep.parquet")
    assert len(pd.read_csv(sweep_dir / "sweep.csv")) == len(table) == trial_count
    assert (table["status"] == "ok").all(), table["error"].tolist()
    assert sorted(sweep_dir / run for run in table["run"]) == folders
    assert "<h2>Trials</h2>" in (sweep_dir / "sweep.html").read_text()
    return table


def test_local_sweep_reproduces_a_plain_run(ray_local, tmp_path, small):
    sweep_dir = run_sweep("quickstart", GRID, out=tmp_path / "sweep", progress=False, fixed=small)
    table = check_outputs(sweep_dir, len(CELLS))
    assert list(zip(table["network.uplink_mhz"], table["strategy.name"])) == CELLS

    for row in table.itertuples():
        resolved = yaml.safe_load((sweep_dir / row.run / "scenario.resolved.yaml").read_text())
        assert (resolved["network"]["uplink_mhz"], resolved["strategy"]["name"]) == CELLS[row.trial]
        rounds = pd.read_parquet(sweep_dir / row.run / "rounds.parquet")
        assert row.bytes_up == rounds["bytes_up"].sum() and row.simulated_s == rounds["t_end"].iloc[-1]

    assert "Mean round duration against uplink bandwidth" in (sweep_dir / "sweep.html").read_text()

    from scenarios.runner import RunOptions, run_scenario

    mhz, name = CELLS[3]
    plain = run_scenario(load_scenario("quickstart", [*small, f"network.uplink_mhz={mhz}", f"strategy.name={name}"]),
                         RunOptions(out=tmp_path / "plain", progress=False))
    pd.testing.assert_frame_equal(pd.read_parquet(sweep_dir / table["run"][3] / "rounds.parquet"),
                                  pd.read_parquet(plain / "rounds.parquet"))


def test_trials_run_at_the_same_time(ray_local, tmp_path, monkeypatch, small):
    # Each stand-in trial checks in and waits for the other: they both finish only if Ray ran them together.
    # Wall-clock overlap of real trials would depend on how fast worker processes start on a busy machine.
    import scenarios.sweep as sweep

    meeting = tmp_path / "meeting"
    meeting.mkdir()

    def meet(scenario):
        import time as clock

        (meeting / scenario.name).touch()
        deadline = clock.time() + 120
        while len(list(meeting.iterdir())) < 2 and clock.time() < deadline:
            clock.sleep(0.05)
        met = len(list(meeting.iterdir())) == 2
        return sweep.TrialResult({}, "", 0.0, 0.0, None if met else "ran alone")

    monkeypatch.setattr(sweep, "run_trial", meet)
    trials = grid(["strategy.name=fedavg,fedprox"])
    scenarios = [load_scenario("quickstart", [*small, *t.overrides, f"name=trial{t.index}"]) for t in trials]
    results = sweep.run_trials(trials, scenarios, tmp_path / "sweep", progress=False)
    assert [results[t.index].error for t in trials] == [None, None]


def test_a_trial_that_can_never_run_is_refused_before_any_runs(tmp_path, small):
    # no device has the memory for a batch this large: the pre-run checks say so for trial 1
    with pytest.raises(ScenarioError, match=r"trial 1 \(training.batch_size=100000\)(.|\n)*model: LoRA training"):
        run_sweep("quickstart", ["training.batch_size=16,100000"], out=tmp_path / "sweep", progress=False, fixed=small)
    assert not (tmp_path / "sweep").exists()


def test_a_failing_trial_is_recorded_and_the_others_go_on(ray_local, tmp_path, small):
    # Valid as a scenario, but no client has that many lines of text: the run itself refuses.
    sweep_dir = run_sweep("quickstart", ["data.min_lines=16,100000"], out=tmp_path / "sweep", progress=False,
                          fixed=small)
    table = pd.read_parquet(sweep_dir / "sweep.parquet")
    assert table["status"].tolist() == ["ok", "failed"]
    assert table["error"][1].startswith("ScenarioError: data: no client has") and pd.isna(table["error"][0])
    assert (sweep_dir / table["run"][0] / "rounds.parquet").is_file()


def test_a_trial_larger_than_the_cluster_is_refused_before_it_waits_for_ever(ray_local, tmp_path, small):
    train = [s for s in small if not s.startswith("run.mode")] + ["runtime.workers=4"]
    with pytest.raises(ScenarioError, match="needs 5 CPUs"):
        run_sweep("quickstart", ["strategy.name=fedavg"], out=tmp_path / "sweep", progress=False, fixed=train)
    assert not (tmp_path / "sweep").exists()


# Run in a process of its own: starting cluster nodes re-points Ray's process-wide state at them, which would
# disturb this process's local Ray.
CLUSTER_SWEEP = """
import json, sys
from ray.cluster_utils import Cluster
from scenarios.cli import main

node = {"num_cpus": 1}
cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
try:
    worker = cluster.add_node(**node)
    cluster.wait_for_nodes()
    assert cluster.address.startswith("127.0.0.1:"), cluster.address
    status = main(["sweep", *sys.argv[1:], "--address", cluster.address])
    print(json.dumps({"status": status, "nodes": [cluster.head_node.node_id, worker.node_id]}))
finally:
    cluster.shutdown()
"""


# 40-60 s: a cluster of two nodes, and each node's worker imports torch
def test_sweep_on_a_two_node_cluster(tmp_path, small):
    """`fedfleet sweep --address` on a cluster of two 1-CPU nodes spreads the trials over both."""
    fixed = [arg for item in small for arg in ("--fix", item)]
    sets = [arg for item in GRID for arg in ("--set", item)]
    # The cluster records its address under RAY_TMPDIR: a private one, so that nobody else's Ray finds it;
    # short, because Ray's socket paths live under it. Its nodes take 127.0.0.1 as their address (which Ray
    # turns into the machine's routable one unless its cluster support is off), so no Ray traffic leaves it.
    with tempfile.TemporaryDirectory(prefix="rs", dir="/tmp", ignore_cleanup_errors=True) as ray_tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
        done = subprocess.run([sys.executable, "-c", CLUSTER_SWEEP, "quickstart", *sets, *fixed, "--quiet",
                               "--out", str(tmp_path / "sweep")], cwd=ROOT, capture_output=True, text=True,
                              timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 0
    table = check_outputs(tmp_path / "sweep", len(CELLS))
    assert set(table["node"]) == set(result["nodes"])


# 30-55 s: two trials that train, one after the other
def test_train_mode_trials_create_their_actors_inside_their_placement_groups(ray_local, tmp_path, small):
    """Each trial's group takes both CPUs of the local Ray (its driver and one training actor): an actor
    outside the group would find no CPU and the sweep would never end."""
    fixed = [s for s in small if not s.startswith(("run.mode", "run.rounds"))]
    fixed += ["run.rounds=2", "runtime.workers=1", "run.clients_per_round=4", "training.local_steps=2",
              "data.eval_windows=8"]
    sweep_dir = run_sweep("quickstart", ["strategy.name=fedavg,fedprox"], out=tmp_path / "sweep", progress=False,
                          fixed=fixed)
    table = check_outputs(sweep_dir, 2)
    for row in table.itertuples():
        summary = json.loads((sweep_dir / row.run / "summary.json").read_text())
        assert summary["mode"] == "train" and (sweep_dir / row.run / "adapter" / "adapter_config.json").is_file()
        assert row.final_loss == summary["final_eval_loss"] and math.isfinite(row.final_loss)
    # Default target: the highest final loss, which every trial reaches.
    assert table["time_to_target_s"].notna().all()
    assert f"Target held-out loss {table['final_loss'].max():.4g}" in (sweep_dir / "sweep.html").read_text()
