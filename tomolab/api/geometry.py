"""Scan geometry at the api level: 360° half-acquisition stitching and tilted axes.

* :func:`stitch_360` turns a 360° scan with the axis near a detector edge into
  a 180° scan about twice as wide (lazy, slab by slab), ready for
  :func:`tomolab.reconstruct`.
* :func:`find_axis` finds the centre at several rows and fits a straight axis,
  for axes that are tilted or drift with height.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from tomolab.api.center import find_center
from tomolab.api.validate import (check_center, check_choice, check_scan, resolve_rows,
                                  source_name, user_stacklevel)
from tomolab.checks import check_nonnegative
from tomolab.errors import ParameterError
from tomolab.sanity import check_whole_number

__all__ = ["stitch_360", "find_axis", "default_axis_rows"]


def _stitched_width(center: float, n_cols: int) -> int:
    reach = max(center, n_cols - 1 - center)
    return int(math.floor(2.0 * reach + 1e-9)) + 1


def stitch_360(scan, *, center="auto", rows=None, blend: float | None = None,
               rows_averaged: int = 5, backend: str = "auto", normalize: bool = True,
               log: bool = True):
    """Stitch a 360° half-acquisition scan into a 180° scan of line integrals.

    Each projection of the first half-turn is joined to the mirror image of
    the one 180° later (:func:`tomolab.prep.half_acquisition.stitch_half_acquisition`),
    blended linearly over their overlap.

    Parameters
    ----------
    scan : xarray.Dataset
        A 360° scan (raw counts with flats, or see ``normalize``/``log``).
    center : float or "auto"
        Detector column of the rotation axis. ``"auto"``:
        :func:`tomolab.prep.half_acquisition.find_overlap` on ``rows_averaged``
        rows around the middle of ``rows``.
    rows : int, slice, "A:B" or (A, B), optional
        Detector rows to stitch (default: all).
    blend : float, optional
        Width in pixels of the blend (default: the whole overlap).
    rows_averaged : int
        Rows used by the automatic overlap search.
    backend : {"auto", "numpy", "cupy"}
        Where the stitching runs (the result is on the host).
    normalize, log : bool
        Flat/dark correction and ``-log`` of the input, as for
        :func:`tomolab.reconstruct`.

    Returns
    -------
    xarray.Dataset
        A scan whose ``projections(angle, row, col)`` are already **line
        integrals** (float32, a lazy dask array computed slab by slab), with
        the first half-turn's angles, ``floor(2 r) + 1`` columns (``r`` the
        axis' distance from the far edge) and attrs ``normalized=True``,
        ``log=True``, ``center`` (the axis in the stitched scan, its middle),
        ``original_center``, ``side``, ``overlap`` (pixels), ``blend``, and
        the scan's ``pixel_size``, ``energy``, ``distance``. Reconstruct it
        with ``tomolab.reconstruct(stitched, center=stitched.attrs["center"],
        normalize=False, log=False)``.

    Examples
    --------
    >>> import numpy as np, tomolab
    >>> from tomolab.data.phantom import Cylinder, project_slice
    >>> angles = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    >>> rods = [Cylinder(-25, 5, -9, 9, 20, 14, 0.3, 0.02), Cylinder(20, -10, -9, 9, 6, 6, 0, 0.05)]
    >>> line = project_slice(rods, angles, np.arange(48), np.arange(4) - 1.5, center=40.0)
    >>> counts = (1e4 * np.exp(-line)).astype(np.uint16)
    >>> scan = tomolab.from_arrays(counts, angles, flats=np.full((2, 4, 48), 10000, np.uint16),
    ...                            darks=np.zeros((1, 4, 48), np.uint16))
    >>> stitched = stitch_360(scan, backend="numpy")
    >>> dict(stitched.projections.sizes), round(stitched.attrs["center"], 1)
    ({'angle': 100, 'row': 4, 'col': 81}, 40.0)
    """
    import dask
    import dask.array as da
    import xarray as xr

    from tomolab.arrays import to_numpy
    from tomolab.devices import batch_size, resolve_backend
    from tomolab.engine import line_integrals
    from tomolab.prep.half_acquisition import (find_overlap, opposite_projections,
                                               stitch_half_acquisition)

    backend = resolve_backend(backend)
    angles = scan["angle"].values
    first, _, _, _ = opposite_projections(angles)  # raises for a 180° scan
    row_range = resolve_rows(scan, rows)
    rows_averaged = check_whole_number(rows_averaged, "rows_averaged", fix="pass e.g. rows_averaged=5")
    if blend is not None:
        blend = check_nonnegative(blend, "blend", "pass a width in pixels >= 0, or omit it (the "
                                                  "whole overlap)")
    check_scan(scan, normalize=normalize)
    n_cols = int(scan.sizes["col"])
    score = None
    if isinstance(center, str) and center == "auto":
        middle = row_range.start + len(row_range) // 2
        half = max(1, int(rows_averaged)) // 2
        band = slice(max(row_range.start, middle - half), min(row_range.stop, middle + half + 1))
        data = line_integrals(scan, band, backend=backend, normalize=normalize, log=log)
        center, _side, score = find_overlap(data, angles)
        center_source = f"auto (find_overlap on rows {band.start}:{band.stop})"
        if score < 0.9:
            warnings.warn(f"{source_name(scan)}: the overlap found for the "
                          f"half acquisition (axis at column {center:.2f}) correlates poorly "
                          f"({score:.2f} < 0.9); check it, e.g. reconstruct with a few centres "
                          f"around it", stacklevel=2)
    else:
        center = check_center(scan, center)
        center_source = "given"
    width = _stitched_width(center, n_cols)
    n_half = int(first.size)

    frame = n_half * width * 4 + angles.size * n_cols * 4 * 3
    height = batch_size(frame, backend=backend, count=len(row_range), ceiling=256 << 20)

    def slab(start, stop):
        data = line_integrals(scan, slice(start, stop), backend=backend, normalize=normalize,
                              log=log)
        stitched, _, _ = stitch_half_acquisition(data, angles, center=center, blend=blend)
        return to_numpy(stitched)

    pieces = []
    for start in range(row_range.start, row_range.stop, height):
        stop = min(start + height, row_range.stop)
        pieces.append(da.from_delayed(dask.delayed(slab)(start, stop),
                                      shape=(n_half, stop - start, width), dtype=np.float32))
    projections = da.concatenate(pieces, axis=1)
    new_center = center if center >= (n_cols - 1) / 2.0 else width - 1 - (n_cols - 1 - center)
    side = "right" if center >= (n_cols - 1) / 2.0 else "left"
    overlap = int(max(0, n_cols - 1 - math.ceil(2 * center - n_cols + 1 - 1e-9) + 1)) \
        if side == "right" else int(max(0, math.floor(2 * center + 1e-9) + 1))
    attrs = {key: scan.attrs[key] for key in ("pixel_size", "energy", "distance", "source_file")
             if key in scan.attrs}
    attrs.update({
        "layout": "stitched-360",
        "normalized": True,
        "log": True,
        "center": float(new_center),
        "original_center": float(center),
        "center_source": center_source,
        "side": side,
        "overlap": overlap,
        "blend": "whole overlap" if blend is None else float(blend),
        "rows": f"{row_range.start}:{row_range.stop}",
        "backend": backend,
        "long_name": "line integrals of a 360° half acquisition stitched to 180°",
    })
    if score is not None:
        attrs["overlap_score"] = float(score)
    return xr.Dataset(
        {"projections": (("angle", "row", "col"), projections)},
        coords={"angle": ("angle", angles[first], {"units": "rad"}),
                "row": ("row", np.arange(row_range.start, row_range.stop)),
                "col": ("col", np.arange(width))},
        attrs=attrs)


def default_axis_rows(n_rows: int, count: int = 9, *, margin: int = 2) -> np.ndarray:
    """``count`` rows spread evenly over the detector, ``margin`` rows (and 5 %) from its edges.

    Examples
    --------
    >>> default_axis_rows(200).tolist()
    [10, 32, 55, 77, 100, 122, 144, 167, 189]
    """
    # keep at least two rows where the detector has them
    margin = min(max(int(margin), int(round(0.05 * n_rows))), max(0, (n_rows - 2) // 2))
    return np.unique(np.round(np.linspace(margin, n_rows - 1 - margin, count)).astype(int))


def find_axis(scan, *, rows=None, method: str = "auto", rows_averaged: int = 5,
              max_residual: float = 0.5, backend: str = "auto", normalize: bool = True):
    """Find the centre at several rows and fit a straight (tilted or drifting) axis.

    Parameters
    ----------
    scan : xarray.Dataset
    rows : sequence of int, optional
        Detector rows to measure (default: :func:`default_axis_rows`, 9 rows
        spread over the detector).
    method : {"auto", "vo", "phase-correlation", "centroid"}
        :func:`tomolab.find_center`'s method at each row. ``"auto"``
        (default): Vo's method on a scan over 180°; on a scan that leaves out
        a wedge of directions (a ±60° tilt series, 0°–120°:
        :func:`tomolab.center.angular_coverage`) the centroid fit, as
        :func:`tomolab.find_center` picks it. There, rows where the fit
        cannot place the centre (a score below
        :data:`tomolab.api.center.NO_ANSWER_SCORE`, or no sample in the row)
        are left out of the line, and a warning names them; with fewer than
        two rows left it asks for the centre. A warning also says when the
        rows' scores are low (median below :data:`tomolab.center.LOW_SCORE`).
    rows_averaged : int
        Rows averaged around each measured row.
    max_residual : float
        RMS distance (pixels) of the centres from the line above which the
        fit is flagged ``suspect`` and a warning names the worst row.
    backend : {"auto", "numpy", "cupy"}
    normalize : bool
        Flat/dark correction.

    Returns
    -------
    tomolab.center.axis.AxisFit
        ``center(row)`` gives the axis at any row; ``tilt_degrees``,
        ``rows``, ``centers``, ``scores`` (0 for a row left out),
        ``residual_rms``, ``suspect``, and ``method``, the method that ran
        at each row.

    Raises
    ------
    tomolab.errors.ParameterError
        On a scan of less than 180° whose centre the centroid fit cannot
        place at two or more rows: pass the centre instead.

    Examples
    --------
    >>> import numpy as np, tomolab
    >>> scan = tomolab.data.simulate_scan(96, n_rows=24, n_angles=150)
    >>> fit = find_axis(scan, backend="numpy")
    >>> true = scan.attrs["true_center"]
    >>> fit.method, abs(fit.slope) < 0.02, abs(float(fit.center(12)) - true) < 0.5
    ('vo', True, True)
    >>> tilt = scan.isel(angle=slice(0, 100))                   # 0°–119°: a missing wedge
    >>> fit = find_axis(tilt, backend="numpy")
    >>> fit.method, abs(float(fit.center(12)) - true) < 0.5
    ('centroid', True)
    """
    import dataclasses

    from tomolab.api.center import NO_ANSWER_SCORE
    from tomolab.center import CENTER_METHODS, LOW_SCORE, angular_coverage
    from tomolab.center.axis import fit_axis
    from tomolab.devices import resolve_backend
    from tomolab.errors import InsufficientMemory

    if method != "auto":
        check_choice(method, CENTER_METHODS, where="method", what="centre-finding method")
    n_rows = int(scan.sizes["row"])
    if rows is None:
        rows = default_axis_rows(n_rows, margin=max(1, int(rows_averaged)) // 2)
    rows_array = np.atleast_1d(np.asarray(rows))
    if rows_array.ndim != 1 or not np.issubdtype(rows_array.dtype, np.integer):
        raise ParameterError("rows must be a sequence of detector rows (integers)", where="rows",
                             value=rows, fix=f"pass e.g. rows=[0, {n_rows // 2}, {n_rows - 1}]")
    bad = rows_array[(rows_array < 0) | (rows_array >= n_rows)]
    if bad.size:
        raise ParameterError("row is outside the detector", where="rows", value=int(bad[0]),
                             fix=f"pick rows between 0 and {n_rows - 1}")
    rows_array = np.unique(rows_array)
    if rows_array.size < 2:
        raise ParameterError("a tilt needs centres at two or more rows", where="rows",
                             value=rows_array.tolist(), fix="pass more rows, or omit rows")
    coverage = angular_coverage(scan["angle"].values)
    limited = method == "auto" and coverage.limited
    row_method = ("centroid" if limited else "vo") if method == "auto" else method
    if limited:  # what find_center would refuse at every row is refused here, once
        check_whole_number(rows_averaged, "rows_averaged", fix="pass e.g. rows_averaged=5")
        backend = resolve_backend(backend)
        check_scan(scan, normalize=normalize)
    centers, scores, left_out = [], [], {}
    for row in rows_array:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                c, s = find_center(scan, row=int(row), method=row_method,
                                   rows_averaged=rows_averaged, backend=backend,
                                   normalize=normalize)
            except InsufficientMemory:
                raise
            except ParameterError as exc:
                if not limited:
                    raise
                c, s = np.nan, 0.0
                left_out[int(row)] = exc.what
        if limited and int(row) not in left_out and s < NO_ANSWER_SCORE:
            left_out[int(row)] = f"centre {c:.2f} with score {s:.2f} < {NO_ANSWER_SCORE}"
            s = 0.0  # fit_axis leaves out rows of score 0
        centers.append(c)
        scores.append(s)
    where = source_name(scan)
    if limited:
        found = [int(r) for r in rows_array if int(r) not in left_out]
        if len(found) < 2:
            first = next(iter(left_out.items()))
            raise ParameterError(
                f"{coverage.describe()}; the centroid fit cannot find the centre at two or more "
                f"of rows {rows_array.tolist()} (found at {found or 'none'}; row {first[0]}: "
                f"{first[1]})", where=where, value=None,
                fix="pass the centre (center=COLUMN), e.g. one found on a full 180° scan of the "
                    "same setup")
    fit = dataclasses.replace(fit_axis(rows_array, centers, scores, max_residual=max_residual),
                              method=row_method)
    if limited:
        median = float(np.median(np.asarray(scores)[fit.used]))
        reasons = {}  # the same reason once, with its rows
        for r, text in sorted(left_out.items()):
            reasons.setdefault(text, []).append(r)
        said = next(iter(reasons)) if len(reasons) == 1 else "; ".join(
            f"{'row' if len(rs) == 1 else 'rows'} {', '.join(map(str, rs))}: {text}"
            for text, rs in reasons.items())
        why = [f"rows {sorted(left_out)} are left out ({said})"] if left_out else []
        why += [f"the centres have low scores (median {median:.2f} < {LOW_SCORE})"] \
            if median < LOW_SCORE else []
        if why:
            warnings.warn(
                f"{where}: axis {fit.center(0):.2f} px at row 0, tilt {fit.tilt_degrees:.3f}°, "
                f"from the centroid fit on a scan that covers {coverage.covered:.4g}° of 180°, "
                f"but {' and '.join(why)}; do not trust it blindly: "
                f"{'pass rows= where the sample is, ' if left_out else ''}pass the centre if "
                f"you know it (a full scan of the same setup), or look at trial slices with "
                f"tomolab.sweep_center(scan, row={found[len(found) // 2]}, centers=...)",
                stacklevel=user_stacklevel())
    if fit.suspect:
        residuals = np.where(np.isfinite(fit.residuals), np.abs(fit.residuals), -1.0)
        worst = int(fit.rows[np.argmax(residuals)])
        warnings.warn(
            f"{where}: the centres at rows "
            f"{fit.rows.astype(int).tolist()} ({np.round(fit.centers, 2).tolist()}) do not lie "
            f"on a line (RMS {fit.residual_rms:.2f} px > {max_residual} px"
            f"{', outliers left out' if (~fit.used & (fit.scores > 0)).any() else ''}); check row "
            f"{worst} with tomolab.sweep_center(scan, row={worst}, centers=...)",
            stacklevel=user_stacklevel())
    return fit
