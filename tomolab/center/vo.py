"""Centre of rotation by Vo's Fourier method (Vo, Drakopoulos, Atwood, Rau 2014).

A 180° sinogram stacked on its mirror image, shifted to a trial centre, has an
empty double-wedge region in its 2D Fourier spectrum only when the trial centre
is right. The metric is the mean spectral magnitude in that wedge; its minimum
is the centre. Trial centres are evaluated in batches of batched FFTs, on numpy
or cupy arrays alike; sub-pixel shifts are phase ramps (on a mirror-padded row,
so that the row's ends do not ring), so the search is exact between pixels.

The wedge is narrow along the column frequencies (``|u| <= |v| / (pi * ratio)``
in frequency indices), so only the lowest column frequencies of each stacked
image are transformed along the angles, and, the image being real, only the
non-negative ones (``rfft``): the spectrum's other half is its mirror.
"""

from __future__ import annotations

import math

import numpy as np

from tomolab.arrays import array_module, fft_module, ndimage_module, to_numpy
from tomolab.errors import ParameterError

__all__ = ["vo_metric", "find_center_vo", "estimate_ratio"]

#: most bytes one batch of trial centres may hold (lowered further to what is free)
BATCH_BYTES_CEILING = 384 * 2**20
#: both searches average neighbouring angles down to at most this many (on noisy
#: wide scans fewer angles, i.e. more averaging, found the centre more reliably:
#: 128 beat 256 and 384 on simulated 1000- and 2000-angle scans; clean scans agree
#: to 0.1 px between all three)
FINE_ANGLES = 128
#: the coarse search bins columns down to at most this many
COARSE_COLUMNS = 512
#: rows of the stacked spectrum (lowest angular frequencies) left out of the wedge
ROW_DROP = 10


def estimate_ratio(sinogram, *, threshold: float = 0.05, edge_columns: int = 8) -> float:
    """Ratio of the sample's width to the detector's, from the sinogram.

    The angle-averaged line integral is compared with ``threshold`` times its
    maximum. Where it falls below that inside the detector, the ratio is the
    span from the first to the last column above it, over the detector's
    width. Where the sample covers the whole field of view (both edges above
    the threshold), its width is extrapolated from a disk's profile, whose
    chord at a distance ``t`` from the middle is ``sqrt(1 - (2 t / D)**2)`` of
    the diameter ``D``: with ``e`` the mean of the edge columns over the
    maximum and ``2 t`` the distance between the edge blocks' middles, the
    ratio is ``2 t / W / sqrt(1 - e**2)`` (at least 1.0, at most 4.0).

    Parameters
    ----------
    sinogram : ndarray (angle, col), numpy or cupy
        Line integrals (0 in air).
    threshold : float
        Fraction of the profile's maximum taken as "inside the sample".
    edge_columns : int
        Columns averaged at each edge of the detector.

    Returns
    -------
    float
        Between ``1 / n_cols`` and 4.0; 1.0 where the profile has no positive
        maximum (nothing to measure).

    Examples
    --------
    >>> import numpy as np
    >>> sino = np.zeros((10, 100), np.float32)
    >>> sino[:, 30:70] = 1.0
    >>> estimate_ratio(sino)
    0.4
    >>> t = np.arange(100) - 49.5                     # a disk 1.5 times the detector wide
    >>> disk = np.sqrt(75.0**2 - t**2)[None].repeat(10, axis=0)
    >>> round(estimate_ratio(disk), 2)
    1.5
    """
    profile = np.asarray(to_numpy(array_module(sinogram).asarray(sinogram).mean(axis=0)), float)
    peak = float(profile.max()) if profile.size else 0.0
    if not peak > 0:
        return 1.0
    inside = np.flatnonzero(profile > threshold * peak)
    if inside[0] > 0 or inside[-1] < profile.size - 1:
        return float((inside[-1] - inside[0] + 1) / profile.size)
    edge = min(edge_columns, max(1, profile.size // 4))
    edges = 0.5 * (profile[:edge].mean() + profile[-edge:].mean()) / peak
    span = (profile.size - edge) / profile.size  # the edge blocks' middles, over the width
    return float(np.clip(span / math.sqrt(max(1e-6, 1.0 - min(edges, 1.0) ** 2)), 1.0, 4.0))


def _check_ratio(ratio, sinogram) -> float:
    if ratio is None:
        return estimate_ratio(sinogram)
    if not (isinstance(ratio, (int, float)) and np.isfinite(ratio) and ratio > 0):
        raise ParameterError("the sample-to-detector width ratio must be a positive number",
                             where="ratio", value=ratio,
                             fix="pass e.g. ratio=1.0 for a sample as wide as the detector, "
                                 "or ratio=None to estimate it from the sinogram")
    return float(ratio)


def _half_wedge_weights(n_rows: int, n_cols: int, ratio: float) -> np.ndarray:
    """Weights of the double wedge over the non-negative column frequencies.

    Rows are the stacked image's angular frequencies in FFT order (``n_rows``
    of them, signed), columns the column frequencies ``0, 1, ...`` up to the
    wedge's widest. Each weight is 2 where the frequency's mirror ``(-v, -u)``
    is in the other half of the spectrum, 1 on the Nyquist column; the mean over
    the full spectrum is ``sum(weights * |F|) / (n_rows * n_cols)``.
    """
    radius = 0.5 * ratio * n_cols
    slope = ((n_rows - 1.0) / (n_rows * 2.0 * np.pi)) * n_cols / radius  # Vo's dv / (radius du)
    v = np.abs(np.fft.fftfreq(n_rows) * n_rows)
    drop = min(ROW_DROP, int(np.ceil(0.05 * n_rows)))
    widest = min(n_cols // 2, int(np.ceil(v.max() * slope)))
    u = np.arange(widest + 1)
    inside = (u[None, :] <= v[:, None] * slope) & (u[None, :] > 1) & (v[:, None] > drop)
    mirrored_twice = np.where((n_cols % 2 == 0) & (u == n_cols // 2), 1.0, 2.0)
    return (inside * mirrored_twice[None, :]).astype(np.float32)


def _batch_size(xp, bytes_per_center: int, batch: int | None) -> int:
    if batch is not None:
        if int(batch) < 1:
            raise ParameterError("the batch of trial centres must hold at least one",
                                 where="batch", value=batch,
                                 fix="pass batch=None to size it from free memory")
        return int(batch)
    from tomolab.devices import backend_of, batch_size
    return batch_size(bytes_per_center, backend=backend_of(xp), ceiling=BATCH_BYTES_CEILING)


def vo_metric(sinogram, centers, *, ratio: float | None = None, smooth: bool = True,
              batch: int | None = None):
    """Vo's metric for each trial centre (lower is better).

    Parameters
    ----------
    sinogram : ndarray (angle, col)
        Line integrals over exactly 180° (the first half of a 360° scan).
    centers : array_like
        Trial centre columns, in pixels.
    ratio : float, optional
        Ratio of the sample's width to the detector's; sets the wedge size.
        None estimates it with :func:`estimate_ratio`.
    smooth : bool
        Smooth along the angle axis first (robust to noise).
    batch : int, optional
        Trial centres transformed at once. None sizes the batch from a byte
        budget (free memory, at most :data:`BATCH_BYTES_CEILING`).

    Returns
    -------
    ndarray (len(centers),) float64, on the host
    """
    xp = array_module(sinogram)
    fft = fft_module(xp)
    threads = {"workers": -1} if xp is np else {}
    sino = xp.asarray(sinogram, dtype=xp.float32)
    ratio = _check_ratio(ratio, sino)
    if smooth:
        sino = ndimage_module(xp).gaussian_filter(sino, (3, 1), mode="reflect")
    n_rows, n_cols = sino.shape
    centers = np.atleast_1d(np.asarray(centers, float))
    shifts = 2.0 * (centers - (n_cols - 1) / 2.0)
    weights = xp.asarray(_half_wedge_weights(2 * n_rows, n_cols, ratio))
    n_freq = weights.shape[1]
    # the mirrored sinogram, padded with its own reflection so that its row is
    # continuous around the period: the phase-ramp shift then does not ring
    mirrored = sino[:, ::-1]
    padded_spectrum = fft.rfft(xp.concatenate([mirrored, sino], axis=1), axis=-1, **threads)
    frequencies = xp.asarray(np.fft.rfftfreq(2 * n_cols), dtype=xp.float32)
    top = fft.rfft(sino, axis=-1, **threads)[:, :n_freq]
    complement = sino[::-1, :]
    columns = xp.arange(n_cols)[None, :]
    # per centre: the ramped spectrum (complex64, n_cols + 1), its inverse (float32,
    # 2 n_cols), the shifted half (float32) and the transforms of the stacked rows
    bytes_per_center = n_rows * (8 * (n_cols + 1) + 4 * 2 * n_cols + 8 * n_cols
                                 + 3 * 8 * 2 * n_freq)
    size = _batch_size(xp, bytes_per_center, batch)
    metric = np.empty(centers.size)
    for start in range(0, centers.size, size):
        s = xp.asarray(shifts[start:start + size], dtype=xp.float32)[:, None]
        ramps = xp.exp((-2j * np.pi) * (s * frequencies[None, :])).astype(xp.complex64)
        shifted = fft.irfft(padded_spectrum[None] * ramps[:, None, :], n=2 * n_cols, axis=-1,
                            **threads)[..., :n_cols]
        del ramps
        # the columns that wrapped around are taken from the flipped sinogram, as in Vo's paper
        wrapped = ((s >= 0) & (columns < xp.ceil(s))) | ((s < 0) & (columns >= n_cols + xp.floor(s)))
        shifted = xp.where(wrapped[:, None, :], complement[None], shifted)
        bottom = fft.rfft(shifted, axis=-1, **threads)[..., :n_freq]
        del shifted
        stacked = xp.concatenate([xp.broadcast_to(top, bottom.shape), bottom], axis=1)
        spectrum = xp.abs(fft.fft(stacked, axis=1, **threads))
        values = (spectrum * weights).sum(axis=(-2, -1)) / (2.0 * n_rows * n_cols)
        metric[start:start + size] = to_numpy(values)
    return metric


def _average_angles(sino, max_angles: int):
    """Average groups of neighbouring angles so that at most ``max_angles`` remain."""
    n_angles = sino.shape[0]
    group = max(1, math.ceil(n_angles / max_angles))
    if group == 1:
        return sino
    n_kept = n_angles // group
    return sino[:n_kept * group].reshape(n_kept, group, -1).mean(axis=1)


def _parabola_vertex(x: np.ndarray, y: np.ndarray, i: int) -> float:
    """Vertex of the parabola through the minimum ``y[i]`` and its neighbours."""
    if i == 0 or i == x.size - 1:
        return float(x[i])
    y0, y1, y2 = y[i - 1], y[i], y[i + 1]
    curvature = y0 - 2 * y1 + y2
    if curvature <= 0:
        return float(x[i])
    step = x[i + 1] - x[i]
    return float(x[i] + 0.5 * step * (y0 - y2) / curvature)


def find_center_vo(sinogram, *, search: tuple[float, float] | None = None,
                   ratio: float | None = None, fine_step: float = 0.25,
                   batch: int | None = None):
    """Find the rotation centre of a 180° sinogram.

    Both stages run on a copy with neighbouring angles averaged down to at
    most :data:`FINE_ANGLES` (after smoothing along the angles, this loses
    nothing the metric uses, and keeps the time and memory bounded). The
    coarse search steps one column of a copy binned to at most
    :data:`COARSE_COLUMNS` columns; the refinement steps ``fine_step`` at
    full column resolution around the parabola through the coarse minimum,
    and returns the vertex of the parabola through the fine minimum.

    Parameters
    ----------
    sinogram : ndarray (angle, col), numpy or cupy
        Line integrals over 180°.
    search : (float, float), optional
        Range of trial centre columns. The default, the middle ±20 % of the
        detector, covers axes up to 20 % of the width off the middle; beyond
        that the mirrored halves overlap too little for the metric to work.
    ratio : float, optional
        Sample width over detector width. None (the default) estimates it
        with :func:`estimate_ratio`: 1.0 for a sample wider than the field of
        view, where Vo's usual 0.5 misses the centre by pixels.
    fine_step : float
        Step of the sub-pixel refinement, in pixels.
    batch : int, optional
        Trial centres transformed at once; None sizes batches from free
        memory (see :func:`vo_metric`).

    Returns
    -------
    center : float
        Detector column of the axis.
    score : float
        Depth of the metric's minimum relative to its median over the search,
        between 0 and 1. Clean scans give 0.5 to 0.9; below
        :data:`tomolab.center.LOW_SCORE` the minimum is not distinct and the
        answer should be checked with a centre sweep.

    Examples
    --------
    >>> import numpy as np
    >>> from tomolab.data.phantom import default_phantom, project_slice
    >>> angles = np.linspace(0, np.pi, 180, endpoint=False)
    >>> sino = project_slice(default_phantom(96, 8, radius_fraction=0.35), angles,
    ...                      np.arange(96), [0.0], center=52.3)[:, 0]
    >>> center, score = find_center_vo(sino)
    >>> abs(center - 52.3) < 0.5, score > 0.3
    (True, True)
    """
    if not fine_step > 0:
        raise ParameterError("the refinement step must be positive", where="fine_step",
                             value=fine_step, fix="pass e.g. fine_step=0.25")
    xp = array_module(sinogram)
    sino = xp.asarray(sinogram, dtype=xp.float32)
    ratio = _check_ratio(ratio, sino)
    n_angles, n_cols = sino.shape
    middle = (n_cols - 1) / 2.0
    lo, hi = search if search is not None else (middle - 0.2 * n_cols, middle + 0.2 * n_cols)
    # smooth along the angles at full resolution, then average neighbouring angles
    sino = ndimage_module(xp).gaussian_filter(sino, (3, 1), mode="reflect")
    sino = _average_angles(sino, FINE_ANGLES)
    # coarse search on a copy with columns averaged by f
    f = max(1, n_cols // COARSE_COLUMNS)
    coarse_sino = sino[:, : (n_cols // f) * f].reshape(sino.shape[0], n_cols // f, f).mean(axis=-1)
    binned = lambda c: (c + 0.5) / f - 0.5  # noqa: E731  (full-resolution column -> binned)
    coarse = np.arange(np.floor(binned(lo)), np.ceil(binned(hi)) + 1.0)
    metric = vo_metric(coarse_sino, coarse, ratio=ratio, smooth=False, batch=batch)
    best = np.argmin(metric)
    guess = (_parabola_vertex(coarse, metric, best) + 0.5) * f - 0.5
    reach = max(1.0, 0.5 * f)
    fine = guess + np.arange(-reach, reach + fine_step / 2, fine_step)
    fine_metric = vo_metric(sino, fine, ratio=ratio, smooth=False, batch=batch)
    center = _parabola_vertex(fine, fine_metric, int(np.argmin(fine_metric)))
    typical = float(np.median(metric))
    score = float(np.clip((typical - metric.min()) / typical, 0.0, 1.0)) if typical > 0 else 0.0
    return center, score
