"""Slab sinks: zarr, HDF5 and TIFF volumes written slab by slab, resumable after a kill."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import xarray as xr

from tomolab.errors import OutputError, ParameterError
from tomolab.io import open_volume, save_volume
from tomolab.io import _sinks
from tomolab.io import open_sink

NAMES = {"zarr": "vol.zarr", "hdf5": "vol.h5", "tiff": "vol"}
SHAPE = (8, 6, 5)
SLAB_ROWS = 3  # slabs (0, 3), (3, 6), (6, 8): the last one shorter


def _case(seed=0):
    """A volume with its coords and attrs, as a reconstruction of rows 10..17 makes them."""
    rng = np.random.default_rng(seed)
    n_z, n_y, n_x = SHAPE
    yy, xx = np.mgrid[:n_y, :n_x]
    disc = ((yy - 2.5) ** 2 + (xx - 2) ** 2 < 5).astype(np.float32)
    volume = (300 * disc + rng.normal(0, 20, SHAPE)).astype(np.float32)
    pixel = 1.3e-6
    rows = np.arange(10, 10 + n_z)
    coords = {"z": ("z", rows * pixel, {"units": "m"}),
              "y": ("y", (np.arange(n_y) - (n_y - 1) / 2) * pixel, {"units": "m"}),
              "x": ("x", (np.arange(n_x) - (n_x - 1) / 2) * pixel, {"units": "m"}),
              "row": ("z", rows, {"long_name": "detector row"}),
              "center": ("z", np.linspace(2.1, 2.6, n_z), {"units": "pixel"})}
    attrs = {"center": 2.35, "filter": "ramp", "algorithm": "fbp", "pixel_size": pixel,
             "units": "1/m", "rows": "10:18", "slab_rows": SLAB_ROWS, "padded": True}
    return volume, coords, attrs


VOLUME, COORDS, ATTRS = _case()


def _open(path, fingerprint="run-1", **kw):
    return open_sink(path, shape=SHAPE, coords=COORDS, attrs=ATTRS, slab_rows=SLAB_ROWS,
                     fingerprint=fingerprint, **kw)


def _write(sink, indices, volume=VOLUME):
    for i in indices:
        start, stop = sink.slabs[i]
        sink.write(i, volume[start:stop])


def _reference(tmp_path, fmt):
    """The same volume saved by save_volume, opened by open_volume."""
    ref = xr.DataArray(VOLUME, dims=("z", "y", "x"), coords=COORDS, attrs=ATTRS, name="volume")
    out = tmp_path / f"ref-{NAMES[fmt]}"
    save_volume(ref, out)
    return open_volume(out)


def _assert_aux_coords_stored(path, fmt):
    """row and center are in the file: as coords (zarr), or where the format keeps them."""
    if fmt == "zarr":
        back = open_volume(path)
        for name in ("row", "center"):
            assert back[name].dims == ("z",)
            assert np.array_equal(back[name].values, COORDS[name][1])
            assert back[name].attrs == COORDS[name][2]
    elif fmt == "hdf5":
        import h5py
        with h5py.File(path, "r") as f:
            for name in ("row", "center"):
                assert np.array_equal(f[name][()], COORDS[name][1])
                assert json.loads(f[name].attrs["dims"]) == ["z"]
    else:
        meta = json.loads((path / "metadata.json").read_text())
        for name in ("row", "center"):
            assert meta["aux_coords"][name]["dims"] == ["z"]
            assert np.array_equal(meta["aux_coords"][name]["values"], COORDS[name][1])
            assert meta["aux_coords"][name]["attrs"] == COORDS[name][2]


@pytest.fixture(params=list(NAMES))
def fmt(request):
    return request.param


# ----------------------------------------------------------------------------- a whole run

@pytest.mark.parametrize("order", [[2, 0, 1], [1, 2, 0]])
def test_slabs_in_any_order_give_what_save_volume_gives(tmp_path, fmt, order):
    path = tmp_path / NAMES[fmt]
    sink = _open(path)
    assert sink.format == fmt
    assert sink.partial == tmp_path / f".{NAMES[fmt]}.partial" and sink.partial.exists()
    assert sink.slabs == [(0, 3), (3, 6), (6, 8)] and sink.done == set()
    _write(sink, order)
    assert sink.done == {0, 1, 2}
    assert not path.exists()  # nothing at the output before finish()
    sink.finish()
    assert not sink.partial.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAMES[fmt]]  # nothing else left
    back = open_volume(path)
    assert np.array_equal(back.values, VOLUME)
    expected = _reference(tmp_path, fmt)
    assert back.dims == expected.dims
    assert back.attrs == expected.attrs
    for name in ("z", "y", "x"):
        assert np.array_equal(back[name].values, COORDS[name][1])
        assert back[name].attrs == expected[name].attrs
    assert set(expected.coords) <= set(back.coords)
    _assert_aux_coords_stored(path, fmt)
    _assert_layout(path, fmt)
    sink.close()  # again: harmless


def _assert_layout(path, fmt):
    """The files are laid out as save_volume lays them out, without resume bookkeeping."""
    if fmt == "zarr":
        import zarr
        group = zarr.open_group(str(path), mode="r")
        assert group["volume"].chunks[0] == SLAB_ROWS and group["volume"].dtype == np.float32
        assert dict(group.attrs) == {**ATTRS, "tomolab_output": "volume"}  # no bookkeeping
    elif fmt == "hdf5":
        import h5py
        with h5py.File(path, "r") as f:
            assert dict(f.attrs) == {"tomolab_output": "volume"}  # no fingerprint, no flags
            dset = f["volume"]
            assert dset.chunks == (1,) + SHAPE[1:] and dset.compression is None
            assert dset.dtype == np.float32 and json.loads(dset.attrs["dims"]) == ["z", "y", "x"]
    else:
        names = sorted(p.name for p in path.iterdir())
        assert names == ["metadata.json"] + [f"slice_{z:05d}.tif" for z in range(SHAPE[0])]
        import tifffile
        assert np.array_equal(tifffile.imread(path / "slice_00004.tif"), VOLUME[4])
        meta = json.loads((path / "metadata.json").read_text())
        assert meta["shape"] == list(SHAPE) and meta["dtype"] == "float32"
        assert meta["attrs"] == ATTRS and meta["tomolab_output"] == "volume"


def test_zarr_layout_chunks_and_group_attrs(tmp_path, monkeypatch):
    import zarr

    # small tiles so that a slab is several chunks in y and x
    monkeypatch.setattr(_sinks, "_CHUNK_BYTES", 3 * 3 * 3 * 4)
    monkeypatch.setattr(_sinks, "_MIN_TILE", 2)
    path = tmp_path / "vol.zarr"
    sink = _open(path)
    _write(sink, [1, 2, 0])
    sink.finish()
    array = zarr.open_group(str(path), mode="r")["volume"]
    assert array.chunks == (3, 3, 3)
    assert not array.compressors  # stored raw: float noise hardly compresses
    back = open_volume(path)
    assert np.array_equal(back.values, VOLUME)
    group_attrs = xr.open_zarr(path).attrs
    assert group_attrs == {**ATTRS, "tomolab_output": "volume"}  # resume bookkeeping removed
    xr.testing.assert_identical(back.load(), _reference(tmp_path, "zarr").load())


def test_zarr_chunks_are_one_slab_high_and_at_most_16_mib(tmp_path):
    import zarr

    n = 2048
    coords = {"z": ("z", np.arange(100.0), {}), "y": ("y", np.arange(float(n)), {}),
              "x": ("x", np.arange(float(n)), {})}
    sink = open_sink(tmp_path / "big.zarr", shape=(100, n, n), coords=coords, attrs={},
                     slab_rows=64, fingerprint="f")
    chunks = zarr.open_group(str(sink.partial), mode="r")["volume"].chunks
    sink.close()
    assert chunks[0] == 64
    assert np.prod(chunks) * 4 <= 16 * 2 ** 20
    assert min(chunks[1:]) >= 256 and n % chunks[1] == 0 and n % chunks[2] == 0


# ----------------------------------------------------------------------------- resuming

_KILLED_RUN = textwrap.dedent("""
    import os, pickle, signal, sys
    import numpy as np
    from tomolab.io import open_sink
    kwargs, volume, indices = pickle.load(open(sys.argv[1], "rb"))
    sink = open_sink(**kwargs)
    for i in indices:
        start, stop = sink.slabs[i]
        sink.write(i, volume[start:stop])
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_a_killed_process_resumes_to_the_uninterrupted_output(tmp_path, fmt):
    path = tmp_path / NAMES[fmt]
    kwargs = dict(path=str(path), shape=SHAPE, coords=COORDS, attrs=ATTRS, slab_rows=SLAB_ROWS,
                  fingerprint="run-1")
    job = tmp_path / "job.pkl"
    job.write_bytes(pickle.dumps((kwargs, VOLUME, [2, 0])))
    script = tmp_path / "killed.py"
    script.write_text(_KILLED_RUN)
    proc = subprocess.run([sys.executable, str(script), str(job)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert not path.exists()
    sink = _open(path)
    assert sink.done == {0, 2}
    _write(sink, [1])
    sink.finish()

    uninterrupted = tmp_path / ("u" + NAMES[fmt])
    ref_sink = _open(uninterrupted)
    _write(ref_sink, [0, 1, 2])
    ref_sink.finish()
    xr.testing.assert_identical(open_volume(path).load(), open_volume(uninterrupted).load())
    assert np.array_equal(open_volume(path).values, VOLUME)
    _assert_aux_coords_stored(path, fmt)


@pytest.mark.parametrize("how", ["close", "drop"])
def test_a_sink_left_unfinished_keeps_the_partial_for_the_next_run(tmp_path, fmt, how):
    import gc

    path = tmp_path / NAMES[fmt]
    sink = _open(path)
    _write(sink, [1])
    partial = sink.partial
    if how == "close":
        sink.close()
        sink.close()
        with pytest.raises(ParameterError, match="closed"):
            _write(sink, [0])
    else:  # forgotten without close(): the garbage collector releases the file
        del sink
        gc.collect()
    assert not path.exists() and partial.exists()
    again = _open(path)
    assert again.done == {1}
    _write(again, [0, 2])
    again.finish()
    assert np.array_equal(open_volume(path).values, VOLUME)


def test_zarr_temporaries_of_a_killed_write_are_removed_on_resume(tmp_path):
    path = tmp_path / "vol.zarr"
    sink = _open(path)
    _write(sink, [0])
    sink.close()
    chunk = next(p for p in (sink.partial / "volume" / "c").rglob("*") if p.is_file())
    stray = chunk.with_suffix(".0123456789abcdef0123456789abcdef.partial")  # as zarr names them
    stray.write_bytes(b"half a chunk")
    again = _open(path)
    assert again.done == {0} and not stray.exists() and chunk.exists()
    _write(again, [1, 2])
    again.finish()
    assert np.array_equal(open_volume(path).values, VOLUME)


def _fail_mid_write(monkeypatch, fmt):
    """Make the format's library write part of a slab, then fail (as a kill mid-write would)."""
    error = OSError("No space left on device")
    if fmt == "zarr":
        import zarr
        cls, name = zarr.Array, "__setitem__"
    elif fmt == "hdf5":
        import h5py
        cls, name = h5py.Dataset, "__setitem__"
    else:
        import tifffile
        real, lock, calls = tifffile.imwrite, threading.Lock(), []

        def imwrite(*args, **kwargs):
            with lock:
                calls.append(1)
                first = len(calls) == 1
            if not first:
                raise error
            return real(*args, **kwargs)

        monkeypatch.setattr(tifffile, "imwrite", imwrite)
        return
    real = getattr(cls, name)

    def setitem(self, key, value):
        if isinstance(key, slice) and key.stop - key.start > 1:
            real(self, slice(key.start, key.start + 1), value[:1])  # the first row lands
            raise error
        return real(self, key, value)

    monkeypatch.setattr(cls, name, setitem)


def test_a_write_that_fails_midway_leaves_its_slab_not_done(tmp_path, fmt, monkeypatch):
    path = tmp_path / NAMES[fmt]
    sink = _open(path)
    _write(sink, [0])
    with monkeypatch.context() as patch:
        _fail_mid_write(patch, fmt)
        with pytest.raises(OutputError, match="no space left on the disk.*kept and resumed"):
            _write(sink, [1], volume=VOLUME + 1000)
    assert sink.done == {0}
    sink.close()
    again = _open(path)
    assert again.done == {0}
    _write(again, [1, 2])
    again.finish()
    assert np.array_equal(open_volume(path).values, VOLUME)
    if fmt == "tiff":
        assert not list(path.glob(".*")), "temporary files left in the output"


def test_another_fingerprint_starts_afresh(tmp_path, fmt):
    path = tmp_path / NAMES[fmt]
    sink = _open(path)
    _write(sink, [0, 1], volume=VOLUME + 1000)
    sink.close()
    with pytest.warns(UserWarning, match="other parameters; starting afresh"):
        fresh = _open(path, fingerprint="run-2")
    assert fresh.done == set()
    with pytest.raises(ParameterError, match="slabs are not written yet"):
        fresh.finish()
    _write(fresh, [2, 1, 0])
    fresh.finish()
    assert np.array_equal(open_volume(path).values, VOLUME)


def _corrupt(partial, how):
    if how == "truncated":
        size = partial.stat().st_size
        with open(partial, "r+b") as f:
            f.truncate(size // 2)
    elif how == "zarr.json":
        (partial / "zarr.json").write_text("{ not json")
    elif how == "slabs_done":
        import zarr
        zarr.open_group(str(partial), mode="r+").attrs["slabs_done"] = "garbage"
    elif how == "progress":
        (partial / ".progress.json").write_bytes(b"\x00\xff garbage")
    else:
        raise AssertionError(how)


@pytest.mark.parametrize("fmt, how", [("hdf5", "truncated"), ("zarr", "zarr.json"),
                                      ("zarr", "slabs_done"), ("tiff", "progress")])
def test_an_unreadable_partial_starts_afresh(tmp_path, fmt, how):
    path = tmp_path / NAMES[fmt]
    sink = _open(path)
    _write(sink, [0, 2])
    sink.close()
    _corrupt(sink.partial, how)
    with pytest.warns(UserWarning, match="unreadable partial output.*starting afresh"):
        fresh = _open(path)
    assert fresh.done == set()
    _write(fresh, [0, 1, 2])
    fresh.finish()
    back = open_volume(path)
    assert np.array_equal(back.values, VOLUME) and back.attrs["filter"] == "ramp"


def test_a_partial_of_another_format_under_the_same_name_starts_afresh(tmp_path):
    sink = _open(tmp_path / "vol", format="zarr")
    _write(sink, [0])
    sink.close()
    with pytest.warns(UserWarning, match="starting afresh"):
        fresh = _open(tmp_path / "vol")  # a TIFF folder, by the name
    assert fresh.format == "tiff" and fresh.done == set()
    fresh.close()


# ----------------------------------------------------------------------------- refusals

def test_an_existing_output_is_kept_unless_overwrite(tmp_path, fmt):
    path = tmp_path / NAMES[fmt]
    first = _open(path)
    _write(first, [0, 1, 2], volume=VOLUME + 1000)
    first.finish()
    with pytest.raises(ParameterError, match=r"path=.*already exists.*overwrite=True"):
        _open(path)
    sink = _open(path, overwrite=True)
    _write(sink, [2, 0, 1])
    assert np.array_equal(open_volume(path).values, VOLUME + 1000)  # the old one, until finish
    sink.finish()
    assert np.array_equal(open_volume(path).values, VOLUME)
    assert sorted(p.name for p in tmp_path.iterdir()) == [NAMES[fmt]]


def test_finish_refuses_when_the_output_appeared_meanwhile(tmp_path):
    path = tmp_path / "vol.h5"
    sink = _open(path)
    _write(sink, [0, 1, 2])
    path.write_bytes(b"someone else's")
    with pytest.raises(ParameterError, match="already exists"):
        sink.finish()
    assert path.read_bytes() == b"someone else's"
    sink.close()
    with pytest.raises(ParameterError, match="replaces only an output that tomolab wrote"):
        _open(path, overwrite=True)  # a file tomolab did not write stays, even with overwrite
    assert path.read_bytes() == b"someone else's"
    path.unlink()
    again = _open(path)
    assert again.done == {0, 1, 2}
    again.close()


def test_finish_with_missing_slabs_refuses_and_keeps_the_partial(tmp_path, fmt):
    path = tmp_path / NAMES[fmt]
    sink = _open(path)
    _write(sink, [0, 2])
    with pytest.raises(ParameterError, match=r"slabs=.*missing 1.*1 of 3 slabs"):
        sink.finish()
    assert not path.exists() and sink.partial.exists()
    _write(sink, [1])
    sink.finish()
    assert np.array_equal(open_volume(path).values, VOLUME)


@pytest.mark.parametrize("name", ["vol.h5", "vol"])
def test_multiscale_is_for_zarr_only(tmp_path, name):
    with pytest.raises(ParameterError, match=r"multiscale=2.*zarr only.*NAME.zarr"):
        _open(tmp_path / name, multiscale=2)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("kwargs, where", [
    ({"multiscale": 9}, "multiscale"), ({"multiscale": -1}, "multiscale"),
    ({"slab_rows": 0}, "slab_rows"), ({"shape": (8, 6)}, "shape"),
    ({"fingerprint": ""}, "fingerprint"), ({"format": "png"}, "format"),
    ({"coords": {"row": ("z", np.arange(5), {})}}, "coords"),
    ({"coords": {"x": ("y", np.arange(6.0), {})}}, "coords"),
])
def test_bad_arguments_are_refused(tmp_path, kwargs, where):
    args = dict(shape=SHAPE, coords=COORDS, attrs=ATTRS, slab_rows=SLAB_ROWS, fingerprint="f")
    args.update(kwargs)
    with pytest.raises(ParameterError, match=where):
        open_sink(tmp_path / "vol.zarr", **args)
    assert not list(tmp_path.iterdir())


def test_write_refuses_a_slab_of_the_wrong_shape_or_index(tmp_path, fmt):
    sink = _open(tmp_path / NAMES[fmt])
    with pytest.raises(ParameterError, match=r"z rows 6:8"):
        sink.write(2, VOLUME[:3])
    with pytest.raises(ParameterError, match="no such slab"):
        sink.write(3, VOLUME[:2])
    assert sink.done == set()
    sink.close()


# ----------------------------------------------------------------------------- pyramid

def test_zarr_multiscale_levels_are_block_means_with_ome_metadata(tmp_path):
    import zarr

    path = tmp_path / "vol.zarr"
    sink = _open(path, multiscale=2)
    _write(sink, [1, 0, 2])
    sink.finish()
    store = xr.open_zarr(path)
    expected = VOLUME[:8, :6, :4].reshape(4, 2, 3, 2, 2, 2).mean(axis=(1, 3, 5))
    assert np.allclose(store["level1"].values, expected, rtol=1e-6)
    assert store["level2"].shape == (2, 1, 1)
    attrs = dict(zarr.open_group(str(path), mode="r").attrs)
    assert {k: v for k, v in attrs.items() if k != "multiscales"} == {**ATTRS, "tomolab_output": "volume"}
    assert xr.open_zarr(path).attrs == attrs
    meta = attrs["multiscales"][0]
    assert meta["version"] == "0.4" and meta["type"] == "mean"
    assert [d["path"] for d in meta["datasets"]] == ["volume", "level1", "level2"]
    scales = [d["coordinateTransformations"][0]["scale"] for d in meta["datasets"]]
    assert np.allclose(scales, [[ATTRS["pixel_size"] * f] * 3 for f in (1, 2, 4)])
    assert meta["axes"] == [{"name": a, "type": "space", "unit": "meter"} for a in "zyx"]
    assert np.array_equal(open_volume(path).values, VOLUME)


def test_zarr_pyramid_left_by_a_killed_finish_is_rebuilt(tmp_path):
    path = tmp_path / "vol.zarr"
    sink = _open(path, multiscale=1)
    _write(sink, [0, 1, 2])
    # as if killed while finishing: a pyramid level of other data is in the partial store
    _sinks._write_pyramid(sink.partial, 1, (3, 6, 5))
    import zarr
    zarr.open_group(str(sink.partial), mode="r+")["level1"][:] = -1
    sink.close()
    again = _open(path, multiscale=1)
    assert again.done == {0, 1, 2}
    again.finish()
    expected = VOLUME[:8, :6, :4].reshape(4, 2, 3, 2, 2, 2).mean(axis=(1, 3, 5))
    assert np.allclose(xr.open_zarr(path)["level1"].values, expected, rtol=1e-6)

