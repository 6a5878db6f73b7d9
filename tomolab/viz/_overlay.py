"""The centre by eye: the 0° projection over the mirrored 180° one, shifted until they agree.

A voxel at ``X`` from the axis projects at 0° onto column ``c + X`` and at
180° onto ``c - X``; mirrored (column ``j`` to ``n - 1 - j``), the 180°
projection puts it at ``n - 1 - c + X``. Shifting the mirror by ``s``
columns lays it onto the 0° projection when ``s = 2 c - (n - 1)``, so

    centre = (n - 1) / 2 + shift / 2

(:func:`center_from_shift`), the same relation
:func:`tomolab.center.find_center_phase_correlation` solves by registration.
"""

from __future__ import annotations

import numpy as np

__all__ = ["center_from_shift", "mirror_overlay", "opposite_projections", "shift_from_center"]


def center_from_shift(n_cols: int, shift: float) -> float:
    """The rotation centre (detector column) that a mirror shift of ``shift`` columns means.

    Examples
    --------
    >>> center_from_shift(64, 0.0), center_from_shift(64, 3.0)
    (31.5, 33.0)
    """
    return (int(n_cols) - 1) / 2.0 + float(shift) / 2.0


def shift_from_center(n_cols: int, center: float) -> float:
    """The mirror shift that lays the 180° projection onto the 0° one for ``center``.

    Examples
    --------
    >>> shift_from_center(64, 33.0)
    3.0
    """
    return 2.0 * float(center) - (int(n_cols) - 1)


def opposite_projections(scan, *, rows=None, backend: str = "numpy"):
    """Line integrals of the first projection and the one 180° from it, as ``(angle, row, col)``.

    Flat/dark corrected and log-converted as for reconstruction
    (:func:`tomolab.engine.line_integrals`); ``rows`` (a slice, default all)
    limits what is read. Raises :class:`tomolab.errors.ParameterError` when
    the scan has no two projections 180° apart (within one angular step).

    Examples
    --------
    >>> import tomolab
    >>> scan = tomolab.data.simulate_scan(32, n_rows=2, n_angles=60)
    >>> pair = opposite_projections(scan)
    >>> pair.dims, pair.sizes["angle"]
    (('angle', 'row', 'col'), 2)
    """
    import xarray as xr

    from tomolab.arrays import to_numpy
    from tomolab.center import opposite_pair
    from tomolab.engine import line_integrals

    i, j = opposite_pair(scan["angle"].values)
    rows = slice(0, int(scan.sizes["row"])) if rows is None else rows
    pair = scan.isel(angle=[i, j])
    data = to_numpy(line_integrals(pair, rows, backend=backend))  # (angle, row, col)
    data = np.asarray(data, dtype=np.float32)
    return xr.DataArray(
        data, dims=("angle", "row", "col"),
        coords={"angle": ("angle", pair["angle"].values, {"units": "rad"}),
                "row": np.arange(int(scan.sizes["row"]))[rows],
                "col": np.arange(int(scan.sizes["col"]))},
        attrs={"units": "line integral", "projection_indices": (i, j)})


def mirror_overlay(projection_0, projection_180, shift: float):
    """``projection_0`` minus the mirrored ``projection_180`` shifted by ``shift`` columns.

    Near zero everywhere at the right shift; a feature that shows twice
    (dark beside bright) says which way to move. The shift is sub-pixel
    (linear interpolation); columns brought in from beyond the edge repeat
    the edge.

    Examples
    --------
    >>> import numpy as np
    >>> p0 = np.zeros((1, 16)); p0[0, 9] = 1.0           # a point 3 columns right of 6
    >>> p180 = np.zeros((1, 16)); p180[0, 3] = 1.0       # ... and 3 columns left of it
    >>> float(abs(mirror_overlay(p0, p180, shift_from_center(16, 6.0))).max())
    0.0
    """
    from scipy import ndimage

    a = np.atleast_2d(np.asarray(projection_0, dtype=np.float64))
    b = np.atleast_2d(np.asarray(projection_180, dtype=np.float64))[:, ::-1]
    moved = ndimage.shift(b, (0, float(shift)), order=1, mode="nearest")
    return (a - moved).astype(np.float32)
