"""A rotation axis that is tilted or drifts with height: a line through per-row centres.

Centres found at several detector rows are fitted by weighted least squares
with ``center(row) = intercept + slope * row`` (weights: the centre finder's
scores). Rows that disagree with the line by far more than the others are
left out once and the line refitted; a fit whose residuals stay large is
flagged, because then the axis is not a line (the sample moved, or some
centres are wrong) and a sweep should be looked at.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from tomolab.errors import ParameterError

__all__ = ["AxisFit", "fit_axis"]


@dataclass(frozen=True, eq=False)
class AxisFit:
    """A straight rotation axis over the detector: ``center(row) = intercept + slope * row``.

    Attributes
    ----------
    intercept, slope : float
        Pixels, and pixels per row.
    rows, centers, scores : ndarray
        The measurements the line was fitted to.
    used : ndarray of bool
        Which measurements the final fit used (outliers are left out).
    residual_rms : float
        Root-mean-square distance (pixels) of the used centres from the line,
        weighted as in the fit.
    suspect : bool
        True when ``residual_rms`` exceeds ``max_residual`` or outliers were
        dropped: check the centres with a sweep at those rows.
    max_residual : float
        The threshold used for ``suspect`` (pixels).
    method : str
        The centre-finding method that measured the rows (``""`` when not
        known, e.g. centres passed to :func:`fit_axis` by hand).
    """

    intercept: float
    slope: float
    rows: np.ndarray
    centers: np.ndarray
    scores: np.ndarray
    used: np.ndarray
    residual_rms: float
    suspect: bool
    max_residual: float
    method: str = ""

    def center(self, row):
        """Axis column at detector ``row`` (scalar or array).

        Examples
        --------
        >>> fit = fit_axis([0, 50, 100], [60.0, 61.0, 62.0])
        >>> round(float(fit.center(25)), 6), fit.center(np.array([0, 100])).round(6).tolist()
        (60.5, [60.0, 62.0])
        """
        return self.intercept + self.slope * np.asarray(row, dtype=np.float64)

    @property
    def tilt_degrees(self) -> float:
        """Angle of the axis from the detector's columns: ``atan(slope)`` in degrees
        (positive when the axis moves to higher columns down the rows)."""
        return math.degrees(math.atan(self.slope))

    @property
    def residuals(self) -> np.ndarray:
        """Measured minus fitted centre at each row, in pixels."""
        return self.centers - self.center(self.rows)

    def as_attrs(self) -> dict:
        """The fit as flat attributes (for xarray attrs or files)."""
        return {"axis_intercept": self.intercept, "axis_slope": self.slope,
                "axis_tilt_degrees": self.tilt_degrees, "axis_residual_rms": self.residual_rms,
                "axis_rows": self.rows.tolist(), "axis_centers": self.centers.tolist(),
                "axis_scores": self.scores.tolist(), "axis_suspect": int(self.suspect),
                "axis_method": self.method}


def _weighted_line(rows, centers, weights):
    w = weights / weights.sum()
    r0 = (w * rows).sum()
    c0 = (w * centers).sum()
    spread = (w * (rows - r0) ** 2).sum()
    slope = (w * (rows - r0) * (centers - c0)).sum() / spread if spread > 0 else 0.0
    intercept = c0 - slope * r0
    rms = math.sqrt((w * (centers - intercept - slope * rows) ** 2).sum())
    return float(intercept), float(slope), rms


def fit_axis(rows, centers=None, scores=None, *, max_residual: float = 0.5) -> AxisFit:
    """Fit a straight axis through centres measured at several rows.

    Parameters
    ----------
    rows : array_like or dict
        Detector rows of the measurements; or a dict mapping each row to its
        centre, or to a pair (centre, score).
    centers : array_like, optional
        Centre columns at those rows (not needed with a dict).
    scores : array_like, optional
        Trust in each centre, e.g. :func:`tomolab.find_center`'s score (weights
        of the fit; default all 1). Rows with score 0 are ignored.
    max_residual : float
        RMS residual (pixels) above which the fit is flagged ``suspect``.

    Returns
    -------
    AxisFit

    Examples
    --------
    >>> fit = fit_axis({10: (50.2, 0.8), 60: (52.7, 0.9), 110: (55.2, 0.7)})
    >>> round(fit.slope, 3), round(float(fit.center(0)), 2), fit.suspect
    (0.05, 49.7, False)
    >>> round(fit.tilt_degrees, 2)
    2.86
    """
    if isinstance(rows, dict):
        items = sorted(rows.items())
        rows = [r for r, _ in items]
        values = [v for _, v in items]
        if values and np.ndim(values[0]) == 1:
            centers = [v[0] for v in values]
            scores = [v[1] for v in values] if scores is None else scores
        else:
            centers = values
    if centers is None:
        raise ParameterError("centres are missing", where="centers", value=None,
                             fix="pass fit_axis(rows, centers) or a dict {row: center}")
    rows = np.asarray(rows, dtype=np.float64).ravel()
    centers = np.asarray(centers, dtype=np.float64).ravel()
    scores = np.ones_like(centers) if scores is None else np.asarray(scores, np.float64).ravel()
    if not rows.size == centers.size == scores.size:
        raise ParameterError("rows, centres and scores must have the same length",
                             where="centers", value=(rows.size, centers.size, scores.size),
                             fix="pass one centre (and score) per row")
    good = np.isfinite(rows) & np.isfinite(centers) & np.isfinite(scores) & (scores > 0)
    if np.unique(rows[good]).size < 2:
        raise ParameterError("a line needs centres at two or more different rows with a "
                             "positive score", where="rows", value=rows.tolist(),
                             fix="measure the centre at more rows (find_axis uses 9 by default)")
    used = good.copy()
    intercept, slope, rms = _weighted_line(rows[used], centers[used], scores[used])
    # leave out, once, rows far off the line (a wrong centre, not a drift)
    if used.sum() >= 4:
        residual = np.abs(centers - intercept - slope * rows)
        typical = np.median(residual[used])
        far = used & (residual > max(4.0 * 1.4826 * typical, 2.0 * max_residual))
        if far.any() and (used & ~far).sum() >= 3 and np.unique(rows[used & ~far]).size >= 2:
            used &= ~far
            intercept, slope, rms = _weighted_line(rows[used], centers[used], scores[used])
    suspect = bool(rms > max_residual or (good & ~used).any())
    return AxisFit(intercept=intercept, slope=slope, rows=rows, centers=centers, scores=scores,
                   used=used, residual_rms=float(rms), suspect=suspect,
                   max_residual=float(max_residual))
