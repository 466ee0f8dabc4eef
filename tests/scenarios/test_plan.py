"""Capacity planning: the plan section's validation, the round-duration rule (short of K is over any target),
per-day scaling against hand-computed values, the bandwidth search on synthetic predicates and on a small
real fleet (checked from the probes' own rounds.parquet), the unreachable case, and the written files."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from analysis.capacity import cell_load, class_table, duration_percentiles, per_day_scale, percentile, round_durations
from scenarios.plan import run_plan, search_uplink
from scenarios.errors import ScenarioError
from scenarios.loader import load_scenario, parse_scenario

# A small systems-only fleet whose p95 round falls from 76 s at 2 MHz to 58 s at 8 MHz (flagship phones
# train ~20-50 s of Qwen2.5-0.5B, then upload ~18 MB); data.min_lines keeps the text to tokenise small.
SMALL = ["run.mode=systems", "fleet.size=200", "model.emulate=qwen2.5-0.5b", "data.source=shakespeare",
         "data.min_lines=600", "training.batch_size=16",
         "fleet.classes=[{name: flagship_phone, fraction: 0.8}, {name: mec_t4, fraction: 0.2}]",
         "run.over_selection=2", "run.deadline_s=600", "network.uplink_mhz=8", "plan.uplink_mhz_min=2",
         "plan.uplink_mhz_max=8", "plan.tolerance=0.5", "plan.rounds=5"]
TARGET_S = 62.0


def errors_of(tree: dict) -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(tree)
    return str(info.value)


def p95_of(run_dir, k: int) -> float:
    """p95 of the time to the K-th report, computed apart from analysis.capacity: rounds short of K are
    given a duration no target reaches."""
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    rounds = rounds[rounds["round"] > 0]
    return float(np.percentile(np.where(rounds["completed"] >= k, rounds["duration_s"], 1e12), 95))


# --- the plan section -----------------------------------------------------------------------------------


def test_plan_section_defaults_and_bad_values_are_named():
    plan = parse_scenario({}).plan
    assert (plan.round_p95_target_s, plan.uplink_mhz_min, plan.uplink_mhz_max, plan.tolerance, plan.rounds) == (
        300.0, 1.0, 400.0, 0.05, 10)
    message = errors_of({"plan": {"round_p95_target_s": 0, "uplink_mhz_min": -1, "tolerance": 0, "rounds": 0}})
    for name in ("round_p95_target_s", "uplink_mhz_min", "tolerance", "rounds"):
        assert f"plan.{name}:" in message
    assert "uplink_mhz_min (50.0) must be below uplink_mhz_max (20.0)" in errors_of(
        {"plan": {"uplink_mhz_min": 50, "uplink_mhz_max": 20}})
    assert "plan.speed: unknown field" in errors_of({"plan": {"speed": 3}})


def test_capacity_planning_scenario_loads():
    scenario = load_scenario("capacity_planning")
    assert scenario.fleet.size == 1_000_000 and scenario.run.mode == "systems"
    assert scenario.network.cells >= 100 and scenario.run.clients_per_round >= 1000
    assert scenario.model.emulate and len(scenario.fleet.classes) >= 3


# --- round durations and percentiles ------------------------------------------------------------------


def rounds_of(durations: list[float], completed: list[int]) -> pd.DataFrame:
    """A rounds frame: the server's round 0 row, then one row per round, back to back."""
    t_end = np.cumsum([0.0, *durations])
    return pd.DataFrame({"round": range(len(t_end)), "t_start": [0.0, *t_end[:-1]], "t_end": t_end,
                         "duration_s": [0.0, *durations], "completed": [0, *completed]})


def test_a_round_short_of_k_reports_exceeds_any_target():
    # 20 rounds of 10, 20, ..., 200 s; the 30 s round closed with K-1 reports: short rounds are unbounded
    durations = [10.0 * (i + 1) for i in range(20)]
    rounds = rounds_of(durations, [5] * 20)
    rounds.loc[3, "completed"] = 4  # round 3 (30 s) ended early, short of K = 5
    got = round_durations(rounds, k=5)
    assert np.isinf(got[2]) and np.isfinite(np.delete(got, 2)).all()
    p = duration_percentiles(got)
    # sorted: 10, 20, 40, 50, ..., 200, inf. p50 at position 9.5 (110, 120); p90 at 17.1 (190, 200);
    # p95 at 18.05 lies between 200 and the unbounded round
    assert p["p50"] == pytest.approx(115.0) and p["p90"] == pytest.approx(191.0)
    assert math.isinf(p["p95"]) and math.isinf(p["max"])
    # the same rounds all reaching K: p95 is numpy's, 190.5
    assert duration_percentiles(round_durations(rounds_of(durations, [5] * 20), 5))["p95"] == pytest.approx(190.5)
    # one short round in 21 keeps p95 bounded (position 19 of 0..20), two do not
    assert math.isfinite(percentile(np.r_[np.arange(20.0), np.inf], 95))
    assert math.isinf(percentile(np.r_[np.arange(19.0), np.inf, np.inf], 95))


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=40), st.floats(0, 100))
def test_percentile_is_numpys_on_bounded_rounds(values, q):
    assert percentile(np.array(values), q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-6)


# --- per-day scaling -----------------------------------------------------------------------------------


def test_per_day_figures_scale_the_emulated_totals():
    rounds = rounds_of([7200.0, 14400.0], [1, 1])  # 21,600 simulated s: a day is 4 times that
    scale = per_day_scale(rounds)
    assert scale == pytest.approx(4.0)
    nan = np.nan
    clients = pd.DataFrame({
        "device_class": ["phone", "phone", "phone", "gateway", "gateway"],
        "cell": [0, 0, 1, 0, 1],
        "outcome": ["completed", "completed", "offline", "completed", "missed_deadline"],
        "bytes_up": [1e9, 0.5e9, 0.0, 0.0, 0.25e9],
        "bytes_up_air": [1e9, 0.5e9, 0.0, 0.0, 0.25e9],
        "bytes_down_air": [2e9, 1e9, 1e9, 0.0, 0.5e9],
        "energy_j": [3600.0, 3600.0, 3600.0, 7200.0, 0.0],
        "charge_start": [0.9, 0.8, 0.7, nan, nan],
        "charge_end": [0.88, 0.76, 0.64, nan, nan],
    })
    cells = cell_load(clients, cells=3, scale=scale)
    # cell 0: 1.5 GB up, 3 GB down; cell 1: 0.25 up, 1.5 down; cell 2 idle; times 4 per day
    assert cells["uplink_gb_per_day"].tolist() == pytest.approx([6.0, 1.0, 0.0])
    assert cells["downlink_gb_per_day"].tolist() == pytest.approx([12.0, 6.0, 0.0])
    assert cells["uplink_gb_per_day"].mean() == pytest.approx(7.0 / 3)

    classes = pd.DataFrame({"devices": [10, 5, 2], "eligible": [8, 5, 2], "battery_powered": [True, False, False]},
                           index=pd.Index(["phone", "gateway", "mec_t4"], name="device_class"))
    table = class_table(clients, classes, scale).set_index("device_class")
    phone, gateway, mec = table.loc["phone"], table.loc["gateway"], table.loc["mec_t4"]
    assert phone["sessions_per_device_per_day"] == pytest.approx(3 * 4 / 10)
    assert phone["reports_per_device_per_day"] == pytest.approx(2 * 4 / 10)
    assert phone["completion_rate"] == pytest.approx(2 / 3) and gateway["completion_rate"] == pytest.approx(0.5)
    assert phone["share_of_reports"] == pytest.approx(2 / 3) and mec["share_of_reports"] == 0
    assert phone["energy_wh_per_device_per_day"] == pytest.approx(3 * 1.0 * 4 / 10)  # three 1 Wh sessions
    assert gateway["energy_wh_per_device_per_day"] == pytest.approx(2.0 * 4 / 5)
    # battery drawn: 0.02 + 0.04 + 0.06 of capacity in the emulated time, shared by 10 phones
    assert phone["battery_share_per_day"] == pytest.approx(0.12 * 4 / 10)
    assert phone["battery_share_per_session"] == pytest.approx(0.04)
    assert math.isnan(gateway["battery_share_per_day"]) and math.isnan(gateway["battery_share_per_session"])
    assert mec["sessions_per_device_per_day"] == 0 and math.isnan(mec["completion_rate"])


# --- the search ----------------------------------------------------------------------------------------


def probed(threshold: float | None):
    """A predicate 'the band meets the target' (at or above threshold; None: never) that records its calls."""
    calls = []

    def meets(mhz: float) -> bool:
        calls.append(mhz)
        return threshold is not None and mhz >= threshold

    return meets, calls


def test_search_brackets_the_threshold_within_the_tolerance():
    meets, calls = probed(7.3)
    status, answer = search_uplink(meets, 1.0, 400.0, 0.05)
    assert status == "found" and 7.3 <= answer <= 7.3 * 1.05
    below = max(x for x in calls if x < answer)
    assert not meets(below) and below >= answer / 1.05
    # log-scale bisection: the bracket 400 halves in log each step until within 5%
    assert len(calls) - 1 <= 2 + math.ceil(math.log2(math.log(400) / math.log(1.05)))


def test_search_reports_the_ends():
    meets, calls = probed(None)
    assert search_uplink(meets, 1.0, 400.0, 0.05) == ("unreachable", None) and calls == [400.0]
    meets, calls = probed(0.5)
    assert search_uplink(meets, 1.0, 400.0, 0.05) == ("minimum_meets", 1.0) and calls == [400.0, 1.0]


def test_asynchronous_strategies_and_a_used_folder_are_refused(tmp_path):
    with pytest.raises(ScenarioError, match="strategy: plan measures synchronous rounds"):
        run_plan(load_scenario("quickstart", ["strategy.name=fedbuff"]), tmp_path / "a", progress=False)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    with pytest.raises(ScenarioError, match="--out"):
        run_plan(load_scenario("quickstart", SMALL), tmp_path / "b", progress=False)


@pytest.fixture(scope="module")
def small_plan(tmp_path_factory):
    scenario = load_scenario("quickstart", [*SMALL, f"plan.round_p95_target_s={TARGET_S}"])
    return run_plan(scenario, tmp_path_factory.mktemp("plan") / "out", progress=False), scenario


def test_search_on_a_small_fleet_meets_the_target_and_just_below_does_not(small_plan):
    out, scenario = small_plan
    plan = json.loads((out / "plan.json").read_text())
    answer, k, tol = plan["answer_mhz"], scenario.run.clients_per_round, scenario.plan.tolerance
    run_dirs = {p["uplink_mhz"]: out / p["run_dir"] for p in plan["probes"]}
    assert plan["status"] == "found" and 2 < answer <= 8
    assert p95_of(run_dirs[answer], k) <= TARGET_S
    below = max(mhz for mhz in run_dirs if mhz < answer)
    assert below >= answer / (1 + tol)
    assert p95_of(run_dirs[below], k) > TARGET_S
    for probe in plan["probes"]:  # every probe kept its evidence, at its own band, in systems mode
        resolved = (out / probe["run_dir"] / "scenario.resolved.yaml").read_text()
        assert f"uplink_mhz: {probe['uplink_mhz']}" in resolved and "mode: systems" in resolved
        assert probe["meets"] == (p95_of(out / probe["run_dir"], k) <= TARGET_S)


def test_plan_page_opens_in_a_browser(small_plan, browser):
    from analysis.browser import check_page

    result = check_page(small_plan[0] / "plan.html")
    assert result.problems() == [] and len(result.figures) == 5


def test_plan_files_hold_the_figures(small_plan, figures_of):
    out, scenario = small_plan
    plan = json.loads((out / "plan.json").read_text())
    classes = pd.read_csv(out / "plan.csv")
    assert classes["devices"].sum() == scenario.fleet.size
    assert set(classes["device_class"]) == {"flagship_phone", "mec_t4"}
    # the baseline's per-day energy from its own clients.parquet
    clients = pd.read_parquet(out / plan["baseline"]["run_dir"] / "clients.parquet")
    assert plan["energy_wh_per_device_per_day"] == pytest.approx(
        clients["energy_j"].sum() / 3600 * plan["per_day_scale"] / scenario.fleet.size)
    text = (out / "plan.txt").read_text()
    assert f"{plan['answer_mhz']:.3g} MHz" in text and "flagship_phone" in text
    figures = figures_of(out / "plan.html")
    assert len(figures) == 5  # durations, search, cells, energy, battery
    for fig in figures:
        assert any(t["points"] for t in fig["traces"]), fig["title"]


def test_a_target_below_the_training_time_is_unreachable(tmp_path):
    scenario = load_scenario("quickstart", [*SMALL, "plan.round_p95_target_s=1"])
    plan = json.loads((run_plan(scenario, tmp_path / "out", progress=False) / "plan.json").read_text())
    assert plan["status"] == "unreachable" and plan["answer_mhz"] is None
    assert [p["uplink_mhz"] for p in plan["probes"]] == [8.0]  # the baseline is the maximum: one probe
    assert "train dominates" in plan["message"] and "more uplink cannot shorten training" in plan["message"]
    assert plan["at_max"]["seconds"]["train"] > plan["at_max"]["seconds"]["upload"]
