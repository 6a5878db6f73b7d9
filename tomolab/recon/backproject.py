"""Parallel-beam backprojection, one kernel for the CPU and one for the GPU.

Both compute, for every slice ``z`` and voxel ``(y, x)`` of an ``n × n`` grid
centred on the rotation axis,

    out[z, y, x] = sum_a  q[z, a, t(a, y, x)],
    t = center + X cos(theta_a) + Y sin(theta_a),
    X = x - (n - 1) / 2,  Y = y - (n - 1) / 2,

with linear interpolation along the detector and zero outside it. The CPU
kernel is Numba (threads over rows of voxels); the GPU kernel is CUDA C
compiled by CuPy, one thread per voxel with the angle table in shared memory.
They are tested against each other and against the same phantom.
"""

from __future__ import annotations

import numpy as np

from tomolab._array import array_module, is_cupy

__all__ = ["backproject"]


def _numba_kernel():
    import numba

    @numba.njit(parallel=True, fastmath=True, cache=True)
    def kernel(q, cos_t, sin_t, center, n, out):
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
    return kernel


_kernels: dict = {}
_GPU_ANGLES_PER_LAUNCH = 4096


def _cpu_kernel():
    if "cpu" not in _kernels:
        _kernels["cpu"] = _numba_kernel()
    return _kernels["cpu"]


_CUDA_SOURCE = r"""
extern "C" __global__ void backproject_linear(
    const float* __restrict__ q, const float2* __restrict__ trig,
    float center, int n, int n_angles, int n_cols, int n_z, long long z_stride,
    float* __restrict__ out)
{
    extern __shared__ float2 s_trig[];
    for (int i = threadIdx.y * blockDim.x + threadIdx.x; i < n_angles; i += blockDim.x * blockDim.y)
        s_trig[i] = trig[i];
    __syncthreads();
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int z = blockIdx.z;
    if (x >= n || y >= n || z >= n_z) return;
    float half = 0.5f * (n - 1);
    float X = x - half, Y = y - half;
    const float* qz = q + (size_t)z * z_stride;
    float acc = 0.f;
    for (int a = 0; a < n_angles; ++a) {
        float2 cs = s_trig[a];
        float t = center + X * cs.x + Y * cs.y;
        float fi = floorf(t);
        int i = (int)fi;
        float w = t - fi;
        const float* qa = qz + (size_t)a * n_cols;
        if (i >= 0 && i < n_cols - 1) acc += (1.f - w) * __ldg(qa + i) + w * __ldg(qa + i + 1);
        else if (i == n_cols - 1 && w == 0.f) acc += __ldg(qa + i);
    }
    out[((size_t)z * n + y) * n + x] += acc;
}
"""


def _gpu_kernel():
    import cupy

    device = cupy.cuda.runtime.getDevice()
    key = ("gpu", device)
    if key not in _kernels:
        _kernels[key] = cupy.RawKernel(_CUDA_SOURCE, "backproject_linear")
    return _kernels[key]


def backproject(filtered, angles, *, center: float, n: int | None = None, out=None):
    """Backproject filtered sinograms onto ``n × n`` slices.

    Parameters
    ----------
    filtered : ndarray (z, angle, col) float32, numpy or cupy
        Filtered sinograms, one per slice.
    angles : array_like (angle,)
        Projection angles in radians.
    center : float
        Detector column of the rotation axis, in pixels.
    n : int, optional
        Width of the square output grid (default: the detector width).
    out : ndarray (z, n, n) float32, optional
        Where to accumulate; it is zeroed first.

    Returns
    -------
    ndarray (z, n, n) float32, on the device of ``filtered``
        The unscaled sum over angles.

    Examples
    --------
    >>> import numpy as np
    >>> q = np.zeros((1, 2, 9), np.float32); q[:, :, 4] = 1.0
    >>> img = backproject(q, [0.0, np.pi / 2], center=4.0)
    >>> float(img[0, 4, 4]), float(img[0, 0, 4]), float(img[0, 0, 0])
    (2.0, 1.0, 0.0)
    """
    xp = array_module(filtered)
    if filtered.ndim != 3:
        raise ValueError(f"filtered must be (z, angle, col), got shape {filtered.shape}")
    n_z, n_angles, n_cols = filtered.shape
    n = int(n or n_cols)
    filtered = xp.ascontiguousarray(filtered, dtype=xp.float32)
    angles = np.asarray(angles, dtype=np.float64)
    if out is None:
        out = xp.zeros((n_z, n, n), dtype=xp.float32)
    else:
        out[...] = 0
    if is_cupy(filtered):
        trig = xp.asarray(np.stack([np.cos(angles), np.sin(angles)], axis=-1).astype(np.float32))
        block = (32, 8, 1)
        grid = ((n + block[0] - 1) // block[0], (n + block[1] - 1) // block[1], n_z)
        step = _GPU_ANGLES_PER_LAUNCH  # the angle table must fit in shared memory
        for a0 in range(0, n_angles, step):
            a1 = min(a0 + step, n_angles)
            _gpu_kernel()(grid, block, (filtered[:, a0:a1], trig[a0:a1], np.float32(center),
                                        np.int32(n), np.int32(a1 - a0), np.int32(n_cols), np.int32(n_z),
                                        np.int64(n_angles * n_cols), out),
                          shared_mem=8 * (a1 - a0))
    else:
        _cpu_kernel()(filtered, np.cos(angles).astype(np.float64), np.sin(angles).astype(np.float64),
                      float(center), n, out)
    return out
