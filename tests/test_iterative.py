"""Iterative reconstruction: the matched projector pair, SIRT, CGLS and TV, on numpy and cupy.

The pair is checked for adjointness with random arrays, against scikit-image's
radon and the analytic phantom; the methods against the simulated phantom
with few angles and a missing wedge, where FBP fails, and through the api
(progress and cancel per iteration, slabs, recorded parameters).
"""

from __future__ import annotations

import itertools
import subprocess
import sys

import numpy as np
import pytest

import tomolab
from tomolab.data.phantom import default_phantom, phantom_slice, project_slice
from tomolab.data.simulate import true_volume
from tomolab.engine.pipeline import line_integrals
from tomolab.errors import Cancelled, ParameterError
from tomolab.recon import (
    back_project_adjoint,
    backproject,
    cgls,
    fbp,
    forward_project,
    sirt,
    tv,
)
from tomolab.testing import gpu_test


def _host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _rel(a, b):
    a, b = _host(a).astype(np.float64), _host(b).astype(np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _disk(n, fraction=0.45):
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    return np.hypot(yy, xx) < fraction * n


# ------------------------------------------------------------------ the projector pair


@pytest.mark.parametrize("n_z, size, n_cols, center", [
    (1, 64, 64, 31.5),          # one slice, axis in the middle
    (5, 48, 70, 36.27),         # more slices than a GPU thread's four, wider detector
    (3, 80, 60, [27.1, 30.0, 33.9]),  # a centre per slice (tilted axis), narrower detector
])
def test_forward_and_adjoint_are_a_matched_pair(xp, n_z, size, n_cols, center):
    """⟨A x, y⟩ = ⟨x, Aᵀ y⟩ for random x and y, angles over a full turn and unordered."""
    rng = np.random.default_rng(n_z)
    angles = rng.uniform(0, 2 * np.pi, 37)
    x = xp.asarray(rng.standard_normal((n_z, size, size)).astype(np.float32))
    y = xp.asarray(rng.standard_normal((n_z, angles.size, n_cols)).astype(np.float32))
    Ax = forward_project(x, angles, center=center, n_cols=n_cols)
    Aty = back_project_adjoint(y, angles, center=center, size=size)
    assert Ax.shape == (n_z, angles.size, n_cols) and Aty.shape == (n_z, size, size)
    left = float(xp.sum(Ax.astype(xp.float64) * y.astype(xp.float64)))
    right = float(xp.sum(x.astype(xp.float64) * Aty.astype(xp.float64)))
    # the scale of the sums the inner products add up (random signs cancel most of it)
    scale = float(xp.sum(xp.abs(Ax.astype(xp.float64) * y)))
    assert abs(left - right) <= 1e-5 * scale
    assert abs(left - right) <= 1e-5 * abs(left) * 100  # and not only against the scale


def test_adjoint_at_0_and_90_degrees_is_fbps_backprojector():
    """Where rays run along the grid, Aᵀ is the linear-interpolation backprojector of FBP;
    in between its footprint is narrower (Joseph's weights seen from the voxel)."""
    rng = np.random.default_rng(1)
    q = rng.random((2, 2, 64), np.float32)
    along_grid = np.array([0.0, np.pi / 2])
    expected = backproject(q, along_grid, center=30.7, size=56)
    assert _rel(back_project_adjoint(q, along_grid, center=30.7, size=56), expected) < 1e-6
    oblique = np.array([np.pi / 4, 3 * np.pi / 4])
    assert _rel(back_project_adjoint(q, oblique, center=30.7, size=56),
                backproject(q, oblique, center=30.7, size=56)) > 0.05


def test_forward_projection_agrees_with_skimage_radon():
    """Up to scikit-image's conventions: y points the other way, the axis at the middle column."""
    from skimage.transform import radon

    n = 95
    image = phantom_slice(default_phantom(n, 8), 0.0, n).astype(np.float32)
    angles = np.linspace(0, np.pi, 90, endpoint=False)
    theirs = radon(np.flipud(image), np.degrees(angles), circle=False).T
    n_cols = theirs.shape[1]
    ours = forward_project(image[None], angles, center=n_cols // 2, n_cols=n_cols)[0]
    assert _rel(ours, theirs) < 0.01


def test_forward_projection_is_the_line_integral_of_the_phantom(xp):
    """A x of the sampled phantom is close to its exact line integrals, off-axis centre included."""
    n, center = 96, 50.3
    shapes = default_phantom(n, 8, radius_fraction=0.4)
    image = phantom_slice(shapes, 0.0, n)
    angles = np.linspace(0, np.pi, 120, endpoint=False)
    exact = project_slice(shapes, angles, np.arange(n), [0.0], center=center)[:, 0]
    ours = forward_project(xp.asarray(image[None], dtype=xp.float32), angles, center=center,
                           n_cols=n)[0]
    assert _rel(ours, exact) < 0.01  # the sampled phantom's edges are not the exact shapes'
    # and moving the centre by one column makes it clearly worse (the centre is used as a column)
    shifted = forward_project(image[None].astype(np.float32), angles, center=center + 1, n_cols=n)
    assert _rel(shifted[0], exact) > 5 * _rel(ours, exact)


@pytest.mark.parametrize("bad, match", [
    ({"volume_slices": np.zeros((4, 4), np.float32)}, "3D"),
    ({"volume_slices": np.zeros((1, 4, 5), np.float32)}, "square"),
    ({"center": [1.0, 2.0]}, "one per slice"),
])
def test_forward_projection_refuses_bad_input(bad, match):
    args = {"volume_slices": np.zeros((1, 4, 4), np.float32), "center": 1.5}
    args.update(bad)
    with pytest.raises(ParameterError, match=match):
        forward_project(args.pop("volume_slices"), [0.0, 1.0], n_cols=4, **args)


# ------------------------------------------------------------------ the methods


def _simulated(n, rows=(1, 2), seed=3, **options):
    """Line integrals of a simulated scan (Poisson noise), its angles, centre and the truth."""
    scan = tomolab.data.simulate_scan(n, n_rows=4, seed=seed, **options)
    sinograms = line_integrals(scan, slice(rows[0], rows[-1] + 1)).transpose(1, 0, 2)
    truth = true_volume(scan, rows=list(rows)) * scan.attrs["pixel_size"]  # per pixel
    return sinograms, scan["angle"].values, scan.attrs["true_center"], truth


def _rms(image, truth):
    mask = _disk(truth.shape[-1])
    return float(np.sqrt(np.mean((_host(image) - truth)[:, mask] ** 2)))


@pytest.mark.parametrize("case, options", [
    ("60 angles over 180°", {"n_angles": 60}),
    ("a 120° range (a ±60° wedge missing)", {"n_angles": 80, "angle_range": 2 * np.pi / 3}),
])
def test_tv_halves_fbps_error_with_few_angles_or_a_missing_wedge(xp, case, options):
    sinograms, angles, center, truth = _simulated(96, **options)
    sinograms = xp.asarray(sinograms)
    error_fbp = _rms(fbp(sinograms, angles, center=center), truth)
    error_tv = _rms(tv(sinograms, angles, center=center, iterations=150), truth)
    assert error_tv <= 0.5 * error_fbp, (case, error_tv, error_fbp)


def test_sirt_converges_towards_fbps_quality_on_a_full_scan(xp):
    """From zero, SIRT's error falls with the iterations to FBP's (or below: it is less noisy)."""
    sinograms, angles, center, truth = _simulated(64, n_angles=200, seed=5)
    sinograms = xp.asarray(sinograms)
    error_fbp = _rms(fbp(sinograms, angles, center=center), truth)
    errors = [_rms(sirt(sinograms, angles, center=center, iterations=k, initial="zero"), truth)
              for k in (5, 25, 100)]
    assert errors[0] > errors[1] > errors[2]
    assert errors[0] > 2 * error_fbp  # far from it at first
    assert errors[2] <= 1.05 * error_fbp


def test_cgls_residual_decreases_at_every_iteration(xp):
    sinograms, angles, center, _ = _simulated(64, n_angles=40, seed=7)
    sinograms = xp.asarray(sinograms)
    residuals = []
    for k in range(1, 13):
        image = cgls(sinograms, angles, center=center, iterations=k, initial="zero")
        residual = sinograms - forward_project(image, angles, center=center, n_cols=64)
        residuals.append(float(xp.linalg.norm(residual)))
    assert all(b < a for a, b in itertools.pairwise(residuals)), residuals
    assert residuals[-1] < 0.2 * residuals[0]


@pytest.mark.parametrize("method", [sirt, cgls, tv])
def test_callback_after_each_iteration_and_raising_stops_at_once(method):
    sinograms, angles, center, _ = _simulated(48, n_angles=30)
    seen = []

    def callback(k, n):
        seen.append((k, n))
        if k == 3:
            raise Cancelled("stop")
    with pytest.raises(Cancelled):
        method(sinograms, angles, center=center, iterations=9, callback=callback)
    assert seen == [(1, 9), (2, 9), (3, 9)]


def test_nonnegative_keeps_the_attenuation_at_or_above_zero():
    sinograms, angles, center, _ = _simulated(48, n_angles=30)
    for method in (sirt, tv, cgls):
        assert float(method(sinograms, angles, center=center, iterations=5, nonnegative=True).min()) >= 0
    assert float(sirt(sinograms, angles, center=center, iterations=5, nonnegative=False).min()) < 0


@pytest.mark.parametrize("bad, match", [
    ({"iterations": 0}, "iterations"), ({"iterations": 2.0}, "iterations"),
    ({"initial": "ones"}, "initial"), ({"regularization": -1.0}, "regularization"),
])
def test_methods_refuse_bad_options(bad, match):
    sino = np.zeros((1, 10, 16), np.float32)
    with pytest.raises(ParameterError, match=match):
        tv(sino, np.linspace(0, np.pi, 10, endpoint=False), center=7.5, **bad)


@gpu_test
@pytest.mark.parametrize("method, options", [(sirt, {"iterations": 20}), (cgls, {"iterations": 10}),
                                             (tv, {"iterations": 30})])
def test_gpu_and_cpu_give_the_same_slices(method, options):
    import cupy

    sinograms, angles, center, _ = _simulated(64, n_angles=60)
    on_cpu = method(sinograms, angles, center=[center, center + 0.5], **options)
    on_gpu = method(cupy.asarray(sinograms), angles, center=[center, center + 0.5], **options)
    # CGLS amplifies float32 rounding (a relative change of 1e-7 in the data moves its 10th
    # iterate by ~5e-4): the two devices differ by their summation order alone, so the bound is
    # what such a rounding-level change does on the CPU, and never looser than 1e-4 elsewhere
    nudged = sinograms * (1 + np.random.default_rng(0).normal(0, 1e-7, sinograms.shape))
    rounding = _rel(method(nudged.astype(np.float32), angles, center=[center, center + 0.5],
                           **options), on_cpu)
    assert _rel(on_gpu, on_cpu) < max(1e-4, 4 * rounding)


@gpu_test
def test_reconstruct_on_the_gpu_matches_the_cpu_with_progress_per_iteration():
    scan = tomolab.data.simulate_scan(64, n_rows=6, n_angles=40, seed=8)
    center = scan.attrs["true_center"]
    reports = []
    on_gpu = tomolab.reconstruct(scan, center=center, algorithm="tv", iterations=12, backend="cupy",
                                 progress=lambda done, total: reports.append(done))
    on_cpu = tomolab.reconstruct(scan, center=center, algorithm="tv", iterations=12,
                                 backend="numpy")
    assert _rel(on_gpu.values, on_cpu.values) < 1e-4
    assert reports == sorted(reports) and reports[-1] == 6 and len(reports) > 12


@gpu_test
def test_gpu_forward_kernels_agree():
    import cupy

    rng = np.random.default_rng(0)
    x = cupy.asarray(rng.random((6, 100, 100), np.float32))
    angles = rng.uniform(0, np.pi, 50)
    one = forward_project(x, angles, center=52.2, n_cols=110, kernel="z1")
    four = forward_project(x, angles, center=52.2, n_cols=110, kernel="z4")
    assert _rel(four, one) < 1e-6
    assert _rel(one, forward_project(x.get(), angles, center=52.2, n_cols=110)) < 1e-5


# ------------------------------------------------------------------ through the api


def test_reconstruct_runs_the_iterative_methods_and_records_them():
    scan = tomolab.data.simulate_scan(48, n_rows=4, n_angles=40, seed=2)
    center = scan.attrs["true_center"]
    volume = tomolab.reconstruct(scan, center=center, algorithm="tv", iterations=7,
                                 regularization=2e-3, backend="numpy")
    assert volume.attrs["algorithm"] == "tv" and volume.attrs["iterations"] == 7
    assert volume.attrs["regularization"] == 2e-3 and volume.attrs["nonnegative"] is True
    # the api's volume is the method's slices in 1/m
    sinograms = line_integrals(scan, slice(0, 4)).transpose(1, 0, 2)
    direct = tv(sinograms, scan["angle"].values, center=center, iterations=7, regularization=2e-3)
    assert _rel(volume.values * scan.attrs["pixel_size"], direct) < 1e-6
    sirt_attrs = tomolab.api.plan_reconstruction(scan, center=center, algorithm="sirt",
                                                 backend="numpy").attrs()
    assert sirt_attrs["iterations"] == 100 and "regularization" not in sirt_attrs  # the default
    # an iterative slab needs more memory than FBP's, and the memory check counts it
    needed = {name: tomolab.api.plan_reconstruction(scan, center=center, algorithm=name,
                                                    backend="numpy").memory_needed(range(4))
              for name in ("fbp", "tv")}
    assert needed["tv"]["slab"] > needed["fbp"]["slab"]


@pytest.mark.parametrize("options, match", [
    ({"algorithm": "fbp", "iterations": 10}, "iterations"),
    ({"algorithm": "sirt", "regularization": 0.1}, "regularization"),
    ({"algorithm": "cgls", "iterations": 0}, "iterations"),
    ({"algorithm": "tv", "nonnegative": "yes"}, "nonnegative"),
])
def test_reconstruct_refuses_options_that_do_not_apply(options, match):
    scan = tomolab.data.simulate_scan(32, n_rows=2, n_angles=20)
    with pytest.raises(ParameterError, match=match):
        tomolab.reconstruct(scan, center=16.0, backend="numpy", **options)


def test_progress_per_iteration_and_cancel_within_one_iteration():
    scan = tomolab.data.simulate_scan(48, n_rows=2, n_angles=30, seed=4)
    center = scan.attrs["true_center"]
    calls = []
    plan = tomolab.api.plan_reconstruction(scan, center=center, algorithm="sirt", iterations=8,
                                           backend="numpy")
    plan.run(max_height=1, progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert calls[0] == (0, 2) and calls[-1] == (2, 2)
    assert done == sorted(done) and len(set(done)) == len(done)
    assert 0.5 in done and 1.5 in done  # halfway through each one-row slab's iterations
    # a cancel set during the fifth iteration stops the run right after it
    reports = []

    def cancel():
        return len(reports) >= 5
    with pytest.raises(Cancelled, match="iteration 5 of 50"):
        tomolab.reconstruct(scan, center=center, algorithm="sirt", iterations=50, backend="numpy",
                            progress=lambda done, total: reports.append(done), cancel=cancel)
    assert len(reports) == 5  # the start and four iterations; the fifth one's report not reached


def test_a_volume_does_not_depend_on_its_slabs():
    scan = tomolab.data.simulate_scan(48, n_rows=5, n_angles=30, seed=6)
    plan = tomolab.api.plan_reconstruction(scan, center=scan.attrs["true_center"], algorithm="tv",
                                           iterations=10, backend="numpy")
    whole, sliced = plan.run(), plan.run(max_height=2)
    assert _rel(sliced, whole) < 1e-6


def test_command_line_reconstructs_iteratively_and_refuses_in_flags(tmp_path):
    scan = tmp_path / "scan.h5"
    out = tmp_path / "volume.zarr"

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "tomolab", *map(str, args)],
                              check=False, capture_output=True, text=True, timeout=300)
    assert cli("simulate", scan, "--size", 48, "--rows", 2, "--angles", 40).returncode == 0
    result = cli("recon", scan, "--center", 25.0, "-o", out, "-q", "--backend", "numpy",
                 "--algorithm", "tv", "--iterations", 4, "--regularization", 1e-3)
    assert result.returncode == 0, result.stderr
    volume = tomolab.io.open_volume(out)
    assert volume.attrs["algorithm"] == "tv" and volume.attrs["iterations"] == 4
    assert volume.attrs["regularization"] == 1e-3
    refused = cli("recon", scan, "--center", 25.0, "-o", tmp_path / "other.zarr", "--iterations",
                  5)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--iterations" in refused.stderr and "does not iterate" in refused.stderr
