"""Shared checks for the network_models tests."""

import numpy as np
import pytest

from network_models import RateTrace


def check_parse_or_value_error(parse, data):
    """The parsers' contract: a valid RateTrace, or ValueError; never any other exception."""
    try:
        trace = parse(data)
    except ValueError:
        return None
    assert isinstance(trace, RateTrace)
    assert trace.starts_s[0] == 0 and (np.diff(trace.starts_s) > 0).all() and trace.starts_s[-1] < trace.period_s
    assert np.isfinite(trace.rates_bps).all() and (trace.rates_bps >= 0).all()
    assert trace.rate_bps(np.array([0.0, 0.37 * trace.period_s, 5.0])).shape == (3,)
    if trace.loop_bits > 0:
        assert trace.transfer_time_s(1e4, 0.1) >= 0
    return trace


@pytest.fixture(scope="session")
def check_trace():
    """The trace parsers' contract as a function (session-scoped, so hypothesis tests may use it)."""
    return check_parse_or_value_error
