"""Trace replay: Mahimahi and two-column parsing, looping rates and transfer times; malformed files refused."""

import numpy as np
import pytest

from network_models import RateTrace, load_mahimahi, load_trace, load_two_column, parse_mahimahi, parse_two_column

PACKET = 12_000  # bits in a 1500-byte Mahimahi delivery opportunity


def delivered(trace, a, b):
    """Bits the trace delivers between times a and b, walking its segments loop by loop (reference)."""
    total, loop = 0.0, np.floor(a / trace.period_s)
    ends = np.append(trace.starts_s[1:], trace.period_s)
    while loop * trace.period_s < b:
        base = loop * trace.period_s
        for s, e, r in zip(trace.starts_s, ends, trace.rates_bps):
            lo, hi = max(a, base + s), min(b, base + e)
            total += r * max(hi - lo, 0.0)
        loop += 1
    return total


def test_mahimahi_one_packet_per_ms_is_12_mbps():
    trace = parse_mahimahi("\n".join(str(t) for t in range(1, 101)).encode() + b"\n")
    assert trace.period_s == pytest.approx(0.1)
    assert trace.rate_bps(np.array([0.0, 0.0505, 7.3])) == pytest.approx(np.full(3, 12e6))
    assert trace.mean_rate_bps == pytest.approx(12e6)
    assert trace.transfer_time_s(12e6, start_s=3.0) == pytest.approx(1.0)


def test_mahimahi_repeated_stamps_gaps_and_looping():
    # Period 10 ms; the stamp at 10 ms is the next loop's opportunity at 0. Two packets at 5 ms.
    trace = parse_mahimahi(b"5\n5\n10\n")
    assert trace.loop_bits == 3 * PACKET
    assert trace.rate_bps(np.array([0.0005, 0.003, 0.0055, 0.008, 0.0105])) == pytest.approx(
        [PACKET / 1e-3, 0, 2 * PACKET / 1e-3, 0, PACKET / 1e-3])
    # Two loops' worth from 0: three packets by 6 ms, one more at 10-11 ms, the last two at 15-16 ms.
    assert trace.transfer_time_s(6 * PACKET, start_s=0.0) == pytest.approx(0.016)
    assert trace.transfer_time_s(PACKET, start_s=0.001) == pytest.approx(0.0045)


def test_two_column_piecewise_constant_and_looping():
    trace = parse_two_column(b"# time_s throughput_Mbps\n0 8\n1, 0\n\n2\t4   # last holds 1 s\n")
    assert trace.period_s == 3.0 and trace.loop_bits == 12e6
    assert trace.rate_bps(np.array([0.5, 1.5, 2.5, 3.5])) == pytest.approx([8e6, 0, 4e6, 8e6])
    # 8 Mb in the first second, nothing in the second, 4 Mb in the third, then 4 Mb more at 8 Mb/s.
    assert trace.transfer_time_s(16e6, start_s=0.0) == pytest.approx(3.5)
    # Starting in the dead second waits for the live one.
    assert trace.transfer_time_s(1e6, start_s=1.2) == pytest.approx(0.8 + 0.25)
    assert trace.transfer_time_s(0.0, start_s=1.2) == 0.0


def test_two_column_shifts_its_first_time_to_zero_and_accepts_crlf():
    trace = parse_two_column(b"10.5,2\r\n11.5,6\r\n")
    assert trace.starts_s.tolist() == [0.0, 1.0] and trace.period_s == 2.0
    single = parse_two_column(b"3 5")
    assert single.rate_bps(123.4) == 5e6 and single.transfer_time_s(10e6, 7.0) == pytest.approx(2.0)


def test_transfer_time_matches_integrating_the_rate():
    rng = np.random.default_rng(0)
    starts = np.concatenate([[0.0], np.sort(rng.uniform(0, 10, 20))])
    rates = rng.choice([0.0, 1e6, 5e6, 2e7], size=21)
    rates[3] = 1e6
    trace = RateTrace(starts, rates, 10.5)
    for _ in range(50):
        start, bits = rng.uniform(0, 40), rng.uniform(1e5, 4e8)
        t = trace.transfer_time_s(bits, start)
        assert delivered(trace, start, start + t) == pytest.approx(bits, rel=1e-9)
        # ...and not a moment sooner.
        assert delivered(trace, start, start + t * (1 - 1e-6)) < bits


def test_a_dead_trace_loads_but_cannot_carry_a_transfer():
    trace = parse_two_column(b"0 0\n1 0\n")
    assert trace.rate_bps(0.5) == 0.0
    with pytest.raises(ValueError, match="delivers nothing"):
        trace.transfer_time_s(1.0, 0.0)


def test_rate_trace_checks_itself():
    with pytest.raises(ValueError, match="begin at 0"):
        RateTrace(np.array([0.5]), np.array([1.0]), 1.0)
    with pytest.raises(ValueError, match="period"):
        RateTrace(np.array([0.0, 1.0]), np.array([1.0, 1.0]), 1.0)
    with pytest.raises(ValueError, match=">= 0"):
        RateTrace(np.array([0.0]), np.array([-1.0]), 1.0)
    with pytest.raises(ValueError, match="bits"):
        RateTrace(np.array([0.0]), np.array([1.0]), 1.0).transfer_time_s(-5.0, 0.0)


def test_files_load_by_format(tmp_path):
    mm, tc = tmp_path / "up.mahi", tmp_path / "up.log"
    mm.write_text("1\n2\n")
    tc.write_text("0 3\n")
    assert load_mahimahi(mm).mean_rate_bps == pytest.approx(12e6)
    assert load_trace(mm, "mahimahi").period_s == load_mahimahi(mm).period_s
    assert load_two_column(tc).rate_bps(0.0) == load_trace(tc, "two_column").rate_bps(0.0) == 3e6
    with pytest.raises(ValueError, match="unknown trace format"):
        load_trace(tc, "pickle")
    bad = tmp_path / "bad.log"
    bad.write_text("0 1\n1 2\n0.5 3\n")
    with pytest.raises(ValueError, match=rf"{bad}, line 3: time 0.5 s does not increase"):
        load_two_column(bad)


@pytest.mark.parametrize(
    "data, line, reason",
    [
        (b"", 1, "empty trace"),
        (b"\n\n", 2, "empty trace"),
        (b"1\n2\nx\n", 3, "whole ms"),
        (b"1\n2.5\n", 2, "whole ms"),
        (b"1\n-2\n", 2, "whole ms"),
        (b"3\n2\n", 2, "back in time"),
        (b"0\n0\n", 2, "longer than 0 ms"),
        (b"1\n99999999999999999999999999\n", 2, "beyond"),
        (b"1\n\xff\xfe\n", 2, "not UTF-8"),
        (b"1\n\xd9\xa3\n", 2, "whole ms"),  # an Arabic-Indic 3: int() would take it, we do not
    ],
)
def test_malformed_mahimahi(data, line, reason):
    with pytest.raises(ValueError, match=rf"<mahimahi>, line {line}: .*{reason}"):
        parse_mahimahi(data)


@pytest.mark.parametrize(
    "data, line, reason",
    [
        (b"", 1, "empty trace"),
        (b"# only a header\n", 1, "empty trace"),
        (b"0 1\n1 fast\n", 2, "not a number: 'fast'"),
        (b"0 1\n1 nan\n", 2, "not a number"),
        (b"0 1\n1 inf\n", 2, "not a number"),
        (b"0 1\n1 1e999\n", 2, "out of range"),
        (b"0 1\n1 1_000\n", 2, "not a number"),
        (b"0 -1\n", 1, "negative throughput"),
        (b"-1 1\n", 1, "negative time"),
        (b"0 1\n0 2\n", 2, "does not increase"),
        (b"0 1\n2 1\n1 1\n", 3, "does not increase"),
        (b"0 1 2\n", 1, "expected 2 columns"),
        (b"0\n", 1, "expected 2 columns"),
        (b",0,1\n", 1, "expected 2 columns"),
        (b"0 1\n1e308 1\n1.7e308 1\n", 3, "too large"),
        (b"0 1e300\n1e10 1\n", 2, "overflows"),
        (b"0 1\n\x80\n", 2, "not UTF-8"),
    ],
)
def test_malformed_two_column(data, line, reason):
    with pytest.raises(ValueError, match=rf"<two-column>, line {line}: .*{reason}"):
        parse_two_column(data)


ALPHABET = [b"0", b"1", b"7", b"9", b".", b"-", b"+", b"e", b"E", b",", b" ", b"\t", b"#", b"\n", b"\r\n",
            b"nan", b"inf", b"_", b"x", b"\xff", b"\xc3\xa9", b"\x00", b"1e308", b"12"]


@pytest.mark.parametrize("parse, seed_text", [
    (parse_mahimahi, b"0\n1\n1\n2\n5\n5\n5\n9\n"),
    (parse_two_column, b"# t Mbps\n0 1.5\n0.5, 3\n1.2 0\n2 7.25\n"),
])
def test_seeded_fuzz_never_raises_anything_but_value_error(parse, seed_text, check_trace):
    """Mutations of a valid trace (no extra dependency; see test_traces_fuzz.py for the hypothesis version)."""
    rng = np.random.default_rng(12345)
    valid = 0
    for _ in range(400):
        data = bytearray(seed_text)
        for _ in range(rng.integers(1, 4)):
            at = int(rng.integers(0, len(data) + 1))
            action = rng.integers(3)
            if action == 0:
                data[at:at] = ALPHABET[rng.integers(len(ALPHABET))]
            elif action == 1:
                del data[at : at + int(rng.integers(1, 4))]
            else:
                data[at:at] = bytes(rng.integers(0, 256, size=int(rng.integers(1, 4)), dtype=np.uint8))
        valid += check_trace(parse, bytes(data)) is not None
    assert valid > 0  # the mutations leave some traces valid, so both paths are exercised
