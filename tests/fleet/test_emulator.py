"""The clock on its own: a fake host stands in for the Ray pool, so these tests need no training."""

import numpy as np
import pandas as pd
import pytest
import torch

from aggregation import AdapterLayout, StrategyContext, build_strategy
from fleet.attacks import Attack
from fleet.cells import Radio
from fleet.clients import ClientSide
from fleet.devices import sample_fleet
from fleet.emulator import OUTCOMES, Emulator, RoundRules, SessionCost
from fleet.selection import Oort, ResourceAware, Uniform
from fleet.trainer import TrainResult

P = 1000  # adapter parameters: 4,000 bytes each way
LAYOUT = AdapterLayout.from_shapes([("adapter.weight", (P,))], rank=1, scaling=1.0)


class FakeHost:
    def __init__(self):
        self.trained = []

    def put(self, tensor):
        return None if tensor is None else tensor.clone()

    def train(self, job, start, base_delta):
        self.trained.append(job)
        return TrainResult(job, torch.full((P,), 0.01), 100, 2.0, 1.0)

    def evaluate(self, adapter, base_delta):
        return float(adapter.sum())

    def evaluate_clients(self, adapter, groups, clients, n_windows, base_delta):
        return [(float(adapter.sum()), float(adapter.sum()))] * len(clients)

    def get(self, handles):
        return list(handles)


class ListSink:
    def __init__(self):
        self.rounds, self.sessions_rows, self.batches = [], [], []

    def round(self, row):
        self.rounds.append(row)

    def sessions(self, columns):
        keys = list(columns)
        self.batches.append(len(columns["device"]))
        self.sessions_rows.extend(dict(zip(keys, values)) for values in zip(*columns.values()))


def emulate(deadline_s=600.0, rounds=3, k=5, selected=7, classes=None, seed=0, flops=5e11, policy="deadline",
            fading="none", selector=None, min_charge=0.2, cutoff=0.1, overrides=None, uplink_trace=None,
            multicast=False, strategy=None, uplink_hz=20e6, host=None, sink=None, reject_norm_factor=10.0,
            min_reports=2, local_time_budget_s=None, outage_snr_db=-10.0, ranks=None, cost=None):
    fleet = sample_fleet(seed, 300, classes or {"flagship_phone": 0.5, "iot_gateway": 0.5}, cells=3,
                         cell_radius_m=250, shadowing_sigma_db=6, initial_charge=(0.5, 1.0), num_data_clients=50,
                         overrides=overrides)
    start_charge = fleet.charge_wh.copy()
    host, sink = host or FakeHost(), sink or ListSink()
    strategy = strategy or build_strategy("fedavg")
    strategy.setup(StrategyContext(LAYOUT, population=len(fleet), cohort=k, seed=seed))
    clients = ClientSide(LAYOUT, strategy, torch.zeros(P), seed, Attack(), np.zeros(len(fleet), bool))
    emulator = Emulator(
        seed=seed, fleet=fleet, num_samples=np.full(50, 100),
        rules=RoundRules(rounds, k, selected, deadline_s, policy, min_reports=min_reports, eval_every=1,
                         local_steps=4, min_charge=min_charge, cutoff_charge=cutoff, only_while_charging=False,
                         reject_norm_factor=reject_norm_factor, local_time_budget_s=local_time_budget_s),
        radio=Radio("uma_nlos", 3.5, uplink_hz, 20e6, 46.0, 7.0, "ofdma", fading, 9.0, outage_snr_db, 1e9, 0.005,
                    uplink_trace, multicast=multicast),
        cost=cost or SessionCost(flops, 4 * P, 4 * P), selector=selector or Uniform(),
        adapter=torch.zeros(P), strategy=strategy, clients=clients, host=host, sink=sink, ranks=ranks,
    )
    final = emulator.run()
    return fleet, start_charge, host, sink, final


def test_round_waits_for_k_and_cuts_the_rest():
    _, _, host, sink, final = emulate()
    rounds = sink.rounds[1:]
    assert [r["completed"] for r in rounds] == [5, 5, 5]
    for r in rounds:
        assert sum(r[o] for o in OUTCOMES) == r["selected"] == 7
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
    assert all(np.isnan(r["eval_loss"]) and np.isnan(r["personal_loss"]) for r in sink.rounds[1:])
    assert host.trained == [] and torch.equal(final, torch.zeros(P))
    assert all(s["outcome"] == "missed_deadline" and s["phase"] == "download" for s in sink.sessions_rows)
    assert all(r["duration_s"] == pytest.approx(1e-6) for r in sink.rounds[1:])


def test_bytes_follow_the_adapter_size():
    _, _, _, sink, _ = emulate()
    done = [s for s in sink.sessions_rows if s["outcome"] == "completed"]
    assert all(s["bytes_up"] == s["bytes_down"] == 4 * P for s in done)
    # The trained model's update bytes have their own column, apart from the emulated model's bytes_up.
    assert all("trained_payload_bytes" in r and "payload_bytes" not in r for r in sink.rounds[1:])
    cut = [s for s in sink.sessions_rows if s["outcome"] != "completed"]
    assert all(s["bytes_up"] < 4 * P for s in cut)


def test_hazards_end_long_sessions_with_their_reason():
    # Low-end phones fail once an hour and run their batteries down; sessions of about an hour of training
    # mostly end early, each for a recorded reason, and none of those is trained.
    _, _, host, sink, _ = emulate(classes={"low_end_phone": 1.0}, deadline_s=1e6, rounds=2, k=7, flops=1e14)
    early = [s for s in sink.sessions_rows if s["outcome"] in {"offline", "device_failure", "battery"}]
    assert len(early) >= 4
    assert all(s["phase"] in {"download", "train", "upload"} for s in early)
    assert sum(r["offline"] + r["device_failure"] + r["battery"] for r in sink.rounds) == len(early)
    assert len(host.trained) == sum(r["completed"] for r in sink.rounds)


def test_battery_cutoff_stops_training_at_the_threshold():
    # Phones with tiny batteries (0.05 Wh), never on a charger, reach the 10% cutoff within seconds of training
    # at 4.5 W.
    overrides = {"flagship_phone": {"battery_wh": (0.05, 0.05), "failures_per_hour": 0.0,
                                    "availability": {"kind": "always_on"}}}
    fleet, _, _, sink, _ = emulate(classes={"flagship_phone": 1.0}, flops=1e14, overrides=overrides, min_charge=0.0,
                                   rounds=1)
    drained = [s for s in sink.sessions_rows if s["outcome"] == "battery"]
    assert len(drained) == 7
    ids = [s["device"] for s in drained]
    assert fleet.charged_wh[ids].sum() == 0
    np.testing.assert_allclose(fleet.charge_wh[ids], 0.1 * 0.05, rtol=1e-9)


def test_a_plugged_in_phone_drains_only_what_its_charger_does_not_cover():
    # t = 0 is midnight: the phones are on their chargers. 15 W of charger against 4.5 W of training: the
    # battery never falls, so no session may stop for it, however small the battery.
    tiny = {"battery_wh": (0.05, 0.05), "failures_per_hour": 0.0}
    _, _, _, sink, _ = emulate(classes={"flagship_phone": 1.0}, flops=1e14, min_charge=0.0, rounds=1,
                               overrides={"flagship_phone": tiny}, deadline_s=3600.0)
    assert not [s for s in sink.sessions_rows if s["outcome"] == "battery"]
    # A 2 W charger leaves 2.5 W of the 4.5 W load to the battery: from a charge c (fraction) it lasts
    # (c - 0.1) x 0.05 Wh x 3600 s/h / 2.5 W of training (the adapter's transfers take milliseconds).
    _, _, _, sink, _ = emulate(classes={"flagship_phone": 1.0}, flops=1e14, min_charge=0.0, rounds=1,
                               overrides={"flagship_phone": {**tiny, "charger_w": 2.0}})
    drained = [s for s in sink.sessions_rows if s["outcome"] == "battery"]
    assert len(drained) == 7
    for s in drained:
        assert s["train_s"] == pytest.approx((s["charge_start"] - 0.1) * 0.05 * 3600 / 2.5, rel=1e-3)


def test_k_fastest_waits_without_deadline():
    _, _, _, sink, _ = emulate(policy="k_fastest", deadline_s=1e-6, rounds=2)
    assert [r["completed"] for r in sink.rounds[1:]] == [5, 5]
    assert all(r["missed_deadline"] == 0 for r in sink.rounds)


def test_fading_can_put_links_in_outage():
    _, _, _, sink, _ = emulate(fading="rayleigh", rounds=6, selected=20, k=20, classes={"low_end_phone": 1.0})
    outcomes = [s["outcome"] for s in sink.sessions_rows]
    assert "link_outage" in outcomes and "completed" in outcomes


def test_outage_does_not_grow_with_the_band():
    # Fading draws are the same for every band (same seed): a device out of reach at 5 MHz is out of reach
    # at 100 MHz and the other way round, since the outage test is over a fixed reference width.
    outages = []
    for band in (5e6, 100e6):
        _, _, _, sink, _ = emulate(fading="rayleigh", rounds=1, selected=40, k=40, classes={"low_end_phone": 1.0},
                                   uplink_hz=band, deadline_s=1e6)
        outages.append({s["device"] for s in sink.sessions_rows if s["outcome"] == "link_outage"})
    assert outages[0] and outages[0] == outages[1]


def test_sessions_and_rounds_record_battery_levels():
    fleet, start, _, sink, _ = emulate(classes={"flagship_phone": 0.5, "mec_t4": 0.5}, rounds=2)
    for s in sink.sessions_rows:
        d = s["device"]
        if s["device_class"] == "mec_t4":  # mains power: no battery to report
            assert np.isnan(s["charge_start"]) and np.isnan(s["charge_end"])
        else:
            assert 0 < s["charge_end"] <= s["charge_start"] <= 1
            assert s["charge_start"] - s["charge_end"] == pytest.approx(s["energy_j"] / 3600 / fleet.battery_wh[d])
    phones = np.flatnonzero(fleet.cls == [c.name for c in fleet.classes].index("flagship_phone"))
    last = sink.rounds[-1]
    assert last["charge_flagship_phone"] == pytest.approx(np.mean(fleet.charge_wh[phones] / fleet.battery_wh[phones]))
    assert np.isnan(last["charge_mec_t4"])


def test_charging_is_booked():
    # Phones charge at night (t = 0 is midnight); long rounds leave time to charge between sessions.
    fleet, start, _, sink, _ = emulate(classes={"flagship_phone": 1.0}, flops=2e13, rounds=3)
    used = np.zeros(len(fleet))
    for s in sink.sessions_rows:
        used[s["device"]] += s["energy_j"] / 3600.0
    assert used.sum() > 0 and fleet.charged_wh.sum() > 0
    np.testing.assert_allclose(start - used + fleet.charged_wh, fleet.charge_wh)
    assert (fleet.charge_wh <= fleet.battery_wh + 1e-12).all()


@pytest.mark.parametrize("selector", [ResourceAware(), Oort(exploration=0.5)])
def test_other_selection_policies_invite_available_devices(selector):
    fleet, _, _, sink, _ = emulate(selector=selector, rounds=3)
    invited = [s for s in sink.sessions_rows]
    assert len(invited) == 21 and all(fleet.memory_gb[s["device"]] > 0 for s in invited)
    per_round = {}
    for s in invited:
        per_round.setdefault(s["round"], set()).add(s["device"])
    assert all(len(v) == 7 for v in per_round.values())


def test_same_seed_same_clock():
    a, b, c = (pd.DataFrame(emulate(seed=seed)[3].sessions_rows) for seed in (4, 4, 5))
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(c)


def test_uplink_trace_replaces_the_shared_band(tmp_path):
    from network_models import load_trace

    path = tmp_path / "up.txt"
    path.write_text("0 2.0\n10 2.0\n")  # a constant 2 Mb/s
    _, _, _, sink, _ = emulate(uplink_trace=load_trace(path, "two_column"), rounds=1)
    done = [s for s in sink.sessions_rows if s["outcome"] == "completed"]
    assert done and all(s["upload_s"] == pytest.approx(8 * 4 * P / 2e6) for s in done)
    assert all(s["uplink_mbps"] == pytest.approx(2.0) for s in done)


def test_multicast_sends_the_adapter_once_per_cell():
    _, _, _, unicast, _ = emulate(rounds=1, selected=12, k=12)
    _, _, _, sink, _ = emulate(rounds=1, selected=12, k=12, multicast=True)
    sessions = pd.DataFrame(sink.sessions_rows)
    cells = sessions["cell"].nunique()
    assert cells >= 2
    assert sink.rounds[1]["bytes_down"] == 4 * P * cells  # one transmission per cell
    assert unicast.rounds[1]["bytes_down"] == 4 * P * 12  # one per device
    assert (sessions["bytes_down"] == 4 * P).all()  # every device still received the whole adapter
    for _, group in sessions.groupby("cell"):
        assert group["download_s"].nunique() == 1  # everyone in a cell is done when the broadcast ends


def test_fedbuff_aggregates_every_k_arrivals_without_deadlines():
    strategy = build_strategy("fedbuff", buffer_size=4, concurrency=12)
    _, _, host, sink, final = emulate(strategy=strategy, rounds=5, deadline_s=1e-6,
                                      classes={"flagship_phone": 0.5, "low_end_phone": 0.5})
    rounds = sink.rounds[1:]
    assert [r["version"] for r in rounds] == [1, 2, 3, 4, 5]
    assert all(r["completed"] == 4 and r["missed_deadline"] == 0 for r in rounds)
    assert len(host.trained) >= 20  # every arrival is trained; some arrive after the last version
    arrived = [s for s in sink.sessions_rows if s["outcome"] == "completed"]
    assert max(s["staleness"] for s in arrived) >= 1  # slow devices trained from older versions
    assert all(s["staleness"] == s["round"] - 1 - s["base_version"] for s in arrived)
    # staleness-weighted mean of equal deltas: every step moves by 0.01 x mean of 1/sqrt(1 + staleness)
    steps = [np.mean([(1 + s["staleness"]) ** -0.5 for s in arrived if s["round"] == r["round"]]) for r in rounds]
    assert torch.allclose(final, torch.full((P,), 0.01 * float(np.sum(steps))), atol=1e-6)


def test_max_staleness_drops_late_updates_before_training():
    strategy = build_strategy("fedasync", max_staleness=1, concurrency=12)
    _, _, host, sink, _ = emulate(strategy=strategy, rounds=8, classes={"flagship_phone": 0.5, "low_end_phone": 0.5})
    stale = [s for s in sink.sessions_rows if s["outcome"] == "stale"]
    assert stale and all(s["round"] - 1 - s["base_version"] > 1 for s in stale)
    assert len(host.trained) == sum(r["completed"] for r in sink.rounds) + sum(
        1 for s in sink.sessions_rows if s["outcome"] == "completed" and s["round"] > 8)
    assert all(r["completed"] == 1 for r in sink.rounds[1:])


def test_fedprox_stragglers_send_partial_work():
    # Low-end phones need about 5x longer to train than flagships: under a deadline that fits the
    # flagships' full work, FedProx's stragglers send fewer steps instead of missing it.
    kwargs = dict(classes={"flagship_phone": 0.5, "low_end_phone": 0.5}, flops=2e12, deadline_s=40.0, rounds=4,
                  k=10, selected=14)
    _, _, _, plain, _ = emulate(**kwargs)
    _, _, host, prox, _ = emulate(strategy=build_strategy("fedprox", mu=0.1), **kwargs)
    partial = [s for s in prox.sessions_rows if s["outcome"] == "completed" and s["steps"] < 4]
    assert partial and all(s["steps"] >= 1 for s in partial)
    assert sum(r["completed"] for r in prox.rounds) > sum(r["completed"] for r in plain.rounds)
    assert {j.steps for j in host.trained} > {4} and all(j.prox_mu == 0.1 for j in host.trained)


# --- screening of bad updates ------------------------------------------------------------------------
# Devices with id % 6 == 0 send a delta with a NaN, id % 6 == 1 a delta 33 to 100 times larger than anyone's;
# the rest send 0.01, 0.02 or 0.03 in every entry (norms within a factor 3 of each other).

def honest_delta(d: int) -> torch.Tensor:
    return torch.full((P,), 0.01 * (1 + (d // 6) % 3))


def bad_kind(d: int) -> str:
    return {0: "nan", 1: "huge"}.get(d % 6, "clean")


class BadHost(FakeHost):
    def __init__(self, nan: bool = True):
        super().__init__()
        self.nan = nan

    def train(self, job, start, base_delta):
        self.trained.append(job)
        delta = honest_delta(job.client)
        if bad_kind(job.client) == "nan" and self.nan:
            delta[3] = float("nan")
        elif bad_kind(job.client) == "huge":
            delta = torch.full((P,), 1.0)  # norm 31.6 against at most 0.95 for honest ones
        return TrainResult(job, delta, 100, 2.0, 1.0)

    def evaluate(self, adapter, base_delta):
        return float(adapter.mean())


ARRIVED = {"completed", "rejected_nonfinite", "rejected_norm"}


def expected_split(devices: list[int]) -> tuple[list[int], list[int], list[int]]:
    """(kept, nonfinite, too large) by the rule, worked out from the devices' kinds alone: with 3 or more
    finite updates the median norm is an honest one while fewer than half are huge."""
    nan = [d for d in devices if bad_kind(d) == "nan"]
    finite = [d for d in devices if bad_kind(d) != "nan"]
    huge = [d for d in finite if bad_kind(d) == "huge"]
    assert len(finite) < 3 or 2 * len(huge) < len(finite)  # the cases the test can predict
    huge = huge if len(finite) >= 3 else []
    return [d for d in finite if d not in huge], nan, huge


def test_bad_updates_are_rejected_and_never_aggregated():
    host = BadHost()
    _, _, host, sink, final = emulate(host=host, rounds=5, k=8, selected=10)
    sessions = pd.DataFrame(sink.sessions_rows)
    expected, totals = torch.zeros(P), {"rejected_nonfinite": 0, "rejected_norm": 0}
    for row in sink.rounds[1:]:
        here = sessions[(sessions["round"] == row["round"]) & sessions["outcome"].isin(ARRIVED)]
        kept, nan, huge = expected_split(sorted(here["device"]))
        outcome = dict(zip(here["device"], here["outcome"]))
        assert {d for d, o in outcome.items() if o == "rejected_nonfinite"} == set(nan)
        assert {d for d, o in outcome.items() if o == "rejected_norm"} == set(huge)
        assert row["rejected_nonfinite"] == len(nan) and row["rejected_norm"] == len(huge)
        assert row["completed"] == (len(kept) if len(kept) >= 2 else 0)  # min_reports 2
        if len(kept) >= 2:
            expected += torch.stack([honest_delta(d) for d in kept]).mean(0)  # FedAvg, equal sample counts
        totals["rejected_nonfinite"] += len(nan)
        totals["rejected_norm"] += len(huge)
    assert totals["rejected_nonfinite"] > 0 and totals["rejected_norm"] > 0  # the run met both kinds
    assert torch.isfinite(final).all()
    torch.testing.assert_close(final, expected)
    # every update that arrived was trained, rejected ones included: the screen needs their deltas
    assert {j.client for j in host.trained} == set(sessions.loc[sessions["outcome"].isin(ARRIVED), "device"])


def test_norm_screen_off_aggregates_huge_updates_but_never_nan():
    _, _, _, sink, final = emulate(host=BadHost(), rounds=3, k=8, selected=10, reject_norm_factor=None)
    sessions = pd.DataFrame(sink.sessions_rows)
    assert not (sessions["outcome"] == "rejected_norm").any()
    huge = sessions[(sessions["outcome"] == "completed") & (sessions["device"] % 6 == 1)]
    assert len(huge) > 0 and torch.isfinite(final).all() and final.max() > 0.1  # honest: at most 0.09
    nan = sessions[sessions["device"] % 6 == 0]
    assert set(nan.loc[nan["outcome"].isin(ARRIVED), "outcome"]) == {"rejected_nonfinite"}


@pytest.mark.parametrize("name, params, judged", [
    ("fedbuff", {"buffer_size": 4}, {"rejected_nonfinite", "rejected_norm"}),
    # FedAsync aggregates each arrival alone: no norm can be judged, and a NaN arrival leaves an empty buffer,
    # whose session is booked with the next version's row
    ("fedasync", {}, {"rejected_nonfinite"}),
])
def test_asynchronous_server_screens_each_buffer(name, params, judged):
    strategy = build_strategy(name, concurrency=12, **params)
    aggregated, fedbuff = [], strategy.aggregate

    def spy(global_adapter, version, updates):
        aggregated.append([u.client for u in updates])
        return fedbuff(global_adapter, version, updates)

    strategy.aggregate = spy
    _, _, _, sink, final = emulate(host=BadHost(), strategy=strategy, rounds=8, deadline_s=1e-6,
                                   classes={"flagship_phone": 0.5, "low_end_phone": 0.5})
    sessions = pd.DataFrame(sink.sessions_rows)
    rounds = sink.rounds[1:]
    assert [r["round"] for r in rounds] == [r["version"] for r in rounds] == list(range(1, 9))  # one row each
    assert [r["completed"] for r in rounds] == [len(call) for call in aggregated]
    assert all(bad_kind(d) != "nan" for call in aggregated for d in call)
    rejected = sessions[sessions["outcome"].str.startswith("rejected")]
    assert set(rejected["outcome"]) == judged
    assert all(bad_kind(d) == "nan" for d in rejected.loc[rejected["outcome"] == "rejected_nonfinite", "device"])
    assert all(bad_kind(d) == "huge" for d in rejected.loc[rejected["outcome"] == "rejected_norm", "device"])
    assert sum(r["rejected_nonfinite"] + r["rejected_norm"] for r in sink.rounds) == len(rejected)
    # each row records the sessions that ended since the last (the last batch: those still out at the end)
    assert [r["selected"] for r in rounds] == sink.batches[:-1]
    assert torch.isfinite(final).all()


def test_secure_aggregation_is_not_screened():
    # The server sees only the masked sum: a large update cannot be told apart from the others, and goes in.
    strategy = build_strategy("secagg_fedavg")
    _, _, _, sink, final = emulate(host=BadHost(nan=False), strategy=strategy, rounds=2, k=8, selected=10)
    sessions = pd.DataFrame(sink.sessions_rows)
    assert not sessions["outcome"].str.startswith("rejected").any()
    huge = sessions[(sessions["outcome"] == "completed") & (sessions["device"] % 6 == 1)]
    assert len(huge) > 0 and final.max() > 0.1  # more than any mean of honest deltas (at most 0.03 a round)


def test_radio_energy_is_the_integral_of_power_over_the_rates_each_transfer_had():
    # A linear radio (never at its bound) draws base x air time + slope x bits, whatever the rate did while
    # others joined and left the band (REFERENCE.md section 6): 0.5 W + 0.1 W per Mb/s.
    from network_models import RadioPower

    linear = {"radio_up": RadioPower(0.5, 0.1, 1e6), "radio_down": RadioPower(0.5, 0.1, 1e6),
              "failures_per_hour": 0.0}
    _, _, _, sink, _ = emulate(classes={"iot_gateway": 1.0}, overrides={"iot_gateway": linear}, rounds=2,
                               selected=12, k=12)
    done = [s for s in sink.sessions_rows if s["outcome"] == "completed"]
    assert len(done) >= 12
    for s in done:
        radio_j = s["energy_j"] - 9.0 * s["train_s"]  # the gateway's compute draws 9 W
        bits = 8 * (s["bytes_down"] + s["bytes_up"])
        assert radio_j == pytest.approx(0.5 * (s["download_s"] + s["upload_s"]) + 0.1 * bits / 1e6, rel=1e-9)
        # Recorded rates are what each transfer got: its bits over its air time.
        assert s["downlink_mbps"] == pytest.approx(8 * s["bytes_down"] / s["download_s"] / 1e6, rel=1e-9)
        assert s["uplink_mbps"] == pytest.approx(8 * s["bytes_up"] / s["upload_s"] / 1e6, rel=1e-9)


def test_servers_at_the_site_use_the_backhaul_not_the_radio():
    _, _, _, sink, _ = emulate(classes={"mec_t4": 0.5, "flagship_phone": 0.5}, rounds=2)
    mec = [s for s in sink.sessions_rows if s["device_class"] == "mec_t4" and s["outcome"] == "completed"]
    assert mec
    for s in mec:
        # 5 ms of latency plus 32,000 bits at 1 Gb/s each way; no radio, so all energy is the T4's 70 W
        assert s["download_s"] == pytest.approx(0.005 + 32_000 / 1e9)
        assert s["upload_s"] == pytest.approx(0.005 + 32_000 / 1e9)
        assert s["energy_j"] == pytest.approx(70.0 * s["train_s"])
        assert s["bytes_up_air"] == 0 and s["bytes_down_air"] == 0
    phones = [s for s in sink.sessions_rows if s["device_class"] == "flagship_phone"]
    assert phones and all(s["bytes_up_air"] == s["bytes_up"] for s in phones)
    assert all(s["bytes_down_air"] == s["bytes_down"] for s in phones)
    # the round's bytes are what the network carried, the sites' backhaul as well as the cells' radio: every
    # session's download and every completed upload, both ways alike
    for rnd in (1, 2):
        ended = [s for s in sink.sessions_rows if s["round"] == rnd]
        assert sink.rounds[rnd]["bytes_down"] == sum(s["bytes_down"] for s in ended) > 0
        assert sink.rounds[rnd]["bytes_up"] == sum(s["bytes_up"] for s in ended)


def test_a_local_time_budget_gives_each_device_the_steps_that_fit():
    # Flagships train at 2-4 TFLOP/s x 0.15, low-end phones at 0.2-0.5 x 0.10: with 4 steps of 2e12 FLOPs
    # (5e11 a step) a flagship needs 0.8-1.7 s a step, a low-end phone 10-25 s. In a 20 s budget flagships
    # train all 4 steps, low-end phones 1 or 2 (never fewer than one).
    kwargs = dict(classes={"flagship_phone": 0.5, "low_end_phone": 0.5}, flops=2e12, deadline_s=600.0, rounds=2,
                  k=10, selected=14)
    fleet, _, _, sink, _ = emulate(local_time_budget_s=20.0, **kwargs)
    for s in sink.sessions_rows:
        if s["outcome"] != "completed":
            continue
        step_s = 5e11 / fleet.flops[s["device"]]
        assert s["steps"] == min(4, max(1, int(20.0 // step_s)))
        assert s["train_s"] == pytest.approx(s["steps"] * step_s)
    steps = {s["steps"] for s in sink.sessions_rows if s["outcome"] == "completed"}
    assert 4 in steps and steps & {1, 2}


def test_fednova_differs_from_fedavg_only_under_heterogeneous_local_work():
    # Deltas that grow less than the steps (the first steps move most, as near a minimum): 0.01 x sqrt(tau).
    # With every tau equal FedNova is FedAvg; with a local time budget the taus differ and so do the rules.
    class SqrtHost(FakeHost):
        def train(self, job, start, base_delta):
            self.trained.append(job)
            return TrainResult(job, torch.full((P,), 0.01 * job.steps ** 0.5), 100, 2.0, 1.0)

    kwargs = dict(classes={"flagship_phone": 0.5, "low_end_phone": 0.5}, flops=2e12, deadline_s=600.0, rounds=1,
                  k=10, selected=14)
    runs = {}
    for budget in (None, 20.0):
        for name in ("fedavg", "fednova"):
            host, sink = SqrtHost(), ListSink()
            runs[name, budget] = emulate(strategy=build_strategy(name), local_time_budget_s=budget, host=host,
                                         sink=sink, **kwargs)
    assert torch.equal(runs["fedavg", None][4], runs["fednova", None][4])
    sessions = [s for s in runs["fednova", 20.0][3].sessions_rows if s["outcome"] == "completed"]
    tau = np.array([s["steps"] for s in sessions], dtype=float)
    assert len(set(tau)) > 1
    # Equal sample counts, p_k = 1/K. FedAvg: mean(0.01 sqrt(tau)); FedNova: mean(tau) x mean(0.01 / sqrt(tau)).
    fedavg, fednova = 0.01 * np.mean(np.sqrt(tau)), np.mean(tau) * np.mean(0.01 / np.sqrt(tau))
    assert float(runs["fedavg", 20.0][4][0]) == pytest.approx(fedavg, rel=1e-5)
    assert float(runs["fednova", 20.0][4][0]) == pytest.approx(fednova, rel=1e-5)
    assert fednova > fedavg * 1.01


def test_stacked_downloads_do_not_shrink_with_the_receivers_rank():
    # A strategy that ships stacked factors (FLoRA) sends every device the same stack: twice the full-rank
    # adapter here, whatever rank the device trains at.
    class Stacking(type(build_strategy("fedavg"))):
        def download_values(self):
            return 2 * self.layout.size

    ranks = np.where(np.arange(300) % 2 == 0, 8, 2)
    bytes_down = np.where(ranks == 8, 4 * P, P)
    cost = SessionCost(5e11, bytes_down, bytes_down, bytes_down_full_rank=4 * P)
    _, _, _, sink, _ = emulate(strategy=Stacking(), ranks=ranks, cost=cost, rounds=2)
    later = [s for s in sink.sessions_rows if s["round"] == 2 and s["outcome"] == "completed"]
    assert {ranks[s["device"]] for s in later} == {2, 8}
    assert all(s["bytes_down"] == 2 * 4 * P for s in later)


def test_an_asynchronous_server_that_can_never_receive_an_update_stops_with_the_reason():
    from fleet.emulator import EmulationStalled

    with pytest.raises(EmulationStalled, match="link_outage"):
        emulate(strategy=build_strategy("fedasync", concurrency=5), outage_snr_db=200.0, rounds=2)
