"""Centre sweeps: one batched computation, equal to reconstructing each centre, best one marked."""

from __future__ import annotations

import numpy as np
import pytest

import tomolab
from tomolab.sweep import sharpness_scores, sweep_slices
from tomolab.errors import ParameterError


@pytest.fixture(scope="module")
def scan():
    return tomolab.data.simulate_scan(128, n_rows=6, n_angles=200, photons=10000)


@pytest.mark.parametrize("method", ["fbp", "gridrec"])
def test_each_trial_slice_is_a_reconstruction_at_that_centre(scan, xp, method):
    """fbp: the sweep shifts by a phase ramp (sinc interpolation) where fbp() interpolates
    linearly, so the slices differ slightly and the sweep's is no further from the phantom.
    gridrec: the centre is in gridrec's own phase ramp, so the slices are gridrec's."""
    from tomolab.engine import line_integrals
    from tomolab.recon import ALGORITHMS

    backend = "cupy" if xp.__name__ == "cupy" else "numpy"
    sino = line_integrals(scan, slice(3, 4), backend=backend)[:, 0, :]
    true_center = scan.attrs["true_center"]
    centers = np.array([true_center - 3.0, true_center, true_center + 0.5])
    stack = sweep_slices(sino, scan.angle.values, centers, method=method)
    scale = scan.attrs["pixel_size"]
    truth = xp.asarray(tomolab.data.true_volume(scan, rows=[3])[0] * scale)
    inner = (slice(20, 108),) * 2
    for i, c in enumerate(centers):
        direct = ALGORITHMS[method](sino[None], scan.angle.values, center=c)[0]
        a, b = stack[i][inner], direct[inner]
        rel = float(xp.linalg.norm(a - b) / xp.linalg.norm(b))
        if method == "gridrec":
            assert rel < 1e-5, (c, rel)
            continue
        assert rel < 0.1
        err_sweep = float(xp.linalg.norm(a - truth[inner]))
        err_direct = float(xp.linalg.norm(b - truth[inner]))
        assert err_sweep <= 1.05 * err_direct, (c, err_sweep, err_direct)


def test_best_centre_is_the_true_one(scan):
    stack = tomolab.sweep_center(scan, row=3, centers=np.arange(60, 86, 0.5), backend="numpy")
    assert stack.dims == ("center", "y", "x") and stack.sizes["center"] == 52
    assert abs(stack.attrs["best_center"] - scan.attrs["true_center"]) <= 0.5
    assert stack["score"].max() == 1.0 and stack["score"].min() == 0.0
    assert stack.attrs["units"] == "1/m"


def test_default_centres_surround_the_estimate(scan):
    stack = tomolab.sweep_center(scan, backend="numpy")
    assert stack.sizes["center"] == 41
    assert abs(stack.attrs["estimate"] - scan.attrs["true_center"]) <= 0.5
    assert stack["center"].min() < stack.attrs["estimate"] < stack["center"].max()


@pytest.mark.parametrize("score", ["negativity", "entropy"])
def test_scores_peak_at_the_true_centre_on_noisy_data(score):
    scan = tomolab.data.simulate_scan(160, n_rows=3, n_angles=240, photons=3000, seed=5)
    stack = tomolab.sweep_center(scan, row=1, centers=np.arange(75, 100, 1.0), score=score,
                                 backend="numpy")
    assert abs(stack.attrs["best_center"] - scan.attrs["true_center"]) <= 1.0


def test_scores_are_between_zero_and_one():
    rng = np.random.default_rng(0)
    s = sharpness_scores(rng.normal(size=(5, 32, 32)).astype(np.float32))
    assert s.shape == (5,) and s.min() == 0 and s.max() == 1


@pytest.mark.parametrize("centers", [[-3.0, 50.0], [50.0, 200.0], [np.nan], []])
def test_centres_outside_the_detector_are_rejected(scan, centers):
    with pytest.raises(ParameterError, match=r"centers=.*trial centres must lie on the detector.*fix"):
        tomolab.sweep_center(scan, centers=centers, backend="numpy")


def test_unknown_score(scan):
    with pytest.raises(ParameterError, match="score='sharp'"):
        tomolab.sweep_center(scan, centers=[60.0], score="sharp", backend="numpy")
