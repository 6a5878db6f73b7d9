"""An output never replaces the input scan, a folder holding it, or the current folder."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

import tomolab
from tomolab.errors import ParameterError


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def beamtime(tmp_path):
    """A beamtime folder: a scan file and a logbook beside it."""
    folder = tmp_path / "beamtime"
    folder.mkdir()
    scan = tomolab.data.simulate_scan(48, n_rows=4, n_angles=60)
    path = folder / "scan.h5"
    tomolab.io.write_dxchange(path, scan.projections.values, scan.angle.values,
                              scan.flats.values, scan.darks.values)
    (folder / "logbook.txt").write_text("sample 7, 20 keV\n")
    return folder, path, scan.attrs["true_center"]


@pytest.mark.parametrize("target", ["scan", "folder"])
def test_reconstruct_to_never_replaces_the_input_or_its_folder(beamtime, target):
    folder, path, center = beamtime
    before = {p.name: _digest(p) for p in folder.iterdir()}
    scan = tomolab.open_scan(path)
    output = path if target == "scan" else folder
    with pytest.raises(ParameterError, match="would replace (the input scan|a folder that holds)"):
        tomolab.reconstruct_to(scan, output, center=center, backend="numpy", overwrite=True)
    assert {p.name: _digest(p) for p in folder.iterdir()} == before


def test_save_volume_never_replaces_the_current_folder_or_the_scan(beamtime, monkeypatch):
    folder, path, center = beamtime
    volume = tomolab.reconstruct(tomolab.open_scan(path), center=center, backend="numpy")
    monkeypatch.chdir(folder)
    for output in (".", "..", folder, path):
        with pytest.raises(ParameterError, match="would replace"):
            tomolab.save_volume(volume, output, overwrite=True)
    assert (folder / "logbook.txt").read_text() == "sample 7, 20 keV\n"
    # an earlier output of its own may still be replaced
    tomolab.save_volume(volume, "volume.zarr")
    tomolab.save_volume(volume, "volume.zarr", overwrite=True)


@pytest.mark.parametrize("output", [".", "scan.h5", "../beamtime"])
def test_cli_refuses_in_one_line_and_destroys_nothing(beamtime, output):
    folder, path, _ = beamtime
    before = {p.name: _digest(p) for p in folder.iterdir()}
    result = subprocess.run([sys.executable, "-m", "tomolab.cli", "recon", "scan.h5", "--center",
                             "24", "--backend", "numpy", "-o", output, "--overwrite"],
                            cwd=folder, capture_output=True, text=True)
    assert result.returncode == 2
    assert "would replace" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert {p.name: _digest(p) for p in folder.iterdir()} == before


# ----------------------------------------------------------------------------- own outputs only

def _volume(seed=0):
    import numpy as np
    import xarray as xr

    data = np.random.default_rng(seed).random((3, 4, 5), dtype=np.float32)
    return xr.DataArray(data, dims=("z", "y", "x"), attrs={"center": 2.0}, name="volume")


def _foreign(path, kind):
    """Something at ``path`` that tomolab did not write."""
    import h5py
    import numpy as np

    if kind == "hdf5 file":
        with h5py.File(path, "w") as f:
            f["data"] = np.arange(5)
    elif kind == "zarr store":
        _volume().to_dataset().to_zarr(path, consolidated=False)  # by xarray, not tomolab
    elif kind == "tiff folder":
        path.mkdir()
        (path / "slice_00000.tif").write_bytes(b"not tomolab's")
        (path / "metadata.json").write_text("{}")
    elif kind == "folder with notes":
        path.mkdir()
        (path / "notes.txt").write_text("beamtime notes")
    else:
        raise AssertionError(kind)


def _snapshot(path):
    if path.is_file():
        return {".": _digest(path)}
    return {str(p.relative_to(path)): _digest(p) for p in sorted(path.rglob("*")) if p.is_file()}


_NAME = {"hdf5 file": "vol.h5", "zarr store": "vol.zarr", "tiff folder": "vol",
         "folder with notes": "vol"}


@pytest.mark.parametrize("kind", list(_NAME))
@pytest.mark.parametrize("writer", ["save_volume", "reconstruct_to"])
def test_overwrite_never_replaces_what_tomolab_did_not_write(tmp_path, kind, writer):
    path = tmp_path / _NAME[kind]
    _foreign(path, kind)
    before = _snapshot(path)
    with pytest.raises(ParameterError, match="replaces only an output that tomolab wrote.*"
                                             "remove it yourself"):
        if writer == "save_volume":
            tomolab.save_volume(_volume(), path, overwrite=True)
        else:
            scan = tomolab.data.simulate_scan(32, n_rows=2, n_angles=30)
            tomolab.reconstruct_to(scan, path, center=15.5, backend="numpy", overwrite=True)
    assert _snapshot(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no partial, no lock


@pytest.mark.parametrize("name", ["vol.zarr", "vol.h5", "vol"])
def test_overwrite_replaces_an_own_output_but_not_one_with_foreign_files_in_it(tmp_path, name):
    path = tmp_path / name
    tomolab.save_volume(_volume(1), path)
    tomolab.save_volume(_volume(2), path, overwrite=True)  # its own output: replaced
    assert (tomolab.io.open_volume(path).values == _volume(2).values).all()
    if path.suffix == ".h5":
        return
    inner = path / ("volume" if name.endswith(".zarr") else ".")
    (inner / "logbook.txt").write_text("do not lose me")
    with pytest.raises(ParameterError, match="other file|files tomolab did not write"):
        tomolab.save_volume(_volume(3), path, overwrite=True)
    assert (inner / "logbook.txt").read_text() == "do not lose me"
    assert (tomolab.io.open_volume(path).values == _volume(2).values).all()


def test_scans_carry_the_marker_and_overwrite_respects_it(tmp_path):
    import numpy as np

    proj, angles = np.ones((3, 2, 2), np.uint16), [0.0, 1.0, 2.0]
    frames = {"flats": 4 * proj[:1], "darks": 0 * proj[:1]}
    for name, write in (("scan.h5", tomolab.io.write_dxchange), ("scan.nx", tomolab.io.write_nxtomo),
                        ("stack", tomolab.io.write_tiff_stack)):
        path = tmp_path / name
        write(path, proj, angles, **frames)
        write(path, 2 * proj, angles, **frames, overwrite=True)  # tomolab's own scan
        assert "tomolab_output" not in tomolab.open_scan(path).attrs  # a marker, not metadata
    _foreign(tmp_path / "other.h5", "hdf5 file")
    with pytest.raises(ParameterError, match="did not write"):
        tomolab.io.write_dxchange(tmp_path / "other.h5", proj, angles, overwrite=True)


@pytest.mark.parametrize("kind", ["hdf5 file", "folder with notes"])
def test_cli_overwrite_refuses_what_tomolab_did_not_write_in_one_line(beamtime, kind):
    folder, _, _ = beamtime
    target = folder / ("notes.h5" if kind == "hdf5 file" else "results")
    _foreign(target, kind)
    before = {p.name: _snapshot(p) for p in folder.iterdir()}
    for argv in (["recon", "scan.h5", "--center", "24", "--backend", "numpy", "-o", target.name,
                  "--overwrite"],
                 ["simulate", target.name, "--size", "32", "--overwrite"]):
        result = subprocess.run([sys.executable, "-m", "tomolab.cli", *argv], cwd=folder,
                                capture_output=True, text=True, check=False)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "--overwrite replaces only an output that tomolab wrote" in result.stderr
        assert "Traceback" not in result.stderr
    assert {p.name: _snapshot(p) for p in folder.iterdir()} == before


@pytest.mark.parametrize("output, message", [
    ("scan.h5/vol.zarr", "a part of the path above it is a file"),
    ("x" * 300 + ".zarr", "File name too long"),
])
def test_cli_unusable_output_paths_give_one_line(beamtime, output, message):
    folder, _, _ = beamtime
    before = {p.name: _snapshot(p) for p in folder.iterdir()}
    result = subprocess.run([sys.executable, "-m", "tomolab.cli", "recon", "scan.h5", "--center",
                             "24", "--backend", "numpy", "-o", output, "--overwrite"],
                            cwd=folder, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert {p.name: _snapshot(p) for p in folder.iterdir()} == before


def test_a_volume_never_replaces_a_scan_nor_a_scan_a_volume(tmp_path):
    import numpy as np

    scan = tmp_path / "converted.h5"  # e.g. the user's data, converted to DXchange by tomolab
    proj = np.ones((3, 2, 2), np.uint16)
    tomolab.io.write_dxchange(scan, proj, [0.0, 1.0, 2.0], flats=2 * proj[:1], darks=0 * proj[:1])
    before = _digest(scan)
    with pytest.raises(ParameterError, match="replaces only a volume that tomolab wrote, and "
                                             "this is an HDF5 scan"):
        tomolab.save_volume(_volume(), scan, overwrite=True)
    source = tomolab.data.simulate_scan(32, n_rows=2, n_angles=30)
    with pytest.raises(ParameterError, match="replaces only a volume"):
        tomolab.reconstruct_to(source, scan, center=15.5, backend="numpy", overwrite=True)
    assert _digest(scan) == before
    volume = tmp_path / "vol.h5"
    tomolab.save_volume(_volume(), volume)
    with pytest.raises(ParameterError, match="replaces only a scan that tomolab wrote, and "
                                             "this is an HDF5 volume"):
        tomolab.io.write_dxchange(volume, proj, [0.0, 1.0, 2.0], overwrite=True)
