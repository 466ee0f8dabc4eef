"""Inter-cell interference as a density (mW/Hz) to add to a receiver's noise (REFERENCE.md section 5).

Scenario: every cell reuses the same band (frequency reuse 1), so a device hears the other base stations on its
downlink, and a base station hears the other cells' devices on its uplink. Rather than follow every
neighbour's transmissions, a load factor stands for them: each neighbour contributes its received power times
the fraction of time it transmits (`load`: 0 to 1, one value or one per cell). The result I is a power
spectral density, so a transfer's SINR on a share of width b is p g / ((N0 + I) b): pass it to
`SharedBand.start(..., interference_mw_per_hz=I)`.

- Downlink, at each device: a busy neighbour base station spreads its whole power P over the band, so it puts
  load x P x g(device, site) / B on every Hz.
- Uplink, at each base station: on any given resource a neighbour cell has one transmitter at a time, standing
  at a typical position of that cell; its received power is taken as the mean over that cell's devices of
  p_u x g(device, site), spread over the band. (An OFDMA neighbour whose n devices each keep their full power
  on B/n would put n times that density on the band; scale `load` if that is the case to model.)

Interfering paths are long and cross other cells' clutter, so the caller should pass an NLOS model
("uma_nlos", the default, or "umi_nlos" / "rma_nlos"); the same model's LOS variant would overstate them.

Only sites within `neighbours` times the typical spacing between neighbouring sites (the median distance from a
site to its nearest other site) count: 2.5 takes the first two hexagonal rings (18 sites) or 20 grid sites.
With UMa NLOS (received power falling as d^-3.9) the sites beyond add about 6 % (0.25 dB) more, downlink
and uplink, in the middle of a 1000-site hexagonal layout. Keeping the neighbour table small (cells x
neighbours, not devices x cells) and going through the devices in chunks keeps a million devices in a thousand
cells to about a second per direction and some 50 MB of working memory.

Units: metres, GHz, dBm, Hz, mW/Hz.
"""

from __future__ import annotations

import numpy as np

from network_models.pathloss import PathLossModel, path_loss_db

NEIGHBOUR_REACH = 2.5  # interfering sites lie within this many site spacings
_DEVICE_CHUNK = 1 << 15  # devices per vectorised step: (chunk x neighbours) arrays of a few MB each
_SITE_CHUNK = 1024  # sites per step when finding neighbours: (chunk x sites) distances


def downlink_interference_mw_per_hz(
    device_xy: np.ndarray, device_cell: np.ndarray, sites: np.ndarray, bs_power_dbm: float | np.ndarray,
    band_hz: float, carrier_ghz: float, load: float | np.ndarray, model: PathLossModel = "uma_nlos",
    neighbours: float = NEIGHBOUR_REACH,
) -> np.ndarray:
    """(N,) interference density in mW/Hz at each device from the base stations of the other cells.

    `device_xy` (N, 2) positions in m, `device_cell` (N,) the serving cell, `sites` (C, 2) the base stations,
    `bs_power_dbm` each station's power over the whole band (one value or (C,)), `load` the fraction of time
    each station transmits (one value or (C,)). One cell, or `load` 0, gives zeros.

    A device 500 m from the one other site, 46 dBm on 20 MHz, busy half the time:

    >>> xy, sites = np.array([[0.0, 0.0]]), np.array([[0.0, 0.0], [500.0, 0.0]])
    >>> i = downlink_interference_mw_per_hz(xy, np.array([0]), sites, 46.0, 20e6, 3.5, load=0.5)
    >>> round(float(10 * np.log10(i[0])), 1)  # dBm/Hz: 46 - 129.9 dB - 73 dB-Hz - 3 dB
    -159.9
    """
    xy, cell, sites = _checked_layout(device_xy, device_cell, sites)
    # What a busy neighbour puts on each Hz at 0 dB loss, times how often it is busy; 0 for the padding entry.
    weight = _per_site(load, len(sites), "load") * 10.0 ** (_per_site_dbm(bs_power_dbm, len(sites)) / 10.0)
    weight = np.append(weight / _checked_band(band_hz), 0.0)
    out = np.zeros(len(xy))
    if len(sites) < 2 or not weight.any():
        return out
    table = _neighbour_table(sites, neighbours)
    padded_sites = np.vstack([sites, sites[:1]])  # the padding index points here; its weight is 0
    for lo in range(0, len(xy), _DEVICE_CHUNK):
        hi = min(lo + _DEVICE_CHUNK, len(xy))
        others = table[cell[lo:hi]]  # (m, K) interfering sites of each device's cell
        gain = _path_gain(xy[lo:hi], padded_sites[others], model, carrier_ghz)
        out[lo:hi] = (weight[others] * gain).sum(axis=1)
    return out


def uplink_interference_mw_per_hz(
    device_xy: np.ndarray, device_cell: np.ndarray, tx_power_dbm: float | np.ndarray, sites: np.ndarray,
    band_hz: float, carrier_ghz: float, load: float | np.ndarray, model: PathLossModel = "uma_nlos",
    neighbours: float = NEIGHBOUR_REACH,
) -> np.ndarray:
    """(C,) interference density in mW/Hz at each base station from the devices of the other cells.

    `tx_power_dbm` is each device's transmit power (one value or (N,)); `load` the fraction of time each cell's
    uplink is busy (one value or (C,)). A neighbour cell counts as one transmitter whose received power is the
    mean over its devices (a cell without devices adds nothing). One cell, or `load` 0, gives zeros.
    """
    xy, cell, sites = _checked_layout(device_xy, device_cell, sites)
    n_cells = len(sites)
    load = _per_site(load, n_cells, "load")
    power_mw = 10.0 ** (np.broadcast_to(np.asarray(tx_power_dbm, dtype=float), (len(xy),)) / 10.0)
    if not np.isfinite(power_mw).all():
        raise ValueError("device transmit powers must be finite dBm")
    band_hz = _checked_band(band_hz)
    if n_cells < 2 or not load.any():
        return np.zeros(n_cells)
    table = _neighbour_table(sites, neighbours)
    width = table.shape[1]
    padded_sites = np.vstack([sites, sites[:1]])
    # received[j, k]: summed power, in mW, that cell j's devices put on its k-th neighbour site table[j, k].
    received = np.zeros(n_cells * width)
    slot = np.arange(width)
    for lo in range(0, len(xy), _DEVICE_CHUNK):
        hi = min(lo + _DEVICE_CHUNK, len(xy))
        own = cell[lo:hi]
        gain = _path_gain(xy[lo:hi], padded_sites[table[own]], model, carrier_ghz)
        where = (own[:, None] * width + slot).ravel()
        received += np.bincount(where, weights=(power_mw[lo:hi, None] * gain).ravel(), minlength=n_cells * width)
    devices = np.bincount(cell, minlength=n_cells)
    mean = received.reshape(n_cells, width) / np.maximum(devices, 1)[:, None]
    from_cell = mean * (load / band_hz)[:, None]
    # Neighbourhood is symmetric, so collecting what each cell sends to its neighbours is what each site hears.
    return np.bincount(table.ravel(), weights=from_cell.ravel(), minlength=n_cells + 1)[:n_cells]


def _neighbour_table(sites: np.ndarray, reach: float) -> np.ndarray:
    """(C, K) indices of the other sites within `reach` site spacings of each site, padded with C.

    The spacing is the median distance from a site to its nearest other site (the inter-site distance of a
    grid or hexagonal layout); a fixed radius keeps the relation symmetric (j hears c whenever c hears j).
    """
    if not (np.isfinite(reach) and reach > 0):
        raise ValueError(f"neighbour reach must be a positive number of site spacings, got {reach}")
    n = len(sites)
    nearest = np.empty(n)
    for lo, distance in _site_distances(sites):
        nearest[lo:lo + len(distance)] = distance.min(axis=1)
    # A relative slack so that sites exactly `reach` spacings away are not lost to rounding of the layout.
    radius = reach * float(np.median(nearest)) * (1.0 + 1e-9)
    rows, cols = [], []
    for lo, distance in _site_distances(sites):
        r, c = np.nonzero(distance <= radius)
        rows.append(r + lo)
        cols.append(c)
    row, col = np.concatenate(rows), np.concatenate(cols)  # row-major: each site's neighbours together
    counts = np.bincount(row, minlength=n)
    table = np.full((n, int(counts.max(initial=0))), n, dtype=np.int64)
    position = np.arange(len(row)) - np.repeat(np.cumsum(counts) - counts, counts)
    table[row, position] = col
    return table


def _site_distances(sites: np.ndarray):
    """(first row, distances from sites[first row:...] to every site) in chunks; a site's own entry is inf."""
    for lo in range(0, len(sites), _SITE_CHUNK):
        block = sites[lo:lo + _SITE_CHUNK]
        distance = np.hypot(block[:, None, 0] - sites[None, :, 0], block[:, None, 1] - sites[None, :, 1])
        distance[np.arange(len(block)), lo + np.arange(len(block))] = np.inf
        yield lo, distance


def _path_gain(xy: np.ndarray, site_xy: np.ndarray, model: PathLossModel, carrier_ghz: float) -> np.ndarray:
    """Linear path gain (m, K) from each of m devices at `xy` (m, 2) to its K sites `site_xy` (m, K, 2)."""
    distance = np.hypot(xy[:, None, 0] - site_xy[..., 0], xy[:, None, 1] - site_xy[..., 1])
    return 10.0 ** (-path_loss_db(model, distance, carrier_ghz) / 10.0)


def _checked_layout(device_xy, device_cell, sites) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xy = np.asarray(device_xy, dtype=float).reshape(-1, 2)
    cell = np.asarray(device_cell).reshape(-1)
    sites = np.asarray(sites, dtype=float).reshape(-1, 2)
    if len(sites) == 0:
        raise ValueError("no cell sites")
    if len(cell) != len(xy):
        raise ValueError(f"{len(xy)} device positions but {len(cell)} device cells")
    if not (np.isfinite(xy).all() and np.isfinite(sites).all()):
        raise ValueError("device and site positions must be finite")
    if len(cell) and (not np.issubdtype(cell.dtype, np.integer) or cell.min() < 0 or cell.max() >= len(sites)):
        raise ValueError(f"device cells must be integers in 0..{len(sites) - 1}")
    return xy, cell.astype(np.int64, copy=False), sites


def _checked_band(band_hz: float) -> float:
    if not (np.isfinite(band_hz) and band_hz > 0):
        raise ValueError(f"band must be positive, got {band_hz} Hz")
    return float(band_hz)


def _per_site(value: float | np.ndarray, n_cells: int, name: str) -> np.ndarray:
    """A value per cell, >= 0, from one value or (C,)."""
    out = np.broadcast_to(np.asarray(value, dtype=float), (n_cells,))
    if not (np.isfinite(out).all() and (out >= 0).all()):
        raise ValueError(f"{name} must be finite and >= 0 for every cell")
    return out


def _per_site_dbm(value: float | np.ndarray, n_cells: int) -> np.ndarray:
    out = np.broadcast_to(np.asarray(value, dtype=float), (n_cells,))
    if not np.isfinite(out).all():
        raise ValueError("base station powers must be finite dBm")
    return out
