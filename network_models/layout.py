"""Where the base stations stand and where the devices are dropped, in metres on a flat plane.

Scenario: `cell_sites` lays n base stations out `inter_site_m` metres apart, on a square grid or on the
hexagonal rings of cellular planning (one site in the middle, 6 around it, then 12, ...). `place_devices` drops
each device in a cell chosen uniformly at random, uniformly over the area of the disc of radius `cell_radius_m`
around that cell's site, but no closer than `min_distance_m` (TR 38.901 keeps devices at least 35 m from a
macro site). A device is served by the cell it was dropped in, even where discs overlap.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

Layout = Literal["grid", "hex"]


def cell_sites(n_cells: int, inter_site_m: float, layout: Layout = "hex") -> np.ndarray:
    """(n_cells, 2) site positions in metres; site 0 at the origin, neighbours `inter_site_m` apart.

    >>> cell_sites(4, 500.0, "grid")
    array([[  0.,   0.],
           [500.,   0.],
           [  0., 500.],
           [500., 500.]])
    """
    if n_cells < 1:
        raise ValueError(f"need at least one cell, got {n_cells}")
    if not inter_site_m > 0:
        raise ValueError(f"inter-site distance must be positive, got {inter_site_m} m")
    if layout == "grid":
        columns = math.ceil(math.sqrt(n_cells))
        index = np.arange(n_cells)
        return np.column_stack([index % columns, index // columns]).astype(float) * inter_site_m
    if layout == "hex":
        q, r = _hex_axial(n_cells)
        # Axial (q, r) to the plane: unit steps (1, 0) and (1/2, sqrt(3)/2), both of length one spacing.
        return np.column_stack([q + r / 2.0, r * math.sqrt(3.0) / 2.0]) * inter_site_m
    raise ValueError(f"unknown layout {layout!r}; choose 'grid' or 'hex'")


def _hex_axial(n_cells: int) -> tuple[np.ndarray, np.ndarray]:
    """Axial coordinates of the first n sites, ring by ring outward from the centre, each ring by angle."""
    # Ring k holds 6k sites, so this many rings hold at least n_cells.
    rings = 0
    while 1 + 3 * rings * (rings + 1) < n_cells:
        rings += 1
    q, r = (a.ravel().astype(float) for a in np.meshgrid(np.arange(-rings, rings + 1), np.arange(-rings, rings + 1)))
    ring = (np.abs(q) + np.abs(r) + np.abs(q + r)) / 2.0
    angle = np.mod(np.arctan2(r * math.sqrt(3.0) / 2.0, q + r / 2.0), 2.0 * np.pi)
    order = np.lexsort((angle, ring))[:n_cells]
    return q[order], r[order]


MIN_DISTANCE_M = 35.0  # TR 38.901's closest device to its site


def place_devices(
    rng: np.random.Generator, n_devices: int, sites: np.ndarray, cell_radius_m: float,
    min_distance_m: float = MIN_DISTANCE_M,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop `n_devices` devices; returns (cell index (n,), distance to its site in metres (n,), position (n, 2))."""
    sites = np.asarray(sites, dtype=float).reshape(-1, 2)
    if len(sites) == 0:
        raise ValueError("no cell sites to place devices in")
    if not 0 <= min_distance_m < cell_radius_m:
        raise ValueError(f"need 0 <= min distance ({min_distance_m} m) < cell radius ({cell_radius_m} m)")
    cell = rng.integers(len(sites), size=n_devices)
    # Uniform over the annulus area: the radius squared is uniform between its bounds.
    distance = np.sqrt(rng.uniform(min_distance_m**2, cell_radius_m**2, size=n_devices))
    angle = rng.uniform(0.0, 2.0 * np.pi, size=n_devices)
    xy = sites[cell] + distance[:, None] * np.column_stack([np.cos(angle), np.sin(angle)])
    return cell, distance, xy
