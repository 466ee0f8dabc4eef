"""Property test of the trace parsers with hypothesis: any bytes give a valid RateTrace or a ValueError.

hypothesis is in the test extras (pip install -e .[test]); test_traces.py also holds a seeded fuzz.
"""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from network_models import parse_mahimahi, parse_two_column

PARSERS = pytest.mark.parametrize("parse", [parse_mahimahi, parse_two_column])
FAST = settings(max_examples=150, deadline=None)

# Lines built from the characters that matter to the parsers, so many inputs get deep before failing.
NUMBER = st.one_of(
    st.integers(min_value=-5, max_value=10**14).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(alphabet="0123456789.eE+-_", max_size=8),
)
LINE = st.lists(NUMBER, min_size=0, max_size=3).flatmap(
    lambda fields: st.sampled_from([" ", ",", "\t", ", "]).map(lambda sep: sep.join(fields))
) | st.text(max_size=12)
TEXT = st.lists(LINE, max_size=12).map(lambda lines: "\n".join(lines).encode("utf-8", "surrogatepass"))


@PARSERS
@FAST
@given(data=st.binary(max_size=200))
def test_random_bytes(parse, check_trace, data):
    check_trace(parse, data)


@PARSERS
@FAST
@given(data=TEXT)
def test_random_number_lines(parse, check_trace, data):
    check_trace(parse, data)


@FAST
@given(stamps=st.lists(st.integers(min_value=0, max_value=2000), min_size=1, max_size=60))
def test_sorted_mahimahi_stamps_always_load_unless_all_zero(check_trace, stamps):
    data = "\n".join(map(str, sorted(stamps))).encode()
    trace = check_trace(parse_mahimahi, data)
    assert (trace is None) == (max(stamps) == 0)
    if trace is not None:
        assert trace.loop_bits == pytest.approx(12_000 * len(stamps))
