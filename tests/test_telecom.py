"""The telecom self-healing scenario: cell-site logs as client data (one client per site, the past to train on,
the last days held out), fault detection of every evaluated version, and a reduced run end to end. The slow
test checks the scenario's claim: federated training detects faults better than the base model and than a
site training alone."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from fleet.base_model import load_tokenizer
from fleet.cellsite import CellSiteConfig, generate, windows_with_labels
from fleet.data import PackedTokens
from scenarios.cli import main
from scenarios.errors import ScenarioError
from scenarios.loader import load_scenario, parse_scenario
from fleet.detection import DetectionProbe
from scenarios.client_data import prepare_data

SMALL = ["fleet.size=14", "data.cellsite.sites=14", "network.cells=14"]


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("builtin")


def test_the_scenario_is_cell_sites_with_bottleneck_adapters():
    scenario = load_scenario("telecom_self_healing")
    assert {m.name for m in scenario.fleet.classes} == {"mec_t4", "mec_l4"}
    assert scenario.fleet.size == scenario.data.cellsite.sites  # one MEC server per site
    assert scenario.model.lora.bottleneck > 0  # PWFF shares the bottleneck adapters
    for name in ("fedavg", "fedbuff", "pwff"):
        load_scenario("telecom_self_healing", [f"strategy.name={name}"])


@pytest.mark.parametrize("cellsite, message", [
    ({"test_days": 3}, "data.cellsite: test_days (3) must be below days (3)"),
    ({"period_min": 7}, "data.cellsite: period_min must divide a day"),
    ({"sites": 1}, "data.cellsite.sites:"),
    ({"window_lines": 0}, "data.cellsite.window_lines:"),
    ({"target_auroc": 0.4}, "data.cellsite.target_auroc:"),
    ({"sitez": 4}, "data.cellsite.sitez: unknown field"),
])
def test_bad_cellsite_fields_are_named(cellsite, message):
    with pytest.raises(ScenarioError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_scenario({"data": {"source": "cellsite", "cellsite": cellsite}})


def test_cellsite_section_defaults_and_belongs_to_its_source():
    assert parse_scenario({"data": {"source": "cellsite"}}).data.cellsite.sites == 1000
    assert parse_scenario({}).data.cellsite is None
    with pytest.raises(ScenarioError, match="data.cellsite applies to source 'cellsite' only"):
        parse_scenario({"data": {"cellsite": {"sites": 10}}})


def test_one_client_per_site_trained_on_its_past(tokenizer):
    scenario = load_scenario("telecom_self_healing", SMALL + ["data.cellsite.eval_sites=3",
                                                              "data.cellsite.windows_per_site=10"])
    c = scenario.data.cellsite
    data = prepare_data(scenario, tokenizer)
    logs = generate(CellSiteConfig(sites=c.sites, days=c.days, period_min=c.period_min,
                                   fault_rate_per_day=c.fault_rate_per_day), scenario.seed)
    assert data.client_ids == [site.site_id for site in logs.sites]
    for i, site in enumerate(logs.sites):
        held_out = site.period >= (c.days - c.test_days) * site.periods_per_day
        assert held_out[-1] and not held_out[0] and (np.diff(held_out.astype(int)) >= 0).all()  # a suffix
        lines = np.array(site.lines)
        assert data.train.get(i).tolist() == tokenizer("\n".join(lines[~held_out]) + "\n")["input_ids"]
        assert data.test.get(i).tolist() == tokenizer("\n".join(lines[held_out]) + "\n")["input_ids"]
    assert data.num_samples.tolist() == data.train.lengths().tolist()


def test_detection_windows_are_labelled_held_out_windows(tokenizer):
    scenario = load_scenario("telecom_self_healing", SMALL + ["data.cellsite.sites=40", "fleet.size=40",
                                                              "data.cellsite.windows_per_site=10"])
    data = prepare_data(scenario, tokenizer)
    d, logs = data.detection, generate(CellSiteConfig(sites=40, days=3), scenario.seed)
    assert 1 <= len(d.clients) <= scenario.data.cellsite.eval_sites and len(set(d.clients.tolist())) == len(d.clients)
    for j, site in enumerate(d.clients):
        held_out = logs.sites[site].period >= 2 * logs.sites[site].periods_per_day
        lines = [line for line, later in zip(logs.sites[site].lines, held_out) if later]
        labels = logs.sites[site].labels[held_out]
        known = {tuple(tokenizer(text)["input_ids"]): fault for text, fault in windows_with_labels(lines, labels, 1)}
        mine = range(d.offsets[j], d.offsets[j + 1])
        assert len(mine) <= 10 and 1 <= d.faulty[mine].sum() <= 5 and not d.faulty[mine].all()
        for k in mine:  # every window is one of the site's held-out windows, with its label
            assert known[tuple(d.windows.get(k).tolist())] == d.faulty[k]


class LengthScorer:
    """A pool whose 'model' scores a window by its number of tokens, plus the personal part's value."""

    def put(self, value):
        return value

    def get(self, refs):
        return refs

    def score_windows(self, adapter, groups, windows, sets, base):
        packed = PackedTokens(*windows)
        scores = [np.array([len(packed.get(k)) for k in range(first, last)], float) for first, last, _ in sets]
        return [[(s + (0 if p is None else float(p)), s) for s, (_, _, p) in zip(scores, sets)]]


def pairwise_auroc(scores, labels) -> float:
    pos, neg = scores[labels], scores[~labels]
    return float(np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg]))


def test_probe_measures_each_site_on_its_own_windows():
    rng = np.random.default_rng(0)
    lengths, offsets = rng.integers(2, 9, 30), np.array([0, 10, 18, 30])
    faulty = rng.random(30) < 0.4
    faulty[[0, 1, 10, 11, 18, 19]] = [True, False] * 3  # every site has both
    detection = SimpleNamespace(clients=np.array([2, 5, 7]), offsets=offsets, faulty=faulty,
                                windows=PackedTokens.pack([np.arange(n) for n in lengths]))
    fleet = SimpleNamespace(data_client=np.array([5, 2, 2, 9, 5]))  # no device has site 7's data
    clients = SimpleNamespace(keeps_personal=True, personal_part=lambda device: 100.0 * device)
    probe = DetectionProbe(LengthScorer(), detection, fleet, clients, groups=None)
    assert probe.devices.tolist() == [1, 0, -1]  # the first device with the site's data
    row = probe("adapter", None)()
    expected = [pairwise_auroc(lengths[a:b].astype(float), faulty[a:b]) for a, b in zip(offsets, offsets[1:])]
    assert row["detection_auroc"] == pytest.approx(np.mean(expected))
    assert row["detection_auroc_personal"] == pytest.approx(np.mean(expected))  # a constant shift per site
    assert np.allclose(probe.base, expected) and np.allclose(probe.last[1], expected)


REDUCED = ["fleet.size=50", "data.cellsite.sites=50", "network.cells=50", "run.rounds=2", "data.cellsite.days=2",
           "run.clients_per_round=4", "training.local_steps=2", "data.eval_windows=8", "data.cellsite.eval_sites=4",
           "data.cellsite.windows_per_site=8", "data.cellsite.local_sessions=1"]


def test_reduced_run_records_detection(tmp_path, ray_local):
    out = tmp_path / "run"
    assert main(["run", "telecom_self_healing", "--quiet", "--out", str(out), *[a for s in REDUCED
                                                                             for a in ("--set", s)]]) == 0
    rounds = pd.read_parquet(out / "rounds.parquet")
    summary = json.loads((out / "summary.json").read_text())
    sites = pd.read_parquet(out / "detection.parquet")
    assert rounds["detection_auroc"].notna().all() and rounds["detection_auroc_personal"].notna().all()
    assert rounds["detection_auroc"].iloc[0] == pytest.approx(sites["auroc_base"].mean())
    assert rounds["detection_auroc"].iloc[-1] == pytest.approx(sites["auroc_global"].mean())
    assert 1 <= len(sites) <= 4 and (sites["local_steps"] == 2).all() and (sites["windows"] <= 8).all()
    for column in ("auroc_base", "auroc_local", "auroc_global", "auroc_personal", "auroc_tuned"):
        assert sites[column].between(0, 1).all()
        assert summary[f"detection_{column}"] == pytest.approx(sites[column].mean())
    assert summary["detection_sites"] == len(sites)
    # Not reached: a target counts once the sites' own adapters hold it over the next HOLD (3) evaluated
    # versions, fewer at the end of the run; with three versions (0, 1, 2) every such window includes the
    # last, and two rounds of four clients leave it below the scenario's 0.7 (this run: 0.375, 0.82, 0.24).
    assert summary["detection_target_auroc"] == 0.7 and len(rounds) == 3
    assert rounds["detection_auroc_personal"].iloc[-1] < 0.7
    for figure in ("time_to_detection_target_s", "uplink_bytes_to_detection_target",
                   "downlink_bytes_to_detection_target"):
        assert math.isnan(summary[figure])
    assert "<h2>Fault detection</h2>" in (out / "report.html").read_text(encoding="utf-8")




@pytest.mark.slow
def test_federated_training_detects_faults_better_than_the_base_model_and_a_site_alone(tmp_path, ray_local):
    """The scenario's claim, on the scenario as shipped (about ten minutes): the global adapter's AUROC beats
    the base model's and that of each site trained alone for one session (more local compute than the
    federation asked of a site), on the mean over the evaluated sites and on the median site. A smaller
    fleet or fewer rounds can end in one of the dips of the AUROC curve (300 sites, 12 rounds: 0.580 against
    the base model's 0.645), which is why the claim is checked on the whole run."""
    out = tmp_path / "run"
    assert main(["run", "telecom_self_healing", "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["detection_sites"] >= 20
    for stat in ("", "_median"):  # the mean over the evaluated sites, and the typical (median) site
        found = {model: summary[f"detection_auroc_{model}{stat}"] for model in ("base", "local", "global")}
        assert found["global"] > max(found["base"], found["local"]), found
