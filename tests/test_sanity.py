"""Physically impossible input is refused, suspicious input warned about (issue 11).

One table of cases, each built from real files (tomolab's writers, then h5py or
tifffile to spoil them as a facility's software would) or real arguments; each
asserts that the message is one line naming the file or parameter, the value
and the fix. The CLI cases run ``python -m tomolab.cli`` in a subprocess.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

import tomolab
from tomolab.data import simulate_arrays
from tomolab.errors import ParameterError, ScanFormatError, TomolabError
from tomolab.io import (
    ScanWarning,
    from_arrays,
    open_scan,
    write_dxchange,
    write_nxtomo,
    write_tiff_stack,
)
from tomolab.io._tiff import HEADER_SAMPLE

ROOT = Path(__file__).resolve().parents[1]
N_ANGLES, N_ROWS, N_COLS = 32, 6, 24
RADIANS = np.linspace(0, np.pi, N_ANGLES, endpoint=False)


def arrays(dtype=np.uint16):
    rng = np.random.default_rng(1)
    proj = rng.integers(1000, 3000, (N_ANGLES, N_ROWS, N_COLS)).astype(dtype)
    flats = np.full((3, N_ROWS, N_COLS), 4000, dtype)
    darks = np.full((2, N_ROWS, N_COLS), 100, dtype)
    return proj, flats, darks


def write(kind, path, angles=RADIANS, **meta):
    proj, flats, darks = arrays()
    writer = {"dxchange": write_dxchange, "nxtomo": write_nxtomo, "tiff": write_tiff_stack}[kind]
    writer(path, proj, angles, flats, darks, **meta)
    return path


def spoil_dataset(path, name, data=None, **attrs):
    """Replace an HDF5 dataset's values and/or attributes, as another program might."""
    with h5py.File(path, "r+") as f:
        old = f[name]
        if data is not None:
            kept = dict(old.attrs)
            del f[name]
            f[name] = data
            f[name].attrs.update(kept)
        for key, value in attrs.items():
            if value is None:
                del f[name].attrs[key]
            else:
                f[name].attrs[key] = value


def small_scan(**changes):
    proj, flats, darks = arrays()
    parts = {"projections": proj, "angles": RADIANS, "flats": flats, "darks": darks, **changes}
    return from_arrays(parts.pop("projections"), parts.pop("angles"), **parts)


def sim_scan(**changes):
    """A simulated scan (a real sample, so computing on it is meaningful)."""
    proj, angles, flats, darks, params = simulate_arrays(48, 4, 64)
    parts = {"projections": proj, "angles": angles, "flats": flats, "darks": darks, **changes}
    scan = from_arrays(parts.pop("projections"), parts.pop("angles"), **parts)
    scan.attrs["true_center"] = params.center
    return scan


# --- the cases: id -> (action(tmp_path), expected class, pieces the message must hold) ------

def _deg_labelled_rad(tmp):
    path = write("dxchange", tmp / "scan.h5")
    spoil_dataset(path, "/exchange/theta", units="rad")
    return lambda: open_scan(path), [f"{path}:/exchange/theta", "degrees taken for radians",
                                     "0 to 174.375 rad", "units attribute"]


def _rad_without_units(tmp):
    path = write("dxchange", tmp / "scan.h5")
    spoil_dataset(path, "/exchange/theta", data=RADIANS, units=None)
    return lambda: open_scan(path), [f"{path}:/exchange/theta", "radians taken for degrees",
                                     "0 to 3.043 deg", "units attribute"]


def _nxtomo_rad_labelled_deg(tmp):
    path = write("nxtomo", tmp / "scan.nx")
    with h5py.File(path, "r") as f:
        entry = next(iter(f))
        stored = f[f"{entry}/sample/rotation_angle"][()]
    spoil_dataset(path, f"{entry}/sample/rotation_angle", data=np.deg2rad(stored))
    return lambda: open_scan(path), [f"{path}:/{entry}/sample/rotation_angle",
                                     "radians taken for degrees", "units attribute"]


def _tiff_angles_in_radians(tmp):
    folder = write("tiff", tmp / "stack")
    np.savetxt(folder / "angles.txt", RADIANS)
    return lambda: open_scan(folder), [str(folder / "angles.txt"), "radians taken for degrees"]


def _given_degrees(tmp):
    path = write("dxchange", tmp / "scan.h5")
    return (lambda: open_scan(path, angles=np.rad2deg(RADIANS)),
            ["angles=", "degrees taken for radians", "numpy.deg2rad"])


def _from_arrays_degrees(tmp):
    return (lambda: small_scan(angles=np.rad2deg(RADIANS)),
            ["angles=", "degrees taken for radians", "numpy.deg2rad"])


def _nan_angle(tmp):
    path = write("dxchange", tmp / "scan.h5")
    theta = np.rad2deg(RADIANS)
    theta[5] = np.nan
    spoil_dataset(path, "/exchange/theta", data=theta)
    return lambda: open_scan(path), [f"{path}:/exchange/theta", "not finite", "index 5", "nan"]


def _same_angle(tmp):
    path = write("dxchange", tmp / "scan.h5")
    spoil_dataset(path, "/exchange/theta", data=np.zeros(N_ANGLES))
    return lambda: open_scan(path), [f"{path}:/exchange/theta", "same angle", "0.0", "angles="]


def _repeated_angles_open(tmp):
    angles = RADIANS.copy()
    angles[7] = angles[6]
    path = write("dxchange", tmp / "scan.h5", angles=angles)
    return lambda: open_scan(path), [f"{path}:/exchange/theta", "repeated", "index 7",
                                     "drop_duplicates"]


def _repeated_angles_compute(tmp):
    angles = RADIANS.copy()
    angles[7] = angles[6]
    path = write("dxchange", tmp / "scan.h5", angles=angles)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ScanWarning)
        scan = open_scan(path)
    return (lambda: tomolab.reconstruct(scan, center=12.0, backend="numpy"),
            [str(path), "angles", "repeated", "index 7", 'drop_duplicates("angle")'])


def _unordered_angles_open(tmp):
    angles = RADIANS.copy()
    angles[[10, 11]] = angles[[11, 10]]
    path = write("nxtomo", tmp / "scan.nx", angles=angles)
    return lambda: open_scan(path), ["rotation_angle", "not in order", "index 11", "sortby"]


def _unordered_angles_compute(tmp):
    angles = RADIANS.copy()
    angles[[10, 11]] = angles[[11, 10]]
    scan = sim_scan(angles=np.linspace(0, np.pi, 64, endpoint=False)[
        np.r_[0:10, 11, 10, 12:64]])
    return (lambda: tomolab.find_center(scan, backend="numpy"),
            ["angles", "not in order", "index 11", 'scan.sortby("angle")'])


def _pixel_size_in_um_as_m(tmp):
    return lambda: small_scan(pixel_size=6.5), ["pixel_size=6.5", "1 nm to 1 mm", "pass pixel_size in m"]


def _energy_in_ev(tmp):
    return lambda: small_scan(energy=25000.0), ["energy=25000.0", "0.1 keV to 500 keV", "pass energy in keV"]


def _negative_distance(tmp):
    return lambda: small_scan(distance=-0.1), ["distance=-0.1", "negative", "pass distance in m"]


def _file_pixel_size_in_m(tmp):
    path = write("dxchange", tmp / "scan.h5", pixel_size=6.5e-6)
    resolution = "/measurement/instrument/detection_system/objective/resolution"
    spoil_dataset(path, resolution, units="m")  # 6.5 stored as metres
    return lambda: open_scan(path), [f"{path}:{resolution}", "6.5 m", "1 nm to 1 mm",
                                     "scan.attrs['pixel_size']"]


def _file_distance_mm_as_m(tmp):
    path = write("nxtomo", tmp / "scan.nx", distance=0.65)
    with h5py.File(path, "r") as f:
        entry = next(iter(f))
    spoil_dataset(path, f"{entry}/instrument/detector/distance", data=650.0)
    return lambda: open_scan(path), ["instrument/detector/distance", "650 m", "0 m to 100 m",
                                     "scan.attrs['distance']"]


def _file_energy_negative(tmp):
    path = write("dxchange", tmp / "scan.h5", energy=20.0)
    energy = "/measurement/instrument/monochromator/energy"
    spoil_dataset(path, energy, data=-20.0)
    return lambda: open_scan(path), [f"{path}:{energy}", "-20 keV is negative",
                                     "scan.attrs['energy']"]


def _attrs_pixel_size(tmp):
    scan = sim_scan()
    scan.attrs["pixel_size"] = 6.5
    return (lambda: tomolab.reconstruct(scan, center=24.0, backend="numpy"),
            ["scan.attrs['pixel_size']=6.5", "1 nm to 1 mm", "delete it"])


def _sweep_phase_energy(tmp):
    scan = sim_scan()
    return (lambda: tomolab.sweep_phase(scan, center=24.0, energy=25000.0, backend="numpy"),
            ["energy=25000.0", "0.1 keV to 500 keV", "energy=20.0"])


def _hdf5_dtype(dtype, label):
    def case(tmp):
        path = tmp / "scan.h5"
        proj, flats, darks = arrays()
        with h5py.File(path, "w") as f:
            f["/exchange/data"] = proj.astype(dtype) if dtype != "compound" else \
                np.zeros(proj.shape, [("counts", "u2"), ("flag", "u1")])
            f["/exchange/data_white"] = flats
            f["/exchange/data_dark"] = darks
            f["/exchange/theta"] = np.rad2deg(RADIANS)
        return lambda: open_scan(path), [f"{path}:/exchange/data", label, "cannot be detector counts",
                                         "from_arrays"]
    return case


def _from_arrays_complex(tmp):
    proj, _, _ = arrays()
    return (lambda: small_scan(projections=proj.astype(np.complex64)),
            ["projections", "complex", "cannot be detector counts"])


def _signed_negative(tmp):
    proj, flats, darks = arrays(np.uint16)
    proj[:, :, :] = 40000  # a bright scan, past int16's range
    path = tmp / "scan.h5"
    with h5py.File(path, "w") as f:
        f["/exchange/data"] = proj.view(np.int16)
        f["/exchange/data_white"] = (flats * 12).view(np.int16)
        f["/exchange/data_dark"] = darks.view(np.int16)
        f["/exchange/theta"] = np.rad2deg(RADIANS)
    scan = open_scan(path)
    return (lambda: tomolab.find_center(scan, backend="numpy"),
            [str(path), "projections=-25536", "negative counts", 'astype("uint16")'])


def _signed_negative_flats(tmp):
    proj, flats, darks = arrays(np.uint16)
    path = tmp / "scan.h5"
    with h5py.File(path, "w") as f:
        f["/exchange/data"] = proj.astype(np.int16)
        f["/exchange/data_white"] = np.full(flats.shape, 50000, np.uint16).view(np.int16)
        f["/exchange/data_dark"] = darks.astype(np.int16)
        f["/exchange/theta"] = np.rad2deg(RADIANS)
    scan = open_scan(path)
    return (lambda: tomolab.reconstruct(scan, center=12.0, backend="numpy"),
            [str(path), "flats=-15536", "negative counts", 'scan["flats"]'])


def _swapped_fields(tmp):
    proj, flats, darks = arrays()
    path = tmp / "scan.h5"
    write_dxchange(path, proj, RADIANS, darks, flats)  # flats and darks swapped
    scan = open_scan(path)
    return (lambda: tomolab.reconstruct(scan, center=12.0, backend="numpy"),
            [str(path), "flats/darks", "mean 100 vs 4000", "not brighter", "normalize=False"])


def _tiff_group(tmp, odd):
    folder = tmp / "stack"
    (folder / "projections").mkdir(parents=True)
    for i in range(6):
        tifffile.imwrite(folder / "projections" / f"proj_{i:03d}.tif",
                         odd if i == 3 else np.ones((16, 32), np.uint16))
    return folder, folder / "projections" / "proj_003.tif"


def _tiff_transposed(tmp):
    folder, odd = _tiff_group(tmp, np.ones((32, 16), np.uint16))  # same bytes, other shape
    return lambda: open_scan(folder), [str(odd), "(32, 16)", "proj_000.tif is (16, 32)",
                                       "remove or replace the odd file"]


def _tiff_other_dtype(tmp):
    folder, odd = _tiff_group(tmp, np.ones((16, 32), np.int16))  # same bytes, other dtype
    return lambda: open_scan(folder), [str(odd), "int16", "uint16", "remove or replace"]


def _tiff_other_size(tmp):
    folder, odd = _tiff_group(tmp, np.ones((20, 32), np.uint16))
    return lambda: open_scan(folder), [str(odd), "(20, 32)", "remove or replace"]


def _tiff_odd_file_beyond_the_sample(tmp):
    """An odd file the opening sample skips is caught when its page is read."""
    n = HEADER_SAMPLE + 6
    sampled = set(np.linspace(0, n - 1, HEADER_SAMPLE).astype(int))
    odd_index = next(i for i in range(n) if i not in sampled)
    folder = tmp / "stack"
    folder.mkdir()
    for i in range(n):
        image = np.ones((32, 16) if i == odd_index else (16, 32), np.uint16)
        tifffile.imwrite(folder / f"proj_{i:03d}.tif", image)
    scan = open_scan(folder, angles=np.linspace(0, np.pi, n, endpoint=False))
    odd = folder / f"proj_{odd_index:03d}.tif"
    return lambda: scan["projections"].values, [str(odd), "(32, 16)", "remove or replace"]


def _api(call, pieces):
    def case(tmp):
        scan = sim_scan()
        return lambda: call(scan), pieces
    return case


CASES = {
    # angles
    "dxchange degrees labelled rad": (_deg_labelled_rad, ParameterError),
    "dxchange radians with no unit (degrees assumed)": (_rad_without_units, ParameterError),
    "nxtomo radians labelled degree": (_nxtomo_rad_labelled_deg, ParameterError),
    "tiff angles.txt in radians": (_tiff_angles_in_radians, ParameterError),
    "open_scan(angles=degrees)": (_given_degrees, ParameterError),
    "from_arrays(angles=degrees)": (_from_arrays_degrees, ParameterError),
    "NaN angle": (_nan_angle, ParameterError),
    "every angle the same": (_same_angle, ParameterError),
    "repeated angle, opening": (_repeated_angles_open, ScanWarning),
    "repeated angle, computing": (_repeated_angles_compute, ParameterError),
    "unordered angles, opening": (_unordered_angles_open, ScanWarning),
    "unordered angles, computing": (_unordered_angles_compute, ParameterError),
    # pixel size, energy, distance
    "from_arrays pixel size in um as m": (_pixel_size_in_um_as_m, ParameterError),
    "from_arrays energy in eV": (_energy_in_ev, ParameterError),
    "from_arrays negative distance": (_negative_distance, ParameterError),
    "write_dxchange pixel size in um as m": (
        lambda tmp: (lambda: write("dxchange", tmp / "scan.h5", pixel_size=6.5),
                     ["pixel_size=6.5", "1 nm to 1 mm"]), ParameterError),
    "write_nxtomo energy in eV": (
        lambda tmp: (lambda: write("nxtomo", tmp / "scan.nx", energy=25000.0),
                     ["energy=25000.0", "0.1 keV to 500 keV"]), ParameterError),
    "file pixel size labelled m": (_file_pixel_size_in_m, ScanWarning),
    "file distance mm stored as m": (_file_distance_mm_as_m, ScanWarning),
    "scan.attrs pixel size set wrong": (_attrs_pixel_size, ParameterError),
    "sweep_phase energy in eV": (_sweep_phase_energy, ParameterError),
    # dtypes and counts
    "bool projections": (_hdf5_dtype(bool, "boolean"), ScanFormatError),
    "complex projections": (_hdf5_dtype(np.complex64, "complex"), ScanFormatError),
    "compound projections": (_hdf5_dtype("compound", "compound"), ScanFormatError),
    "from_arrays complex": (_from_arrays_complex, ScanFormatError),
    "uint16 stored as int16 (negative)": (_signed_negative, ParameterError),
    "flats uint16 stored as int16": (_signed_negative_flats, ParameterError),
    "flats and darks swapped": (_swapped_fields, ParameterError),
    # TIFF stacks
    "tiff transposed file": (_tiff_transposed, ScanFormatError),
    "tiff file of another dtype": (_tiff_other_dtype, ScanFormatError),
    "tiff file of another size": (_tiff_other_size, ScanFormatError),
    "tiff odd file past the opening sample": (_tiff_odd_file_beyond_the_sample, ScanFormatError),
    "angles given 2-D": (lambda tmp: (lambda: small_scan(angles=np.stack([RADIANS, RADIANS])),
                                      ["angles=(2, 32)", "must be 1-D", "32 angles"]),
                         ParameterError),
    "angles given as text": (lambda tmp: (lambda: small_scan(angles=["a"] * N_ANGLES),
                                          ["angles=", "['a', 'a', 'a'] ...", "not numbers"]),
                             ParameterError),
    "file energy negative": (_file_energy_negative, ScanWarning),
    "phase={'energy': 0.05}": (_api(lambda s: tomolab.reconstruct(
        s, center=24.0, phase={"delta_beta": 100.0, "energy": 0.05, "distance": 0.1, "pixel_size": 1e-6},
        backend="numpy"),
        ["phase['energy']=0.05", "0.1 keV to 500 keV", "pass energy in keV"]), ParameterError),
    "flats all NaN": (_api(lambda s: tomolab.find_center(
        s.assign(flats=s.flats.astype(np.float32) * np.nan), backend="numpy"),
        ["flats", "no finite value", "normalize=False"]), ParameterError),
    # parameters
    "row=1.0": (_api(lambda s: tomolab.find_center(s, row=1.0), ["row=1.0", "whole detector row",
                                                                "between 0 and 3"]),
                ParameterError),
    "center='24' (text)": (_api(lambda s: tomolab.reconstruct(s, center="24"),
                                ["center='24'", "not text", "pass a number"]), ParameterError),
    "center=True": (_api(lambda s: tomolab.reconstruct(s, center=True, backend="numpy"),
                         ["center=True", "not True or False", '"auto"']), ParameterError),
    "center=numpy.bool_": (_api(lambda s: tomolab.reconstruct(s, center=np.bool_(False)),
                                ["center=", "False", "not True or False"]), ParameterError),
    "centers=[True, False]": (_api(lambda s: tomolab.sweep_center(s, centers=[True, False]),
                                   ["centers=", "not True or False", "numpy.arange"]),
                              ParameterError),
    "size=0": (_api(lambda s: tomolab.reconstruct(s, center=24.0, size=0),
                    ["size=0", "whole number >= 1", "detector width 48"]), ParameterError),
    "size=32.0": (_api(lambda s: tomolab.reconstruct(s, center=24.0, size=32.0),
                       ["size=32.0", "whole number", "size=48"]), ParameterError),
    "sweep size=12.5": (_api(lambda s: tomolab.sweep_center(s, centers=[23, 24], size=12.5),
                             ["size=12.5", "whole number"]), ParameterError),
    "rows=(0.5, 3)": (_api(lambda s: tomolab.reconstruct(s, center=24.0, rows=(0.5, 3)),
                           ["rows=(0.5, 3)", "whole row numbers", "rows='0:4'"]), ParameterError),
    "rows=True": (_api(lambda s: tomolab.reconstruct(s, center=24.0, rows=True),
                       ["rows=True", "not True or False", "rows='0:4'"]), ParameterError),
    "rows_averaged=2.5": (_api(lambda s: tomolab.find_center(s, rows_averaged=2.5),
                               ["rows_averaged=2.5", "whole number", "rows_averaged=5"]),
                          ParameterError),
    "lazy=0.5": (_api(lambda s: tomolab.reconstruct(s, center=24.0, lazy=0.5),
                      ["lazy=0.5", "whole number", "lazy=True"]), ParameterError),
    "slab_rows=8.0": (_api(lambda s: tomolab.reconstruct_to(s, ROOT / "never.zarr", center=24.0,
                                                            slab_rows=8.0),
                           ["slab_rows=8.0", "slab_rows=32"]), ParameterError),
    "binning=2.0": (_api(lambda s: tomolab.sweep_center(s, centers=[23, 24], binning=2.0),
                         ["binning=2.0", "whole number"]), ParameterError),
}


def check_message(message: str, pieces):
    assert "\n" not in message, message
    for piece in pieces:
        assert str(piece) in message, (piece, message)


@pytest.mark.parametrize("case", list(CASES))
def test_each_case_names_the_thing_the_value_and_the_fix(tmp_path, case):
    build, expected = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # building the case may warn; the action is checked below
        action, pieces = build(tmp_path)
    if issubclass(expected, Warning):
        with pytest.warns(expected) as record:
            action()
        messages = [str(w.message) for w in record if isinstance(w.message, expected)]
        assert any(all(str(p) in m for p in pieces) for m in messages), (pieces, messages)
        check_message(next(m for m in messages if all(str(p) in m for p in pieces)), pieces)
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ScanWarning)
            with pytest.raises(expected) as excinfo:
                action()
        check_message(str(excinfo.value), pieces)
        assert "fix:" in str(excinfo.value)
        assert isinstance(excinfo.value, TomolabError)
    assert not (ROOT / "never.zarr").exists()


# --- what stays accepted ------------------------------------------------------------------

@pytest.mark.parametrize("angles", [
    pytest.param(RADIANS[::-1].copy(), id="turning the other way"),
    pytest.param(np.linspace(0, 4 * np.pi, N_ANGLES, endpoint=False), id="two turns"),
    pytest.param(np.linspace(-np.pi / 2, np.pi / 2, N_ANGLES, endpoint=False), id="from -90°"),
])
def test_plausible_angles_open_without_a_word(angles):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scan = small_scan(angles=angles)
    np.testing.assert_array_equal(scan["angle"].values, angles)


def test_plausible_metadata_is_kept(tmp_path):
    path = write("nxtomo", tmp_path / "scan.nx", pixel_size=20e-9, energy=0.5, distance=38.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        scan = open_scan(path)
    assert scan.attrs["pixel_size"] == pytest.approx(20e-9)
    assert scan.attrs["energy"] == pytest.approx(0.5)
    assert scan.attrs["distance"] == pytest.approx(38.0)


def test_implausible_file_metadata_is_left_out_not_kept(tmp_path):
    path = write("nxtomo", tmp_path / "scan.nx", distance=0.65)
    with h5py.File(path, "r+") as f:
        f[f"{next(iter(f))}/instrument/detector/distance"][()] = 650.0
    with pytest.warns(ScanWarning, match="650 m"):
        scan = open_scan(path)
    assert "distance" not in scan.attrs and "distance_path" not in scan.attrs


def test_sorting_and_dropping_repeats_is_the_fix_that_works():
    scan = sim_scan()
    order = np.r_[0:10, 11, 10, 12:64]
    with pytest.warns(ScanWarning, match="not in order"):
        shuffled = from_arrays(scan.projections.values[order], scan.angle.values[order],
                               flats=scan.flats.values, darks=scan.darks.values)
    fixed = shuffled.sortby("angle")
    a = tomolab.reconstruct(scan, center=24.0, backend="numpy")
    b = tomolab.reconstruct(fixed, center=24.0, backend="numpy")
    np.testing.assert_allclose(a.values, b.values, atol=1e-6)
    repeated = np.r_[0:64, 5]
    with pytest.warns(ScanWarning, match="repeated"):
        doubled = from_arrays(scan.projections.values[repeated], scan.angle.values[repeated],
                              flats=scan.flats.values, darks=scan.darks.values)
    c = tomolab.reconstruct(doubled.drop_duplicates("angle"), center=24.0, backend="numpy")
    np.testing.assert_allclose(a.values, c.values, atol=1e-6)


# --- dead and NaN flat pixels -------------------------------------------------------------

@pytest.mark.parametrize("spoil", ["nan", "zero", "below dark"])
def test_dead_flat_pixels_are_interpolated_and_do_not_move_the_centre(spoil):
    proj, angles, flats, darks, params = simulate_arrays(128, 8, 360)
    clean = from_arrays(proj, angles, flats=flats, darks=darks)
    flats = flats.astype(np.float32)
    column = 50  # inside the sample, 14 columns from the axis
    if spoil == "nan":
        flats[:, :, column] = np.nan
    elif spoil == "zero":
        flats[:, :, column] = 0
        proj = proj.copy()
        proj[:, :, column] = 0  # a dead detector column
    else:
        flats[:, 2:6, column] = darks.mean() - 1
    dirty = from_arrays(proj, angles, flats=flats, darks=darks)
    expected, _ = tomolab.find_center(clean, backend="numpy")
    with pytest.warns(UserWarning, match=r"pixels in rows .* interpolated") as record:
        found, _ = tomolab.find_center(dirty, backend="numpy")
    counts = [str(w.message) for w in record if "interpolated" in str(w.message)]
    assert any(f"col {column}" in m for m in counts), counts
    assert abs(found - expected) <= 0.25, (found, expected)
    assert abs(found - params.center) <= 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        volume = tomolab.reconstruct(dirty, center=expected, rows=3, backend="numpy")
    assert np.isfinite(volume.values).all()
    reference = tomolab.reconstruct(clean, center=expected, rows=3, backend="numpy")
    # the repaired column leaves at most a faint ring, not the stripe of a 1e6 transmission
    error = np.abs(volume.values - reference.values).max() / np.abs(reference.values).max()
    assert error < 0.2, error


def test_normalize_interpolates_dead_pixels_on_each_array_module(xp):
    from tomolab.arrays import to_numpy
    from tomolab.prep import defective_pixels, normalize, normalize_interpolated

    transmission = np.linspace(0.2, 0.9, 8, dtype=np.float32)[None, None].repeat(3, axis=1)
    darks = np.full((1, 3, 8), 100.0, np.float32)
    flats = np.full((2, 3, 8), 1100.0, np.float32)
    proj = (darks + 1000.0 * transmission).repeat(4, axis=0)
    flats[:, 0, 3] = np.nan      # not finite
    flats[:, 1, 0] = 100.0       # no brighter than the dark, at the detector's edge
    darks[:, 2, 5] = np.inf      # a broken dark
    bad = to_numpy(defective_pixels(xp.asarray(flats), xp.asarray(darks)))
    assert sorted(zip(*np.nonzero(bad))) == [(0, 3), (1, 0), (2, 5)]
    for out in (normalize(xp.asarray(proj), xp.asarray(flats), xp.asarray(darks)),
                normalize_interpolated(xp.asarray(proj), xp.asarray(flats), xp.asarray(flats),
                                       xp.asarray(darks))):
        out = to_numpy(out)
        assert np.isfinite(out).all()
        # a linear profile is restored exactly inside, by the nearest pixel at the edge
        np.testing.assert_allclose(out[:, 0, 3], transmission[0, 0, 3], rtol=1e-5)
        np.testing.assert_allclose(out[:, 2, 5], transmission[0, 0, 5], rtol=1e-5)
        np.testing.assert_allclose(out[:, 1, 0], transmission[0, 0, 1], rtol=1e-5)


def test_the_warning_counts_the_pixels():
    proj, angles, flats, darks, _ = simulate_arrays(64, 4, 90)
    flats = flats.astype(np.float32)
    flats[:, 1, [10, 20, 30]] = np.nan
    scan = from_arrays(proj, angles, flats=flats, darks=darks)
    with pytest.warns(UserWarning, match=r"3 of 256 detector pixels in rows 0-3 .* row 1, col 10"):
        tomolab.reconstruct(scan, center=32.0, backend="numpy")


def test_the_warning_comes_once_per_run_not_once_per_slab(tmp_path):
    proj, angles, flats, darks, _ = simulate_arrays(64, 6, 90)
    flats = flats.astype(np.float32)
    flats[:, :, 40] = np.nan
    scan = from_arrays(proj, angles, flats=flats, darks=darks)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        volume = tomolab.reconstruct_to(scan, tmp_path / "v.zarr", center=32.0, slab_rows=1,
                                        backend="numpy")
    said = [str(w.message) for w in record if "interpolated" in str(w.message)]
    assert len(said) == 1 and "6 of 384 detector pixels in rows 0-5" in said[0], said
    assert np.isfinite(volume.values).all()


# --- errors in other names (CLI flags, widget labels) -------------------------------------

def test_renamed_keeps_the_class_and_speaks_in_the_given_names():
    err = ParameterError("centre is outside the detector", where="center", value=900.0,
                         fix='pass a column between 0 and 511, or "auto"; or center=12 '
                             "with normalize=False")
    flags = err.renamed({"center": "--center", "normalize=False": "--no-normalize"})
    assert type(flags) is ParameterError and flags is not err
    assert str(flags) == ('--center=900.0: centre is outside the detector; fix: pass a column '
                          'between 0 and 511, or "auto"; or --center 12 with --no-normalize')
    labels = err.renamed({"center": "Centre"})
    assert str(labels).startswith("Centre=900.0") and "Centre: 12" in str(labels)
    assert str(err).startswith("center=900.0")  # the original is untouched
    path = ScanFormatError("no such file", where="/data/center/scan.h5", fix="check the path")
    assert str(path.renamed({"center": "--center"})) == str(path)  # paths are not parameters


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "tomolab.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300, check=False)


def _cli_swapped(tmp):
    proj, flats, darks = arrays()
    write_dxchange(tmp / "scan.h5", proj, RADIANS, darks, flats)
    return ["recon", tmp / "scan.h5", "--center", "12", "-o", tmp / "out.zarr"], \
        ["not brighter", "--no-normalize", "flats/darks"], ["normalize=False"]


def _cli_signed(tmp):
    proj, flats, darks = arrays()
    with h5py.File(tmp / "scan.h5", "w") as f:
        f["/exchange/data"] = np.full(proj.shape, 40000, np.uint16).view(np.int16)
        f["/exchange/data_white"] = np.full(flats.shape, 50000, np.uint16).view(np.int16)
        f["/exchange/data_dark"] = darks.astype(np.int16)
        f["/exchange/theta"] = np.rad2deg(RADIANS)
    return ["recon", tmp / "scan.h5", "--center", "12", "-o", tmp / "out.zarr"], \
        ["negative counts", "--no-normalize"], ["normalize=False"]


def _cli_degrees_as_rad(tmp):
    path = write("dxchange", tmp / "scan.h5")
    spoil_dataset(path, "/exchange/theta", units="rad")
    return ["recon", path, "-o", tmp / "out.zarr"], \
        [f"{path}:/exchange/theta", "degrees taken for radians"], []


def _cli_centre_outside(tmp):
    path = write("dxchange", tmp / "scan.h5")
    return ["recon", path, "--center", "1e6", "-o", tmp / "out.zarr"], \
        ["--center=1000000.0", "outside the detector"], ["center="]


def _cli_rows(tmp):
    path = write("dxchange", tmp / "scan.h5")
    return ["recon", path, "--center", "12", "--rows", "4:2", "-o", tmp / "out.zarr"], \
        ["--rows='4:2'", "--rows"], ["rows="]


def _cli_simulate_size(tmp):
    return ["simulate", tmp / "out.h5", "--size", "8"], ["--size=8", "--size 128"], ["size="]


def _cli_simulate_rows(tmp):
    return ["simulate", tmp / "out.h5", "--rows", "0"], ["--rows/--angles"], ["n_rows"]


def _cli_nan_angles(tmp):
    path = write("dxchange", tmp / "scan.h5")
    theta = np.rad2deg(RADIANS)
    theta[3] = np.nan
    spoil_dataset(path, "/exchange/theta", data=theta)
    return ["info", path], [f"{path}:/exchange/theta", "not finite", "index 3"], []


CLI_CASES = {
    "recon on swapped flats/darks": _cli_swapped,
    "recon on uint16 stored as int16": _cli_signed,
    "recon on degrees labelled rad": _cli_degrees_as_rad,
    "recon --center outside": _cli_centre_outside,
    "recon --rows empty": _cli_rows,
    "simulate --size too small": _cli_simulate_size,
    "simulate --rows 0": _cli_simulate_rows,
    "info on NaN angles": _cli_nan_angles,
}


@pytest.mark.parametrize("case", list(CLI_CASES))
def test_cli_says_it_in_one_line_with_flags(tmp_path, case):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        args, pieces, keywords = CLI_CASES[case](tmp_path)
    result = run_cli(*args)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if "Warning" not in line
             and not line.startswith("  ")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    check_message(lines[0], pieces + ["fix:"])
    for keyword in keywords:  # the api's keywords do not leak into the CLI's message
        assert not re.search(rf"(?<![-\w]){re.escape(keyword)}", lines[0]), lines[0]
    assert not (tmp_path / "out.zarr").exists() and not (tmp_path / "out.h5").exists()
