"""A matched projector pair for parallel beams: forward projection and its exact adjoint.

Voxel ``(y, x)`` of a ``size × size`` slice, at ``X = x - (size - 1) / 2``,
``Y = y - (size - 1) / 2`` from the axis, falls at angle ``θ`` on the detector
position

    t = center + X cos θ + Y sin θ,

the geometry and centre convention of :func:`tomolab.recon.backproject`. The
forward projection ``A`` is Joseph's method: the ray of detector bin ``j``
crosses the slice line by line along the axis closer to its direction,
interpolates linearly between the two voxels around each crossing, and
counts each line with the path length through it, ``1 / m`` with
``m = max(|cos θ|, |sin θ|)``. Seen from a voxel, that is the weight
``max(0, 1 - |t - j| / m) / m`` on the bins within ``m`` of ``t`` (at most
two), and :func:`back_project_adjoint` gathers with exactly those weights,
so that ``⟨A x, y⟩ = ⟨x, Aᵀ y⟩`` to float precision: iterative methods (SIRT,
CGLS, total variation) need that. ``A x`` approximates line integrals in
units of pixels, so ``x`` is an attenuation per pixel, as FBP returns it. (At
0° and 90°, ``m = 1`` and ``Aᵀ`` is the linear-interpolation backprojector
of FBP; in between its footprint is narrower. Splatting every voxel with
the linear-interpolation weights instead, the simplest matched pair, fits
the exact line integrals of a phantom half as well, and least squares
amplify the misfit: CGLS's error after 20 iterations was twice ASTRA's.)

The centre is a detector column in pixels, one for all slices or one per
slice (a tilted axis), as everywhere in tomolab.

On a GPU both operators are gathers: ``A`` one thread per (bin, angle) that
reads two voxels per line (from a transposed copy of the slice for the
steeper angles, so that a warp's reads stay contiguous); ``Aᵀ`` one thread per
voxel with the angle table in shared memory. Kernel ``"z4"`` does four
slices of one centre per thread from interleaved arrays (one 16-byte load
serves the four). The kernels come in generations (``variant=``, see
:data:`VARIANTS`), all giving the same numbers: ``"v1"`` tests every read
against the edges; ``"v2"`` reads lines padded with zeros and clamps its
indices instead, and gives each adjoint thread several voxels; ``"v3"`` also
floors without the float/int conversions (a quarter of the FP32 rate on
Hopper) and carries its pointers along the loops. On the CPU both are Numba kernels
(:mod:`tomolab.recon._project_cpu`) that walk the detector position the same
way, so one is the exact transpose of the other.
"""

from __future__ import annotations

import numpy as np

from tomolab.arrays import array_module, is_cupy
from tomolab.errors import ParameterError
from tomolab.recon.fbp import _slice_centers

__all__ = ["FORWARD_KERNELS", "back_project_adjoint", "forward_project"]

_kernels: dict = {}


def _vector_parts(slices: int):
    """CUDA type, zero, and ``acc += w * val`` of a thread's ``slices`` interleaved slices (1 or 4)."""
    if slices == 1:
        return "float", "0.f", "acc += w * val;"
    return ("float4", "make_float4(0.f, 0.f, 0.f, 0.f)",
            "acc.x += w * val.x; acc.y += w * val.y; acc.z += w * val.z; acc.w += w * val.w;")


def _stores(slices: int, index: str) -> str:
    """Store (``slices == 1``) or add the accumulators of 4 interleaved slices at ``index(z)``."""
    if slices == 1:
        return f"    out[{index.format(z='blockIdx.z')}] {{op}} acc;"
    return "\n".join(f"    if (z0 + {k} < n_z) out[{index.format(z=f'(z0 + {k})')}] {{op}} acc.{c};"
                     for k, c in enumerate("xyzw"))


#: ``floor(x)`` without the conversion unit (a quarter of the FP32 rate): adding 1.5·2²³ rounding
#: down leaves ``floor(x)`` in the mantissa, exactly for ``|x| < 2²²`` (beyond, the index read
#: from the bits is far off the line and clamped onto the padding's zeros, as it should be)
_FLOOR = ("const float MAGIC = 12582912.f; const int MAGIC_BITS = 0x4B400000;\n"
          "{indent}float snapped = __fadd_rd({x}, MAGIC);  // floor({x}) + MAGIC")


def _bin(variant: str) -> str:
    """CUDA lines that set ``fj`` (float), ``j`` (int, clamped to the padding) and ``d = t - fj``."""
    if variant == "v2":
        return """
            float fj = floorf(t - cs.z) + 1.f;
            float d = t - fj;
            int j = min(max((int)fj, -2), n_cols);  // off the detector: reads the padding's zeros"""
    return f"""
            {_FLOOR.format(x="t - cs.z", indent=" " * 12)}
            float fj = snapped - (MAGIC - 1.f);  // floor(t - m) + 1, exactly
            float d = t - fj;
            // off the detector: reads the padding's zeros
            int j = min(max(__float_as_int(snapped) - (MAGIC_BITS - 1), -2), n_cols);"""


def _forward_source(slices: int, variant: str = "v1") -> str:
    """The CUDA gather of ``A``: one thread per (bin, angle) and ``slices`` interleaved slices.

    The ray of bin ``j`` crosses each line ``u`` of the slice (a row, or a
    column of the transposed copy for the steeper angles) at ``pos``, and the
    two voxels around it are interpolated linearly (Joseph's method), scaled
    by the path length per line, ``1 / m``.

    Variant ``"v2"`` reads lines padded with two zero voxels at each end (voxel
    ``v`` at ``v + 2``) and clamps ``v`` to ``[-2, n]``: a voxel off the slice
    reads a zero, so the loop has no bounds test and adds exactly what ``"v1"``
    adds (``+0`` where ``"v1"`` skips).
    """
    vec, zero, add = _vector_parts(slices)
    center = "centers[blockIdx.z]" if slices == 1 else "centers[0]"
    store = _stores(slices, "((size_t){z} * n_angles + a) * n_cols + j").replace("{op}", "=")
    name = f"forward_joseph_z{slices}" if variant == "v1" else f"forward_joseph_{variant}_z{slices}"
    if variant == "v1":
        source = f"""const {vec}* src = (by_rows ? img : img_t) + (size_t)blockIdx.z * n * n;"""
        loop = f"""
    for (int u = u0; u <= u1; ++u) {{
        float pos = fmaf((float)u, dp, p0);
        float fv = floorf(pos);
        int v = (int)fv;
        float f = pos - fv;
        const {vec}* line = src + (size_t)u * n;
        if (v >= 0 && v < n) {{ float w = 1.f - f; {vec} val = __ldg(line + v); {add} }}
        if (v >= -1 && v < n - 1) {{ float w = f; {vec} val = __ldg(line + v + 1); {add} }}
    }}"""
    else:
        source = (f"const int stride = n + 4;  // a line and its two zero voxels at each end\n"
                  f"    const {vec}* src = (by_rows ? img : img_t) + (size_t)blockIdx.z * n * stride"
                  f" + 2;")
        loop = f"""
    const {vec}* line = src + (size_t)u0 * stride;
    #pragma unroll 4
    for (int u = u0; u <= u1; ++u, line += stride) {{
        float pos = fmaf((float)u, dp, p0);
        float fv = floorf(pos);
        float f = pos - fv;
        int v = min(max((int)fv, -2), n);  // off the slice: reads the zeros of the padding
        {vec} val0 = __ldg(line + v), val1 = __ldg(line + v + 1);
        {{ float w = 1.f - f; {vec} val = val0; {add} }}
        {{ float w = f; {vec} val = val1; {add} }}
    }}""" if variant == "v2" else f"""
    const {vec}* line = src + (size_t)u0 * stride;
    float uf = (float)u0;
    #pragma unroll 4
    for (int u = u0; u <= u1; ++u, line += stride, uf += 1.f) {{
        float pos = fmaf(uf, dp, p0);
        {_FLOOR.format(x="pos", indent=" " * 8)}
        float f = pos - (snapped - MAGIC);
        int v = min(max(__float_as_int(snapped) - MAGIC_BITS, -2), n);  // off the slice: zeros
        const {vec}* at = line + v;
        {vec} val0 = __ldg(at), val1 = __ldg(at + 1);
        {{ float w = 1.f - f; {vec} val = val0; {add} }}
        {{ float w = f; {vec} val = val1; {add} }}
    }}"""
    return f"""
extern "C" __global__ void {name}(
    const {vec}* __restrict__ img, const {vec}* __restrict__ img_t,
    const float2* __restrict__ trig, const float* __restrict__ centers,
    int n, int n_angles, int n_cols, int n_z, float* __restrict__ out)
{{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    int a = blockIdx.y * blockDim.y + threadIdx.y;
    if (j >= n_cols || a >= n_angles) return;
    float2 cs = trig[a];
    // step along the axis closer to the ray: one line after the other, two voxels each
    bool by_rows = fabsf(cs.x) >= fabsf(cs.y);
    float cv = by_rows ? cs.x : cs.y;  // along a line of the array read (contiguous)
    float cu = by_rows ? cs.y : cs.x;  // from one line to the next
    {source}
    float half = 0.5f * (n - 1);
    float inv = 1.f / cv;
    // where the ray crosses line u: pos = p0 + u * dp, in voxels along the line
    float p0 = ((float)j - {center} + half * cu) * inv + half;
    float dp = -cu * inv;
    // only the lines where the ray is within one voxel of the slice
    int u0 = 0, u1 = n - 1;
    if (dp != 0.f) {{
        float ua = (-1.f - p0) / dp, ub = ((float)n - p0) / dp;
        u0 = max(0, (int)floorf(fminf(ua, ub)));
        u1 = min(n - 1, (int)ceilf(fmaxf(ua, ub)));
    }} else if (p0 <= -1.f || p0 >= (float)n) {{
        u1 = -1;
    }}
    {vec} acc = {zero};{loop}
    float scale = fabsf(inv);
{"" if slices == 1 else "    int z0 = 4 * blockIdx.z;"}
{store.replace("acc", "scale * acc") if slices == 1 else store.replace("acc.", "scale * acc.")}
}}
"""


def _adjoint_source(slices: int, variant: str = "v1", pixels: int = 1) -> str:
    """The CUDA kernel of ``Aᵀ``: one thread per voxel (``pixels`` voxels) and ``slices`` slices.

    Each voxel gathers, at each angle, the (at most two) bins within ``m`` of
    its position ``t``, weighted ``(1 - |t - j| / m) / m``: the weights with
    which the forward gather reads it. The angle table ``(cos, sin, m, 1/m)``
    sits in shared memory.

    Variant ``"v2"`` reads sinogram rows padded with two zero bins at each end
    (bin ``j`` at ``j + 2``), clamps ``j`` to ``[-2, n_cols]`` instead of
    testing it (a bin off the detector reads a zero: the same sums as
    ``"v1"``), and gives each thread ``pixels`` voxels of one column,
    ``blockDim.y`` rows apart, which share the angle table's reads and
    ``center + X cos θ``.
    """
    vec, zero, add = _vector_parts(slices)
    center = "centers[blockIdx.z]" if slices == 1 else "centers[0]"
    if variant == "v1":
        store = _stores(slices, "((size_t){z} * n + y) * n + x").replace("{op}", "+=")
        return f"""
extern "C" __global__ void adjoint_joseph_z{slices}(
    const {vec}* __restrict__ q, const float4* __restrict__ table,
    const float* __restrict__ centers, int n, int n_angles, int n_cols,
    long long group_stride, int n_z, float* __restrict__ out)
{{
    extern __shared__ float4 s_table[];
    for (int i = threadIdx.y * blockDim.x + threadIdx.x; i < n_angles; i += blockDim.x * blockDim.y)
        s_table[i] = table[i];
    __syncthreads();
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= n || y >= n) return;
    float half = 0.5f * (n - 1);
    float X = x - half, Y = y - half;
    float center = {center};
    const {vec}* qg = q + (size_t)blockIdx.z * group_stride;
    {vec} acc = {zero};
    for (int a = 0; a < n_angles; ++a) {{
        float4 cs = s_table[a];  // cos, sin, m, 1 / m
        float t = center + X * cs.x + Y * cs.y;
        float fj = floorf(t - cs.z) + 1.f;
        int j = (int)fj;
        float d = t - fj;
        const {vec}* qa = qg + (size_t)a * n_cols;
        if (j >= 0 && j < n_cols) {{
            float w = fmaxf(0.f, 1.f - fabsf(d) * cs.w) * cs.w; {vec} val = __ldg(qa + j); {add}
        }}
        if (j >= -1 && j < n_cols - 1) {{
            float w = fmaxf(0.f, 1.f - fabsf(d - 1.f) * cs.w) * cs.w; {vec} val = __ldg(qa + j + 1);
            {add}
        }}
    }}
{"" if slices == 1 else "    int z0 = 4 * blockIdx.z;"}
{store}
}}
"""
    # v2: the row's address from the angle; v3: a pointer carried from one angle to the next
    angle_row = f"const {vec}* qa = qg + (size_t)a * stride;" if variant == "v2" else ""
    load = f"{vec} val0 = __ldg(qa + j), val1 = __ldg(qa + j + 1);"
    per_pixel = "\n".join(f"""
        {{
            float t = tx + Y{p} * cs.y;{_bin(variant)}
            {load}
            {{ float w = fmaxf(0.f, 1.f - fabsf(d) * cs.w) * cs.w; {vec} val = val0; {add.replace("acc", f"acc{p}")} }}
            {{ float w = fmaxf(0.f, 1.f - fabsf(d - 1.f) * cs.w) * cs.w; {vec} val = val1; {add.replace("acc", f"acc{p}")} }}
        }}""" for p in range(pixels))
    stores = "\n".join(
        f"    if (y + {p} * (int)blockDim.y < n) {{\n"
        + _stores(slices, f"((size_t){{z}} * n + y + {p} * blockDim.y) * n + x")
        .replace("{op}", "+=").replace("acc", f"acc{p}") + "\n    }"
        for p in range(pixels))
    return f"""
extern "C" __global__ void adjoint_joseph_{variant}_z{slices}_p{pixels}(
    const {vec}* __restrict__ q, const float4* __restrict__ table,
    const float* __restrict__ centers, int n, int n_angles, int n_cols,
    long long group_stride, int n_z, float* __restrict__ out)
{{
    extern __shared__ float4 s_table[];
    for (int i = threadIdx.y * blockDim.x + threadIdx.x; i < n_angles; i += blockDim.x * blockDim.y)
        s_table[i] = table[i];
    __syncthreads();
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y * {pixels} + threadIdx.y;
    if (x >= n || y >= n) return;
    float half = 0.5f * (n - 1);
    float X = x - half;
    {" ".join(f"float Y{p} = (float)(y + {p} * (int)blockDim.y) - half;" for p in range(pixels))}
    float center = {center};
    const int stride = n_cols + 4;  // a row and its two zero bins at each end
    const {vec}* qg = q + (size_t)blockIdx.z * group_stride + 2;
    {" ".join(f"{vec} acc{p} = {zero};" for p in range(pixels))}
    {"" if variant == "v2" else f"const {vec}* qa = qg;"}
    for (int a = 0; a < n_angles; ++a{"" if variant == "v2" else ", qa += stride"}) {{
        float4 cs = s_table[a];  // cos, sin, m, 1 / m
        float tx = center + X * cs.x;
        {angle_row}{per_pixel}
    }}
{"" if slices == 1 else "    int z0 = 4 * blockIdx.z;"}
{stores}
}}
"""


#: GPU kernels of both operators: "z1" one slice per thread (any centres), "z4" four slices
#: of one centre per thread (interleaved, so one 16-byte load serves four slices)
FORWARD_KERNELS = ("z1", "z4")
#: generations of the GPU kernels: "v1" the measured one, "v2" padded lines with clamped indices
#: (no bounds tests in the loops) and, in the adjoint, ``_ADJOINT_PIXELS`` voxels per thread,
#: "v3" as "v2" with no float/int conversions in the loops (floor by rounding, see ``_FLOOR``)
VARIANTS = ("v1", "v2", "v3")
#: the variant used when none is asked for (the benchmark compares the others against it)
_VARIANT = "v1"
#: threads per block of the forward gather: detector bins × angles
_FORWARD_BLOCK = (64, 4, 1)
#: threads per block of the adjoint: voxels along x × along y
_ADJOINT_BLOCK = (32, 8, 1)
#: voxels per thread of the "v2" and "v3" adjoints (one column, a block's height apart)
_ADJOINT_PIXELS = 2
#: angles per launch of the adjoint (its angle table in 48 KiB of shared memory)
_ADJOINT_ANGLES = 2048


def _gpu_kernel(name: str, source: str):
    import cupy

    key = (name, cupy.cuda.runtime.getDevice())
    if key not in _kernels:
        _kernels[key] = cupy.RawKernel(source, name)
    return _kernels[key]


def _cpu_kernels():
    from tomolab.recon import _project_cpu  # imports numba on first use
    return _project_cpu


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


def forward_project(volume_slices, angles, *, center, n_cols: int, out=None, kernel: str = "auto",
                    variant: str | None = None):
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
    variant : {None, "v1", "v2", "v3"}
        Generation of the GPU kernels (the same numbers to float rounding);
        ``None``: the measured default.

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
    centers = _slice_centers(center, n_z)
    n_cols = int(n_cols)
    variant = _variant(variant)
    volume_slices = xp.ascontiguousarray(volume_slices, dtype=xp.float32)
    if out is None:
        out = xp.zeros((n_z, angles.size, n_cols), xp.float32)
    if is_cupy(volume_slices):
        _forward_gpu(xp, volume_slices, angles, centers, n_cols, out, kernel, variant)
    else:
        out[...] = 0
        _cpu_kernels().forward_joseph(volume_slices, np.cos(angles), np.sin(angles), centers,
                                      n_cols, out)
    return out


def _kernel_choice(kernel: str, centers: np.ndarray, n_z: int) -> str:
    one_center = bool(np.all(centers == centers[0]))
    if kernel == "auto":
        return "z4" if one_center and n_z >= 3 else "z1"
    if kernel not in FORWARD_KERNELS:
        raise ParameterError("unknown projector kernel", where="kernel", value=kernel,
                             fix=f"use auto or one of {', '.join(FORWARD_KERNELS)}")
    if kernel == "z4" and not one_center:
        raise ParameterError("the z4 kernel needs one centre for all slices", where="kernel",
                             value=kernel, fix='use kernel="z1" (or "auto") with a centre per slice')
    return kernel


def _variant(variant) -> str:
    variant = _VARIANT if variant is None else variant
    if variant not in VARIANTS:
        raise ParameterError("unknown projector variant", where="variant", value=variant,
                             fix=f"use one of {', '.join(VARIANTS)} (or None for the default)")
    return variant


def _lines(xp, stack, width: int, pad: int):
    """``stack`` (z, line, length), any strides, as the kernels read it, in one copy.

    ``width`` 1: contiguous ``(z, line, pad + length + pad)``; 4: interleaved
    ``(⌈z / 4⌉, line, pad + length + pad, 4)``, slice ``4 g + k`` at ``[g, ..., k]``
    (the last group completed with zero slices). ``pad`` zeros at both ends of each line.
    """
    from tomolab.recon.backproject import _interleave

    if pad == 0:
        return (xp.ascontiguousarray(stack, dtype=xp.float32) if width == 1
                else _interleave(xp, stack, 4, xp.float32))
    n_z, n_lines, length = stack.shape
    groups = (n_z + width - 1) // width
    inner = slice(pad, pad + length)
    if width == 1:
        out = xp.zeros((n_z, n_lines, length + 2 * pad), xp.float32)
        out[:, :, inner] = stack
        return out
    out = xp.zeros((groups, n_lines, length + 2 * pad, width), xp.float32)
    for k in range(min(width, n_z)):
        part = stack[k::width]
        out[:part.shape[0], :, inner, k] = part
    return out


def _forward_launches(xp, slices, angles, centers, n_cols, out, kernel, variant):
    """The kernel launches of ``A``: ``[(name, source, grid, block, args, shared_mem)]``.

    Arrays of ``xp`` (numpy too, so that the index logic can be run on the CPU
    by the tests' emulation of the kernels).
    """
    n_z, n, _ = slices.shape
    kernel = _kernel_choice(kernel, centers, n_z)
    variant = _variant(variant)
    trig = xp.asarray(np.stack([np.cos(angles), np.sin(angles)], axis=-1).astype(np.float32))
    block = _FORWARD_BLOCK
    n_angles = angles.size
    width = 1 if kernel == "z1" else 4
    pad = 0 if variant == "v1" else 2
    transposed = _lines(xp, slices.transpose(0, 2, 1), width, pad)
    if width == 1 and pad == 0:
        d_centers = xp.asarray(centers.astype(np.float32))  # slices: contiguous already
    else:
        slices = _lines(xp, slices, width, pad)
        d_centers = xp.asarray(centers[: 1 if width == 4 else n_z].astype(np.float32))
    grid = ((n_cols + block[0] - 1) // block[0], (n_angles + block[1] - 1) // block[1],
            slices.shape[0])
    source = _forward_source(width, variant)
    name = source.split("void ", 1)[1].split("(", 1)[0]
    return [(name, source, grid, block, (slices, transposed, trig, d_centers, np.int32(n),
                                         np.int32(n_angles), np.int32(n_cols), np.int32(n_z),
                                         out), 0)]


def _adjoint_launches(xp, sinograms, angles, centers, size, out, kernel, variant):
    """The kernel launches of ``Aᵀ`` (``out`` must be zero before): as :func:`_forward_launches`."""
    n_z, n_angles, n_cols = sinograms.shape
    kernel = _kernel_choice(kernel, centers, n_z)
    variant = _variant(variant)
    c, s = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
    m = np.maximum(np.abs(c), np.abs(s))
    table = xp.asarray(np.stack([c, s, m, np.float32(1) / m], axis=-1))
    width = 1 if kernel == "z1" else 4
    d_centers = xp.asarray(centers[: 1 if width == 4 else n_z].astype(np.float32))
    pixels = 1 if variant == "v1" else _ADJOINT_PIXELS
    if width == 4 or variant != "v1":  # z1 of v1 reads the (contiguous) sinograms as they are
        sinograms = _lines(xp, sinograms, width, 0 if variant == "v1" else 2)
    row_stride = sinograms.shape[2]
    block = _ADJOINT_BLOCK
    grid = ((size + block[0] - 1) // block[0],
            (size + block[1] * pixels - 1) // (block[1] * pixels), sinograms.shape[0])
    source = _adjoint_source(width, variant, pixels)
    name = source.split("void ", 1)[1].split("(", 1)[0]
    launches = []
    for a0 in range(0, n_angles, _ADJOINT_ANGLES):
        a1 = min(a0 + _ADJOINT_ANGLES, n_angles)
        launches.append((name, source, grid, block,
                         (sinograms[:, a0:a1], table[a0:a1], d_centers, np.int32(size),
                          np.int32(a1 - a0), np.int32(n_cols), np.int64(n_angles * row_stride),
                          np.int32(n_z), out), 16 * (a1 - a0)))
    return launches


def _launch(launches) -> None:
    for name, source, grid, block, args, shared_mem in launches:
        _gpu_kernel(name, source)(grid, block, args, shared_mem=shared_mem)


def _forward_gpu(xp, slices, angles, centers, n_cols, out, kernel, variant=None):
    _launch(_forward_launches(xp, slices, angles, centers, n_cols, out, kernel, variant))


def _adjoint_gpu(xp, sinograms, angles, centers, size, out, kernel, variant=None):
    out[...] = 0
    _launch(_adjoint_launches(xp, sinograms, angles, centers, size, out, kernel, variant))


def back_project_adjoint(sinograms, angles, *, center, size: int, out=None, kernel: str = "auto",
                         variant: str | None = None):
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
    kernel : {"auto", "z1", "z4"}
        GPU kernel, as for :func:`forward_project`.
    variant : {None, "v1", "v2", "v3"}
        Generation of the GPU kernels, as for :func:`forward_project`.

    Returns
    -------
    ndarray (z, size, size) float32, on the device of ``sinograms``
        The sum over angles of the bins near each voxel, with the weights of ``A``.

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
    n_z, n_angles, _ = sinograms.shape
    angles = _angles(angles, n_angles)
    centers = _slice_centers(center, n_z)
    size = int(size)
    variant = _variant(variant)
    sinograms = xp.ascontiguousarray(sinograms, dtype=xp.float32)
    if out is None:
        out = xp.zeros((n_z, size, size), xp.float32)
    if is_cupy(sinograms):
        _adjoint_gpu(xp, sinograms, angles, centers, size, out, kernel, variant)
    else:
        out[...] = 0
        _cpu_kernels().adjoint_joseph(sinograms, np.cos(angles), np.sin(angles), centers, size,
                                      out)
    return out
