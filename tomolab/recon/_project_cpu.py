"""The CPU twins of the projector pair's CUDA kernels (Numba, threads over rows of the output).

Both kernels walk the detector position ``t`` of a voxel row the same way
(``t`` at the row's first voxel, then ``t += cos θ`` per voxel), so the
forward projection is the exact transpose of the backprojection, whatever
the rounding. Kept apart so that Numba is imported only when the CPU path runs.
"""

import numba
import numpy as np


@numba.njit(parallel=True, fastmath=True, cache=True)
def forward_linear(img, cos_t, sin_t, centers, n_cols, out):
    """Add to ``out[z, a, :]`` the splat of every voxel of ``img[z]`` onto its two nearest bins."""
    n_z, n, _ = img.shape
    n_angles = cos_t.size
    half = (n - 1) / 2.0
    for za in numba.prange(n_z * n_angles):
        z = za // n_angles
        a = za - z * n_angles
        c, s = cos_t[a], sin_t[a]
        row = out[z, a]
        for y in range(n):
            t = centers[z] + (y - half) * s - half * c
            for x in range(n):
                i = int(np.floor(t))
                if i >= 0 and i < n_cols - 1:
                    w = t - i
                    v = img[z, y, x]
                    row[i] += (1.0 - w) * v
                    row[i + 1] += w * v
                elif i == n_cols - 1 and t == i:
                    row[i] += img[z, y, x]
                t += c


@numba.njit(parallel=True, fastmath=True, cache=True)
def adjoint_linear(q, cos_t, sin_t, centers, n, out):
    """Add to ``out[z, y, x]`` the linear interpolation of ``q[z, a]`` at every angle's ``t``."""
    n_z, n_angles, n_cols = q.shape
    half = (n - 1) / 2.0
    for zy in numba.prange(n_z * n):
        z = zy // n
        y = zy - z * n
        row = out[z, y]
        for a in range(n_angles):
            c = cos_t[a]
            t = centers[z] + (y - half) * sin_t[a] - half * c
            qa = q[z, a]
            for x in range(n):
                i = int(np.floor(t))
                if i >= 0 and i < n_cols - 1:
                    w = t - i
                    row[x] += (1.0 - w) * qa[i] + w * qa[i + 1]
                elif i == n_cols - 1 and t == i:
                    row[x] += qa[i]
                t += c
