"""Reconstruction against the analytic phantom and against scikit-image's iradon."""

from __future__ import annotations

import numpy as np
import pytest

from tomolab.data.phantom import Cylinder, default_phantom, phantom_slice, project_slice
from tomolab.errors import ParameterError
from tomolab.recon import FILTERS, backproject, fbp, filter_sinograms, fourier_filter

from tomolab.testing import gpu_test


def _as_host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def _disk_mask(n, fraction=0.45):
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    return np.hypot(yy, xx) < fraction * n


@pytest.fixture(scope="module")
def phantom_case():
    n, n_angles = 127, 200
    shapes = default_phantom(n, 16)
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    sino = project_slice(shapes, angles, np.arange(n), [0.0], center=(n - 1) / 2)[:, 0, :]
    truth = phantom_slice(shapes, 0.0, n)
    return n, angles, sino, truth, shapes


@pytest.mark.parametrize("filter_name", ["ramp", "shepp-logan", "cosine", "hamming", "hann"])
def test_fbp_no_worse_than_skimage_iradon(phantom_case, filter_name, xp):
    """Same exact sinogram, same filter, same centre: our error is at most scikit-image's."""
    from skimage.transform import iradon

    n, angles, sino, truth, _ = phantom_case
    ours = _as_host(fbp(xp.asarray(sino[None], dtype=xp.float32), angles, center=(n - 1) / 2,
                        filter=filter_name))[0]
    # scikit-image puts the axis at n // 2 (= (n - 1) / 2 for odd n) and its y axis points the
    # other way: t = x cos θ - y sin θ (ours: x cos θ + y sin θ), hence the flip.
    theirs = np.flipud(iradon(sino.T, np.degrees(angles), filter_name=filter_name, circle=False,
                              output_size=n))
    mask = _disk_mask(n)
    err_ours = np.sqrt(np.mean((ours - truth)[mask] ** 2))
    err_theirs = np.sqrt(np.mean((theirs - truth)[mask] ** 2))
    assert err_ours <= err_theirs * 1.001
    assert err_ours < 0.1 * np.sqrt(np.mean(truth[mask] ** 2)) * (3 if filter_name != "ramp" else 1)


def test_smoothing_filters_reduce_noise_in_that_order():
    """On a noisy uniform disk the windows trade noise for resolution: ramp > shepp-logan > hann."""
    n = 96
    angles = np.linspace(0, np.pi, 180, endpoint=False)
    disk = [Cylinder(0, 0, -1, 1, 40, 40, 0, 0.02)]
    sino = project_slice(disk, angles, np.arange(n), [0.0], center=(n - 1) / 2)
    sino += np.random.default_rng(0).normal(0, 0.02, sino.shape)
    interior = _disk_mask(n, 0.3)
    noise = {name: fbp(sino.transpose(1, 0, 2).astype(np.float32), angles, center=(n - 1) / 2,
                       filter=name)[0][interior].std()
             for name in ("ramp", "shepp-logan", "hann", "parzen")}
    assert noise["ramp"] > noise["shepp-logan"] > noise["hann"]
    assert noise["parzen"] < 0.7 * noise["ramp"]


def test_uniform_disk_value_and_geometry():
    """A disk of attenuation 0.02 off the axis comes back with that value, where it was put."""
    n, n_angles = 96, 180
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    disk = [Cylinder(12.0, -20.0, -1, 1, 10, 10, 0, 0.02)]
    center = 50.3
    sino = project_slice(disk, angles, np.arange(n), [0.0], center=center)
    img = fbp(sino.transpose(1, 0, 2).astype(np.float32), angles, center=center)[0]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    inside = np.hypot(xx - 12.0, yy + 20.0) < 7
    outside = np.hypot(xx - 12.0, yy + 20.0) > 13
    assert abs(img[inside].mean() - 0.02) < 0.0005
    assert abs(img[outside & _disk_mask(n, 0.4)].mean()) < 0.0005
    # centre of mass sits at (x, y) = (12, -20)
    w = np.clip(img, 0, None) * (np.hypot(xx - 12.0, yy + 20.0) < 13)
    assert abs((w * xx).sum() / w.sum() - 12.0) < 0.1
    assert abs((w * yy).sum() / w.sum() + 20.0) < 0.1


def test_360_degree_scan_gives_the_same_slice():
    n = 64
    disk = [Cylinder(5.0, 3.0, -1, 1, 12, 8, 0.4, 0.03)]
    a180 = np.linspace(0, np.pi, 120, endpoint=False)
    a360 = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    img = [fbp(project_slice(disk, a, np.arange(n), [0.0], center=33.0).transpose(1, 0, 2)
               .astype(np.float32), a, center=33.0)[0] for a in (a180, a360)]
    mask = _disk_mask(n, 0.4)
    assert np.sqrt(np.mean((img[0] - img[1])[mask] ** 2)) < 0.05 * 0.03


def test_backproject_single_ray_geometry():
    q = np.zeros((1, 2, 9), np.float32)
    q[:, :, 4] = 1.0
    img = backproject(q, [0.0, np.pi / 2], center=4.0)[0]
    # angle 0 lights the column x=4 (all y); angle 90° lights the row y=4
    assert img[4, 4] == 2.0
    assert np.all(img[:, 4][np.arange(9) != 4] == 1.0)
    assert np.all(img[4, :][np.arange(9) != 4] == 1.0)
    assert img.sum() == 18.0


def test_fourier_filter_is_a_ramp_at_low_frequency():
    f = fourier_filter(256, "ramp")
    freq = np.fft.rfftfreq(256)
    assert np.allclose(f[5:60], freq[5:60], rtol=0.02)
    assert f[0] > 0  # the band-limited ramp's DC term is not zero
    for name in FILTERS:
        assert np.all(fourier_filter(256, name) <= f + 1e-12)


def test_unknown_filter_names_the_choices():
    with pytest.raises(ParameterError, match=r"filter='nope'.*fix: use one of .*ramp"):
        fourier_filter(64, "nope")


def test_fbp_bad_input_names_the_parameter():
    """The checks gridrec makes, shared: a wrong angle count is an error, not garbage."""
    sino = np.zeros((3, 10, 16), np.float32)
    angles = np.linspace(0, np.pi, 10, endpoint=False)
    with pytest.raises(ParameterError, match="angles='9 angles for 10"):
        fbp(sino, angles[:-1], center=8.0)
    with pytest.raises(ParameterError, match="center='2 values for 3 slices'"):
        fbp(sino, angles, center=[7.0, 8.0])
    with pytest.raises(ParameterError, match="sinograms="):
        fbp(sino[0], angles, center=8.0)


def test_filter_shift_matches_recon_at_shifted_center():
    """A phase-ramp shift of the filtered sinogram equals reconstructing at the shifted centre."""
    n = 64
    angles = np.linspace(0, np.pi, 90, endpoint=False)
    disk = [Cylinder(4.0, 2.0, -1, 1, 10, 7, 0.3, 0.03)]
    sino = project_slice(disk, angles, np.arange(n), [0.0], center=35.0).transpose(1, 0, 2)
    sino = sino.astype(np.float32)
    shifted = filter_sinograms(sino, centers=np.array([35.0]), to_column=32.0)[0]  # 35 -> 32
    a = backproject(shifted, angles, center=32.0)
    b = backproject(filter_sinograms(sino), angles, center=35.0)
    mask = _disk_mask(n, 0.3)
    assert np.abs(a - b)[0][mask].max() < 0.02 * np.abs(b).max()


@gpu_test
@pytest.mark.parametrize("filter_name", sorted(FILTERS))
def test_cpu_and_gpu_agree(filter_name):
    import cupy

    rng = np.random.default_rng(3)
    sino = rng.random((3, 181, 150)).astype(np.float32)
    angles = np.sort(rng.uniform(0, np.pi, 181))
    cpu = fbp(sino, angles, center=77.3, filter=filter_name)
    gpu = fbp(cupy.asarray(sino), angles, center=77.3, filter=filter_name).get()
    assert np.linalg.norm(gpu - cpu) / np.linalg.norm(cpu) < 1e-4


@gpu_test
def test_gpu_many_angles_are_split_into_launches():
    import cupy

    rng = np.random.default_rng(4)
    q = rng.random((2, 5000, 64)).astype(np.float32)
    angles = np.linspace(0, np.pi, 5000, endpoint=False)
    cpu = backproject(q, angles, center=31.0)
    gpu = backproject(cupy.asarray(q), angles, center=31.0).get()
    assert np.linalg.norm(gpu - cpu) / np.linalg.norm(cpu) < 1e-5


@gpu_test
@pytest.mark.parametrize("n_z", [1, 5, 8])
def test_gpu_kernels_agree_with_the_reference(n_z):
    import cupy

    from tomolab.recon.backproject import KERNELS, PREVIEW_KERNELS

    rng = np.random.default_rng(n_z)
    q = cupy.asarray(rng.random((n_z, 301, 200)).astype(np.float32))
    angles = np.linspace(0, np.pi, 301, endpoint=False)
    reference = backproject(q, angles, center=101.7, kernel="reference")
    for name in KERNELS:
        out = backproject(q, angles, center=101.7, size=180, kernel=name)
        assert out.shape == (n_z, 180, 180)
        ref = backproject(q, angles, center=101.7, size=180, kernel="reference")
        tolerance = 1e-3 if name in PREVIEW_KERNELS else 1e-6  # half-precision storage
        assert float(cupy.linalg.norm(out - ref) / cupy.linalg.norm(ref)) < tolerance, name
    assert reference.shape == (n_z, 200, 200)


@gpu_test
@pytest.mark.parametrize("kernel", ["h8p2", "hh8p1", "hh8p2"])
def test_half_precision_kernels_on_a_phantom_within_the_issue_bound(kernel):
    # filtered sinograms of a real object change sign, so sums cancel: a harder case for
    # half-precision partial sums than random positive data; the issue's bound is 1e-3
    import cupy

    n, n_angles = 256, 900
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    z = np.linspace(-6, 6, 12)
    sino = project_slice(default_phantom(n, 16), angles, np.arange(n), z, center=(n - 1) / 2 + 2.3)
    sinograms = cupy.asarray(sino.transpose(1, 0, 2).astype(np.float32) * 1e-3)  # 1/pixel units
    single = fbp(sinograms, angles, center=(n - 1) / 2 + 2.3, kernel="z4p2")
    half = fbp(sinograms, angles, center=(n - 1) / 2 + 2.3, kernel=kernel)
    relative = float(cupy.linalg.norm(half - single) / cupy.linalg.norm(single))
    assert relative < 1e-3, relative
    # and the same bound far from unit magnitudes (the samples are normalised before rounding)
    scaled = fbp(sinograms * 1e6, angles, center=(n - 1) / 2 + 2.3, kernel=kernel)
    assert float(cupy.linalg.norm(scaled / 1e6 - single) / cupy.linalg.norm(single)) < 1e-3


def test_one_centre_per_slice_equals_separate_reconstructions(xp):
    """A tilted axis: each slice with its own centre, in one call."""
    n = 64
    angles = np.linspace(0, np.pi, 120, endpoint=False)
    disk = [Cylinder(4.0, 2.0, -5, 5, 12, 8, 0.3, 0.03)]
    centers = np.array([30.0, 31.5, 33.25])
    sino = np.concatenate([project_slice(disk, angles, np.arange(n), [0.0], center=c)
                           for c in centers], axis=1).transpose(1, 0, 2).astype(np.float32)
    together = _as_host(fbp(xp.asarray(sino), angles, center=centers))
    mask = _disk_mask(n, 0.35)
    for z, c in enumerate(centers):
        alone = _as_host(fbp(xp.asarray(sino[z:z + 1]), angles, center=c))[0]
        # linear interpolation (alone) vs a phase-ramp shift (together): equal up to interpolation
        assert np.sqrt(np.mean((together[z] - alone)[mask] ** 2)) < 0.03 * 0.03
