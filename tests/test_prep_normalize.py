"""Flat/dark normalisation and minus_log on numpy and (where present) cupy."""

import numpy as np
import pytest

from tomolab.arrays import to_numpy
from tomolab.errors import ParameterError
from tomolab.prep import minus_log, normalize, normalize_interpolated
from tomolab.testing import gpu_test

# the ``xp`` fixture (numpy, and cupy where a GPU is present) is in conftest.py


def _scan(rng, n_angle=6, shape=(5, 7)):
    """Raw counts from a known transmission, gain, dark level and Poisson-free beam."""
    transmission = rng.uniform(0.2, 0.9, size=(n_angle, *shape))
    gain = rng.uniform(800, 1200, size=shape)
    dark = rng.uniform(90, 110, size=shape)
    projections = np.rint(transmission * gain + dark).astype(np.uint16)
    flats = np.rint(np.stack([gain + dark] * 4) + rng.integers(-2, 3, (4, *shape))).astype(np.uint16)
    darks = np.rint(np.stack([dark] * 3) + rng.integers(-1, 2, (3, *shape))).astype(np.uint16)
    return transmission, projections, flats, darks


def test_normalize_recovers_transmission(xp):
    rng = np.random.default_rng(1)
    transmission, projections, flats, darks = _scan(rng)
    out = normalize(xp.asarray(projections), xp.asarray(flats), xp.asarray(darks))
    assert out.dtype == np.float32 and out.shape == projections.shape
    assert type(out) is type(xp.asarray(projections))
    # rounding to integer counts and +-2 counts flat noise over a ~1000 count beam
    np.testing.assert_allclose(to_numpy(out), transmission, atol=4e-3)
    # pre-averaged 2D flats/darks give the same numbers as the stacks
    flat2d = xp.asarray(flats.mean(axis=0))
    dark2d = xp.asarray(darks.mean(axis=0))
    np.testing.assert_allclose(to_numpy(normalize(xp.asarray(projections), flat2d, dark2d)),
                               to_numpy(out), rtol=1e-6)


def test_normalize_exact_formula_float64(xp):
    rng = np.random.default_rng(2)
    _, projections, flats, darks = _scan(rng)
    out = normalize(xp.asarray(projections), xp.asarray(flats), xp.asarray(darks),
                    out_dtype=np.float64)
    dark = darks.mean(axis=0)
    expected = (projections - dark) / (flats.mean(axis=0) - dark)
    assert out.dtype == np.float64
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-12)


def test_normalize_dead_pixels_stay_finite(xp):
    projections = np.full((2, 3, 3), 500, dtype=np.uint16)
    flats = np.full((2, 3, 3), 1000, dtype=np.uint16)
    darks = np.full((2, 3, 3), 100, dtype=np.uint16)
    flats[:, 1, 1] = 100   # dead pixel: flat == dark
    flats[:, 0, 2] = 50    # flat below dark
    projections[:, 2, 0] = 5000  # a hot pixel
    out = to_numpy(normalize(xp.asarray(projections), xp.asarray(flats), xp.asarray(darks)))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 2, 2], 400 / 900, rtol=1e-6)
    # dead pixels take their row neighbours' value (at the edge, the nearest one's)
    np.testing.assert_allclose(out[:, 1, 1], 400 / 900, rtol=1e-6)
    np.testing.assert_allclose(out[:, 0, 2], 400 / 900, rtol=1e-6)
    capped = to_numpy(normalize(xp.asarray(projections), xp.asarray(flats), xp.asarray(darks),
                                cutoff=1.5))
    assert capped.max() == np.float32(1.5)
    np.testing.assert_array_equal(capped[:, 2, 2], out[:, 2, 2])
    # all-dead detector: denominator floor 1, still finite
    zero = to_numpy(normalize(xp.asarray(projections), xp.asarray(darks), xp.asarray(darks)))
    assert np.isfinite(zero).all()


def test_normalize_without_flats_only_subtracts_dark(xp):
    projections = np.arange(12, dtype=np.uint16).reshape(1, 3, 4) + 10
    out = normalize(xp.asarray(projections), None, xp.asarray(np.full((3, 4), 10.0)))
    np.testing.assert_array_equal(to_numpy(out), np.arange(12, dtype=np.float32).reshape(1, 3, 4))
    np.testing.assert_array_equal(to_numpy(normalize(xp.asarray(projections))), projections)


def test_normalize_interpolated_follows_drifting_beam(xp):
    n_angle, shape = 11, (4, 5)
    rng = np.random.default_rng(3)
    before = rng.uniform(900, 1100, shape)
    after = before * 1.3  # the beam grows 30 % linearly during the scan
    dark = np.full(shape, 50.0)
    w = np.arange(n_angle) / (n_angle - 1)
    beam = (1 - w)[:, None, None] * before + w[:, None, None] * after
    transmission = rng.uniform(0.3, 0.9, (n_angle, *shape))
    projections = transmission * beam + dark
    out = normalize_interpolated(xp.asarray(projections), xp.asarray(before + dark),
                                 xp.asarray(after + dark), xp.asarray(dark))
    np.testing.assert_allclose(to_numpy(out), transmission, rtol=1e-5)
    # the single-flat correction is off by up to 15 % mid-scan: the test can tell them apart
    single = to_numpy(normalize(xp.asarray(projections), xp.asarray(before + dark), xp.asarray(dark)))
    assert np.abs(single / transmission - 1).max() > 0.1
    # a slab of the scan, by start index or by explicit indices, gives the same numbers
    slab = normalize_interpolated(xp.asarray(projections[4:8]), xp.asarray(before + dark),
                                  xp.asarray(after + dark), xp.asarray(dark),
                                  projection_index=4, n_projections=n_angle)
    np.testing.assert_allclose(to_numpy(slab), to_numpy(out)[4:8], rtol=1e-6)
    picked = normalize_interpolated(xp.asarray(projections[[0, 10]]), xp.asarray(before + dark),
                                    xp.asarray(after + dark), xp.asarray(dark),
                                    projection_index=[0, 10], n_projections=n_angle)
    np.testing.assert_allclose(to_numpy(picked), to_numpy(out)[[0, 10]], rtol=1e-6)
    one = normalize_interpolated(xp.asarray(projections[5]), xp.asarray(before + dark),
                                 xp.asarray(after + dark), xp.asarray(dark),
                                 projection_index=5, n_projections=n_angle)
    assert one.shape == shape
    np.testing.assert_allclose(to_numpy(one), transmission[5], rtol=1e-5)


def test_minus_log_never_nan_or_inf(xp):
    x = xp.asarray(np.array([1.0, np.exp(-3.0), 0.0, -1.0, np.nan, np.inf, 1e-300],
                            dtype=np.float64))
    y = to_numpy(minus_log(x))
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y[:2], [0.0, 3.0], atol=1e-12)
    np.testing.assert_allclose(y[2:5], -np.log(1e-6))
    assert y[5] < 0
    y32 = minus_log(xp.asarray(np.array([0.5, 0.0], dtype=np.float32)), floor=1e-3)
    assert y32.dtype == np.float32
    np.testing.assert_allclose(to_numpy(y32), [np.log(2), np.log(1e3)], rtol=1e-6)
    assert minus_log(xp.asarray(np.array([3], dtype=np.uint16))).dtype == np.float32


@pytest.mark.parametrize("call, where", [
    (lambda p: normalize(p, np.ones((4, 4))), "flats"),
    (lambda p: normalize(p, darks=np.ones((2, 3, 3, 3))), "darks"),
    (lambda p: normalize(p[0, 0]), "projections"),
    (lambda p: normalize(p, out_dtype=np.int16), "out_dtype"),
    (lambda p: normalize(p, cutoff=-1.0), "cutoff"),
    (lambda p: normalize(p, np.ones((0, 3, 4))), "flats"),
    (lambda p: normalize_interpolated(p, np.ones((3, 4)), np.ones((3, 4)), projection_index=2),
     "n_projections"),
    (lambda p: normalize_interpolated(p, np.ones((3, 4)), np.ones((3, 4)), projection_index=9,
                                      n_projections=10), "projection_index"),
    (lambda p: normalize_interpolated(p, np.ones((3, 4)), None), "flats_after"),
    (lambda p: minus_log(p, floor=0.0), "floor"),
])
def test_bad_parameters_name_parameter_value_and_fix(call, where):
    projections = np.ones((2, 3, 4))
    with pytest.raises(ParameterError) as info:
        call(projections)
    assert info.value.where == where
    assert info.value.fix
    assert str(info.value).startswith(where)


@gpu_test
def test_cpu_and_gpu_agree():
    import cupy
    rng = np.random.default_rng(4)
    _, projections, flats, darks = _scan(rng, n_angle=20, shape=(64, 96))
    cpu = minus_log(normalize(projections, flats, darks))
    gpu = minus_log(normalize(cupy.asarray(projections), cupy.asarray(flats), cupy.asarray(darks)))
    np.testing.assert_allclose(gpu.get(), cpu, rtol=1e-4, atol=1e-6)
    cpu_i = normalize_interpolated(projections, flats, flats * 1.1, darks)
    gpu_i = normalize_interpolated(cupy.asarray(projections), cupy.asarray(flats),
                                   cupy.asarray(flats * 1.1), cupy.asarray(darks))
    np.testing.assert_allclose(gpu_i.get(), cpu_i, rtol=1e-4)
