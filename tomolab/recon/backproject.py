"""Parallel-beam backprojection, one kernel for the CPU and one for the GPU.

Both compute, for every slice ``z`` and voxel ``(y, x)`` of a ``size × size`` grid
centred on the rotation axis,

    out[z, y, x] = sum_a  q[z, a, t(a, y, x)],
    t = center + X cos(theta_a) + Y sin(theta_a),
    X = x - (size - 1) / 2,  Y = y - (size - 1) / 2,

with linear interpolation along the detector and zero outside it. The CPU
kernel is Numba (threads over rows of voxels); the GPU kernel is CUDA C
compiled by CuPy, one thread per voxel with the angle table in shared memory.
They are tested against each other and against the same phantom.
"""

from __future__ import annotations

import numpy as np

from tomolab.arrays import array_module, is_cupy

__all__ = ["backproject"]


_kernels: dict = {}
_GPU_ANGLES_PER_LAUNCH = 4096


def _cpu_kernel():
    from tomolab.recon._backproject_cpu import backproject_linear  # imports numba on first use
    return backproject_linear


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


# Several slices per thread: the sinograms are interleaved as (angle, col, 4·G)
# so 16-byte loads fetch the same detector sample of 4·G slices, and the index
# arithmetic of each (voxel, angle) pair is shared by them; each thread also
# covers P voxels along y, which share the angle table reads.
def _z_kernel_source(groups: int, pixels: int) -> str:
    width = 4 * groups
    acc_decl = "\n".join(f"    float4 acc{p}_{g} = make_float4(0.f, 0.f, 0.f, 0.f);"
                         for p in range(pixels) for g in range(groups))
    body = []
    for p in range(pixels):
        body.append(f"""
        {{
            float t = base + (Y0 + {p}.f) * cs.y;
            float fi = floorf(t);
            int i = (int)fi;
            float w = t - fi, u = 1.f - w;
            if (i >= 0 && i < n_cols - 1) {{
                const float4* q0 = qa + (size_t)i * {groups};""")
        for g in range(groups):
            body.append(f"""
                {{ float4 v0 = __ldg(q0 + {g}), v1 = __ldg(q0 + {groups + g});
                  acc{p}_{g}.x += u * v0.x + w * v1.x; acc{p}_{g}.y += u * v0.y + w * v1.y;
                  acc{p}_{g}.z += u * v0.z + w * v1.z; acc{p}_{g}.w += u * v0.w + w * v1.w; }}""")
        body.append(f"""
            }} else if (i == n_cols - 1 && w == 0.f) {{
                const float4* q0 = qa + (size_t)i * {groups};""")
        for g in range(groups):
            body.append(f"""
                {{ float4 v0 = __ldg(q0 + {g});
                  acc{p}_{g}.x += v0.x; acc{p}_{g}.y += v0.y; acc{p}_{g}.z += v0.z; acc{p}_{g}.w += v0.w; }}""")
        body.append("""
            }
        }""")
    stores = []
    for p in range(pixels):
        stores.append(f"""
    if (y0 + {p} < n) {{
        size_t at = (size_t)(y0 + {p}) * n + x;""")
        for g in range(groups):
            for k, comp in enumerate("xyzw"):
                z = 4 * g + k
                stores.append(f"""
        if (z0 + {z} < n_z) out[(size_t)(z0 + {z}) * plane + at] += acc{p}_{g}.{comp};""")
        stores.append("""
    }""")
    return f"""
extern "C" __global__ void backproject_z{width}_p{pixels}(
    const float4* __restrict__ q, const float2* __restrict__ trig,
    float center, int n, int n_angles, int n_cols, long long group_stride, int n_z,
    float* __restrict__ out)
{{
    extern __shared__ float2 s_trig[];
    for (int i = threadIdx.y * blockDim.x + threadIdx.x; i < n_angles; i += blockDim.x * blockDim.y)
        s_trig[i] = trig[i];
    __syncthreads();
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y0 = (blockIdx.y * blockDim.y + threadIdx.y) * {pixels};
    if (x >= n || y0 >= n) return;
    float half = 0.5f * (n - 1);
    float X = x - half, Y0 = y0 - half;
    const float4* qg = q + (size_t)blockIdx.z * group_stride;
{acc_decl}
    #pragma unroll 2
    for (int a = 0; a < n_angles; ++a) {{
        float2 cs = s_trig[a];
        float base = center + X * cs.x;
        const float4* qa = qg + (size_t)a * n_cols * {groups};
{"".join(body)}
    }}
    size_t plane = (size_t)n * n;
    int z0 = {width} * blockIdx.z;
{"".join(stores)}
}}
"""


def _gpu_kernel(name: str = "backproject_linear", source: str | None = None):
    import cupy

    key = (name, cupy.cuda.runtime.getDevice())
    if key not in _kernels:
        _kernels[key] = cupy.RawKernel(source or _CUDA_SOURCE, name)
    return _kernels[key]


def _launch_by_angle_chunks(kernel, grid, block, sinograms, trig, n_angles, after):
    """Launch ``kernel`` once per chunk of angles: the angle table must fit in shared memory.

    The arguments are ``(sinograms[:, a0:a1], trig[a0:a1], *after)`` with the
    chunk's angle count put where ``None`` stands in ``after``.
    """
    step = _GPU_ANGLES_PER_LAUNCH
    for a0 in range(0, n_angles, step):
        a1 = min(a0 + step, n_angles)
        tail = tuple(np.int32(a1 - a0) if arg is None else arg for arg in after)
        kernel(grid, block, (sinograms[:, a0:a1], trig[a0:a1], *tail),
               shared_mem=8 * (a1 - a0))


_BLOCK = (32, 8, 1)


def _grid(n: int, pixels: int, blocks: int):
    """Launch grid over ``n`` columns, ``n / pixels`` thread rows and ``blocks`` along z."""
    rows = (n + pixels - 1) // pixels
    return ((n + _BLOCK[0] - 1) // _BLOCK[0], (rows + _BLOCK[1] - 1) // _BLOCK[1], blocks)


def _interleave(xp, stack, width: int, dtype):
    """``(z, angle, col)`` as contiguous ``(z / width, angle, col, width)`` in ``dtype``.

    The last block is completed with zero slices.
    """
    n_z, n_angles, n_cols = stack.shape
    blocks = (n_z + width - 1) // width
    if blocks * width != n_z or stack.dtype != dtype:
        padded = xp.zeros((blocks * width, n_angles, n_cols), dtype)
        padded[:n_z] = stack
        stack = padded
    return xp.ascontiguousarray(stack.reshape(blocks, width, n_angles, n_cols).transpose(0, 2, 3, 1))


def _launch_reference(xp, filtered, trig, center, n, out):
    n_z, n_angles, n_cols = filtered.shape
    _launch_by_angle_chunks(_gpu_kernel(), _grid(n, 1, n_z), _BLOCK, filtered, trig, n_angles,
                            (np.float32(center), np.int32(n), None, np.int32(n_cols), np.int32(n_z),
                             np.int64(n_angles * n_cols), out))


def _launcher(groups: int, pixels: int):
    width = 4 * groups
    name = f"backproject_z{width}_p{pixels}"

    def launch(xp, filtered, trig, center, n, out):
        n_z, n_angles, n_cols = filtered.shape
        interleaved = _interleave(xp, filtered, width, xp.float32)
        kernel = _gpu_kernel(name, _z_kernel_source(groups, pixels))
        grid = _grid(n, pixels, interleaved.shape[0])
        _launch_by_angle_chunks(kernel, grid, _BLOCK, interleaved, trig, n_angles,
                                (np.float32(center), np.int32(n), None, np.int32(n_cols),
                                 np.int64(n_angles * n_cols * groups), np.int32(n_z), out))
    launch.__name__ = f"launch_{name}"
    return launch


# Half-precision storage: eight slices per 16-byte load, so half the bytes per
# update of the float32 kernels, whose speed the L1 bandwidth bounds. The
# filtered sinograms are divided by their largest magnitude before rounding (no
# overflow or subnormals whatever their units) and the sums multiplied back.
# "h8p2" accumulates in float32: each stored sample is rounded to 11
# significant bits (relative 2.4e-4), which averages down over the angles.
# The "hhKpP" kernels (K slices x P voxels per thread) also interpolate and sum
# in half2 arithmetic (two slices per instruction) over runs of _HALF_RUN
# angles, flushed into float32 sums: about half the instructions per update.
_HALF_RUN = 8
_CUDA_SOURCE_H8 = r"""
#include <cuda_fp16.h>

// One (pixel, angle) step of the float32-accumulating kernel.
__device__ __forceinline__ void step_f32(const uint4* qa, float t, int n_cols, float* acc) {
    float fi = floorf(t);
    int i = (int)fi;
    float w = t - fi, u = 1.f - w;
    if (i >= 0 && i < n_cols - 1) {
        uint4 r0 = __ldg(qa + i), r1 = __ldg(qa + i + 1);
        const __half2* h0 = reinterpret_cast<const __half2*>(&r0);
        const __half2* h1 = reinterpret_cast<const __half2*>(&r1);
        #pragma unroll
        for (int k = 0; k < 4; ++k) {
            float2 v0 = __half22float2(h0[k]), v1 = __half22float2(h1[k]);
            acc[2 * k] += u * v0.x + w * v1.x;
            acc[2 * k + 1] += u * v0.y + w * v1.y;
        }
    } else if (i == n_cols - 1 && w == 0.f) {
        uint4 r0 = __ldg(qa + i);
        const __half2* h0 = reinterpret_cast<const __half2*>(&r0);
        #pragma unroll
        for (int k = 0; k < 4; ++k) {
            float2 v0 = __half22float2(h0[k]);
            acc[2 * k] += v0.x;
            acc[2 * k + 1] += v0.y;
        }
    }
}

// The same step in half2 arithmetic, into half2 partial sums.
__device__ __forceinline__ void step_h2(const uint4* qa, float t, int n_cols, __half2* part) {
    float fi = floorf(t);
    int i = (int)fi;
    float w = t - fi;
    if (i >= 0 && i < n_cols - 1) {
        uint4 r0 = __ldg(qa + i), r1 = __ldg(qa + i + 1);
        const __half2* h0 = reinterpret_cast<const __half2*>(&r0);
        const __half2* h1 = reinterpret_cast<const __half2*>(&r1);
        __half2 w2 = __float2half2_rn(w), u2 = __float2half2_rn(1.f - w);
        #pragma unroll
        for (int k = 0; k < 4; ++k)
            part[k] = __hfma2(w2, h1[k], __hfma2(u2, h0[k], part[k]));
    } else if (i == n_cols - 1 && w == 0.f) {
        uint4 r0 = __ldg(qa + i);
        const __half2* h0 = reinterpret_cast<const __half2*>(&r0);
        #pragma unroll
        for (int k = 0; k < 4; ++k) part[k] = __hadd2(part[k], h0[k]);
    }
}

#define KERNEL_HEAD(NAME)                                                                      \
extern "C" __global__ void NAME(                                                               \
    const uint4* __restrict__ q, const float2* __restrict__ trig,                              \
    float center, int n, int n_angles, int n_cols, long long group_stride, int n_z,            \
    const float* __restrict__ scale, float* __restrict__ out)                                  \
{                                                                                              \
    extern __shared__ float2 s_trig[];                                                         \
    for (int i = threadIdx.y * blockDim.x + threadIdx.x; i < n_angles; i += blockDim.x * blockDim.y) \
        s_trig[i] = trig[i];                                                                   \
    __syncthreads();                                                                           \
    int x = blockIdx.x * blockDim.x + threadIdx.x;                                             \
    int y0 = (blockIdx.y * blockDim.y + threadIdx.y) * 2;                                      \
    if (x >= n || y0 >= n) return;                                                             \
    float half_n = 0.5f * (n - 1);                                                             \
    float X = x - half_n, Y0 = y0 - half_n;                                                    \
    const uint4* qg = q + (size_t)blockIdx.z * group_stride;                                   \
    float acc[2][8];                                                                           \
    _Pragma("unroll") for (int p = 0; p < 2; ++p)                                              \
        _Pragma("unroll") for (int k = 0; k < 8; ++k) acc[p][k] = 0.f;

#define KERNEL_TAIL                                                                            \
    float s = scale[0];                                                                        \
    size_t plane = (size_t)n * n;                                                              \
    int z0 = 8 * blockIdx.z;                                                                   \
    _Pragma("unroll") for (int p = 0; p < 2; ++p) {                                            \
        if (y0 + p >= n) continue;                                                             \
        size_t at = (size_t)(y0 + p) * n + x;                                                  \
        _Pragma("unroll") for (int k = 0; k < 8; ++k)                                          \
            if (z0 + k < n_z) out[(size_t)(z0 + k) * plane + at] += s * acc[p][k];             \
    }                                                                                          \
}

KERNEL_HEAD(backproject_h8_p2)
    #pragma unroll 2
    for (int a = 0; a < n_angles; ++a) {
        float2 cs = s_trig[a];
        float base = center + X * cs.x;
        const uint4* qa = qg + (size_t)a * n_cols;
        step_f32(qa, base + Y0 * cs.y, n_cols, acc[0]);
        step_f32(qa, base + (Y0 + 1.f) * cs.y, n_cols, acc[1]);
    }
KERNEL_TAIL

"""


def _hh_kernel_source(groups: int, pixels: int) -> str:
    """Half2-arithmetic kernel: 8·``groups`` slices × ``pixels`` voxels along y per thread."""
    width = 8 * groups
    name = f"backproject_hh{width}_p{pixels}"
    steps = []
    for p in range(pixels):
        steps.append(f"""
            {{
                float t = base + (Y0 + {p}.f) * cs.y;
                float fi = floorf(t);
                int i = (int)fi;
                float w = t - fi;
                if (i >= 0 && i < n_cols - 1) {{
                    const uint4* q0 = qa + (size_t)i * {groups};
                    __half2 w2 = __float2half2_rn(w), u2 = __float2half2_rn(1.f - w);""")
        for g in range(groups):
            steps.append(f"""
                    {{ uint4 r0 = __ldg(q0 + {g}), r1 = __ldg(q0 + {groups + g});
                      const __half2* h0 = reinterpret_cast<const __half2*>(&r0);
                      const __half2* h1 = reinterpret_cast<const __half2*>(&r1);
                      #pragma unroll
                      for (int k = 0; k < 4; ++k)
                          part[{p}][{4 * g} + k] = __hfma2(w2, h1[k], __hfma2(u2, h0[k], part[{p}][{4 * g} + k])); }}""")
        steps.append(f"""
                }} else if (i == n_cols - 1 && w == 0.f) {{
                    const uint4* q0 = qa + (size_t)i * {groups};""")
        for g in range(groups):
            steps.append(f"""
                    {{ uint4 r0 = __ldg(q0 + {g});
                      const __half2* h0 = reinterpret_cast<const __half2*>(&r0);
                      #pragma unroll
                      for (int k = 0; k < 4; ++k) part[{p}][{4 * g} + k] = __hadd2(part[{p}][{4 * g} + k], h0[k]); }}""")
        steps.append("""
                }
            }""")
    return f"""
#include <cuda_fp16.h>
extern "C" __global__ void {name}(
    const uint4* __restrict__ q, const float2* __restrict__ trig,
    float center, int n, int n_angles, int n_cols, long long group_stride, int n_z,
    const float* __restrict__ scale, float* __restrict__ out)
{{
    extern __shared__ float2 s_trig[];
    for (int i = threadIdx.y * blockDim.x + threadIdx.x; i < n_angles; i += blockDim.x * blockDim.y)
        s_trig[i] = trig[i];
    __syncthreads();
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y0 = (blockIdx.y * blockDim.y + threadIdx.y) * {pixels};
    if (x >= n || y0 >= n) return;
    float half_n = 0.5f * (n - 1);
    float X = x - half_n, Y0 = y0 - half_n;
    const uint4* qg = q + (size_t)blockIdx.z * group_stride;
    float acc[{pixels}][{width}];
    #pragma unroll
    for (int p = 0; p < {pixels}; ++p)
        #pragma unroll
        for (int k = 0; k < {width}; ++k) acc[p][k] = 0.f;
    for (int a0 = 0; a0 < n_angles; a0 += {_HALF_RUN}) {{
        __half2 part[{pixels}][{width // 2}];
        #pragma unroll
        for (int p = 0; p < {pixels}; ++p)
            #pragma unroll
            for (int k = 0; k < {width // 2}; ++k) part[p][k] = __float2half2_rn(0.f);
        int a1 = min(a0 + {_HALF_RUN}, n_angles);
        #pragma unroll 2
        for (int a = a0; a < a1; ++a) {{
            float2 cs = s_trig[a];
            float base = center + X * cs.x;
            const uint4* qa = qg + (size_t)a * n_cols * {groups};
{"".join(steps)}
        }}
        #pragma unroll
        for (int p = 0; p < {pixels}; ++p)
            #pragma unroll
            for (int k = 0; k < {width // 2}; ++k) {{
                float2 v = __half22float2(part[p][k]);
                acc[p][2 * k] += v.x;
                acc[p][2 * k + 1] += v.y;
            }}
    }}
    float s = scale[0];
    size_t plane = (size_t)n * n;
    int z0 = {width} * blockIdx.z;
    #pragma unroll
    for (int p = 0; p < {pixels}; ++p) {{
        if (y0 + p >= n) continue;
        size_t at = (size_t)(y0 + p) * n + x;
        #pragma unroll
        for (int k = 0; k < {width}; ++k)
            if (z0 + k < n_z) out[(size_t)(z0 + k) * plane + at] += s * acc[p][k];
    }}
}}
"""


def _half_launcher(name: str, source: str, width: int = 8, pixels: int = 2):
    def launch(xp, filtered, trig, center, n, out):
        n_z, n_angles, n_cols = filtered.shape
        # divide by the largest magnitude on the device (no host round trip)
        scale = xp.maximum(xp.abs(filtered).max(), xp.float32(1e-30)).astype(xp.float32).reshape(1)
        interleaved = _interleave(xp, filtered / scale, width, xp.float16)
        kernel = _gpu_kernel(name, source)
        grid = _grid(n, pixels, interleaved.shape[0])
        _launch_by_angle_chunks(kernel, grid, _BLOCK, interleaved, trig, n_angles,
                                (np.float32(center), np.int32(n), None, np.int32(n_cols),
                                 np.int64(n_angles * n_cols * width // 8), np.int32(n_z), scale,
                                 out))
    launch.__name__ = f"launch_{name}"
    return launch


def _hh_launcher(groups: int, pixels: int):
    name = f"backproject_hh{8 * groups}_p{pixels}"
    return _half_launcher(name, _hh_kernel_source(groups, pixels), width=8 * groups, pixels=pixels)


#: GPU kernels by name; "auto" picks by the number of slices. Measured on an H100 (2048² ×
#: 1800 angles, benchmarks/RESULTS.md): z4p2 and hh8p1 are the fastest of their precisions;
#: 16 slices per thread and warps of 8 × 4 or 16 × 2 voxels were slower and are not kept.
KERNELS = {"reference": _launch_reference, "z4": _launcher(1, 1), "z4p2": _launcher(1, 2),
           "z4p4": _launcher(1, 4), "z8": _launcher(2, 1), "z8p2": _launcher(2, 2),
           "h8p2": _half_launcher("backproject_h8_p2", _CUDA_SOURCE_H8),
           "hh8p1": _hh_launcher(1, 1), "hh8p2": _hh_launcher(1, 2)}

#: kernels that round the filtered sinograms to half precision: not chosen by "auto"
PREVIEW_KERNELS = ("h8p2", "hh8p1", "hh8p2")


def backproject(filtered, angles, *, center: float, size: int | None = None, out=None,
                kernel: str = "auto"):
    """Backproject filtered sinograms onto ``size × size`` slices.

    Parameters
    ----------
    filtered : ndarray (z, angle, col) float32, numpy or cupy
        Filtered sinograms, one per slice.
    angles : array_like (angle,)
        Projection angles in radians.
    center : float
        Detector column of the rotation axis, in pixels.
    size : int, optional
        Width of the square output grid (default: the detector width).
    out : ndarray (z, size, size) float32, optional
        Where to accumulate; it is zeroed first.
    kernel : {"auto", "reference", "z4", "z4p2", "z4p4", "z8", "z8p2", "h8p2", "hh8p2", ...}
        GPU kernel (the CPU has one). ``"reference"``: one voxel per thread,
        the simple kernel the fast ones are tested against; ``"zKpP"``: K
        slices and P voxels per thread, from interleaved sinograms;
        ``"h8p2"``: sinograms stored in half precision (relative difference to
        the reference about 1e-4), for previews such as centre sweeps;
        ``"hhKpP"``: half-precision storage and half2 sums flushed to float32
        every few angles (``PREVIEW_KERNELS`` lists them; below 1e-3).

    Returns
    -------
    ndarray (z, size, size) float32, on the device of ``filtered``
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
    size = int(size or n_cols)
    filtered = xp.ascontiguousarray(filtered, dtype=xp.float32)
    angles = np.asarray(angles, dtype=np.float64)
    if out is None:
        out = xp.zeros((n_z, size, size), dtype=xp.float32)
    else:
        out[...] = 0
    if is_cupy(filtered):
        if kernel == "auto":
            kernel = "z4p2" if n_z >= 3 else "reference"  # fastest on an H100 (benchmarks/RESULTS.md)
        if kernel not in KERNELS:
            from tomolab.errors import ParameterError
            raise ParameterError("unknown backprojection kernel", where="kernel", value=kernel,
                                 fix=f"use auto or one of {', '.join(KERNELS)}")
        trig = xp.asarray(np.stack([np.cos(angles), np.sin(angles)], axis=-1).astype(np.float32))
        KERNELS[kernel](xp, filtered, trig, center, size, out)
    else:
        _cpu_kernel()(filtered, np.cos(angles).astype(np.float64), np.sin(angles).astype(np.float64),
                      float(center), size, out)
    return out
