"""The CPU twin of the CUDA backprojection kernels (Numba, threads over voxel rows).

Kept in its own module so that Numba is imported only when the CPU path runs,
and so that its on-disk cache is keyed to a module-level function.
"""

import numba
import numpy as np


@numba.njit(parallel=True, fastmath=True, cache=True)
def backproject_linear(q, cos_t, sin_t, center, n, out):
    """Accumulate ``sum_a q[z, a, t]`` into ``out[z, y, x]`` (see tomolab.recon.backproject)."""
    n_z, n_angles, n_cols = q.shape
    half = (n - 1) / 2.0
    for zy in numba.prange(n_z * n):
        z = zy // n
        y = zy - z * n
        Y = y - half
        row = out[z, y]
        for a in range(n_angles):
            c = cos_t[a]
            t = center + Y * sin_t[a] - half * c
            for x in range(n):
                i = int(np.floor(t))
                if i >= 0 and i < n_cols - 1:
                    w = t - i
                    row[x] += (1.0 - w) * q[z, a, i] + w * q[z, a, i + 1]
                elif i == n_cols - 1 and t == i:
                    row[x] += q[z, a, i]
                t += c
