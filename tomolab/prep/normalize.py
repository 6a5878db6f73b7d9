"""Flat/dark-field normalisation and the safe negative logarithm.

Works on numpy or cupy arrays alike: the array module is taken from the
projections and the flats/darks are moved to it when they differ.
"""

from __future__ import annotations

import numpy as np

from tomolab.arrays import array_module, to_numpy
from tomolab.errors import ParameterError
from tomolab.checks import check_int, check_ndim, check_positive

__all__ = ["normalize", "normalize_interpolated", "minus_log", "defective_pixels",
           "repair_pixels"]

#: The denominator ``flat - dark`` is clipped from below to this fraction of
#: its maximum (or to 1 when no pixel is positive), so that dead pixels give
#: large but finite values rather than inf or NaN.
DENOMINATOR_FLOOR = 1e-6


def _work_dtype(out_dtype) -> np.dtype:
    try:
        dtype = np.dtype(out_dtype)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind != "f" or dtype.itemsize < 4:
        raise ParameterError("must be a floating-point dtype of 32 or 64 bits",
                             where="out_dtype", value=out_dtype,
                             fix="pass numpy.float32 (default) or numpy.float64")
    return dtype


def _check_projections(projections):
    check_ndim(projections, "projections", (2, 3), "(angle, row, col) or (row, col)")


def _mean_field(stack, name: str, frame_shape, dtype, xp):
    """Average a ``(n, row, col)`` stack (or take a 2D field as it is)."""
    if stack is None:
        return None
    check_ndim(stack, name, (2, 3), f"({name[:-1]}, row, col) or pre-averaged (row, col)")
    if tuple(stack.shape[-2:]) != tuple(frame_shape):
        raise ParameterError(
            f"frame shape {tuple(stack.shape[-2:])} does not match the projections' "
            f"(row, col) shape {tuple(frame_shape)}", where=name, value=tuple(stack.shape),
            fix=f"pass {name} taken with the same detector region as the projections")
    if stack.ndim == 3 and stack.shape[0] == 0:
        raise ParameterError("the stack holds no frames", where=name, value=tuple(stack.shape),
                             fix=f"pass at least one frame, or {name}=None")
    stack = xp.asarray(stack)
    if stack.ndim == 2:
        return stack.astype(dtype, copy=False)
    return xp.mean(stack, axis=0, dtype=dtype)


def _safe_denominator(denominator, xp):
    """Clip ``flat - dark`` to a small positive floor (no sync with the host)."""
    dmax = xp.max(denominator)
    floor = xp.where(dmax > 0, dmax * DENOMINATOR_FLOOR, 1.0).astype(denominator.dtype)
    return xp.maximum(denominator, floor)


def defective_pixels(flat, dark=None):
    """Detector pixels that cannot be flat-field corrected: ``flat - dark <= 0`` or not finite.

    A dead flat pixel (0, or no brighter than the dark) or a NaN or infinite
    flat or dark value would give a transmission of inf or NaN (or of 1e6,
    clipped), a stripe through every sinogram that rings in the slices and
    pulls the automatic centre. A dark of 0 is normal (photon counting).

    Parameters
    ----------
    flat, dark : ndarray (row, col) or (n, row, col)
        Mean fields (or stacks, which must agree at every frame), numpy or cupy.

    Returns
    -------
    ndarray of bool, shape (row, col), same array module

    Examples
    --------
    >>> import numpy as np
    >>> flat = np.array([[100.0, 0.0, np.nan, 100.0]])
    >>> defective_pixels(flat, np.array([[10.0, 0.0, 10.0, np.inf]])).astype(int)
    array([[0, 1, 1, 1]])
    """
    xp = array_module(flat)
    flat = xp.asarray(flat)
    with np.errstate(invalid="ignore"):
        bad = ~xp.isfinite(flat)
        if dark is not None:
            dark = xp.asarray(dark)
            bad |= ~xp.isfinite(dark) | ~(flat - dark > 0)
        else:
            bad |= ~(flat > 0)
    while bad.ndim > 2:
        bad = bad.any(axis=0)
    return bad


def repair_pixels(data, bad):
    """Replace the ``bad`` pixels of every frame by linear interpolation along their row.

    Each bad pixel takes the value interpolated between the nearest good
    pixels to its left and right in the same row (the nearest one at a
    detector edge); a row with no good pixel is set to 1 (no attenuation).

    Parameters
    ----------
    data : ndarray (angle, row, col) or (row, col)
        Transmission, changed in place (numpy or cupy).
    bad : ndarray of bool (row, col)
        From :func:`defective_pixels`; numpy or cupy (read on the host once).

    Returns
    -------
    ndarray
        ``data``.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[[0.2, 9.0, 9.0, 0.8]]])
    >>> repair_pixels(t, np.array([[False, True, True, False]]))
    array([[[0.2, 0.4, 0.6, 0.8]]])
    """
    bad = np.asarray(to_numpy(bad), dtype=bool)
    if not bad.any():
        return data
    xp = array_module(data)
    n_cols = bad.shape[-1]
    col = np.broadcast_to(np.arange(n_cols), bad.shape)
    left = np.maximum.accumulate(np.where(bad, -1, col), axis=1)
    right = np.minimum.accumulate(np.where(bad, n_cols, col)[:, ::-1], axis=1)[:, ::-1]
    rr, cc = np.nonzero(bad)
    lo, hi = left[rr, cc], right[rr, cc]
    none = (lo < 0) & (hi >= n_cols)  # a row with no good pixel
    lo = np.where(lo < 0, hi, lo)
    hi = np.where(hi >= n_cols, lo, hi)
    weight = np.where(hi > lo, (cc - lo) / np.maximum(hi - lo, 1), 0.0).astype(data.dtype)
    lo, hi = np.clip(lo, 0, n_cols - 1), np.clip(hi, 0, n_cols - 1)
    r, c, lo_, hi_ = (xp.asarray(a) for a in (rr, cc, lo, hi))
    w = xp.asarray(weight)
    values = (1 - w) * data[..., r, lo_] + w * data[..., r, hi_]
    if none.any():
        values[..., xp.asarray(np.flatnonzero(none))] = 1
    data[..., r, c] = values
    return data


def _finish(out, cutoff, xp):
    if cutoff is not None:
        cutoff = check_positive(cutoff, "cutoff", "pass a positive upper bound such as 1.5, "
                                "or cutoff=None to keep every value")
        xp.minimum(out, out.dtype.type(cutoff), out=out)
    return out


def normalize(projections, flats=None, darks=None, *, out_dtype=np.float32, cutoff=None,
              bad_pixels=None):
    """Flat- and dark-field correct projections.

    Computes ``(projections - mean(darks)) / (mean(flats) - mean(darks))``.
    Pixels whose flat is not brighter than the dark, or whose flat or dark is
    not finite (:func:`defective_pixels`), are interpolated along their row
    from their neighbours (:func:`repair_pixels`). Elsewhere the denominator
    is clipped from below to ``1e-6`` of its maximum, so the output is never
    inf or NaN.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, col) or (row, col)
        Raw projections (any real dtype, typically uint16), numpy or cupy.
    flats : ndarray, shape (flat, row, col) or (row, col), optional
        Flat fields, or their pre-averaged 2D mean. ``None`` means no flat
        correction: only the dark is subtracted.
    darks : ndarray, shape (dark, row, col) or (row, col), optional
        Dark fields, or their pre-averaged mean. ``None`` means zero dark.
    out_dtype : dtype, keyword-only
        ``numpy.float32`` (default) or ``numpy.float64``.
    cutoff : float, optional, keyword-only
        Upper bound for the output (e.g. 1.5), to tame hot and dead pixels.
    bad_pixels : ndarray of bool (row, col), optional, keyword-only
        The pixels to interpolate, when known already (the engine finds them
        once per run); default: :func:`defective_pixels` of the fields.

    Returns
    -------
    ndarray
        Transmission, same shape and array module as ``projections``.

    See Also
    --------
    normalize_interpolated : flats taken before and after the scan.
    minus_log : the next step for absorption data.

    Examples
    --------
    >>> import numpy as np
    >>> proj = np.full((2, 2, 3), 60, dtype=np.uint16)
    >>> flats = np.full((4, 2, 3), 110, dtype=np.uint16)
    >>> darks = np.full((3, 2, 3), 10, dtype=np.uint16)
    >>> normalize(proj, flats, darks)[0, 0]
    array([0.5, 0.5, 0.5], dtype=float32)
    """
    _check_projections(projections)
    xp = array_module(projections)
    dtype = _work_dtype(out_dtype)
    frame = projections.shape[-2:]
    dark = _mean_field(darks, "darks", frame, dtype, xp)
    flat = _mean_field(flats, "flats", frame, dtype, xp)

    out = projections.astype(dtype, copy=True)
    if dark is not None:
        out -= dark
    if flat is not None:
        denominator = flat - dark if dark is not None else flat
        with np.errstate(invalid="ignore", divide="ignore"):
            out /= _safe_denominator(denominator, xp)
        repair_pixels(out, defective_pixels(flat, dark) if bad_pixels is None else bad_pixels)
    return _finish(out, cutoff, xp)


def _interpolation_weights(n_slab, projection_index, n_projections, dtype, xp):
    """Weight of the *after* flat for each projection of the slab (0 .. 1)."""
    if projection_index is None:
        index = np.arange(n_slab)
        if n_projections is None:
            n_projections = n_slab
    else:
        if n_projections is None:
            raise ParameterError(
                "is needed with projection_index, to place the slab in the scan",
                where="n_projections", value=None,
                fix="pass the total number of projections of the scan")
        if np.ndim(projection_index) == 0:
            start = check_int(projection_index, "projection_index", 0,
                              "pass the scan index of the slab's first projection (>= 0) "
                              "or one index per projection")
            index = start + np.arange(n_slab)
        else:
            index = np.asarray(projection_index)
            if index.shape != (n_slab,) or index.dtype.kind not in "iu":
                raise ParameterError(
                    f"expected {n_slab} integer indices, one per projection of the slab",
                    where="projection_index", value=index.shape,
                    fix="pass an int (index of the first projection) or one integer "
                        "index per projection")
    n_projections = check_int(n_projections, "n_projections", 1,
                              "pass the total number of projections of the scan")
    if n_slab and (index.min() < 0 or index.max() > n_projections - 1):
        raise ParameterError(
            f"projection indices {index.min()}..{index.max()} fall outside the scan "
            f"0..{n_projections - 1}", where="projection_index", value=projection_index,
            fix="pass indices within the scan, or the right n_projections")
    weights = index / max(n_projections - 1, 1)
    return xp.asarray(weights.astype(dtype))


def normalize_interpolated(projections, flats_before, flats_after, darks=None, *,
                           projection_index=None, n_projections=None,
                           out_dtype=np.float32, cutoff=None, bad_pixels=None):
    """Flat-field correct with flats taken before and after the scan.

    Projection number ``i`` of a scan of ``n`` projections is divided by the
    flat interpolated linearly in ``i`` between the mean flat before
    (weight 1 at ``i = 0``) and the mean flat after (weight 1 at ``i = n-1``):
    ``F_i = (1 - w_i) F_before + w_i F_after``, ``w_i = i / (n - 1)``. This
    follows a beam or detector that drifts slowly during the scan. The
    denominator ``F_i - dark`` is clipped as in :func:`normalize`.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, col) or (row, col)
        Raw projections (a whole scan or a slab of it), numpy or cupy. A 2D
        array is one projection.
    flats_before, flats_after : ndarray, shape (flat, row, col) or (row, col)
        Flat fields taken before and after the projections (or their means).
    darks : ndarray, shape (dark, row, col) or (row, col), optional
        Dark fields, or their mean. ``None`` means zero dark.
    projection_index : int or sequence of int, optional, keyword-only
        Scan index of the slab's first projection (int), or one scan index per
        projection. ``None``: the projections are the whole scan.
    n_projections : int, optional, keyword-only
        Number of projections in the whole scan; required with
        ``projection_index``.
    out_dtype : dtype, keyword-only
        ``numpy.float32`` (default) or ``numpy.float64``.
    cutoff : float, optional, keyword-only
        Upper bound for the output.
    bad_pixels : ndarray of bool (row, col), optional, keyword-only
        Pixels to interpolate along their row, as in :func:`normalize`
        (default: those defective in either set of flats).

    Returns
    -------
    ndarray
        Transmission, same shape and array module as ``projections``.

    Examples
    --------
    The beam doubles during the scan; each projection sees half of it:

    >>> import numpy as np
    >>> proj = np.array([50.0, 75.0, 100.0]).reshape(3, 1, 1)
    >>> before, after = np.full((1, 1), 100.0), np.full((1, 1), 200.0)
    >>> normalize_interpolated(proj, before, after).ravel()
    array([0.5, 0.5, 0.5], dtype=float32)

    The same for a slab holding the last projection only:

    >>> normalize_interpolated(proj[2:], before, after, projection_index=2,
    ...                        n_projections=3).ravel()
    array([0.5], dtype=float32)
    """
    _check_projections(projections)
    xp = array_module(projections)
    dtype = _work_dtype(out_dtype)
    frame = projections.shape[-2:]
    single = projections.ndim == 2
    proj = projections[None] if single else projections
    if flats_before is None or flats_after is None:
        name = "flats_before" if flats_before is None else "flats_after"
        raise ParameterError("is required for interpolated flat correction", where=name,
                             value=None, fix="pass the flats, or use normalize() with one set")
    dark = _mean_field(darks, "darks", frame, dtype, xp)
    before = _mean_field(flats_before, "flats_before", frame, dtype, xp)
    after = _mean_field(flats_after, "flats_after", frame, dtype, xp)
    if bad_pixels is None:
        bad_pixels = defective_pixels(before, dark) | defective_pixels(after, dark)
    if dark is not None:
        before = before - dark
        after = after - dark
    w = _interpolation_weights(proj.shape[0], projection_index, n_projections, dtype, xp)
    w = w[:, None, None]
    denominator = (1 - w) * before + w * after
    out = proj.astype(dtype, copy=True)
    if dark is not None:
        out -= dark
    with np.errstate(invalid="ignore", divide="ignore"):
        out /= _safe_denominator(denominator, xp)
    repair_pixels(out, bad_pixels)
    out = _finish(out, cutoff, xp)
    return out[0] if single else out


def minus_log(x, *, floor=1e-6):
    """``-log(x)`` that never returns NaN or inf.

    Values below ``floor`` (zeros, negatives from noise after dark
    subtraction) and NaN are replaced by ``floor`` before the logarithm;
    +inf is replaced by the largest finite value of the dtype.

    Parameters
    ----------
    x : ndarray
        Transmission (e.g. from :func:`normalize`), numpy or cupy.
    floor : float, keyword-only
        Smallest transmission used; ``-log(floor)`` is the largest output
        (13.8 for the default 1e-6).

    Returns
    -------
    ndarray
        Line integrals of attenuation, float32 (float64 for float64 input).

    Examples
    --------
    >>> import numpy as np
    >>> minus_log(np.array([1.0, np.exp(-2.0), 0.0, -0.5, np.nan]), floor=1e-3)
    array([-0.        ,  2.        ,  6.90775528,  6.90775528,  6.90775528])
    """
    floor = check_positive(floor, "floor", "pass a small positive transmission such as 1e-6")
    xp = array_module(x)
    dtype = np.float64 if np.dtype(x.dtype) == np.float64 else np.float32
    y = x.astype(dtype, copy=True)
    # fmax/fmin (not maximum/minimum) so that NaN is replaced, not propagated
    xp.fmax(y, dtype(floor), out=y)
    xp.fmin(y, np.finfo(dtype).max, out=y)
    xp.log(y, out=y)
    xp.negative(y, out=y)
    return y
