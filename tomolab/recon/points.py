"""Backprojection onto a line of voxels in every detector row: vertical planes of a volume.

For parallel beam each detector row reconstructs one horizontal slice, so a
vertical plane of the volume (``xz`` at a fixed ``y``, ``yz`` at a fixed
``x``) is one line of voxels per row. :func:`backproject_points` computes,
for voxels at offsets ``(X_j, Y_j)`` from the rotation axis (in pixels),

    out[r, j] = sum_a  q[a, r, t(a, j)],   t = center + X_j cos(theta_a) + Y_j sin(theta_a),

with the geometry, the centre convention, the linear interpolation and the
detector's edges of :func:`tomolab.recon.backproject`: the plane through
voxel row ``y`` of its ``size × size`` grid is ``X_j = j - (size - 1) / 2``,
``Y_j = y - (size - 1) / 2``. Its cost is ``angles × rows × points``, so a
plane of a 2048² detector is as cheap as one slice. The live reconstruction
(:mod:`tomolab.live`) uses it to keep its ``xz`` and ``yz`` slices.
"""

from __future__ import annotations

import numpy as np

from tomolab.arrays import array_module, is_cupy

__all__ = ["backproject_points", "plane_points"]

_kernels: dict = {}

_CUDA_SOURCE = r"""
extern "C" __global__ void backproject_points(
    const float* __restrict__ q, const float* __restrict__ t, int n_angles, int n_rows,
    int n_cols, int n_points, float* __restrict__ out)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int r = blockIdx.y * blockDim.y + threadIdx.y;
    if (j >= n_points || r >= n_rows) return;
    const float* qr = q + (size_t)r * n_cols;
    size_t angle_stride = (size_t)n_rows * n_cols;
    float acc = 0.f;
    for (int a = 0; a < n_angles; ++a) {
        float tj = t[(size_t)a * n_points + j];
        float fi = floorf(tj);
        int i = (int)fi;
        float w = tj - fi;
        const float* qa = qr + a * angle_stride;
        if (i >= 0 && i < n_cols - 1) acc += (1.f - w) * __ldg(qa + i) + w * __ldg(qa + i + 1);
        else if (i == n_cols - 1 && w == 0.f) acc += __ldg(qa + i);
    }
    out[(size_t)r * n_points + j] += acc;
}
"""


def plane_points(size: int, *, y: float | None = None, x: float | None = None) -> tuple:
    """Offsets ``(X, Y)`` from the axis of the voxels of one line of a ``size × size`` grid.

    Give ``y`` (a voxel row of the grid) for the ``xz`` plane, whose points
    run along ``x``; or ``x`` (a voxel column) for the ``yz`` plane.

    Examples
    --------
    >>> X, Y = plane_points(5, y=1)
    >>> X.tolist(), Y.tolist()
    ([-2.0, -1.0, 0.0, 1.0, 2.0], [-1.0, -1.0, -1.0, -1.0, -1.0])
    """
    if (y is None) == (x is None):
        raise ValueError("give y (an xz plane) or x (a yz plane)")
    half = (size - 1) / 2.0
    line = np.arange(size, dtype=np.float64) - half
    if y is not None:
        return line, np.full(size, float(y) - half)
    return np.full(size, float(x) - half), line


def backproject_points(projections, angles, *, center: float, X, Y, out=None):
    """Backproject filtered projections onto voxels ``(X_j, Y_j)`` of every detector row.

    Parameters
    ----------
    projections : ndarray (angle, row, col) float32, numpy or cupy
        Filtered projections (the rows of each are the filtered sinogram
        lines of that angle).
    angles : array_like (angle,)
        Radians.
    center : float
        Detector column of the rotation axis, in pixels.
    X, Y : array_like (points,)
        Voxel offsets from the axis, in pixels (:func:`plane_points`).
    out : ndarray (row, points) float32, optional
        Added to (not zeroed), on the device of ``projections``.

    Returns
    -------
    ndarray (row, points) float32
        The unscaled sum over angles (as :func:`tomolab.recon.backproject`).

    Examples
    --------
    >>> import numpy as np
    >>> from tomolab.recon import backproject
    >>> q = np.random.default_rng(0).random((3, 2, 9), np.float32)
    >>> angles = [0.0, 0.7, 2.0]
    >>> X, Y = plane_points(9, y=6)
    >>> plane = backproject_points(q, angles, center=4.2, X=X, Y=Y)
    >>> slices = backproject(q.transpose(1, 0, 2), angles, center=4.2)
    >>> bool(np.allclose(plane, slices[:, 6, :], atol=1e-5))
    True
    """
    xp = array_module(projections)
    n_angles, n_rows, n_cols = projections.shape
    angles = np.asarray(angles, dtype=np.float64).reshape(-1)
    if angles.size != n_angles:
        raise ValueError(f"{angles.size} angles for {n_angles} projections")
    X = np.asarray(X, dtype=np.float64).reshape(-1)
    Y = np.asarray(Y, dtype=np.float64).reshape(-1)
    t = center + np.cos(angles)[:, None] * X[None, :] + np.sin(angles)[:, None] * Y[None, :]
    if out is None:
        out = xp.zeros((n_rows, X.size), dtype=xp.float32)
    if n_angles == 0 or X.size == 0:
        return out
    projections = xp.ascontiguousarray(projections, dtype=xp.float32)
    if is_cupy(projections):
        import cupy

        key = cupy.cuda.runtime.getDevice()
        if key not in _kernels:
            _kernels[key] = cupy.RawKernel(_CUDA_SOURCE, "backproject_points")
        block = (128, 2, 1)
        grid = ((X.size + block[0] - 1) // block[0], (n_rows + block[1] - 1) // block[1], 1)
        _kernels[key](grid, block, (projections, cupy.asarray(t, dtype=cupy.float32),
                                    np.int32(n_angles), np.int32(n_rows), np.int32(n_cols),
                                    np.int32(X.size), out))
    else:
        from tomolab.recon._points_cpu import backproject_points_linear

        backproject_points_linear(projections, t, out)
    return out
