"""Zinger removal: simulated zingers go, every other pixel is untouched."""

import numpy as np
import pytest

from tomolab.arrays import to_numpy
from tomolab.errors import ParameterError
from tomolab.prep import remove_zingers
from tomolab.testing import gpu_test


def _projections_with_zingers(rng, n_angle=4, shape=(48, 64), n_zingers=30):
    """Smooth noisy projections (counts) plus isolated bright single-pixel zingers."""
    row, col = np.mgrid[:shape[0], :shape[1]]
    base = 1000 + 300 * np.sin(row / 9.0) * np.cos(col / 13.0)
    clean = np.stack([base * (1 + 0.1 * a) for a in range(n_angle)])
    clean = clean + rng.normal(0, 5, clean.shape)  # ~0.5 % noise, far below the threshold
    clean = np.rint(clean).astype(np.uint16)
    zinged = clean.copy()
    # zingers away from each other so that no 3x3 window holds two
    flat_index = rng.choice(np.arange(n_angle * (shape[0] // 4) * (shape[1] // 4)), n_zingers,
                            replace=False)
    a, r, c = np.unravel_index(flat_index, (n_angle, shape[0] // 4, shape[1] // 4))
    r, c = 4 * r + 1, 4 * c + 1
    zinged[a, r, c] = (clean[a, r, c] + rng.uniform(2000, 20000, n_zingers)).astype(np.uint16)
    return clean, zinged, (a, r, c)


def test_zingers_removed_and_rest_untouched(xp):
    rng = np.random.default_rng(5)
    clean, zinged, hits = _projections_with_zingers(rng)
    out = remove_zingers(xp.asarray(zinged), threshold=0.2)
    assert out.dtype == zinged.dtype and out.shape == zinged.shape
    out = to_numpy(out)
    mask = np.zeros(zinged.shape, dtype=bool)
    mask[hits] = True
    # elsewhere exactly equal, bit for bit
    np.testing.assert_array_equal(out[~mask], zinged[~mask])
    # zingers replaced by the local median: back within the noise of the clean value
    assert np.abs(out[mask].astype(float) - clean[mask]).max() < 40
    assert np.abs(zinged[mask].astype(float) - clean[mask]).min() > 1900


def test_absolute_threshold_on_normalised_data(xp):
    rng = np.random.default_rng(6)
    clean, zinged, hits = _projections_with_zingers(rng, n_angle=2)
    transmission = zinged / 1500.0
    out = to_numpy(remove_zingers(xp.asarray(transmission), threshold=0.5, mode="absolute",
                                  size=5))
    mask = np.zeros(zinged.shape, dtype=bool)
    mask[hits] = True
    np.testing.assert_array_equal(out[~mask], transmission[~mask])
    assert np.abs(out[mask] - clean[mask] / 1500.0).max() < 0.05


def test_projections_are_not_mixed(xp):
    # a bright projection next to dark ones is no zinger: the median is per projection
    stack = np.ones((3, 9, 9), dtype=np.float32)
    stack[1] = 100.0
    out = to_numpy(remove_zingers(xp.asarray(stack), threshold=0.1))
    np.testing.assert_array_equal(out, stack)
    single = np.ones((9, 9), dtype=np.float32)
    single[4, 4] = 10.0
    assert to_numpy(remove_zingers(xp.asarray(single)))[4, 4] == 1.0


def test_dark_outliers_are_kept(xp):
    image = np.full((7, 7), 100.0)
    image[3, 3] = 0.0  # a dead pixel is not a zinger
    np.testing.assert_array_equal(to_numpy(remove_zingers(xp.asarray(image))), image)


@pytest.mark.parametrize("kwargs, where", [
    ({"threshold": 0.0}, "threshold"),
    ({"threshold": float("nan")}, "threshold"),
    ({"size": 1}, "size"),
    ({"size": 3.5}, "size"),
    ({"mode": "sigma"}, "mode"),
])
def test_bad_parameters(kwargs, where):
    with pytest.raises(ParameterError) as info:
        remove_zingers(np.ones((4, 4)), **kwargs)
    assert info.value.where == where and info.value.fix
    with pytest.raises(ParameterError, match="projections"):
        remove_zingers(np.ones(4))


@gpu_test
def test_cpu_and_gpu_agree():
    import cupy
    rng = np.random.default_rng(7)
    _, zinged, _ = _projections_with_zingers(rng, n_angle=8, shape=(128, 160), n_zingers=200)
    for data in (zinged, zinged.astype(np.float32) / 1000):
        cpu = remove_zingers(data, threshold=0.2, size=5)
        gpu = remove_zingers(cupy.asarray(data), threshold=0.2, size=5).get()
        np.testing.assert_array_equal(gpu, cpu)
