"""The clock on its own: a fake host stands in for the Ray pool, so these tests need no training."""

import numpy as np
import pytest
import torch

from aggregation import build_strategy
from fleet.devices import sample_fleet
from fleet.emulator import Emulator, Radio, RoundRules
from fleet.trainer import TrainResult

P = 1000  # adapter parameters: 4,000 bytes each way


class FakeHost:
    def __init__(self):
        self.trained = []

    def put_adapter(self, adapter):
        return adapter.clone()

    def train(self, job, adapter):
        self.trained.append(job)
        return TrainResult(job, torch.full((P,), 0.01), 100, 2.0, 1.0)

    def evaluate(self, adapter):
        return float(adapter.sum())

    def get(self, handles):
        return list(handles)


class ListSink:
    def __init__(self):
        self.rounds, self.sessions_rows = [], []

    def round(self, row):
        self.rounds.append(row)

    def sessions(self, rows):
        self.sessions_rows.extend(rows)


def emulate(deadline_s=600.0, rounds=3, k=5, selected=7, classes=None, seed=0, flops=5e11):
    fleet = sample_fleet(seed, 300, classes or {"flagship_phone": 0.5, "iot_gateway": 0.5}, cells=3,
                         cell_radius_m=400, shadowing_sigma_db=6, initial_charge=(0.5, 1.0), num_data_clients=50)
    start_charge = fleet.charge_wh.copy()
    host, sink = FakeHost(), ListSink()
    emulator = Emulator(
        seed=seed, fleet=fleet, num_samples=np.full(50, 100),
        rules=RoundRules(rounds, k, selected, deadline_s, min_reports=2, eval_every=1, local_steps=4, min_charge=0.2),
        radio=Radio("uma_nlos", 3.5, 20e6, 20e6, 46.0, 7.0),
        flops_per_session=flops, adapter=torch.zeros(P), strategy=build_strategy("fedavg"), host=host, sink=sink,
    )
    final = emulator.run()
    return fleet, start_charge, host, sink, final


def test_round_waits_for_k_and_cuts_the_rest():
    _, _, host, sink, final = emulate()
    rounds = sink.rounds[1:]
    assert [r["completed"] for r in rounds] == [5, 5, 5]
    for r in rounds:
        assert r["completed"] + r["dropped"] + r["surplus"] + r["missed_deadline"] == r["selected"] == 7
    sessions = sink.sessions_rows
    for rnd, row in enumerate(rounds, start=1):
        ends = sorted(s["t_end"] for s in sessions if s["round"] == rnd and s["outcome"] == "completed")
        assert row["t_end"] == pytest.approx(ends[-1])  # the round closes at the K-th arrival
        cut = [s for s in sessions if s["round"] == rnd and s["outcome"] == "surplus"]
        assert all(s["t_end"] == pytest.approx(row["t_end"]) and s["phase"] != "done" for s in cut)
    # only sessions that reported were trained, and FedAvg moved the adapter by 0.01 per version
    assert len(host.trained) == sum(r["completed"] for r in rounds)
    assert torch.allclose(final, torch.full((P,), 0.03))
    assert [r["version"] for r in sink.rounds] == [0, 1, 2, 3]


def test_short_deadline_abandons_rounds():
    _, _, host, sink, final = emulate(deadline_s=1e-6)
    assert all(r["abandoned"] and r["completed"] == 0 for r in sink.rounds[1:])
    assert host.trained == [] and torch.equal(final, torch.zeros(P))
    assert all(s["outcome"] == "missed_deadline" and s["phase"] == "download" for s in sink.sessions_rows)
    assert all(r["duration_s"] == pytest.approx(1e-6) for r in sink.rounds[1:])


def test_energy_is_drained_from_batteries():
    fleet, start, _, sink, _ = emulate(classes={"low_end_phone": 1.0})
    used = np.zeros(len(fleet))
    for s in sink.sessions_rows:
        used[s["device"]] += s["energy_j"] / 3600.0
    assert used.sum() > 0
    np.testing.assert_allclose(start - used, fleet.charge_wh)


def test_bytes_follow_the_adapter_size():
    _, _, _, sink, _ = emulate()
    done = [s for s in sink.sessions_rows if s["outcome"] == "completed"]
    assert all(s["bytes_up"] == s["bytes_down"] == 4 * P for s in done)
    cut = [s for s in sink.sessions_rows if s["outcome"] != "completed"]
    assert all(s["bytes_up"] < 4 * P for s in cut)


def test_offline_hazard_drops_sessions():
    # Low-end phones fail twice an hour; sessions of about an hour of training mostly end offline.
    _, _, host, sink, _ = emulate(classes={"low_end_phone": 1.0}, deadline_s=1e6, rounds=2, k=7, flops=1e14)
    offline = [s for s in sink.sessions_rows if s["outcome"] == "offline"]
    assert len(offline) >= 4
    assert all(s["phase"] in {"download", "train", "upload"} and s["steps"] == 0 for s in offline)
    assert sum(r["dropped"] for r in sink.rounds) == len(offline)
    assert len(host.trained) == 14 - len(offline)


def test_same_seed_same_clock():
    a, b = emulate(seed=4)[3], emulate(seed=4)[3]
    assert a.sessions_rows == b.sessions_rows
    assert a.sessions_rows != emulate(seed=5)[3].sessions_rows
