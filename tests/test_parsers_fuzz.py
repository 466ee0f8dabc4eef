"""Parsers of user files, fuzzed with hypothesis: any bytes give a valid result or a ValueError (ScenarioError
is one) naming the file, never another exception. Link traces have their own (tests/network_models).

Inputs are random bytes, random text, and near-valid files built from the parts that matter to each parser
(so that many inputs get past the first line before something is wrong).
"""

import json
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fleet.availability import BehaveTrace, load_behave_trace
from fleet.data import jsonl_clients
from scenarios.errors import ScenarioError
from scenarios.loader import load_scenario
from scenarios.schema import Scenario

FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# JSON values that stress a reader: wrong types, huge and non-finite numbers, nesting, odd strings
SCALAR = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-10, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=6),
)
VALUE = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                          max_size=3), max_leaves=6)
TEXT_BYTES = st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass"))
ANY_BYTES = st.binary(max_size=200) | TEXT_BYTES


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def refuses_clearly(call, path: Path):
    """call() returns, or raises a ValueError whose message names the file."""
    try:
        return call()
    except ValueError as err:
        assert str(path) in str(err) or path.name in str(err), f"message without the file: {err}"
        return None


# --- behave traces (fleet/availability.py) ---------------------------------------------------------------

def record_strategy():
    """A behave record: mostly the right keys, with values that may be wrong."""
    times = st.lists(st.one_of(st.floats(min_value=0, max_value=1e6), VALUE), max_size=4)
    return st.fixed_dictionaries(
        {"active": times | VALUE, "inactive": times | VALUE},
        optional={"finish_time": st.floats(min_value=0, max_value=1e7) | VALUE, "duration": VALUE, "model": VALUE,
                  "client_id": VALUE, "extra": VALUE},
    )


BEHAVE_JSON = st.one_of(
    st.dictionaries(st.text(max_size=4), record_strategy(), max_size=4),
    st.lists(record_strategy(), max_size=4),
    VALUE,
).map(lambda tree: json.dumps(tree).encode())

CSV_CELL = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-5, 10**30).map(str),
                     st.text(alphabet="abc0123456789.,\"\n\r\x00 -e", max_size=6))
CSV_ROW = st.lists(CSV_CELL, min_size=0, max_size=5).map(",".join)
BEHAVE_CSV = st.lists(CSV_ROW, max_size=6).map(
    lambda rows: "\n".join(["client_id,active_s,inactive_s,finish_time_s", *rows]).encode("utf-8", "surrogatepass"))


def check_behave(tmp_path: Path, name: str, data: bytes) -> None:
    path = write(tmp_path, name, data)
    trace = refuses_clearly(lambda: load_behave_trace(path), path)
    if trace is not None:
        assert isinstance(trace, BehaveTrace) and len(trace) >= 1
        assert all(math.isfinite(t) and t > 0 for t in trace.finish_time_s)
        assert (trace.ends >= trace.starts).all()


@pytest.mark.parametrize("suffix", [".json", ".csv"])
@FAST
@given(data=ANY_BYTES)
def test_behave_trace_random_bytes(tmp_path, suffix, data):
    check_behave(tmp_path, f"behave{suffix}", data)


@FAST
@given(data=BEHAVE_JSON)
def test_behave_trace_near_valid_json(tmp_path, data):
    check_behave(tmp_path, "behave.json", data)


@FAST
@given(data=BEHAVE_CSV)
def test_behave_trace_near_valid_csv(tmp_path, data):
    check_behave(tmp_path, "behave.csv", data)


def test_behave_trace_deep_nesting_and_nul(tmp_path):
    check_behave(tmp_path, "deep.json", b"[" * 100_000 + b"]" * 100_000)
    check_behave(tmp_path, "nul.csv", b"client_id,active_s,inactive_s,finish_time_s\na\x00,1,2,3\n")
    check_behave(tmp_path, "huge.json", b'{"a": {"active": [1e999999], "inactive": [10], "finish_time": 10}}')
    check_behave(tmp_path, "bigint.json", b'{"a": {"active": [1], "inactive": [2], "finish_time": 1' + b"0" * 400 + b"}}")


# --- JSONL client data (fleet/data.py) -------------------------------------------------------------------

JSONL_LINE = st.one_of(
    st.fixed_dictionaries({"client_id": VALUE, "text": st.text(max_size=30) | VALUE}),
    VALUE,
).map(json.dumps) | st.text(max_size=20)
JSONL = st.lists(JSONL_LINE, max_size=8).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


def check_jsonl(tmp_path: Path, data: bytes, min_lines: int = 2) -> None:
    path = write(tmp_path, "clients.jsonl", data)
    clients = refuses_clearly(lambda: jsonl_clients(path, min_lines), path)
    for client in clients or []:
        assert isinstance(client.client_id, str)
        assert len(client.lines) >= 2 and all(all(line.strip() for line in s) for s in client.lines)


@FAST
@given(data=ANY_BYTES)
def test_jsonl_random_bytes(tmp_path, data):
    check_jsonl(tmp_path, data)


@FAST
@given(data=JSONL, min_lines=st.integers(2, 4))
def test_jsonl_near_valid(tmp_path, data, min_lines):
    check_jsonl(tmp_path, data, min_lines)


def test_jsonl_deep_nesting_and_bad_encoding(tmp_path):
    check_jsonl(tmp_path, b"[" * 100_000 + b"]" * 100_000)
    check_jsonl(tmp_path, b'{"client_id": "a", "text": "caf\xe9"}\n')


# --- scenario files (scenarios/loader.py) ----------------------------------------------------------------

SECTION_KEYS = {name: list(field.annotation.model_fields) if hasattr(field.annotation, "model_fields") else []
                for name, field in Scenario.model_fields.items()}
YAML_VALUE = st.one_of(st.integers(-3, 10**20), st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                       st.none(), st.text(max_size=6), st.lists(st.integers(-2, 5), max_size=3))


@st.composite
def scenario_yaml(draw) -> bytes:
    """A scenario with a few known fields set to random values (YAML-dumped)."""
    tree = {}
    for _ in range(draw(st.integers(0, 4))):
        section = draw(st.sampled_from(sorted(SECTION_KEYS)))
        keys = SECTION_KEYS[section]
        if keys:
            tree.setdefault(section, {})
            if isinstance(tree[section], dict):
                tree[section][draw(st.sampled_from(keys))] = draw(YAML_VALUE)
        else:
            tree[section] = draw(YAML_VALUE)
    import yaml

    return yaml.safe_dump(tree).encode()


def check_scenario_file(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, "s.yaml", data)
    try:
        scenario = load_scenario(path)
    except ScenarioError as err:
        assert str(path) in str(err) or "override" in str(err), str(err)
        return
    assert isinstance(scenario, Scenario)


@FAST
@given(data=ANY_BYTES)
def test_scenario_random_bytes(tmp_path, data):
    check_scenario_file(tmp_path, data)


@FAST
@given(data=scenario_yaml())
def test_scenario_near_valid(tmp_path, data):
    check_scenario_file(tmp_path, data)


def test_scenario_deep_nesting_and_bad_encoding(tmp_path):
    check_scenario_file(tmp_path, b"[" * 10_000 + b"]" * 10_000)
    check_scenario_file(tmp_path, b"name: caf\xe9\n")
    check_scenario_file(tmp_path, b"network:\n  noise_figure_db: 3257\n")  # 10^(3083/10) mW/Hz overflows
    check_scenario_file(tmp_path, b"model:\n  path: '0'\n")  # no such folder, and no such model in the cache
