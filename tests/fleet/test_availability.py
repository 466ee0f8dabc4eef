"""Availability models: always on, nightly charging windows, Markov on/off, and trace replay."""

import json
import time

import numpy as np
import pytest

from fleet.availability import (
    AVAILABILITY,
    AlwaysOn,
    Diurnal,
    MarkovOnOff,
    TraceAvailability,
    build_availability,
)
from fleet.availability_traces import load_behave_trace

HOUR = 3600.0
DAY = 24 * HOUR

# Client a: two short intervals. b: back-to-back intervals that merge, and a last one that runs into the
# next period's first. c: never available. d: always available.
TINY_TRACE = {
    "a": {"duration": 20, "active": [10, 50], "inactive": [20, 60], "finish_time": 100, "model": "x"},
    "b": {"active": [0, 30, 80], "inactive": [30, 40, 100], "finish_time": 100},
    "c": {"active": [], "inactive": [], "finish_time": 50},
    "d": {"active": [0], "inactive": [10], "finish_time": 10},
}
TINY_CSV = """client_id,active_s,inactive_s,finish_time_s
a,10,20,100
b,30,40,100
a,50,60,100

b,0,30,100
b,80,100,100
d,0,10,10
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_offline_after_is_exact(model, t, devices, eps=1e-6):
    """The device stays available until t + offline_after and is gone just after."""
    off = model.offline_after(t, devices)
    now = model.available(t, devices)
    assert np.all(off[~now] == 0.0)
    for d, x in zip(devices[now & np.isfinite(off)], off[now & np.isfinite(off)]):
        assert model.available(t + x - eps, np.array([d]))[0], (t, d, x)
        assert not model.available(t + x + eps, np.array([d]))[0], (t, d, x)


# ----- AlwaysOn


def test_always_on():
    model = AlwaysOn()
    devices = np.arange(5)
    assert model.available(123.0, devices).all()
    assert np.isinf(model.offline_after(0.0, devices)).all()
    assert not model.charging(0.0, devices).any()
    assert model.available(0.0, np.array([], dtype=int)).shape == (0,)


def test_queries_reject_bad_time_and_indices():
    with pytest.raises(ValueError, match="t must be"):
        AlwaysOn().available(-1.0, np.arange(3))
    with pytest.raises(ValueError, match=">= 0"):
        Diurnal().available(0.0, np.array([-1]))
    with pytest.raises(ValueError, match="integer"):
        MarkovOnOff(10, 10).available(0.0, np.array([0.5]))


# ----- Diurnal


def test_diurnal_fraction_of_a_day_is_the_window():
    model = Diurnal(window_start_h=22.0, window_hours=9.0, jitter_h=1.0, timezone_offsets_h=(-5.0, 0.0, 8.0), seed=1)
    devices = np.arange(1000)
    fraction = np.mean([model.available(t, devices).mean() for t in np.arange(0.0, DAY, 600.0)])
    assert fraction == pytest.approx(9.0 / 24.0, abs=0.01)


def test_diurnal_window_is_in_local_time_and_half_open():
    model = Diurnal(window_start_h=22.0, window_hours=9.0, jitter_h=0.0, timezone_offsets_h=(2.0,))
    device = np.array([0])
    # Local time is two hours ahead: 20:30 in the reference zone is 22:30 at the device.
    assert model.available(20.5 * HOUR, device)[0]
    assert model.offline_after(20.5 * HOUR, device)[0] == pytest.approx(8.5 * HOUR)
    assert not model.available(19.5 * HOUR, device)[0]
    assert model.offline_after(19.5 * HOUR, device)[0] == 0.0
    assert model.available(DAY + 4.9 * HOUR, device)[0]  # 06:54 local, the next morning
    assert not model.available(DAY + 5.0 * HOUR, device)[0]  # 07:00 local: the window has closed
    assert np.array_equal(model.charging(20.5 * HOUR, device), model.available(20.5 * HOUR, device))


def test_diurnal_draws_starts_and_zones_per_device():
    model = Diurnal(jitter_h=1.0, timezone_offsets_h=(-5.0, 0.0, 5.0), seed=3)
    devices = np.arange(3000)
    starts = model.window_start_local_h(devices)
    assert np.all((starts >= 21.0) & (starts <= 23.0)) and starts.std() > 0.4
    counts = np.unique(model.timezone_h(devices), return_counts=True)[1]
    assert len(counts) == 3 and np.all(np.abs(counts - 1000) < 100)


def test_diurnal_offline_after_matches_available():
    model = Diurnal(seed=5, timezone_offsets_h=(0.0, 3.5))
    for t in (0.0, 5.5 * HOUR, 23.0 * HOUR, 3 * DAY + 123.0):
        assert_offline_after_is_exact(model, t, np.arange(200))


def test_diurnal_all_day_window_never_ends():
    model = Diurnal(window_hours=24.0)
    assert model.available(7.0 * HOUR, np.arange(10)).all()
    assert np.isinf(model.offline_after(7.0 * HOUR, np.arange(10))).all()


def test_diurnal_device_answer_does_not_depend_on_other_queries():
    devices = np.array([5, 17])
    alone = Diurnal(seed=2).window_start_local_h(devices)
    model = Diurnal(seed=2)
    model.available(0.0, np.array([99_999]))  # draws for many more devices first
    assert np.array_equal(model.window_start_local_h(devices), alone)


def test_diurnal_rejects_bad_window():
    with pytest.raises(ValueError, match="window_hours"):
        Diurnal(window_hours=30.0)


# ----- MarkovOnOff


def test_markov_long_run_on_fraction():
    model = MarkovOnOff(mean_on_s=3600.0, mean_off_s=1800.0, seed=0)
    devices = np.arange(500)
    fraction = np.mean([model.available(t, devices).mean() for t in np.arange(0.0, 20 * DAY, 2 * HOUR)])
    assert fraction == pytest.approx(2.0 / 3.0, abs=0.02)
    assert model.on_fraction == pytest.approx(2.0 / 3.0)


def test_markov_stationary_start():
    model = MarkovOnOff(mean_on_s=1000.0, mean_off_s=3000.0, seed=1)
    assert model.available(0.0, np.arange(4000)).mean() == pytest.approx(0.25, abs=0.03)


def test_markov_offline_after_matches_available():
    model = MarkovOnOff(mean_on_s=600.0, mean_off_s=300.0, seed=4)
    for t in (0.0, 1234.5, 50_000.0, 49_000.0, 2e6):
        assert_offline_after_is_exact(model, t, np.arange(60))


def test_markov_answers_do_not_depend_on_query_order_or_other_devices():
    devices = np.arange(40)
    times = np.random.default_rng(0).uniform(0.0, 5e5, 60)
    model = MarkovOnOff(mean_on_s=900.0, mean_off_s=600.0, seed=7)
    answers = [(model.available(t, devices), model.offline_after(t, devices)) for t in times]
    for t, (on, off) in reversed(list(zip(times, answers))):
        fresh = MarkovOnOff(mean_on_s=900.0, mean_off_s=600.0, seed=7)
        assert np.array_equal(fresh.offline_after(t, devices[::-1]), off[::-1])
        assert np.array_equal(model.available(t, devices), on)
    repeated = np.array([3, 3, 11, 3])
    assert np.array_equal(model.offline_after(times[0], repeated), answers[0][1][repeated])


def test_markov_handles_many_devices_quickly():
    model = MarkovOnOff(mean_on_s=3600.0, mean_off_s=1800.0, seed=0)
    devices = np.arange(10_000)
    start = time.perf_counter()
    model.available(7 * DAY, devices)
    assert time.perf_counter() - start < 2.0  # about 0.25 s; 100,000 devices take a few seconds
    start = time.perf_counter()
    model.offline_after(7 * DAY + 60.0, devices)  # inside the cached windows: no stream is replayed
    assert time.perf_counter() - start < 0.2


def test_markov_rejects_bad_means():
    with pytest.raises(ValueError, match="mean_off_s"):
        MarkovOnOff(mean_on_s=10.0, mean_off_s=0.0)


# ----- Determinism across models


@pytest.mark.parametrize(
    "make",
    [
        lambda seed: Diurnal(seed=seed),
        lambda seed: MarkovOnOff(mean_on_s=3600.0, mean_off_s=1800.0, seed=seed),
    ],
    ids=["diurnal", "markov"],
)
def test_same_seed_same_answers_different_seed_different(make):
    devices = np.arange(2000)
    t = 23.5 * HOUR
    first, again, other = make(1), make(1), make(2)
    assert np.array_equal(first.offline_after(t, devices), again.offline_after(t, devices))
    assert not np.array_equal(first.offline_after(t, devices), other.offline_after(t, devices))


def test_trace_mapping_depends_on_seed(tmp_path):
    trace = load_behave_trace(write(tmp_path, "t.json", json.dumps(TINY_TRACE)))
    devices = np.arange(40)
    mappings = {seed: tuple(TraceAvailability(trace, seed=seed).client_of(devices)) for seed in range(6)}
    assert mappings[0] == tuple(TraceAvailability(trace, seed=0).client_of(devices))
    assert len(set(mappings.values())) > 1


# ----- Trace replay


def test_trace_replay_from_json(tmp_path):
    trace = load_behave_trace(write(tmp_path, "t.json", json.dumps(TINY_TRACE)))
    assert trace.client_ids == ("a", "b", "c", "d")
    a, b, c, d = (np.array([i]) for i in range(4))

    def on(t, client):
        return bool(trace.lookup(t, client)[0][0])

    def left(t, client):
        return float(trace.lookup(t, client)[1][0])

    assert [on(t, a) for t in (5, 10, 15, 20, 30, 55, 70, 115, 1015)] == [0, 1, 1, 1, 0, 1, 0, 1, 1]
    assert left(15, a) == 5 and left(30, a) == 0
    assert on(35, b) and left(35, b) == 5  # [0, 30] and [30, 40] merged
    assert not on(50, b)
    assert left(90, b) == 10 + 40  # runs into the next period's [0, 40]
    assert not any(on(t, c) for t in (0, 10, 49))
    assert on(7, d) and np.isinf(left(7, d))


def test_trace_csv_replays_like_json(tmp_path):
    without_c = {k: v for k, v in TINY_TRACE.items() if k != "c"}  # CSV rows are intervals: c has none
    from_json = load_behave_trace(write(tmp_path, "t.json", json.dumps(without_c)))
    from_csv = load_behave_trace(write(tmp_path, "t.csv", TINY_CSV))
    assert from_csv.client_ids == ("a", "b", "d")
    clients = np.array([0, 1, 2, 0, 1])
    for t in np.arange(0.0, 250.0, 2.5):
        for x, y in zip(from_json.lookup(t, clients), from_csv.lookup(t, clients)):
            assert np.array_equal(x, y), t


def test_trace_json_list_form(tmp_path):
    records = [
        {"client_id": 7, "active": [0], "inactive": [5], "finish_time": 10},
        {"active": [5], "inactive": [10], "finish_time": 10},
    ]
    trace = load_behave_trace(write(tmp_path, "t.json", json.dumps(records)))
    assert trace.client_ids == ("7", "1")
    assert list(trace.lookup(2.0, np.array([0, 1]))[0]) == [True, False]


def test_trace_availability_deals_devices_onto_clients(tmp_path):
    trace = load_behave_trace(write(tmp_path, "t.json", json.dumps(TINY_TRACE)))
    model = TraceAvailability(trace, seed=3)
    devices = np.arange(12)
    clients = model.client_of(devices)
    assert np.array_equal(np.bincount(clients), [3, 3, 3, 3])  # more devices than clients: each used evenly
    assert np.array_equal(clients[:4], clients[4:8])
    for t in (0.0, 15.0, 55.0, 90.0, 1234.0):
        on, left = trace.lookup(t, clients)
        assert np.array_equal(model.available(t, devices), on)
        assert np.array_equal(model.offline_after(t, devices), left)
        assert np.array_equal(model.charging(t, devices), on)
        assert_offline_after_is_exact(model, t, devices)


def one(active, inactive, finish_time, **extra):
    """JSON text of a trace with one client "a"."""
    return json.dumps({"a": {"active": active, "inactive": inactive, "finish_time": finish_time, **extra}})


HEADER = "client_id,active_s,inactive_s,finish_time_s\n"
EMPTY = {"active": [], "inactive": [], "finish_time": 5}

MALFORMED = [
    ("t.json", one([10], [5], 100), "client 'a' interval 0: active 10 is after inactive 5"),
    ("t.json", '[{"active": [1], "inactive": [2]}]', "record 0: missing finish_time"),
    ("t.json", one([1, 2], [3], 10), "client 'a': 2 active times but 1 inactive"),
    ("t.json", one(["x"], [3], 10), "client 'a': active[0] must be a number"),
    ("t.json", one([True], [3], 10), "active[0] must be a number"),
    ("t.json", one([-1], [3], 10), "active[0] must be finite and >= 0"),
    ("t.json", one([1], [30], 10), "client 'a' interval 0: inactive 30 is past finish_time 10"),
    ("t.json", one([1, 4], [5, 8], 10), "client 'a' interval 1: interval [4, 8] overlaps [1, 5]"),
    ("t.json", one([1], [2], 0), "client 'a': finish_time must be > 0"),
    ("t.json", one([], [], 5, os=1), "client 'a': unknown keys ['os']"),
    ("t.json", one(1, 2, 5), "active and inactive must be lists"),
    ("t.json", '{"a": 5}', "client 'a': expected an object"),
    ("t.json", '{\n  "a": {\n    "active": [1,\n}', "line 4 column 1: not valid JSON"),
    ("t.json", "5", "expected a JSON object keyed by client id or a list"),
    ("t.json", '{"a": {}, "a": {}}', "duplicate key 'a'"),
    ("t.json", json.dumps([{"client_id": "x", **EMPTY}] * 2), "record 1: client id 'x' appears twice"),
    ("t.json", "{}", "no clients"),
    ("t.csv", "client,active_s,inactive_s,finish_time_s\na,1,2,10\n", "line 1: expected the header"),
    ("t.csv", "", "line 1: expected the header"),
    ("t.csv", HEADER + "a,1,2,10\na,x,3,10\n", "line 3: active_s 'x' is not a number"),
    (
        "t.csv",
        HEADER + "a,1,2,10\na,3,4,20\n",
        "line 3: finish_time_s 20 for client 'a' differs from 10 given on line 2",
    ),
    ("t.csv", HEADER + "a,1,2\n", "line 2: expected 4 fields, got 3"),
    ("t.csv", HEADER + "a,5,2,10\n", "line 2: active 5 is after inactive 2"),
    ("t.csv", HEADER + "a,1,5,10\nb,0,1,10\na,4,8,10\n", "line 4: interval [4, 8] overlaps [1, 5] from line 2"),
    ("t.csv", HEADER + "a,nan,5,10\n", "line 2: active_s must be finite"),
    ("t.csv", HEADER + ",1,5,10\n", "line 2: empty client_id"),
    ("t.txt", "a,1,2,3", "expected a .json or .csv"),
]


@pytest.mark.parametrize("name, text, reason", MALFORMED, ids=[m[2][:40] for m in MALFORMED])
def test_malformed_traces_name_file_place_and_reason(tmp_path, name, text, reason):
    path = write(tmp_path, name, text)
    with pytest.raises(ValueError) as info:
        load_behave_trace(path)
    message = str(info.value)
    assert str(path) in message and reason in message, message


def test_missing_trace_file(tmp_path):
    with pytest.raises(ValueError, match="cannot read"):
        load_behave_trace(tmp_path / "absent.json")


# ----- Factory


def test_build_availability_from_specs(tmp_path):
    path = write(tmp_path, "t.json", json.dumps(TINY_TRACE))
    assert isinstance(build_availability({"kind": "always_on"}, seed=0, n_devices=10), AlwaysOn)
    markov = build_availability({"kind": "markov", "mean_on_s": 3600, "mean_off_s": 1800}, seed=4, n_devices=10)
    assert markov == MarkovOnOff(3600, 1800, seed=4)
    diurnal = build_availability({"kind": "diurnal", "timezone_offsets_h": [-5, 1]}, seed=2, n_devices=10)
    assert diurnal == Diurnal(timezone_offsets_h=(-5.0, 1.0), seed=2)
    trace = build_availability({"kind": "trace", "path": str(path)}, seed=1, n_devices=10)
    again = TraceAvailability(load_behave_trace(path), seed=1)
    assert np.array_equal(trace.client_of(np.arange(10)), again.client_of(np.arange(10)))


def test_kinds_come_from_the_registry_and_yaml_numbers_are_read_as_seconds():
    assert AVAILABILITY.names() == ["always_on", "diurnal", "markov", "trace"]
    markov = build_availability({"kind": "markov", "mean_on_s": "3.6e3", "mean_off_s": 1800}, seed=4, n_devices=1)
    assert markov == MarkovOnOff(3600.0, 1800.0, seed=4)


@pytest.mark.parametrize(
    "spec, reason",
    [
        ({"kind": "sometimes"}, "choose from"),
        ({}, "choose from"),
        ({"kind": "markov", "mean_on_s": 10}, "mean_off_s"),
        ({"kind": "markov", "mean_on_s": 10, "mean_off_s": 5, "mean_of": 1}, "unknown keys ['mean_of']"),
        ({"kind": "diurnal", "seed": 3}, "unknown keys ['seed']"),
        ({"kind": "diurnal", "window_hours": -1}, "window_hours"),
        ({"kind": "trace"}, "missing path"),
    ],
)
def test_build_availability_rejects_bad_specs(spec, reason):
    with pytest.raises(ValueError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        build_availability(spec, seed=0, n_devices=5)


# ----- Scale


def test_whole_fleet_queries_are_fast(tmp_path):
    rng = np.random.default_rng(0)
    records = {}
    for client in range(2000):
        edges = np.sort(rng.uniform(0.0, 7 * DAY, 40))
        records[str(client)] = {
            "active": edges[::2].tolist(),
            "inactive": edges[1::2].tolist(),
            "finish_time": 7 * DAY,
        }
    trace = load_behave_trace(write(tmp_path, "big.json", json.dumps(records)))
    devices = np.arange(100_000)
    diurnal = build_availability({"kind": "diurnal"}, seed=0, n_devices=len(devices))
    for model in (AlwaysOn(), diurnal, TraceAvailability(trace, seed=0)):
        start = time.perf_counter()
        model.available(3 * DAY + 17.0, devices)
        model.offline_after(3 * DAY + 17.0, devices)
        assert time.perf_counter() - start < 0.5, type(model).__name__
