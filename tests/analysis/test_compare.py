"""Comparing runs: what each took to reach the target against hand-computed values, the default target,
one colour per run in every figure, and run folders that are not runs."""

import math

import numpy as np
import pytest

from analysis.compare import comparison_figures, comparison_table, to_target, unique_labels, write_comparison
from analysis.page import PALETTE
from analysis.recorder import load_run
from analysis.recorder import NotARunFolder


def test_to_target_at_the_first_evaluated_version_at_or_below(make_run):
    rounds, _, _ = load_run(make_run(loss=[3.0, 2.8, 2.5, 2.6, 2.2]))
    # cumulative after versions 0..4: t_end 0,10,25,45,70; bytes up 0,100,300,600,1000; down 0,1000,..,4000;
    # energy 0,5,10,15,20
    assert to_target(rounds, 2.6) == {"time_to_target_s": 25.0, "uplink_bytes_to_target": 300.0,
                                      "downlink_bytes_to_target": 2000.0, "energy_to_target_j": 10.0}
    assert to_target(rounds, 2.2)["time_to_target_s"] == 70.0
    assert to_target(rounds, 3.0)["uplink_bytes_to_target"] == 0.0  # the base model is already there
    assert all(math.isnan(v) for v in to_target(rounds, 2.0).values())
    assert all(math.isnan(v) for v in to_target(rounds, None).values())
    # versions not evaluated (eval_every) are skipped, not read as reaching the target
    sparse = rounds.assign(eval_loss=[3.0, np.nan, np.nan, 2.55, 2.2])
    assert to_target(sparse, 2.6) == {"time_to_target_s": 45.0, "uplink_bytes_to_target": 600.0,
                                      "downlink_bytes_to_target": 3000.0, "energy_to_target_j": 15.0}


def test_default_target_is_the_highest_final_loss(make_run):
    runs = {"a": make_run("a", loss=[3.0, 2.8, 2.5, 2.6, 2.2]), "b": make_run("b", loss=[3.0, 2.9, 2.8, 2.7, 2.65]),
            "systems": make_run("systems", loss=None)}
    table = comparison_table(runs).set_index("run")
    assert table["target_loss"].tolist() == [2.65] * 3
    # a first reaches 2.65 at version 2 (2.5); b only at its last version
    assert table.loc["a", "time_to_target_s"] == 25.0 and table.loc["b", "time_to_target_s"] == 70.0
    assert table.loc["a", "energy_to_target_j"] == 10.0 and table.loc["b", "downlink_bytes_to_target"] == 4000.0
    assert math.isnan(table.loc["systems", "final_loss"]) and math.isnan(table.loc["systems", "time_to_target_s"])
    assert table.loc["b", "final_loss"] == 2.65 and table.loc["b", "uplink_bytes"] == 1000
    assert table.loc["a", "uplink_fraction_of_full"] == 0.1 and table.loc["a", "versions"] == 4
    assert comparison_table(runs, target=2.5).loc[0, "time_to_target_s"] == 25.0  # a given target wins


def trace_colour(trace) -> str:
    return trace.get("line", {}).get("color") or trace.get("marker", {}).get("color")


def test_comparison_page_one_colour_per_run_and_every_figure_with_data(make_run, tmp_path, figures_of):
    dirs = [make_run("sync", loss=[3.0, 2.8, 2.5, 2.6, 2.2]), make_run("async", asynchronous=True),
            make_run("systems", loss=None)]
    figures = figures_of(write_comparison(dirs, tmp_path / "out" / "comparison.html"))
    titles = [f["title"] for f in figures]
    assert all(any(t["points"] for t in f["traces"]) for f in figures), titles
    for expected in ("Held-out loss against simulated time", "Held-out loss against cumulative uplink bytes",
                     "Held-out loss against cumulative downlink bytes", "Held-out loss against cumulative fleet energy",
                     "Completion rate", "Round duration", "Battery charge", "Staleness"):
        assert any(t.startswith(expected) for t in titles), expected
    colour = {"sync": PALETTE[0], "async": PALETTE[1], "systems": PALETTE[2]}
    seen = {run: 0 for run in colour}
    for fig in figures:
        for trace in fig["traces"]:
            assert trace_colour(trace) == colour[trace["name"]], (fig["title"], trace["name"])
            seen[trace["name"]] += 1
        if "loss" in fig["title"].lower():
            assert "systems" not in {t["name"] for t in fig["traces"]}  # no loss measured
        if fig["title"].startswith("Staleness"):
            assert [t["name"] for t in fig["traces"]] == ["async"]
    assert seen["sync"] >= 7 and seen["systems"] >= 3


def test_comparison_figures_match_the_table_runs(make_run):
    runs = {"x": make_run("x"), "y": make_run("y", loss=[3.0, 2.9, 2.9, 2.9, 2.9])}
    figures = comparison_figures(runs)
    loss = figures[0]
    assert [t.name for t in loss.data] == ["x", "y"]
    assert list(loss.data[1].y) == [3.0, 2.9, 2.9, 2.9, 2.9]
    assert loss.layout.shapes[0].y0 == 2.9  # the default target, drawn


def test_equal_folder_names_get_unique_labels(make_run, tmp_path, figures_of):
    a, b = make_run("run", folder=tmp_path / "a"), make_run("run", folder=tmp_path / "b")
    assert unique_labels([a, b, a]) == ["run", "run (2)", "run (3)"]
    figures = figures_of(write_comparison([a, b], tmp_path / "c.html"))
    assert [t["name"] for t in figures[0]["traces"]] == ["run", "run (2)"]


def test_a_folder_that_is_not_a_run_is_named(make_run, tmp_path):
    empty = tmp_path / "not_a_run"
    empty.mkdir()
    with pytest.raises(NotARunFolder, match="not_a_run.*rounds.parquet"):
        write_comparison([make_run(), empty], tmp_path / "c.html")
