"""Gridrec against the analytic phantom, against FBP and against the exact sum it evaluates."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.integrate import quad

from tomolab.data.phantom import Cylinder, default_phantom, phantom_slice, project_slice
from tomolab.errors import ParameterError
from tomolab.recon import ALGORITHMS, fbp, fourier_filter, gridrec
from tomolab.recon.filters import padded_width
from tomolab.recon.gridrec import WIDTH, _gridrec, kaiser_bessel
from tomolab.testing import gpu_test


def _as_host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _disk_mask(n, fraction=0.45):
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    return np.hypot(yy, xx) < fraction * n


def _rms(a):
    return float(np.sqrt(np.mean(np.square(a))))


@pytest.fixture(scope="module")
def phantom_case():
    n, n_angles = 127, 200
    center = (n - 1) / 2 + 2.6  # off the middle, not on a half pixel
    shapes = default_phantom(n - 8, 16)
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    sino = project_slice(shapes, angles, np.arange(n), [0.0], center=center)[:, 0, :]
    truth = phantom_slice(shapes, 0.0, n)
    return n, center, angles, sino.astype(np.float32), truth


@pytest.mark.parametrize("filter_name", ["ramp", "shepp-logan", "hann", "parzen"])
def test_error_against_the_phantom_no_worse_than_fbp(phantom_case, filter_name, xp):
    n, center, angles, sino, truth = phantom_case
    mask = _disk_mask(n)
    ours = _as_host(gridrec(xp.asarray(sino[None]), angles, center=center, filter=filter_name))[0]
    ref = fbp(sino[None], angles, center=center, filter=filter_name)[0]
    assert ours.dtype == np.float32 and ours.shape == (n, n)
    err, err_fbp = _rms((ours - truth)[mask]), _rms((ref - truth)[mask])
    assert err <= err_fbp
    # and the two methods agree with each other much better than either matches the phantom
    assert _rms((ours - ref)[mask]) < err_fbp


@pytest.mark.parametrize("n_out", [None, 120, 64, 97])
def test_uniform_disk_value_and_geometry(n_out, xp):
    """A disk of attenuation 0.02 off the axis comes back with that value (1 %), where put."""
    n, n_angles, center = 96, 180, 50.3
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    disk = [Cylinder(12.0, -20.0, -1, 1, 10, 10, 0, 0.02)]
    sino = project_slice(disk, angles, np.arange(n), [0.0], center=center).transpose(1, 0, 2)
    img = _as_host(gridrec(xp.asarray(sino.astype(np.float32)), angles, center=center, size=n_out))[0]
    m = n_out or n
    assert img.shape == (m, m)
    yy, xx = np.mgrid[:m, :m] - (m - 1) / 2.0
    r = np.hypot(xx - 12.0, yy + 20.0)
    assert abs(img[r < 7].mean() - 0.02) < 0.01 * 0.02
    assert abs(img[(r > 13) & (np.hypot(xx, yy) < 0.4 * n)].mean()) < 0.005 * 0.02
    w = np.clip(img, 0, None) * (r < 13)
    assert abs((w * xx).sum() / w.sum() - 12.0) < 0.05
    assert abs((w * yy).sum() / w.sum() + 20.0) < 0.05


def _exact_fourier_sum(sino, angles, center, filter_name, n):
    """The sum gridrec evaluates, computed directly: FBP with band-limited interpolation."""
    n_angles, n_cols = sino.shape
    n_pad = padded_width(n_cols)
    left = (n_pad - n_cols) // 2
    spectra = np.fft.fft(np.pad(sino.astype(np.float64), ((0, 0), (left, n_pad - n_cols - left)),
                                mode="edge"), axis=-1)
    k = np.fft.fftfreq(n_pad) * n_pad
    weights = fourier_filter(n_pad, filter_name)[np.abs(k).astype(int)] * np.pi / (n_angles * n_pad)
    # the Nyquist sample stands for cos(π s): half of it at +n_pad/2 and half at -n_pad/2
    k = np.concatenate([k, [n_pad / 2]])
    weights = np.concatenate([weights, [weights[n_pad // 2]]])
    weights[n_pad // 2] *= 0.5
    weights[-1] *= 0.5
    spectra = np.concatenate([spectra, spectra[:, n_pad // 2:n_pad // 2 + 1]], axis=1)
    coef = spectra * weights * np.exp(2j * np.pi * k * (left + center) / n_pad)
    grid = np.arange(n) - (n - 1) / 2.0
    Y, X = np.meshgrid(grid, grid, indexing="ij")
    out = np.zeros((n, n))
    for a, theta in enumerate(angles):
        s = X * np.cos(theta) + Y * np.sin(theta)
        out += np.real(np.exp(2j * np.pi * np.multiply.outer(s, k) / n_pad) @ coef[a])
    return out


@pytest.mark.parametrize("n, n_cols, center", [(32, 32, 16.2), (33, 30, 14.0)])
def test_matches_the_exact_fourier_sum(n, n_cols, center):
    """Gridding + deapodization is a non-uniform FFT: it equals the direct sum to ~1e-4."""
    rng = np.random.default_rng(n)
    angles = np.sort(rng.uniform(0, np.pi, 23))
    sino = rng.random((2, 23, n_cols))
    for filter_name in ("ramp", "hann"):
        exact = [_exact_fourier_sum(s, angles, center, filter_name, n) for s in sino]
        ours = gridrec(sino.astype(np.float32), angles, center=center, filter=filter_name, size=n)
        single = gridrec(sino[:1].astype(np.float32), angles, center=center, filter=filter_name,
                         size=n)
        scale = np.abs(exact[0]).max()
        assert np.abs(ours[0] - exact[0]).max() < 3e-4 * scale  # a slice pair (complex sinogram)
        assert np.abs(ours[1] - exact[1]).max() < 3e-4 * scale
        assert np.abs(single[0] - exact[0]).max() < 3e-4 * scale  # a single slice (half plane)


def test_wider_kernel_converges():
    """The gridding error falls fast with the kernel width (here measured against width 10)."""
    rng = np.random.default_rng(7)
    angles = np.linspace(0, np.pi, 90, endpoint=False)
    sino = rng.random((1, 90, 64)).astype(np.float32)
    ref = _gridrec(sino, angles, center=33.1, width=10)
    errs = [np.abs(_gridrec(sino, angles, center=33.1, width=w) - ref).max() for w in (3, 4, 5, 6)]
    assert errs[0] > errs[1] > errs[2] > errs[3]
    assert errs[[3, 4, 5, 6].index(WIDTH)] < 2e-4 * np.abs(ref).max()


@pytest.mark.parametrize("width", [4, 5, 6])
def test_kernel_transform_matches_quadrature(width):
    phi, Phi = kaiser_bessel(width, 2)
    for xi in (0.0, 0.1, 0.25, 0.4):
        numeric = quad(lambda t: float(phi(t)) * np.cos(2 * np.pi * xi * t), -width / 2, width / 2,
                       limit=200)[0]
        assert Phi(xi) == pytest.approx(numeric, rel=1e-9)


def test_slices_in_a_stack_are_reconstructed_independently(xp):
    """Pairs share one complex sinogram and an odd last slice goes alone: no crosstalk."""
    n = 64
    angles = np.linspace(0, np.pi, 100, endpoint=False)
    shapes = [Cylinder(-8.0, 5.0, -1, 1, 14, 9, 0.4, 0.03),
              Cylinder(10.0, -6.0, -1, 1, 6, 6, 0, 0.05)]
    sinos = np.stack([project_slice([s], angles, np.arange(n), [0.0], center=33.4)[:, 0, :]
                      for s in shapes + [shapes[0], shapes[1], shapes[0]]]).astype(np.float32)
    sinos[2] *= 2.0
    stack = _as_host(gridrec(xp.asarray(sinos), angles, center=33.4))
    for i in range(len(sinos)):
        alone = _as_host(gridrec(xp.asarray(sinos[i:i + 1]), angles, center=33.4))[0]
        assert np.abs(stack[i] - alone).max() < 1e-5 * np.abs(alone).max()


def test_one_centre_per_slice(xp):
    """A tilted axis: each slice of a pair (and the odd one) is centred on its own axis."""
    n = 64
    angles = np.linspace(0, np.pi, 100, endpoint=False)
    disk = [Cylinder(-8.0, 5.0, -1, 1, 14, 9, 0.4, 0.03)]
    centers = np.array([30.2, 33.9, 35.5])
    sinos = np.stack([project_slice(disk, angles, np.arange(n), [0.0], center=c)[:, 0, :]
                      for c in centers]).astype(np.float32)
    stack = _as_host(gridrec(xp.asarray(sinos), angles, center=centers))
    for i, c in enumerate(centers):
        alone = _as_host(gridrec(xp.asarray(sinos[i:i + 1]), angles, center=c))[0]
        assert np.abs(stack[i] - alone).max() < 1e-5 * np.abs(alone).max()
    # the disk where it was put, wherever the axis was on the detector
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    for img in stack:
        w = np.clip(img, 0, None) * (np.hypot(xx + 8.0, yy - 5.0) < 18)
        assert abs((w * xx).sum() / w.sum() + 8.0) < 0.05
        assert abs((w * yy).sum() / w.sum() - 5.0) < 0.05
    with pytest.raises(ParameterError, match="center="):
        gridrec(xp.asarray(sinos), angles, center=centers[:2])


@pytest.mark.parametrize("precision", ["single", "half"])
def test_unpaired_slices_have_the_same_bits_in_any_batch(precision):
    """pair_slices=False (the CPU api's way): a stack, each slice with its own centre, is
    bit for bit its slices reconstructed one at a time (whatever the batch, so whatever the
    slab), and agrees with the paired reconstruction to rounding."""
    n = 64
    angles = np.linspace(0, np.pi, 100, endpoint=False)
    disk = [Cylinder(-8.0, 5.0, -1, 1, 14, 9, 0.4, 0.03),
            Cylinder(10.0, -6.0, -1, 1, 6, 6, 0, 0.05)]
    centers = np.array([30.2, 33.9, 35.5, 31.0, 32.7, 34.1, 33.3])
    sinos = np.stack([project_slice(disk, angles, np.arange(n), [0.0], center=c)[:, 0, :]
                      * (1 + i) for i, c in enumerate(centers)]).astype(np.float32)
    options = dict(precision=precision, pair_slices=False)
    stack = gridrec(sinos, angles, center=centers, **options)
    for i, c in enumerate(centers):
        alone = gridrec(sinos[i:i + 1], angles, center=c, **options)[0]
        assert np.array_equal(stack[i], alone), i
    tail = gridrec(sinos[3:], angles, center=centers[3:], **options)
    assert np.array_equal(tail, stack[3:])
    paired = gridrec(sinos, angles, center=centers, precision=precision)
    scale = np.abs(paired).max()
    assert np.abs(stack - paired).max() < (1e-5 if precision == "single" else 2e-3) * scale


@pytest.mark.parametrize("pair_slices", [True, False])
def test_batches_reusing_their_work_arrays_give_the_same_slices(monkeypatch, pair_slices):
    """The CPU path reuses its work arrays from one batch to the next (the last batch smaller):
    one slice (or pair) a batch gives the same bits as one batch for all, so no stale values
    of an earlier batch leak into a later one."""
    import importlib

    module = importlib.import_module("tomolab.recon.gridrec")  # the function shadows the name
    rng = np.random.default_rng(4)
    sinos = rng.normal(size=(7, 90, 64)).astype(np.float32)
    angles = np.linspace(0, np.pi, 90, endpoint=False)
    centers = np.linspace(30.1, 33.7, 7)
    for options in (dict(), dict(pad_mode="constant", size=70), dict(precision="half")):
        whole = gridrec(sinos, angles, center=centers, pair_slices=pair_slices, **options)
        with monkeypatch.context() as patch:
            patch.setattr(module, "CPU_BATCH_BYTES", 1)
            patch.setattr(module, "CPU_UNPAIRED_BATCH_BYTES", 1)
            batched = gridrec(sinos, angles, center=centers, pair_slices=pair_slices, **options)
        assert np.array_equal(whole, batched), options


@gpu_test
def test_gpu_refuses_unpaired_slices():
    import cupy

    sinos = cupy.zeros((2, 90, 32), cupy.float32)
    with pytest.raises(ParameterError, match="pair_slices"):
        gridrec(sinos, np.linspace(0, np.pi, 90, endpoint=False), center=15.5, pair_slices=False)


def test_360_degree_scan_gives_the_same_slice():
    n = 64
    disk = [Cylinder(5.0, 3.0, -1, 1, 12, 8, 0.4, 0.03)]
    a180 = np.linspace(0, np.pi, 120, endpoint=False)
    a360 = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    img = [gridrec(project_slice(disk, a, np.arange(n), [0.0], center=33.0).transpose(1, 0, 2)
                   .astype(np.float32), a, center=33.0)[0] for a in (a180, a360)]
    assert _rms((img[0] - img[1])[_disk_mask(n, 0.4)]) < 0.01 * 0.03


def test_bad_input_names_the_parameter():
    sino = np.zeros((1, 10, 16), np.float32)
    angles = np.linspace(0, np.pi, 10, endpoint=False)
    with pytest.raises(ParameterError, match="pad_mode='wrap'"):
        gridrec(sino, angles, center=8.0, pad_mode="wrap")
    with pytest.raises(ParameterError, match="filter='nope'"):
        gridrec(sino, angles, center=8.0, filter="nope")
    with pytest.raises(ParameterError, match="angles="):
        gridrec(sino, angles[:-1], center=8.0)
    with pytest.raises(ParameterError, match="sinograms="):
        gridrec(sino[0], angles, center=8.0)
    with pytest.raises(ParameterError, match="precision='double'"):
        gridrec(sino, angles, center=8.0, precision="double")


def test_reconstruct_with_gridrec_on_a_simulated_scan():
    """Through the public API: registered, recorded in attrs, as close to the truth as FBP."""
    import tomolab
    from tomolab.data.simulate import true_volume

    assert ALGORITHMS["gridrec"] is gridrec
    scan = tomolab.data.simulate_scan(96, n_rows=4, n_angles=150, photons=6e4)
    center = scan.attrs["true_center"]
    vol = tomolab.reconstruct(scan, center=center, rows="1:3", algorithm="gridrec", backend="numpy")
    ref = tomolab.reconstruct(scan, center=center, rows="1:3", algorithm="fbp", backend="numpy")
    truth = true_volume(scan, rows=slice(1, 3))
    assert vol.attrs["algorithm"] == "gridrec" and vol.shape == ref.shape == truth.shape
    mask = _disk_mask(96, 0.4)
    err = _rms((vol.values - truth)[:, mask])
    err_fbp = _rms((ref.values - truth)[:, mask])
    assert err <= 1.1 * err_fbp
    assert err < 0.15 * _rms(truth[:, mask])


def _blob_case(n=128, n_angles=300, center_offset=2.6, sigmas=(16.0, 10.0, 7.0)):
    """Gaussian blobs, well inside the field of view, with their exact line integrals."""
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    center = (n - 1) / 2 + center_offset
    blobs = [(0.0, 0.0, sigmas[0], 0.02), (15.0, -10.0, sigmas[1], 0.03),
             (-20.0, 12.0, sigmas[2], -0.01)]
    s = np.arange(n) - center
    sino = np.zeros((n_angles, n))
    for x0, y0, sigma, value in blobs:
        at = x0 * np.cos(angles) + y0 * np.sin(angles)
        sino += value * np.sqrt(2 * np.pi) * sigma * np.exp(-(s - at[:, None]) ** 2 / (2 * sigma ** 2))
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    truth = sum(value * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * sigma ** 2))
                for x0, y0, sigma, value in blobs)
    return angles, center, sino.astype(np.float32), truth


def _relative(a, b, mask):
    return float(np.linalg.norm((a - b)[mask]) / np.linalg.norm(b[mask]))


@pytest.mark.parametrize("pad_mode", ["edge", "constant"])
@pytest.mark.parametrize("precision", ["single", "half"])
def test_within_1e_3_of_fbp_and_closer_to_a_smooth_truth(pad_mode, precision, xp):
    """On a smooth object inside the field of view gridrec and FBP differ by less than 1e-3,
    and that difference is FBP's: its linear interpolation puts it farther from the truth."""
    angles, center, sino, truth = _blob_case()
    mask = _disk_mask(sino.shape[1])
    ours = _as_host(gridrec(xp.asarray(sino[None]), angles, center=center, pad_mode=pad_mode,
                            precision=precision))[0]
    ref = fbp(sino[None], angles, center=center, pad_mode=pad_mode)[0]
    assert _relative(ours, ref, mask) < 1e-3
    assert _relative(ours, truth, mask) < 0.5 * _relative(ref, truth, mask)


@pytest.mark.parametrize("units", [1.0, 1e6, 1e-6])
def test_half_precision_within_1e_3_of_single(phantom_case, units, xp):
    """Half-precision samples are scaled before rounding: any units, no overflow or underflow."""
    _, center, angles, sino, _ = phantom_case
    stack = xp.asarray(np.stack([sino, sino[:, ::-1], 0.5 * sino]) * np.float32(units))
    single = _as_host(gridrec(stack, angles, center=center))
    half = _as_host(gridrec(stack, angles, center=center, precision="half"))
    assert np.isfinite(half).all()
    for a, b in zip(half, single):
        assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-3


def test_stats_say_where_the_time_goes(xp):
    """``stats=`` adds the seconds of each stage, over every batch, and changes nothing else."""
    rng = np.random.default_rng(4)
    sino = xp.asarray(rng.random((3, 60, 48)).astype(np.float32))
    angles = np.linspace(0, np.pi, 60, endpoint=False)
    stats = {"2D inverse FFT": 1.0}
    timed = _as_host(gridrec(sino, angles, center=24.5, stats=stats))
    assert {"spread onto the grid", "gather onto the grid"} & set(stats)
    assert "crop and split" in stats and stats["2D inverse FFT"] > 1.0
    assert all(v >= 0 for v in stats.values())
    np.testing.assert_array_equal(timed, _as_host(gridrec(sino, angles, center=24.5)))


@gpu_test
@pytest.mark.parametrize("n_z", [1, 2, 5])
@pytest.mark.parametrize("filter_name", ["ramp", "shepp-logan"])
@pytest.mark.parametrize("precision", ["single", "half"])
def test_cpu_and_gpu_agree(n_z, filter_name, precision):
    import cupy

    rng = np.random.default_rng(n_z)
    sino = rng.random((n_z, 181, 150)).astype(np.float32)
    angles = np.sort(rng.uniform(0, np.pi, 181))
    cpu = gridrec(sino, angles, center=77.3, filter=filter_name, size=140, precision=precision)
    gpu = gridrec(cupy.asarray(sino), angles, center=77.3, filter=filter_name, size=140,
                  precision=precision)
    assert isinstance(gpu, cupy.ndarray) and gpu.dtype == cupy.float32
    # half: the same samples rounded on both, but a sample that float32 arithmetic puts on the
    # other side of a float16 rounding boundary moves by one half-precision step (5e-4 of it)
    bound = 1e-5 if precision == "single" else 1e-4
    assert np.linalg.norm(gpu.get() - cpu) / np.linalg.norm(cpu) < bound


@gpu_test
@pytest.mark.parametrize("shape, size, pad_mode", [((3, 90, 64), 64, "edge"),
                                                   ((4, 120, 97), 33, "constant"),
                                                   ((2, 64, 40), 97, "edge"),
                                                   ((6, 400, 256), 256, "constant")])
def test_gpu_gather_matches_the_cpu_on_any_grid(shape, size, pad_mode):
    """Grids that are not whole tiles, periodic images at the edges, a full turn of angles,
    one centre per slice, and slices packed in pairs across several gather blocks."""
    import cupy

    from tomolab.recon.gridrec import _gridrec

    rng = np.random.default_rng(shape[0])
    sino = rng.standard_normal(shape).astype(np.float32)
    angles = rng.permutation(np.linspace(0, 2 * np.pi, shape[1], endpoint=False))
    centers = shape[2] / 2 + rng.uniform(-3, 3, shape[0])
    cpu = gridrec(sino, angles, center=centers, size=size, pad_mode=pad_mode)
    for pairs in (1, 2, 4):
        gpu = _gridrec(cupy.asarray(sino), angles, center=centers, size=size, pad_mode=pad_mode,
                       pairs=pairs).get()
        assert np.isfinite(gpu).all()
        for a, b in zip(gpu, cpu):
            assert np.linalg.norm(a - b) / np.linalg.norm(b) < 1e-5


@gpu_test
def test_gpu_gridrec_slices_do_not_depend_on_the_slabs():
    """Slices go through the GPU in pairs (one complex sinogram): with slabs kept even, every
    slice has the same partner however the rows are cut, so a resumed or clustered volume is
    bit for bit the whole one; an odd cut (3, 5 rows) would pair other slices."""
    import tomolab
    from tomolab.api import plan_reconstruction

    scan = tomolab.data.simulate_scan(64, n_rows=11, n_angles=90, seed=2)
    plan = plan_reconstruction(scan, center=scan.attrs["true_center"], backend="cupy",
                               algorithm="gridrec")
    whole = plan.run()
    for height in (3, 5):
        assert np.array_equal(plan.run(max_height=height), whole), height
    # a part of the rows, started at an even offset as every slab is, keeps the same bits
    assert np.array_equal(plan.run(rows=range(4, 11), max_height=3), whole[4:])
