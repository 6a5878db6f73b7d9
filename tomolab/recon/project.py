"""A matched projector pair for parallel beams: forward projection and its exact adjoint.

The pair is the linear-interpolation backprojector of
:func:`tomolab.recon.backproject` and its transpose. Voxel ``(y, x)`` of a
``size × size`` slice, at ``X = x - (size - 1) / 2``, ``Y = y - (size - 1) / 2``
from the axis, falls at angle ``θ`` on the detector position

    t = center + X cos θ + Y sin θ

and is spread onto the two nearest detector bins with the weights of linear
interpolation, ``1 - |t - j|`` on bin ``j``, as long as ``0 ≤ t ≤ n_cols - 1``.
:func:`back_project_adjoint` gathers with the same weights, so that
``⟨A x, y⟩ = ⟨x, Aᵀ y⟩`` to float precision: iterative methods (SIRT, CGLS,
total variation) need that for their convergence. Each voxel puts a total
weight of 1 on the detector per angle, so ``A x`` approximates line integrals
in units of pixels and ``x`` is an attenuation per pixel, as FBP returns it.

The centre is a detector column in pixels, one for all slices or one per
slice (a tilted axis), as everywhere in tomolab.

On a GPU the forward projection is a gather, one thread per (detector bin,
angle, slice), that walks the slice along the axis closer to the ray's
direction and reads the two or three voxels each row contributes (from a
transposed copy of the slice for the steeper angles, so a warp's reads stay
contiguous). The adjoint is :func:`tomolab.recon.backproject`'s kernels (one
centre) or a one-voxel-per-thread kernel with a centre per slice. On the CPU
both are Numba kernels (:mod:`tomolab.recon._project_cpu`) that walk the
detector position the same way, so one is the exact transpose of the other.
"""

from __future__ import annotations

import numpy as np

from tomolab.arrays import array_module, is_cupy
from tomolab.errors import ParameterError

__all__ = ["FORWARD_KERNELS", "back_project_adjoint", "forward_project"]

_kernels: dict = {}


def _forward_source(slices: int) -> str:
    """The CUDA gather: one thread per (bin, angle) and ``slices`` interleaved slices (1 or 4)."""
    vec = "float" if slices == 1 else "float4"
    zero = "0.f" if slices == 1 else "make_float4(0.f, 0.f, 0.f, 0.f)"
    add = ("acc += w * val;" if slices == 1 else
           "acc.x += w * val.x; acc.y += w * val.y; acc.z += w * val.z; acc.w += w * val.w;")
    if slices == 1:
        center = "centers[blockIdx.z]"
        store = "sino[((size_t)blockIdx.z * n_angles + a) * n_cols + j] = acc;"
    else:
        center = "centers[0]"
        store = "\n".join(
            f"    if (z0 + {k} < n_z) sino[((size_t)(z0 + {k}) * n_angles + a) * n_cols + j] = acc.{c};"
            for k, c in enumerate("xyzw"))
    return f"""
extern "C" __global__ void forward_gather_z{slices}(
    const {vec}* __restrict__ img, const {vec}* __restrict__ img_t,
    const float2* __restrict__ trig, const float* __restrict__ centers,
    int n, int n_angles, int n_cols, int n_z, float* __restrict__ sino)
{{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int a = blockIdx.y * blockDim.y + threadIdx.y;
    if (j >= n_cols || a >= n_angles) return;
    float2 cs = trig[a];
    // walk along the axis closer to the ray: each step then meets 2 or 3 voxels
    bool by_rows = fabsf(cs.x) >= fabsf(cs.y);
    float cv = by_rows ? cs.x : cs.y;  // along a line of the array read (contiguous)
    float cu = by_rows ? cs.y : cs.x;  // from one line to the next
    const {vec}* src = (by_rows ? img : img_t) + (size_t)blockIdx.z * n * n;
    float center = {center};
    float half = 0.5f * (n - 1);
    float inv = 1.f / cv;
    float last = (float)(n_cols - 1);
    float fj = (float)j;
    {vec} acc = {zero};
    for (int u = 0; u < n; ++u) {{
        float base = center + (u - half) * cu;
        // voxels v with |t - j| < 1 lie in an open interval of width 2 / |cv| <= 2.83
        float e0 = (fj - 1.f - base) * inv, e1 = (fj + 1.f - base) * inv;
        int v0 = (int)floorf(fminf(e0, e1) + half) + 1;
        const {vec}* line = src + (size_t)u * n;
        #pragma unroll
        for (int k = 0; k < 3; ++k) {{
            int v = v0 + k;
            float t = base + (v - half) * cv;
            float d = fabsf(t - fj);
            if (v >= 0 && v < n && d < 1.f && t >= 0.f && t <= last) {{
                float w = 1.f - d;
                {vec} val = __ldg(line + v);
                {add}
            }}
        }}
    }}
    int z0 = {slices} * blockIdx.z;
    (void)z0;
{store}
}}
"""


_ADJOINT_SOURCE = r"""
extern "C" __global__ void adjoint_centers(
    const float* __restrict__ q, const float2* __restrict__ trig, const float* __restrict__ centers,
    int n, int n_angles, int n_cols, float* __restrict__ out)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    int z = blockIdx.z;
    if (x >= n || y >= n) return;
    float half = 0.5f * (n - 1);
    float X = x - half, Y = y - half;
    float center = centers[z];
    const float* qz = q + (size_t)z * n_angles * n_cols;
    float acc = 0.f;
    for (int a = 0; a < n_angles; ++a) {
        float2 cs = trig[a];
        float t = center + X * cs.x + Y * cs.y;
        float fi = floorf(t);
        int i = (int)fi;
        float w = t - fi;
        const float* qa = qz + (size_t)a * n_cols;
        if (i >= 0 && i < n_cols - 1) acc += (1.f - w) * __ldg(qa + i) + w * __ldg(qa + i + 1);
        else if (i == n_cols - 1 && w == 0.f) acc += __ldg(qa + i);
    }
    out[((size_t)z * n + y) * n + x] = acc;
}
"""

#: GPU forward kernels: "z1" one slice per thread (any centres), "z4" four slices of one centre
FORWARD_KERNELS = ("z1", "z4")
#: threads per block of the forward gather: detector bins × angles
_FORWARD_BLOCK = (64, 4, 1)


def _gpu_kernel(name: str, source: str):
    import cupy

    key = (name, cupy.cuda.runtime.getDevice())
    if key not in _kernels:
        _kernels[key] = cupy.RawKernel(source, name)
    return _kernels[key]


def _cpu_kernels():
    from tomolab.recon import _project_cpu  # imports numba on first use
    return _project_cpu


def _centers(center, n_z: int) -> np.ndarray:
    centers = np.asarray(center, dtype=np.float64)
    if centers.ndim == 0:
        return np.full(n_z, float(centers))
    if centers.shape != (n_z,):
        raise ParameterError("one centre, or one per slice, is needed", where="center",
                             value=f"{centers.size} values for {n_z} slices",
                             fix="pass a single column, or an array of one per slice")
    return centers


def _angles(angles, n_angles: int | None = None) -> np.ndarray:
    angles = np.asarray(angles, dtype=np.float64).ravel()
    if n_angles is not None and angles.size != n_angles:
        raise ParameterError("one angle per projection is needed", where="angles",
                             value=f"{angles.size} angles for {n_angles} projections",
                             fix="pass the angles of the sinograms' second axis")
    return angles


def _check_3d(array, name: str, dims: str):
    if getattr(array, "ndim", 0) != 3:
        raise ParameterError(f"{name} must be a 3D array ({dims})", where=name,
                             value=getattr(array, "shape", None),
                             fix=f"add a leading axis for a single one: {name}[None]")


def forward_project(volume_slices, angles, *, center, n_cols: int, out=None, kernel: str = "auto"):
    """Project slices onto the detector: the forward operator ``A`` of the matched pair.

    Parameters
    ----------
    volume_slices : ndarray (z, size, size), numpy or cupy
        Slices, attenuation per pixel, the axis at their middle.
    angles : array_like (angle,)
        Radians.
    center : float or array_like (z,)
        Detector column of the rotation axis, in pixels; or one per slice.
    n_cols : int
        Detector width of the sinograms made.
    out : ndarray (z, angle, n_cols) float32, optional
        Where to write them (on the device of ``volume_slices``).
    kernel : {"auto", "z1", "z4"}
        GPU kernel: one slice per thread, or four slices of one centre
        (``"auto"``: ``"z4"`` for three slices or more with one centre).

    Returns
    -------
    ndarray (z, angle, n_cols) float32, on the device of ``volume_slices``
        Line integrals, in units of pixels.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.zeros((1, 5, 5), np.float32); img[0, 2, 3] = 1.0  # X = 1, Y = 0
    >>> sino = forward_project(img, [0.0, np.pi / 2], center=2.5, n_cols=6)
    >>> sino[0, 0].tolist(), sino[0, 1].tolist()  # t = 3.5, then t = 2.5
    ([0.0, 0.0, 0.0, 0.5, 0.5, 0.0], [0.0, 0.0, 0.5, 0.5, 0.0, 0.0])
    """
    _check_3d(volume_slices, "volume_slices", "z, y, x")
    xp = array_module(volume_slices)
    n_z, n, n_x = volume_slices.shape
    if n != n_x:
        raise ParameterError("slices must be square", where="volume_slices",
                             value=tuple(volume_slices.shape), fix="pass (z, size, size) slices")
    angles = _angles(angles)
    centers = _centers(center, n_z)
    n_cols = int(n_cols)
    volume_slices = xp.ascontiguousarray(volume_slices, dtype=xp.float32)
    if out is None:
        out = xp.zeros((n_z, angles.size, n_cols), xp.float32)
    if is_cupy(volume_slices):
        _forward_gpu(xp, volume_slices, angles, centers, n_cols, out, kernel)
    else:
        out[...] = 0
        _cpu_kernels().forward_linear(volume_slices, np.cos(angles), np.sin(angles), centers,
                                      n_cols, out)
    return out


def _forward_gpu(xp, slices, angles, centers, n_cols, out, kernel):
    from tomolab.recon.backproject import _interleave

    n_z, n, _ = slices.shape
    one_center = bool(np.all(centers == centers[0]))
    if kernel == "auto":
        kernel = "z4" if one_center and n_z >= 3 else "z1"
    if kernel not in FORWARD_KERNELS:
        raise ParameterError("unknown forward-projection kernel", where="kernel", value=kernel,
                             fix=f"use auto or one of {', '.join(FORWARD_KERNELS)}")
    if kernel == "z4" and not one_center:
        raise ParameterError("the z4 kernel needs one centre for all slices", where="kernel",
                             value=kernel, fix='use kernel="z1" (or "auto") with a centre per slice')
    trig = xp.asarray(np.stack([np.cos(angles), np.sin(angles)], axis=-1).astype(np.float32))
    block = _FORWARD_BLOCK
    n_angles = angles.size
    if kernel == "z1":
        transposed = xp.ascontiguousarray(slices.transpose(0, 2, 1))
        d_centers = xp.asarray(centers.astype(np.float32))
        groups = n_z
    else:
        transposed = _interleave(xp, slices.transpose(0, 2, 1), 4, xp.float32)
        slices = _interleave(xp, slices, 4, xp.float32)
        d_centers = xp.asarray(centers[:1].astype(np.float32))
        groups = slices.shape[0]
    grid = ((n_cols + block[0] - 1) // block[0], (n_angles + block[1] - 1) // block[1], groups)
    name = f"forward_gather_{kernel}"
    _gpu_kernel(name, _forward_source(1 if kernel == "z1" else 4))(
        grid, block, (slices, transposed, trig, d_centers, np.int32(n), np.int32(n_angles),
                      np.int32(n_cols), np.int32(n_z), out))


def back_project_adjoint(sinograms, angles, *, center, size: int, out=None):
    """Backproject sinograms without filtering: the adjoint ``Aᵀ`` of :func:`forward_project`.

    Parameters
    ----------
    sinograms : ndarray (z, angle, col), numpy or cupy
    angles : array_like (angle,)
        Radians.
    center : float or array_like (z,)
        Detector column of the rotation axis, in pixels; or one per slice.
    size : int
        Width of the square slices made.
    out : ndarray (z, size, size) float32, optional
        Where to write them (on the device of ``sinograms``).

    Returns
    -------
    ndarray (z, size, size) float32, on the device of ``sinograms``
        The sum over angles of the sinograms interpolated at each voxel.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((1, 8, 8), np.float32); y = rng.random((1, 5, 9), np.float32)
    >>> angles = np.linspace(0, np.pi, 5, endpoint=False)
    >>> Ax = forward_project(x, angles, center=4.2, n_cols=9)
    >>> Aty = back_project_adjoint(y, angles, center=4.2, size=8)
    >>> bool(np.isclose(np.vdot(Ax, y), np.vdot(x, Aty), rtol=1e-5))
    True
    """
    _check_3d(sinograms, "sinograms", "z, angle, col")
    xp = array_module(sinograms)
    n_z, n_angles, n_cols = sinograms.shape
    angles = _angles(angles, n_angles)
    centers = _centers(center, n_z)
    size = int(size)
    sinograms = xp.ascontiguousarray(sinograms, dtype=xp.float32)
    if is_cupy(sinograms):
        if np.all(centers == centers[0]):
            from tomolab.recon.backproject import backproject
            return backproject(sinograms, angles, center=float(centers[0]), size=size, out=out)
        if out is None:
            out = xp.empty((n_z, size, size), xp.float32)
        trig = xp.asarray(np.stack([np.cos(angles), np.sin(angles)], axis=-1).astype(np.float32))
        block = (32, 8, 1)
        grid = ((size + 31) // 32, (size + 7) // 8, n_z)
        _gpu_kernel("adjoint_centers", _ADJOINT_SOURCE)(
            grid, block, (sinograms, trig, xp.asarray(centers.astype(np.float32)), np.int32(size),
                          np.int32(n_angles), np.int32(n_cols), out))
        return out
    if out is None:
        out = np.zeros((n_z, size, size), np.float32)
    else:
        out[...] = 0
    _cpu_kernels().adjoint_linear(sinograms, np.cos(angles), np.sin(angles), centers, size, out)
    return out
