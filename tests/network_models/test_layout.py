"""Cell sites on a grid or hexagonal rings; devices dropped uniformly over a cell's disc."""

import numpy as np
import pytest

from network_models import cell_sites, place_devices


def pairwise(sites):
    return np.linalg.norm(sites[:, None, :] - sites[None, :, :], axis=-1)


@pytest.mark.parametrize("n", [1, 7, 19, 30])
def test_hex_inner_site_has_six_neighbours_at_the_spacing(n):
    sites = cell_sites(n, 500.0, "hex")
    assert sites.shape == (n, 2)
    assert sites[0] == pytest.approx([0.0, 0.0])
    d = pairwise(sites)
    # No two sites closer than the spacing: a proper hexagonal lattice.
    assert (d[~np.eye(n, dtype=bool)] > 500.0 - 1e-6).all()
    if n >= 7:
        assert np.isclose(d[0], 500.0).sum() == 6
    if n >= 19:
        # The first ring is complete, so each of its sites has six neighbours too.
        assert all(np.isclose(d[i], 500.0).sum() == 6 for i in range(1, 7))
        assert np.isclose(np.linalg.norm(sites[7:19], axis=1), 1000.0).sum() == 6  # ring-2 corners


def test_grid_sites():
    sites = cell_sites(5, 200.0, "grid")
    assert sites.tolist() == [[0, 0], [200, 0], [400, 0], [0, 200], [200, 200]]
    with pytest.raises(ValueError, match="layout"):
        cell_sites(5, 200.0, "ring")
    with pytest.raises(ValueError):
        cell_sites(0, 200.0)


def test_devices_land_inside_their_cell_uniformly_over_its_area():
    rng = np.random.default_rng(0)
    sites = cell_sites(7, 500.0, "hex")
    cell, distance, xy = place_devices(rng, 20_000, sites, cell_radius_m=289.0, min_distance_m=35.0)
    assert cell.shape == distance.shape == (20_000,) and xy.shape == (20_000, 2)
    assert set(np.unique(cell)) == set(range(7))
    assert (distance >= 35.0).all() and (distance <= 289.0).all()
    assert np.linalg.norm(xy - sites[cell], axis=1) == pytest.approx(distance)
    # Uniform over the area: the share within radius r is (r^2 - min^2) / (R^2 - min^2).
    r = 200.0
    assert (distance < r).mean() == pytest.approx((r**2 - 35**2) / (289**2 - 35**2), abs=0.015)
    assert np.bincount(cell).min() > 20_000 / 7 * 0.9


def test_placement_is_seeded_and_checks_its_bounds():
    sites = cell_sites(3, 500.0, "grid")
    a = place_devices(np.random.default_rng(4), 10, sites, 250.0)
    b = place_devices(np.random.default_rng(4), 10, sites, 250.0)
    assert all((x == y).all() for x, y in zip(a, b))
    with pytest.raises(ValueError, match="radius"):
        place_devices(np.random.default_rng(0), 10, sites, 30.0, min_distance_m=35.0)
