"""Row slabs are read from the files themselves: only the rows asked for, in every layout."""

from __future__ import annotations

import numpy as np
import pytest

import tomolab
from tomolab.io import read_frames


@pytest.fixture(scope="module")
def stack():
    rng = np.random.default_rng(3)
    return rng.integers(0, 60000, size=(24, 16, 20), dtype=np.uint16)


@pytest.fixture(scope="module", params=["dxchange", "nxtomo", "tiff", "arrays"])
def scan(request, stack, tmp_path_factory):
    angles = np.linspace(0, np.pi, stack.shape[0], endpoint=False)
    flats = np.full((3, 16, 20), 61000, np.uint16) + np.arange(20, dtype=np.uint16)
    darks = np.full((2, 16, 20), 100, np.uint16)
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "arrays":
        return tomolab.from_arrays(stack, angles, flats=flats, darks=darks)
    if request.param == "dxchange":
        path = folder / "scan.h5"
        tomolab.io.write_dxchange(path, stack, angles, flats, darks, chunks=(1, 16, 20))
    elif request.param == "nxtomo":
        path = folder / "scan.nx"
        tomolab.io.write_nxtomo(path, stack, angles, flats, darks)
    else:
        path = folder / "tiffs"
        tomolab.io.write_tiff_stack(path, stack, angles, flats, darks)
    return tomolab.open_scan(path)


@pytest.mark.parametrize("rows", [slice(0, 16), slice(5, 9), slice(15, 16),
                                  np.array([0, 0, 0, 1, 2]), np.array([13, 14, 15, 15, 15])])
def test_rows_equal_what_xarray_gives(scan, stack, rows):
    expected = stack[:, rows, :]
    assert np.array_equal(read_frames(scan["projections"], rows), expected)
    out = np.empty_like(expected)
    assert read_frames(scan["projections"], rows, out=out, threads=3) is out
    assert np.array_equal(out, expected)
    assert np.array_equal(read_frames(scan["flats"], rows), scan["flats"].values[:, rows, :])


def test_files_are_asked_for_the_rows_only(scan, monkeypatch):
    from tomolab.io import _lazy

    asked = []
    for cls in (_lazy.HDF5Frames, _lazy.TiffFrames):
        real = cls._read

        def spy(self, frames, rows, cols, out, real=real):
            asked.append((rows.start, rows.stop))
            return real(self, frames, rows, cols, out)
        monkeypatch.setattr(cls, "_read", spy)
    read_frames(scan["projections"], slice(5, 9))
    if not scan.attrs.get("source_file"):
        assert not asked  # in memory: nothing to read from a file
        return
    assert asked and set(asked) == {(5, 9)}  # never whole frames


def test_changed_data_are_not_read_from_the_file(scan, stack):
    # after an operation the note about the source no longer applies: dask computes
    shifted = scan["projections"] + 1
    shifted.variable.encoding.update(scan["projections"].variable.encoding)
    assert np.array_equal(read_frames(shifted, slice(2, 4)), stack[:, 2:4] + 1)
    every_other = scan.isel(angle=slice(None, None, 2))["projections"]
    assert np.array_equal(read_frames(every_other, slice(2, 4)), stack[::2, 2:4])


@pytest.mark.parametrize("layout, direct", [
    ({}, True),                                          # contiguous
    ({"chunks": (1, 16, 20)}, True),                     # one frame per chunk (AreaDetector)
    ({"chunks": (5, 16, 20)}, True),                     # several frames per chunk
    ({"chunks": (1, 4, 20)}, False),                     # chunks split the rows: h5py
    ({"chunks": (2, 16, 20), "compression": "gzip"}, False),  # compressed: h5py
])
def test_hdf5_layouts_read_the_same_directly_or_through_h5py(tmp_path, stack, layout, direct):
    import h5py

    from tomolab.io._lazy import HDF5Frames

    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=stack, **layout)
    runs = [(1, 7), (9, 20)]  # e.g. the projections between flats in an NXtomo file
    frames = HDF5Frames(path, "data", shape=stack.shape, dtype=stack.dtype, runs=runs)
    assert (frames._frame_offsets() is not None) == direct
    expected = np.concatenate([stack[a:b] for a, b in runs])
    for rows in (slice(0, 16), slice(3, 11), slice(15, 16)):
        out = np.empty((frames.shape[0], rows.stop - rows.start, 20), stack.dtype)
        frames.read_into(slice(None), rows, out)
        assert np.array_equal(out, expected[:, rows])
        assert np.array_equal(frames[2:5, rows], expected[2:5, rows])
    import pickle
    assert np.array_equal(pickle.loads(pickle.dumps(frames))[:, 3:5], expected[:, 3:5])


def test_a_truncated_file_is_an_error_not_zeros(tmp_path, stack):
    import h5py

    from tomolab.io._lazy import HDF5Frames

    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=stack, chunks=(1, 16, 20))
    frames = HDF5Frames(path, "data", shape=stack.shape, dtype=stack.dtype)
    assert frames._frame_offsets() is not None
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size - 2 * 16 * 20 * 2)
    with pytest.raises(OSError, match="file ends inside frame"):
        frames.read_into(slice(None), slice(0, 16), np.empty(stack.shape, stack.dtype))
