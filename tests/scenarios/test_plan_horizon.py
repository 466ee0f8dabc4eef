"""A plan's horizon (plan.horizon_h): the field's bad values named, the per-hour figures against values worked
out by hand from small rounds and sessions tables, and a small plan whose phones are available from 00:00 to
02:00 only, run over 3 hours: its busy hour is the hour with the most bytes over the air (counted here from
its own run folder), the hour without phones has no participation, and the run stopped at the horizon."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.horizon import HOUR_COLUMNS, busy_hour, hourly_table
from scenarios.errors import ScenarioError
from scenarios.loader import load_scenario, parse_scenario
from scenarios.plan import run_plan


def test_horizon_h_defaults_to_none_and_bad_values_name_the_field():
    assert parse_scenario({}).plan.horizon_h is None
    assert parse_scenario({"plan": {"horizon_h": 24}}).plan.horizon_h == 24
    for bad, reason in ((-1, "greater than or equal to 1"), (0, "greater than or equal to 1"),
                        (100_000, "less than or equal to 168"), (2.5, "valid integer"), ("a day", "valid integer")):
        with pytest.raises(ScenarioError) as info:
            parse_scenario({"plan": {"horizon_h": bad}})
        assert f"plan.horizon_h: Input should be {'a ' if reason == 'valid integer' else ''}{reason}" in str(
            info.value), str(info.value)


# --- per-hour figures from small tables ------------------------------------------------------------------


def small_run() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Six rounds with K = 2 over four hours, and their sessions in three cells.

    round  opens   ends    hour  invited  reports
      1       0     100     0      4        2      100 s
      2     100     400     0      4        2      300 s
      3     400   3,700     0      3        1      short of K (ends in hour 1, counts in hour 0)
      4   3,700   4,300     1      0        0      nobody invited: short of K
      5   4,300   7,300     1      0        0      short of K
      6   7,300   7,350     2      2        2       50 s
    hour 3: no round opens.
    """
    rounds = pd.DataFrame({
        "round": [0, 1, 2, 3, 4, 5, 6],
        "t_start": [0.0, 0.0, 100.0, 400.0, 3700.0, 4300.0, 7300.0],
        "t_end": [0.0, 100.0, 400.0, 3700.0, 4300.0, 7300.0, 7350.0],
        "selected": [0, 4, 4, 3, 0, 0, 2],
        "completed": [0, 2, 2, 1, 0, 0, 2],
    })
    rounds["duration_s"] = rounds["t_end"] - rounds["t_start"]
    # Sessions as a run with an empty round records them: integer columns turned floats.
    sessions = pd.DataFrame({
        "round": [1.0, 1.0, 3.0, 6.0, 6.0],
        "cell": [0.0, 1.0, 0.0, 2.0, 2.0],
        "bytes_up_air": [10e6, 5e6, 1e6, 30e6, 30e6],
        "bytes_down_air": [20e6, 20e6, 4e6, 2e6, 2e6],
    })
    return rounds, sessions


def test_hourly_figures_match_the_hand_computed_ones():
    rounds, sessions = small_run()
    table = hourly_table(rounds, sessions, k=2, cells=3, n_hours=4).set_index("hour")
    assert list(table.reset_index().columns) == HOUR_COLUMNS
    assert table["hour_of_day"].tolist() == [0, 1, 2, 3]
    assert table["rounds"].tolist() == [3, 2, 1, 0]

    # hour 0: durations 100, 300, unbounded. p50 at position 1 of 0..2 is 300; p95 at 1.9 lies between 300 and
    # the unbounded round, so it is unbounded.
    assert table.loc[0, "p50_s"] == 300.0 and math.isinf(table.loc[0, "p95_s"])
    assert table.loc[0, "short_rounds"] == 1
    # hour 1: two rounds, both short of K
    assert math.isinf(table.loc[1, "p50_s"]) and math.isinf(table.loc[1, "p95_s"]) and table.loc[1, "short_rounds"] == 2
    # hour 2: one 50 s round; hour 3: no round at all (NaN, not unbounded)
    assert table.loc[2, "p50_s"] == 50.0 and table.loc[2, "p95_s"] == 50.0 and table.loc[2, "short_rounds"] == 0
    assert math.isnan(table.loc[3, "p50_s"]) and math.isnan(table.loc[3, "p95_s"])

    # participation: hour 0 invited 4 + 4 + 3 = 11, 2 + 2 + 1 = 5 reported
    assert table["invited"].tolist() == [11, 0, 2, 0] and table["completed"].tolist() == [5, 0, 2, 0]
    assert table.loc[0, "completion_rate"] == pytest.approx(5 / 11) and table.loc[2, "completion_rate"] == 1.0
    assert math.isnan(table.loc[1, "completion_rate"]) and math.isnan(table.loc[3, "completion_rate"])

    # cell load, MB. Hour 0 (rounds 1 and 3): cell 0 up 10 + 1 = 11, down 20 + 4 = 24; cell 1 up 5, down 20;
    # cell 2 idle. Mean up 16 / 3, down 44 / 3; per cell up + down 35, 25, 0: mean 20, peak 35 in cell 0.
    h0 = table.loc[0]
    assert h0["uplink_mb_mean"] == pytest.approx(16 / 3) and h0["uplink_mb_peak"] == pytest.approx(11)
    assert h0["downlink_mb_mean"] == pytest.approx(44 / 3) and h0["downlink_mb_peak"] == pytest.approx(24)
    assert h0["load_mb_mean"] == pytest.approx(20) and h0["load_mb_peak"] == pytest.approx(35)
    assert h0["busiest_cell"] == 0
    # Hour 2 (round 6): cell 2 up 60, down 4: mean up 20, down 4 / 3, up + down 64 / 3; peak 64 in cell 2.
    h2 = table.loc[2]
    assert h2["uplink_mb_mean"] == pytest.approx(20) and h2["uplink_mb_peak"] == pytest.approx(60)
    assert h2["downlink_mb_mean"] == pytest.approx(4 / 3) and h2["downlink_mb_peak"] == pytest.approx(4)
    assert h2["load_mb_mean"] == pytest.approx(64 / 3) and h2["load_mb_peak"] == pytest.approx(64)
    assert h2["busiest_cell"] == 2
    # hours 1 and 3 carried nothing
    for hour in (1, 3):
        assert table.loc[hour, ["uplink_mb_peak", "downlink_mb_peak", "load_mb_mean"]].tolist() == [0, 0, 0]
        assert table.loc[hour, "busiest_cell"] == -1

    # The busy hour is the most traffic per cell (hour 2, 21.3 MB), not the most invitations (hour 0, 20 MB).
    assert busy_hour(table.reset_index()) == 2


def test_a_tie_for_the_busy_hour_goes_to_the_earliest_and_rounds_past_the_horizon_are_refused():
    table = pd.DataFrame({"hour": [0, 1, 2], "load_mb_mean": [1.0, 3.0, 3.0]})
    assert busy_hour(table) == 1
    rounds, sessions = small_run()
    with pytest.raises(ValueError, match="hour 2, past the 2 hours"):
        hourly_table(rounds, sessions, k=2, cells=3, n_hours=2)


# --- a small plan over three hours -----------------------------------------------------------------------

# Flagship phones available (and charging) from 00:00 to 02:00 in the reference time zone, and never from
# 02:00 to 03:00; two probes at most (4 and 8 MHz, tolerance 100%).
PHONES_TILL_2AM = ("fleet.classes=[{name: flagship_phone, fraction: 1, overrides: {availability: "
                   "{kind: diurnal, window_start_h: 0, window_hours: 2, jitter_h: 0}}}]")
HORIZON = ["run.mode=systems", "fleet.size=200", "model.emulate=qwen2.5-0.5b", "data.source=shakespeare",
           "data.min_lines=600", "training.batch_size=16", PHONES_TILL_2AM, "run.over_selection=2",
           "run.deadline_s=600", "network.uplink_mhz=8", "plan.uplink_mhz_min=4", "plan.uplink_mhz_max=8",
           "plan.tolerance=1", "plan.rounds=3", "plan.round_p95_target_s=100", "plan.horizon_h=3"]


@pytest.fixture(scope="module")
def horizon_plan(tmp_path_factory):
    scenario = load_scenario("quickstart", HORIZON)
    out = run_plan(scenario, tmp_path_factory.mktemp("horizon") / "out", progress=False)
    return out, scenario, json.loads((out / "plan.json").read_text())


def hourly_bytes_by_hand(run_dir) -> dict[int, float]:
    """Bytes over the air (up + down) per hour in which the sessions' rounds opened, from the run folder."""
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    opened = {int(r): int(t // 3600) for r, t in zip(rounds["round"], rounds["t_start"]) if r > 0}
    sessions = pd.read_parquet(run_dir / "clients.parquet")
    total: dict[int, float] = {}
    for r, up, down in zip(sessions["round"], sessions["bytes_up_air"], sessions["bytes_down_air"]):
        total[opened[int(r)]] = total.get(opened[int(r)], 0.0) + up + down
    return total


def test_the_busy_hour_has_the_most_traffic_and_the_hour_without_phones_has_none(horizon_plan):
    out, scenario, plan = horizon_plan
    horizon = plan["horizon"]
    run_dir = out / horizon["run_dir"]
    table = pd.DataFrame(horizon["table"]).set_index("hour")
    assert list(table.index) == [0, 1, 2]

    by_hand = hourly_bytes_by_hand(run_dir)
    assert horizon["busy_hour"] == max(by_hand, key=by_hand.get)
    for hour, total in by_hand.items():  # mean per cell x cells is the hour's total
        assert table.loc[hour, "load_mb_mean"] * scenario.network.cells == pytest.approx(total / 1e6)

    # 00:00 to 02:00 the phones take part; from 02:00 none is available: nobody invited, no byte moved
    assert (table.loc[[0, 1], "invited"] > 0).all() and (table.loc[[0, 1], "completed"] > 0).all()
    assert table.loc[2, "rounds"] > 0
    assert table.loc[2, ["invited", "completed", "load_mb_peak"]].tolist() == [0, 0, 0]
    assert horizon["table"][2]["p95_s"] is None  # unbounded in plan.json: rounds opened and none reached K
    assert horizon["table"][2]["short_rounds"] == table.loc[2, "rounds"]
    assert "In 1 hour(s) no device could be invited" in horizon["message"]


def test_the_horizon_runs_at_the_answer_and_stops_at_its_end(horizon_plan):
    out, scenario, plan = horizon_plan
    horizon = plan["horizon"]
    run_dir = out / horizon["run_dir"]
    expected = plan["answer_mhz"] if plan["answer_mhz"] is not None else scenario.network.uplink_mhz
    assert horizon["uplink_mhz"] == expected
    assert horizon["band"] == ("answer" if plan["answer_mhz"] is not None else "scenario")
    resolved = yaml.safe_load((run_dir / "scenario.resolved.yaml").read_text())
    assert resolved["network"]["uplink_mhz"] == expected and resolved["run"]["mode"] == "systems"
    assert json.loads((run_dir / "summary.json").read_text())["until_s"] == 3 * 3600
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    rounds = rounds[rounds["round"] > 0]
    # every round opened within the 3 hours, and the last one ran to or past their end
    assert rounds["t_start"].max() < 3 * 3600 <= rounds["t_end"].max()
    assert horizon["rounds"] == len(rounds) == sum(row["rounds"] for row in horizon["table"])


def test_the_horizon_is_in_the_files_and_the_page(horizon_plan, figures_of):
    out, _, plan = horizon_plan
    hours = pd.read_csv(out / "plan_hours.csv")
    assert hours["hour"].tolist() == [0, 1, 2] and hours["hour_of_day"].tolist() == [0, 1, 2]
    assert np.isinf(hours["p95_s"][2])  # the CSV writes an unbounded percentile as inf
    assert hours["invited"].tolist() == [row["invited"] for row in plan["horizon"]["table"]]
    text = (out / "plan.txt").read_text()
    busy = plan["horizon"]["busy_hour"]
    assert "Hour by hour over the horizon" in text and f"{busy:02d}:00 *" in text
    figures = figures_of(out / "plan.html")
    titles = [f["title"] for f in figures]
    assert "Round duration by the hour it opened (time to the K-th report)" in titles
    assert "Participation per hour" in titles and "Traffic over each cell's air per hour" in titles
    assert len(figures) == 5 + 3
    for fig in figures:
        assert any(t["points"] for t in fig["traces"]), fig["title"]


def test_horizon_page_opens_in_a_browser(horizon_plan, browser):
    from analysis.browser import check_page

    result = check_page(horizon_plan[0] / "plan.html")
    assert result.problems() == [] and len(result.figures) == 8
