"""Tilted or drifting axis: centres at several rows, a fitted line, and a flag when it is not a line."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tomolab
from tomolab.api import default_axis_rows, find_axis
from tomolab.center.axis import fit_axis
from tomolab.data.phantom import default_phantom, project_slice
from tomolab.errors import ParameterError

N_COLS, N_ROWS = 128, 48


def _tilted_scan(center_of_row, *, photons=2e4, seed=0, n_angles=180):
    """Counts of a scan whose axis is at ``center_of_row(row)`` on each detector row."""
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    shapes = default_phantom(N_COLS, N_ROWS, radius_fraction=0.36)
    rows = np.arange(N_ROWS)
    z = rows - (N_ROWS - 1) / 2
    line = np.empty((n_angles, N_ROWS, N_COLS))
    for r in rows:
        line[:, r:r + 1] = project_slice(shapes, angles, np.arange(N_COLS), [z[r]],
                                         center=float(center_of_row(r)))
    line *= 1.5 / (0.84 * N_COLS * 1.5)  # as simulate_scan: up to ~1.5 through the sample
    rng = np.random.default_rng(seed)
    counts = rng.poisson(photons * np.exp(-line)).astype(np.uint16)
    flats = np.full((4, N_ROWS, N_COLS), photons, np.uint16)
    darks = np.zeros((2, N_ROWS, N_COLS), np.uint16)
    return tomolab.from_arrays(counts, angles, flats=flats, darks=darks, pixel_size=1e-6)


def test_fit_axis_recovers_a_line():
    rows = np.array([3, 20, 40, 61, 80])
    fit = fit_axis(rows, 50.0 + 0.03 * rows, [0.9, 0.5, 0.8, 0.7, 0.6])
    assert math.isclose(fit.intercept, 50.0, abs_tol=1e-9) and math.isclose(fit.slope, 0.03)
    assert fit.residual_rms < 1e-9 and not fit.suspect and fit.used.all()
    assert math.isclose(fit.tilt_degrees, math.degrees(math.atan(0.03)))
    np.testing.assert_allclose(fit.center([0, 100]), [50.0, 53.0])
    assert fit_axis({r: 50.0 + 0.03 * r for r in rows}).slope == pytest.approx(0.03)


def test_fit_axis_leaves_out_a_wrong_centre_and_says_so():
    rows = np.arange(0, 90, 10)
    centers = 60.0 - 0.02 * rows
    centers[4] += 6.0  # one row's centre finder failed
    fit = fit_axis(rows, centers)
    assert not fit.used[4] and fit.used.sum() == 8
    assert fit.slope == pytest.approx(-0.02) and fit.suspect
    assert fit.residuals[4] == pytest.approx(6.0)


def test_fit_axis_weights_by_score():
    rows = np.array([0, 10, 20, 30])
    centers = np.array([50.0, 50.0, 50.0, 53.0])
    trusted = fit_axis(rows, centers, [1, 1, 1, 1e-3])
    assert abs(trusted.center(30) - 50.0) < 0.05
    ignored = fit_axis(rows, centers, [1, 1, 1, 0])  # score 0: not used
    assert not ignored.used[3] and ignored.slope == 0.0


def test_fit_axis_needs_two_rows():
    with pytest.raises(ParameterError, match="rows=.*two or more"):
        fit_axis([5, 5], [1.0, 2.0])


def test_find_axis_recovers_a_tilted_axis(backend):
    a, b = 60.3, 0.085  # 4 px across the detector: 5 degrees
    scan = _tilted_scan(lambda r: a + b * r)
    fit = find_axis(scan, backend=backend)
    assert fit.rows.size == 9 and fit.rows.min() <= 3 and fit.rows.max() >= N_ROWS - 4
    assert abs(fit.center(0) - a) <= 0.5
    assert abs(fit.center(N_ROWS - 1) - (a + b * (N_ROWS - 1))) <= 0.5
    assert abs(fit.tilt_degrees - math.degrees(math.atan(b))) < 0.5
    assert not fit.suspect and fit.residual_rms < 0.5
    # one centre for the whole detector would be off by 2 px at the top and bottom
    center, _ = tomolab.find_center(scan, backend=backend)
    assert abs(center - a) > 1.5 and abs(center - (a + b * (N_ROWS - 1))) > 1.5


def test_find_axis_flags_a_sample_that_moved():
    scan = _tilted_scan(lambda r: 62.0 if r < N_ROWS // 2 else 65.0, seed=1)
    with pytest.warns(UserWarning, match=r"do not lie on a line.*sweep_center"):
        fit = find_axis(scan, backend="numpy")
    assert fit.suspect and fit.residual_rms > 0.5


def test_default_rows_span_the_detector():
    rows = default_axis_rows(2048)
    assert rows.size == 9 and rows[0] == 102 and rows[-1] == 1945
    assert default_axis_rows(5).tolist() == [1, 2, 3]  # few rows: what fits
    assert default_axis_rows(12, margin=2).tolist() == [2, 3, 4, 5, 6, 7, 8, 9]


@pytest.mark.parametrize("rows, message", [([0, 99], "outside the detector"),
                                           ([4], "two or more rows"),
                                           ([1.5, 3.0], "integers")])
def test_find_axis_bad_rows(rows, message):
    scan = tomolab.data.simulate_scan(64, n_rows=8, n_angles=60)
    with pytest.raises(ParameterError, match=rf"rows=.*{message}.*fix"):
        find_axis(scan, rows=rows, backend="numpy")
