"""The CPU twins of the projector pair's CUDA kernels (Numba, threads over rows of the output).

Both kernels walk the detector position ``t`` of a voxel row the same way
(``t`` at the row's first voxel, then ``t += cos θ`` per voxel) and give voxel
and bin ``j`` the same weight, ``max(0, 1 - |t - j| / m) / m`` with
``m = max(|cos θ|, |sin θ|)`` (Joseph's interpolation seen from the voxel), so
the forward projection is the exact transpose of the backprojection whatever
the rounding. Kept apart so that Numba is imported only when the CPU path runs.
"""

import numba
import numpy as np


@numba.njit(inline="always", fastmath=True, cache=True)
def _bins(t, m, inv):
    """The first bin ``j`` within ``m`` of ``t`` and the weights of ``j`` and ``j + 1`` (≤ 0: none)."""
    f = np.floor(t - m)
    d = t - f - 1.0  # t - j, in [m - 1, m)
    return int(f) + 1, 1.0 - abs(d) * inv, 1.0 - (1.0 - d) * inv


@numba.njit(parallel=True, fastmath=True, cache=True)
def forward_joseph(img, cos_t, sin_t, centers, n_cols, out):
    """Add to ``out[z, a, :]`` every voxel of ``img[z]`` spread onto the bins within ``m`` of it."""
    n_z, n, _ = img.shape
    n_angles = cos_t.size
    half = (n - 1) / 2.0
    for za in numba.prange(n_z * n_angles):
        z = za // n_angles
        a = za - z * n_angles
        c, s = cos_t[a], sin_t[a]
        m = max(abs(c), abs(s))
        inv = 1.0 / m
        row = out[z, a]
        for y in range(n):
            t = centers[z] + (y - half) * s - half * c
            for x in range(n):
                j, w0, w1 = _bins(t, m, inv)
                v = img[z, y, x] * inv
                if w0 > 0 and j >= 0 and j < n_cols:
                    row[j] += w0 * v
                if w1 > 0 and j >= -1 and j < n_cols - 1:
                    row[j + 1] += w1 * v
                t += c


@numba.njit(parallel=True, fastmath=True, cache=True)
def adjoint_joseph(q, cos_t, sin_t, centers, n, out):
    """Add to ``out[z, y, x]`` the bins of ``q[z, a]`` within ``m`` of each voxel, same weights."""
    n_z, n_angles, n_cols = q.shape
    half = (n - 1) / 2.0
    for zy in numba.prange(n_z * n):
        z = zy // n
        y = zy - z * n
        row = out[z, y]
        for a in range(n_angles):
            c, s = cos_t[a], sin_t[a]
            m = max(abs(c), abs(s))
            inv = 1.0 / m
            t = centers[z] + (y - half) * s - half * c
            qa = q[z, a]
            for x in range(n):
                j, w0, w1 = _bins(t, m, inv)
                acc = 0.0
                if w0 > 0 and j >= 0 and j < n_cols:
                    acc += w0 * qa[j]
                if w1 > 0 and j >= -1 and j < n_cols - 1:
                    acc += w1 * qa[j + 1]
                row[x] += acc * inv
                t += c
