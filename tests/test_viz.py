"""tomolab.viz: block-mean downsampling, contrast limits, slices."""

from __future__ import annotations


import numpy as np
import pytest

from tomolab.testing import CountingArray

pytest.importorskip("holoviews")
xr = pytest.importorskip("xarray")
da = pytest.importorskip("dask.array")

import tomolab.viz as tv  # noqa: E402
from tomolab.errors import ParameterError  # noqa: E402


def numpy_block_mean(a, factors):
    """Reference: pad with NaN to whole blocks, reshape, nanmean."""
    padded_shape = [n + (-n) % f for n, f in zip(a.shape, factors)]
    p = np.full(padded_shape, np.nan)
    p[tuple(slice(0, n) for n in a.shape)] = a
    shape = []
    for n, f in zip(padded_shape, factors):
        shape += [n // f, f]
    return np.nanmean(p.reshape(shape), axis=tuple(range(1, 2 * a.ndim, 2)))


@pytest.mark.parametrize("shape,max_shape", [((40, 30, 50), (16, 16, 16)),
                                             ((64, 64, 64), (32, 32, 32)),
                                             ((9, 7, 5), (4, 4, 4))])
def test_block_downsample_equals_numpy_block_mean(shape, max_shape):
    a = np.random.default_rng(1).random(shape)
    out = tv.block_downsample(a, max_shape)
    factors = tv.block_factors(shape, max_shape)
    assert out.attrs["block_factors"] == factors
    assert all(n <= m for n, m in zip(out.shape, max_shape))
    np.testing.assert_allclose(out.values, numpy_block_mean(a, factors), rtol=1e-6)


@pytest.mark.parametrize("shape,max_shape,nan_fraction,dtype", [
    ((300, 257), (128, 128), 0.0, np.float32),     # ragged far blocks, no NaN
    ((37, 101), (10, 30), 0.05, np.float32),        # NaNs skipped, as coarsen's mean
    ((9, 7, 5), (4, 3, 2), 0.2, np.float64),
    ((5, 7), (2, 3), 0.0, np.uint16),               # integers averaged in float32
    ((4, 6), (1, 1), 1.0, np.float32),              # all NaN stays NaN
])
def test_block_downsample_in_memory_equals_xarray_coarsen(shape, max_shape, nan_fraction, dtype):
    """The in-memory path (strided block sums) gives what the lazy one (xarray's coarsen) gives."""
    rng = np.random.default_rng(4)
    a = (rng.random(shape) * 1000).astype(dtype)
    if nan_fraction:
        a[rng.random(shape) < nan_fraction] = np.nan
    dims = ("z", "y", "x")[-len(shape):]
    coords = {d: 3.0 + 1.5e-6 * np.arange(n) for d, n in zip(dims, shape)}
    vol = xr.DataArray(a, dims=dims, coords=coords, name="mu")
    vol[dims[-1]].attrs["units"] = "m"
    out = tv.block_downsample(vol, max_shape)
    factors = tv.block_factors(shape, max_shape)
    expected = vol.astype(np.promote_types(dtype, np.float32)).coarsen(
        dict(zip(dims, factors)), boundary="pad", coord_func="mean").mean().astype(np.float32)
    assert out.dtype == np.float32 and out.name == "mu" and out.dims == dims
    np.testing.assert_allclose(out.values, expected.values, rtol=2e-6, equal_nan=True)
    for d in dims:
        np.testing.assert_allclose(out[d].values, expected[d].values, rtol=1e-12)
    assert out[dims[-1]].attrs == {"units": "m"}
    assert out.attrs["block_factors"] == factors


def test_block_downsample_is_an_average_not_a_stride():
    # a checkerboard of period 2 averages to its mean; striding would give 0 or 1
    z, y, x = np.indices((8, 8, 8))
    board = ((z + y + x) % 2).astype(np.uint16)
    out = tv.block_downsample(board, (4, 4, 4))
    np.testing.assert_allclose(out.values, 0.5)
    assert out.dtype == np.float32


def test_block_downsample_lazy_reads_each_chunk_once_and_never_whole():
    a = np.random.default_rng(2).random((60, 50, 40)).astype(np.float32)
    src = CountingArray(a)
    lazy = xr.DataArray(da.from_array(src, chunks=(10, 50, 40)), dims=("z", "y", "x"),
                        coords={"z": np.arange(60) * 2.0})
    out = tv.block_downsample(lazy, (16, 16, 16))
    assert out.chunks is not None and src.reads == []  # nothing read yet
    small = out.compute()
    assert sum(src.reads) == a.size  # every voxel read exactly once
    assert max(src.reads) <= 10 * 50 * 40  # one chunk at a time
    np.testing.assert_allclose(small.values, numpy_block_mean(a, small.attrs["block_factors"]),
                               rtol=1e-5)
    # coordinates are the block centres
    np.testing.assert_allclose(small.z.values[:2], [3.0, 11.0])


def test_block_downsample_noop_when_small():
    a = np.ones((4, 5, 6))
    out = tv.block_downsample(a, (8, 8, 8))
    assert out.shape == a.shape and out.attrs["block_factors"] == (1, 1, 1)


def test_block_downsample_bad_input():
    with pytest.raises(ParameterError, match="max_shape"):
        tv.block_downsample(np.ones((4, 4, 4)), (4, 4))
    with pytest.raises(ParameterError, match="dims"):
        tv.block_downsample(np.ones((4, 4)))
    with pytest.raises(ParameterError, match="dims"):
        tv.get_slice(xr.DataArray(np.ones((2, 2, 2)), dims=("a", "b", "c")))


def test_contrast_limits_match_percentiles():
    a = np.random.default_rng(3).normal(size=(50, 50, 50))
    lo, hi = tv.contrast_limits(a, (1, 99), max_samples=a.size)
    np.testing.assert_allclose([lo, hi], np.percentile(a, [1, 99]))
    # a subsample estimates them closely
    lo_s, hi_s = tv.contrast_limits(a, (1, 99), max_samples=20_000)
    assert abs(lo_s - lo) < 0.1 and abs(hi_s - hi) < 0.1


def test_contrast_limits_ignores_nan_and_handles_constant():
    a = np.full((10, 10), 3.0)
    a[0] = np.nan
    assert tv.contrast_limits(a) == (2.5, 3.5)
    with pytest.raises(ParameterError, match="percentiles"):
        tv.contrast_limits(a, (90, 10))


def test_subsample_reads_only_a_few_planes_of_a_lazy_volume():
    a = np.random.default_rng(4).random((100, 40, 40))
    src = CountingArray(a)
    lazy = da.from_array(src, chunks=(1, 40, 40))
    values = tv.subsample(lazy, max_samples=5000)
    assert values.size <= 5000
    assert len(src.reads) < 100 / 2  # not every plane


@pytest.mark.parametrize("axis,index", [("z", 3), ("y", 5), ("x", 0)])
def test_get_slice_is_the_slice(axis, index):
    a = np.random.default_rng(5).random((6, 7, 8))
    plane = tv.get_slice(a, axis, index)
    ref = {"z": a[index], "y": a[:, index], "x": a[:, :, index]}[axis]
    np.testing.assert_array_equal(plane.values, ref)
    assert plane.dims == tv.SLICE_AXES[axis][::-1]


def test_get_slice_downsamples_big_slices_by_block_mean():
    a = np.random.default_rng(6).random((2, 100, 300))
    plane = tv.get_slice(a, "z", 1, max_pixels=100)
    assert max(plane.shape) <= 100
    np.testing.assert_allclose(plane.values, numpy_block_mean(a[1], plane.attrs["block_factors"]))


def test_get_slice_bad_index():
    with pytest.raises(ParameterError, match="index"):
        tv.get_slice(np.ones((3, 3, 3)), "z", 3)
    with pytest.raises(ParameterError, match="axis"):
        tv.get_slice(np.ones((3, 3, 3)), "w", 0)


def test_slice_image_holds_the_slice():
    import holoviews as hv

    a = np.random.default_rng(7).random((4, 10, 12))
    img = tv.slice_image(a, "y", 6, rasterize=False, clim=(0.1, 0.9))
    assert isinstance(img, hv.Image)
    assert [d.name for d in img.kdims] == ["x", "z"]
    np.testing.assert_array_equal(img.dimension_values("value", flat=False), a[:, 6, :])
    assert img.opts.get().kwargs["clim"] == (0.1, 0.9)


@pytest.mark.skipif(not tv.datashader_available(), reason="datashader is not installed")
def test_slice_image_rasterizes_with_datashader():
    img = tv.slice_image(np.random.rand(2, 50, 50), "z", 0, rasterize=True)
    assert type(img).__name__ == "DynamicMap"


def test_png_is_a_percentile_stretch_of_the_finite_values(tmp_path):
    from PIL import Image

    image = np.linspace(0.0, 1.0, 200 * 100).reshape(100, 200).astype(np.float32)
    image[0, 0] = np.nan
    data = tv.png_bytes(image)
    tv.save_png(image, tmp_path / "a.png")
    assert (tmp_path / "a.png").read_bytes() == data
    assert (tmp_path / "a.png").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]  # no temporary file left
    pixels = np.asarray(Image.open(tmp_path / "a.png"))
    assert pixels.shape == (100, 200) and pixels.dtype == np.uint8
    assert pixels[0, 0] == 0 and pixels[0, 1] == 0 and pixels[-1, -1] == 255
    lo, hi = np.nanpercentile(image.astype(np.float64), tv.PNG_PERCENTILES)
    middle = (image[50, 100] - lo) / (hi - lo)
    assert pixels[50, 100] == int(middle * 255)
    assert tv.png_bytes(np.full((4, 4), np.nan))[:4] == b"\x89PNG"  # all NaN: black, no error
