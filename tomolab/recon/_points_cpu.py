"""The CPU twin of the CUDA point backprojection (Numba, threads over detector rows).

Kept in its own module so that Numba is imported only when the CPU path runs,
and so that its on-disk cache is keyed to a module-level function.
"""

import numba
import numpy as np


@numba.njit(fastmath=True, cache=True, nogil=True)
def _taps(t, n_cols):
    """Column and the two linear weights of each ``t[a, j]`` (zero weights off the detector)."""
    n_angles, n_points = t.shape
    first = np.zeros((n_angles, n_points), np.int32)
    w0 = np.zeros((n_angles, n_points), np.float32)
    w1 = np.zeros((n_angles, n_points), np.float32)
    for a in range(n_angles):
        for j in range(n_points):
            tj = t[a, j]
            i = int(np.floor(tj))
            if i >= 0 and i < n_cols - 1:
                w = tj - i
                first[a, j] = i
                w0[a, j] = 1.0 - w
                w1[a, j] = w
            elif i == n_cols - 1 and tj == i and n_cols > 1:  # the last column itself
                first[a, j] = i - 1
                w1[a, j] = 1.0
            elif i == 0 and tj == 0 and n_cols == 1:  # pragma: no cover - a one-column detector
                w0[a, j] = 1.0
    return first, w0, w1


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _accumulate(q, first, w0, w1, out):
    n_angles, n_rows, n_cols = q.shape
    n_points = first.shape[1]
    for r in numba.prange(n_rows):
        row = out[r]
        for a in range(n_angles):
            line = q[a, r]
            for j in range(n_points):
                i = first[a, j]
                row[j] += w0[a, j] * line[i] + w1[a, j] * line[min(i + 1, n_cols - 1)]


def backproject_points_linear(q, t, out):
    """Accumulate ``sum_a q[a, r, t[a, j]]`` into ``out[r, j]`` (see tomolab.recon.points).

    The columns and weights of each ``(angle, point)`` are worked out once,
    not once per detector row.
    """
    first, w0, w1 = _taps(np.ascontiguousarray(t, dtype=np.float64), q.shape[2])
    _accumulate(q, first, w0, w1, out)
