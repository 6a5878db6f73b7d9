"""δ/β sweeps: one batched computation equal to Paganin + FBP per ratio; the best ratio is the true one."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from tomolab.api import sweep_phase
from tomolab.prep import paganin_halo, paganin_length
from tomolab.sweep import phase_scores, sweep_phase_slices
from tomolab.data.phase_contrast import simulate_phase_scan
from tomolab.data.simulate import true_volume
from tomolab.engine import line_integrals
from tomolab.errors import ParameterError
from tomolab.prep import retrieve_phase
from tomolab.recon import fbp

PHYSICS = dict(energy=20.0, distance=0.05, pixel_size=1e-6)


@pytest.fixture(scope="module")
def scan():
    """delta/beta 300 (a light alloy at 20 keV): Paganin length 8.6 px, fringes 1.8 px."""
    return simulate_phase_scan(128, n_rows=24, n_angles=180, delta_beta=300.0, photons=1e4,
                               seed=3, **PHYSICS)


def test_each_trial_slice_is_paganin_then_fbp(scan, xp):
    band = xp.asarray(line_integrals(scan, slice(2, 22), log=False))
    angles = scan.angle.values
    center = scan.attrs["true_center"]
    ratios = np.array([20.0, 300.0, 2000.0])
    stack = sweep_phase_slices(band, angles, ratios, row_in_band=7, center=center, **PHYSICS)
    assert stack.shape == (3, 128, 128) and stack.dtype == np.float32
    for i, ratio in enumerate(ratios):
        att = retrieve_phase(band, delta_beta=ratio, **PHYSICS)
        direct = fbp(xp.ascontiguousarray(att[:, 7:8].transpose(1, 0, 2)), angles, center=center)[0]
        err = float(xp.linalg.norm(stack[i] - direct) / xp.linalg.norm(direct))
        assert err < 1e-3, (ratio, err)


def test_the_halo_is_enough(xp):
    """A band of 2 * halo + 1 rows gives the slice that filtering the whole tall detector gives."""
    tall = simulate_phase_scan(64, n_rows=140, n_angles=60, delta_beta=300.0, seed=1, **PHYSICS)
    transmission = xp.asarray(line_integrals(tall, slice(0, 140), log=False))
    angles, center, row = tall.angle.values, tall.attrs["true_center"], 70
    halo = paganin_halo(300.0, **PHYSICS)
    assert halo == math.ceil(6 * paganin_length(300.0, **PHYSICS)) and 2 * halo + 1 < 140
    band = transmission[:, row - halo:row + halo + 1]
    stack = sweep_phase_slices(band, angles, [300.0], row_in_band=halo, center=center, **PHYSICS)
    full = retrieve_phase(transmission, delta_beta=300.0, **PHYSICS)[:, row:row + 1]
    direct = fbp(xp.ascontiguousarray(full.transpose(1, 0, 2)), angles, center=center)[0]
    assert float(xp.linalg.norm(stack[0] - direct) / xp.linalg.norm(direct)) < 5e-3
    # a band of half a Paganin length is not enough: the test can tell
    short = transmission[:, row - 4:row + 5]
    cut = sweep_phase_slices(short, angles, [300.0], row_in_band=4, center=center, **PHYSICS)
    assert float(xp.linalg.norm(cut[0] - direct) / xp.linalg.norm(direct)) > 2e-2


@pytest.mark.parametrize("delta_beta, distance, seed", [(300.0, 0.05, 3), (60.0, 0.2, 4)])
def test_best_ratio_is_the_true_one(delta_beta, distance, seed, backend):
    if delta_beta == 300.0:
        case = simulate_phase_scan(128, n_rows=24, n_angles=180, delta_beta=300.0, photons=1e4,
                                   seed=seed, **PHYSICS)
    else:
        case = simulate_phase_scan(128, n_rows=16, n_angles=180, delta_beta=delta_beta,
                                   photons=5e3, seed=seed, energy=20.0, distance=distance,
                                   pixel_size=1e-6)
    stack = sweep_phase(case, center=case.attrs["true_center"], backend=backend)
    assert stack.dims == ("ratio", "y", "x") and stack.sizes["ratio"] == 25
    found = stack.attrs["best_ratio"]
    assert abs(math.log(found / delta_beta)) <= math.log(1.5), (found, delta_beta)
    assert stack["score"].max() == 1.0 and stack["score"].min() == 0.0
    assert stack.attrs["energy"] == 20.0 and stack.attrs["distance"] == distance
    assert stack.attrs["units"] == "1/m" and stack.attrs["halo"] > 0


def test_paganin_slice_at_the_true_ratio_matches_the_phantom(scan):
    """At the true ratio Paganin inverts the propagation: mu inside the material, 0 outside."""
    row = 12
    stack = sweep_phase(scan, row=row, center=scan.attrs["true_center"],
                        ratios=[200.0, 300.0, 450.0], backend="numpy")
    truth = true_volume(scan, rows=[row])[0]
    mu = scan.attrs["mu"]
    assert abs(truth.max() / mu - 1) < 1e-6
    margin = 4  # pixels from the edges (partial-volume pixels and the slice's own blur)
    material = ndimage.binary_erosion(truth > 0.99 * mu, iterations=margin)
    empty = ndimage.binary_erosion(truth < 0.01 * mu, iterations=margin)
    yy, xx = np.mgrid[:128, :128] - 63.5
    empty &= np.hypot(yy, xx) < 55  # inside the reconstruction circle
    assert material.sum() > 500 and empty.sum() > 500
    img = stack.values[1]
    assert abs(img[material].mean() / mu - 1) < 0.05
    assert abs(img[empty].mean()) / mu < 0.02
    assert img[material].std() / mu < 0.05  # Paganin removes the noise along with the fringes
    assert np.linalg.norm(img - truth) / np.linalg.norm(truth) < 0.15
    # a ratio 1.5 times off is visibly wrong: the test can tell
    for wrong in (stack.values[0], stack.values[2]):
        assert abs(wrong[material].mean() / mu - 1) > 0.08
    # the absorption image alone (no phase retrieval) is dominated by fringes and noise
    raw = fbp(line_integrals(scan, slice(row, row + 1)).transpose(1, 0, 2), scan.angle.values,
              center=scan.attrs["true_center"])[0] / 1e-6
    assert np.linalg.norm(raw - truth) / np.linalg.norm(truth) > 5


def test_scores_prefer_two_sharp_levels():
    sharp = np.zeros((64, 64), np.float32)
    sharp[16:48, 16:48] = 1.0
    fringes = sharp + 0.6 * (ndimage.gaussian_laplace(sharp, 1.0) < -0.05) \
        - 0.6 * (ndimage.gaussian_laplace(sharp, 1.0) > 0.05)
    blurred = ndimage.gaussian_filter(sharp, 3.0)
    scores = phase_scores(np.stack([fringes, sharp, blurred]).astype(np.float32))
    assert int(np.argmax(scores)) == 1 and scores.min() == 0.0


def test_missing_physics_is_named(scan):
    bare = scan.copy()
    bare.attrs = {k: v for k, v in scan.attrs.items() if k != "energy"}
    with pytest.raises(ParameterError, match=r"energy.*attrs\['energy'\].*fix: pass energy="):
        sweep_phase(bare, center=60.0, backend="numpy")
    stack = sweep_phase(bare, center=60.0, ratios=[100.0], energy=20.0, backend="numpy")
    assert stack.attrs["energy"] == 20.0


@pytest.mark.parametrize("kwargs, where", [
    (dict(ratios=[100.0, -5.0]), "ratios"),
    (dict(ratios=[]), "ratios"),
    (dict(distance=-0.1), "distance"),
    (dict(energy=0.0), "energy"),
    (dict(center=500.0), "center"),
    (dict(row=99), "row"),
    (dict(score="sharp"), "score"),
])
def test_bad_input(scan, kwargs, where):
    args = dict(center=60.0, backend="numpy") | kwargs
    with pytest.raises(ParameterError, match=rf"{where}.*fix"):
        sweep_phase(scan, **args)


def test_ratios_in_batches_give_the_same_slices_and_report_progress(scan, xp):
    band = xp.asarray(line_integrals(scan, slice(0, 24), log=False))
    options = dict(row_in_band=12, center=scan.attrs["true_center"], **PHYSICS)
    ratios = np.geomspace(30.0, 1000.0, 5)
    whole = sweep_phase_slices(band, scan.angle.values, ratios, ratios_per_batch=5, **options)
    reports = []
    parts = sweep_phase_slices(band, scan.angle.values, ratios, ratios_per_batch=2,
                               progress=lambda done, total: reports.append((done, total)),
                               **options)
    assert reports == [(0, 5), (2, 5), (4, 5), (5, 5)]
    for i in range(ratios.size):  # every batch is padded for the largest ratio: same slices
        err = float(xp.linalg.norm(parts[i] - whole[i]) / xp.linalg.norm(whole[i]))
        assert err < 1e-5, (ratios[i], err)


def test_a_cancel_stops_the_phase_sweep_between_batches(scan):
    """On the CPU the ratios go in timed batches (on the GPU they are one batch: nothing to stop)."""
    from tomolab.errors import Cancelled

    reports = []
    with pytest.raises(Cancelled, match="after [1-9][0-9]* of 25 ratios"):
        sweep_phase(scan, center=scan.attrs["true_center"], backend="numpy",
                    progress=lambda done, total: reports.append(done),
                    cancel=lambda: len(reports) >= 2)  # once the first batch is reported
    assert reports[0] == 0 and 0 < reports[-1] < 25


def test_ratios_per_batch_is_checked(scan):
    band = line_integrals(scan, slice(0, 24), log=False)
    with pytest.raises(ParameterError, match="ratios_per_batch=0"):
        sweep_phase_slices(band, scan.angle.values, [100.0], row_in_band=12, center=60.0,
                           ratios_per_batch=0, **PHYSICS)
