"""The command line: the demo end to end, and one-line errors for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

import tomolab
from tomolab.cli import main


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tomolab.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_demo_end_to_end(tmp_path):
    result = run_cli("demo", "--out", tmp_path / "demo", "--size", 128, "--rows", 6,
                     "--angles", 200, "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    error = float(lines["centre"].split("error")[1].split()[0])
    assert abs(error) <= 0.5
    volume = tomolab.io.open_volume(tmp_path / "demo" / "volume.zarr")
    assert volume.dims == ("z", "y", "x") and volume.shape == (6, 128, 128)
    assert abs(volume.attrs["center"] - 63.5 - error - 0.0731 * 128) < 0.006  # printed to 0.01
    from PIL import Image
    assert Image.open(tmp_path / "demo" / "middle_slice.png").size == (128, 128)


@pytest.mark.parametrize("fmt", ["dxchange", "nxtomo", "nxtomo-diamond", "tiff"])
def test_simulate_then_recon_each_layout(tmp_path, fmt, capsys):
    path = tmp_path / ("scan" if fmt == "tiff" else "scan.h5")
    assert main(["simulate", str(path), "--format", fmt, "--size", "64", "--rows", "4",
                 "--angles", "120", "--center", "35.3"]) == 0
    if fmt != "tiff":  # the simulator's truth travels in the file's root attributes
        assert abs(tomolab.open_scan(path).attrs["true_center"] - 35.3) < 1e-9
    assert main(["info", str(path)]) == 0
    assert "120" in capsys.readouterr().out
    out = tmp_path / "vol.zarr"
    assert main(["recon", str(path), "--center", "auto", "--rows", "1:3", "-o", str(out),
                 "-q", "--backend", "numpy"]) == 0
    volume = tomolab.io.open_volume(out)
    assert volume.shape == (2, 64, 64)
    assert abs(volume.attrs["center"] - 35.3) <= 0.5


@pytest.fixture
def small_scan_file(tmp_path):
    path = tmp_path / "scan.h5"
    assert main(["simulate", str(path), "--size", "48", "--rows", "4", "--angles", "60"]) == 0
    return path


@pytest.mark.parametrize("args, expected", [
    (["recon", "{missing}", "-o", "{out}"], "does-not-exist.h5"),
    (["recon", "{scan}", "--center", "500", "-o", "{out}"], "center=500.0"),
    (["recon", "{scan}", "--center", "20", "--rows", "3:99", "-o", "{out}"], "rows='3:99'"),
    (["recon", "{scan}", "--center", "20", "--filter", "nope", "-o", "{out}"], "filter='nope'"),
    (["info", "{text}"], "notes.txt"),
    (["info", "{empty}"], "empty"),
])
def test_bad_input_is_one_line_and_leaves_no_output(tmp_path, small_scan_file, args, expected):
    text = tmp_path / "notes.txt"
    text.write_text("not a scan\n")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out.zarr"
    subs = {"missing": tmp_path / "does-not-exist.h5", "out": out, "scan": small_scan_file,
            "text": text, "empty": tmp_path / "empty"}
    result = run_cli(*[a.format(**subs) for a in args])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0] and "fix" in lines[0]
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.zarr")]


def test_recon_refuses_to_overwrite(tmp_path, small_scan_file):
    out = tmp_path / "vol.zarr"
    out.mkdir()
    result = run_cli("recon", small_scan_file, "--center", "24", "-o", out)
    assert result.returncode == 2 and "--overwrite" in result.stderr


def test_bad_center_text_is_an_argparse_error(small_scan_file, tmp_path):
    result = run_cli("recon", small_scan_file, "--center", "middle", "-o", tmp_path / "v.zarr")
    assert result.returncode == 2 and "--center='middle'" in result.stderr
