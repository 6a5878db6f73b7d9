"""algorithm="auto": the fastest method that meets the accuracy bar on each backend, recorded in attrs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import tomolab
from tomolab.cli import main
from tomolab.data.phantom import default_phantom, phantom_slice, project_slice
from tomolab.errors import ParameterError
from tomolab.recon import ALGORITHMS, AUTO, fbp


def _line_integral_scan(sinogram, angles, n_rows=2):
    """A scan whose projections are already line integrals: ``n_rows`` copies of one sinogram."""
    projections = np.repeat(sinogram[:, None, :], n_rows, axis=1).astype(np.float32)
    with warnings.catch_warnings():  # no flats or darks: these are line integrals
        warnings.simplefilter("ignore", tomolab.io.ScanWarning)
        return tomolab.from_arrays(projections, angles)


def _recon(scan, center, **options):
    return tomolab.reconstruct(scan, center=center, normalize=False, log=False, **options).values


def _inside(n, fraction=0.4):
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    return np.hypot(yy, xx) < fraction * n


def _rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


def test_every_auto_entry_names_a_registered_algorithm():
    assert set(AUTO) == {"numpy", "cupy"}
    assert set(AUTO.values()) <= set(ALGORITHMS)


def test_auto_is_the_default_and_attrs_record_what_ran():
    scan = tomolab.data.simulate_scan(64, n_rows=3, n_angles=90)
    center = scan.attrs["true_center"]
    default = tomolab.reconstruct(scan, center=center, backend="numpy")
    named = tomolab.reconstruct(scan, center=center, backend="numpy", algorithm=AUTO["numpy"])
    assert default.attrs["algorithm"] == AUTO["numpy"]
    assert default.attrs["algorithm_requested"] == "auto"
    assert named.attrs["algorithm_requested"] == AUTO["numpy"]
    assert np.array_equal(default.values, named.values)


def test_auto_is_no_less_accurate_than_fbp_on_the_phantom(backend):
    """RMS error against the analytic phantom no worse than FBP ramp at the same size."""
    n, n_angles = 128, 200
    center = (n - 1) / 2 + 1.7
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    shapes = default_phantom(n - 8, 16)
    scan = _line_integral_scan(project_slice(shapes, angles, np.arange(n), [0.0],
                                             center=center)[:, 0, :], angles)
    truth = phantom_slice(shapes, 0.0, n)
    inside = _inside(n)
    auto = _recon(scan, center, backend=backend)
    reference = _recon(scan, center, backend=backend, algorithm="fbp", filter="ramp")
    assert _rms((auto[0] - truth)[inside]) <= _rms((reference[0] - truth)[inside])


def test_auto_is_within_1e_3_of_fbp_on_a_smooth_phantom(backend):
    """Gaussian blobs (exact projections): the two methods differ by FBP's linear interpolation.

    That difference falls with the blobs' width (1e-4 at 512² with the same relative widths,
    benchmarks/RESULTS.md); auto must stay within 1e-3 of FBP and no farther from the truth.
    """
    n, n_angles = 128, 200
    center = (n - 1) / 2 + 1.3
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    rng = np.random.default_rng(0)
    blobs = [(rng.uniform(-0.2, 0.2) * n, rng.uniform(-0.2, 0.2) * n,
              rng.uniform(0.06, 0.1) * n, rng.uniform(0.5, 1.5)) for _ in range(8)]
    cols = np.arange(n) - center
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    sinogram = np.zeros((n_angles, n))
    truth = np.zeros((n, n))
    for x0, y0, sigma, value in blobs:
        s0 = x0 * np.cos(angles) + y0 * np.sin(angles)
        sinogram += value * sigma * np.sqrt(2 * np.pi) * np.exp(
            -(cols[None] - s0[:, None]) ** 2 / (2 * sigma ** 2))
        truth += value * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma ** 2))
    scan = _line_integral_scan(sinogram, angles)
    inside = _inside(n)
    auto = _recon(scan, center, backend=backend)[0]
    reference = _recon(scan, center, backend=backend, algorithm="fbp")[0]
    assert _rms((auto - reference)[inside]) / _rms(reference[inside]) < 1e-3
    assert _rms((auto - truth)[inside]) <= _rms((reference - truth)[inside])


def test_fbp_named_explicitly_still_runs_fbp():
    n, n_angles = 64, 90
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    shapes = default_phantom(n - 8, 4)
    sinogram = project_slice(shapes, angles, np.arange(n), [0.0], center=32.2)[:, 0, :]
    scan = _line_integral_scan(sinogram, angles, n_rows=1)
    volume = tomolab.reconstruct(scan, center=32.2, normalize=False, log=False, backend="numpy",
                                 algorithm="fbp")
    assert volume.attrs["algorithm"] == volume.attrs["algorithm_requested"] == "fbp"
    direct = fbp(sinogram[None].astype(np.float32), angles, center=32.2)
    assert np.array_equal(volume.values, direct)


def test_a_volume_does_not_depend_on_how_it_is_cut_into_slabs():
    """gridrec pairs slices in one complex sinogram; the api runs the CPU one slice at a time,
    so whole, in parts and lazily in slabs give the same bits (resume and clusters rely on it)."""
    scan = tomolab.data.simulate_scan(48, n_rows=7, n_angles=60, seed=4)
    center = scan.attrs["true_center"]
    whole = tomolab.reconstruct(scan, center=center, backend="numpy")
    assert whole.attrs["algorithm"] == "gridrec"
    parts = [tomolab.reconstruct(scan, center=center, rows=r, backend="numpy").values
             for r in ("0:3", "3:4", "4:7")]
    assert np.array_equal(whole.values, np.concatenate(parts))
    lazy = tomolab.reconstruct(scan, center=center, backend="numpy", lazy=2)
    assert np.array_equal(whole.values, lazy.values)
    tilted = [center + 0.1 * i for i in range(7)]  # one centre per row, folded in per slice
    per_row = tomolab.reconstruct(scan, center=tilted, backend="numpy").values
    assert np.array_equal(per_row[3:5], tomolab.reconstruct(scan, center=tilted[3:5], rows="3:5",
                                                            backend="numpy").values)


def test_an_unknown_algorithm_lists_auto_among_the_choices():
    scan = tomolab.data.simulate_scan(32, n_rows=2, n_angles=30)
    with pytest.raises(ParameterError, match=r"algorithm='sart'.*'auto', .*'fbp', 'gridrec'"):
        tomolab.reconstruct(scan, center=16.0, algorithm="sart", backend="numpy")


@pytest.mark.parametrize("flag, expected", [([], ("gridrec", "auto")), (["--algorithm", "fbp"],
                                                                         ("fbp", "fbp"))])
def test_the_cli_default_is_auto(tmp_path, flag, expected):
    scan = tmp_path / "scan.h5"
    assert main(["simulate", str(scan), "--size", "48", "--rows", "2", "--angles", "60",
                 "-q"]) == 0
    out = tmp_path / "vol.h5"
    assert main(["recon", str(scan), "--center", "26", "-o", str(out), "-q", "--backend",
                 "numpy", *flag]) == 0
    attrs = tomolab.io.open_volume(out).attrs
    assert (attrs["algorithm"], attrs["algorithm_requested"]) == expected


def test_the_cli_names_its_flag_for_an_unknown_algorithm(tmp_path, capsys):
    scan = tmp_path / "scan.h5"
    assert main(["simulate", str(scan), "--size", "32", "--rows", "2", "--angles", "30",
                 "-q"]) == 0
    capsys.readouterr()
    assert main(["recon", str(scan), "--center", "16", "-o", str(tmp_path / "v.zarr"),
                 "--algorithm", "sart", "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--algorithm='sart'" in err and "'auto'" in err
    assert not (tmp_path / "v.zarr").exists()


def test_the_panel_offers_auto_first_and_uses_it():
    pytest.importorskip("ipywidgets")
    pytest.importorskip("holoviews")
    from tomolab.widgets import ReconstructionPanel

    scan = tomolab.data.simulate_scan(48, n_rows=3, n_angles=60)
    panel = ReconstructionPanel(scan, backend="numpy", background=False)
    assert panel.algorithm_input.value == "auto"
    assert list(panel.algorithm_input.options) == ["auto", *sorted(ALGORITHMS)]
    panel.center_input.value = float(scan.attrs["true_center"])
    panel.rows_input.value = "1:2"
    volume = panel.reconstruct()
    assert panel.task.state == "done", panel.task.error
    assert volume.attrs["algorithm_requested"] == "auto"
    assert volume.attrs["algorithm"] == AUTO["numpy"]
