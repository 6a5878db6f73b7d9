"""Bad input to the io layer: one-line errors naming the file or path, the value and the fix."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile

import tomolab
from tomolab.errors import ParameterError, ScanFormatError, TomolabError
from tomolab.io import from_arrays, open_scan

# the scans here lack flats/darks/angles on purpose; those warnings are tested in test_io.py
pytestmark = pytest.mark.filterwarnings("ignore::tomolab.io.ScanWarning")


def check(excinfo, *pieces):
    """The message is one line and names every piece and the fix."""
    message = str(excinfo.value)
    assert "\n" not in message
    assert "fix:" in message
    for piece in pieces:
        assert str(piece) in message, (piece, message)
    assert isinstance(excinfo.value, TomolabError) and isinstance(excinfo.value, ValueError)


def dxchange(path, proj_shape=(4, 5, 6), flats_shape=(2, 5, 6), theta=None):
    with h5py.File(path, "w") as f:
        f.create_dataset("/exchange/data", shape=proj_shape, dtype="uint16")
        f.create_dataset("/exchange/data_white", shape=flats_shape, dtype="uint16")
        f.create_dataset("/exchange/data_dark", shape=(1, *proj_shape[1:]), dtype="uint16")
        if theta is not None:
            f["/exchange/theta"] = np.asarray(theta, dtype=np.float64)


def test_missing_file(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(missing)
    check(excinfo, missing, "no such file")


def test_text_file_is_neither_hdf5_nor_tiff(tmp_path):
    fn = tmp_path / "scan.h5"
    fn.write_text("hello, I am text\n")
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(fn)
    check(excinfo, fn, "not an HDF5 or TIFF", "b'hello, I'")


def test_empty_file(tmp_path):
    fn = tmp_path / "empty.h5"
    fn.touch()
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(fn)
    check(excinfo, fn, "empty")


def test_hdf5_with_no_known_layout_lists_layouts_and_groups(tmp_path):
    fn = tmp_path / "other.h5"
    with h5py.File(fn, "w") as f:
        f["raw/images"] = np.zeros((2, 3, 3))
        f["meta/x"] = 1
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(fn)
    check(excinfo, fn, "dxchange", "nxtomo", "nxtomo-diamond", "/raw", "/meta", "from_arrays")


def test_explicit_layout_that_does_not_match(tmp_path):
    fn = tmp_path / "scan.h5"
    dxchange(fn, theta=np.arange(4.0))
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(fn, layout="nxtomo")
    check(excinfo, fn, "nxtomo", "/exchange")


def test_unknown_layout_name():
    with pytest.raises(ParameterError) as excinfo:
        open_scan("whatever.h5", layout="hdf")
    check(excinfo, "layout='hdf'", "dxchange")


def test_flats_with_another_shape(tmp_path):
    fn = tmp_path / "scan.h5"
    dxchange(fn, flats_shape=(2, 5, 8), theta=np.arange(4.0))
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(fn)
    check(excinfo, f"{fn}:/exchange/data_white", "(2, 5, 8)", "(5, 6)")


def test_darks_with_another_shape_from_arrays():
    with pytest.raises(ScanFormatError) as excinfo:
        from_arrays(np.zeros((3, 4, 4)), np.arange(3.0), darks=np.zeros((1, 4, 5)))
    check(excinfo, "darks", "(1, 4, 5)", "(4, 4)")


def test_number_of_angles_differs_from_projections(tmp_path):
    fn = tmp_path / "scan.h5"
    dxchange(fn, theta=np.arange(5.0))
    with pytest.raises(ParameterError) as excinfo:
        open_scan(fn)
    check(excinfo, f"{fn}:/exchange/theta", "=5", "5 angles for 4 projections", "angles=")

    with pytest.raises(ParameterError) as excinfo:
        open_scan(fn, angles=[0.0, 1.0])
    check(excinfo, "angles=2", "exactly 4")


def test_non_finite_angles(tmp_path):
    fn = tmp_path / "scan.h5"
    dxchange(fn, theta=[0.0, 45.0, np.nan, 135.0])
    with pytest.raises(ParameterError) as excinfo:
        open_scan(fn)
    check(excinfo, f"{fn}:/exchange/theta", "nan", "index 2")

    with pytest.raises(ParameterError) as excinfo:
        from_arrays(np.zeros((2, 3, 3)), [0.0, np.inf])
    check(excinfo, "angles=inf", "not finite")


def test_nxtomo_image_key_length_mismatch(tmp_path):
    fn = tmp_path / "tomo.nx"
    with h5py.File(fn, "w") as f:
        f.create_dataset("entry0000/instrument/detector/data", shape=(6, 3, 3), dtype="uint16")
        f["entry0000/instrument/detector/image_key"] = np.zeros(5, np.int8)
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(fn)
    check(excinfo, f"{fn}:/entry0000/instrument/detector/image_key", "=5", "6 frames")


def test_nxtomo_unknown_entry(tmp_path):
    fn = tmp_path / "tomo.nx"
    with h5py.File(fn, "w") as f:
        f.create_dataset("entry0000/instrument/detector/data", shape=(2, 3, 3), dtype="uint16")
        f["entry0000/instrument/detector/image_key"] = np.zeros(2, np.int8)
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(fn, entry="entry0007")
    check(excinfo, fn, "entry0007", "/entry0000")


def test_empty_folder_and_folder_without_tiffs(tmp_path):
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(tmp_path)
    check(excinfo, tmp_path, "no TIFF files", "empty")
    (tmp_path / "readme.md").write_text("x")
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(tmp_path)
    check(excinfo, tmp_path, "readme.md")


def test_truncated_hdf5(tmp_path):
    fn = tmp_path / "scan.h5"
    with h5py.File(fn, "w") as f:
        f["/exchange/data"] = np.ones((20, 64, 64), np.uint16)
        f["/exchange/theta"] = np.arange(20.0)
    data = fn.read_bytes()
    fn.write_bytes(data[: len(data) // 2])
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(fn)
    check(excinfo, fn, "truncated or corrupt", "copy the file again")


def test_corrupt_hdf5_after_a_valid_signature(tmp_path):
    fn = tmp_path / "scan.h5"
    fn.write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(range(256)) * 8)
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(fn)
    check(excinfo, fn, "h5py cannot open")


@pytest.mark.parametrize("layout", ["folder", "multipage"])
def test_truncated_tiff_is_caught_when_opening(tmp_path, layout):
    frames = np.arange(5 * 32 * 32, dtype=np.uint16).reshape(5, 32, 32)
    if layout == "folder":
        for i, img in enumerate(frames):
            tifffile.imwrite(tmp_path / f"proj_{i}.tif", img)
        victim = tmp_path / "proj_3.tif"
    else:
        victim = tmp_path / "proj.tif"
        tifffile.imwrite(victim, frames, photometric="minisblack")
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) - 500])
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(tmp_path, angles=np.arange(5.0))
    check(excinfo, victim, "truncated")


def test_tiff_with_a_different_frame_shape(tmp_path):
    tifffile.imwrite(tmp_path / "proj_0.tif", np.zeros((8, 8), np.uint16))
    tifffile.imwrite(tmp_path / "proj_1.tif", np.zeros((8, 9), np.uint16))
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(tmp_path, angles=[0.0, 1.0])
    check(excinfo, tmp_path / "proj_1.tif", "(8, 9)", "(8, 8)")


def test_bad_angles_file(tmp_path):
    tifffile.imwrite(tmp_path / "proj_0.tif", np.zeros((8, 8), np.uint16))
    (tmp_path / "angles.txt").write_text("zero\n")
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(tmp_path)
    check(excinfo, tmp_path / "angles.txt", "degrees")


def test_projections_not_3d(tmp_path):
    fn = tmp_path / "scan.h5"
    with h5py.File(fn, "w") as f:
        f["/exchange/data"] = np.zeros((4, 5))
    with pytest.raises(ScanFormatError) as excinfo:
        open_scan(fn)
    check(excinfo, f"{fn}:/exchange/data", "(4, 5)", "(n, row, col)")


def test_bad_metadata_and_chunks_parameters():
    with pytest.raises(ParameterError) as excinfo:
        from_arrays(np.zeros((2, 3, 3)), [0.0, 1.0], pixel_size=-1e-6)
    check(excinfo, "pixel_size=-1e-06", "positive")
    with pytest.raises(ParameterError) as excinfo:
        from_arrays(np.zeros((2, 3, 3)), [0.0, 1.0], chunks={"z": 1})
    check(excinfo, "chunks=", "'angle'")
    with pytest.raises(ParameterError) as excinfo:
        from_arrays(np.zeros((2, 3, 3)), [0.0, 1.0], chunks=(1, 2))
    check(excinfo, "chunks for projections=(1, 2)", "tuple like")


def test_errors_are_reachable_from_the_package_root():
    assert tomolab.ScanFormatError is ScanFormatError
    assert tomolab.open_scan is open_scan
