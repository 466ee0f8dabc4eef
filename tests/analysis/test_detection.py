"""Fault-detection records of a run: the target and what it took to reach it against hand-computed values, and
the report's "Fault detection" section with data in every figure."""

import json
import math
from pathlib import Path

import pandas as pd
import yaml
import pytest

from analysis.compare import comparison_table, write_comparison
from analysis.detection import MODELS, detection_summary, detection_target, load_detection, write_detection
from analysis.report import write_report

# Per version (see tests/analysis/conftest.py: t_end 0, 10, 25, 45, 70; bytes up 0, 100, 200, 300, 400)
GLOBAL = [0.55, 0.60, 0.70, 0.68, 0.75]
OWN = [0.55, 0.65, 0.72, 0.80, 0.78]


def sites(n: int = 3) -> pd.DataFrame:
    return pd.DataFrame({
        "site": [f"S{i:04d}" for i in range(n)], "data_client": range(n), "device": range(10, 10 + n),
        "windows": 32, "fault_windows": [16, 5, 9][:n], "local_steps": 64,
        "auroc_base": [0.5, 0.6, 0.55][:n], "auroc_local": [0.6, 0.7, 0.5][:n],
        "auroc_global": [0.8, 0.7, 0.75][:n], "auroc_personal": [0.9, 0.7, 0.74][:n],
        "auroc_tuned": [0.95, 0.8, 0.7][:n],
    })


def with_detection(rounds: pd.DataFrame) -> pd.DataFrame:
    return rounds.assign(detection_auroc=GLOBAL, detection_auroc_personal=OWN)


def test_target_defaults_to_halfway_from_base_to_best(make_run):
    rounds = with_detection(pd.read_parquet(make_run() / "rounds.parquet"))
    target, how = detection_target(rounds, None)
    assert target == pytest.approx((0.55 + 0.80) / 2) and "halfway" in how
    assert detection_target(rounds, 0.7) == (0.7, "set by the scenario (data.cellsite.target_auroc)")
    assert detection_target(rounds.assign(detection_auroc_personal=[0.6, 0.5, 0.6, 0.4, 0.55]), None)[0] is None


def test_summary_means_and_time_to_target(make_run):
    rounds = with_detection(pd.read_parquet(make_run() / "rounds.parquet"))
    found = detection_summary(rounds, sites(), target=0.7)
    # the sites' own adapters first reach 0.7 at version 2 (0.72): t_end 25, 100 + 200 bytes up, 2 x 1000 down
    assert found["time_to_detection_target_s"] == 25.0
    assert found["uplink_bytes_to_detection_target"] == 300 and found["downlink_bytes_to_detection_target"] == 2000
    assert found["detection_auroc_personal"] == pytest.approx((0.9 + 0.7 + 0.74) / 3)
    assert found["detection_auroc_local"] == pytest.approx(0.6)
    assert found["detection_auroc_tuned_median"] == pytest.approx(0.8)
    assert (found["detection_sites"], found["detection_windows"], found["detection_fault_windows"]) == (3, 96, 30)
    never = detection_summary(rounds, sites(), target=0.95)
    assert math.isnan(never["time_to_detection_target_s"])


def test_a_target_counts_as_reached_once_it_holds(make_run):
    # version 1 spikes above the target and falls back; from version 3 on it stays (the run ends after 2)
    rounds = pd.read_parquet(make_run() / "rounds.parquet").assign(
        detection_auroc=GLOBAL, detection_auroc_personal=[0.55, 0.75, 0.60, 0.72, 0.71])
    reached = detection_summary(rounds, sites(), target=0.7)
    assert reached["time_to_detection_target_s"] == 45.0 and reached["uplink_bytes_to_detection_target"] == 600
    assert math.isnan(detection_summary(rounds, sites(), target=0.715)["time_to_detection_target_s"])


def test_report_has_a_fault_detection_section(make_run, figures_of):
    run_dir = make_run()
    rounds = with_detection(pd.read_parquet(run_dir / "rounds.parquet"))
    rounds.to_parquet(run_dir / "rounds.parquet", index=False)
    write_detection(run_dir, sites(), detection_summary(rounds, sites(), target=None))
    page = write_report(run_dir)
    text = page.read_text(encoding="utf-8")
    assert "<h2>Fault detection</h2>" in text and "local training steps per site" in text
    assert "0.780 (0.740)" in text  # the sites' own adapters: mean and median
    figures = {f["title"]: f for f in figures_of(page)}
    over_time = figures["Fault-detection AUROC against simulated time (mean over the evaluated sites)"]
    assert [t["y"] for t in over_time["traces"]] == [GLOBAL, OWN]
    per_site = figures["Final fault-detection AUROC per evaluated site"]
    assert [t["name"] for t in per_site["traces"]] == list(MODELS.values())
    assert [t["y"] for t in per_site["traces"]] == [sites()[column].tolist() for column in MODELS]


def test_runs_without_detection_have_no_section(make_run):
    run_dir = make_run()
    assert load_detection(run_dir) is None
    assert "Fault detection" not in write_report(run_dir).read_text(encoding="utf-8")



def detection_run(make_run, name: str, own: list[float], target: float) -> Path:
    """A run folder with fault detection measured: `own` is the sites' own adapters' AUROC per version."""
    run_dir = make_run(name)
    rounds = pd.read_parquet(run_dir / "rounds.parquet").assign(detection_auroc=GLOBAL, detection_auroc_personal=own)
    rounds.to_parquet(run_dir / "rounds.parquet", index=False)
    found = detection_summary(rounds, sites(), target=target)
    write_detection(run_dir, sites(), found)
    summary = json.loads((run_dir / "summary.json").read_text())
    (run_dir / "summary.json").write_text(json.dumps(summary | found))
    return run_dir


def test_comparison_measures_every_run_to_the_lowest_detection_target(make_run, figures_of, tmp_path):
    slow = detection_run(make_run, "slow", [0.55, 0.60, 0.66, 0.71, 0.72], target=0.7)
    fast = detection_run(make_run, "fast", OWN, target=0.65)
    table = comparison_table({"slow": slow, "fast": fast, "plain": make_run("plain")})
    # the common target 0.65: slow holds it from version 2 (t_end 25), fast from version 1 (t_end 10)
    assert table["detection_target_auroc"].tolist()[:2] == [0.65, 0.65]
    assert table["time_to_detection_target_s"].tolist()[:2] == [25.0, 10.0]
    assert table["detection_auroc_personal"][1] == pytest.approx((0.9 + 0.7 + 0.74) / 3)
    assert math.isnan(table["time_to_detection_target_s"][2])  # no detection in that run
    page = write_comparison([slow, fast], tmp_path / "compare.html")
    over_time = [f for f in figures_of(page) if f["title"].startswith("Fault-detection AUROC")]
    assert [t["y"] for t in over_time[0]["traces"]] == [[0.55, 0.60, 0.66, 0.71, 0.72], OWN]
    assert "time to detection target (s)" in page.read_text(encoding="utf-8")


def test_seed_groups_carry_detection_figures_with_intervals(make_run, tmp_path):
    # three seeds of one scenario; the sites' own adapters per version, and where each holds AUROC 0.65:
    #   seed 0: OWN                              -> from version 1: t_end 10, 100 bytes up
    #   seed 1: 0.55 0.60 0.66 0.71 0.72         -> from version 2: t_end 25, 300 bytes up
    #   seed 2: 0.55 0.60 0.60 0.62 0.63         -> never
    # final AUROC (the sites' table, the same in each seed): (0.9 + 0.7 + 0.74) / 3 = 0.78, no spread
    # time to target over the two seeds that reached it: mean 17.5, s = 10.607, half 12.706 x 10.607 / sqrt(2)
    # = 95.30: [-77.8, 112.8]
    own = [OWN, [0.55, 0.60, 0.66, 0.71, 0.72], [0.55, 0.60, 0.60, 0.62, 0.63]]
    runs = []
    for seed, curve in enumerate(own):
        run_dir = detection_run(make_run, f"s{seed}", curve, target=0.65)
        tree = {"name": "cells", "seed": seed, "strategy": {"name": "fedavg"}, "output": {"dir": str(seed)}}
        (run_dir / "scenario.resolved.yaml").write_text(yaml.safe_dump(tree))
        runs.append(run_dir)
    page = write_comparison(runs, tmp_path / "c.html").read_text(encoding="utf-8")
    seeds = page[page.index("<h2>Seed groups</h2>"):page.index("<h2>Runs</h2>")]
    assert "2 of 3" in seeds  # reached the detection target
    assert "0.78 [0.78, 0.78]" in seeds
    assert "17.5 [-77.8, 112.8]" in seeds
    assert "200 [-1,071, 1,471]" in seeds  # bytes: 100 and 300, s = 141.4, half 12.706 x 100 = 1,270.6
