"""Zinger (bright outlier) removal against a local median."""

from __future__ import annotations

import numpy as np

from tomolab.arrays import array_module, ndimage_module
from tomolab.checks import check_choice, check_int, check_ndim, check_positive

__all__ = ["remove_zingers"]


def remove_zingers(projections, *, threshold=0.1, size=3, mode="relative"):
    """Replace zingers (bright outliers) by the local median.

    Each projection is median filtered in 2D (``size x size`` window over
    rows and columns, reflected at the borders; projections are never
    mixed), and a pixel is replaced by that median where it exceeds it by
    more than the threshold:

    - ``mode="relative"`` (default): ``x - median > threshold * |median|``;
      scale-free, for raw counts and normalised data alike.
    - ``mode="absolute"``: ``x - median > threshold``, in the units of the
      data (e.g. counts, or transmission after normalisation).

    Every other pixel is returned unchanged (bit for bit). Only bright
    outliers are touched: zingers add charge, they never remove it.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, col) or (row, col)
        Projections (raw or normalised), numpy or cupy.
    threshold : float, keyword-only
        How far above the median a pixel must be to count as a zinger
        (relative fraction or absolute, see ``mode``). Default 0.1.
    size : int, keyword-only
        Width of the median window in pixels (>= 3; odd widths are centred).
        It must be wider than twice the largest zinger. Default 3.
    mode : {"relative", "absolute"}, keyword-only
        How ``threshold`` is read.

    Returns
    -------
    ndarray
        Same shape, dtype and array module as ``projections``.

    Examples
    --------
    >>> import numpy as np
    >>> img = np.full((5, 5), 100, dtype=np.uint16)
    >>> img[2, 2] = 4000
    >>> out = remove_zingers(img, threshold=0.5)
    >>> int(out[2, 2]), bool((out == 100).all())
    (100, True)
    """
    check_ndim(projections, "projections", (2, 3), "(angle, row, col) or (row, col)")
    threshold = check_positive(threshold, "threshold", "pass e.g. threshold=0.1 (relative) "
                               "or a value in data units with mode='absolute'")
    size = check_int(size, "size", 3, "pass an odd window width such as 3 or 5")
    mode = check_choice(mode, ("relative", "absolute"), where="mode")
    xp = array_module(projections)
    ndi = ndimage_module(xp)

    window = (size, size) if projections.ndim == 2 else (1, size, size)
    median = ndi.median_filter(projections, size=window, mode="reflect")
    # compare in floating point: differences of unsigned integers wrap around
    work = np.result_type(projections.dtype, np.float32)
    x = projections.astype(work, copy=False)
    m = median.astype(work, copy=False)
    limit = threshold * xp.abs(m) if mode == "relative" else work.type(threshold)
    return xp.where(x - m > limit, median, projections)
