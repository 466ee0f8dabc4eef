"""The SimPy side of the cells' links: each transfer's event carries its Delivery (bits, air time, energy)."""

import numpy as np
import pytest
import simpy

from fleet.cells import CellLink, Multicast, TraceLink
from network_models import Delivery, RadioPower, RateTrace, SharedBand

B, NF, P, LOSS = 20e6, 5.0, 23.0, 121.3  # REFERENCE.md section 5's worked example link
BITS = 8e6
RADIO = RadioPower(1.0, 0.1, 10.0)  # 1 W + 0.1 W per Mb/s

# By hand (REFERENCE.md's numbers): SNR over 20 MHz 0.58745; alone 20e6 log2(1.58745) = 13.334 Mb/s; two on OFDMA
# 10 MHz each, SNR 1.1749, 10e6 log2(2.1749) = 11.209 Mb/s. Two 1 MB uploads starting together finish together at
# 8e6 / 11.209e6 = 0.71368 s, each drawing 1 + 1.1209 = 2.1209 W all along: 1.5137 J. Charged at the rate the
# first had alone when it started (13.334 Mb/s, 2.3334 W) it would be 1.6653 J.
TOGETHER_S = 0.713682
TOGETHER_J = 1.513682


def run(env, events):
    """Run the clock out; the events' values, and when each fired (the clock runs on through stale timers)."""
    fired = {}
    for event in events:
        event.callbacks.append(lambda e: fired.setdefault(id(e), env.now))
    env.run()
    return [event.value for event in events], [fired[id(event)] for event in events]


def test_two_sends_in_one_instant_share_the_band_and_the_first_is_charged_the_shared_rate():
    env = simpy.Environment()
    link = CellLink(env, SharedBand(B, NF))
    first = link.send(1, BITS, P, LOSS, RADIO)
    second = link.send(2, BITS, P, LOSS, RADIO)
    deliveries, times = run(env, [first, second])
    assert times == [pytest.approx(TOGETHER_S, rel=1e-5)] * 2
    for delivery in deliveries:
        assert isinstance(delivery, Delivery)
        assert delivery.bits == BITS and delivery.seconds == pytest.approx(TOGETHER_S, rel=1e-5)
        assert delivery.energy_j == pytest.approx(TOGETHER_J, rel=1e-5)
        assert delivery.mean_rate_bps == pytest.approx(11.2095e6, rel=1e-4)


def test_cancel_returns_what_went_through_and_speeds_up_the_others():
    env = simpy.Environment()
    link = CellLink(env, SharedBand(B, NF))
    first = link.send(1, BITS, P, LOSS, RADIO)
    link.send(2, BITS, P, LOSS, RADIO)
    cut = []
    env.timeout(0.25).callbacks.append(lambda _: cut.append(link.cancel(2)))
    (delivery,), (finished,) = run(env, [first])
    # 0.25 s at 11.209 Mb/s: 2.8024 Mb for 1 x 0.25 + 0.1 x 2.8024 = 0.53024 J. The first sends its remaining
    # 5.1976 Mb alone at 13.334 Mb/s (0.38980 s): done at 0.63980 s, 1 x 0.63980 + 0.1 x 8 = 1.43980 J.
    assert cut[0].bits == pytest.approx(2.80237e6, rel=1e-5) and cut[0].seconds == pytest.approx(0.25)
    assert cut[0].energy_j == pytest.approx(0.530237, rel=1e-5)
    assert finished == pytest.approx(0.639797, rel=1e-5) and delivery.seconds == pytest.approx(0.639797, rel=1e-5)
    assert delivery.energy_j == pytest.approx(1.439797, rel=1e-5)
    assert link.cancel(2) == Delivery(0.0, 0.0, 0.0) and link.cancel(1) == Delivery(0.0, 0.0, 0.0)


def test_interference_slows_a_cell_link():
    # With an interference density equal to the noise (-169 dBm/Hz = 1.2589e-17 mW/Hz) the SNR halves to 0.29372:
    # 20e6 log2(1.29372) = 7.4306 Mb/s, so 1 MB takes 1.07662 s.
    env = simpy.Environment()
    link = CellLink(env, SharedBand(B, NF))
    (delivery,), (finished,) = run(env, [link.send(1, BITS, P, LOSS, RADIO, interference_mw_per_hz=1.258925e-17)])
    assert finished == pytest.approx(1.07662, rel=1e-4) and delivery.seconds == pytest.approx(1.07662, rel=1e-4)


def test_a_trace_link_charges_the_mean_rate_and_prorates_a_cancel():
    # 8 Mb/s for 1 s, then nothing for 1 s, looping. 12 Mb from phase 0.5 s: 4 Mb by 1 s, a dead second, 8 Mb by
    # 3 s: 2.5 s, a mean rate of 4.8 Mb/s, 1 + 0.48 = 1.48 W, 3.7 J.
    trace = RateTrace(np.array([0.0, 1.0]), np.array([8e6, 0.0]), period_s=2.0)
    env = simpy.Environment()
    link = TraceLink(env, trace, offsets_s=np.array([0.5, 0.5]))
    (delivery,), (finished,) = run(env, [link.send(0, 12e6, P, LOSS, RADIO)])
    assert finished == 2.5
    assert (delivery.bits, delivery.seconds) == (12e6, 2.5) and delivery.energy_j == pytest.approx(3.7)
    assert link.cancel(0) == Delivery(0.0, 0.0, 0.0)  # it was through
    # Cut after 1 s of 2.5: 1/2.5 of the bits (4.8 Mb) and of the energy (1.48 J).
    env = simpy.Environment()
    link = TraceLink(env, trace, offsets_s=np.array([0.5, 0.5]))
    link.send(1, 12e6, P, LOSS, RADIO)
    env.run(until=1.0)
    cut = link.cancel(1)
    assert cut.bits == pytest.approx(4.8e6) and cut.seconds == 1.0 and cut.energy_j == pytest.approx(1.48)


def test_a_multicast_gives_each_receiver_the_whole_broadcast_at_its_own_power():
    # 8 Mb at 4 Mb/s: 2 s. Receiver 1 at 1 + 0.1 x 4 = 1.4 W: 2.8 J; receiver 2 at 0.5 + 0.2 x 4 = 1.3 W: 2.6 J.
    env = simpy.Environment()
    cast = Multicast(env, BITS, 4e6, receivers=3)
    one = cast.send(1, BITS, 46.0, LOSS, RADIO)
    two = cast.send(2, BITS, 46.0, LOSS, RadioPower(0.5, 0.2, 5.0))
    three = cast.send(3, BITS, 46.0, LOSS, RADIO)
    cut = []
    env.timeout(0.5).callbacks.append(lambda _: cut.append(cast.cancel(3)))
    env.run()
    assert env.now == 2.0
    assert one.value == Delivery(BITS, 2.0, pytest.approx(2.8)) and two.value == Delivery(BITS, 2.0, pytest.approx(2.6))
    # Receiver 3 left after 0.5 s: a quarter of the broadcast, 0.5 s at 1.4 W; its event never fires.
    assert cut[0] == Delivery(2e6, 0.5, pytest.approx(0.7)) and not three.triggered
    assert cast.cancel(1) == Delivery(0.0, 0.0, 0.0)
