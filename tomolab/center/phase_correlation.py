"""Centre of rotation from a pair of opposite projections (0° and 180°).

The projection at ``theta + 180°`` is the mirror image of the one at ``theta``
about the axis, so mirroring one and registering it onto the other by
sub-pixel phase correlation gives twice the axis' distance from the detector
middle.
"""

from __future__ import annotations

import numpy as np

from tomolab.arrays import to_numpy
from tomolab.errors import ParameterError

__all__ = ["opposite_pair", "find_center_phase_correlation"]


def opposite_pair(angles, *, tolerance: float | None = None) -> tuple[int, int]:
    """Indices ``(i, j)`` of two projections 180° apart (as close as the angles allow).

    Raises
    ------
    tomolab.errors.ParameterError
        When no two angles are within ``tolerance`` of 180° apart (default: one
        angular step).
    """
    angles = np.asarray(angles, float)
    if angles.size < 2:
        raise ParameterError("need at least two projections", where="angles", value=angles.size,
                             fix="use a scan with projections over 180°")
    step = np.median(np.abs(np.diff(angles)))
    tolerance = 1.01 * step if tolerance is None else tolerance
    i = int(np.argmin(angles))
    j = int(np.argmin(np.abs(angles - angles[i] - np.pi)))
    if abs(angles[j] - angles[i] - np.pi) > tolerance:
        span = np.degrees(angles.max() - angles.min())
        fix = ('use method="vo" or a scan that covers at least 180°' if span >= 180 - 1.5 *
               np.degrees(step) else 'a scan of less than 180° has no opposite projections: find its '
               'centre with method="centroid" (or "auto", which picks it), or pass the centre')
        raise ParameterError("no pair of projections 180° apart", where="angles",
                             value=f"{span:.1f}° span", fix=fix)
    return i, j


def find_center_phase_correlation(projection_0, projection_180, *, upsample: int = 50):
    """Find the axis from two opposite projections.

    Parameters
    ----------
    projection_0, projection_180 : ndarray (row, col) or (col,)
        Line-integral (or normalised) projections 180° apart.
    upsample : int
        Sub-pixel precision is ``1 / upsample`` pixel.

    Returns
    -------
    center : float
        Detector column of the axis.
    score : float
        Correlation coefficient between the first projection and the
        registered mirror of the second (1 = perfect agreement). Below
        :data:`tomolab.center.LOW_SCORE` the two do not match: the pair is not
        180° apart, the sample moved, or the projections are mostly noise.

    Examples
    --------
    >>> import numpy as np
    >>> from tomolab.data.phantom import default_phantom, project_slice
    >>> p = project_slice(default_phantom(96, 8, radius_fraction=0.35), [0.0, np.pi],
    ...                   np.arange(96), np.arange(8) - 3.5, center=41.7)
    >>> center, score = find_center_phase_correlation(p[0], p[1])
    >>> abs(center - 41.7) < 0.1, score > 0.9
    (True, True)
    """
    from scipy import ndimage
    from skimage.registration import phase_cross_correlation

    a = np.atleast_2d(to_numpy(projection_0)).astype(np.float64)
    b = np.atleast_2d(to_numpy(projection_180)).astype(np.float64)[:, ::-1]
    n_cols = a.shape[-1]
    shift, _, _ = phase_cross_correlation(a, b, upsample_factor=upsample, normalization=None)
    d = float(shift[-1])
    center = (n_cols - 1 + d) / 2.0
    registered = ndimage.shift(b, (0, d), order=1, mode="nearest")
    valid = slice(int(np.ceil(abs(d))) + 1, n_cols - int(np.ceil(abs(d))) - 1)
    x, y = a[:, valid].ravel(), registered[:, valid].ravel()
    denom = x.std() * y.std()
    score = float(np.clip(np.mean((x - x.mean()) * (y - y.mean())) / denom, 0.0, 1.0)) if denom > 0 else 0.0
    return center, score
