"""16-bit outputs of reconstruct_to: float16, and uint16 with a recorded scale and offset."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import h5py
import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr

import tomolab
from tomolab.api import volume as volume_module
from tomolab.cli import main
from tomolab.errors import Cancelled, ParameterError

FORMATS = {"zarr": "vol.zarr", "hdf5": "vol.h5", "tiff": "vol_tiff"}


@pytest.fixture(scope="module")
def case():
    """A simulated scan and its float32 volume (in 1/m: values up to ~7e4, past float16's 65504)."""
    scan = tomolab.data.simulate_scan(48, n_rows=7, n_angles=60, seed=5)
    center = scan.attrs["true_center"]
    reference = tomolab.reconstruct(scan, center=center, backend="numpy").values
    return scan, center, reference


def _run(case, path, **options):
    scan, center, _ = case
    return tomolab.reconstruct_to(scan, path, center=center, backend="numpy", slab_rows=2,
                                  **options)


def _stored(path, fmt):
    """The stored array of an output as the file holds it (not decoded)."""
    if fmt == "zarr":
        return zarr.open_group(str(path), mode="r")["volume"][...]
    if fmt == "hdf5":
        with h5py.File(path, "r") as f:
            return f["volume"][...]
    return np.stack([tifffile.imread(p) for p in sorted(path.glob("slice_*.tif"))])


def _outside_uint16(values, scale, offset):
    """How many values the uint16 encoding must clip: round((v - offset) / scale) off 0..65535."""
    steps = np.rint((values.astype(np.float64) - offset) / scale)
    return int(np.count_nonzero((steps < 0) | (steps > 65535)))


def _half_step(scale, values):
    """Half a step, and the one rounding to float32 of the decoded value."""
    return scale / 2 + float(np.spacing(np.float32(np.abs(values).max())))


@pytest.mark.parametrize("fmt", FORMATS)
def test_uint16_comes_back_within_half_a_step(case, tmp_path, fmt):
    _, _, reference = case
    path = tmp_path / FORMATS[fmt]
    volume = _run(case, path, dtype="uint16")
    assert volume.dtype == np.float32 and volume.encoding["dtype"] == np.uint16
    stored = _stored(path, fmt)
    assert stored.dtype == np.uint16 and stored.shape == reference.shape
    scale, offset = volume.encoding["scale_factor"], volume.encoding["add_offset"]
    lo, hi = volume.attrs["value_range"]
    assert scale == pytest.approx((hi - lo) / 65535) and offset == lo
    assert "preview of rows" in volume.attrs["value_range_source"]
    assert volume.attrs["output_dtype"] == "uint16"
    # a preview of three rows may miss the extremes of others: what it clips is counted, the
    # rest (nearly all) comes back within half a step
    clipped = _outside_uint16(reference, scale, offset)
    assert volume.attrs["clipped_voxels"] == clipped < 1e-3 * reference.size
    inside = (reference >= lo) & (reference <= hi)
    assert np.count_nonzero(inside) == reference.size - clipped
    assert np.abs(volume.values - reference)[inside].max() <= _half_step(scale, reference)
    assert np.array_equal(volume.values, (stored * scale + offset).astype(np.float32))


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_given_range_clips_and_counts_what_falls_outside(case, tmp_path, fmt):
    _, _, reference = case
    lo, hi = (float(v) for v in np.percentile(reference, [10, 95]))
    volume = _run(case, tmp_path / FORMATS[fmt], dtype="uint16", value_range=(lo, hi))
    scale = volume.encoding["scale_factor"]
    assert volume.attrs["value_range"] == pytest.approx([lo, hi])
    assert volume.attrs["value_range_source"] == "given"
    expected = _outside_uint16(reference, scale, lo)
    assert volume.attrs["clipped_voxels"] == expected > 0
    back = volume.values
    inside = (reference >= lo) & (reference <= hi)
    assert np.abs(back - reference)[inside].max() <= _half_step(scale, reference)
    assert np.allclose(back[reference < lo - scale], lo) and np.allclose(back[reference > hi + scale], hi)


@pytest.mark.parametrize("fmt", FORMATS)
def test_float16_within_1e_3_and_clipped_past_its_largest_value(case, tmp_path, fmt):
    _, _, reference = case
    path = tmp_path / FORMATS[fmt]
    volume = _run(case, path, dtype="float16")
    assert _stored(path, fmt).dtype == np.float16
    assert volume.dtype == np.float32 and volume.encoding["dtype"] == np.float16
    largest = float(np.finfo(np.float16).max)
    normal = (np.abs(reference) >= np.finfo(np.float16).tiny) & (np.abs(reference) <= largest)
    relative = np.abs(volume.values - reference)[normal] / np.abs(reference[normal])
    assert relative.max() <= 1e-3
    assert volume.attrs["clipped_voxels"] == np.count_nonzero(np.abs(reference) > largest)
    assert np.all(np.abs(volume.values[np.abs(reference) > largest]) == largest)


@pytest.mark.parametrize("fmt", ["zarr", "hdf5", "tiff"])
@pytest.mark.parametrize("given", [False, True])
def test_a_resumed_uint16_run_keeps_its_scale_and_counts(case, tmp_path, monkeypatch, fmt, given):
    """Cancelled after its first slabs and resumed: the uninterrupted run's bytes and counts,
    with the scale recorded before the first slab (not a new preview, here made to differ)."""
    _, _, reference = case
    options = {"dtype": "uint16"}
    if given:
        options["value_range"] = tuple(float(v) for v in np.percentile(reference, [5, 90]))
    whole = _run(case, tmp_path / ("whole_" + FORMATS[fmt]), **options)
    path = tmp_path / FORMATS[fmt]
    seen = []
    with pytest.raises(Cancelled):
        _run(case, path, progress=lambda done, total: seen.append(done),
             cancel=lambda: len(seen) > 2, **options)
    assert not path.exists() and path.with_name(f".{path.name}.partial").exists()
    monkeypatch.setattr(volume_module, "PREVIEW_MARGIN", 0.5)  # a fresh preview would differ
    resumed = _run(case, path, **options)
    assert resumed.encoding["scale_factor"] == whole.encoding["scale_factor"]
    assert resumed.attrs["clipped_voxels"] == whole.attrs["clipped_voxels"]
    assert np.array_equal(_stored(path, fmt), _stored(tmp_path / ("whole_" + FORMATS[fmt]), fmt))
    if not given:  # and a fresh run would have chosen another range
        other = _run(case, tmp_path / ("other_" + FORMATS[fmt]), **options)
        assert other.encoding["scale_factor"] != whole.encoding["scale_factor"]


@pytest.mark.parametrize("fmt", ["zarr", "tiff"])
def test_region_writers_of_other_processes_store_and_count_alike(tmp_path, fmt):
    """The writers a dask cluster's workers get (pickled) encode and count as the sink does."""
    from tomolab.io import open_sink, uint16_encoding

    rng = np.random.default_rng(1)
    data = rng.normal(0, 1, (5, 6, 4)).astype(np.float32)
    coords = {"z": ("z", np.arange(5.0), {}), "y": ("y", np.arange(6.0), {}),
              "x": ("x", np.arange(4.0), {})}
    path = tmp_path / FORMATS[fmt]
    sink = open_sink(path, shape=data.shape, coords=coords, attrs={}, slab_rows=2,
                     fingerprint="f", dtype="uint16", encoding=uint16_encoding(-1.5, 1.5))
    writer = pickle.loads(pickle.dumps(sink.region_writer()))
    for index, (a, b) in enumerate(sink.slabs):
        writer.write(index, data[a:b])
    assert sink.sync_done() == {0, 1, 2}
    sink.finish()
    back = tomolab.io.open_volume(path)
    scale = back.encoding["scale_factor"]
    inside = np.abs(data) <= 1.5
    assert back.attrs["clipped_voxels"] == _outside_uint16(data, scale, -1.5) == np.count_nonzero(
        ~inside)
    assert np.abs(back.values - data)[inside].max() <= _half_step(scale, data)


def test_other_tools_decode_the_zarr_output_by_its_cf_attributes(case, tmp_path):
    _, _, reference = case
    volume = _run(case, tmp_path / "vol.zarr", dtype="uint16")
    plain = xr.open_zarr(tmp_path / "vol.zarr")["volume"]  # xarray alone, no tomolab
    lo, hi = volume.attrs["value_range"]
    inside = (reference >= lo) & (reference <= hi)
    error = np.abs(plain.values - reference)[inside]
    assert error.max() <= _half_step(volume.encoding["scale_factor"], reference)


def test_a_pyramid_of_a_uint16_volume_is_float32(case, tmp_path):
    _run(case, tmp_path / "vol.zarr", dtype="uint16", multiscale=1)
    level = xr.open_zarr(tmp_path / "vol.zarr")["level1"]
    assert level.dtype == np.float32 and level.shape == (3, 24, 24)


@pytest.mark.parametrize("options, where", [
    ({"dtype": "int8"}, "dtype='int8'"),
    ({"dtype": True}, "dtype=True"),
    ({"dtype": "float64"}, "dtype='float64'"),
    ({"value_range": (0.0, 1.0)}, "value_range"),
    ({"dtype": "uint16", "value_range": (5.0, 1.0)}, "value_range"),
    ({"dtype": "uint16", "value_range": (0.0, float("nan"))}, "value_range"),
])
def test_bad_dtype_or_range_is_one_clear_error_and_writes_nothing(case, tmp_path, options, where):
    with pytest.raises(ParameterError, match="fix:") as info:
        _run(case, tmp_path / "vol.zarr", **options)
    assert str(info.value).startswith(where) and "\n" not in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_a_uint16_sink_needs_its_encoding(tmp_path):
    from tomolab.io import open_sink

    coords = {"z": ("z", np.arange(2.0), {})}
    with pytest.raises(ParameterError, match="encoding"):
        open_sink(tmp_path / "v.h5", shape=(2, 3, 3), coords=coords, attrs={}, slab_rows=1,
                  fingerprint="f", dtype="uint16")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cli") / "scan.h5"
    assert main(["simulate", str(path), "--size", "48", "--rows", "3", "--angles", "60",
                 "-q"]) == 0
    return path


def test_the_cli_writes_uint16_with_a_given_range(scan_file, tmp_path, capsys):
    out = tmp_path / "vol.h5"
    assert main(["recon", str(scan_file), "--center", "26", "-o", str(out), "-q", "--backend",
                 "numpy", "--dtype", "uint16", "--value-range", "-2000", "60000"]) == 0
    assert "uint16" in capsys.readouterr().out
    volume = tomolab.io.open_volume(out)
    assert volume.dtype == np.float32 and volume.attrs["output_dtype"] == "uint16"
    assert volume.attrs["value_range"] == pytest.approx([-2000.0, 60000.0])
    with h5py.File(out, "r") as f:
        assert f["volume"].dtype == np.uint16
        assert f["volume"].attrs["scale_factor"] == pytest.approx(62000 / 65535)


@pytest.mark.parametrize("args, flag", [
    (["--dtype", "uint16", "--value-range", "5", "1"], "--value-range"),
    (["--value-range", "0", "1"], "--value-range"),
])
def test_the_cli_names_the_flag_of_a_bad_range(scan_file, tmp_path, capsys, args, flag):
    out = tmp_path / "vol.zarr"
    assert main(["recon", str(scan_file), "--center", "26", "-o", str(out), "-q", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"tomolab recon: error: {flag}")
    assert not out.exists()


def test_the_cli_refuses_an_unknown_dtype_in_one_line(scan_file, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["recon", str(scan_file), "-o", str(tmp_path / "v.zarr"), "--dtype", "int8"])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--dtype" in err and "'int8'" in err


def test_the_tiff_metadata_records_scale_and_offset(case, tmp_path):
    volume = _run(case, tmp_path / "vol_tiff", dtype="uint16")
    meta = json.loads((tmp_path / "vol_tiff" / "metadata.json").read_text())
    assert meta["dtype"] == "uint16"
    assert meta["attrs"]["scale_factor"] == volume.encoding["scale_factor"]
    assert meta["attrs"]["add_offset"] == volume.encoding["add_offset"]
    assert meta["attrs"]["clipped_voxels"] == volume.attrs["clipped_voxels"]


_KILLED_AFTER_ONE_SLAB = """
    import os, signal, sys
    from tomolab.io import _sinks
    real = _sinks.SlabSink.write

    def write(self, index, data):  # the real write, then a real SIGKILL
        real(self, index, data)
        os.kill(os.getpid(), signal.SIGKILL)

    _sinks.SlabSink.write = write
    from tomolab.cli import main
    sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("name", ["vol.zarr", "vol.h5", "vol_tiff"])
def test_a_killed_uint16_run_resumes_to_the_uninterrupted_bytes_and_count(tmp_path, name):
    """SIGKILLed right after its first slab (a real process, a real kill), then run again."""
    scan = tmp_path / "scan.h5"
    assert main(["simulate", str(scan), "--size", "48", "--rows", "72", "--angles", "60",
                 "--center", "24.3", "-q"]) == 0
    recon = ["recon", str(scan), "--center", "24.3", "--backend", "numpy", "-q", "--dtype",
             "uint16", "--value-range", "-1000", "20000"]  # clips: values reach 7e4
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(os.path.dirname(tomolab.__file__)), os.environ.get("PYTHONPATH", "")])}
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(_KILLED_AFTER_ONE_SLAB),
                             *recon, "-o", str(tmp_path / name)], env=env, capture_output=True,
                            text=True, timeout=300, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (tmp_path / f".{name}.partial").exists() and not (tmp_path / name).exists()
    assert main([*recon, "-o", str(tmp_path / name)]) == 0
    assert main([*recon, "-o", str(tmp_path / f"ref_{name}")]) == 0
    resumed, whole = (tomolab.io.open_volume(tmp_path / n) for n in (name, f"ref_{name}"))
    assert resumed.attrs["clipped_voxels"] == whole.attrs["clipped_voxels"] > 0
    fmt = {"vol.zarr": "zarr", "vol.h5": "hdf5", "vol_tiff": "tiff"}[name]
    assert np.array_equal(_stored(tmp_path / name, fmt), _stored(tmp_path / f"ref_{name}", fmt))


def test_a_uint16_volume_from_a_dask_cluster_is_the_one_of_one_process(tmp_path):
    """Workers (real processes) store with the scale recorded by the client before any task."""
    pytest.importorskip("distributed")
    from tomolab.cluster import start_cluster

    scan_path = tmp_path / "scan.h5"
    assert main(["simulate", str(scan_path), "--size", "48", "--rows", "12", "--angles", "60",
                 "--center", "24.3", "-q"]) == 0
    options = {"center": 24.3, "slab_rows": 2, "backend": "numpy", "dtype": "uint16"}
    alone = tomolab.reconstruct_to(tomolab.open_scan(scan_path), tmp_path / "alone.zarr",
                                   **options)
    with start_cluster("local", workers=2, threads=1) as client:
        shared = tomolab.reconstruct_to(tomolab.open_scan(scan_path), tmp_path / "shared.zarr",
                                        client=client, **options)
    assert shared.encoding["scale_factor"] == alone.encoding["scale_factor"]
    assert shared.attrs["clipped_voxels"] == alone.attrs["clipped_voxels"]
    assert np.array_equal(_stored(tmp_path / "shared.zarr", "zarr"),
                          _stored(tmp_path / "alone.zarr", "zarr"))
