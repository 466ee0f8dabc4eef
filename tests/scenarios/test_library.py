"""The built-in scenario library: every scenario file in scenarios/ is valid and states its question, and
every one that runs on this machine runs end to end in its smoke form (`fedfleet run NAME --smoke`).
New files are picked up by the glob."""

import itertools
import json
import math

import pandas as pd
import pytest
import yaml

from scenarios.cli import main
from scenarios.loader import BUILTIN_DIR, load_scenario
from scenarios.assembly import build_fleet
from scenarios.smoke import SMOKE_CAPS, SMOKE_FLEET, smoke_overrides

BUILTINS = sorted(BUILTIN_DIR.glob("*.yaml"))
LOCAL = [p for p in BUILTINS if load_scenario(p).runtime.address is None]  # the others need a Ray cluster


def header(path) -> str:
    lines = path.read_text(encoding="utf-8").splitlines()
    return "\n".join(itertools.takewhile(lambda line: line.startswith("#"), lines))


def smoke_of(path):
    return load_scenario(path, smoke_overrides(load_scenario(path)))


def test_the_library_is_there():
    names = {p.stem for p in BUILTINS}
    assert {"quickstart", "telecom_self_healing", "phone_assistant", "iot_gateways", "mixed_fleet_1b",
            "capacity_planning", "cluster"} <= names


@pytest.mark.parametrize("path", BUILTINS, ids=lambda p: p.stem)
def test_loads_by_name_and_states_its_question(path):
    load_scenario(path.stem)  # valid, and found by name as `fedfleet run NAME` finds it
    text = header(path)
    assert text.startswith(f"# {path.stem}:") and "Question:" in text


def test_cluster_is_phone_assistant_on_a_cluster():
    cluster, phones = load_scenario("cluster"), load_scenario("phone_assistant")
    assert cluster.runtime.address == "auto" and cluster.runtime.workers > phones.runtime.workers
    assert cluster.model_copy(update={"name": phones.name, "runtime": phones.runtime}) == phones


@pytest.mark.parametrize("path", BUILTINS, ids=lambda p: p.stem)
def test_smoke_keeps_every_class_and_shrinks(path):
    full, smoke = load_scenario(path), smoke_of(path)
    fleet = build_fleet(smoke, num_data_clients=1)  # sampled as a run samples it
    assert set(fleet.cls.tolist()) == set(range(len(full.fleet.classes)))
    assert smoke.fleet.size <= min(full.fleet.size, SMOKE_FLEET)
    for field in ("run.rounds", "network.cells", "training.local_steps", "data.eval_windows"):
        section, name = field.split(".")
        before, after = (getattr(getattr(s, section), name) for s in (full, smoke))
        assert after == min(before, SMOKE_CAPS[field])
    # what the smoke form does not shrink stays as it was
    assert smoke.model == full.model and smoke.strategy.name == full.strategy.name
    assert smoke.network.model_copy(update={"cells": full.network.cells}) == full.network
    assert smoke_overrides(smoke) == []  # already as small as it gets


def test_smoke_grows_the_fleet_for_a_rare_class():
    sets = ["fleet.size=50000", "fleet.classes=[{name: flagship_phone, fraction: 0.995}, "
            "{name: low_end_phone, fraction: 0.004}, {name: mec_t4, fraction: 0.001}]"]
    smoke = load_scenario("quickstart", sets + smoke_overrides(load_scenario("quickstart", sets)))
    assert SMOKE_FLEET < smoke.fleet.size < 50000
    assert set(build_fleet(smoke, num_data_clients=1).cls.tolist()) == {0, 1, 2}


def test_smoke_keeps_what_is_already_smaller_and_the_reports_a_strategy_needs():
    full = load_scenario("quickstart", ["run.rounds=1", "fleet.size=50", "strategy={name: krum, f: 1}",
                                        "run.min_reports=5"])
    overrides = dict(o.split("=", 1) for o in smoke_overrides(full))
    assert "run.rounds" not in overrides and "fleet.size" not in overrides
    assert overrides["run.clients_per_round"] == "5"  # Krum needs 2f + 3 reports: not the usual 4


def test_cli_applies_smoke_after_set_and_validates(tmp_path):
    out = tmp_path / "run"
    status = main(["run", "quickstart", "--smoke", "--quiet", "--out", str(out), "--set", "fleet.size=5000",
                   "--set", "run.mode=systems", "--set", "run.rounds=1"])
    assert status == 0
    resolved = yaml.safe_load((out / "scenario.resolved.yaml").read_text())
    assert resolved["fleet"]["size"] == SMOKE_FLEET and resolved["run"]["rounds"] == 1
    assert main(["run", "quickstart", "--smoke", "--set", "fleet.sise=3"]) == 2


@pytest.mark.parametrize("path", LOCAL, ids=lambda p: p.stem)
def test_smoke_run_end_to_end(path, tmp_path, ray_local):
    out = tmp_path / path.stem
    assert main(["run", path.stem, "--smoke", "--quiet", "--out", str(out)]) == 0
    smoke = smoke_of(path)
    expected = {"scenario.resolved.yaml", "rounds.parquet", "clients.parquet", "summary.json"}
    if smoke.output.report:
        expected.add("report.html")
    if smoke.run.mode == "train":
        expected.add("adapter")
    assert expected <= {p.name for p in out.iterdir()}
    rounds, clients = pd.read_parquet(out / "rounds.parquet"), pd.read_parquet(out / "clients.parquet")
    summary = json.loads((out / "summary.json").read_text())
    assert rounds["round"].max() == smoke.run.rounds and len(clients) > 0
    assert summary["fleet_size"] == smoke.fleet.size
    assert set(clients["device_class"]) <= {m.name for m in smoke.fleet.classes}
    if smoke.run.mode == "train":
        assert math.isfinite(summary["base_eval_loss"]) and math.isfinite(summary["final_eval_loss"])
        assert rounds["eval_loss"].notna().iloc[-1]
