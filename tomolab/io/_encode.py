"""Output dtypes of streamed volumes: float32, float16, or uint16 with a scale and an offset.

A 16-bit output halves the bytes a disk-to-disk run writes. ``float16`` keeps
about three decimal digits (relative rounding ≤ 2⁻¹¹ ≈ 4.9e-4) up to ±65504;
values beyond are clipped to it. ``uint16`` stores

    stored = round((value - add_offset) / scale_factor),  clipped to 0 .. 65535,

with ``scale_factor = (hi - lo) / 65535`` and ``add_offset = lo`` for a value
range ``(lo, hi)``: an error of at most half a step, ``scale_factor / 2``,
inside the range; values outside it are clipped to its ends and counted. The
names are those of the CF conventions, so xarray (and netCDF tools) decode a
zarr or HDF5 output by themselves; :func:`tomolab.io.open_volume` gives back
float32 ``stored * scale_factor + add_offset`` in every format.

Examples
--------
>>> import numpy as np
>>> encoding = uint16_encoding(-1.0, 2.0)
>>> stored, clipped = encode(np.array([-1.0, 0.5, 2.0, 7.0], np.float32), "uint16", encoding)
>>> stored.tolist(), clipped
([0, 32768, 65535, 65535], 1)
"""

from __future__ import annotations

import math

import numpy as np

from tomolab.devices import usable_cpus
from tomolab.errors import ParameterError

__all__ = ["DTYPES", "ENCODING_KEYS", "check_dtype", "check_value_range", "decode", "encode",
           "encode_rows", "uint16_encoding"]

#: the dtypes a streamed volume may be stored in
DTYPES = ("float32", "float16", "uint16")
#: the attrs that say how stored values map back to the volume's (kept when resuming)
ENCODING_KEYS = ("scale_factor", "add_offset", "value_range", "value_range_source")
UINT16_MAX = 65535
FLOAT16_MAX = float(np.finfo(np.float16).max)


def check_dtype(dtype, *, where: str = "dtype") -> str:
    """The name of an output dtype from :data:`DTYPES`; a clear error otherwise.

    Examples
    --------
    >>> check_dtype(np.uint16), check_dtype("float16")
    ('uint16', 'float16')
    """
    try:
        name = np.dtype(dtype).name if not isinstance(dtype, bool) else None
    except TypeError:
        name = None
    if name not in DTYPES:
        raise ParameterError("unsupported output dtype", where=where, value=dtype,
                             fix=f"use one of {', '.join(repr(d) for d in DTYPES)}")
    return name


def check_value_range(value_range, *, where: str = "value_range"):
    """``(lo, hi)`` as two finite floats with ``lo < hi``, or None.

    Examples
    --------
    >>> check_value_range((0, 25.5))
    (0.0, 25.5)
    """
    if value_range is None:
        return None
    try:
        lo, hi = (float(v) for v in value_range)
    except (TypeError, ValueError):
        lo = hi = math.nan
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ParameterError("the value range must be two finite numbers, low < high",
                             where=where, value=value_range,
                             fix="pass e.g. value_range=(-50.0, 400.0) in the volume's units "
                                 "(1/m), or None for a range from a preview")
    return lo, hi


def uint16_encoding(lo: float, hi: float, *, source: str = "given") -> dict:
    """The attrs of a uint16 volume whose 0 .. 65535 span ``lo .. hi``.

    Examples
    --------
    >>> e = uint16_encoding(0.0, 65535.0)
    >>> e["scale_factor"], e["add_offset"], e["value_range"]
    (1.0, 0.0, [0.0, 65535.0])
    """
    lo, hi = check_value_range((lo, hi))
    return {"scale_factor": (hi - lo) / UINT16_MAX, "add_offset": lo, "value_range": [lo, hi],
            "value_range_source": source}


def encode(data, dtype: str, encoding: dict | None = None):
    """``(stored, clipped)``: float32 ``data`` in ``dtype`` and how many values were clipped.

    uint16 needs ``encoding`` (:func:`uint16_encoding`); the division is in
    float64, so every value inside the range comes back within half a step.
    """
    data = np.ascontiguousarray(data, dtype=np.float32)
    if dtype == "float32":
        return data, 0
    if dtype == "float16":
        inside = np.abs(data) <= FLOAT16_MAX  # False for NaN too
        clipped = int(data.size - np.count_nonzero(inside))
        if clipped:  # beyond the largest: clipped to it; NaN: stored as 0 (as for uint16)
            data = np.where(inside, data, np.where(data > 0, FLOAT16_MAX,
                                                   np.where(np.isnan(data), 0, -FLOAT16_MAX)))
        return data.astype(np.float16), clipped
    if dtype != "uint16":
        raise ParameterError("unsupported output dtype", where="dtype", value=dtype,
                             fix=f"use one of {', '.join(repr(d) for d in DTYPES)}")
    from concurrent.futures import ThreadPoolExecutor
    from itertools import pairwise

    from tomolab.io._encode_cpu import to_uint16  # imports numba on first use

    out = np.empty(data.shape, np.uint16)
    flat, stored = data.reshape(-1), out.reshape(-1)
    offset, scale = float(encoding["add_offset"]), float(encoding["scale_factor"])
    parts = max(1, min(usable_cpus(), 16, flat.size // (1 << 20)))  # ≥ 1 Mi values each
    bounds = np.linspace(0, flat.size, parts + 1).astype(int)
    if parts == 1:
        return out, int(to_uint16(flat, offset, scale, stored))
    with ThreadPoolExecutor(max_workers=parts, thread_name_prefix="tomolab-encode") as pool:
        counts = pool.map(lambda ab: to_uint16(flat[ab[0]:ab[1]], offset, scale,
                                               stored[ab[0]:ab[1]]), pairwise(bounds))
        return out, int(sum(counts))


def encode_rows(data, dtype: str, encoding: dict | None = None):
    """``(stored, clipped)`` with ``clipped[z]`` the values clipped in ``data[z]``, on its device.

    The same stored values as :func:`encode`, bit for bit, for numpy or cupy
    ``data``; on the GPU one kernel pass (:data:`_CUDA_SOURCE`), so a 16-bit
    slab is encoded before it is downloaded and the download moves half the
    bytes. ``clipped`` is int64 of length ``data.shape[0]``: counts per row,
    so slabs cut into other slabs keep exact counts.

    Examples
    --------
    >>> stored, clipped = encode_rows(np.array([[0.5, 9.0], [1.0, 2.0]], np.float32), "uint16",
    ...                               uint16_encoding(0.0, 2.0))
    >>> stored.tolist(), clipped.tolist()
    ([[16384, 65535], [32768, 65535]], [1, 0])
    """
    module = type(data).__module__.split(".")[0]
    if module != "cupy":
        data = np.asarray(data, dtype=np.float32)
        parts = [encode(row, dtype, encoding) for row in data]
        out_dtype = np.float32 if dtype == "float32" else np.dtype(dtype)
        stored = np.empty(data.shape, out_dtype)
        for z, (row, _) in enumerate(parts):
            stored[z] = row
        return stored, np.array([c for _, c in parts], np.int64)
    return _encode_rows_gpu(data, dtype, encoding)


#: the GPU encoders: the arithmetic of ``to_uint16`` (Numba) and of :func:`encode`'s float16
#: branch, per element; each warp sums its clipped count and adds it to its row's counter
_CUDA_SOURCE = r"""
extern "C" __global__ void encode_uint16(const float* values, unsigned short* out,
                                         unsigned long long* clipped, long long plane,
                                         double offset, double scale) {
    const long long row = blockIdx.y;
    const float* v = values + row * plane;
    unsigned short* o = out + row * plane;
    unsigned long long count = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < plane;
         i += (long long)gridDim.x * blockDim.x) {
        double q = rint(((double)v[i] - offset) / scale);
        if (q >= 0.0 && q <= 65535.0) {
            o[i] = (unsigned short)q;
        } else {  // NaN fails both tests: stored as 0, counted
            o[i] = q > 65535.0 ? (unsigned short)65535 : (unsigned short)0;
            count += 1;
        }
    }
    for (int s = 16; s > 0; s >>= 1) count += __shfl_down_sync(0xffffffffu, count, s);
    if ((threadIdx.x & 31) == 0 && count) atomicAdd(clipped + row, count);
}

extern "C" __global__ void encode_float16(const float* values, unsigned short* out,
                                          unsigned long long* clipped, long long plane) {
    const long long row = blockIdx.y;
    const float* v = values + row * plane;
    unsigned short* o = out + row * plane;
    unsigned long long count = 0;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < plane;
         i += (long long)gridDim.x * blockDim.x) {
        float x = v[i];
        if (!(fabsf(x) <= 65504.0f)) {  // beyond float16's largest, or NaN
            x = (x != x) ? 0.0f : (x > 0.0f ? 65504.0f : -65504.0f);  // NaN: 0
            count += 1;
        }
        unsigned short h;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(x));  // round to nearest even, as numpy
        o[i] = h;
    }
    for (int s = 16; s > 0; s >>= 1) count += __shfl_down_sync(0xffffffffu, count, s);
    if ((threadIdx.x & 31) == 0 && count) atomicAdd(clipped + row, count);
}
"""
#: threads per block of the encoders (a multiple of the warp's 32)
_BLOCK = 256
#: rows per launch (CUDA's grid is at most 65535 blocks high)
_ROWS_PER_LAUNCH = 65535
_kernels: dict = {}


def launch_shape(plane: int, *, block: int = _BLOCK, per_thread: int = 4) -> tuple[int, int]:
    """``(blocks, threads)`` along one row of ``plane`` values: about ``per_thread`` values a thread.

    Examples
    --------
    >>> launch_shape(2048 * 2048), launch_shape(10)
    ((4096, 256), (1, 256))
    """
    blocks = max(1, min(-(-plane // (block * per_thread)), 2 ** 31 - 1))
    return blocks, block


def _encode_rows_gpu(data, dtype: str, encoding):
    import cupy

    data = cupy.ascontiguousarray(data, dtype=cupy.float32)
    n_rows = data.shape[0] if data.ndim else 1
    if dtype == "float32":
        return data, cupy.zeros(n_rows, cupy.int64)
    if dtype not in DTYPES:
        raise ParameterError("unsupported output dtype", where="dtype", value=dtype,
                             fix=f"use one of {', '.join(repr(d) for d in DTYPES)}")
    key = (dtype, cupy.cuda.runtime.getDevice())
    if key not in _kernels:
        _kernels[key] = cupy.RawKernel(_CUDA_SOURCE, f"encode_{dtype}")
    kernel = _kernels[key]
    stored = cupy.empty(data.shape, cupy.uint16)
    clipped = cupy.zeros(n_rows, cupy.uint64)
    plane = data.size // max(n_rows, 1)
    if plane == 0 or n_rows == 0:
        return stored.view(np.float16) if dtype == "float16" else stored, clipped.astype(
            cupy.int64)
    blocks, threads = launch_shape(plane)
    flat_in, flat_out = data.reshape(n_rows, plane), stored.reshape(n_rows, plane)
    for z in range(0, n_rows, _ROWS_PER_LAUNCH):
        h = min(_ROWS_PER_LAUNCH, n_rows - z)
        args = (flat_in[z:z + h], flat_out[z:z + h], clipped[z:z + h], np.int64(plane))
        if dtype == "uint16":
            args += (np.float64(encoding["add_offset"]), np.float64(encoding["scale_factor"]))
        kernel((blocks, h), (threads,), args)
    if dtype == "float16":
        stored = stored.view(cupy.float16)
    return stored, clipped.astype(cupy.int64)


def decode(volume):
    """A stored volume (an ``xarray.DataArray``, lazy) back in float32 of the volume's units.

    uint16 with ``scale_factor``/``add_offset`` attrs: ``stored * scale_factor
    + add_offset`` (computed in float64, rounded once to float32); float16:
    widened. Those two attrs move to ``encoding``, with the stored dtype, as
    xarray does; a float32 volume comes back as it is.
    """
    scaled = "scale_factor" in volume.attrs and "add_offset" in volume.attrs
    if volume.dtype == np.float32 and not scaled:
        return volume
    stored = volume.dtype
    data = volume.data
    attrs = dict(volume.attrs)
    encoding = dict(volume.encoding, dtype=stored)
    if scaled:
        scale = float(np.asarray(attrs.pop("scale_factor")))
        offset = float(np.asarray(attrs.pop("add_offset")))
        encoding.update(scale_factor=scale, add_offset=offset)
        data = (data.astype(np.float64) * scale + offset).astype(np.float32)
    else:
        data = data.astype(np.float32)
    out = volume.copy(data=data)
    out.attrs = attrs
    out.encoding = encoding
    return out
