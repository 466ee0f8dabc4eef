"""Sweeps: the grid of overrides and of seeds, the headline figure from a table alone, the seed groups' table
and bands from synthetic trial folders, and whole sweeps on Ray: local, on a two-node cluster, in train mode
(actors created inside each trial's placement group), and over seeds on a machine with fewer cores than a
trial's driver and actors."""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from analysis.sweep_report import bandwidth_figures, field_values, write_sweep
from scenarios.grid import grid, seed_values, split_values
from scenarios.sweep import TrialResult, run_sweep
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


def test_seeds_are_the_last_axis_and_every_trial_name_shows_its_seed():
    trials = grid(["strategy.name=fedavg,fedprox"], seed_values(7, 3))
    assert [t.settings for t in trials[:4]] == [
        (("strategy.name", "fedavg"), ("seed", "7")), (("strategy.name", "fedavg"), ("seed", "8")),
        (("strategy.name", "fedavg"), ("seed", "9")), (("strategy.name", "fedprox"), ("seed", "7"))]
    assert [t.name for t in trials[2:4]] == ["002-name-fedavg_seed-9", "003-name-fedprox_seed-7"]
    assert [t.name for t in grid([], [0, 1])] == ["000-seed-0", "001-seed-1"]  # seeds alone
    # a long setting is cut, the seed never
    [long] = grid(["fleet.classes=[{name: " + "x" * 80 + ", fraction: 1}]"], [12])
    assert long.name.endswith("_seed-12") and len(long.name) == 4 + 60


def test_seeds_conflicting_with_a_seed_axis_or_fewer_than_one_are_refused():
    with pytest.raises(ScenarioError, match="--seeds and --set seed"):
        grid(["seed=1,2"], [0, 1])
    with pytest.raises(ScenarioError, match="--seeds 0"):
        seed_values(0, 0)


def test_seeds_start_from_the_scenario_seed_and_a_local_ray_fits_the_largest_trial(tmp_path, monkeypatch, small):
    """No Ray: the session and the trials are stand-ins that record what they were given."""
    import contextlib

    import fleet.pool
    import scenarios.sweep as sweep

    sessions, ran = [], {}

    @contextlib.contextmanager
    def session(address, cpus, *args):
        sessions.append((address, cpus))
        yield

    def trials_not_run(trials, scenarios, sweep_dir, progress):
        ran.update({t.name: s.seed for t, s in zip(trials, scenarios)})
        return {t.index: TrialResult({}, "", math.nan, math.nan, "not run") for t in trials}

    monkeypatch.setattr(fleet.pool, "ray_session", session)
    monkeypatch.setattr(sweep, "check_capacity", lambda trials, scenarios: None)
    monkeypatch.setattr(sweep, "run_trials", trials_not_run)
    # train mode, 64 actors: a trial needs 65 CPUs, more than this machine's cores
    train = [s for s in small if not s.startswith("run.mode")] + ["runtime.workers=64", "seed=5"]
    sweep_dir = run_sweep("quickstart", ["strategy.name=fedavg,fedprox"], out=tmp_path / "a", progress=False,
                          fixed=train, seeds=2)
    assert ran == {"000-name-fedavg_seed-5": 5, "001-name-fedavg_seed-6": 6, "002-name-fedprox_seed-5": 5,
                   "003-name-fedprox_seed-6": 6}
    seeds = pd.read_csv(sweep_dir / "sweep_seeds.csv")
    assert seeds["strategy.name"].tolist() == ["fedavg", "fedprox"] and seeds["ran"].tolist() == [0, 0]
    # on a cluster the CPUs are the nodes': this machine's count is passed, and the capacity check decides
    run_sweep("quickstart", ["strategy.name=fedavg"], out=tmp_path / "b", progress=False, fixed=train,
              address="10.0.0.1:6379")
    assert sessions == [(None, max(os.cpu_count(), 65)), ("10.0.0.1:6379", os.cpu_count())]


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


def test_bandwidth_figures_over_seeds_draw_the_mean_and_its_band():
    # 5 MHz: seeds 100 and 120, mean 110, s = 14.14, half 12.706 x 14.14 / sqrt(2) = 127.06; 20 MHz: one
    # seed reached the target (40), the other did not: a mean of one and no band
    table = pd.DataFrame({"trial": range(4), "network.uplink_mhz": [5, 5, 20, 20], "seed": [0, 1, 0, 1],
                          "status": "ok", "final_loss": 3.0, "time_to_target_s": [100.0, 120.0, 40.0, math.nan],
                          "uplink_bytes_to_target": 1.0, "energy_to_target_j": 1.0})
    low, high, mean = bandwidth_figures(table, target=3.0)[0].data
    assert high.fill == "tonexty" and mean.name == "all trials"
    assert list(mean.x) == [5, 20] and list(mean.y) == [110.0, 40.0]
    assert high.y[0] == pytest.approx(237.06, abs=1e-2) and low.y[0] == pytest.approx(-17.06, abs=1e-2)
    assert math.isnan(high.y[1])


# --- the seed groups, from synthetic trial folders ------------------------------------------------------

T_END = [0.0, 10.0, 25.0, 45.0, 70.0]
# final held-out loss per trial: fedavg seeds 0-2 2.2, 2.4, 2.6 (mean 2.4, s = 0.2, half 4.303 x 0.2 / sqrt(3)
# = 0.4968); fedprox seeds 0, 1: 2.3, 2.5 (mean 2.4, s = 0.1414, half 12.706 x 0.1414 / sqrt(2) = 1.2706),
# seed 2 failed
TRIAL_LOSSES = [[3.0, 2.8, 2.5, 2.4, 2.2], [3.0, 2.9, 2.7, 2.5, 2.4], [3.0, 2.9, 2.8, 2.7, 2.6],
                [3.0, 2.8, 2.6, 2.4, 2.3], [3.0, 2.9, 2.7, 2.6, 2.5], None]
COMPLETION = [0.5, 0.6, 0.7, 0.8, 0.8, None]


def trial_folder(folder: Path, loss: list[float], completion: float) -> None:
    """The files of a finished run that the sweep's table and page read."""
    folder.mkdir(parents=True)
    n = len(loss)
    pd.DataFrame({"round": range(n), "version": range(n), "t_start": [0.0] + T_END[:-1], "t_end": T_END,
                  "duration_s": np.diff([0.0] + T_END), "completed": [0] + [3] * (n - 1),
                  "bytes_up": [0] + [100] * (n - 1), "bytes_down": [0] + [1000] * (n - 1),
                  "energy_j": [0.0] + [5.0] * (n - 1), "eval_loss": loss}).to_parquet(folder / "rounds.parquet")
    pd.DataFrame({"device": pd.Series(dtype="int64")}).to_parquet(folder / "clients.parquet")
    summary = {"base_eval_loss": loss[0], "final_eval_loss": loss[-1], "simulated_time_s": T_END[-1],
               "bytes_up": 400, "bytes_down": 4000, "energy_j": 20.0, "completion_rate": completion,
               "mean_round_s": 17.5}
    (folder / "summary.json").write_text(json.dumps(summary))


def test_seed_groups_table_and_bands_from_trial_folders(tmp_path, figures_of):
    trials = grid(["strategy.name=fedavg,fedprox"], [0, 1, 2])
    results = {}
    for trial, loss, completion in zip(trials, TRIAL_LOSSES, COMPLETION):
        if loss is None:
            results[trial.index] = TrialResult({}, "n", 0.0, 1.0, "RuntimeError: lost")
        else:
            trial_folder(tmp_path / "trials" / trial.name, loss, completion)
            results[trial.index] = TrialResult({"summary.json": b""}, "n", 0.0, 1.0)
    table = write_sweep(tmp_path, trials, results, 2.5, None, "seeds")
    assert len(table) == 6 and table["seed"].tolist() == [0, 1, 2, 0, 1, 2]  # one row per trial still
    assert table["loss_gain"][0] == pytest.approx(1 - 2.2 / 3.0)

    seeds = pd.read_csv(tmp_path / "sweep_seeds.csv")
    pd.testing.assert_frame_equal(seeds, pd.read_parquet(tmp_path / "sweep_seeds.parquet"), check_dtype=False)
    avg, prox = seeds.to_dict("records")
    assert (avg["strategy.name"], avg["seeds"], avg["ran"], avg["trials"]) == ("fedavg", 3, 3, "0,1,2")
    assert (prox["seeds"], prox["ran"], prox["trials"], prox["final_loss_n"]) == (3, 2, "3,4,5", 2)
    assert (avg["final_loss_mean"], avg["final_loss_low"], avg["final_loss_high"]) == pytest.approx(
        (2.4, 2.4 - 0.4968, 2.4 + 0.4968), abs=1e-4)
    assert (prox["final_loss_mean"], prox["final_loss_high"]) == pytest.approx((2.4, 2.4 + 1.2706), abs=1e-4)
    # target 2.5: fedavg seeds 0 and 1 reach it at t 25 and 45, seed 2 never
    assert (avg["time_to_target_s_n"], avg["time_to_target_s_mean"]) == (2, 35.0)
    assert avg["uplink_bytes_to_target_mean"] == 250.0  # 200 and 300 bytes by then
    assert avg["completion_rate_mean"] == pytest.approx(0.6) and avg["loss_gain_mean"] == pytest.approx(0.2)

    page = (tmp_path / "sweep.html").read_text(encoding="utf-8")
    assert page.index("<h2>At a glance</h2>") < page.index("<h2>Seeds</h2>") < page.index("<h2>Trials</h2>")
    assert "<td>20.0% [" in page  # the glance: fedavg's loss gain, 1 - 2.4 / 3.0, in percent
    assert "2.4 [1.903, 2.897]" in page and "2 of 3" in page
    bands = [f for f in figures_of(tmp_path / "sweep.html") if f["title"].startswith("Seeds:")]
    assert len(bands) == 4
    names = [t["name"] for t in bands[0]["traces"]]
    assert names[2::3] == ["strategy.name=fedavg (3 seeds)", "strategy.name=fedprox (2 seeds)"]
    mean = bands[0]["traces"][2]  # fedavg against simulated time
    assert mean["x"] == T_END and mean["y"] == pytest.approx([3.0, 2.8667, 2.6667, 2.5333, 2.4], abs=1e-4)


def test_a_sweep_without_seeds_writes_no_seed_table(tmp_path):
    trials = grid(["strategy.name=fedavg,fedprox"])
    for trial, loss in zip(trials, TRIAL_LOSSES):
        trial_folder(tmp_path / "trials" / trial.name, loss, 0.5)
    write_sweep(tmp_path, trials, {t.index: TrialResult({"x": b""}, "n", 0.0, 1.0) for t in trials}, None, None, "x")
    assert not (tmp_path / "sweep_seeds.csv").exists()
    assert "<h2>Seeds</h2>" not in (tmp_path / "sweep.html").read_text(encoding="utf-8")


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
              "data.eval_windows=8", "output.target_loss=null"]
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


# 40-50 s: two trials that train, one after the other, each a driver and 2 actors on 2 cores
@pytest.mark.slow
def test_a_sweep_over_seeds_runs_two_workers_on_two_cores(tmp_path, tiny_jsonl):
    """`fedfleet sweep quickstart --seeds 2`: each trial needs 3 CPUs (a driver and the quickstart's 2 workers);
    a local Ray gets them on a machine of 2 cores, where the capacity check would refuse a Ray of 2 CPUs."""
    fixed = ["run.rounds=2", "fleet.size=100", "run.clients_per_round=4", "training.local_steps=2",
             "data.source=jsonl", f"data.path={tiny_jsonl}", "data.eval_windows=8", "output.report=false"]
    with tempfile.TemporaryDirectory(prefix="rs", dir="/tmp", ignore_cleanup_errors=True) as ray_tmp:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "RAY_TMPDIR": ray_tmp}
        done = subprocess.run([sys.executable, "-m", "scenarios.cli", "sweep", "quickstart", "--seeds", "2",
                               *[arg for item in fixed for arg in ("--fix", item)], "--quiet",
                               "--out", str(tmp_path / "sweep")], cwd=ROOT, capture_output=True, text=True,
                              timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    table = check_outputs(tmp_path / "sweep", 2)
    assert table["seed"].tolist() == [0, 1] and table["run"].str.endswith(("seed-0", "seed-1")).all()
    seeds = pd.read_parquet(tmp_path / "sweep" / "sweep_seeds.parquet")
    assert seeds["seeds"].tolist() == [2] and seeds["final_loss_n"].tolist() == [2]
    assert math.isfinite(seeds["final_loss_low"][0])


def test_the_glance_of_a_fault_detection_sweep_gives_its_auroc(tmp_path):
    # two seeds; the sites' own adapters score 0.60 and 0.70 at the end (the summary's site means): mean
    # 0.65, s = 0.0707, half 12.706 x 0.0707 / sqrt(2) = 0.6353
    trials = grid([], [0, 1])
    for trial, final in zip(trials, (0.60, 0.70)):
        folder = tmp_path / "trials" / trial.name
        trial_folder(folder, TRIAL_LOSSES[0], 0.5)
        rounds = pd.read_parquet(folder / "rounds.parquet")
        rounds.assign(detection_auroc_personal=[0.5, 0.55, 0.6, 0.65, final]).to_parquet(folder / "rounds.parquet")
        summary = json.loads((folder / "summary.json").read_text())
        summary |= {"detection_sites": 3, "detection_auroc_personal": final, "detection_auroc_base": 0.5,
                    "detection_auroc_local": 0.45, "detection_auroc_tuned": 0.7, "detection_target_auroc": 0.9}
        (folder / "summary.json").write_text(json.dumps(summary))
    write_sweep(tmp_path, trials, {t.index: TrialResult({"x": b""}, "n", 0.0, 1.0) for t in trials}, None, None, "x")
    page = (tmp_path / "sweep.html").read_text(encoding="utf-8")
    glance = page[page.index("<h2>At a glance</h2>"):page.index("<h2>Seeds</h2>")]
    assert "detection AUROC at the end" in glance
    assert "0.65 [0.01469, 1.285]" in glance
    assert "reached detection target" in page and "0 of 2" in page  # 0.9 is never reached
