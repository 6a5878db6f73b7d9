"""The one builder of scan Datasets, shared by every reader and by from_arrays.

A scan is an :class:`xarray.Dataset` with

* ``projections(angle, row, col)``, ``flats(flat, row, col)``,
  ``darks(dark, row, col)`` -- dask arrays; flats/darks absent when unknown;
* coords ``angle`` (radians, float64), ``row``, ``col`` (int), ``flat``,
  ``dark`` (int), and ``angle_frame``, ``flat_frame``, ``dark_frame``: the
  index of each image in the acquisition, so flat/dark drift can be
  interpolated between flats taken before and after the projections;
* attrs ``layout``, ``source_file``, ``<variable>_path``, ``angles_source``,
  ``frame_order`` and, where known, ``pixel_size`` [m], ``distance`` [m],
  ``energy`` [keV].
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from tomolab.arrays import is_cupy, to_numpy
from tomolab.errors import ParameterError, ScanFormatError
from tomolab.io._lazy import frame_runs
from tomolab.sanity import (
    RANGES,
    angle_order_problem,
    check_angles,
    check_counts_dtype,
    check_quantity,
    quantity_problem,
)

__all__ = ["ScanWarning", "build_scan", "from_arrays", "default_angles", "to_dask", "read_sample",
           "auto_angle_chunk", "SCAN_UNITS"]

SCAN_UNITS = "pixel_size: m, distance: m, energy: keV, angle: rad"

#: target size of one auto chunk (a slab of whole projections)
CHUNK_BYTES = 64 * 2**20


class ScanWarning(UserWarning):
    """A scan lacks something (flats, darks, angles) and a default was used."""


def default_angles(n: int) -> np.ndarray:
    """``n`` angles evenly spaced over 180 degrees, endpoint excluded, in radians.

    Examples
    --------
    >>> np.rad2deg(default_angles(4))
    array([  0.,  45.,  90., 135.])
    """
    return np.linspace(0.0, np.pi, int(n), endpoint=False)


def auto_angle_chunk(shape, dtype, stored_chunk: int | None = None) -> int:
    """Number of whole projections per chunk: about 64 MiB, a multiple of the file's chunking.

    Examples
    --------
    >>> auto_angle_chunk((1800, 2048, 2048), "uint16")
    8
    >>> auto_angle_chunk((10, 4, 4), "uint16")
    10
    """
    n, rows, cols = (int(s) for s in shape)
    frame = max(1, rows * cols * np.dtype(dtype).itemsize)
    k = max(1, CHUNK_BYTES // frame)
    if stored_chunk and stored_chunk > 1:
        k = max(stored_chunk, (k // stored_chunk) * stored_chunk)
    return int(max(1, min(k, n)))


def _resolve_chunks(chunks, shape, dtype, stored_chunk=None):
    if isinstance(chunks, str) and chunks == "auto":
        return (auto_angle_chunk(shape, dtype, stored_chunk), -1, -1)
    if isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool):
        if chunks < 1:
            raise ParameterError("a chunk must hold at least one projection", where="chunks",
                                 value=int(chunks), fix="pass 'auto' or a number of projections "
                                                        "per chunk >= 1, e.g. chunks=8")
        return (int(chunks), -1, -1)
    if isinstance(chunks, dict):
        names = ("angle", "row", "col")
        unknown = set(chunks) - set(names) - {"flat", "dark"}
        if unknown:
            raise ParameterError("chunks names unknown dimensions", where="chunks",
                                 value=chunks, fix="use the dims 'angle', 'row', 'col'")
        first = chunks.get("angle", chunks.get("flat", chunks.get("dark")))
        first = auto_angle_chunk(shape, dtype, stored_chunk) if first is None else first
        return (first, chunks.get("row", -1), chunks.get("col", -1))
    return chunks


def to_dask(array, *, chunks="auto", name=None, stored_chunk=None, where="projections"):
    """Wrap a lazy or in-memory 3-D array as a dask array of whole-frame slabs.

    Parameters
    ----------
    array : numpy array, dask array or lazy frame array
        Shape ``(n, row, col)``.
    chunks : "auto", int, tuple or dict
        "auto": about 64 MiB of whole frames per chunk; an int: that many
        frames per chunk, full ``(row, col)``; anything else is passed to dask.
    name : str, optional
        Dask graph key prefix (deterministic names let dask reuse graphs).
    stored_chunk : int, optional
        Chunk length along axis 0 in the file, to align auto chunks with it.
    """
    import dask.array as da

    shape = tuple(int(s) for s in array.shape)
    try:
        resolved = _resolve_chunks(chunks, shape, array.dtype, stored_chunk)
        if isinstance(array, da.Array):
            return array.rechunk(resolved) if chunks is not None else array
        if isinstance(array, np.ndarray) or is_cupy(array):
            meta = array[(slice(0, 0),) * len(shape)]  # keeps cupy as cupy
        else:  # a lazy frame array: an empty numpy meta, so dask reads nothing now
            meta = np.empty((0,) * len(shape), dtype=array.dtype)
        if name:
            import dask.base
            name = f"{name}-{dask.base.tokenize(name, shape, str(array.dtype), resolved)}"
        else:
            name = None  # dask hashes the array content
        return da.from_array(array, chunks=resolved, name=name, asarray=False,
                             fancy=False, lock=False, meta=meta)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, ParameterError):
            raise
        raise ParameterError(f"chunks cannot be applied to shape {shape} ({exc})",
                             where=f"chunks for {where}", value=chunks,
                             fix="pass 'auto', a number of frames per chunk, or a "
                                 "tuple like (8, -1, -1)") from None


def _as_frames(array, what: str, where: str):
    """Accept a 3-D stack, or a single 2-D frame for flats/darks."""
    if not hasattr(array, "shape") or not hasattr(array, "dtype"):
        array = np.asarray(array)
    if len(array.shape) == 2 and what != "projections":
        array = array[None]
    if len(array.shape) != 3:
        raise ScanFormatError(f"{what} must be 3-D (n, row, col), got shape {tuple(array.shape)}",
                              where=where, value=None,
                              fix=f"pass {what} as an array of shape (n, row, col)")
    return array


def _check_angles(angles, n, where, stored_unit=None):
    try:
        values = np.asarray(angles, dtype=np.float64)
    except (TypeError, ValueError):
        shown = np.asarray(angles, dtype=object).ravel()
        raise ParameterError("angles are not numbers", where=where,
                             value=f"{shown[:3].tolist()}{' ...' if shown.size > 3 else ''}",
                             fix="pass a 1-D array of angles in radians") from None
    if values.ndim > 1 and sum(s > 1 for s in values.shape) > 1:
        raise ParameterError(f"angles must be 1-D, got shape {values.shape}", where=where,
                             value=values.shape, fix=f"pass {n} angles in radians, one per projection")
    values = values.ravel()
    if values.size != n:
        raise ParameterError(
            f"{values.size} angles for {n} projections", where=where, value=values.size,
            fix=f"pass angles= with exactly {n} values in radians (one per projection)")
    return check_angles(values, where=where, stored_unit=stored_unit)


def _plausible_metadata(meta: dict, source: str, *, given: bool, pending: list) -> None:
    """Check pixel size, energy and distance against :data:`tomolab.sanity.RANGES`.

    Values the caller gave are refused; values read from a file are left out
    with a warning (the scan still opens, and the volume is then in pixels).
    """
    for key in RANGES:
        if meta.get(key) is None:
            continue
        if given:
            meta[key] = check_quantity(key, meta[key])
            continue
        problem = quantity_problem(key, meta[key])
        if problem:
            where = f"{source}:{meta[key + '_path']}" if meta.get(key + "_path") else source
            pending.append(f"{where}: {problem}; left out of the scan's attrs. If you know "
                           f"it, set scan.attrs[{key!r}] (in {RANGES[key][2]}).")
            meta[key] = None
            meta.pop(key + "_path", None)


def _check_frame_coord(frames, n, default):
    if frames is None:
        return np.asarray(default, dtype=np.int64)
    frames = np.asarray(frames, dtype=np.int64).ravel()
    if frames.size != n:
        raise ValueError(f"{frames.size} frame indices for {n} images")
    return frames


def _missing_message(kind: str, source: str, looked: str | None) -> str:
    where = f" (looked for {looked})" if looked else ""
    if kind == "flats":
        advice = ("pass flats=ARRAY (flat, row, col) to open_scan/from_arrays, or, if the "
                  "projections are already normalised, use tomolab.reconstruct(..., normalize=False)")
    else:
        advice = ("pass darks=ARRAY (dark, row, col) to open_scan/from_arrays; without darks "
                  "the dark current is taken as zero, or use tomolab.reconstruct(..., "
                  "normalize=False) if the projections are already normalised")
    return (f"{source}: no {kind} found{where}; the scan has no '{kind}' variable. "
            f"To proceed: {advice}.")


def _clean_attrs(attrs: dict) -> dict:
    """Drop None values and turn numpy scalars into Python numbers (serialisable)."""
    out = {}
    for key, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def build_scan(projections, angles, flats=None, darks=None, *, layout, source,
               source_file=None, chunks="auto", stored_chunks=None, frames=None,
               paths=None, metadata=None, angles_source=None, looked_for=None,
               names=None, angles_unit=None):
    """Validate the parts of a scan and assemble the Dataset (every reader ends here).

    Parameters
    ----------
    projections, flats, darks : array-like, shape (n, row, col)
        Lazy frame arrays, numpy or dask arrays. ``None`` for missing flats/darks.
    angles : array-like or None
        Radians; ``None`` means "not recorded": evenly spaced over 180 degrees
        with a :class:`ScanWarning`.
    layout : str
        "dxchange", "nxtomo", "nxtomo-diamond", "tiff" or "arrays".
    source : str
        Where the data came from, for messages ("file.h5", "from_arrays").
    source_file : str, optional
        Absolute path recorded in ``attrs["source_file"]``.
    chunks :
        See :func:`to_dask`.
    stored_chunks : dict, optional
        Chunk length along the first axis in the file, per variable.
    frames : dict, optional
        ``{"angle": idx, "flat": idx, "dark": idx}``: index of each image in
        the acquisition. Missing: darks, then flats, then projections (assumed).
    paths : dict, optional
        ``{"projections": "/exchange/data", ...}`` recorded as ``<name>_path``.
    metadata : dict, optional
        ``pixel_size`` [m], ``energy`` [keV], ``distance`` [m] and other attrs.
    angles_source : str
        Where the angles came from, recorded in ``attrs["angles_source"]``.
    looked_for : dict, optional
        ``{"flats": "/exchange/data_white", ...}`` for the missing-data warning.
    names : dict, optional
        ``{"projections": "file.h5:/exchange/data", ...}`` used in error messages.
    angles_unit : {None, "rad", "deg"}
        The unit the file stored the angles in (None: given in radians), so
        that angles contradicting it are told apart (:func:`tomolab.sanity.check_angles`).
    """
    import dask.base
    import xarray as xr

    paths = dict(paths or {})
    names = dict(names or {})
    looked_for = dict(looked_for or {})
    stored_chunks = dict(stored_chunks or {})

    def label(var):
        return names.get(var) or (f"{source}:{paths[var]}" if var in paths else f"{var}")

    projections = _as_frames(projections, "projections", label("projections"))
    check_counts_dtype(projections.dtype, where=label("projections"))
    n, rows, cols = (int(s) for s in projections.shape)
    if n == 0:
        raise ScanFormatError("there are no projections", where=label("projections"),
                              fix="check that the scan was acquired and that the path is right")
    dark_flat = {}
    for var, arr in (("flats", flats), ("darks", darks)):
        if arr is None or (hasattr(arr, "shape") and len(arr.shape) == 3 and arr.shape[0] == 0):
            continue
        arr = _as_frames(arr, var, label(var))
        check_counts_dtype(arr.dtype, where=label(var), what=var)
        if tuple(int(s) for s in arr.shape[1:]) != (rows, cols):
            raise ScanFormatError(
                f"{var} frames are {tuple(int(s) for s in arr.shape[1:])} but projections are "
                f"{(rows, cols)} (row, col)", where=label(var), value=tuple(arr.shape),
                fix=f"use {var} taken with the same detector region of interest, or crop them "
                    f"to {(rows, cols)} and pass {var}= explicitly")
        dark_flat[var] = arr

    pending = []  # warnings, given once everything is validated
    if angles is None:
        pending.append(f"{source}: no rotation angles recorded; assuming {n} angles evenly "
                       f"spaced over 180 degrees (endpoint excluded). If that is wrong, pass "
                       f"angles= (radians).")
        angles = default_angles(n)
        angles_source = "assumed: evenly spaced over 180 degrees, endpoint excluded"
    angles_where = names.get("angles") or (f"{source}:{paths['angles']}" if "angles" in paths
                                           else "angles")
    angles = _check_angles(angles, n, angles_where, angles_unit)
    order = angle_order_problem(angles)
    if order:  # fine to open; the api refuses to compute on it
        pending.append(f"{angles_where}: {order[0]}; to compute on it, {order[1]}")

    for var in ("flats", "darks"):
        if var not in dark_flat:
            pending.append(_missing_message(var, source, looked_for.get(var)))

    token = None
    if source_file is not None:
        try:
            stamp = os.stat(source_file).st_mtime_ns
        except OSError:
            stamp = None
        token = dask.base.tokenize(source_file, stamp, paths, n, rows, cols)
    data_vars = {}
    coords = {
        "angle": ("angle", angles, {"units": "rad", "long_name": "rotation angle"}),
        "row": ("row", np.arange(rows), {"units": "pixel"}),
        "col": ("col", np.arange(cols), {"units": "pixel"}),
    }
    n_flat = int(dark_flat["flats"].shape[0]) if "flats" in dark_flat else 0
    n_dark = int(dark_flat["darks"].shape[0]) if "darks" in dark_flat else 0
    frames = dict(frames or {})
    recorded = bool(frames)
    try:
        coords["angle_frame"] = ("angle", _check_frame_coord(
            frames.get("angle"), n, np.arange(n) + n_dark + n_flat))
    except ValueError as exc:
        raise ScanFormatError(str(exc), where=label("projections"),
                              fix="the image keys and the data disagree; repair the file") from None

    parts = {"projections": projections, **dark_flat}
    for var, dim in (("projections", "angle"), ("flats", "flat"), ("darks", "dark")):
        arr = parts.get(var)
        if arr is None:
            continue
        data = to_dask(arr, chunks=chunks, name=token and f"{var}-{token}",
                       stored_chunk=stored_chunks.get(var), where=var)
        data_vars[var] = ((dim, "row", "col"), data,
                          {"units": "counts", "long_name": var})
        if var != "projections":
            count = int(arr.shape[0])
            default = np.arange(count) if var == "darks" else np.arange(count) + n_dark
            coords[dim] = (dim, np.arange(count))
            try:
                coords[f"{dim}_frame"] = (dim, _check_frame_coord(frames.get(dim), count, default))
            except ValueError as exc:
                raise ScanFormatError(str(exc), where=label(var),
                                      fix="the image keys and the data disagree; repair the file") from None

    attrs = {"layout": layout, "source_file": source_file}
    for var in ("projections", "flats", "darks", "angles", "image_key"):
        if var in paths and (var in data_vars or var in ("angles", "image_key")):
            attrs[f"{var}_path"] = paths[var]
    attrs["angles_source"] = angles_source or "given (radians)"
    attrs["frame_order"] = ("recorded (image index in the acquisition)" if recorded
                            else "assumed: darks, then flats, then projections")
    meta = dict(metadata or {})
    _plausible_metadata(meta, source, given=layout == "arrays", pending=pending)
    for key in ("pixel_size", "distance", "energy"):
        if meta.get(key) is not None:
            meta[key] = float(meta[key])
    attrs.update(meta)
    attrs["units"] = SCAN_UNITS
    scan = xr.Dataset(data_vars, coords=coords, attrs=_clean_attrs(attrs))
    for var in data_vars:
        remember_source(scan[var].variable, parts[var])
    for message in pending:
        warnings.warn(message, ScanWarning, stacklevel=3)
    return scan


_SOURCE = "tomolab_source"


def remember_source(variable, array) -> None:
    """Note in ``variable.encoding`` the lazy frames or array its dask data were made from.

    dask reads whole chunks of frames even when only a few rows are asked for;
    :func:`read_frames` uses the note to read just those rows, from the file.
    The note holds the dask name, so it is ignored once the data are changed.
    """
    data = variable.data
    if hasattr(data, "dask") and not hasattr(array, "dask"):
        variable.encoding[_SOURCE] = (data.name, array)


def read_frames(data_array, rows, *, out=None, threads: int = 8):
    """``data_array[:, rows, :]`` as a numpy array, reading only those rows.

    Parameters
    ----------
    data_array : xarray.DataArray (frame, row, col)
        A variable of a scan (``projections``, ``flats``, ``darks``).
    rows : slice or ndarray of int
        Detector rows (ascending; an array may repeat edge rows).
    out : ndarray, optional
        Filled in place (e.g. a pinned buffer); its shape must match.
    threads : int
        Frames are split among this many threads (host memory bandwidth
        needs several; files read in parallel where their library allows).

    Examples
    --------
    >>> import numpy as np, tomolab
    >>> scan = tomolab.from_arrays(np.arange(24, dtype=np.uint16).reshape(2, 3, 4), [0.0, 1.0])
    >>> read_frames(scan["projections"], slice(1, 2))[:, 0, :2]
    array([[ 4,  5],
           [16, 17]], dtype=uint16)
    """
    import dask.array as da

    data = data_array.data
    note = data_array.variable.encoding.get(_SOURCE)
    source = None
    if note is not None and getattr(data, "name", None) == note[0] and note[1].shape == data.shape:
        source = note[1]
    if isinstance(rows, slice):
        runs = [rows]
    else:
        rows = np.asarray(rows)
        # consecutive runs; an edge row repeated (a halo) starts a run of its own
        runs = [slice(a, b) for a, b in frame_runs(rows)]
    shape = (data.shape[0], len(range(*rows.indices(data.shape[1]))) if isinstance(rows, slice)
             else rows.size, data.shape[2])
    if out is None:
        out = np.empty(shape, data.dtype)
    if source is None and isinstance(data, da.Array):
        at = 0
        for run in runs:
            height = len(range(*run.indices(data.shape[1])))
            da.store(data[:, run, :], out[:, at:at + height], lock=False, scheduler="threads",
                     num_workers=threads)
            at += height
        return out
    source = data if source is None else source
    n = data.shape[0]
    parts = [slice(n * k // threads, n * (k + 1) // threads) for k in range(threads)]

    def copy(part):
        at = 0
        for run in runs:
            height = len(range(*run.indices(data.shape[1])))
            target = out[part, at:at + height]
            if hasattr(source, "read_into"):
                source.read_into(part, run, target)
            else:
                target[...] = source[part, run, :]
            at += height
    if threads > 1 and n >= 2 * threads:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tomolab-read") as pool:
            list(pool.map(copy, parts))
    else:
        copy(slice(0, n))
    return out


def read_sample(data_array, frames, rows: slice):
    """``data_array[frames, rows, :]`` as numpy, reading only those frames and rows.

    For checks on a sample of a scan that may be terabytes: dask would read
    whole chunks of frames; this reads from the file what is asked for.

    Examples
    --------
    >>> import numpy as np, tomolab
    >>> scan = tomolab.from_arrays(np.arange(24, dtype=np.uint16).reshape(2, 3, 4), [0.0, 1.0])
    >>> read_sample(scan["projections"], [1], slice(0, 1))
    array([[[12, 13, 14, 15]]], dtype=uint16)
    """
    data = data_array.data
    note = data_array.variable.encoding.get(_SOURCE)
    source = data
    if note is not None and getattr(data, "name", None) == note[0] and note[1].shape == data.shape:
        source = note[1]
    parts = [source[int(i):int(i) + 1, rows, :] for i in frames]
    # a few frames, read in this process even where a dask client is active (never shipped)
    return np.concatenate([to_numpy(part.compute(scheduler="threads")
                                    if hasattr(part, "compute") else part) for part in parts])


def _check_positive(value, name):
    """A positive finite number (the writers' check of pixel size, energy, distance), or None."""
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ParameterError(f"{name} is not a number", where=name, value=value,
                             fix=f"pass {name} as a positive number in SI units") from None
    if not (math.isfinite(v) and v > 0):
        raise ParameterError(f"{name} must be a positive finite number", where=name, value=value,
                             fix=f"pass {name} > 0 (pixel_size, distance in metres; energy in keV)")
    return check_quantity(name, v) if name in RANGES else v


def from_arrays(projections, angles, flats=None, darks=None, *, pixel_size=None,
                energy=None, distance=None, chunks="auto", attrs=None):
    """Build a scan Dataset from arrays in memory (numpy or dask).

    Parameters
    ----------
    projections : array-like, shape (angle, row, col)
        Raw projections (any dtype).
    angles : array-like or None
        Rotation angles in **radians**, one per projection. ``None``: evenly
        spaced over 180 degrees, with a :class:`ScanWarning`.
    flats, darks : array-like, shape (n, row, col) or (row, col), optional
        Flat (open beam) and dark fields. Missing ones give a warning.
    pixel_size : float, optional
        Effective pixel size at the sample, metres (1 nm to 1 mm).
    energy : float, optional
        Photon energy, keV (0.1 to 500).
    distance : float, optional
        Sample-detector distance, metres (0 to 100); the ranges are
        :data:`tomolab.sanity.RANGES`.
    chunks : "auto", int, tuple or dict
        Dask chunking; "auto" is about 64 MiB of whole projections per chunk.
    attrs : dict, optional
        Extra attributes to record on the Dataset.

    Returns
    -------
    xarray.Dataset
        Same structure as :func:`tomolab.io.open_scan` returns; the variables
        are dask arrays that wrap the given arrays (no copy).

    Examples
    --------
    >>> import numpy as np
    >>> proj = np.ones((4, 3, 5), np.uint16)
    >>> scan = from_arrays(proj, np.linspace(0, np.pi, 4, endpoint=False),
    ...                    flats=2 * proj[:2], darks=0 * proj[:1], pixel_size=1e-6)
    >>> dict(scan.sizes)
    {'angle': 4, 'row': 3, 'col': 5, 'flat': 2, 'dark': 1}
    >>> scan.attrs["pixel_size"], scan.attrs["layout"]
    (1e-06, 'arrays')
    """
    metadata = {key: None if value is None else check_quantity(key, value)
                for key, value in (("pixel_size", pixel_size), ("energy", energy),
                                   ("distance", distance))}
    metadata.update(attrs or {})
    return build_scan(projections, angles, flats, darks, layout="arrays", source="from_arrays",
                      chunks=chunks, metadata=metadata, angles_source="given (radians)",
                      names={"projections": "projections", "flats": "flats",
                             "darks": "darks", "angles": "angles"})
