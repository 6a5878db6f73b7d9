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
import os

import numpy as np

from tomolab.errors import ParameterError

__all__ = ["DTYPES", "ENCODING_KEYS", "check_dtype", "check_value_range", "decode", "encode",
           "uint16_encoding"]

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
        if clipped:
            data = np.where(inside, data, np.where(data > 0, FLOAT16_MAX, -FLOAT16_MAX))
            data = np.where(np.isnan(data), 0, data)
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
    parts = max(1, min(os.cpu_count() or 1, 16, flat.size // (1 << 20)))  # ≥ 1 Mi values each
    bounds = np.linspace(0, flat.size, parts + 1).astype(int)
    if parts == 1:
        return out, int(to_uint16(flat, offset, scale, stored))
    with ThreadPoolExecutor(max_workers=parts, thread_name_prefix="tomolab-encode") as pool:
        counts = pool.map(lambda ab: to_uint16(flat[ab[0]:ab[1]], offset, scale,
                                               stored[ab[0]:ab[1]]), pairwise(bounds))
        return out, int(sum(counts))


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
