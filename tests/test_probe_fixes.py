"""Bad inputs that benchmarks/probe_bad_inputs.py found weak or bad, each now a clear error.

Each case is refused with a TomolabError naming the parameter (or the widget's label), the
value and a fix, and leaves nothing at the output path.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

import tomolab
from tomolab.errors import ParameterError


@pytest.fixture(scope="module")
def arrays():
    return tomolab.data.simulate_arrays(48, 2, 60)


@pytest.fixture(scope="module")
def scan(arrays):
    projections, angles, flats, darks, params = arrays
    return tomolab.from_arrays(projections, angles, flats, darks,
                               pixel_size=params.pixel_size, energy=params.energy,
                               distance=params.distance)


def _refused(call, place: str, value: str):
    with pytest.raises(ParameterError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    assert place in message and value in message and "fix:" in message, message
    return message


@pytest.mark.parametrize("chunks", [0, -3])
def test_from_arrays_refuses_chunks_below_one(arrays, chunks):
    projections, angles = arrays[:2]
    _refused(lambda: tomolab.from_arrays(projections, angles, chunks=chunks), "chunks",
             str(chunks))


@pytest.mark.parametrize("call", ["reconstruct", "find_center", "sweep_center"])
@pytest.mark.parametrize("value", ["no", 1, 2.0])
def test_normalize_must_be_a_bool(scan, call, value):
    fn = getattr(tomolab, call)
    kw = {"center": 24.0} if call == "reconstruct" else {}
    _refused(lambda: fn(scan, normalize=value, backend="numpy", **kw), "normalize",
             repr(value))


@pytest.mark.parametrize("value", ["yes", 0])
def test_log_must_be_a_bool(scan, value):
    _refused(lambda: tomolab.reconstruct(scan, center=24.0, log=value, backend="numpy"), "log",
             repr(value))


@pytest.mark.parametrize("value", ["yes", 1.5, "False"])
@pytest.mark.parametrize("writer", ["reconstruct_to", "save_volume", "write_dxchange"])
def test_overwrite_must_be_a_bool(scan, arrays, tmp_path, value, writer):
    projections, angles, flats, darks, _ = arrays
    calls = {
        "reconstruct_to": lambda: tomolab.reconstruct_to(scan, tmp_path / "v.zarr", center=24.0,
                                                         overwrite=value, backend="numpy"),
        "save_volume": lambda: tomolab.save_volume(
            tomolab.reconstruct(scan, center=24.0, backend="numpy"), tmp_path / "v.zarr",
            overwrite=value),
        "write_dxchange": lambda: tomolab.io.write_dxchange(tmp_path / "v.h5", projections,
                                                            angles, flats, darks,
                                                            overwrite=value)}
    _refused(calls[writer], "overwrite", repr(value))
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a partial


@pytest.mark.parametrize("blend", [-1.0, float("nan"), "wide", True])
def test_stitch_360_refuses_a_bad_blend(arrays, blend):
    projections, _, flats, darks, _ = arrays
    full_turn = tomolab.from_arrays(projections, np.linspace(0, 2 * np.pi, 60, endpoint=False),
                                    flats, darks)
    _refused(lambda: tomolab.stitch_360(full_turn, center=40.0, blend=blend, backend="numpy"),
             "blend", repr(blend))


def test_python_m_tomolab_runs_the_command():
    done = subprocess.run([sys.executable, "-m", "tomolab", "--version"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("tomolab ")


def test_defective_flat_pixels_warning_names_the_fields_the_count_and_the_fix(arrays):
    projections, angles, flats, darks, _ = arrays
    dead = flats.copy()
    dead[:, 1, 20] = 0
    scan = tomolab.from_arrays(projections, angles, dead, darks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = tomolab.reconstruct(scan, center=24.0, backend="numpy")
    said = [str(w.message) for w in caught if "flats/darks" in str(w.message)]
    assert len(said) == 1, [str(w.message) for w in caught]
    assert "1 of 96 detector pixels" in said[0] and "fix:" in said[0] and "\n" not in said[0]
    assert np.isfinite(volume.values).all()


@pytest.fixture
def panel(scan):
    pytest.importorskip("ipywidgets")
    pytest.importorskip("holoviews")
    from tomolab.widgets import ReconstructionPanel

    return ReconstructionPanel(scan, backend="numpy", background=False)


@pytest.mark.parametrize("value", [-1.0, 0.0, float("nan")])
def test_panel_delta_beta_error_speaks_in_its_label(panel, value):
    import traitlets

    with pytest.raises(traitlets.TraitError) as info:
        panel.delta_beta = value
    message = str(info.value)
    assert message.startswith(f"δ/β={value!r}") and "fix:" in message
    assert "delta_beta" not in message


@pytest.mark.parametrize("typed", [1e9, -5.0])
def test_panel_reconstruct_refuses_the_refused_centre_in_its_box(panel, typed):
    adopted = panel.center
    panel.center_input.value = typed  # refused: the box shows it, the panel keeps `adopted`
    assert panel.center == adopted
    panel.reconstruct()
    # never a volume at a centre other than the one the box shows
    assert panel.volume is None
    assert panel.task.error.startswith(f"centre px={typed!r}"), panel.task.error
    panel.center_input.value = adopted + 0.5
    panel.reconstruct()
    assert panel.task.error == "" and panel.volume.attrs["center"] == adopted + 0.5


def test_a_metadata_value_that_is_no_number_is_said_not_dropped(arrays, tmp_path):
    import h5py

    projections, angles, flats, darks, params = arrays
    path = tmp_path / "scan.h5"
    tomolab.io.write_dxchange(path, projections, angles, flats, darks,
                              pixel_size=params.pixel_size, energy=params.energy)
    node = "measurement/instrument/detection_system/objective/resolution"
    with h5py.File(path, "r+") as f:
        del f[node]
        f[node] = "six microns"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scan = tomolab.open_scan(path)
    said = [str(w.message) for w in caught if "six microns" in str(w.message)]
    assert len(said) == 1 and node in said[0] and "fix:" in said[0], [str(w.message) for w in caught]
    assert scan.attrs.get("pixel_size") is None and scan.attrs["energy"] == params.energy


@pytest.mark.parametrize("name", ["scan.h5", "scan.zarr"])
def test_cli_simulate_tiff_refuses_a_file_name(tmp_path, name):
    done = subprocess.run([sys.executable, "-m", "tomolab", "simulate", str(tmp_path / name),
                           "--size", "32", "--format", "tiff", "-q"], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("tomolab simulate: error: OUTPUT=") and name in done.stderr
    assert "--format dxchange" in done.stderr and done.stderr.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tomolab", *map(str, args)], capture_output=True,
                          text=True, timeout=120, cwd=cwd, check=False)


@pytest.mark.parametrize("args, command, said", [
    (["recon", "x.h5", "-o", "v.zarr", "--format", "jpeg"], "recon", "--format"),
    (["recon", "x.h5"], "recon", "-o/--output"),
    (["info"], "info", "file"),
    (["simulate", "s.h5", "--size", "12.5"], "simulate", "--size"),
    (["recon", "x.h5", "-o", "v.zarr", "--workers", "0"], "recon", "--workers"),
    (["bogus"], "", "COMMAND")])
def test_cli_argument_errors_are_one_line(tmp_path, args, command, said):
    done = _cli(*args, cwd=tmp_path)
    assert done.returncode == 2
    head = f"tomolab {command}: error: " if command else "tomolab: error: "
    assert done.stderr.startswith(head) and said in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "fix:" in done.stderr and "usage" not in done.stderr


@pytest.mark.parametrize("args, said", [
    (["simulate", "s.h5", "--size", "32", "--rings", "-0.5"], "--rings=-0.5"),
    (["simulate", "s.h5", "--size", "32", "--zingers", "2"], "--zingers=2.0"),
    (["recon", "SCAN", "-o", "", "--center", "20"], "-o/--output=''"),
    (["recon", "SCAN", "-o", "v.zarr", "--no-log", "--center", "20"], "--no-log:"),
    (["demo", "--out", "SCAN", "--size", "32"], "--out="),
])
def test_cli_values_refused_in_flags(tmp_path, arrays, args, said):
    projections, angles, flats, darks, _ = arrays
    scan = tmp_path / "scan.h5"
    tomolab.io.write_dxchange(scan, projections, angles, flats, darks)
    before = sorted(p.name for p in tmp_path.iterdir())
    done = _cli(*[str(scan) if a == "SCAN" else a for a in args], cwd=tmp_path)
    assert done.returncode == 2
    assert said in done.stderr and "fix:" in done.stderr and done.stderr.count("\n") == 1, \
        done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written


@pytest.mark.parametrize("name, value", [("ring_errors", -0.5), ("zingers", 2.0),
                                         ("ring_errors", float("nan")), ("zingers", True)])
def test_simulation_refuses_fractions_out_of_range(name, value):
    _refused(lambda: tomolab.data.simulate_scan(32, **{name: value}), name, repr(value))


def test_cli_simulate_refuses_what_the_disk_cannot_hold_before_writing(tmp_path):
    done = _cli("simulate", tmp_path / "huge.h5", "--size", "4096", "--angles", "10000000", "-q")
    assert done.returncode == 2
    assert "huge.h5" in done.stderr and "TiB" in done.stderr and "fix:" in done.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("col", [10, 0, 47])  # inside, and at either edge of the detector
def test_nonfinite_projection_pixels_are_filled_and_said(arrays, bad, col):
    projections, angles, flats, darks, _ = arrays
    clean = projections.astype(np.float32)
    reference = tomolab.reconstruct(tomolab.from_arrays(clean, angles, flats, darks), center=24.0,
                                    backend="numpy")
    dirty = clean.copy()
    dirty[5, 1, col] = bad
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        volume = tomolab.reconstruct(tomolab.from_arrays(dirty, angles, flats, darks),
                                     center=24.0, backend="numpy")
    said = [str(w.message) for w in caught if "not finite" in str(w.message)]
    assert len(said) == 1 and "1 pixel is" in said[0] and f"col {col}" in said[0], said
    # one pixel of one projection: a local change, never a streak of -log's largest value
    error = np.abs(volume.values - reference.values).max() / np.abs(reference.values).max()
    assert error < 0.05
