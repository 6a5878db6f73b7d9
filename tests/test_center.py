"""Centre of rotation on simulated scans with known axes."""

from __future__ import annotations

import numpy as np
import pytest

import tomolab
from tomolab.center import LOW_SCORE, find_center_vo, opposite_pair
from tomolab.errors import ParameterError

OFFSETS = [-0.10, -0.043, 0.0, 0.061, 0.10]  # fraction of the width off the middle


@pytest.mark.parametrize("method", ["vo", "phase-correlation"])
@pytest.mark.parametrize("offset", OFFSETS)
def test_find_center_within_half_a_pixel(offset, method):
    size = 128
    true_center = (size - 1) / 2 + offset * size + 0.37  # not on a pixel or half pixel
    scan = tomolab.data.simulate_scan(size, n_rows=8, n_angles=200, center=true_center,
                                      photons=5000, seed=int(100 * abs(offset)))
    center, score = tomolab.find_center(scan, method=method, backend="numpy")
    assert abs(center - true_center) <= 0.5
    assert score > LOW_SCORE


def test_find_center_on_wider_detector_uses_binned_search():
    scan = tomolab.data.simulate_scan(700, n_rows=3, n_angles=360, photons=20000)
    center, score = tomolab.find_center(scan, backend="numpy", rows_averaged=3)
    assert abs(center - scan.attrs["true_center"]) <= 0.5
    assert score > LOW_SCORE


def test_noise_gets_a_low_score_and_a_warning():
    rng = np.random.default_rng(0)
    counts = rng.poisson(1000, size=(180, 4, 96)).astype(np.uint16)
    scan = tomolab.from_arrays(counts, np.linspace(0, np.pi, 180, endpoint=False),
                               flats=np.full((2, 4, 96), 1000, np.uint16),
                               darks=np.zeros((2, 4, 96), np.uint16))
    with pytest.warns(UserWarning, match="low score.*sweep_center"):
        _, score = tomolab.find_center(scan, backend="numpy")
    assert score < LOW_SCORE


def test_vo_on_cupy_matches_numpy(xp):
    from tomolab.data.phantom import default_phantom, project_slice
    angles = np.linspace(0, np.pi, 180, endpoint=False)
    sino = project_slice(default_phantom(96, 8, radius_fraction=0.35), angles, np.arange(96), [0.0],
                         center=51.2)[:, 0]
    center, score = find_center_vo(xp.asarray(sino))
    assert abs(center - 51.2) <= 0.5
    assert score > LOW_SCORE


def test_phase_correlation_needs_opposite_projections():
    with pytest.raises(ParameterError, match=r"angles=.*no pair of projections 180° apart.*fix"):
        opposite_pair(np.linspace(0, np.radians(120), 100))


def test_find_center_rejects_bad_row_and_method():
    scan = tomolab.data.simulate_scan(64, n_rows=4, n_angles=60)
    with pytest.raises(ParameterError, match=r"row=9.*fix: pick a row between 0 and 3"):
        tomolab.find_center(scan, row=9)
    with pytest.raises(ParameterError, match=r"method='magic'.*phase-correlation"):
        tomolab.find_center(scan, method="magic")
