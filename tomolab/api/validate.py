"""Validation against the scan: every api function checks its arguments here first.

Each check names the parameter, the value and the fix
(:class:`tomolab.errors.ParameterError`); none reads data.
"""

from __future__ import annotations

import numpy as np

from tomolab.checks import check_bool, check_choice
from tomolab.errors import ParameterError
from tomolab.sanity import (
    RANGES,
    angle_order_problem,
    check_centre_value,
    check_counts_sample,
    check_fields_sample,
    check_quantity,
    check_whole_number,
)

__all__ = ["check_choice", "check_row", "source_name", "check_size", "plane_coords",
           "resolve_rows", "check_center", "check_centers", "half_turn", "check_scan",
           "check_coverage", "iterative_hint", "user_stacklevel", "ITERATIVE_ALGORITHMS",
           "SAMPLE_ROWS"]

#: rows of the detector's middle read from a few frames to check the data before computing
SAMPLE_ROWS = 8


def check_scan(scan, *, normalize: bool = True) -> None:
    """What the api checks before computing on a scan (see :mod:`tomolab.sanity`).

    Refuses repeated or unordered angles, an implausible pixel size, energy or
    distance in ``scan.attrs``, and, reading :data:`SAMPLE_ROWS` rows of the
    first, middle and last frames of each stack (never the whole scan):
    signed counts below zero and flats not brighter than the darks.

    Examples
    --------
    >>> import numpy as np, tomolab
    >>> scan = tomolab.data.simulate_scan(32, n_rows=2, n_angles=40)
    >>> check_scan(scan)
    >>> check_scan(scan.assign_attrs(pixel_size=6.5))
    Traceback (most recent call last):
    ...
    tomolab.errors.ParameterError: scan.attrs['pixel_size']=6.5: effective pixel size 6.5 m is outside 1 nm to 1 mm (synchrotron detectors; a wrong unit?); fix: set scan.attrs['pixel_size'] in m, or delete it (the volume is then in pixels)
    """
    from tomolab.io import read_sample

    check_bool(normalize, "normalize", "pass normalize=True (flat-field correct) or False "
                                       "(the projections are already corrected)")
    name = source_name(scan)
    order = angle_order_problem(scan["angle"].values)
    if order:
        raise ParameterError(order[0], where=f"{name}: angles", value=None, fix=order[1])
    for key in RANGES:
        if scan.attrs.get(key) is not None:
            check_quantity(key, scan.attrs[key], where=f"scan.attrs[{key!r}]",
                           fix=f"set scan.attrs[{key!r}] in {RANGES[key][2]}, or delete it "
                               f"(the volume is then in pixels)" if key == "pixel_size" else
                               f"set scan.attrs[{key!r}] in {RANGES[key][2]}, or delete it")
    if not normalize:
        return
    n_rows = int(scan.sizes["row"])
    middle = n_rows // 2
    rows = slice(max(0, middle - SAMPLE_ROWS // 2), min(n_rows, middle + SAMPLE_ROWS // 2 + 1))
    samples = {}
    for var in ("projections", "flats", "darks"):
        if var in scan:
            n = int(scan[var].shape[0])
            samples[var] = read_sample(scan[var], sorted({0, n // 2, n - 1}), rows)
            check_counts_sample(samples[var], where=f"{name}: {var}", what=var)
    if "flats" in samples and "darks" in samples:
        check_fields_sample(samples["flats"], samples["darks"], where=name)


def check_row(scan, row) -> int:
    """A detector row (default: the middle one), validated against the detector."""
    n_rows = int(scan.sizes["row"])
    row = n_rows // 2 if row is None else row
    if not isinstance(row, (int, np.integer)) or isinstance(row, (bool, np.bool_)):
        raise ParameterError("a row is a whole detector row number", where="row", value=row,
                             fix=f"pass an int between 0 and {n_rows - 1}, or omit it (the middle)")
    if not 0 <= row < n_rows:
        raise ParameterError("row is outside the detector", where="row", value=row,
                             fix=f"pick a row between 0 and {n_rows - 1}")
    return int(row)


def source_name(scan) -> str:
    """The scan's file for messages (``"scan"`` for data in memory)."""
    return str(scan.attrs.get("source_file") or "scan")


def check_size(scan, size) -> int:
    """Width of the square slices: ``size`` validated (a whole number >= 1), or the detector width."""
    n_cols = int(scan.sizes["col"])
    if size is None:
        return n_cols
    return check_whole_number(size, "size", fix=f"omit it (detector width {n_cols}) or pass a "
                                                f"whole number of pixels, e.g. size={n_cols}")


def plane_coords(n: int, pixel_size: float | None, *, binning: int = 1) -> dict:
    """``y`` and ``x`` coordinates of an ``n × n`` slice centred on the axis (metres or pixels),
    each of its pixels ``binning`` detector pixels wide."""
    unit = binning * (float(pixel_size) if pixel_size else 1.0)
    grid = (np.arange(n) - (n - 1) / 2.0) * unit
    length = "m" if pixel_size else "pixel"
    return {"y": ("y", grid, {"units": length}), "x": ("x", grid, {"units": length})}


def resolve_rows(scan, rows) -> range:
    """Turn ``rows`` (None, int, slice, ``"A:B"`` or ``(A, B)``) into a range of detector rows.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> scan = xr.Dataset(coords={"row": np.arange(10)})
    >>> resolve_rows(scan, "2:5"), resolve_rows(scan, 7), resolve_rows(scan, None)
    (range(2, 5), range(7, 8), range(0, 10))
    """
    n_rows = int(scan.sizes["row"])
    original = rows
    if rows is None:
        return range(n_rows)
    if isinstance(rows, str):
        try:
            parts = [int(p) if p.strip() else None for p in rows.split(":")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2):
            raise ParameterError("rows must be a row or a range A:B", where="rows", value=original,
                                 fix=f"use e.g. 0:{n_rows} or {n_rows // 2}")
        rows = parts[0] if len(parts) == 1 else slice(*parts)
    if isinstance(rows, (bool, np.bool_)):
        raise ParameterError("rows must be a row or a range, not True or False", where="rows",
                             value=rows, fix=f"use e.g. rows='0:{n_rows}' or omit it for all rows")
    if isinstance(rows, tuple) and len(rows) == 2:
        rows = slice(*rows)
    if isinstance(rows, slice):
        for end in (rows.start, rows.stop):
            if end is not None and (isinstance(end, (bool, np.bool_))
                                    or not isinstance(end, (int, np.integer))):
                raise ParameterError("row ranges take whole row numbers", where="rows",
                                     value=original, fix=f"use ints, e.g. rows=slice(0, {n_rows}) "
                                                         f"or rows='0:{n_rows}'")
    if isinstance(rows, (int, np.integer)):
        if not 0 <= rows < n_rows:
            raise ParameterError("row is outside the detector", where="rows", value=original,
                                 fix=f"pick a row between 0 and {n_rows - 1}")
        return range(int(rows), int(rows) + 1)
    if isinstance(rows, slice):
        if rows.step not in (None, 1):
            raise ParameterError("row ranges must be contiguous", where="rows", value=original,
                                 fix="use a step of 1 and select every n-th slice afterwards")
        start = 0 if rows.start is None else int(rows.start)
        stop = n_rows if rows.stop is None else int(rows.stop)
        if not (0 <= start < stop <= n_rows):
            raise ParameterError("row range is outside the detector or empty", where="rows",
                                 value=original, fix=f"use a range within 0:{n_rows}")
        return range(start, stop)
    raise ParameterError("rows must be None, an int, a slice or 'A:B'", where="rows", value=original,
                         fix=f"use e.g. rows=slice(0, {n_rows}) or rows='0:{n_rows}'")


def check_center(scan, center) -> float:
    """Validate a centre column against the detector width."""
    n_cols = int(scan.sizes["col"])
    value = check_centre_value(center)
    if not np.isfinite(value) or not 0.0 <= value <= n_cols - 1:
        raise ParameterError("centre is outside the detector", where="center", value=center,
                             fix=f"pass a column between 0 and {n_cols - 1}, or \"auto\"")
    return value


def half_turn(angles, *, fix: str | None = None) -> np.ndarray:
    """Indices of the projections within the first 180° of the scan.

    Raises :class:`tomolab.errors.ParameterError` naming the missing wedge
    when the scan leaves one out (:func:`tomolab.center.angular_coverage`):
    what needs a half-turn (Vo's centre method) cannot work there. ``fix``
    replaces the default way out in the message.
    """
    from tomolab.center import angular_coverage

    coverage = angular_coverage(angles)
    step = float(np.median(np.diff(np.sort(angles)))) if angles.size > 1 else np.pi
    first = angles.min()
    keep = np.nonzero(angles - first < np.pi - 0.5 * step)[0]
    if coverage.limited or angles[keep].max() - first < np.pi - 1.5 * step:
        raise ParameterError(f"{coverage.describe()}; this needs projections over 180°",
                             where="angles", value=None,
                             fix=fix or 'find the centre with method="centroid" (or "auto", '
                                        'which picks it for scans of less than 180°), or pass '
                                        'center=COLUMN')
    return keep


#: algorithms made for scans with a missing wedge or few angles (:mod:`tomolab.recon`)
ITERATIVE_ALGORITHMS = ("sirt", "cgls", "tv")


def iterative_hint() -> str:
    """``"use algorithm='sirt', 'cgls' or 'tv'"`` for the iterative algorithms installed."""
    from tomolab.recon import ALGORITHMS

    names = [f"'{name}'" for name in ITERATIVE_ALGORITHMS if name in ALGORITHMS]
    if not names:
        return "an iterative reconstruction would fill it in (none in this tomolab version)"
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    return f"use algorithm={listed}"


def check_coverage(scan, *, algorithm: str | None = "fbp", what: str | None = None):
    """Warn when the scan leaves out a wedge of directions; return its coverage.

    The warning (:class:`tomolab.center.LimitedAngleWarning`, one line)
    names the range the angles cover and the wedge that is missing, what
    that does to ``what`` (default: FBP), and the way out. Nothing is
    refused: every reconstruction and sweep works on the range present.
    No warning for an iterative ``algorithm`` (:data:`ITERATIVE_ALGORITHMS`),
    which is the way out.

    Examples
    --------
    >>> import numpy as np, tomolab, warnings
    >>> scan = tomolab.data.simulate_scan(32, n_rows=2, n_angles=40, angle_range=np.radians(120))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     coverage = check_coverage(scan)
    >>> coverage.limited, coverage.wedge
    (True, 63.0)
    >>> print(caught[0].message)  # doctest: +ELLIPSIS
    scan: angles cover 0°–117° (40 projections): no projection from 117° to 180°, 63° of the 180° that parallel-beam needs are missing; FBP shows streaks and a missing wedge: ...
    """
    import warnings

    from tomolab.center import LimitedAngleWarning, angular_coverage

    coverage = angular_coverage(scan["angle"].values)
    if coverage.limited and algorithm not in ITERATIVE_ALGORITHMS:
        what = what or f"{'FBP' if algorithm in (None, 'fbp') else algorithm} shows streaks " \
                       f"and a missing wedge: {iterative_hint()}"
        warnings.warn(f"{source_name(scan)}: {coverage.describe()}; {what}",
                      LimitedAngleWarning, stacklevel=user_stacklevel())
    return coverage


def user_stacklevel() -> int:
    """``stacklevel`` for :func:`warnings.warn` that points at the first caller outside tomolab."""
    import sys
    from pathlib import Path

    package = str(Path(__file__).resolve().parents[1])
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def check_centers(scan, centers) -> np.ndarray:
    n_cols = int(scan.sizes["col"])
    if np.asarray(centers).dtype.kind == "b":
        raise ParameterError("trial centres are detector columns, not True or False",
                             where="centers", value=centers,
                             fix=f"pass columns, e.g. numpy.arange({n_cols // 2 - 10}, "
                                 f"{n_cols // 2 + 10}, 0.5)")
    values = np.atleast_1d(np.asarray(centers, dtype=np.float64))
    bad = values[~np.isfinite(values) | (values < 0) | (values > n_cols - 1)]
    if values.size == 0 or bad.size:
        raise ParameterError("trial centres must lie on the detector", where="centers",
                             value=float(bad[0]) if bad.size else "[]",
                             fix=f"pass columns between 0 and {n_cols - 1}, e.g. "
                                 f"numpy.arange({n_cols // 2 - 10}, {n_cols // 2 + 10}, 0.5)")
    return values
