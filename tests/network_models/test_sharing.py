"""One band shared by transfers that come and go (fluid model, REFERENCE.md section 5 worked example)."""

import time

import numpy as np
import pytest

from network_models import SharedBand, ofdma_rates_bps, shannon_rate_bps, tdma_rates_bps

B, NF, P, LOSS = 20e6, 5.0, 23.0, 121.3
BITS = 8e6  # a 1 MB LoRA update


def run_to_end(band):
    """Complete every transfer; {id: finish time}."""
    done = {}
    while (nxt := band.next_completion()) is not None:
        t, expected = nxt
        assert band.complete(t) == expected
        done[expected] = t
    return done


@pytest.mark.parametrize("scheme", ["ofdma", "tdma"])
def test_alone_a_transfer_takes_bits_over_rate(scheme):
    band = SharedBand(B, NF, scheme)
    band.start(1, BITS, P, LOSS, now=2.0)
    alone = float(shannon_rate_bps(B, P, LOSS, NF))
    assert band.rate_bps(1) == pytest.approx(alone)
    assert band.active == 1 and 1 in band
    assert run_to_end(band) == {1: pytest.approx(2.0 + BITS / alone)}
    assert band.active == 0 and band.next_completion() is None


def test_two_equal_transfers_finish_together():
    alone = BITS / float(shannon_rate_bps(B, P, LOSS, NF))
    finish = {}
    for scheme in ("ofdma", "tdma"):
        band = SharedBand(B, NF, scheme)
        band.start(1, BITS, P, LOSS, now=0.0)
        band.start(2, BITS, P, LOSS, now=0.0)
        done = run_to_end(band)
        assert done[1] == pytest.approx(done[2], rel=1e-12)
        finish[scheme] = done[1]
    # OFDMA: each half-band slice has half the noise too, so sharing costs less than a factor 2.
    assert alone < finish["ofdma"] < 2 * alone
    assert finish["ofdma"] == pytest.approx(BITS / ofdma_rates_bps(np.zeros(2), B, P, np.full(2, LOSS), NF)[0])
    assert finish["tdma"] == pytest.approx(2 * alone, rel=1e-12)


@pytest.mark.parametrize("scheme", ["ofdma", "tdma"])
def test_second_transfer_starts_when_the_first_is_half_done(scheme):
    rates = ofdma_rates_bps if scheme == "ofdma" else tdma_rates_bps
    r1 = float(shannon_rate_bps(B, P, LOSS, NF))
    r2 = float(rates(np.zeros(2), B, P, np.full(2, LOSS), NF)[0])
    band = SharedBand(B, NF, scheme)
    band.start(1, BITS, P, LOSS, now=0.0)
    half = BITS / 2 / r1
    band.start(2, BITS, P, LOSS, now=half)
    assert band.remaining_bits(1) == pytest.approx(BITS / 2)
    assert band.rate_bps(1) == band.rate_bps(2) == pytest.approx(r2)
    done = run_to_end(band)
    # The first sends its other half at the shared rate; the second has then sent that much too, and sends
    # the rest alone.
    assert done[1] == pytest.approx(half + BITS / 2 / r2)
    assert done[2] == pytest.approx(done[1] + BITS / 2 / r1)


def test_removal_returns_the_bits_sent_and_frees_the_band():
    band = SharedBand(B, NF)
    band.start(1, BITS, P, LOSS, now=0.0)
    band.start(2, BITS, P, LOSS, now=0.0)
    shared = band.rate_bps(1)
    assert band.remove(2, now=0.25) == pytest.approx(0.25 * shared)
    assert 2 not in band and band.active == 1
    assert band.rate_bps(1) == pytest.approx(float(shannon_rate_bps(B, P, LOSS, NF)))
    t, _ = band.next_completion()
    assert t == pytest.approx(0.25 + (BITS - 0.25 * shared) / band.rate_bps(1))
    with pytest.raises(KeyError):
        band.remove(2, now=0.3)


def test_a_transfer_in_outage_never_completes():
    band = SharedBand(B, NF, outage_snr_db=-5.0)
    band.start(1, BITS, P, 140.0, now=0.0)  # SNR about -21 dB on the whole band
    band.start(2, BITS, P, LOSS, now=0.0)
    band.start(3, BITS, P, np.inf, now=0.0)  # a -inf dB fade: no signal at all
    assert band.rate_bps(1) == band.rate_bps(3) == 0.0 and band.rate_bps(2) > 0
    assert run_to_end(band) == {2: pytest.approx(BITS / band_rate(3))}
    assert band.active == 2 and band.next_completion() is None
    assert band.remove(1, now=100.0) == 0.0


def band_rate(n):
    return float(ofdma_rates_bps(np.zeros(n), B, P, np.full(n, LOSS), NF)[0])


def test_zero_bits_complete_at_once_and_mixed_sizes_finish_smallest_first():
    band = SharedBand(B, NF)
    for i, bits in enumerate([3e6, 0.0, 1e6, 2e6]):
        band.start(i, bits, P, LOSS, now=1.0)
    done = run_to_end(band)
    assert list(done) == [1, 2, 3, 0]
    assert done[1] == 1.0
    # While four share the band, the 1 Mb transfer needs 1e6 / (rate with three left) after the empty one went.
    assert done[2] == pytest.approx(1.0 + 1e6 / band_rate(3))


def test_misuse_is_refused():
    band = SharedBand(B, NF)
    band.start(1, BITS, P, LOSS, now=5.0)
    with pytest.raises(ValueError, match="already active"):
        band.start(1, BITS, P, LOSS, now=5.0)
    with pytest.raises(ValueError, match="backwards"):
        band.start(2, BITS, P, LOSS, now=4.0)
    with pytest.raises(ValueError, match="bits"):
        band.start(2, -1.0, P, LOSS, now=5.0)
    with pytest.raises(ValueError, match="no transfer finishes"):
        band.complete(5.1)
    t, _ = band.next_completion()
    # Starting another after the first should have finished would lose its bits: refused, state untouched.
    with pytest.raises(ValueError, match="finished before"):
        band.start(2, BITS, P, LOSS, now=t + 1.0)
    assert band.complete(t) == 1
    with pytest.raises(ValueError, match="no transfer is active"):
        band.complete(t)
    with pytest.raises(ValueError, match="scheme"):
        SharedBand(B, NF, scheme="cdma")


def test_two_thousand_transfers_in_one_band_are_fast():
    rng = np.random.default_rng(0)
    starts = np.sort(rng.uniform(0, 60, 2000))
    sizes = rng.uniform(1e6, 1e7, 2000)
    losses = rng.uniform(100, 125, 2000)
    band = SharedBand(B, NF)
    clock = time.perf_counter()
    finished = 0
    sent = 0.0
    for i, (t, bits, loss) in enumerate(zip(starts, sizes, losses)):
        while (nxt := band.next_completion()) is not None and nxt[0] <= t:
            band.complete(nxt[0])
            finished += 1
        band.start(i, bits, P, loss, now=t)
        if i % 10 == 0:
            sent += band.remove(i, now=t)
    finished += len(run_to_end(band))
    elapsed = time.perf_counter() - clock
    assert finished == 2000 - 200 and band.active == 0
    assert elapsed < 1.0, f"{elapsed:.2f} s"
