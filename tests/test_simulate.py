"""The simulator: exact line integrals, physical counts, and blocks that do not change the scan."""

from __future__ import annotations

import numpy as np
import pytest

import tomolab
from tomolab.data import iter_projection_slabs, simulate_arrays
from tomolab.data.phantom import Cylinder, Ellipsoid, phantom_slice, project_slice
from tomolab.errors import ParameterError


def test_disk_line_integrals_are_exact():
    angles = np.linspace(0, np.pi, 7)
    p = project_slice([Cylinder(3.0, -2.0, -1, 1, 10, 10, 0, 1.0)], angles, np.arange(60), [0.0],
                      center=30.0, supersample=1)
    for a, theta in enumerate(angles):
        s = np.arange(60) - 30.0 - (3.0 * np.cos(theta) - 2.0 * np.sin(theta))
        expected = 2 * np.sqrt(np.clip(100 - s ** 2, 0, None))
        assert np.allclose(p[a, 0], expected, atol=1e-9)


def test_projection_equals_the_sum_of_the_true_slice():
    """At angle 0 the projection is the slice summed over y (the package's convention)."""
    shapes = [Ellipsoid(4.0, -6.0, 0.0, 14, 9, 5, 0.7, 1.0), Cylinder(-10, 8, -3, 3, 5, 5, 0, 0.5)]
    n = 64
    img = phantom_slice(shapes, 0.0, n, supersample=8)
    proj = project_slice(shapes, [0.0, np.pi / 2], np.arange(n), [0.0], center=(n - 1) / 2,
                         supersample=8)[:, 0]
    assert np.allclose(proj[0], img.sum(axis=0), atol=0.05 * proj[0].max())
    assert np.allclose(proj[1], img.sum(axis=1), atol=0.05 * proj[1].max())


def test_counts_follow_beer_lambert_and_poisson():
    proj, angles, flats, darks, params = simulate_arrays(96, 4, 60, photons=10000, drift=0.0)
    assert proj.dtype == flats.dtype == darks.dtype == np.uint16
    transmission = (proj.astype(float) - darks.mean(0)) / (flats.mean(0) - darks.mean(0))
    line = project_slice(params.shapes(), angles, np.arange(96), np.arange(4) - 1.5,
                         center=params.center) * params.attenuation_per_pixel
    assert abs(np.mean(-np.log(np.clip(transmission, 1e-3, None)) - line)) < 0.01
    residual = (transmission - np.exp(-line)) / np.sqrt(np.exp(-line) / 10000 * 1.2)
    assert 0.7 < residual[:, :, 20:76].std() < 1.4  # Poisson noise of the right size


def test_blocks_do_not_change_the_scan():
    params = tomolab.data.simulate.simulate_arrays(64, 3, 20, seed=4, zingers=1e-3)[-1]
    whole = np.concatenate([b for _, _, b in iter_projection_slabs(params, block=20)])
    pieces = np.concatenate([b for _, _, b in iter_projection_slabs(params, block=3)])
    assert np.array_equal(whole, pieces)


def test_large_detector_blocks_stay_small():
    params = tomolab.data.simulate.simulate_arrays(64, 2, 2)[-1]
    big = tomolab.data.simulate.SimulationParameters(**{**params.__dict__, "n_cols": 2048,
                                                        "n_rows": 2048, "n_angles": 4})
    start, stop, block = next(iter_projection_slabs(big))
    assert stop - start == 1 and block.shape == (1, 2048, 2048)


def test_rings_and_zingers_are_there_when_asked():
    clean = simulate_arrays(64, 2, 30, seed=1)[0].astype(float)
    rings = simulate_arrays(64, 2, 30, seed=1, ring_errors=0.05)[0].astype(float)
    zingers = simulate_arrays(64, 2, 30, seed=1, zingers=0.01)[0].astype(float)
    assert np.std((rings / clean).mean(axis=0)) > 0.02  # a fixed gain per pixel
    assert (zingers - clean > 5000).mean() > 0.005


@pytest.mark.parametrize("kwargs, where", [({"size": 8}, "size=8"), ({"center": 500.0}, "center=500.0"),
                                           ({"photons": 1e6}, "photons")])
def test_bad_simulation_parameters(kwargs, where):
    with pytest.raises(ParameterError, match=where):
        tomolab.data.simulate_scan(**{"size": 64, **kwargs})
