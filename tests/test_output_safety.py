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
