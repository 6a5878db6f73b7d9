"""Filtered backprojection (FBP) for parallel-beam scans, on numpy or cupy arrays."""

from __future__ import annotations

import numpy as np

from tomolab.arrays import array_module
from tomolab.errors import ParameterError
from tomolab.recon.backproject import backproject
from tomolab.recon.filters import filter_sinograms

__all__ = ["fbp", "fbp_centers", "fbp_bytes"]


def fbp(sinograms, angles, *, center: float, filter: str = "ramp", size: int | None = None,
        pad_mode: str = "edge", kernel: str = "auto", common_center: float | None = None):
    """Reconstruct slices from line-integral sinograms by filtered backprojection.

    Parameters
    ----------
    sinograms : ndarray (z, angle, col), numpy or cupy
        Line integrals (after flat-field correction and ``-log``).
    angles : array_like (angle,)
        Radians, uniformly covering 180° or 360°.
    center : float or array_like (z,)
        Detector column of the rotation axis, in pixels; or one per slice (a
        tilted axis): each sinogram is then shifted to a common centre by a
        phase ramp in the filter, so every slice is centred on its own axis.
    filter : str
        ``ramp``, ``shepp-logan``, ``cosine``, ``hamming``, ``hann`` or ``parzen``.
    size : int, optional
        Output grid width (default: the detector width). The axis is at the
        grid's middle, ``(size - 1) / 2``.
    pad_mode : {"edge", "constant"}
        Detector padding before filtering.
    kernel : str
        GPU backprojection kernel (see :func:`tomolab.recon.backproject`).
    common_center : float, optional
        With one centre per slice, the column every sinogram is shifted to
        before one backprojection (default: their mean). Give the same value
        for every slab of a volume, so the result does not depend on how the
        volume is cut into slabs.

    Returns
    -------
    ndarray (z, size, size) float32
        Attenuation per pixel of path, on the same device as ``sinograms``.

    Examples
    --------
    >>> import numpy as np
    >>> from tomolab.data.phantom import Cylinder, project_slice
    >>> angles = np.linspace(0, np.pi, 180, endpoint=False)
    >>> disk = [Cylinder(0, 0, -1, 1, 20, 20, 0, 0.01)]
    >>> sino = project_slice(disk, angles, np.arange(64), [0.0], center=31.5)
    >>> img = fbp(sino.transpose(1, 0, 2).astype(np.float32), angles, center=31.5)
    >>> round(float(img[0, 28:36, 28:36].mean()), 3)
    0.01
    """
    xp = array_module(sinograms)
    sinograms = xp.asarray(sinograms, dtype=xp.float32)
    angles, size = _check_stack(sinograms, angles, size, pad_mode)
    centers = np.asarray(center, dtype=np.float64)
    if centers.ndim == 0 or np.all(centers == centers.flat[0]):
        filtered = filter_sinograms(sinograms, filter=filter, pad_mode=pad_mode)
        common = float(centers.flat[0])
    else:
        centers = _slice_centers(centers, sinograms.shape[0])
        common = float(centers.mean() if common_center is None else common_center)
        filtered = filter_sinograms(sinograms, filter=filter, pad_mode=pad_mode, center=centers,
                                    to_column=common)
    return _backproject_scaled(filtered, angles, center=common, size=size, kernel=kernel)


def fbp_bytes(n_slices: int, *, n_angles: int, n_cols: int, size: int) -> int:
    """Working memory of :func:`fbp` on ``n_slices`` float32 sinograms, the input included.

    The sinograms, their padded copies with the complex64 spectrum and its
    filtered copy, the filtered sinograms and the slices, counted as if all
    were alive at once (the measured peak is below: the estimate errs on the
    safe side). ``gridrec`` stays within it on the CPU.

    Examples
    --------
    >>> fbp_bytes(1, n_angles=1000, n_cols=1000, size=1000) / 1e6
    36.592
    """
    from tomolab.recon.filters import padded_width

    n_pad = padded_width(n_cols)
    per_sinogram = n_angles * (n_cols * 4 + n_pad * 4 + (n_pad // 2 + 1) * 8 * 2 + n_cols * 4)
    return int(n_slices * (per_sinogram + size * size * 4))


def fbp_centers(sinogram, angles, centers, *, filter: str = "ramp", size: int | None = None,
                pad_mode: str = "edge", kernel: str = "auto", out=None):
    """Reconstruct one sinogram at each of several trial centres, in one batched operation.

    Each centre is folded into the filter as a phase ramp that moves it to
    the detector's middle, ``(n_cols - 1) / 2``: one forward FFT of the
    sinogram, one batched inverse FFT that yields every shifted, filtered
    sinogram, and one backprojection in which the centres play the part of
    slices. Slice ``i`` is :func:`fbp` of the sinogram with ``center=centers[i]``
    (to within the interpolation of the shift), with that axis at the middle
    of the grid.

    Parameters
    ----------
    sinogram : ndarray (angle, col), numpy or cupy
        Line integrals of one detector row.
    angles : array_like (angle,)
        Radians.
    centers : array_like (k,)
        Trial centre columns, in pixels.
    filter, size, pad_mode, kernel : as for :func:`fbp`
    out : ndarray (k, size, size) float32, optional
        Where to write the slices (on the device of ``sinogram``).

    Returns
    -------
    ndarray (k, size, size) float32
        Attenuation per pixel of path, on the same device as ``sinogram``.

    Examples
    --------
    >>> import numpy as np
    >>> from tomolab.data.phantom import Cylinder, project_slice
    >>> angles = np.linspace(0, np.pi, 180, endpoint=False)
    >>> disk = [Cylinder(0, 0, -1, 1, 20, 20, 0, 0.01)]
    >>> sino = project_slice(disk, angles, np.arange(64), [0.0], center=31.5)[:, 0]
    >>> stack = fbp_centers(sino.astype(np.float32), angles, [29.5, 31.5])
    >>> stack.shape, round(float(stack[1, 28:36, 28:36].mean()), 3)
    ((2, 64, 64), 0.01)
    """
    xp = array_module(sinogram)
    sinogram = xp.asarray(sinogram, dtype=xp.float32)
    if sinogram.ndim != 2:
        raise ParameterError("one sinogram (angle, col) is needed", where="sinogram",
                             value=tuple(sinogram.shape), fix="select one detector row")
    angles, size = _check_stack(sinogram[None], angles, size, pad_mode)
    nominal = (sinogram.shape[1] - 1) / 2.0
    centers = np.atleast_1d(np.asarray(centers, dtype=np.float64))
    filtered = filter_sinograms(sinogram, filter=filter, pad_mode=pad_mode, centers=centers,
                                to_column=nominal)
    return _backproject_scaled(filtered, angles, center=nominal, size=size, kernel=kernel, out=out)


def _backproject_scaled(filtered, angles, *, center: float, size: int, kernel: str, out=None):
    """Backproject filtered sinograms and scale the sum by the angle step: attenuation per pixel."""
    out = backproject(filtered, angles, center=center, size=size, out=out, kernel=kernel)
    out *= np.float32(np.pi / angles.size)
    return out


def _check_stack(sinograms, angles, size, pad_mode):
    """The input checks of fbp and gridrec: ``(angles as float64 (angle,), size as int)``."""
    if getattr(sinograms, "ndim", 0) != 3:
        raise ParameterError("sinograms must be a 3D array (z, angle, col)", where="sinograms",
                             value=getattr(sinograms, "shape", None),
                             fix="add a leading axis for a single sinogram: sino[None]")
    angles = np.asarray(angles, dtype=np.float64).ravel()
    _, n_angles, n_cols = sinograms.shape
    if angles.size != n_angles:
        raise ParameterError("one angle per projection is needed", where="angles",
                             value=f"{angles.size} angles for {n_angles} projections",
                             fix="pass the angles of the sinograms' second axis")
    if pad_mode not in ("edge", "constant"):
        raise ParameterError("unknown padding mode", where="pad_mode", value=pad_mode,
                             fix='use "edge" or "constant"')
    size = int(size or n_cols)
    if size < 1:
        raise ParameterError("slice size must be positive", where="size", value=size,
                             fix="omit it (the detector width) or pass a positive int")
    return angles, size


def _slice_centers(center, n_z: int) -> np.ndarray:
    """``center`` as one float64 column per slice, from one value or ``n_z`` of them."""
    centers = np.asarray(center, dtype=np.float64)
    if centers.ndim == 0:
        return np.full(n_z, float(centers))
    if centers.shape != (n_z,):
        raise ParameterError("one centre, or one per slice, is needed", where="center",
                             value=f"{centers.size} values for {n_z} slices",
                             fix="pass a single column, or an array of one per sinogram")
    return centers
