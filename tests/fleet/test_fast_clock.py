"""The fast clock (run.engine: fast, fleet/fast_clock.py) against the reference (run.engine: events, SimPy's one
process per session, fleet/emulator.py): the same scenario and seed, run through the real runner in systems
mode once with each engine, must give the same sessions (same outcomes, phases, bytes and steps; times,
energies, rates and charges within 1e-6 relative) and the same round rows.

Each case is a fleet of 10,000 devices over a few rounds, tuned so that every outcome it is about occurs
(asserted, or the comparison would prove little). `assert_same_sessions(events_dir, fast_dir)` says which
column differs, and where, first.

The engine compared with the reference is CANDIDATE (fast); FEDFLEET_CANDIDATE_ENGINE=events runs every case
against the reference itself, which checks the harness (the reference is deterministic, every case passes).
Each run checks that summary.json names the engine asked for.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from aggregation import AdapterLayout, StrategyContext, build_strategy
from analysis import checkpoint
from fleet.attacks import Attack
from fleet.cells import Radio
from fleet.clients import ClientSide
from fleet.devices import sample_fleet
from fleet.emulator import RoundRules, SessionCost
from fleet.fast_emulator import FastEmulator
from fleet.selection import Uniform
from fleet.emulator import OUTCOMES
from scenarios.errors import ScenarioError
from scenarios.loader import load_scenario
from scenarios.runner import RunOptions, run_scenario
from tests.fleet.test_resume import FileSink

CANDIDATE = os.environ.get("FEDFLEET_CANDIDATE_ENGINE", "fast")
OTHER = CANDIDATE if CANDIDATE != "events" else "events_again"  # how failures name the candidate's run
RTOL, ATOL = 1e-6, 1e-9

# clients.parquet: rows are matched on these, then compared column by column
SESSION_KEYS = ["round", "device", "t_start"]
SESSION_SHOW = ["round", "device", "device_class", "t_start", "outcome", "phase"]  # the reference's, per row shown
SESSION_EXACT = ["device", "round", "base_version", "outcome", "phase", "bytes_down", "bytes_up", "bytes_up_air",
                 "steps", "staleness", "cell", "device_class", "data_client"]
SESSION_CLOSE = ["t_start", "t_end", "download_s", "train_s", "upload_s", "energy_j", "bytes_down_air",
                 "uplink_mbps", "downlink_mbps", "charge_start", "charge_end"]
# rounds.parquet: one row per round (server version), in order; its other columns are compared by their type
ROUND_EXACT = ["round", "version", "selected", "completed", *(o for o in OUTCOMES if o != "completed"), "abandoned",
               "bytes_up", "bytes_down", "staleness_max"]
ROUND_CLOSE = ["t_start", "t_end", "duration_s", "energy_j", "staleness_mean"]


# --- running and comparing ----------------------------------------------------------------------------


def run_engine(tree: dict, engine: str, folder: Path, until_s: float | None = None) -> tuple[Path, float]:
    """Run the scenario `tree` (written as YAML, loaded and checked as a file is) with run.engine=`engine`, up
    to the horizon `until_s` if given (as `fedfleet plan` does); its run folder under `folder`, and the wall
    seconds the run took."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{tree['name']}.yaml"
    path.write_text(yaml.safe_dump(tree, sort_keys=False), encoding="utf-8")
    scenario = load_scenario(path, [f"run.engine={engine}"])
    start = time.perf_counter()
    run_dir = run_scenario(scenario, RunOptions(out=folder / f"run-{engine}", progress=False, until_s=until_s))
    wall_s = time.perf_counter() - start
    ran = json.loads((run_dir / "summary.json").read_text())["engine"]
    assert ran == engine, f"run.engine={engine}, yet summary.json says the {ran} engine ran"
    return run_dir, wall_s


def assert_same_sessions(events_dir: Path, fast_dir: Path) -> None:
    """The two runs' clients.parquet and rounds.parquet hold the same sessions and rounds: the exact columns
    equal, the float ones within RTOL (ATOL near zero; NaN equals NaN). A failure names, per file, the sessions
    (or rounds) only one run has and where the two first part, then, over the rows both have, each column that
    differs with its first differing rows: sessions by (round, device, t_start), rounds by (round, version)."""
    ev, fa = (pd.read_parquet(Path(d) / "clients.parquet") for d in (events_dir, fast_dir))
    ev, fa = (f.sort_values(SESSION_KEYS, kind="stable").reset_index(drop=True) for f in (ev, fa))
    problems = _same_rows("clients.parquet", ev, fa, ["round", "device"], SESSION_SHOW)
    ev, fa = _common_rows(ev, fa, ["round", "device"])
    problems += _same_columns("clients.parquet", ev, fa, SESSION_EXACT, SESSION_CLOSE, SESSION_SHOW)

    ev, fa = (pd.read_parquet(Path(d) / "rounds.parquet") for d in (events_dir, fast_dir))
    problems += _same_rows("rounds.parquet", ev, fa, ["round"], ["round", "version", "t_start", "selected"])
    ev, fa = _common_rows(ev, fa, ["round"])
    named = ROUND_EXACT + ROUND_CLOSE
    # the rest (charge_<class>, strategy metrics, the losses, NaN in systems mode) by their type
    floats = [c for c in ev.columns if c not in named and ev[c].dtype.kind == "f"]
    others = [c for c in ev.columns if c not in named and ev[c].dtype.kind != "f"]
    problems += _same_columns("rounds.parquet", ev, fa, ROUND_EXACT + others, ROUND_CLOSE + floats,
                              ["round", "version"])
    assert not problems, f"{len(problems)} difference(s) between events and {OTHER}:\n" + "\n".join(problems)


def _same_rows(name: str, ev: pd.DataFrame, fa: pd.DataFrame, keys: list[str], show: list[str]) -> list[str]:
    """Nothing if both have the same keys row by row; otherwise which keys only one side has, and the first row
    where the two part, with its `show` columns on each side."""
    ev_keys, fa_keys = (f[keys].to_numpy().tolist() for f in (ev, fa))
    if ev_keys == fa_keys:
        return []
    only_ev = pd.MultiIndex.from_frame(ev[keys]).difference(pd.MultiIndex.from_frame(fa[keys]))
    only_fa = pd.MultiIndex.from_frame(fa[keys]).difference(pd.MultiIndex.from_frame(ev[keys]))
    i = next((i for i, (a, b) in enumerate(zip(ev_keys, fa_keys)) if a != b), min(len(ev), len(fa)))
    at = lambda f: f.loc[i, show].to_dict() if i < len(f) else "(no more rows)"  # noqa: E731
    return [f"{name}: {len(ev)} rows (events) vs {len(fa)} ({OTHER}); "
            f"{len(only_ev)} {tuple(keys)} only in events, first: {list(only_ev[:5])}; "
            f"{len(only_fa)} only in {OTHER}, first: {list(only_fa[:5])}\n"
            f"first row that differs, {i}:\n  events: {at(ev)}\n  {OTHER}: {at(fa)}"]


def _common_rows(ev: pd.DataFrame, fa: pd.DataFrame, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The rows both runs have, matched by their keys (the n-th of a repeated key with the n-th), in the same
    order, so that the columns can be compared even when some rows are missing."""
    ids = [pd.MultiIndex.from_frame(f[keys].assign(nth=f.groupby(keys).cumcount())) for f in (ev, fa)]
    common = ids[0].intersection(ids[1], sort=False)
    return tuple(f.set_axis(i).loc[common].reset_index(drop=True) for f, i in zip((ev, fa), ids))


def _same_columns(name: str, ev: pd.DataFrame, fa: pd.DataFrame, exact: list[str], close: list[str],
                  show: list[str]) -> list[str]:
    """Every column in `exact` equal and every one in `close` within RTOL, row by row; otherwise, per column,
    how many rows differ (sessions: of which outcomes) and the first few, with their `show` columns and both
    values."""
    missing = [f"{c} ({side})" for c in exact + close for side, f in (("events", ev), (OTHER, fa))
               if c not in f]
    extra = sorted(set(ev.columns) ^ set(fa.columns))
    if missing or extra:
        return [f"{name}: columns missing: {missing}; in one run only: {extra}"]
    problems = []
    for column in exact + close:
        a, b = ev[column], fa[column]
        if a.dtype != b.dtype:  # reported, and the values compared all the same
            problems.append(f"{name}: {column}: dtype {a.dtype} (events) vs {b.dtype} ({OTHER})")
        rows = np.flatnonzero(~(_close(a, b) if column in close else _equal(a, b)))
        if len(rows):
            first = rows[:5]
            table = ev.loc[first, show].assign(events=a.iloc[first].to_numpy(), **{OTHER: b.iloc[first].to_numpy()})
            if column in close:
                table["rel_diff"] = _relative(a.iloc[first], b.iloc[first])
            how = f"within rtol {RTOL:g}" if column in close else "equal"
            where = ""
            if "outcome" in ev:
                where = f" (outcomes in events: {ev['outcome'].iloc[rows].value_counts().to_dict()})"
            problems.append(f"{name}: {column}: {len(rows)} of {len(a)} rows not {how}{where}; first:\n"
                            + table.to_string(index=False))
    return problems


def _equal(a: pd.Series, b: pd.Series) -> np.ndarray:
    missing = (a.isna() & b.isna()).to_numpy()  # NaN where a round row lacks the key, NaN on mains power
    return np.asarray(a.to_numpy() == b.to_numpy(), dtype=bool) | missing


def _close(a: pd.Series, b: pd.Series) -> np.ndarray:
    x, y = a.to_numpy(np.float64), b.to_numpy(np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf
        return np.isclose(x, y, rtol=RTOL, atol=ATOL, equal_nan=True) | (x == y)


def _relative(a: pd.Series, b: pd.Series) -> np.ndarray:
    x, y = a.to_numpy(np.float64), b.to_numpy(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(x - y) / np.maximum(np.abs(x), ATOL)


def compare(tree: dict, tmp_path: Path, expect: set[str], until_s: float | None = None) -> Path:
    """Run `tree` with the reference and with CANDIDATE and compare them session by session. The reference run
    must produce every outcome in `expect`; returns its run folder."""
    events_dir, events_s = run_engine(tree, "events", tmp_path / "events", until_s)
    seen = pd.read_parquet(events_dir / "clients.parquet", columns=["outcome"])["outcome"].value_counts().to_dict()
    assert expect <= set(seen), f"the case exercises too little: {sorted(expect - set(seen))} never occur ({seen})"
    fast_dir, fast_s = run_engine(tree, CANDIDATE, tmp_path / "candidate", until_s)
    print(f"{tree['name']}: events {events_s:.1f} s, {CANDIDATE} {fast_s:.1f} s; outcomes {seen}")
    assert_same_sessions(events_dir, fast_dir)
    return events_dir


def sessions(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "clients.parquet")


# --- scenarios ------------------------------------------------------------------------------------------


def scenario(name: str, seed: int, **sections: dict) -> dict:
    """A systems-only scenario of 10,000 devices in 20 cells, timed as SmolLM2-135M, over 4 rounds; each
    keyword updates that section (its keys replace the base's)."""
    tree = {
        "name": name,
        "seed": seed,
        "fleet": {"size": 10_000},
        "network": {"cells": 20},
        "model": {"emulate": "SmolLM2-135M"},
        "training": {"local_steps": 8, "batch_size": 8, "seq_len": 64},
        "run": {"mode": "systems", "rounds": 4, "clients_per_round": 100},
        "output": {"report": False},
    }
    for section, values in sections.items():
        tree[section] = {**tree.get(section, {}), **values}
    return tree


def phone(name: str, fraction: float, **overrides) -> dict:
    return {"name": name, "fraction": fraction, "overrides": overrides}


def markov(on_s: float, off_s: float) -> dict:
    return {"kind": "markov", "mean_on_s": on_s, "mean_off_s": off_s}


def synchronous_deadline() -> dict:
    """Deadline rounds, K = 50 of 240 invited, over a mixed fleet. Flagships (on charge, but a 1 W charger) leave
    when their night window ends a few minutes after midnight; low-end phones (no charger) come and go and fail
    often; both have small batteries barely above the cutoff. Gateways train at rank 4, slowly; cell-site
    servers (mec_t4) use a slow backhaul both ways. Rounds miss the deadline until the phones have left and the
    servers fill K first (surplus); wide cells and a strict outage threshold put some devices out of reach."""
    small = {"battery_wh": [0.3, 0.6]}
    night = {"kind": "diurnal", "window_start_h": 20.0, "window_hours": 4.05, "jitter_h": 0.02}
    return scenario(
        "sync_deadline", 11,
        fleet={"classes": [phone("flagship_phone", 0.35, **small, charger_w=1.0, failures_per_hour=2.0,
                                 availability=night),
                           phone("low_end_phone", 0.35, **small, charger_w=0.0, failures_per_hour=20.0,
                                 availability=markov(900, 300)),
                           phone("iot_gateway", 0.2),
                           phone("mec_t4", 0.1)],
               "initial_charge": [0.3, 0.6], "min_charge": 0.3, "cutoff_charge": 0.25},
        network={"cell_radius_m": 600, "outage_snr_db": -5, "backhaul_mbps": 20},
        model={"emulate": "SmolLM2-135M", "lora": {"r": 8, "alpha": 16, "ranks": {"iot_gateway": 4}}},
        run={"rounds": 5, "clients_per_round": 50, "over_selection": 4.8, "deadline_s": 90, "policy": "deadline"})


def synchronous_k_fastest() -> dict:
    """k_fastest rounds (no deadline): each closes at the 100th of 150 reports. Oort selection (it remembers
    each device's last session time), battery devices invited only while on charge (so the low-end phones, whose
    on-off pattern says nothing of charging, never are), 8-bit uploads."""
    return scenario(
        "k_fastest", 12,
        fleet={"classes": [phone("flagship_phone", 0.3, failures_per_hour=6.0),
                           phone("low_end_phone", 0.3, availability=markov(600, 600)),
                           phone("iot_gateway", 0.3, availability=markov(400, 200)),
                           phone("jetson_orin_nano", 0.1)],
               "only_while_charging": True},
        strategy={"name": "fedavg", "compression": {"name": "q8"}},
        run={"rounds": 5, "clients_per_round": 100, "over_selection": 1.5, "policy": "k_fastest",
             "selection": {"name": "oort"}})


def multicast_tdma() -> dict:
    """The global adapter broadcast once per cell at its weakest invitee's rate, the uplink shared in time
    (TDMA) on 10 MHz, full-load inter-cell interference, Rician fading; cell-site servers in the cells too.
    K = 85 of 150: half the rounds fill K, half reach the deadline."""
    return scenario(
        "multicast_tdma", 13,
        fleet={"classes": [phone("flagship_phone", 0.4), phone("low_end_phone", 0.4), phone("iot_gateway", 0.15),
                           phone("mec_t4", 0.05)]},
        network={"multicast_download": True, "sharing": "tdma", "interference_load": 1.0, "fading": "rician",
                 "rician_k_db": 3.0, "uplink_mhz": 10},
        run={"clients_per_round": 85, "over_selection": 1.76, "deadline_s": 120})


def link_traces(folder: Path) -> dict:
    """Every device replays recorded traces (from its own offset) as its uplink (two-column, 0.5 to 12 Mb/s)
    and downlink (mahimahi, alternating 48 and 12 Mb/s), written under `folder`; cell-site servers keep the
    backhaul. A 50 s deadline cuts the low-end phones."""
    up = folder / "uplink.txt"
    up.write_text("# time_s Mbps\n0 3\n4 9\n11 0.5\n17 6\n25 1.5\n31 12\n")
    down = folder / "downlink.mahimahi"  # one line per 1500-byte packet, in ms: 4 a ms is 48 Mb/s
    down.write_text("".join(f"{ms}\n" * (4 if (ms // 700) % 2 == 0 else 1) for ms in range(1, 3001)))
    return scenario(
        "traces", 14,
        fleet={"classes": [phone("flagship_phone", 0.4, failures_per_hour=4.0),
                           phone("low_end_phone", 0.4, availability=markov(900, 300)),
                           phone("mec_t4", 0.2)]},
        network={"uplink_trace": {"path": str(up), "format": "two_column"},
                 "downlink_trace": {"path": str(down), "format": "mahimahi"}},
        run={"clients_per_round": 100, "over_selection": 1.5, "deadline_s": 50})


PHONES_AND_GATEWAYS = [phone("flagship_phone", 0.3, failures_per_hour=3.0),
                       phone("low_end_phone", 0.5, failures_per_hour=3.0),
                       phone("iot_gateway", 0.2)]


def recorded_availability(folder: Path) -> dict:
    """Phones replay a recorded behaviour trace (FedScale's format, written under `folder`): 40 recorded
    clients, each online (and so on charge) for 50 s out of every 120 s from its own offset. Sessions end
    offline when an interval ends; small batteries with a weak charger hit the cutoff meanwhile."""
    trace = {str(j): {"active": [1.5 * j, 1.5 * j + 120], "inactive": [1.5 * j + 50, 1.5 * j + 170],
                      "finish_time": 240.0} for j in range(40)}
    path = folder / "behave.json"
    path.write_text(json.dumps(trace), encoding="utf-8")
    recorded = {"kind": "trace", "path": str(path)}
    return scenario(
        "recorded_availability", 17,
        fleet={"classes": [phone("flagship_phone", 0.5, availability=recorded, battery_wh=[0.3, 0.5], charger_w=2.0),
                           phone("low_end_phone", 0.3, availability=recorded, battery_wh=[0.3, 0.5]),
                           phone("iot_gateway", 0.2)],
               "initial_charge": [0.3, 0.6], "min_charge": 0.3, "cutoff_charge": 0.27},
        run={"rounds": 5, "clients_per_round": 60, "over_selection": 2.0, "deadline_s": 60})


def fedprox_partial_work() -> dict:
    """FedProx: each device trains the steps that fit in a 40 s local budget, and a straggler that would miss
    the 60 s deadline trains only those that leave time for its upload (partial work)."""
    return scenario(
        "fedprox", 15, fleet={"classes": PHONES_AND_GATEWAYS},
        training={"local_steps": 8, "batch_size": 8, "seq_len": 64, "local_time_budget_s": 40},
        strategy={"name": "fedprox", "mu": 0.01},
        run={"clients_per_round": 100, "over_selection": 1.5, "deadline_s": 60})


def secure_aggregation() -> dict:
    """Secure aggregation: its key exchange adds bytes both ways and three round trips over a 40 ms backhaul
    before each aggregation."""
    return scenario(
        "secagg", 16, fleet={"classes": PHONES_AND_GATEWAYS},
        network={"backhaul_latency_ms": 40},
        strategy={"name": "secagg_fedavg", "threshold_fraction": 0.5},
        run={"clients_per_round": 76, "over_selection": 2, "deadline_s": 90})


ASYNC_FLEET = {
    "classes": [phone("flagship_phone", 0.3, battery_wh=[0.1, 0.2], charger_w=0.0, failures_per_hour=4.0,
                      availability=markov(300, 300)),
                phone("low_end_phone", 0.4, failures_per_hour=4.0),
                phone("iot_gateway", 0.2),
                phone("jetson_orin_nano", 0.1)],
    "initial_charge": [0.3, 0.9], "min_charge": 0.3, "cutoff_charge": 0.2,
}


def fedbuff() -> dict:
    """FedBuff: 100 devices at work, a server step per 10 buffered updates, updates more than 4 versions
    stale dropped; 25 versions."""
    return scenario(
        "fedbuff", 18, fleet=ASYNC_FLEET,
        strategy={"name": "fedbuff", "buffer_size": 10, "concurrency": 100, "max_staleness": 4},
        run={"rounds": 25, "clients_per_round": 10})


def fedasync() -> dict:
    """FedAsync: 40 devices at work, a version per update, updates more than 12 versions stale dropped; 120
    versions."""
    return scenario(
        "fedasync", 19, fleet=ASYNC_FLEET,
        strategy={"name": "fedasync", "concurrency": 40, "max_staleness": 12},
        run={"rounds": 120, "clients_per_round": 10})


def night_only_horizon() -> dict:
    """Phones available only from about 23:30 to 00:06: rounds of 65 invitees until they have left (some with
    fewer than min_reports reports, abandoned), then rounds with nobody to invite, each waiting out the
    deadline, until the horizon (run with until_s) ends the run."""
    night = {"kind": "diurnal", "window_start_h": 23.5, "window_hours": 0.6, "jitter_h": 0.05}
    return scenario(
        "horizon", 20,
        fleet={"classes": [phone("flagship_phone", 0.5, availability=night),
                           phone("low_end_phone", 0.5, availability=night)]},
        run={"rounds": 100, "clients_per_round": 50, "over_selection": 1.3, "deadline_s": 60, "min_reports": 25})


# --- the cases ------------------------------------------------------------------------------------------

DROPS = {"offline", "device_failure", "battery", "link_outage"}


def test_synchronous_deadline(tmp_path):
    compare(synchronous_deadline(), tmp_path, {"completed", "missed_deadline", "surplus", *DROPS})


def test_synchronous_k_fastest(tmp_path):
    compare(synchronous_k_fastest(), tmp_path, {"completed", "surplus", "offline", "device_failure", "link_outage"})


def test_multicast_tdma_interference(tmp_path):
    run = compare(multicast_tdma(), tmp_path, {"completed", "missed_deadline", "surplus", "device_failure",
                                               "link_outage"})
    done = sessions(run).query("outcome == 'completed' and device_class != 'mec_t4'")
    assert (done["bytes_down_air"] < done["bytes_down"]).all()  # each receiver's share of its cell's broadcast


def test_link_traces(tmp_path):
    (tmp_path / "traces").mkdir()
    compare(link_traces(tmp_path / "traces"), tmp_path, {"completed", "missed_deadline", "surplus", "offline",
                                                         "device_failure"})


def test_recorded_availability(tmp_path):
    compare(recorded_availability(tmp_path), tmp_path, {"completed", "missed_deadline", "offline", "battery"})


def test_fedprox_partial_work_under_a_local_time_budget(tmp_path):
    run = compare(fedprox_partial_work(), tmp_path, {"completed", "missed_deadline", "surplus", "device_failure",
                                                     "link_outage"})
    done = sessions(run).query("outcome == 'completed'")
    budget_steps = np.clip(np.floor(40 / (done["train_s"] / done["steps"]) + 1e-9), 1, 8)
    assert (done["steps"] < budget_steps).any(), "no straggler sent partial work"
    assert (budget_steps < 8).any(), "the local time budget limits nobody"


def test_secure_aggregation(tmp_path):
    compare(secure_aggregation(), tmp_path, {"completed", "missed_deadline", "surplus", "device_failure",
                                             "link_outage"})


def test_fedbuff(tmp_path):
    compare(fedbuff(), tmp_path, {"completed", "stale", "surplus", *DROPS})


def test_fedasync(tmp_path):
    compare(fedasync(), tmp_path, {"completed", "stale", "surplus", *DROPS})


def test_horizon_with_abandoned_and_empty_rounds(tmp_path):
    run = compare(night_only_horizon(), tmp_path, {"completed", "missed_deadline", "offline"}, until_s=900.0)
    rounds = pd.read_parquet(run / "rounds.parquet")
    assert rounds["abandoned"].any() and (rounds["version"].iloc[-1] > 0)
    assert (rounds["selected"].iloc[1:] == 0).any(), "no round found nobody to invite"
    assert rounds["t_start"].iloc[-1] < 900.0 <= rounds["t_end"].iloc[-1] and len(rounds) < 101


def test_auto_engine_is_fast_in_systems_mode(tmp_path):
    tree = scenario("auto", 21, fleet={"size": 2000}, run={"rounds": 2, "clients_per_round": 20, "engine": "auto"})
    path = tmp_path / "auto.yaml"
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    run_dir = run_scenario(load_scenario(path), RunOptions(out=tmp_path / "run", progress=False))
    assert json.loads((run_dir / "summary.json").read_text())["engine"] == "fast"


def test_fast_engine_refuses_training():
    with pytest.raises(ScenarioError, match="engine: the fast clock trains nothing"):
        load_scenario("quickstart", ["run.engine=fast", "run.mode=train"])


def test_a_difference_names_the_column_and_the_rows(tmp_path):
    """The harness itself: a copy of a run with one value changed fails, naming the column and the session."""
    tree = scenario("harness", 22, fleet={"size": 2000}, run={"rounds": 2, "clients_per_round": 20})
    run, _ = run_engine(tree, "events", tmp_path / "events")
    assert_same_sessions(run, run)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "rounds.parquet").write_bytes((run / "rounds.parquet").read_bytes())
    table = sessions(run).sort_values(SESSION_KEYS).reset_index(drop=True)
    changed = table.copy()
    row = int(np.flatnonzero(changed["energy_j"] > 0)[0])
    changed.loc[row, "energy_j"] *= 1 + 1e-5
    changed.to_parquet(copy / "clients.parquet")
    with pytest.raises(AssertionError) as info:
        assert_same_sessions(run, copy)
    message = str(info.value)
    assert "1 difference(s)" in message and "clients.parquet: energy_j: 1 of" in message, message
    assert f" {table.loc[row, 'device']} " in message and "rel_diff" in message, message
    table.drop(index=row).to_parquet(copy / "clients.parquet")  # a session lost
    with pytest.raises(AssertionError, match=r"1 \('round', 'device'\) only in events"):
        assert_same_sessions(run, copy)


# --- resuming -------------------------------------------------------------------------------------------


def emulate_fast(folder: Path, strategy_name: str, resume=None):
    """Eight versions of a small systems-only run on the fast clock, with a checkpoint every two."""
    layout = AdapterLayout.from_shapes([("adapter.weight", (50,))], rank=1, scaling=1.0)
    fleet = sample_fleet(0, 300, {"flagship_phone": 0.5, "iot_gateway": 0.5}, cells=3, cell_radius_m=250,
                         shadowing_sigma_db=6, initial_charge=(0.3, 1.0), num_data_clients=50)
    strategy = build_strategy(strategy_name)
    strategy.setup(StrategyContext(layout, population=len(fleet), cohort=5, seed=0))
    sink = FileSink(folder)
    FastEmulator(
        seed=0, fleet=fleet, num_samples=np.full(50, 100),
        rules=RoundRules(8, 5, 7, 600.0, "deadline", min_reports=2, eval_every=1, local_steps=4,
                         min_charge=0.2, cutoff_charge=0.1, only_while_charging=False),
        radio=Radio("uma_nlos", 3.5, 20e6, 20e6, 46.0, 7.0, "ofdma", "rayleigh", 9.0, -10.0, 1e9, 0.005),
        cost=SessionCost(5e12, 4_000_000, 4_000_000), selector=Uniform(), adapter=torch.zeros(50),
        strategy=strategy, clients=ClientSide(layout, strategy, torch.zeros(50), 0, Attack(), np.zeros(300, bool)),
        host=None, sink=sink, checkpoint_every=2, resume=resume,
    ).run()
    return sink


@pytest.mark.parametrize("strategy_name", ["fedavg", "fedbuff"])
def test_a_resumed_fast_run_records_what_the_whole_run_records(tmp_path, strategy_name):
    whole = emulate_fast(tmp_path, strategy_name)
    assert len(whole.checkpoints) == 4 and len(whole.sessions_rows) > 40
    path, rows, sessions = whole.checkpoints[1]  # after round (or version) 4 of 8
    resumed = emulate_fast(tmp_path / "again", strategy_name, resume=checkpoint.load(path))
    pd.testing.assert_frame_equal(pd.DataFrame(resumed.rounds), pd.DataFrame(whole.rounds[rows:]))
    pd.testing.assert_frame_equal(pd.DataFrame(resumed.sessions_rows),
                                  pd.DataFrame(whole.sessions_rows[sessions:]).reset_index(drop=True))
