"""One band shared by transfers that come and go (fluid model, REFERENCE.md section 5 worked example)."""

import numpy as np
import pytest

from network_models import Delivery, RadioPower, SharedBand, shannon_rate_bps

B, NF, P, LOSS = 20e6, 5.0, 23.0, 121.3
BITS = 8e6  # a 1 MB LoRA update
# The uplink's received power over the noise density (mW over mW/Hz): 10^((23 - 121.3) / 10) / 10^((-174 + 5) / 10)
SIGNAL_HZ = 10 ** ((P - LOSS + 174 - NF) / 10)


def ofdma_share_bps(n: int) -> float:
    """By hand: a slice B/n with its own noise, (B/n) log2(1 + S / (B/n))."""
    return B / n * np.log2(1 + SIGNAL_HZ / (B / n))


def tdma_share_bps(n: int) -> float:
    """By hand: the whole band 1/n of the time, (B/n) log2(1 + S / B)."""
    return B / n * np.log2(1 + SIGNAL_HZ / B)


def run_to_end(band, deliveries=None):
    """Complete every transfer; {id: finish time}. Their Deliveries go into `deliveries` if given."""
    done = {}
    while (nxt := band.next_completion()) is not None:
        t, expected = nxt
        transfer, delivery = band.complete(t)
        assert transfer == expected and isinstance(delivery, Delivery)
        done[expected] = t
        if deliveries is not None:
            deliveries[expected] = delivery
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
    assert finish["ofdma"] == pytest.approx(BITS / ofdma_share_bps(2))
    assert finish["tdma"] == pytest.approx(2 * alone, rel=1e-12)


@pytest.mark.parametrize("scheme", ["ofdma", "tdma"])
def test_second_transfer_starts_when_the_first_is_half_done(scheme):
    r1 = float(shannon_rate_bps(B, P, LOSS, NF))
    r2 = ofdma_share_bps(2) if scheme == "ofdma" else tdma_share_bps(2)
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
    gone = band.remove(2, now=0.25)
    assert gone.bits == pytest.approx(0.25 * shared) and gone.seconds == pytest.approx(0.25)
    assert gone.energy_j == 0.0  # no radio power given: energy not counted
    assert 2 not in band and band.active == 1
    assert band.rate_bps(1) == pytest.approx(float(shannon_rate_bps(B, P, LOSS, NF)))
    t, _ = band.next_completion()
    assert t == pytest.approx(0.25 + (BITS - 0.25 * shared) / band.rate_bps(1))
    with pytest.raises(KeyError):
        band.remove(2, now=0.3)


def test_a_link_with_no_signal_never_completes_and_holds_its_share():
    band = SharedBand(B, NF)
    band.start(2, BITS, P, LOSS, now=0.0)
    band.start(3, BITS, P, np.inf, now=0.0)  # a -inf dB fade: no signal at all
    assert band.rate_bps(3) == 0.0 and band.rate_bps(2) > 0
    assert run_to_end(band) == {2: pytest.approx(BITS / ofdma_share_bps(2))}
    assert band.active == 1 and band.next_completion() is None
    stalled = band.remove(3, now=100.0)
    assert stalled.bits == 0.0 and stalled.seconds == 100.0


def test_zero_bits_complete_at_once_and_mixed_sizes_finish_smallest_first():
    band = SharedBand(B, NF)
    for i, bits in enumerate([3e6, 0.0, 1e6, 2e6]):
        band.start(i, bits, P, LOSS, now=1.0)
    done = run_to_end(band)
    assert list(done) == [1, 2, 3, 0]
    assert done[1] == 1.0
    # While four share the band, the 1 Mb transfer needs 1e6 / (rate with three left) after the empty one went.
    assert done[2] == pytest.approx(1.0 + 1e6 / ofdma_share_bps(3))


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
    assert band.complete(t)[0] == 1
    with pytest.raises(ValueError, match="no transfer is active"):
        band.complete(t)
    with pytest.raises(ValueError, match="scheme"):
        SharedBand(B, NF, scheme="cdma")


    with pytest.raises(ValueError, match="interference"):
        band.start(3, BITS, P, LOSS, now=t, interference_mw_per_hz=-1e-18)


# --- REFERENCE.md section 5, worked example: 3.5 GHz, UMa NLOS 300 m (121.3 dB), 23 dBm, 20 MHz, NF 5 dB ---
# Hand calculation: noise over 20 MHz = -174 + 73.01 + 5 = -95.99 dBm; received 23 - 121.3 = -98.3 dBm;
# SNR = -2.31 dB = 0.58745.
# Alone: 20e6 log2(1.58745) = 13.334 Mb/s. Ten on OFDMA: 2 MHz each, SNR 5.8745, 2e6 log2(6.8745) = 5.5625 Mb/s.
# Ten on TDMA: 13.334 / 10 = 1.3334 Mb/s. Two on OFDMA: 10 MHz each, SNR 1.1749, 10e6 log2(2.1749) = 11.209 Mb/s.
SOLO_BPS = 13.3342e6
TWO_OFDMA_BPS = 11.2095e6
TEN_OFDMA_BPS = 5.5625e6


@pytest.mark.parametrize("scheme, n, reference_bps, hand_bps", [
    ("ofdma", 1, 13.4e6, SOLO_BPS),
    ("ofdma", 10, 5.6e6, TEN_OFDMA_BPS),
    ("tdma", 10, 1.34e6, 1.33342e6),
])
def test_worked_example_rates(scheme, n, reference_bps, hand_bps):
    band = SharedBand(B, NF, scheme)
    for i in range(n):
        band.start(i, BITS, P, LOSS, now=0.0)
    assert band.rate_bps(0) == pytest.approx(reference_bps, rel=0.01)  # REFERENCE.md gives two digits
    assert band.rate_bps(0) == pytest.approx(hand_bps, rel=1e-4)


# --- energy: integrated over the rates a transfer actually had -------------------------------------------------
# Transfers 1 and 2 (1 MB each, the worked example link) join at t = 0; 2 leaves at t = 0.25 s.
# Transfer 1: 0.25 s at 11.209 Mb/s (2.8024 Mb), then the remaining 5.1976 Mb alone at 13.334 Mb/s (0.38980 s):
# done at 0.63980 s.
FINISH_1_S = 0.639797
SENT_2_BITS = 2.802369e6


def two_join_one_leaves(power):
    band = SharedBand(B, NF)
    band.start(1, BITS, P, LOSS, now=0.0, power=power)
    band.start(2, BITS, P, LOSS, now=0.0, power=power)
    gone = band.remove(2, now=0.25)
    done = {}
    assert run_to_end(band, done) == {1: pytest.approx(FINISH_1_S, rel=1e-5)}
    return done[1], gone


def test_energy_with_a_linear_power_is_base_times_air_time_plus_slope_times_bits():
    # 1 W + 0.1 W per Mb/s never reaches 10 W here, so E = 1 W x air time + 0.1 J/Mb x Mb sent.
    first, second = two_join_one_leaves(RadioPower(1.0, 0.1, 10.0))
    assert first.bits == BITS and first.seconds == pytest.approx(FINISH_1_S, rel=1e-5)
    assert first.energy_j == pytest.approx(1.0 * 0.639797 + 0.1 * 8.0, rel=1e-5)  # 1.43980 J
    assert first.mean_rate_bps == pytest.approx(8e6 / 0.639797, rel=1e-5)
    assert second.bits == pytest.approx(SENT_2_BITS, rel=1e-5) and second.seconds == 0.25
    assert second.energy_j == pytest.approx(1.0 * 0.25 + 0.1 * 2.802369, rel=1e-5)  # 0.53024 J


def test_energy_with_a_capped_power_follows_each_rate_and_is_not_the_solo_rate():
    # 1 W + 0.5 W per Mb/s, at most 7 W: 6.6047 W at 11.209 Mb/s (under the cap), 7 W at 13.334 Mb/s (capped).
    first, second = two_join_one_leaves(RadioPower(1.0, 0.5, 7.0))
    expected = 6.604737 * 0.25 + 7.0 * (0.639797 - 0.25)  # 4.37976 J
    assert first.energy_j == pytest.approx(expected, rel=1e-5)
    # Charged at the rate it started alone with (13.334 Mb/s, 7 W) for the whole transfer: 4.4786 J.
    assert first.energy_j != pytest.approx(7.0 * 0.639797, rel=1e-3)
    assert second.energy_j == pytest.approx(6.604737 * 0.25, rel=1e-5)


def test_a_link_with_no_signal_keeps_its_radio_on_at_base_power():
    band = SharedBand(B, NF)
    band.start(1, BITS, P, np.inf, now=0.0, power=RadioPower(0.8, 0.1, 3.0))
    stalled = band.remove(1, now=10.0)
    assert (stalled.bits, stalled.seconds, stalled.energy_j) == (0.0, 10.0, pytest.approx(8.0))


def test_a_busy_random_band_conserves_bits_air_time_and_linear_energy():
    """2000 transfers of random sizes and links start at random times; some are cut short five starts later.
    Whatever the rates were, each Delivery must satisfy: air time = end - start, completed bits = size, cut
    bits below it, and with a linear, uncapped power, energy = base x air time + slope x bits."""
    rng = np.random.default_rng(0)
    starts = np.sort(rng.uniform(0, 60, 2000))
    sizes = rng.uniform(1e6, 1e7, 2000)
    losses = rng.uniform(100, 125, 2000)
    power = RadioPower(0.5, 0.02, 1e3)
    band = SharedBand(B, NF)
    ends, deliveries = {}, {}

    def finish(t):
        transfer, delivery = band.complete(t)
        ends[transfer], deliveries[transfer] = t, delivery

    for i, (t, bits, loss) in enumerate(zip(starts, sizes, losses)):
        while (nxt := band.next_completion()) is not None and nxt[0] <= t:
            finish(nxt[0])
        band.start(i, bits, P, loss, now=t, power=power)
        if i % 10 == 5 and i - 5 in band:
            ends[i - 5], deliveries[i - 5] = t, band.remove(i - 5, now=t)
    while (nxt := band.next_completion()) is not None:
        finish(nxt[0])
    assert len(deliveries) == 2000 and band.active == 0
    ids = np.arange(2000)
    bits = np.array([deliveries[i].bits for i in ids])
    air = np.array([deliveries[i].seconds for i in ids])
    energy = np.array([deliveries[i].energy_j for i in ids])
    cut = bits < sizes
    assert 50 < cut.sum() <= 200 and (bits[cut] > 0).all()
    np.testing.assert_array_equal(bits[~cut], sizes[~cut])
    np.testing.assert_allclose(air, np.array([ends[i] for i in ids]) - starts, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(energy, 0.5 * air + 0.02 * bits / 1e6, rtol=1e-7)


# --- downlink: one base station power split over the OFDMA slices ---------------------------------------------
# 46 dBm over 121.3 dB: received -75.3 dBm, SNR over 20 MHz = -75.3 + 95.99 = 20.69 dB = 117.21.
# Split (REFERENCE.md: each of 10 slices gets P/10 on B/10): SNR stays 117.21, rate 2e6 log2(118.21) = 13.770 Mb/s.
# Unsplit (each slice the full 46 dBm on 2 MHz): SNR 1172.1, 2e6 log2(1173.1) = 20.392 Mb/s.
BS_DBM = 46.0


def test_split_downlink_power_keeps_each_devices_snr_independent_of_the_number_served():
    split, unsplit = SharedBand(B, NF, split_power=True), SharedBand(B, NF)
    for band in (split, unsplit):
        for i in range(10):
            band.start(i, BITS, BS_DBM, LOSS, now=0.0)
    assert split.rate_bps(0) == pytest.approx(13.770e6, rel=1e-4)
    assert unsplit.rate_bps(0) == pytest.approx(20.392e6, rel=1e-4)
    assert split.rate_bps(0) < unsplit.rate_bps(0)


def test_split_power_alone_is_the_whole_band_and_tdma_is_unchanged():
    # One device: the whole budget on the whole band, 20e6 log2(118.21) = 137.70 Mb/s, split or not.
    alone = SharedBand(B, NF, split_power=True)
    alone.start(1, BITS, BS_DBM, LOSS, now=0.0)
    assert alone.rate_bps(1) == pytest.approx(137.70e6, rel=1e-4)
    # TDMA already gives each turn the full power on the full band: 137.70 / 10 = 13.770 Mb/s either way.
    for split_power in (True, False):
        band = SharedBand(B, NF, "tdma", split_power=split_power)
        for i in range(10):
            band.start(i, BITS, BS_DBM, LOSS, now=0.0)
        assert band.rate_bps(0) == pytest.approx(13.770e6, rel=1e-4)


# --- interference adds to the noise density ---------------------------------------------------------------------
# Noise density N0 = -174 + 5 = -169 dBm/Hz = 1.2589e-17 mW/Hz. An interference density equal to it halves the SNR:
# 0.58745 / 2 = 0.29372, and alone on 20 MHz the worked example link gets 20e6 log2(1.29372) = 7.4306 Mb/s.
N0_MW_PER_HZ = 1.258925e-17


@pytest.mark.parametrize("scheme, hand_bps", [("ofdma", 7.4306e6), ("tdma", 7.4306e6)])
def test_interference_equal_to_the_noise_halves_the_sinr(scheme, hand_bps):
    band = SharedBand(B, NF, scheme)
    band.start(1, BITS, P, LOSS, now=0.0, interference_mw_per_hz=N0_MW_PER_HZ)
    assert band.rate_bps(1) == pytest.approx(hand_bps, rel=1e-4)


def test_interference_on_an_ofdma_share():
    # Two on 10 MHz each; the first with I = N0: SINR 1.1749 / 2 = 0.58745, 10e6 log2(1.58745) = 6.6671 Mb/s.
    band = SharedBand(B, NF)
    band.start(1, BITS, P, LOSS, now=0.0, interference_mw_per_hz=N0_MW_PER_HZ)
    band.start(2, BITS, P, LOSS, now=0.0)
    assert band.rate_bps(1) == pytest.approx(6.6671e6, rel=1e-4)
    assert band.rate_bps(2) == pytest.approx(TWO_OFDMA_BPS, rel=1e-4)
