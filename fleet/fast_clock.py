"""The systems-only clock as one compiled event loop: every session of every cell advanced by the same story as
fleet/emulator.py tells with a SimPy process each, at a few hundred nanoseconds an event instead of tens of
microseconds.

A session is a row of two tables (floats and integers, the columns below); its story is the emulator's:
download, train, upload, then the cell's backhaul, unless its hazard (offline or failure), its battery cutoff
or the server's close ends it first. Links are those of fleet/cells.py: a cell's shared band (the fluid of
network_models/sharing.py, its members in slots of the band's own, with the same arithmetic and slot order), and
timed links whose duration is known when a transfer starts (the sites' backhaul, a recorded trace, a cell's
broadcast). Events are kept in one heap ordered by (time, order of scheduling), the order SimPy keeps; a
band's completion timer is superseded by a newer generation whenever the band changes, as in CellLink.

The server stays in Python (fleet/fast_emulator.py): it starts sessions, runs the loop until a synchronous
round closes or (asynchronous servers) until sessions end, and cuts whoever is still at work.

A device's charging all through a session follows from its availability model
(`Availability.plugged_while_available`): plugged in exactly while available, that is from the session's start
until its `offline_after`, or never.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from network_models import RateTrace

# Float columns of a session. Inputs, set when it starts:
(T_START, HAZARD_AT, DEADLINE, DN_BITS, DN_SIG, DN_DUR, DN_AIR, DN_BASE, DN_SLOPE, DN_MAX, UP_BITS, UP_SIG,
 UP_DUR, UP_AIR, UP_BASE, UP_SLOPE, UP_MAX, UP_OFFSET, TRAIN, UP_EST, COMPUTE_W, CHARGER_W, PLUGGED_UNTIL,
 BACKHAUL_S,
 # the transfer (or training) under way:
 X_START, X_BITS, X_LEFT, X_AIR, X_ENERGY, X_SIG, X_BASE, X_SLOPE, X_MAX, X_DUR, X_SHARE,
 # what the session records (SessionLog's columns):
 T_END, DOWNLOAD_S, TRAIN_S, UPLOAD_S, BYTES_DOWN_AIR, ENERGY, UP_MBPS, DN_MBPS, CHARGE_START, CHARGE_END,
 NF) = range(46)
# Integer columns.
(DEVICE, CELL, KEY, DN_KIND, UP_KIND, DN_OUT, UP_OUT, AT_SITE, STEPS, PARTIAL, HAZARD_REASON, BASE_VERSION,
 PHASE, OUTCOME, SERIAL, ALIVE, POS, BATTERY_GEN, X_BAND, BYTES_DOWN, BYTES_UP, BYTES_UP_AIR, STEPS_OUT,
 STALENESS, NI) = range(25)

# Links: a cell's shared band, or a link whose duration is known at the start (backhaul, trace or broadcast
# downloads; backhaul uploads), or an upload over a recorded trace, timed when it starts.
BAND, TIMED, TRACE = 0, 1, 2
# Phases, as fleet.emulator names them; outcomes are fleet.emulator.OUTCOMES' indices.
PHASES = ("download", "train", "upload", "backhaul", "done")
DOWNLOAD, TRAINING, UPLOAD, BACKHAUL, DONE = range(5)
COMPLETED, OFFLINE, FAILURE, BATTERY, OUTAGE, MISSED, SURPLUS, STALE = range(8)

# Events: a session's own timer (its phase ends), its hazard, its battery cutoff, a band's next completion.
EV_STEP, EV_HAZARD, EV_BATTERY, EV_BAND = range(4)
# Why the loop returned.
RUN_EMPTY, RUN_STOP_AT, RUN_ENOUGH, RUN_ALL_ENDED, RUN_ENDED, RUN_GROW = range(6)

# Globals (int64): heap size, scheduling counter, ended sessions listed, sessions alive, arrivals, and the
# counter that makes each battery timer's generation unique.
G_HEAP, G_SEQ, G_ENDED, G_ALIVE, G_ARRIVED, G_BATTERY, NG = range(7)
# Band columns: floats (its clock, width Hz) and integers (members, first slot, timer generation, TDMA, split
# power, joined by sessions that started together and not yet shared).
B_NOW, B_HZ, NBF = range(3)
B_N, B_OFF, B_GEN, B_TDMA, B_SPLIT, B_DIRTY, NBI = range(7)

SLACK_EVENTS = 64


@numba.njit(cache=True)
def _before(ht, hq, i, j):
    return ht[i] < ht[j] or (ht[i] == ht[j] and hq[i, 0] < hq[j, 0])


@numba.njit(cache=True)
def _swap(ht, hq, i, j):
    ht[i], ht[j] = ht[j], ht[i]
    for c in range(4):
        hq[i, c], hq[j, c] = hq[j, c], hq[i, c]


@numba.njit(cache=True)
def _push(ht, hq, g, t, kind, a, b):
    i = g[G_HEAP]
    g[G_HEAP] += 1
    ht[i] = t
    hq[i, 0] = g[G_SEQ]
    g[G_SEQ] += 1
    hq[i, 1], hq[i, 2], hq[i, 3] = kind, a, b
    while i > 0:
        parent = (i - 1) // 2
        if not _before(ht, hq, i, parent):
            break
        _swap(ht, hq, i, parent)
        i = parent


@numba.njit(cache=True)
def _pop(ht, hq, g):
    """Take the earliest event out of the heap; it is left at index n (just past the heap)."""
    n = g[G_HEAP] - 1
    g[G_HEAP] = n
    _swap(ht, hq, 0, n)
    i = 0
    while True:
        left, right, low = 2 * i + 1, 2 * i + 2, i
        if left < n and _before(ht, hq, left, low):
            low = left
        if right < n and _before(ht, hq, right, low):
            low = right
        if low == i:
            return n
        _swap(ht, hq, i, low)
        i = low


@numba.njit(cache=True)
def _tolerance(now):
    return 1e-9 * max(1.0, abs(now))


@numba.njit(cache=True)
def _watts(base, slope, top, rate):
    return min(base + slope * rate, top)


# --- a cell's shared band: network_models.SharedBand over member slots -------------------------------------
# A band's members lie in its own run of slots with their columns side by side (bm), so that sharing the band
# anew reads one contiguous block, whatever the sessions' order in the tables.
(M_LEFT, M_RATE, M_AIR, M_ENERGY, M_SIG, M_SE, M_BASE, M_SLOPE, M_MAX, NM) = range(10)


@numba.njit(cache=True)
def _wait(left, rate):
    return 0.0 if left <= 0 else (left / rate if rate > 0 else np.inf)


@numba.njit(cache=True)
def _band_advance(bf, bi, bm, b, now):
    """Send, and draw radio power, at current rates from the band's last change until `now`; returns
    (member, time) of the next completion at those rates, (-1, inf) if none will come."""
    n, off = bi[b, B_N], bi[b, B_OFF]
    elapsed = max(now - bf[b, B_NOW], 0.0) if n else 0.0
    bf[b, B_NOW] = max(now, bf[b, B_NOW])
    best, wait_best = -1, np.inf
    for k in range(off, off + n):
        rate = bm[k, M_RATE]
        left = max(bm[k, M_LEFT] - rate * elapsed, 0.0)
        bm[k, M_LEFT] = left
        if elapsed > 0:
            bm[k, M_ENERGY] += _watts(bm[k, M_BASE], bm[k, M_SLOPE], bm[k, M_MAX], rate) * elapsed
            bm[k, M_AIR] += elapsed
        wait = _wait(left, rate)
        if wait < wait_best:
            best, wait_best = k - off, wait
    return (best, bf[b, B_NOW] + wait_best) if best >= 0 else (-1, np.inf)


@numba.njit(cache=True)
def _band_rates(bf, bi, bm, b):
    """Share the band equally among its members (OFDMA slices or TDMA time); returns (member, time) of the
    next completion. Where the SINR does not depend on the share (a split downlink, TDMA), each member's
    spectral efficiency was computed once, when it joined (M_SE)."""
    n, off = bi[b, B_N], bi[b, B_OFF]
    if n == 0:
        return -1, np.inf
    hz, tdma = bf[b, B_HZ], bi[b, B_TDMA]
    width = hz if tdma else hz / n
    fixed = tdma or bi[b, B_SPLIT]
    best, wait_best = -1, np.inf
    for k in range(off, off + n):
        rate = width * (bm[k, M_SE] if fixed else math.log2(1.0 + bm[k, M_SIG] / width))
        if tdma:
            rate /= n
        bm[k, M_RATE] = rate
        wait = _wait(bm[k, M_LEFT], rate)
        if wait < wait_best:
            best, wait_best = k - off, wait
    return (best, bf[b, B_NOW] + wait_best) if best >= 0 else (-1, np.inf)


@numba.njit(cache=True)
def _band_timer(bi, ht, hq, g, b, k, t, now):
    """The band's completion timer, superseding the one before (CellLink._schedule)."""
    bi[b, B_GEN] += 1
    if k >= 0:
        _push(ht, hq, g, now + max(0.0, t - now), EV_BAND, b, bi[b, B_GEN])


@numba.njit(cache=True)
def _share(bf, bi, bm, ht, hq, g, b, now):
    """Share the band anew among its members and set its next completion."""
    k, t = _band_rates(bf, bi, bm, b)
    _band_timer(bi, ht, hq, g, b, k, t, now)


@numba.njit(cache=True)
def _band_join(bf, bi, bm, members, f, i, b, s, now):
    """Session s starts its transfer on band b (shared anew by the caller). Several joining in one instant
    send nothing in between, so the band is only advanced when time has passed."""
    if bi[b, B_N] == 0 or now > bf[b, B_NOW]:
        _band_advance(bf, bi, bm, b, now)
    k = bi[b, B_OFF] + bi[b, B_N]
    bi[b, B_N] += 1
    members[k] = s
    i[s, POS] = k - bi[b, B_OFF]
    i[s, X_BAND] = b
    bm[k, M_LEFT], bm[k, M_RATE], bm[k, M_AIR], bm[k, M_ENERGY] = f[s, X_BITS], 0.0, 0.0, 0.0
    bm[k, M_SIG] = f[s, X_SIG]
    bm[k, M_SE] = math.log2(1.0 + f[s, X_SIG] / bf[b, B_HZ])
    bm[k, M_BASE], bm[k, M_SLOPE], bm[k, M_MAX] = f[s, X_BASE], f[s, X_SLOPE], f[s, X_MAX]


@numba.njit(cache=True)
def _band_leave(bi, bm, members, f, i, b, k):
    """Member k leaves with what it sent and drew (into X_LEFT, X_AIR, X_ENERGY); the last member moves into
    its place (SharedBand._pop). Returns its session."""
    off, last = bi[b, B_OFF], bi[b, B_N] - 1
    s = members[off + k]
    f[s, X_LEFT], f[s, X_AIR], f[s, X_ENERGY] = bm[off + k, M_LEFT], bm[off + k, M_AIR], bm[off + k, M_ENERGY]
    if k != last:
        moved = members[off + last]
        members[off + k] = moved
        i[moved, POS] = k
        bm[off + k, :] = bm[off + last, :]
    bi[b, B_N] = last
    i[s, X_BAND] = -1
    return s


# --- a session's story ----------------------------------------------------------------------------------

@numba.njit(cache=True)
def _level(charge, capacity, d):
    return charge[d] / capacity[d] if np.isfinite(capacity[d]) else np.nan


@numba.njit(cache=True)
def _drain(f, i, charge, s, energy):
    f[s, ENERGY] += energy
    charge[i[s, DEVICE]] -= energy / 3600.0


@numba.njit(cache=True)
def _arm_battery(f, i, ht, hq, g, charge, capacity, cutoff, s, now, power_w):
    """The instant the battery reaches its cutoff drawing `power_w` from now (Fleet.seconds_to_cutoff)."""
    i[s, BATTERY_GEN] = -1
    d = i[s, DEVICE]
    if not np.isfinite(capacity[d]):
        return
    if now < f[s, PLUGGED_UNTIL]:
        power_w -= f[s, CHARGER_W]
    if power_w <= 0:
        return
    budget = max(0.0, (charge[d] - cutoff * capacity[d]) * 3600.0 / power_w)
    g[G_BATTERY] += 1
    i[s, BATTERY_GEN] = g[G_BATTERY]
    _push(ht, hq, g, now + budget, EV_BATTERY, s, g[G_BATTERY])


@numba.njit(cache=True)
def _end(f, i, g, ended, charge, capacity, s, now, outcome):
    i[s, OUTCOME] = outcome
    i[s, ALIVE] = 0
    i[s, BATTERY_GEN] = -1
    f[s, T_END] = now
    f[s, CHARGE_END] = _level(charge, capacity, i[s, DEVICE])
    ended[g[G_ENDED]] = s
    g[G_ENDED] += 1
    g[G_ALIVE] -= 1


@numba.njit(cache=True)
def _book(f, i, charge, s, bits, seconds, energy):
    """What a transfer moved, in how long, and its radio energy (Emulator._book)."""
    nbytes = np.rint(bits / 8.0)
    rate = bits / seconds / 1e6 if seconds > 0 else np.nan
    if i[s, PHASE] == DOWNLOAD:
        i[s, BYTES_DOWN] = int(nbytes)
        f[s, DN_MBPS] = rate
        f[s, BYTES_DOWN_AIR] = nbytes * f[s, X_SHARE]
        f[s, DOWNLOAD_S] += seconds
    else:
        i[s, BYTES_UP] = int(nbytes)
        f[s, UP_MBPS] = rate
        i[s, BYTES_UP_AIR] = int(np.rint(nbytes * f[s, X_SHARE]))
        f[s, UPLOAD_S] += seconds
    _drain(f, i, charge, s, energy)


@numba.njit(cache=True)
def _trace_time(starts, rates, delivered, period, bits, start_s):
    """RateTrace.transfer_time_s."""
    if bits == 0:
        return 0.0
    loop_bits = delivered[-1]
    phase = start_s % period
    k = np.searchsorted(starts, phase, side="right") - 1
    target = delivered[k] + rates[k] * (phase - starts[k]) + bits
    if not np.isfinite(target / loop_bits):
        return np.inf
    loops = math.ceil(target / loop_bits) - 1
    rest = min(max(target - loops * loop_bits, 0.0), loop_bits)
    j = max(np.searchsorted(delivered, rest, side="left") - 1, 0)
    while rates[j] == 0:
        j += 1
    segment_end = starts[j + 1] if j + 1 < len(starts) else period
    end = min(starts[j] + (rest - delivered[j]) / rates[j], segment_end)
    return max(loops * period + end - phase, 0.0)


@numba.njit(cache=True)
def _send(f, i, bf, bi, bm, members, ht, hq, g, charge, capacity, cutoff, trace, s, now, up, share_now=True):
    """Start the session's download (up False) or upload over its link; refused in outage. Without
    `share_now` the band is only marked (B_DIRTY), for `start_sessions` to share once: many joining in the same
    instant send nothing in between, so only the last sharing counts."""
    i[s, PHASE] = UPLOAD if up else DOWNLOAD
    if i[s, UP_OUT if up else DN_OUT]:
        return False
    kind = i[s, UP_KIND if up else DN_KIND]
    f[s, X_BITS] = f[s, UP_BITS if up else DN_BITS]
    f[s, X_SIG] = f[s, UP_SIG if up else DN_SIG]
    f[s, X_BASE] = f[s, UP_BASE if up else DN_BASE]
    f[s, X_SLOPE] = f[s, UP_SLOPE if up else DN_SLOPE]
    f[s, X_MAX] = f[s, UP_MAX if up else DN_MAX]
    f[s, X_SHARE] = f[s, UP_AIR if up else DN_AIR]
    f[s, X_START] = now
    if kind == BAND:
        b = 2 * i[s, CELL] + (1 if up else 0)
        _band_join(bf, bi, bm, members, f, i, b, s, now)
        if share_now:
            _share(bf, bi, bm, ht, hq, g, b, now)
        else:
            bi[b, B_DIRTY] = 1
    else:
        i[s, X_BAND] = -1
        if kind == TRACE:
            f[s, X_DUR] = _trace_time(trace[0], trace[1], trace[2], trace[3][0], f[s, X_BITS], now + f[s, UP_OFFSET])
        else:
            f[s, X_DUR] = f[s, UP_DUR if up else DN_DUR]
        _push(ht, hq, g, now + f[s, X_DUR], EV_STEP, s, i[s, SERIAL])
    _arm_battery(f, i, ht, hq, g, charge, capacity, cutoff, s, now, f[s, X_MAX])
    return True


@numba.njit(cache=True)
def _timed_delivery(f, s, elapsed):
    """(bits, seconds, joules) of a timed transfer after `elapsed` s, prorated at its mean rate."""
    duration, bits = f[s, X_DUR], f[s, X_BITS]
    seconds = min(max(elapsed, 0.0), duration)
    sent = bits if seconds >= duration else bits * seconds / duration
    mean_rate = bits / duration if duration > 0 else 0.0
    return sent, seconds, _watts(f[s, X_BASE], f[s, X_SLOPE], f[s, X_MAX], mean_rate) * seconds


@numba.njit(cache=True)
def _train(f, i, ht, hq, g, charge, capacity, cutoff, s, now):
    """Local steps, and under partial work only those that leave time for the upload (Emulator._local_work)."""
    i[s, PHASE] = TRAINING
    steps, seconds = i[s, STEPS], f[s, TRAIN]
    if i[s, PARTIAL] and np.isfinite(f[s, DEADLINE]):
        step_s = seconds / steps
        fit = int((f[s, DEADLINE] - now - f[s, UP_EST]) // step_s)
        if 1 <= fit < steps:
            steps, seconds = fit, fit * step_s
    i[s, STEPS_OUT] = steps
    f[s, X_START] = now
    _push(ht, hq, g, now + seconds, EV_STEP, s, i[s, SERIAL])
    _arm_battery(f, i, ht, hq, g, charge, capacity, cutoff, s, now, f[s, COMPUTE_W])


@numba.njit(cache=True)
def _arrive(f, i, g, ended, charge, capacity, s, now, version, max_staleness):
    """The update reached the server: kept, or too stale for the strategy."""
    if max_staleness >= 0 and version - i[s, BASE_VERSION] > max_staleness:
        _end(f, i, g, ended, charge, capacity, s, now, STALE)
        return
    i[s, STALENESS] = version - i[s, BASE_VERSION]
    i[s, PHASE] = DONE
    g[G_ARRIVED] += 1
    _end(f, i, g, ended, charge, capacity, s, now, COMPLETED)


@numba.njit(cache=True)
def _uploaded(f, i, ht, hq, g, ended, charge, capacity, s, now, version, max_staleness):
    if i[s, AT_SITE]:
        _arrive(f, i, g, ended, charge, capacity, s, now, version, max_staleness)
    else:
        i[s, PHASE] = BACKHAUL
        _push(ht, hq, g, now + f[s, BACKHAUL_S], EV_STEP, s, i[s, SERIAL])


@numba.njit(cache=True)
def _step(f, i, bf, bi, bm, members, ht, hq, g, ended, charge, capacity, cutoff, trace, s, now, version,
          max_staleness):
    """The session's own timer fired: its timed transfer, its training or its backhaul is through."""
    phase = i[s, PHASE]
    if phase == TRAINING:
        seconds = now - f[s, X_START]
        f[s, TRAIN_S] += seconds
        _drain(f, i, charge, s, f[s, COMPUTE_W] * seconds)
        i[s, BATTERY_GEN] = -1
        if not _send(f, i, bf, bi, bm, members, ht, hq, g, charge, capacity, cutoff, trace, s, now, True):
            _end(f, i, g, ended, charge, capacity, s, now, OUTAGE)
    elif phase == BACKHAUL:
        _arrive(f, i, g, ended, charge, capacity, s, now, version, max_staleness)
    else:  # a timed transfer
        bits, seconds, energy = _timed_delivery(f, s, f[s, X_DUR])
        _book(f, i, charge, s, bits, seconds, energy)
        i[s, BATTERY_GEN] = -1
        if phase == DOWNLOAD:
            _train(f, i, ht, hq, g, charge, capacity, cutoff, s, now)
        else:
            _uploaded(f, i, ht, hq, g, ended, charge, capacity, s, now, version, max_staleness)


@numba.njit(cache=True)
def _cut(f, i, bf, bi, bm, members, ht, hq, g, ended, charge, capacity, s, now, outcome):
    """End a session at `now` for `outcome`: what its transfer had sent, or its training had drawn, counts."""
    phase = i[s, PHASE]
    if phase == TRAINING:
        seconds = now - f[s, X_START]
        f[s, TRAIN_S] += seconds
        _drain(f, i, charge, s, f[s, COMPUTE_W] * seconds)
    elif phase == DOWNLOAD or phase == UPLOAD:
        b = i[s, X_BAND]
        if b >= 0:
            _band_advance(bf, bi, bm, b, now)
            _band_leave(bi, bm, members, f, i, b, i[s, POS])
            _share(bf, bi, bm, ht, hq, g, b, now)
            _book(f, i, charge, s, f[s, X_BITS] - f[s, X_LEFT], f[s, X_AIR], f[s, X_ENERGY])
        else:
            bits, seconds, energy = _timed_delivery(f, s, now - f[s, X_START])
            _book(f, i, charge, s, bits, seconds, energy)
    _end(f, i, g, ended, charge, capacity, s, now, outcome)


@numba.njit(cache=True)
def _band_event(f, i, bf, bi, bm, members, ht, hq, g, ended, charge, capacity, cutoff, trace, b, now, version,
                max_staleness, done):
    """Every transfer of the band due now finishes now (CellLink._finish); then each goes on with its story."""
    n_done = 0
    k, t = _band_advance(bf, bi, bm, b, now)
    while k >= 0 and t - now <= _tolerance(now):
        done[n_done] = _band_leave(bi, bm, members, f, i, b, k)
        n_done += 1
        k, t = _band_rates(bf, bi, bm, b)
    _band_timer(bi, ht, hq, g, b, k, t, now)
    for m in range(n_done):
        s = done[m]
        _book(f, i, charge, s, f[s, X_BITS], f[s, X_AIR], f[s, X_ENERGY])
        i[s, BATTERY_GEN] = -1
        if i[s, PHASE] == DOWNLOAD:
            _train(f, i, ht, hq, g, charge, capacity, cutoff, s, now)
        else:
            _uploaded(f, i, ht, hq, g, ended, charge, capacity, s, now, version, max_staleness)


@numba.njit(cache=True)
def start_sessions(f, i, bf, bi, bm, members, ht, hq, g, ended, charge, capacity, cutoff, trace, slots, now):
    """Sessions begin at `now`, in the order given: each arms its hazard and starts its download; then each
    band they joined is shared once among all its members."""
    for s in slots:
        i[s, ALIVE] = 1
        g[G_ALIVE] += 1
        f[s, CHARGE_START] = _level(charge, capacity, i[s, DEVICE])
        if np.isfinite(f[s, HAZARD_AT]):
            _push(ht, hq, g, f[s, HAZARD_AT], EV_HAZARD, s, i[s, SERIAL])
        if not _send(f, i, bf, bi, bm, members, ht, hq, g, charge, capacity, cutoff, trace, s, now, False, False):
            _end(f, i, g, ended, charge, capacity, s, now, OUTAGE)
    for s in slots:
        b = i[s, X_BAND]
        if b >= 0 and bi[b, B_DIRTY]:
            bi[b, B_DIRTY] = 0
            _share(bf, bi, bm, ht, hq, g, b, now)


@numba.njit(cache=True)
def cut_all(f, i, bf, bi, bm, members, ht, hq, g, ended, charge, capacity, slots, now, outcome):
    """The server closes: every listed session still alive ends now, for `outcome`."""
    for s in slots:
        if i[s, ALIVE]:
            _cut(f, i, bf, bi, bm, members, ht, hq, g, ended, charge, capacity, s, now, outcome)


@numba.njit(cache=True)
def run(f, i, bf, bi, bm, members, ht, hq, g, ended, charge, capacity, cutoff, trace, done, now, stop_at, enough,
        return_on_end, version, max_staleness):
    """Process events in order until: the next is at or after `stop_at` (RUN_STOP_AT); `enough` updates have
    arrived (RUN_ENOUGH, 0: never); nobody is at work (RUN_ALL_ENDED); with `return_on_end`, sessions ended and
    the clock is about to move on (RUN_ENDED); the heap may need room (RUN_GROW); or nothing is left to happen
    (RUN_EMPTY). Returns (why, the time it stopped at)."""
    now = -np.inf
    first_end = -1.0
    if return_on_end and g[G_ENDED] > 0:
        first_end = f[ended[0], T_END]
    while True:
        if g[G_ALIVE] == 0 and not return_on_end:
            return RUN_ALL_ENDED, now
        if g[G_HEAP] == 0:
            return RUN_EMPTY, now
        t = ht[0]
        if first_end >= 0 and t > first_end:
            return RUN_ENDED, first_end
        if t >= stop_at:
            return RUN_STOP_AT, stop_at
        if g[G_HEAP] + 4 * len(done) + SLACK_EVENTS > len(ht):
            return RUN_GROW, now
        top = _pop(ht, hq, g)
        kind, a, b = hq[top, 1], hq[top, 2], hq[top, 3]
        now = t
        # A timer outlived by what it was set for does nothing: a band changed since (generation), a session
        # ended (alive) or a slot now holding another (serial), a phase over (battery generation).
        if kind == EV_BAND:
            if b == bi[a, B_GEN]:
                _band_event(f, i, bf, bi, bm, members, ht, hq, g, ended, charge, capacity, cutoff, trace, a, now,
                            version, max_staleness, done)
        elif kind == EV_BATTERY:
            if i[a, ALIVE] and i[a, BATTERY_GEN] == b:
                _cut(f, i, bf, bi, bm, members, ht, hq, g, ended, charge, capacity, a, now, BATTERY)
        elif i[a, ALIVE] and i[a, SERIAL] == b:
            if kind == EV_STEP:
                _step(f, i, bf, bi, bm, members, ht, hq, g, ended, charge, capacity, cutoff, trace, a, now, version,
                      max_staleness)
            elif i[a, PHASE] <= UPLOAD:  # a hazard: leaving once the update is on the backhaul changes nothing
                _cut(f, i, bf, bi, bm, members, ht, hq, g, ended, charge, capacity, a, now, i[a, HAZARD_REASON])
        if enough and g[G_ARRIVED] >= enough:
            return RUN_ENOUGH, now
        if return_on_end and first_end < 0 and g[G_ENDED] > 0:
            first_end = now


class FastClock:
    """The loop's tables for one fleet's cells: sessions in reusable slots, the event heap, each cell's two
    bands (downlink 2c, uplink 2c + 1). Batteries are the fleet's own arrays, drained in place."""

    def __init__(self, cell: np.ndarray, charge_wh: np.ndarray, battery_wh: np.ndarray, cutoff_charge: float,
                 downlink_hz: float, uplink_hz: float, tdma: bool, uplink_trace: RateTrace | None):
        cells = int(cell.max()) + 1
        room = np.bincount(cell, minlength=cells)  # a band holds at most its cell's devices
        self.bf = np.zeros((2 * cells, NBF))
        self.bf[:, B_NOW] = -np.inf
        self.bf[0::2, B_HZ], self.bf[1::2, B_HZ] = downlink_hz, uplink_hz
        self.bi = np.zeros((2 * cells, NBI), dtype=np.int64)
        self.bi[:, B_OFF] = np.concatenate([[0], np.cumsum(np.repeat(room, 2))[:-1]])
        self.bi[:, B_TDMA] = tdma
        self.bi[0::2, B_SPLIT] = 1  # a base station splits its one power budget over the downlink
        self.members = np.empty(2 * len(cell), dtype=np.int64)
        self.bm = np.zeros((2 * len(cell), NM))
        self.done = np.empty(max(1, int(room.max())), dtype=np.int64)
        self.charge, self.capacity, self.cutoff = charge_wh, battery_wh, float(cutoff_charge)
        if uplink_trace is None:
            self.trace = (np.zeros(1), np.zeros(1), np.zeros(1), np.ones(1))
        else:
            self.trace = (uplink_trace.starts_s, uplink_trace.rates_bps, uplink_trace.delivered_bits,
                          np.array([uplink_trace.period_s]))
        self.f = np.zeros((0, NF))
        self.i = np.zeros((0, NI), dtype=np.int64)
        self.ended = np.zeros(0, dtype=np.int64)
        self.ht = np.zeros(SLACK_EVENTS)
        self.hq = np.zeros((SLACK_EVENTS, 4), dtype=np.int64)
        self.g = np.zeros(NG, dtype=np.int64)
        self._free = np.zeros(0, dtype=np.int64)  # a stack: the next slot handed out is the last
        self._serial = 0

    def allocate(self, n: int) -> np.ndarray:
        """n free session slots, emptied, with new serial numbers (which tell a slot's timers from those of the
        sessions it held before); the tables grow when full."""
        free = len(self._free)
        if free < n:
            old = len(self.f)
            size = max(old + n - free, 2 * old)
            self.f = np.concatenate([self.f, np.zeros((size - old, NF))])
            self.i = np.concatenate([self.i, np.zeros((size - old, NI), dtype=np.int64)])
            self.ended = np.zeros(size, dtype=np.int64)  # emptied by take_ended before any growth
            self._free = np.concatenate([np.arange(size - 1, old - 1, -1), self._free])
            self._grow_heap(16 * size)
        slots, self._free = self._free[len(self._free) - n:][::-1], self._free[:len(self._free) - n]
        self.f[slots] = 0.0
        self.i[slots] = 0
        self.i[slots, SERIAL] = np.arange(self._serial, self._serial + n)
        self._serial += n
        return slots

    def start(self, slots: np.ndarray, now: float) -> None:
        start_sessions(self.f, self.i, self.bf, self.bi, self.bm, self.members, self.ht, self.hq, self.g, self.ended,
                       self.charge, self.capacity, self.cutoff, self.trace, slots, now)

    def run(self, now: float, stop_at: float = np.inf, enough: int = 0, return_on_end: bool = False,
            version: int = 0, max_staleness: int = -1) -> tuple[int, float]:
        """`run` (the compiled loop) from `now`, growing the heap when it asks for room."""
        while True:
            why, t = run(self.f, self.i, self.bf, self.bi, self.bm, self.members, self.ht, self.hq, self.g, self.ended,
                         self.charge, self.capacity, self.cutoff, self.trace, self.done, now, stop_at, enough,
                         return_on_end, version, max_staleness)
            if why != RUN_GROW:
                return why, t
            self._grow_heap(2 * len(self.ht))
            now = t

    def cut(self, slots: np.ndarray, now: float, outcome: int) -> None:
        cut_all(self.f, self.i, self.bf, self.bi, self.bm, self.members, self.ht, self.hq, self.g, self.ended,
                self.charge, self.capacity, slots, now, outcome)

    def take_ended(self) -> np.ndarray:
        """The slots of the sessions ended since the last call, in the order they ended; they become free once
        the caller has read them (`release`)."""
        slots = self.ended[: self.g[G_ENDED]].copy()
        self.g[G_ENDED] = 0
        return slots

    def release(self, slots: np.ndarray) -> None:
        self._free = np.concatenate([self._free, slots[::-1]])

    def clear_timers(self) -> None:
        """Forget every pending event (a synchronous round closed: whatever is left was of its sessions)."""
        self.g[G_HEAP] = 0
        self.g[G_ARRIVED] = 0

    def _grow_heap(self, size: int) -> None:
        if size > len(self.ht):
            n = self.g[G_HEAP]
            ht, hq = np.zeros(size), np.zeros((size, 4), dtype=np.int64)
            ht[:n], hq[:n] = self.ht[:n], self.hq[:n]
            self.ht, self.hq = ht, hq
