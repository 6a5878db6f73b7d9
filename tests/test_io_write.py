"""Writers: scans round-trip through open_scan, stream in slabs, and never leave half-written output."""

from __future__ import annotations

import json
import tracemalloc

import dask.array as da
import h5py
import numpy as np
import pytest
import tifffile
import xarray as xr

import tomolab.io as tio
from tomolab.errors import ParameterError
from tomolab.io import open_scan, open_volume, save_volume

ROWS, COLS = 5, 8


@pytest.fixture
def scan_arrays():
    rng = np.random.default_rng(7)
    proj = rng.integers(0, 65535, (9, ROWS, COLS)).astype(np.uint16)
    flats = rng.integers(0, 65535, (4, ROWS, COLS)).astype(np.uint16)
    darks = rng.integers(0, 65535, (2, ROWS, COLS)).astype(np.uint16)
    angles = np.linspace(0, np.pi, 9, endpoint=False)
    return proj, angles, flats, darks


def leftovers(folder, name):
    return [p.name for p in folder.iterdir() if p.name.startswith(f".{name}")]


WRITERS = {
    "dxchange": (tio.write_dxchange, "scan.h5", {}),
    "nxtomo": (tio.write_nxtomo, "scan.nx", {}),
    "nxtomo-diamond": (tio.write_nxtomo, "scan.nxs", {"variant": "diamond"}),
    "tiff": (tio.write_tiff_stack, "scan", {}),
}


@pytest.mark.parametrize("layout", list(WRITERS))
def test_writers_round_trip_through_open_scan(tmp_path, scan_arrays, layout):
    proj, angles, flats, darks = scan_arrays
    writer, name, kwargs = WRITERS[layout]
    out = tmp_path / name
    writer(out, proj, angles, flats, darks, pixel_size=0.65e-6, energy=30.0, distance=0.25,
           attrs={"simulated": True, "center": 3.5, "params": {"noise": 0.01}}, **kwargs)
    scan = open_scan(out)
    assert scan.attrs["layout"] == layout
    np.testing.assert_array_equal(scan.projections.values, proj)
    np.testing.assert_array_equal(scan.flats.values, flats)
    np.testing.assert_array_equal(scan.darks.values, darks)
    np.testing.assert_allclose(scan.angle.values, angles, rtol=1e-15, atol=1e-15)
    assert scan.attrs["pixel_size"] == pytest.approx(0.65e-6, rel=1e-12)
    assert scan.attrs["energy"] == pytest.approx(30.0)
    assert scan.attrs["distance"] == pytest.approx(0.25, rel=1e-12)
    assert leftovers(tmp_path, name) == []


def test_nxtomo_writes_flats_before_and_after(tmp_path, scan_arrays):
    proj, angles, flats, darks = scan_arrays
    out = tmp_path / "scan.nx"
    tio.write_nxtomo(out, proj, angles, flats, darks, flats_after=True)
    with h5py.File(out) as f:
        keys = f["entry0000/instrument/detector/image_key"][:]
        assert f["entry0000/definition"][()] == b"NXtomo"
        assert f["entry0000"].attrs["NX_class"] == "NXentry"
        assert f["entry0000/sample/rotation_angle"].attrs["units"] == "degree"
    assert keys.tolist() == [2, 2, 1, 1] + [0] * 9 + [1, 1]
    scan = open_scan(out)
    np.testing.assert_array_equal(scan.flat_frame.values, [2, 3, 13, 14])

    tio.write_nxtomo(out, proj, angles, flats, darks, flats_after=False, overwrite=True)
    with h5py.File(out) as f:
        assert f["entry0000/instrument/detector/image_key"][:].tolist() == [2, 2] + [1] * 4 + [0] * 9


def test_slabs_from_a_generator_tuples_and_dask(tmp_path, scan_arrays):
    proj, angles, flats, darks = scan_arrays
    tio.write_dxchange(tmp_path / "a.h5", (proj[i:i + 2] for i in range(0, 9, 2)), angles,
                       flats=iter(flats), darks=darks)
    tio.write_nxtomo(tmp_path / "b.nx", ((i, min(i + 4, 9), proj[i:i + 4]) for i in range(0, 9, 4)),
                     angles, flats=(f for f in flats), darks=darks)
    tio.write_tiff_stack(tmp_path / "c", da.from_array(proj, chunks=(4, 3, 3)), angles,
                         flats=flats, darks=darks)
    for name in ("a.h5", "b.nx", "c"):
        scan = open_scan(tmp_path / name)
        np.testing.assert_array_equal(scan.projections.values, proj)
        np.testing.assert_array_equal(scan.flats.values, flats)


def test_writing_a_big_scan_from_slabs_keeps_memory_bounded(tmp_path):
    slab = (8, 256, 512)  # uint16: 2 MiB per slab
    n_slabs = 40           # 80 MiB in all

    def slabs():
        for i in range(n_slabs):
            yield np.full(slab, i, np.uint16)

    tracemalloc.start()
    tio.write_dxchange(tmp_path / "big.h5", slabs(), np.linspace(0, np.pi, 8 * n_slabs),
                       flats=np.ones((1, 256, 512), np.uint16),
                       darks=np.zeros((1, 256, 512), np.uint16))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 16e6  # a few slabs, not the 80 MiB scan
    scan = open_scan(tmp_path / "big.h5", chunks=8)
    assert scan.projections.shape == (320, 256, 512)
    assert int(scan.projections[8 * 17 + 3, 100, 200]) == 17


def test_failed_write_leaves_nothing_at_the_output_path(tmp_path, scan_arrays):
    proj, angles, flats, darks = scan_arrays

    def broken():
        yield proj[:3]
        raise RuntimeError("detector went away")

    for writer, name in ((tio.write_dxchange, "scan.h5"), (tio.write_nxtomo, "scan.nx"),
                         (tio.write_tiff_stack, "scan")):
        with pytest.raises(RuntimeError, match="detector went away"):
            writer(tmp_path / name, broken(), angles, flats, darks)
        assert not (tmp_path / name).exists()
        assert leftovers(tmp_path, name) == []


def test_count_mismatch_and_existing_output_are_errors(tmp_path, scan_arrays):
    proj, angles, flats, darks = scan_arrays
    with pytest.raises(ParameterError, match="8 projections written for 9 angles.*fix") as excinfo:
        tio.write_dxchange(tmp_path / "scan.h5", proj[:8], angles, flats, darks)
    assert not (tmp_path / "scan.h5").exists()

    tio.write_dxchange(tmp_path / "scan.h5", proj, angles, flats, darks)
    with pytest.raises(ParameterError, match="already exists.*overwrite=True") as excinfo:
        tio.write_dxchange(tmp_path / "scan.h5", proj, angles, flats, darks)
    assert str(tmp_path / "scan.h5") in str(excinfo.value)
    tio.write_dxchange(tmp_path / "scan.h5", proj[::-1], angles, flats, darks, overwrite=True)
    np.testing.assert_array_equal(open_scan(tmp_path / "scan.h5").projections.values, proj[::-1])

    with pytest.raises(ParameterError, match="flats frames are"):
        tio.write_dxchange(tmp_path / "bad.h5", proj, angles, flats[:, :, :3], darks)
    with pytest.raises(ParameterError, match="out of order|does not follow"):
        tio.write_dxchange(tmp_path / "bad.h5", [(0, 2, proj[:2]), (3, 5, proj[3:5])], angles[:5])
    with pytest.raises(ParameterError, match="variant"):
        tio.write_nxtomo(tmp_path / "bad.nx", proj, angles, variant="aps")
    assert not (tmp_path / "bad.h5").exists()


def test_tiff_stack_files_and_sidecars(tmp_path, scan_arrays):
    proj, angles, flats, darks = scan_arrays
    out = tmp_path / "scan"
    tio.write_tiff_stack(out, proj, angles, flats, darks, pixel_size=1e-6, attrs={"run": 3})
    names = sorted(p.name for p in out.iterdir())
    assert names[:2] == ["angles.txt", "dark_00000.tif"]
    assert "proj_00008.tif" in names and "flat_00003.tif" in names
    np.testing.assert_array_equal(tifffile.imread(out / "proj_00004.tif"), proj[4])
    np.testing.assert_allclose(np.loadtxt(out / "angles.txt"), np.rad2deg(angles), rtol=1e-15)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["pixel_size"] == 1e-6 and meta["attrs"] == {"run": 3}


# ----------------------------------------------------------------------------- volumes

@pytest.fixture
def volume():
    rng = np.random.default_rng(3)
    data = rng.standard_normal((6, 7, 9)).astype(np.float32)
    return xr.DataArray(
        data, dims=("z", "y", "x"),
        coords={"z": np.arange(6) * 2e-6, "y": np.arange(7) * 2e-6, "x": np.arange(9) * 2e-6},
        attrs={"center": 4.25, "algorithm": "fbp", "filter": "ramp", "units": "1/m",
               "angles_deg": [0.0, 90.0], "params": {"delta_beta": 300}},
        name="volume")


@pytest.mark.parametrize("fmt,name", [("zarr", "vol.zarr"), ("hdf5", "vol.h5"), ("tiff", "vol")])
def test_save_volume_round_trips_values_attrs_coords(tmp_path, volume, fmt, name):
    out = tmp_path / name
    save_volume(volume, out)  # format from the name
    back = open_volume(out)
    assert back.dims == ("z", "y", "x")
    np.testing.assert_array_equal(back.values, volume.values)
    for coord in ("z", "y", "x"):
        np.testing.assert_array_equal(back[coord].values, volume[coord].values)
    assert back.attrs["center"] == 4.25 and back.attrs["algorithm"] == "fbp"
    assert list(back.attrs["angles_deg"]) == [0.0, 90.0]
    params = back.attrs["params"]
    assert (json.loads(params) if isinstance(params, str) else params) == {"delta_beta": 300}
    assert leftovers(tmp_path, name) == []


def test_save_volume_streams_dask_by_z_slab(tmp_path, volume):
    calls = []

    def make_block(block, block_info=None):
        calls.append(block_info[None]["array-location"][0])
        return block

    lazy = volume.copy(data=da.from_array(volume.values, chunks=(2, 7, 9)).map_blocks(
        make_block, dtype=np.float32))
    save_volume(lazy, tmp_path / "v.h5")
    with h5py.File(tmp_path / "v.h5") as f:
        np.testing.assert_array_equal(f["volume"][:], volume.values)
        assert f["volume"].attrs["center"] == 4.25
        assert f["volume"].chunks == (1, 7, 9)
    assert sorted(calls) == [(0, 2), (2, 4), (4, 6)]  # each slab computed once

    save_volume(lazy, tmp_path / "v.zarr")
    import zarr
    group = zarr.open_group(str(tmp_path / "v.zarr"), mode="r")
    assert group["volume"].chunks[1:] == (7, 9)  # whole (y, x) slabs along z


def test_save_volume_failure_leaves_nothing(tmp_path, volume):
    def explode(block, block_info=None):
        if block_info[None]["array-location"][0][0] >= 4:
            raise RuntimeError("GPU fell over")
        return block

    lazy = volume.copy(data=da.from_array(volume.values, chunks=(2, 7, 9)).map_blocks(
        explode, dtype=np.float32))
    for name in ("v.zarr", "v.h5", "v"):
        with pytest.raises(RuntimeError, match="GPU fell over"):
            save_volume(lazy, tmp_path / name)
        assert not (tmp_path / name).exists()
        assert leftovers(tmp_path, name) == []


def test_save_volume_overwrite_and_format_errors(tmp_path, volume):
    save_volume(volume, tmp_path / "v.zarr")
    with pytest.raises(ParameterError, match="already exists"):
        save_volume(volume, tmp_path / "v.zarr")
    save_volume(volume * 2, tmp_path / "v.zarr", overwrite=True)
    np.testing.assert_array_equal(open_volume(tmp_path / "v.zarr").values, volume.values * 2)
    with pytest.raises(ParameterError, match=r"path='.*v\.xyz'.*fix"):
        save_volume(volume, tmp_path / "v.xyz")
    save_volume(volume, tmp_path / "v.xyz", format="hdf5")
    assert h5py.is_hdf5(tmp_path / "v.xyz")
    with pytest.raises(ParameterError, match="format='png'"):
        save_volume(volume, tmp_path / "w", format="png")
    with pytest.raises(ParameterError, match="3-D"):
        save_volume(volume[0], tmp_path / "w.h5")
