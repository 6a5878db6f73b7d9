"""Centre of rotation from the sinogram's centre of mass: works on any angular range.

The centre of mass of a slice at ``(X0, Y0)`` from the axis projects at
angle ``θ`` onto the column ``c + X0 cos θ + Y0 sin θ`` (the geometry of
:func:`tomolab.recon.backproject`). So the centroid of each projection, the
column weighted by its line integral, traces that curve, and a linear least
squares fit of ``[1, cos θ, sin θ]`` over the angles gives the axis column
``c`` (a consistency condition of the Radon transform, Helgason-Ludwig of
order one). It needs neither opposite projections nor 180°: over a range of
``Δ`` the constant and the cosine differ by the curve's bend, so the answer
holds from about 30° on and sharpens fast as the range grows (its standard
error, from the fit's residuals, is the score).

Its assumption is that the whole sample is inside the field of view at every
angle: its total attenuation (each projection's sum, order zero of the same
conditions) is then the same at every angle. A sample wider than the
detector, or one that leaves it, breaks that, and the score says so.

On limited-angle scans this is the method to use: the sharpness of trial
slices (:func:`tomolab.sweep_center`) hardly changes with the centre there,
because over a narrow range a wrong centre mostly moves the sample instead of
blurring it (simulated 120° scans of 128 columns: the entropy peak 0.4 to 2 px
off, the centroid fit within 0.15 px).
"""

from __future__ import annotations

import numpy as np

from tomolab.arrays import to_numpy
from tomolab.errors import ParameterError

__all__ = ["find_center_centroid", "centroid_fit", "CentroidFit", "UNCERTAINTY_SCALE",
           "MASS_TOLERANCE"]

#: the score is 1/2 when the centre's 2-σ uncertainty is this many pixels
UNCERTAINTY_SCALE = 0.5
#: the score is halved when the total attenuation varies by this fraction over the angles
MASS_TOLERANCE = 0.03
#: columns whose attenuation stays below this fraction of the sinogram's maximum are air
AIR_FRACTION = 0.05


class CenterScore(tuple):
    """A ``(center, score)`` pair that also reads as ``.center`` and ``.score``.

    Unpacks as a pair (``center, score = estimate``); subclasses add what the
    method saw.

    Examples
    --------
    >>> estimate = CenterScore((63.5, 0.9))
    >>> estimate.center, estimate.score
    (63.5, 0.9)
    """

    __slots__ = ()

    @property
    def center(self) -> float:
        return self[0]

    @property
    def score(self) -> float:
        return self[1]


class CentroidFit(CenterScore):
    """``(center, score)`` of :func:`centroid_fit`, with what the fit saw.

    Attributes
    ----------
    uncertainty : float
        Standard error of the centre (pixels), from the fit's residuals.
    mass_variation : float
        Standard deviation of the projections' total attenuation over its
        mean (about 0.01 when the sample stays inside the field of view).
    mass_center : tuple of float
        ``(X0, Y0)``: the slice's centre of mass from the axis, in pixels.
    air_columns : int
        Columns outside the sample at every angle (their mean is each
        projection's baseline).
    """

    def __new__(cls, center, score, *, uncertainty, mass_variation, mass_center, air_columns):
        self = super().__new__(cls, (float(center), float(score)))
        self.uncertainty = float(uncertainty)
        self.mass_variation = float(mass_variation)
        self.mass_center = tuple(float(v) for v in mass_center)
        self.air_columns = int(air_columns)
        return self



def centroid_fit(sinogram, angles) -> CentroidFit:
    """Fit ``c + X0 cos θ + Y0 sin θ`` to the centroid of each projection.

    Parameters
    ----------
    sinogram : ndarray (angle, col) or (angle, row, col), numpy or cupy
        Line integrals (0 in air); rows are summed.
    angles : array_like (angle,)
        Radians; any range, any spacing.

    Returns
    -------
    CentroidFit
        ``(center, score)``: the detector column of the axis and a score in
        [0, 1]: ``1 / (1 + (2 σ / 0.5 px)²)`` for the centre's standard
        error ``σ``, times ``1 / (1 + (v / 0.03)²)`` for the relative
        variation ``v`` of the total attenuation over the angles (a sample
        leaving the field of view). Details in its attributes.

    Raises
    ------
    tomolab.errors.ParameterError
        With fewer than five projections, or when no column is air at every
        angle (the sample fills the detector, so its centroid is unknown).
    """
    from scipy import ndimage

    sino = np.asarray(to_numpy(sinogram), dtype=np.float64)
    if sino.ndim == 3:
        sino = sino.sum(axis=1)
    theta = np.asarray(angles, dtype=np.float64).ravel()
    if sino.ndim != 2 or sino.shape[0] != theta.size:
        raise ParameterError("one projection row per angle is needed", where="sinogram",
                             value=f"shape {sino.shape} for {theta.size} angles",
                             fix="pass line integrals (angle, col) or (angle, row, col)")
    if theta.size < 5:
        raise ParameterError("the centroid fit needs five or more projections", where="angles",
                             value=theta.size, fix="pass the centre (center=COLUMN)")
    n_cols = sino.shape[1]
    # a row that misses the sample holds noise only: its mean over the angles is flat across
    # the columns to within the noise (a row through the sample, even one that fills the
    # detector, varies with the sample's thickness)
    noise = 1.4826 * float(np.median(np.abs(np.diff(sino, axis=0)))) / np.sqrt(2)
    if np.ptp(sino.mean(axis=0)) <= 8 * noise / np.sqrt(theta.size):
        raise ParameterError("no sample in this row: its projections hold only noise",
                             where="sinogram", value=f"{theta.size} projections",
                             fix="use a row through the sample, or pass center=COLUMN")
    # where the sample is at some angle: smoothed along angles and columns against noise
    smooth = ndimage.gaussian_filter(sino, (min(2.0, theta.size / 8), 1.0), mode="nearest")
    profile = np.abs(smooth).max(axis=0)
    inside = np.flatnonzero(profile >= AIR_FRACTION * profile.max())
    if inside.size == 0:
        raise ParameterError("the projections are empty (no attenuation)", where="sinogram",
                             value=None, fix="check the flat-field correction, or pass "
                                             "center=COLUMN")
    lo, hi = max(0, inside[0] - 2), min(n_cols - 1, inside[-1] + 2)
    air = np.ones(n_cols, bool)
    air[lo:hi + 1] = False
    if not air.any():
        raise ParameterError("the sample fills the detector at some angle, so its centre of "
                             "mass is unknown", where="sinogram", value=f"{n_cols} columns",
                             fix="pass the centre (center=COLUMN), or for a scan over 180° use "
                                 "method='vo'")
    sino = sino - sino[:, air].mean(axis=1, keepdims=True)  # the beam's drift
    columns = np.arange(lo, hi + 1, dtype=np.float64)
    weights = sino[:, lo:hi + 1]
    mass = weights.sum(axis=1)
    if not np.all(mass > 0):
        raise ParameterError("a projection has no attenuation above the air around it",
                             where="sinogram", value=f"angle index {int(np.argmin(mass))}",
                             fix="check the flat-field correction, or pass center=COLUMN")
    centroid = (weights * columns).sum(axis=1) / mass
    design = np.stack([np.ones_like(theta), np.cos(theta), np.sin(theta)], axis=1)
    coef, *_ = np.linalg.lstsq(design, centroid, rcond=None)
    residual = centroid - design @ coef
    dof = max(1, theta.size - 3)
    normal = design.T @ design
    try:
        variance = float(np.linalg.inv(normal)[0, 0]) * float(residual @ residual) / dof
    except np.linalg.LinAlgError:
        variance = np.inf
    uncertainty = float(np.sqrt(variance)) if np.isfinite(variance) and \
        np.linalg.cond(normal) < 1e12 else np.inf
    variation = float(mass.std() / mass.mean())
    score = (1.0 / (1.0 + (2.0 * uncertainty / UNCERTAINTY_SCALE) ** 2)) \
        * (1.0 / (1.0 + (variation / MASS_TOLERANCE) ** 2))
    return CentroidFit(coef[0], score, uncertainty=uncertainty, mass_variation=variation,
                       mass_center=coef[1:], air_columns=int(air.sum()))


def find_center_centroid(sinogram, angles):
    """Find the axis from the projections' centres of mass (any angular range).

    Parameters
    ----------
    sinogram : ndarray (angle, col) or (angle, row, col), numpy or cupy
        Line integrals (0 in air) of a sample inside the field of view.
    angles : array_like (angle,)
        Radians: a ±60° tilt series, 0°–120°, sparse angles, a full turn.

    Returns
    -------
    center : float
        Detector column of the axis.
    score : float
        In [0, 1] (see :func:`centroid_fit`): about 0.9 on a clean 90° scan,
        below :data:`tomolab.center.LOW_SCORE` when the centre is uncertain
        by more than about ±0.7 px or the sample leaves the field of view.

    Examples
    --------
    >>> import numpy as np
    >>> from tomolab.data.phantom import default_phantom, project_slice
    >>> angles = np.radians(np.arange(-60.0, 61.0))                    # a ±60° tilt series
    >>> sino = project_slice(default_phantom(96, 8, radius_fraction=0.35), angles,
    ...                      np.arange(96), [0.0], center=52.3)[:, 0]
    >>> center, score = find_center_centroid(sino, angles)
    >>> abs(center - 52.3) < 0.1, score > 0.9
    (True, True)
    """
    return tuple(centroid_fit(sinogram, angles))
