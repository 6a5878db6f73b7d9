"""The CPU twin of the CUDA point backprojection (Numba, threads over detector rows).

Kept in its own module so that Numba is imported only when the CPU path runs,
and so that its on-disk cache is keyed to a module-level function.
"""

import numba
import numpy as np


@numba.njit(parallel=True, fastmath=True, cache=True)
def backproject_points_linear(q, t, out):
    """Accumulate ``sum_a q[a, r, t[a, j]]`` into ``out[r, j]`` (see tomolab.recon.points)."""
    n_angles, n_rows, n_cols = q.shape
    n_points = t.shape[1]
    for r in numba.prange(n_rows):
        row = out[r]
        for a in range(n_angles):
            for j in range(n_points):
                tj = t[a, j]
                i = int(np.floor(tj))
                if i >= 0 and i < n_cols - 1:
                    w = tj - i
                    row[j] += (1.0 - w) * q[a, r, i] + w * q[a, r, i + 1]
                elif i == n_cols - 1 and tj == i:
                    row[j] += q[a, r, i]
