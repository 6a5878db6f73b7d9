"""360° half acquisition: the overlap is found, and the stitched scan reconstructs like a full-width one."""

from __future__ import annotations

import numpy as np
import pytest

import tomolab
from tomolab.arrays import to_numpy
from tomolab.api import stitch_360
from tomolab.data.phantom import default_phantom, phantom_slice, project_slice
from tomolab.errors import ParameterError
from tomolab.prep.half_acquisition import find_overlap, opposite_projections, stitch_half_acquisition
from tomolab.recon import fbp

W = 128
SCALE = 0.01  # attenuation per pixel of path of the phantom's unit value


def _wide_sample(center):
    """A sample as wide as twice the axis' distance from the far edge of the detector."""
    reach = max(center, W - 1 - center)
    width = int(np.floor(2 * reach)) + 1
    return default_phantom(width, 8, radius_fraction=0.42), width


def _sinogram(shapes, angles, n_cols, center, noise=0.0, seed=0):
    sino = project_slice(shapes, angles, np.arange(n_cols), [0.0], center=center)[:, 0] * SCALE
    if noise:
        sino = sino + np.random.default_rng(seed).normal(0.0, noise, sino.shape)
    return sino.astype(np.float32)


ANGLES_360 = np.linspace(0, 2 * np.pi, 600, endpoint=False)


@pytest.mark.parametrize("center, side", [(115.3, "right"), (12.7, "left"), (100.5, "right")])
def test_find_overlap(center, side, xp):
    shapes, _ = _wide_sample(center)
    sino = xp.asarray(_sinogram(shapes, ANGLES_360, W, center, noise=0.01))
    found, found_side, score = find_overlap(sino, ANGLES_360)
    assert abs(found - center) < 0.25 and found_side == side and score > 0.95


@pytest.mark.parametrize("center", [115.5, 11.5])
def test_stitched_sinogram_is_the_full_width_one(center, xp):
    """With the axis on a half pixel the mirror lands on pixels: the stitch is exact."""
    shapes, width = _wide_sample(center)
    sino = xp.asarray(_sinogram(shapes, ANGLES_360, W, center))
    wide, angles_180, new_center = stitch_half_acquisition(sino, ANGLES_360, center=center)
    assert wide.shape == (300, width) and angles_180.size == 300
    assert new_center == (width - 1) / 2
    full = _sinogram(shapes, angles_180, width, new_center)
    np.testing.assert_allclose(to_numpy(wide), full, atol=2e-5)


@pytest.mark.parametrize("center", [115.3, 12.7])
def test_stitched_reconstruction_matches_full_width(center, xp):
    shapes, width = _wide_sample(center)
    sino = xp.asarray(_sinogram(shapes, ANGLES_360, W, center, noise=0.01, seed=1))
    wide, angles_180, new_center = stitch_half_acquisition(sino, ANGLES_360, center=center)
    assert wide.shape[-1] == width and abs(new_center - (width - 1) / 2) <= 0.5
    full = xp.asarray(_sinogram(shapes, angles_180, width, new_center, noise=0.01, seed=2))
    truth = phantom_slice(shapes, 0.0, width) * SCALE
    yy, xx = np.mgrid[:width, :width] - (width - 1) / 2
    disk = np.hypot(yy, xx) < 0.47 * width

    def error(sinogram, c=new_center):
        img = to_numpy(fbp(sinogram[None], angles_180, center=c, size=width)[0])
        return np.linalg.norm((img - truth)[disk]) / np.linalg.norm(truth[disk])

    stitched, reference = error(wide), error(full)
    assert reference < 0.07
    assert stitched <= 1.05 * reference, (stitched, reference)
    # the half-turn of the narrow detector alone, unstitched, is far off: the test can tell
    assert error(xp.ascontiguousarray(sino[:300]), center) > 3 * reference


def test_blend_hides_a_mismatch_between_the_halves():
    center = 110.5
    shapes, width = _wide_sample(center)
    sino = _sinogram(shapes, ANGLES_360, W, center)
    sino[300:] += 0.02  # the second half-turn reads higher (beam drift)
    smooth, _, _ = stitch_half_acquisition(sino, ANGLES_360, center=center)
    hard, _, _ = stitch_half_acquisition(sino, ANGLES_360, center=center, blend=0)
    clean, _, _ = stitch_half_acquisition(_sinogram(shapes, ANGLES_360, W, center), ANGLES_360,
                                          center=center)
    overlap = slice(int(2 * center - W + 1), W)
    jump = lambda s: np.abs(np.diff(s[:, overlap] - clean[:, overlap], axis=1)).max()  # noqa: E731
    assert jump(hard) > 0.019 and jump(smooth) < 0.02 / 10


def test_opposite_projections_interpolate_between_angles():
    angles = np.linspace(0, 2 * np.pi, 9, endpoint=False)  # odd: no exact opposite
    first, lower, upper, weight = opposite_projections(angles)
    target = angles[first] + np.pi
    np.testing.assert_allclose((1 - weight) * angles[lower] + weight * angles[upper], target)


def _counts_scan(shapes, angles, n_cols, center, n_rows=2, photons=2e4, seed=0):
    line = project_slice(shapes, angles, np.arange(n_cols), np.arange(n_rows) - (n_rows - 1) / 2,
                         center=center) * SCALE
    counts = np.random.default_rng(seed).poisson(photons * np.exp(-line)).astype(np.uint16)
    flats = np.full((4, n_rows, n_cols), photons, np.uint16)
    darks = np.zeros((2, n_rows, n_cols), np.uint16)
    return tomolab.from_arrays(counts, angles, flats=flats, darks=darks, pixel_size=1e-6)


def test_stitch_360_scan_reconstructs_like_a_full_width_scan(backend):
    center = 113.4
    shapes, width = _wide_sample(center)
    shapes = [type(s)(**{**s.__dict__, **({"z0": -50, "z1": 50} if hasattr(s, "z0") else {})})
              for s in shapes]  # the body spans the rows
    scan = _counts_scan(shapes, ANGLES_360, W, center)
    stitched = stitch_360(scan, backend=backend)
    assert abs(stitched.attrs["original_center"] - center) < 0.25
    assert stitched.attrs["side"] == "right" and stitched.attrs["log"] is True
    assert stitched.projections.dtype == np.float32 and stitched.sizes["col"] == width
    assert stitched.attrs["pixel_size"] == 1e-6
    vol = tomolab.reconstruct(stitched, center=stitched.attrs["center"], normalize=False,
                              log=False, backend=backend)
    angles_180 = stitched.angle.values
    full_scan = _counts_scan(shapes, angles_180, width, stitched.attrs["center"], seed=1)
    full = tomolab.reconstruct(full_scan, center=stitched.attrs["center"], backend=backend)
    truth = np.stack([phantom_slice(shapes, z, width) for z in (-0.5, 0.5)]) * SCALE / 1e-6
    yy, xx = np.mgrid[:width, :width] - (width - 1) / 2
    disk = np.hypot(yy, xx) < 0.47 * width
    err = lambda v: np.linalg.norm((v.values - truth)[:, disk]) / np.linalg.norm(truth[:, disk])  # noqa: E731
    assert err(full) < 0.1
    assert err(vol) <= 1.05 * err(full), (err(vol), err(full))


def test_a_180_degree_scan_cannot_be_stitched():
    scan = tomolab.data.simulate_scan(64, n_rows=2, n_angles=90)
    with pytest.raises(ParameterError, match=r"angles=.*needs a 360° scan.*fix: for a 180° scan"):
        stitch_360(scan, backend="numpy")
    sino = np.ones((90, 64), np.float32)
    with pytest.raises(ParameterError, match="360"):
        find_overlap(sino, scan.angle.values)


@pytest.mark.parametrize("kwargs, where", [(dict(center=200.0), "center"),
                                           (dict(center=-1.0), "center"),
                                           (dict(center=100.0, blend=-2), "blend")])
def test_bad_stitch_parameters(kwargs, where):
    sino = np.ones((600, W), np.float32)
    with pytest.raises(ParameterError, match=rf"{where}=.*fix"):
        stitch_half_acquisition(sino, ANGLES_360, **kwargs)
