"""Centre finding and sweeps on scans shaped like real ones.

An even number of projections over 180° (so 90° is an angle), a wide
detector, an odd number of rows, photon noise, pixel gain errors (rings) and
a soft-tissue sample wider than the field of view: no air at the detector's
edges. On such a scan gridrec and the CPU sweep once hung, the automatic
centre sat 1–2 px off, and sweep scores picked the range's edge.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tomolab
from tomolab.center import LOW_SCORE
from tomolab.data import simulate_scan, tissue_phantom

WIDTH, ROWS, ANGLES, CENTER = 1280, 3, 1000, 632.3


@pytest.fixture(scope="module")
def wide_scan():
    return simulate_scan(WIDTH, ROWS, ANGLES, phantom=tissue_phantom(WIDTH, ROWS), center=CENTER,
                         photons=5000, ring_errors=0.005, max_attenuation=1.0, seed=1)


@pytest.fixture(scope="module")
def line_integral_scan(wide_scan):
    """The same scan as line integrals (flat-field corrected and -log taken), no flats."""
    from tomolab.engine import line_integrals

    data = line_integrals(wide_scan, slice(0, ROWS), backend="numpy")
    return tomolab.from_arrays(np.asarray(data, np.float32), wide_scan["angle"].values)


def test_the_scan_is_what_the_tests_claim(wide_scan):
    angles = wide_scan["angle"].values
    assert angles.size % 2 == 0 and np.isclose(angles, np.pi / 2).any()
    assert wide_scan.sizes["row"] % 2 == 1
    from tomolab.engine import line_integrals

    sino = line_integrals(wide_scan, slice(1, 2), backend="numpy")[:, 0]
    # the sample covers both edges of the detector at every angle (no air to anchor a method)
    assert sino[:, :5].min() > 0.3 and sino[:, -5:].min() > 0.3


def _check_auto_center(scan, backend):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        estimate = tomolab.find_center(scan, backend=backend)
    center, score = estimate
    assert abs(center - CENTER) < 0.5
    assert {"vo", "phase-correlation"} <= set(estimate.estimates)
    vo, pair = estimate.estimates["vo"][0], estimate.estimates["phase-correlation"][0]
    if abs(vo - pair) > 0.5:
        # the methods' disagreement is said (and lowers the score), and trial slices gave
        # the third opinion
        assert "sweep" in estimate.estimates
        assert [str(w.message) for w in caught if "disagree by" in str(w.message)]
    else:
        assert score >= LOW_SCORE and not caught


def test_find_center_uses_what_the_scan_offers_and_is_right(wide_scan, backend):
    _check_auto_center(wide_scan, backend)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 3])
def test_find_center_is_right_on_other_noise(seed):
    scan = simulate_scan(WIDTH, ROWS, ANGLES, phantom=tissue_phantom(WIDTH, ROWS), center=CENTER,
                         photons=5000, ring_errors=0.005, max_attenuation=1.0, seed=seed)
    _check_auto_center(scan, "numpy")


def test_methods_that_disagree_warn_and_trial_slices_decide(wide_scan, backend):
    """The sample moved before the last projection: the 0°/180° pair now lies by 3 px."""
    projections = wide_scan["projections"].values.copy()
    projections[-1] = np.roll(projections[-1], 6, axis=-1)
    moved = wide_scan.copy()
    moved["projections"] = (("angle", "row", "col"), projections)
    with pytest.warns(UserWarning, match=r"disagree by \d+\.\d+ px.*sweep_center"):
        estimate = tomolab.find_center(moved, backend=backend)
    assert "sweep" in estimate.estimates
    assert abs(estimate.center - CENTER) < 0.6
    assert estimate.estimates["phase-correlation"][0] - CENTER > 2.0


def test_line_integral_data_take_normalize_and_log_switches(line_integral_scan, backend):
    center, _ = tomolab.find_center(line_integral_scan, backend=backend, normalize=False,
                                    log=False)
    assert abs(center - CENTER) < 0.5
    stack = tomolab.sweep_center(line_integral_scan, centers=np.arange(626, 640, 1.0),
                                 backend=backend, normalize=False, log=False)
    assert stack.attrs["log"] == 0 and stack.attrs["normalize"] == 0
    assert abs(stack.attrs["best_center"] - CENTER) < 1.0


@pytest.mark.timeout(300)
def test_default_cpu_sweep_finishes_and_peaks_at_the_centre(wide_scan):
    """41 candidates (odd: the last one grids alone, the path that hung) on the CPU."""
    stack = tomolab.sweep_center(wide_scan, backend="numpy")
    assert stack.sizes["center"] == 41
    scores = stack["score"].values
    assert 0 < int(np.argmax(scores)) < scores.size - 1
    assert abs(stack.attrs["best_center"] - CENTER) < 1.0


def test_sixteen_candidates_peak_inside_the_range(wide_scan, backend):
    centers = np.linspace(CENTER - 8.3, CENTER + 7.9, 16)
    stack = tomolab.sweep_center(wide_scan, centers=centers, backend=backend)
    scores = stack["score"].values
    best = int(np.argmax(scores))
    assert 2 <= best <= 13  # not at the range's edges
    assert abs(stack.attrs["best_center"] - CENTER) < 1.0
    # the scores fall off on both sides of the peak
    assert scores[0] < 0.5 and scores[-1] < 0.5


def test_cpu_sweep_bins_wide_detectors_and_keeps_physical_coordinates(wide_scan):
    stack = tomolab.sweep_center(wide_scan, centers=[631.5, 632.5], backend="numpy", binning=2)
    assert stack.attrs["binning"] == 2 and stack.sizes["x"] == WIDTH // 2
    pixel = wide_scan.attrs["pixel_size"]
    assert np.isclose(float(stack["x"][1] - stack["x"][0]), 2 * pixel)
    full = tomolab.sweep_center(wide_scan, centers=[632.5], backend="numpy", binning=1)
    # the same attenuation (1/m) with or without binning, on average over the inner square
    inner = slice(WIDTH // 4, 3 * WIDTH // 4)
    half = slice(WIDTH // 8, 3 * WIDTH // 8)
    assert float(stack[1].values[half, half].mean()) == pytest.approx(
        float(full[0].values[inner, inner].mean()), rel=0.02)
    with pytest.raises(tomolab.errors.ParameterError, match="binning"):
        tomolab.sweep_center(wide_scan, centers=[632.5], backend="numpy", binning=0)
