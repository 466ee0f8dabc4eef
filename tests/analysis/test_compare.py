"""Comparing runs: what each took to reach the target against hand-computed values, the default target,
one colour per run in every figure, run folders that are not runs, and runs that differ only in seed: their
groups, each group's mean and 95% interval, and the loss bands."""

import math
from html.parser import HTMLParser

import numpy as np
import pytest
import yaml

from analysis.compare import comparison_figures, comparison_table, to_target, unique_labels, write_comparison
from analysis.seeds import group_labels, seed_groups
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


# --- runs that differ only in seed -------------------------------------------------------------------------

# Final held-out loss 2.2, 2.4, 2.6 over seeds 0-2 (mean 2.4; s = 0.2; t(0.975, 2) = 4.303; half-width
# 4.303 x 0.2 / sqrt(3) = 0.4968); target 2.5 reached at t_end 25 (seed 0) and 45 (seed 1), never by seed 2.
SEED_LOSSES = [[3.0, 2.8, 2.5, 2.4, 2.2], [3.0, 2.9, 2.7, 2.5, 2.4], [3.0, 2.9, 2.8, 2.7, 2.6]]


def resolved(run_dir, seed: int, strategy: str = "fedavg", **fields) -> None:
    """A scenario.resolved.yaml as a run writes it; output, runtime and git_sha differ per run on purpose."""
    tree = {"name": "q", "seed": seed, "fleet": {"size": 100}, "strategy": {"name": strategy, **fields},
            "output": {"dir": f"runs/{seed}"}, "runtime": {"workers": seed + 1}, "git_sha": f"abc{seed}"}
    (run_dir / "scenario.resolved.yaml").write_text(yaml.safe_dump(tree))


def seeded_runs(make_run) -> list:
    """Three fedavg runs (seeds 0-2), two fedbuff runs (seeds 0, 1), and one run with no resolved scenario."""
    dirs = []
    for seed, loss in enumerate(SEED_LOSSES):
        dirs.append(make_run(f"avg{seed}", loss=loss))
        resolved(dirs[-1], seed)
    for seed in (0, 1):
        dirs.append(make_run(f"buff{seed}", loss=[3.0, 2.7, 2.6, 2.5, 2.3 + 0.1 * seed], asynchronous=True))
        resolved(dirs[-1], seed, "fedbuff")
    dirs.append(make_run("loose"))
    return dirs


class Tables(HTMLParser):
    """The page's tables as lists of rows of cell text."""

    def __init__(self):
        super().__init__()
        self.tables, self.cell = [], None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = ""

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append(self.cell.strip())
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell += data


def page_tables(path) -> list[list[dict]]:
    parser = Tables()
    parser.feed(path.read_text(encoding="utf-8"))
    return [[dict(zip(t[0], row)) for row in t[1:]] for t in parser.tables]


def test_runs_differing_only_in_seed_form_groups():
    def tree(seed, strategy="fedavg", **extra):
        return {"name": "q", "seed": seed, "strategy": {"name": strategy}, "output": {"dir": str(seed)},
                "runtime": {"workers": seed}, "git_sha": str(seed), **extra}

    scenarios = [tree(0), tree(1, "fedbuff"), tree(1), None, tree(0, "fedbuff"), tree(2, run={"rounds": 3}),
                 tree(0), tree(5)]
    # run 6 repeats seed 0 of the first group: no new seed; run 5 differs in run.rounds: alone
    assert seed_groups(scenarios) == [[0, 2, 7], [1, 4]]
    assert seed_groups([tree(0), tree(0)]) == [] and seed_groups([None, None]) == []


def test_seed_groups_are_named_by_the_fields_that_tell_them_apart():
    avg = {"name": "q", "seed": 0, "strategy": {"name": "fedavg"}, "runtime": {"workers": 1}}
    buff = {"name": "q", "seed": 3, "strategy": {"name": "fedbuff", "buffer_size": 10}, "runtime": {"workers": 2}}
    assert group_labels([avg, buff]) == ["strategy.name=fedavg", "strategy.buffer_size=10, strategy.name=fedbuff"]
    assert group_labels([avg]) == ["q"]  # one group: the scenario's name


def test_comparison_page_shows_each_seed_group_with_its_interval(make_run, tmp_path, figures_of):
    page = write_comparison(seeded_runs(make_run), tmp_path / "c.html", target=2.5)
    text = page.read_text(encoding="utf-8")
    assert text.index("<h2>Seed groups</h2>") < text.index("<h2>Runs</h2>")
    groups, runs = page_tables(page)
    assert len(runs) == 6  # the per-run table keeps every run
    avg, buff = groups
    assert (avg["group"], avg["seeds"], buff["group"], buff["seeds"]) == (
        "strategy.name=fedavg", "3", "strategy.name=fedbuff", "2")
    assert avg["final held-out loss"] == "2.4 [1.903, 2.897]"
    # time to target over the two seeds that reached it: [25, 45], mean 35, s = 14.14, half 12.706 x 14.14 /
    # sqrt(2) = 127.06
    assert avg["reached target"] == "2 of 3" and avg["simulated time to target (s)"] == "35 [-92.06, 162.1]"
    # loss gain 1 - final / 3.0: 0.2667, 0.2, 0.1333: mean 0.2, s = 0.06667, half 4.303 x 0.06667 / sqrt(3)
    # = 0.1656
    assert avg["loss gain (1 - final / base)"] == "0.2 [0.03439, 0.3656]"
    # uplink bytes are 1000 in every synthetic run: no spread, a zero-width interval
    assert avg["uplink bytes"] == "1,000 [1,000, 1,000]"
    assert buff["final held-out loss"].startswith("2.35 [")

    bands = [f for f in figures_of(page) if f["title"].startswith("Seeds:")]
    assert [f["title"].split(",")[0] for f in bands] == [
        "Seeds: held-out loss against simulated time", "Seeds: held-out loss against server version",
        "Seeds: held-out loss against cumulative uplink bytes", "Seeds: held-out loss against cumulative fleet energy"]
    by_version = bands[1]["traces"]
    assert len(by_version) == 6  # per group: lower edge, upper edge filled to it, mean
    low, high, mean = by_version[:3]
    assert high["fill"] == "tonexty" and "fill" not in low
    assert mean["name"] == "strategy.name=fedavg (3 seeds)" and mean["line"]["color"] == PALETTE[0]
    assert mean["x"] == [0, 1, 2, 3, 4]
    assert mean["y"] == pytest.approx([3.0, 2.8667, 2.6667, 2.5333, 2.4], abs=1e-4)
    # at version 4 the band is the final loss's interval
    assert (low["y"][-1], high["y"][-1]) == pytest.approx((1.9032, 2.8968), abs=1e-4)
    assert by_version[5]["line"]["color"] == PALETTE[3]  # the fedbuff group: its first run's colour


def test_without_seed_groups_the_page_has_no_seed_section(make_run, tmp_path, figures_of):
    a, b = make_run("a"), make_run("b")
    resolved(a, 0)
    resolved(b, 1, "fedbuff")  # differs in more than the seed
    page = write_comparison([a, b, make_run("c")], tmp_path / "c.html")
    assert "Seed groups" not in page.read_text(encoding="utf-8")
    assert not any(f["title"].startswith("Seeds:") for f in figures_of(page))
    assert len(page_tables(page)) == 1
