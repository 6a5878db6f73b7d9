"""360° scans with the rotation axis near a detector edge (half acquisition).

With the axis at column ``c`` near one edge, the projection at ``theta + 180°``
is the mirror image about ``c`` of the one at ``theta`` and sees the other half
of the sample. Stitching each projection of the first half-turn to the mirror
of its opposite gives a 180° sinogram about twice as wide, with the axis in
its middle. The two overlap over the ``2 (W - 1 - c) + 1`` columns around the
axis (axis on the right; ``2 c + 1`` on the left), where they are blended
linearly.

Geometry: a point at ``s`` pixels from the axis projects at column ``c + s``;
the projection at ``theta + pi`` holds at column ``j`` what the one at
``theta`` holds at ``2 c - j``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from tomolab.arrays import array_module, fft_module, to_numpy
from tomolab.errors import ParameterError

__all__ = ["OverlapFit", "opposite_projections", "find_overlap", "stitch_half_acquisition"]


class OverlapFit(NamedTuple):
    """What :func:`find_overlap` found: unpacks as ``center, side, score``."""

    center: float
    """Detector column of the rotation axis, in pixels."""
    side: str
    """``"right"`` or ``"left"``: the detector edge the axis is near."""
    score: float
    """Correlation of the overlapping columns of opposite projections (1 = perfect)."""


def opposite_projections(angles):
    """Pair every projection of the first half-turn with the one 180° later.

    Returns
    -------
    first : ndarray of int
        Indices of the projections in ``[a0, a0 + 180°)``, by angle.
    lower, upper : ndarray of int
        The projections on either side of ``angle + 180°``.
    weight : ndarray of float
        The opposite projection is ``(1 - weight) * p[lower] + weight * p[upper]``
        (0 where an angle 180° apart was measured).

    Raises
    ------
    tomolab.errors.ParameterError
        When the angles do not cover 360°.

    Examples
    --------
    >>> first, lower, upper, weight = opposite_projections(np.linspace(0, 2 * np.pi, 8, endpoint=False))
    >>> first.tolist(), lower.tolist(), weight.tolist()
    ([0, 1, 2, 3], [4, 5, 6, 7], [0.0, 0.0, 0.0, 0.0])
    """
    angles = np.asarray(angles, dtype=np.float64)
    if angles.ndim != 1 or angles.size < 4:
        raise ParameterError("need the angles of a 360° scan (radians)", where="angles",
                             value=angles.shape, fix="pass one angle per projection")
    order = np.argsort(angles, kind="stable")
    sorted_angles = angles[order]
    step = float(np.median(np.diff(sorted_angles)))
    a0 = sorted_angles[0]
    span = sorted_angles[-1] - a0
    if span < 2 * np.pi - 1.5 * step:
        raise ParameterError(
            f"half acquisition needs a 360° scan, this one covers {np.degrees(span + step):.1f}°",
            where="angles", value=f"{np.degrees(span):.1f}° span",
            fix="for a 180° scan find the centre with tomolab.find_center and reconstruct it "
                "directly; stitching opposite projections needs them 180° apart")
    first = np.nonzero(sorted_angles - a0 < np.pi - 0.5 * step)[0]
    target = sorted_angles[first] + np.pi
    upper = np.clip(np.searchsorted(sorted_angles, target - 1e-9 * step), 1, angles.size - 1)
    lower = upper - 1
    gap = sorted_angles[upper] - sorted_angles[lower]
    weight = np.clip((target - sorted_angles[lower]) / gap, 0.0, 1.0)
    exact_upper = np.abs(sorted_angles[upper] - target) < 1e-6 * step
    lower = np.where(exact_upper, upper, lower)
    weight = np.where(exact_upper | (weight < 1e-6), 0.0, weight)
    upper = np.where(weight > 0, upper, lower)
    return order[first], order[lower], order[upper], weight


def _opposite(data, lower, upper, weight, xp):
    w = xp.asarray(weight.astype(np.float32)).reshape((-1,) + (1,) * (data.ndim - 1))
    out = data[xp.asarray(lower)]
    if np.any(weight > 0):
        out = (1 - w) * out + w * data[xp.asarray(upper)]
    return out


def find_overlap(sino_360, angles, *, min_overlap: int | None = None) -> OverlapFit:
    """Find the rotation axis of a half-acquisition scan from its opposite projections.

    Each projection of the first half-turn is correlated with the mirror
    image of the projection 180° later over every overlap, at once: the sums
    over the overlapping columns come from one batched FFT cross-correlation
    and cumulative sums of the column sums, so every candidate is scored by
    the zero-mean normalised correlation of all the overlapping pixels. The
    best integer overlap is refined by a parabola through its neighbours.

    Parameters
    ----------
    sino_360 : ndarray (angle, col) or (angle, row, col), numpy or cupy
        Line integrals (or transmission) over 360°.
    angles : array_like (angle,)
        Radians.
    min_overlap : int, optional
        Fewest overlapping columns considered (default ``max(8, width // 32)``).

    Returns
    -------
    OverlapFit
        ``(center, side, score)``: the axis column, ``"right"`` or ``"left"``,
        and the correlation of the overlap (1 = perfect; below about 0.9 the
        two halves do not match: check the angles or the data).

    Examples
    --------
    >>> from tomolab.data.phantom import Cylinder, project_slice
    >>> angles = np.linspace(0, 2 * np.pi, 240, endpoint=False)
    >>> rods = [Cylinder(-30, 10, -1, 1, 20, 15, 0.3, 1.0), Cylinder(25, -20, -1, 1, 8, 8, 0, 2.0)]
    >>> sino = project_slice(rods, angles, np.arange(64), [0.0], center=55.3)[:, 0]
    >>> center, side, score = find_overlap(sino, angles)
    >>> round(center, 1), side, score > 0.99
    (55.3, 'right', True)
    """
    xp = array_module(sino_360)
    fft = fft_module(xp)
    data = xp.asarray(sino_360, dtype=xp.float64)
    if data.ndim not in (2, 3):
        raise ParameterError("expected (angle, col) or (angle, row, col)", where="sino_360",
                             value=tuple(data.shape), fix="pass line integrals of a 360° scan")
    first, lower, upper, weight = opposite_projections(angles)
    n_cols = data.shape[-1]
    p = data[xp.asarray(first)].reshape(-1, n_cols)
    m = _opposite(data, lower, upper, weight, xp)[..., ::-1].reshape(-1, n_cols)
    length = int(fft.next_fast_len(2 * n_cols, real=True)) if hasattr(fft, "next_fast_len") \
        else 2 * n_cols
    # C[e] = sum over projections and columns j of p[j] m[j + e]
    corr = fft.irfft((xp.conj(fft.rfft(p, n=length, axis=-1))
                      * fft.rfft(m, n=length, axis=-1)).sum(axis=0), n=length)
    shifts = np.arange(-(n_cols - 1), n_cols)
    cross = corr[xp.asarray(shifts % length)]

    def window_sums(column_sums):
        """Cumulative sums with a leading 0: the sum over [lo, hi) is c[hi] - c[lo]."""
        return xp.concatenate([xp.zeros(1, xp.float64), xp.cumsum(column_sums)])

    cp, cp2 = window_sums(p.sum(axis=0)), window_sums((p * p).sum(axis=0))
    cm, cm2 = window_sums(m.sum(axis=0)), window_sums((m * m).sum(axis=0))
    lo_p, hi_p = np.maximum(0, -shifts), np.minimum(n_cols, n_cols - shifts)
    lo_m, hi_m = lo_p + shifts, hi_p + shifts
    lo_p, hi_p, lo_m, hi_m = (xp.asarray(v) for v in (lo_p, hi_p, lo_m, hi_m))
    count = (hi_p - lo_p) * p.shape[0]
    sp, sp2 = cp[hi_p] - cp[lo_p], cp2[hi_p] - cp2[lo_p]
    sm, sm2 = cm[hi_m] - cm[lo_m], cm2[hi_m] - cm2[lo_m]
    cov = cross - sp * sm / count
    var = xp.maximum(sp2 - sp * sp / count, 0) * xp.maximum(sm2 - sm * sm / count, 0)
    ncc = xp.where(var > 0, cov / xp.sqrt(xp.where(var > 0, var, 1.0)), -1.0)
    ncc = to_numpy(ncc)
    min_overlap = max(8, n_cols // 32) if min_overlap is None else int(min_overlap)
    ncc[(n_cols - np.abs(shifts)) < min(min_overlap, n_cols)] = -np.inf
    best = int(np.argmax(ncc))
    e = float(shifts[best])
    if 0 < best < shifts.size - 1 and np.isfinite(ncc[best - 1]) and np.isfinite(ncc[best + 1]):
        a, b, c = ncc[best - 1], ncc[best], ncc[best + 1]
        denom = a - 2 * b + c
        if denom < 0:
            e += float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))
    center = (n_cols - 1 - e) / 2.0
    side = "right" if center >= (n_cols - 1) / 2.0 else "left"
    return OverlapFit(float(center), side, float(np.clip(ncc[best], 0.0, 1.0)))


def _fractional_shift(data, frac, xp):
    """``out[..., j] = data[..., j + frac]`` by a Fourier phase ramp (sinc interpolation).

    Linear interpolation would blur the mirrored half by up to half a pixel;
    the detector is padded with its edge values so nothing wraps around.
    """
    fft = fft_module(xp)
    n_cols = data.shape[-1]
    length = int(2 ** math.ceil(math.log2(2 * n_cols)))
    left = (length - n_cols) // 2
    pad = [(0, 0)] * (data.ndim - 1) + [(left, length - n_cols - left)]
    spectrum = fft.rfft(xp.pad(data, pad, mode="edge"), axis=-1)
    ramp = np.exp(2j * np.pi * np.fft.rfftfreq(length) * frac)
    ramp = xp.asarray(ramp.astype(np.complex128 if data.dtype == np.float64 else np.complex64))
    shifted = fft.irfft(spectrum * ramp, n=length, axis=-1)[..., left:left + n_cols]
    return shifted.astype(data.dtype, copy=False)


def _stitch_right(direct, opposite, center, blend, xp):
    """Axis at ``center`` >= the middle: direct on the left, mirrored opposite on the right."""
    n_cols = direct.shape[-1]
    two_c = 2.0 * center
    width = int(math.floor(two_c + 1e-9)) + 1
    frac = two_c - (width - 1)
    u = np.arange(width)
    # mirrored opposite at output column u comes from detector column 2c - u
    j0 = (width - 1) - u
    mirror_valid = (j0 >= 0) & (j0 + (frac > 1e-9) <= n_cols - 1)
    j0c = np.clip(j0, 0, n_cols - 1)
    direct_valid = u <= n_cols - 1
    if frac > 1e-9:
        opposite = _fractional_shift(opposite, frac, xp)
    mirrored = opposite[..., xp.asarray(j0c)]
    overlap = np.nonzero(direct_valid & mirror_valid)[0]
    w_mirror = np.where(direct_valid, 0.0, 1.0)
    if overlap.size:
        u0, u1 = overlap[0], overlap[-1]
        middle = 0.5 * (u0 + u1)
        span = (u1 - u0 + 1) if blend is None else float(blend)
        if span > 0:
            t = np.clip((u[overlap] - middle) / span + 0.5, 0.0, 1.0)
        else:
            t = (u[overlap] > middle).astype(float)
        w_mirror[overlap] = t
    w_mirror = np.where(mirror_valid, w_mirror, 0.0)
    w = xp.asarray(w_mirror.astype(np.float32))
    padded = xp.zeros(direct.shape[:-1] + (width,), dtype=direct.dtype)
    n_direct = min(width, n_cols)
    padded[..., :n_direct] = direct[..., :n_direct]
    out = (1 - w) * padded + w * mirrored
    return out.astype(direct.dtype, copy=False)


def stitch_half_acquisition(sino_360_or_projections, angles, *, center: float,
                            blend: float | None = None):
    """Stitch a 360° half-acquisition scan into a 180° sinogram about twice as wide.

    Parameters
    ----------
    sino_360_or_projections : ndarray (angle, col) or (angle, row, col), numpy or cupy
        Line integrals over 360° (stitch after ``-log``: the blend of two
        measurements of the same ray is then an average of line integrals).
    angles : array_like (angle,)
        Radians, covering 360°. Where no projection lies exactly 180° from
        one of the first half-turn, the opposite is interpolated linearly in
        angle.
    center : float
        Detector column of the rotation axis (e.g. from :func:`find_overlap`).
    blend : float, optional
        Width in pixels of the linear ramp from one projection to the other,
        centred in the overlap (default: the whole overlap; 0: a hard cut in
        its middle).

    Returns
    -------
    stitched : ndarray (angle, [row,] col) float32
        The 180° sinogram(s), ``floor(2 c) + 1`` columns wide for an axis on
        the right (``floor(2 (W - 1 - c)) + 1`` on the left).
    angles_180 : ndarray
        The angles of the first half-turn.
    center : float
        The axis column in the stitched sinogram (its middle).

    Notes
    -----
    Where ``2 c`` is not an integer the mirrored half falls between pixels;
    it is resampled by a Fourier phase ramp (sinc interpolation), which on a
    simulated scan kept the reconstruction error within 2 % of a full-width
    scan's, where linear interpolation added 10 to 25 %.

    Examples
    --------
    >>> from tomolab.data.phantom import Cylinder, project_slice
    >>> angles = np.linspace(0, 2 * np.pi, 120, endpoint=False)
    >>> disk = [Cylinder(-20, 5, -1, 1, 25, 25, 0, 1.0)]
    >>> sino = project_slice(disk, angles, np.arange(48), [0.0], center=40.0)[:, 0]
    >>> wide, angles_180, c = stitch_half_acquisition(sino, angles, center=40.0)
    >>> full = project_slice(disk, angles_180, np.arange(81), [0.0], center=40.0)[:, 0]
    >>> wide.shape, c, bool(np.allclose(wide, full, atol=1e-4))
    ((60, 81), 40.0, True)
    """
    xp = array_module(sino_360_or_projections)
    data = xp.asarray(sino_360_or_projections)
    if data.dtype not in (np.float32, np.float64):
        data = data.astype(xp.float32)
    if data.ndim not in (2, 3):
        raise ParameterError("expected (angle, col) or (angle, row, col)",
                             where="sino_360_or_projections", value=tuple(data.shape),
                             fix="pass line integrals of a 360° scan")
    n_cols = data.shape[-1]
    try:
        center = float(center)
    except (TypeError, ValueError):
        center = float("nan")
    if not np.isfinite(center) or not 0.0 <= center <= n_cols - 1:
        raise ParameterError("the rotation axis must lie on the detector", where="center",
                             value=center, fix=f"pass a column between 0 and {n_cols - 1}, e.g. "
                                               "from find_overlap")
    if blend is not None and not (np.isfinite(blend) and blend >= 0):
        raise ParameterError("blend width must be >= 0 pixels", where="blend", value=blend,
                             fix="pass None (the whole overlap), 0 (a hard cut) or a width")
    first, lower, upper, weight = opposite_projections(angles)
    direct = data[xp.asarray(first)]
    opposite = _opposite(data, lower, upper, weight, xp)
    angles_180 = np.asarray(angles, dtype=np.float64)[first]
    if center >= (n_cols - 1) / 2.0:
        out = _stitch_right(direct, opposite, center, blend, xp)
        new_center = center
    else:
        mirrored_center = n_cols - 1 - center
        out = _stitch_right(direct[..., ::-1], opposite[..., ::-1], mirrored_center, blend, xp)
        out = xp.ascontiguousarray(out[..., ::-1])
        new_center = out.shape[-1] - 1 - mirrored_center
    return out.astype(xp.float32, copy=False), angles_180, float(new_center)
