"""Reading scans: real files in each facility layout, written here with h5py / tifffile.

The files are built by hand (not with tomolab's writers) following each
facility's layout, so the readers are checked against the layouts
themselves; tests/test_io_write.py checks the writers round-trip.
"""

from __future__ import annotations

import pickle
import time
import tracemalloc
import warnings

import h5py
import numpy as np
import pytest
import tifffile

import tomolab.io as tio
from tomolab.io import ScanWarning, open_scan
from tomolab.io import _lazy

ROWS, COLS = 6, 7


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def stack(rng, n, dtype=np.uint16):
    return rng.integers(0, 60000, (n, ROWS, COLS)).astype(dtype)


# ----------------------------------------------------------------------------- DXchange

def make_dxchange(path, proj, flats=None, darks=None, theta_deg=None, *, meta=True):
    with h5py.File(path, "w") as f:
        f.create_dataset("/exchange/data", data=proj, chunks=(1, ROWS, COLS))
        if flats is not None:
            f.create_dataset("/exchange/data_white", data=flats)
        if darks is not None:
            f.create_dataset("/exchange/data_dark", data=darks)
        if theta_deg is not None:
            f.create_dataset("/exchange/theta", data=theta_deg)
        if meta:
            res = f.create_dataset("/measurement/instrument/detection_system/objective/resolution",
                                   data=[0.65])
            res.attrs["units"] = "microns"
            # APS files often store the energy in eV without a units attribute
            f.create_dataset("/measurement/instrument/monochromator/energy", data=[25000.0])
            dist = f.create_dataset(
                "/measurement/instrument/camera_motor_stack/setup/camera_distance", data=[120.0])
            dist.attrs["units"] = "mm"


def test_dxchange_round_trip_values_angles_metadata(tmp_path, rng):
    proj, flats, darks = stack(rng, 9), stack(rng, 4), stack(rng, 2)
    theta = np.linspace(0, 180, 9, endpoint=False)
    fn = tmp_path / "scan.h5"
    make_dxchange(fn, proj, flats, darks, theta)

    scan = open_scan(fn)

    assert scan.attrs["layout"] == "dxchange"
    assert scan.attrs["source_file"] == str(fn.resolve())
    assert scan.attrs["projections_path"] == "/exchange/data"
    assert scan.attrs["flats_path"] == "/exchange/data_white"
    assert scan.attrs["darks_path"] == "/exchange/data_dark"
    assert scan.attrs["angles_path"] == "/exchange/theta"
    assert scan.projections.dims == ("angle", "row", "col")
    assert scan.flats.dims == ("flat", "row", "col")
    assert scan.darks.dims == ("dark", "row", "col")
    assert scan.projections.dtype == np.uint16
    np.testing.assert_array_equal(scan.projections.values, proj)
    np.testing.assert_array_equal(scan.flats.values, flats)
    np.testing.assert_array_equal(scan.darks.values, darks)
    assert scan.angle.dtype == np.float64
    np.testing.assert_allclose(scan.angle.values, np.deg2rad(theta), rtol=0, atol=1e-15)
    np.testing.assert_array_equal(scan.row.values, np.arange(ROWS))
    np.testing.assert_array_equal(scan.col.values, np.arange(COLS))
    assert scan.attrs["pixel_size"] == pytest.approx(0.65e-6, rel=1e-12)
    assert scan.attrs["energy"] == pytest.approx(25.0)
    assert scan.attrs["distance"] == pytest.approx(0.120)


def test_dxchange_without_theta_assumes_180_degrees_and_warns(tmp_path, rng):
    proj = stack(rng, 8)
    fn = tmp_path / "scan.h5"
    make_dxchange(fn, proj, stack(rng, 2), stack(rng, 1), theta_deg=None, meta=False)

    with pytest.warns(ScanWarning, match="evenly spaced over 180 degrees"):
        scan = open_scan(fn)

    np.testing.assert_allclose(np.rad2deg(scan.angle.values), np.arange(8) * 22.5)
    assert "assumed" in scan.attrs["angles_source"]
    for key in ("pixel_size", "energy", "distance"):
        assert key not in scan.attrs


def test_angles_argument_replaces_missing_theta(tmp_path, rng):
    fn = tmp_path / "scan.h5"
    make_dxchange(fn, stack(rng, 5), stack(rng, 2), stack(rng, 1), theta_deg=None)
    given = np.array([0.0, 0.1, 0.3, 0.6, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about now
        scan = open_scan(fn, angles=given)
    np.testing.assert_array_equal(scan.angle.values, given)
    assert "angles_path" not in scan.attrs


def test_missing_flats_and_darks_are_absent_with_a_warning_that_says_how_to_proceed(tmp_path, rng):
    fn = tmp_path / "scan.h5"
    make_dxchange(fn, stack(rng, 4), theta_deg=np.arange(4.0))
    with pytest.warns(ScanWarning) as record:
        scan = open_scan(fn)
    messages = " ".join(str(w.message) for w in record)
    assert "flats" not in scan and "darks" not in scan
    assert "/exchange/data_white" in messages and "/exchange/data_dark" in messages
    assert "normalize=False" in messages and "flats=" in messages

    flats = stack(rng, 3)
    scan = open_scan(fn, flats=flats, darks=np.zeros((ROWS, COLS), np.uint16))
    np.testing.assert_array_equal(scan.flats.values, flats)
    assert scan.sizes["dark"] == 1


# ----------------------------------------------------------------------------- NXtomo (ESRF)

def make_esrf(path, darks, flats_pre, proj, flats_post, angles_deg, *, entry="entry0000",
              pixel_um=0.65, distance_mm=35.0, energy_kev=19.0, alignment=None):
    """An ESRF (Bliss / nxtomomill) NXtomo entry; ``alignment``: extra frames at the end
    that image_key calls projections (0) and image_key_control calls alignment (-1)."""
    alignment = np.zeros((0, ROWS, COLS), proj.dtype) if alignment is None else alignment
    frames = np.concatenate([darks, flats_pre, proj, flats_post, alignment])
    keys = np.array([2] * len(darks) + [1] * len(flats_pre) + [0] * len(proj)
                    + [1] * len(flats_post) + [0] * len(alignment), np.int8)
    control = keys.copy()
    control[len(keys) - len(alignment):] = -1
    rot = np.concatenate([np.zeros(len(darks) + len(flats_pre)), angles_deg,
                          np.full(len(flats_post), angles_deg[-1]),
                          np.linspace(180, 0, len(alignment))])
    with h5py.File(path, "a") as f:
        e = f.create_group(entry)
        e.attrs["NX_class"] = "NXentry"
        e["definition"] = b"NXtomo"
        det = e.create_group("instrument/detector")
        det.attrs["NX_class"] = "NXdetector"
        det.create_dataset("data", data=frames, chunks=(1, ROWS, COLS))
        det["image_key"] = keys
        det["image_key_control"] = control
        px = det.create_dataset("x_pixel_size", data=pixel_um)
        px.attrs["units"] = "um"
        d = det.create_dataset("distance", data=distance_mm)
        d.attrs["units"] = "mm"
        en = e.create_dataset("instrument/beam/incident_energy", data=energy_kev)
        en.attrs["units"] = "keV"
        r = e.create_dataset("sample/rotation_angle", data=rot)
        r.attrs["units"] = "degree"
    return frames, keys


def test_esrf_nxtomo_flats_before_and_after_keep_acquisition_index(tmp_path, rng):
    darks, pre, proj, post = stack(rng, 2), stack(rng, 3), stack(rng, 10), stack(rng, 3)
    angles = np.linspace(0, 360, 10, endpoint=False)
    fn = tmp_path / "tomo.nx"
    make_esrf(fn, darks, pre, proj, post, angles, alignment=stack(rng, 2))

    scan = open_scan(fn)

    assert scan.attrs["layout"] == "nxtomo"
    assert scan.attrs["projections_path"] == "/entry0000/instrument/detector/data"
    assert scan.attrs["image_key_path"] == "/entry0000/instrument/detector/image_key_control"
    assert scan.attrs["alignment_frames"] == 2  # left out of the projections
    np.testing.assert_array_equal(scan.projections.values, proj)
    np.testing.assert_array_equal(scan.flats.values, np.concatenate([pre, post]))
    np.testing.assert_array_equal(scan.darks.values, darks)
    np.testing.assert_array_equal(scan.flat_frame.values, [2, 3, 4, 15, 16, 17])
    np.testing.assert_array_equal(scan.dark_frame.values, [0, 1])
    np.testing.assert_array_equal(scan.angle_frame.values, np.arange(5, 15))
    np.testing.assert_allclose(scan.angle.values, np.deg2rad(angles), atol=1e-15)
    assert scan.attrs["pixel_size"] == pytest.approx(0.65e-6)
    assert scan.attrs["distance"] == pytest.approx(0.035)
    assert scan.attrs["energy"] == pytest.approx(19.0)
    assert "recorded" in scan.attrs["frame_order"]


def test_nxtomo_selection_is_by_contiguous_runs_not_per_frame(tmp_path, rng):
    # projections interrupted by flats in the middle: two runs of stored frames
    darks, pre, p1, mid, p2 = stack(rng, 1), stack(rng, 2), stack(rng, 5), stack(rng, 2), stack(rng, 4)
    frames = np.concatenate([darks, pre, p1, mid, p2])
    keys = [2] + [1] * 2 + [0] * 5 + [1] * 2 + [0] * 4
    fn = tmp_path / "interrupted.nx"
    with h5py.File(fn, "w") as f:
        f["entry0001/instrument/detector/data"] = frames
        f["entry0001/instrument/detector/image_key"] = np.array(keys)
        f["entry0001/sample/rotation_angle"] = np.linspace(0, 180, len(keys))
    scan = open_scan(fn, chunks=9)
    lazy = scan.projections.data.dask  # the graph holds the lazy array of the dataset
    arrays = [v for v in lazy.values() if isinstance(v, _lazy.HDF5Frames)]
    assert len(arrays) == 1 and arrays[0].runs == ((3, 8), (10, 14))
    np.testing.assert_array_equal(scan.projections.values, np.concatenate([p1, p2]))
    np.testing.assert_array_equal(scan.flat_frame.values, [1, 2, 8, 9])


def test_esrf_file_with_several_entries_opens_the_first_and_entry_selects(tmp_path, rng):
    fn = tmp_path / "multi.nx"
    a = make_esrf(fn, stack(rng, 1), stack(rng, 1), stack(rng, 4), stack(rng, 0), np.arange(4.0),
                  entry="entry0000")[0]
    b = make_esrf(fn, stack(rng, 1), stack(rng, 1), stack(rng, 3), stack(rng, 1), np.arange(3.0),
                  entry="entry0001")[0]
    with pytest.warns(UserWarning, match="entry0001"):
        first = open_scan(fn)
    np.testing.assert_array_equal(first.projections.values, a[2:])
    second = open_scan(fn, entry="entry0001")
    np.testing.assert_array_equal(second.projections.values, b[2:5])
    assert second.attrs["entry"] == "/entry0001"


def test_nxtomo_angles_in_radians_are_not_converted_twice(tmp_path, rng):
    fn = tmp_path / "rad.nx"
    make_esrf(fn, stack(rng, 1), stack(rng, 1), stack(rng, 4), stack(rng, 0), np.arange(4.0))
    with h5py.File(fn, "a") as f:
        rot = f["entry0000/sample/rotation_angle"]
        rot[...] = np.array([0, 0, 0.1, 0.2, 0.3, 0.4])
        rot.attrs["units"] = "rad"
    scan = open_scan(fn)
    np.testing.assert_allclose(scan.angle.values, [0.1, 0.2, 0.3, 0.4])


# ----------------------------------------------------------------------------- Diamond

def test_diamond_nxtomo_variant(tmp_path, rng):
    darks, flats, proj = stack(rng, 2), stack(rng, 3), stack(rng, 6)
    frames = np.concatenate([flats[:2], darks, proj, flats[2:]])
    keys = np.array([1, 1, 2, 2] + [0] * 6 + [1])
    angles = np.concatenate([[0, 0, 0, 0], np.linspace(0, 180, 6), [180]])
    fn = tmp_path / "12345.nxs"
    with h5py.File(fn, "w") as f:
        e = f.create_group("entry1")
        e.attrs["NX_class"] = "NXentry"
        t = e.create_group("tomo_entry")
        t.attrs["NX_class"] = "NXsubentry"
        det = t.create_dataset("instrument/detector/data", data=frames)
        t["instrument/detector/image_key"] = keys
        t["data/data"] = det  # hard link, as Diamond writes it
        t.create_dataset("data/rotation_angle", data=angles).attrs["units"] = "deg"
        # a second, unrelated detector group under entry1 (Diamond files have these)
        e.create_dataset("instrument/pco1_sw/data", data=frames)

    scan = open_scan(fn)

    assert scan.attrs["layout"] == "nxtomo-diamond"
    assert scan.attrs["projections_path"] == "/entry1/tomo_entry/data/data"
    assert scan.attrs["angles_path"] == "/entry1/tomo_entry/data/rotation_angle"
    np.testing.assert_array_equal(scan.projections.values, proj)
    np.testing.assert_array_equal(scan.flats.values, flats)
    np.testing.assert_array_equal(scan.darks.values, darks)
    np.testing.assert_array_equal(scan.flat_frame.values, [0, 1, 10])
    np.testing.assert_array_equal(scan.dark_frame.values, [2, 3])
    np.testing.assert_allclose(scan.angle.values, np.deg2rad(np.linspace(0, 180, 6)))


# ----------------------------------------------------------------------------- TIFF

def test_tiff_folder_with_name_patterns_natural_order_and_angles_file(tmp_path, rng):
    proj, flats, darks = stack(rng, 12), stack(rng, 3), stack(rng, 2)
    for i, img in enumerate(proj):  # unpadded numbers: natural order matters
        tifffile.imwrite(tmp_path / f"tomo_{i}.tif", img)
    for i, img in enumerate(flats):
        tifffile.imwrite(tmp_path / f"sample_flat_{i}.tiff", img)
    for i, img in enumerate(darks):
        tifffile.imwrite(tmp_path / f"DARK{i:03d}.TIF", img)
    angles = np.linspace(0, 180, 12, endpoint=False)
    (tmp_path / "angles.txt").write_text("# degrees\n" + "\n".join(map(repr, angles.tolist())) + "\n")
    (tmp_path / "notes.txt").write_text("not an image")

    scan = open_scan(tmp_path)

    assert scan.attrs["layout"] == "tiff"
    np.testing.assert_array_equal(scan.projections.values, proj)
    np.testing.assert_array_equal(scan.flats.values, flats)
    np.testing.assert_array_equal(scan.darks.values, darks)
    np.testing.assert_allclose(scan.angle.values, np.deg2rad(angles), atol=1e-15)
    assert scan.attrs["projections_path"] == "tomo_0.tif ... tomo_11.tif (12 files)"


def test_tiff_subfolders_and_multipage_files(tmp_path, rng):
    proj, flats, darks = stack(rng, 7), stack(rng, 4), stack(rng, 2)
    for sub in ("projections", "flats", "darks"):
        (tmp_path / sub).mkdir()
    # multi-page files (tifffile would store 3 or 4 pages as one RGB page without minisblack)
    tifffile.imwrite(tmp_path / "projections" / "proj_a.tif", proj[:4], photometric="minisblack")
    tifffile.imwrite(tmp_path / "projections" / "proj_b.tif", proj[4:], photometric="minisblack")
    for i, img in enumerate(flats):
        tifffile.imwrite(tmp_path / "flats" / f"{i}.tif", img)
    tifffile.imwrite(tmp_path / "darks" / "d.tif", darks, photometric="minisblack")
    with pytest.warns(ScanWarning, match="180 degrees"):
        scan = open_scan(tmp_path)
    np.testing.assert_array_equal(scan.projections.values, proj)
    np.testing.assert_array_equal(scan.flats.values, flats)
    np.testing.assert_array_equal(scan.darks.values, darks)


def test_single_multipage_tiff_is_the_projections(tmp_path, rng):
    proj = stack(rng, 5, np.float32)
    fn = tmp_path / "stack.tif"
    tifffile.imwrite(fn, proj)
    with pytest.warns(ScanWarning):
        scan = open_scan(fn, angles=np.arange(5) * 0.5)
    assert scan.projections.dtype == np.float32
    np.testing.assert_array_equal(scan.projections.values, proj)
    np.testing.assert_array_equal(scan.projections[1:4, 2:5, ::3].values, proj[1:4, 2:5, ::3])
    np.testing.assert_array_equal(scan.angle.values, np.arange(5) * 0.5)


def test_tiff_folder_without_proj_words_takes_remaining_files(tmp_path, rng):
    proj, flats = stack(rng, 3), stack(rng, 1)
    for i, img in enumerate(proj):
        tifffile.imwrite(tmp_path / f"img{i:04d}_x.tif", img)  # 'img' is a projection word
    tifffile.imwrite(tmp_path / "white.tif", flats[0])
    tifffile.imwrite(tmp_path / "dark.tif", np.zeros((ROWS, COLS), np.uint16))
    for i, img in enumerate(proj):
        tifffile.imwrite(tmp_path / f"frame{i}.tif", img)  # no known word: ignored, with a warning
    with pytest.warns(UserWarning, match="ignoring 3 TIFF files"):
        scan = open_scan(tmp_path, angles=[0, 1, 2])
    np.testing.assert_array_equal(scan.projections.values, proj)
    np.testing.assert_array_equal(scan.flats.values, flats)


# ----------------------------------------------------------------------------- from_arrays

def test_from_arrays_same_structure_as_files(tmp_path, rng):
    proj, flats, darks = stack(rng, 5), stack(rng, 2), stack(rng, 1)
    angles = np.linspace(0, np.pi, 5, endpoint=False)
    mem = tio.from_arrays(proj, angles, flats, darks, pixel_size=1e-6, energy=20, distance=0.1)
    fn = tmp_path / "scan.h5"
    make_dxchange(fn, proj, flats, darks, np.rad2deg(angles), meta=False)
    disk = open_scan(fn)
    assert set(mem.variables) == set(disk.variables)
    for name in mem.variables:
        assert mem[name].dims == disk[name].dims
        assert mem[name].dtype == disk[name].dtype
    np.testing.assert_array_equal(mem.projections.values, disk.projections.values)
    assert type(mem.projections.data) is type(disk.projections.data)
    assert mem.attrs["layout"] == "arrays" and mem.attrs["energy"] == 20.0


def test_from_arrays_accepts_dask_and_keeps_it_lazy(rng):
    import dask.array as da

    proj = da.from_array(stack(rng, 6), chunks=(2, ROWS, COLS))
    scan = tio.from_arrays(proj, np.arange(6.0), flats=stack(rng, 1), darks=stack(rng, 1),
                           chunks=3)
    assert scan.projections.data.chunks[0] == (3, 3)
    np.testing.assert_array_equal(scan.projections.values, proj.compute())


# ----------------------------------------------------------------------------- laziness

def test_open_reads_no_pixels_and_compute_does(tmp_path, rng, monkeypatch):
    fn = tmp_path / "tomo.nx"
    make_esrf(fn, stack(rng, 1), stack(rng, 2), stack(rng, 8), stack(rng, 2), np.arange(8.0))
    reads = []
    original_getitem, original_read_direct = h5py.Dataset.__getitem__, h5py.Dataset.read_direct

    def spy_getitem(self, key):
        reads.append((self.name, self.shape))
        return original_getitem(self, key)

    def spy_read_direct(self, *args, **kwargs):
        reads.append((self.name, self.shape))
        return original_read_direct(self, *args, **kwargs)

    monkeypatch.setattr(h5py.Dataset, "__getitem__", spy_getitem)
    monkeypatch.setattr(h5py.Dataset, "read_direct", spy_read_direct)
    before = _lazy.read_count()

    scan = open_scan(fn)

    data_path = "/entry0000/instrument/detector/data"
    assert [r for r in reads if r[0] == data_path] == []
    assert all(len(shape) <= 1 for _, shape in reads)  # only keys, angles, scalars
    assert _lazy.read_count() == before
    values = scan.projections[2:4].values
    assert _lazy.read_count() > before
    with h5py.File(fn, "r") as f:  # uncompressed frames are read with os.preadv, not h5py
        keys = f["/entry0000/instrument/detector/image_key"][()]
        assert np.array_equal(values, original_getitem(f[data_path], np.nonzero(keys == 0)[0][2:4]))


def test_tiff_open_reads_no_pixels(tmp_path, rng, monkeypatch):
    for i, img in enumerate(stack(rng, 4)):
        tifffile.imwrite(tmp_path / f"proj_{i}.tif", img)
    calls = []
    original = tifffile.TiffPage.asarray
    monkeypatch.setattr(tifffile.TiffPage, "asarray",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    with pytest.warns(ScanWarning):
        scan = open_scan(tmp_path)
    assert calls == []
    scan.projections.values
    assert len(calls) == 4


def test_scan_pickles_small_and_computes_after_unpickling(tmp_path, rng):
    proj = stack(rng, 20)
    fn = tmp_path / "scan.h5"
    make_dxchange(fn, proj, stack(rng, 2), stack(rng, 1), np.arange(20.0))
    scan = open_scan(fn, chunks=4)
    blob = pickle.dumps(scan.projections.data)
    assert len(blob) < 20_000  # a file name and a path per chunk, no pixels
    np.testing.assert_array_equal(pickle.loads(blob).compute(), proj)
    lazy = next(v for v in scan.projections.data.dask.values()
                if isinstance(v, _lazy.HDF5Frames))
    assert len(pickle.dumps(lazy)) < 1000


def test_chunks_default_align_with_file_chunks_and_can_be_overridden(tmp_path):
    fn = tmp_path / "big.h5"
    with h5py.File(fn, "w") as f:
        f.create_dataset("/exchange/data", shape=(300, 512, 512), dtype="uint16",
                         chunks=(3, 512, 512))
        f["/exchange/theta"] = np.arange(300.0)
        f.create_dataset("/exchange/data_white", shape=(5, 512, 512), dtype="uint16")
        f.create_dataset("/exchange/data_dark", shape=(5, 512, 512), dtype="uint16")
    scan = open_scan(fn)
    # 64 MiB / (512*512*2 B) = 128 frames -> 126, a multiple of the file's 3
    assert scan.projections.data.chunksize == (126, 512, 512)
    assert open_scan(fn, chunks=10).projections.data.chunksize == (10, 512, 512)
    assert open_scan(fn, chunks={"angle": 1, "row": 64}).projections.data.chunksize == (1, 64, 512)
    assert open_scan(fn, chunks=(5, 256, -1)).projections.data.chunksize == (5, 256, 512)


def test_large_file_opens_fast_without_memory_growth(tmp_path):
    # 2000 x 1024 x 1024 uint16 = 4.2 GB declared; no chunk is written (fill value)
    fn = tmp_path / "huge.nx"
    with h5py.File(fn, "w") as f:
        f.create_dataset("entry0000/instrument/detector/data", shape=(2000, 1024, 1024),
                         dtype="uint16", chunks=(1, 1024, 1024))
        keys = np.zeros(2000, np.int8)
        keys[:10], keys[10:30], keys[-20:] = 2, 1, 1
        f["entry0000/instrument/detector/image_key"] = keys
        f["entry0000/sample/rotation_angle"] = np.linspace(0, 360, 2000)
    assert fn.stat().st_size < 1_000_000
    small = tmp_path / "small.h5"
    make_dxchange(small, np.zeros((2, ROWS, COLS), np.uint16), np.ones((1, ROWS, COLS), np.uint16),
                  np.zeros((1, ROWS, COLS), np.uint16), [0.0, 90.0])
    open_scan(small)  # warm up imports

    tracemalloc.start()
    t0 = time.perf_counter()
    scan = open_scan(fn)
    elapsed = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert scan.projections.shape == (1950, 1024, 1024)
    assert scan.projections.nbytes > 4e9
    assert elapsed < 1.0
    assert peak < 50e6
    assert int(scan.projections[1000, :8, :8].sum()) == 0


def test_describe_summarises_layout_shapes_angles_metadata(tmp_path, rng):
    fn = tmp_path / "scan.h5"
    make_dxchange(fn, stack(rng, 9), stack(rng, 4), stack(rng, 2),
                  np.linspace(0, 180, 9, endpoint=False))
    text = tio.describe(fn)
    for piece in ("dxchange", str(fn.resolve()), "9 x 6 x 7", "uint16", "4 flats", "2 darks",
                  "0.000 to 160.000 deg", "step 20.0000 deg", "pixel size 0.65 um",
                  "energy 25 keV", "distance 120 mm", "kB on disk"):
        assert piece in text, piece
    assert "\n" not in text


def test_empty_flats_dataset_counts_as_missing(tmp_path, rng):
    fn = tmp_path / "scan.h5"
    make_dxchange(fn, stack(rng, 3), np.zeros((0, ROWS, COLS), np.uint16), stack(rng, 1),
                  [0.0, 60.0, 120.0])
    with pytest.warns(ScanWarning, match="no flats"):
        scan = open_scan(fn)
    assert "flats" not in scan and scan.sizes["dark"] == 1


def test_importing_tomolab_io_stays_light():
    import subprocess
    import sys

    code = ("import sys, tomolab.io; heavy = [m for m in ('cupy', 'h5py', 'xarray', 'dask', "
            "'tifffile', 'zarr') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
