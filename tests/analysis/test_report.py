"""report.html of one run: the summary's target figures against hand-computed values, the participation
timeline against the sessions it samples, and a page where every figure has data."""

import math
import re

import pandas as pd
import pytest

from analysis.figures import LOSS_VIEWS, PHASES, sample_devices, timeline_figure
from analysis.metrics import run_target
from analysis.recorder import load_run
from analysis.report import glance_rows, summary_rows, write_report

LOSS_TITLES = {title for _, title, _ in LOSS_VIEWS}


def rows(run_dir) -> dict[str, str]:
    return dict(summary_rows(*load_run(run_dir)))


def test_default_target_is_halfway_from_base_to_lowest_loss(make_run):
    rounds, _, summary = load_run(make_run(loss=[3.0, 2.8, 2.5, 2.6, 2.2]))
    target, how = run_target(rounds, summary)
    assert target == pytest.approx(2.6) and "halfway" in how
    assert run_target(rounds, summary | {"target_loss": 2.4})[0] == 2.4
    assert run_target(rounds.assign(eval_loss=[3.0, 3.1, 3.2, 3.0, 3.05]), summary)[0] is None


def test_summary_gives_time_bytes_and_energy_to_the_target(make_run):
    # default target 2.6 is first reached at version 2 (loss 2.5): t_end 25, cumulative 100+200 bytes up,
    # 1000+1000 down, 5+5 J
    table = rows(make_run(loss=[3.0, 2.8, 2.5, 2.6, 2.2]))
    assert table["target loss"] == "2.6"
    assert table["simulated time to target (s)"] == "25"
    assert table["uplink bytes to target"] == "300"
    assert table["downlink bytes to target"] == "2,000 (2 kB)"
    assert table["fleet energy to target (J)"] == "10"


def test_summary_target_from_the_scenario_and_unreached(make_run):
    # target 2.4: only the last version (2.2) is at or below: t_end 70, all 1000 bytes up, 20 J
    table = rows(make_run("set", target_loss=2.4))
    assert table["how the target was chosen"] == "set by the scenario (output.target_loss)"
    assert table["simulated time to target (s)"] == "70" and table["fleet energy to target (J)"] == "20"
    assert rows(make_run("low", target_loss=1.0))["simulated time to target (s)"] == "not reached"


def test_summary_participation_and_saving_against_full_model(make_run):
    run_dir = make_run()
    _, clients, _ = load_run(run_dir)
    table = rows(run_dir)
    invited = len(set(clients["device"]))
    reported = len({d for d, o in zip(clients["device"], clients["outcome"]) if o == "completed"})
    assert 0 < reported < invited
    assert table["devices invited at least once"] == f"{invited} ({invited / 200:.1%} of the fleet)"
    assert table["devices that reported at least once"] == f"{reported} ({reported / 200:.1%} of the fleet)"
    assert table["uplink as a share of full-model fine-tuning"] == "10.0%"
    assert table["uplink bytes saved against full-model fine-tuning"] == "9,000 (9 kB)"  # 10 x 1000 - 1000


def test_summary_says_what_the_privacy_accountant_assumed(make_run):
    table = rows(make_run(invitable_devices=120, dp_population=120, dp_sampling_rate=10 / 120,
                          dp_sampling="poisson (approximation of fixed-size cohorts)"))
    assert table["devices that can be invited (memory, ever available)"] == "120"
    assert table["privacy accounting: population sampled from"] == "120"
    assert table["privacy accounting: sampling rate (cohort / population)"] == "0.08333"
    assert table["privacy accounting: sampling assumed"].startswith("poisson")
    assert "privacy accounting: population sampled from" not in rows(make_run("plain"))


def segments_of(fig, phase) -> set:
    trace = next(t for t in fig.data if t.name == phase)
    x, y = list(trace.x), list(trace.y)
    assert x[2::3] == [None] * (len(x) // 3) and len(x) % 3 == 0  # start, end, gap
    return {(y[i], round(x[i], 9), round(x[i + 1], 9)) for i in range(0, len(x), 3)}


def test_timeline_has_exactly_the_sampled_sessions_segments(make_run):
    _, clients, _ = load_run(make_run(devices=80, per_round=30))
    took_part = sorted(clients["device"].unique())
    assert len(took_part) > 60
    fig = timeline_figure(clients, limit=60)
    labels = {label for t in fig.data for label in t.y if label is not None}
    shown = {int(label.split("#")[1]) for label in labels}
    assert len(shown) == 60 and shown <= set(took_part)
    assert {took_part[0], took_part[-1]} <= shown  # spread over the whole id range
    assert set(sample_devices(clients, 60)) == shown
    sampled = clients[clients["device"].isin(shown)]
    expected = {"download": set(), "train": set(), "upload": set()}
    for s in sampled.itertuples():
        row = f"{s.device_class} #{s.device}"
        train_at = s.t_start + s.download_s
        upload_at = train_at + s.train_s
        for phase, start, seconds in (("download", s.t_start, s.download_s), ("train", train_at, s.train_s),
                                      ("upload", upload_at, s.upload_s)):
            if seconds > 0:
                expected[phase].add((row, round(start, 9), round(start + seconds, 9)))
    assert {phase: segments_of(fig, phase) for phase, _, _ in PHASES} == expected
    ends = {t.name.removeprefix("ended: "): sorted(t.x) for t in fig.data if t.name.startswith("ended: ")}
    assert ends == {o: sorted(g["t_end"]) for o, g in sampled.groupby("outcome")}


def test_report_of_an_asynchronous_run_with_loss_has_every_figure_with_data(make_run, figures_of):
    figures = figures_of(write_report(make_run(asynchronous=True)))
    titles = [f["title"] for f in figures]
    assert all(any(t["points"] for t in f["traces"]) for f in figures), titles
    assert LOSS_TITLES <= set(titles)
    for expected in ("Participation timeline", "Staleness", "Battery charge", "Completion rate", "Load per cell"):
        assert any(t.startswith(expected) for t in titles), expected
    loss = next(f for f in figures if f["title"] == "Held-out loss against simulated time")
    names = [t["name"] for t in loss["traces"]]
    assert "devices' own text, with their personal part" in names  # the own-text lines stay


def test_systems_only_run_gets_a_full_report_without_loss_figures(make_run, figures_of):
    run_dir = make_run("systems", loss=None)
    page = write_report(run_dir)
    figures = figures_of(page)
    titles = [f["title"] for f in figures]
    assert len(figures) >= 6 and not any("loss" in t.lower() for t in titles)
    assert all(any(t["points"] for t in f["traces"]) for f in figures), titles
    assert not any(t.startswith("Staleness") for t in titles)  # synchronous: nothing was stale
    table = rows(run_dir)
    for row in ("held-out loss at the end", "simulated time to target (s)", "fleet energy to target (J)"):
        assert table[row] == "not measured"
    assert "not measured" in page.read_text()


def test_run_without_batteries_has_no_battery_figure(make_run, figures_of):
    titles = [f["title"] for f in figures_of(write_report(make_run(battery=False)))]
    assert titles and not any(t.startswith("Battery") for t in titles)


def test_battery_figure_draws_class_means_and_participants(make_run, figures_of):
    run_dir = make_run()
    rounds, clients, _ = load_run(run_dir)
    battery = next(f for f in figures_of(write_report(run_dir)) if f["title"].startswith("Battery"))
    by_name = {t["name"]: t for t in battery["traces"]}
    assert set(by_name) == {"phone: fleet mean", "phone: participants at session end"}  # gateways: mains
    assert by_name["phone: fleet mean"]["y"] == pytest.approx(rounds["charge_phone"].tolist())
    phones = clients[clients["device_class"] == "phone"]
    assert sorted(by_name["phone: participants at session end"]["y"]) == pytest.approx(sorted(phones["charge_end"]))


def test_page_is_self_contained_with_plotly_js_once(make_run):
    page = write_report(make_run()).read_text()
    assert page.count("* plotly.js v") == 1 and not re.search(r"<script[^>]*\bsrc=", page)


@pytest.mark.slow
def test_report_of_a_real_systems_run(tmp_path, figures_of):
    from scenarios.loader import load_scenario
    from scenarios.runner import RunOptions, run_scenario

    scenario = load_scenario("quickstart", ["run.mode=systems", "run.rounds=3", "fleet.size=200"])
    run_dir = run_scenario(scenario, RunOptions(out=tmp_path / "run", progress=False))
    figures = figures_of(run_dir / "report.html")
    assert all(any(t["points"] for t in f["traces"]) for f in figures)
    titles = [f["title"] for f in figures]
    assert not any("loss" in t.lower() for t in titles) and any(t.startswith("Battery") for t in titles)
    clients = pd.read_parquet(run_dir / "clients.parquet")
    table = rows(run_dir)
    assert table["devices invited at least once"].startswith(f"{clients['device'].nunique()} (")
    assert table["held-out loss at the end"] == "not measured"
    timeline = next(f for f in figures if f["title"].startswith("Participation timeline"))
    assert math.isclose(max(x for t in timeline["traces"] for x in t["x"] if x is not None),
                        clients["t_end"].max())


def test_rejected_updates_appear_in_the_report(make_run, figures_of):
    run_dir = make_run()
    clients = pd.read_parquet(run_dir / "clients.parquet")
    rounds = pd.read_parquet(run_dir / "rounds.parquet")
    done = clients.index[clients["outcome"] == "completed"]
    clients.loc[done[:3], "outcome"] = "rejected_nonfinite"
    clients.loc[done[3:5], "outcome"] = "rejected_norm"
    rounds["rejected_nonfinite"], rounds["rejected_norm"] = 0, 0
    clients.to_parquet(run_dir / "clients.parquet", index=False)
    rounds.to_parquet(run_dir / "rounds.parquet", index=False)
    figures = figures_of(write_report(run_dir))
    outcomes = next(f for f in figures if f["title"].startswith("How each invited session ended"))
    bars = {t["name"]: sum(t["y"]) for t in outcomes["traces"]}
    assert bars["rejected_nonfinite"] == 3 and bars["rejected_norm"] == 2
    drops = next(f for f in figures if f["title"].startswith("Why sessions did not report"))
    assert {"rejected_nonfinite", "rejected_norm"} <= {x for t in drops["traces"] for x in t["x"]}


def test_the_report_opens_with_what_a_reader_came_for(make_run):
    """Loss 3.0 to 2.2 is -26.7%; the default target 2.6 is reached at version 2: t_end 25 of 70 s, 100 + 200
    bytes up, 5 + 5 J; the uplink is 10% of full-model fine-tuning, so LoRA saved 90%."""
    run_dir = make_run(trained_model="builtin", emulated_model="SmolLM2-135M")
    glance = dict(glance_rows(*load_run(run_dir)))
    assert glance["held-out loss, base model to the end"] == "3 to 2.2 (-26.7%)"
    assert glance["simulated time to target loss 2.6"] == "25 s of 70 s run"
    assert glance["uplink bytes to target"] == "300"
    assert glance["fleet energy to target"] == "10 J"
    assert glance["LoRA uplink against full-model fine-tuning"] == "10.0% of its bytes (90.0% saved)"
    assert glance["emulated on the devices (timing, memory, bytes, energy)"] == "SmolLM2-135M"
    page = write_report(run_dir).read_text(encoding="utf-8")
    assert page.index("<h2>At a glance</h2>") < page.index("Held-out loss against simulated time") < page.index(
        "<h2>Summary</h2>")
