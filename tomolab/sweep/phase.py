"""Trial slices for many δ/β ratios at once (Paganin phase retrieval), each with a score.

Paganin's filter is two-dimensional, so a slice needs a band of detector rows
around it (:func:`tomolab.prep.paganin_halo`). Each projection band is
Fourier transformed once along the columns. For each ratio the filtered band is needed at the
target row only: along the rows that is one value of a circular convolution,
a weighted sum of the band's rows whose weights (per column frequency and
ratio) are the filter's row kernel, the edge-padded rows folded into the
first and last. So the K filters and K inverse transforms become one real
batched matrix product (band rows × ratios, for every column frequency) and
K one-row inverse FFTs: the same numbers as :func:`tomolab.prep.retrieve_phase`
on the whole band K times and keeping one row, at a fraction of the cost.
The K sinograms are then reconstructed by one batched filtered
backprojection (:func:`tomolab.recon.fbp`) in which the ratios play the
part of slices; on the CPU in batches of ratios of about half a second of
work each, so that progress is reported and a cancel acts between them.
"""

from __future__ import annotations

import math

import numpy as np

from tomolab.arrays import array_module, fft_module
from tomolab.checks import check_positive
from tomolab.errors import ParameterError
from tomolab.prep import minus_log, padded_shape, paganin_length, wavelength
from tomolab.sweep.center import _entropy, score_slices

__all__ = ["check_ratios", "sweep_phase_slices", "phase_scores", "PHASE_SCORES",
           "phase_sweep_bytes"]


def check_ratios(ratios) -> np.ndarray:
    """Trial δ/β ratios as a float64 vector; raise unless they are all finite and positive.

    Examples
    --------
    >>> check_ratios([10, 300]).tolist()
    [10.0, 300.0]
    """
    values = np.atleast_1d(np.asarray(ratios, dtype=np.float64))
    bad = values[~np.isfinite(values) | (values <= 0)]
    if values.size == 0 or bad.size or values.ndim != 1:
        raise ParameterError("trial δ/β ratios must be positive numbers", where="ratios",
                             value=float(bad[0]) if bad.size else list(values.ravel()[:3]),
                             fix="pass e.g. numpy.geomspace(10, 3000, 25)")
    return values


# ---------------------------------------------------------------------------- scores

def _levels(stack, xp):
    """Mean distance of each pixel to the nearer of two grey levels, per level step.

    The levels are the 10th and 90th percentiles of the slice (air or pores,
    and material); values between them count by their distance to the nearer
    one (blur), values beyond them by their distance past it (fringes).
    """
    k = stack.shape[0]
    flat = stack.reshape(k, -1)
    low = xp.percentile(flat, 10, axis=1)[:, None]
    high = xp.percentile(flat, 90, axis=1)[:, None]
    rel = (flat - low) / xp.maximum(high - low, 1e-30)
    distance = xp.where(rel < 0, -rel, xp.where(rel > 1, rel - 1, xp.minimum(rel, 1 - rel)))
    return distance.mean(axis=1)


#: name -> function(stack (k, y, x), xp) -> (k,) values, lower is better
PHASE_SCORES = {"levels": _levels, "entropy": _entropy}


def phase_scores(stack, *, score: str = "levels", smooth: float = 0.0) -> np.ndarray:
    """Score each trial slice of a δ/β sweep in [0, 1]: 1 for the best, 0 for the worst.

    Paganin's retrieval assumes one material, so at the right δ/β the slice
    has two grey levels (material, and air or pores) joined by sharp steps.
    Too small a ratio leaves Fresnel fringes: the edges overshoot beyond
    both levels. Too large a ratio blurs: the edges fill the space between
    them. ``"levels"`` (the default) measures both at once: the mean
    distance of each pixel to the nearer of the two levels (the 10th and
    90th percentiles of the square inside the reconstruction circle), in
    units of their difference; lowest is best.

    Measured on :func:`tomolab.data.phase_contrast.simulate_phase_scan`
    (128 and 160 pixels wide, δ/β from 30 to 1500, 0.03 to 0.5 m,
    2000 to 20000 photons, ratios ``geomspace(10, 3000, 25)``, 1.27 apart):
    ``"levels"`` picked a grid point next to the true δ/β in 9 of 9 scans
    (found/true 0.93 to 1.20; 0.77 to 1.20 after smoothing by one pixel).
    The histogram ``"entropy"`` (the centre sweep's score) was within the
    grid step in 3 of 9 and chose 1.6 to 100 times too large a ratio in the
    others; total variation and the share of high-frequency
    energy fall monotonically as the filter blurs, so they always chose the
    largest ratio (not offered); using Otsu's two classes for the levels
    instead of percentiles failed on 2 of 9.

    Parameters
    ----------
    stack : ndarray (k, size, size), numpy or cupy
        Trial slices, one per ratio.
    score : {"levels", "entropy"}
    smooth : float
        Gaussian smoothing (pixels) before scoring (none by default).

    Examples
    --------
    >>> import numpy as np
    >>> sharp = np.zeros((40, 40), np.float32); sharp[10:30, 10:30] = 1.0
    >>> fringes = sharp.copy(); fringes[10, 10:30] = 1.6; fringes[9, 10:30] = -0.6
    >>> from scipy.ndimage import gaussian_filter
    >>> stack = np.stack([fringes, sharp, gaussian_filter(sharp, 3)])
    >>> phase_scores(stack).round(2).tolist()
    [0.8, 1.0, 0.0]
    """
    try:
        metric = PHASE_SCORES[score]
    except KeyError:
        raise ParameterError("unknown δ/β sweep score", where="score", value=score,
                             fix=f"use one of {', '.join(PHASE_SCORES)}") from None
    return score_slices(stack, metric, smooth=smooth)


# ---------------------------------------------------------------------------- sweep

def _row_weights(n_rows, row_in_band, padded, ratios, lam, distance, pixel_size):
    """Weights (fx, band row, k) that give the Paganin-filtered target row from the band.

    :func:`tomolab.prep.retrieve_phase` pads the band with its edge rows to
    ``padded`` rows and filters periodically. Along the rows that is a
    circular convolution with the kernel ``h_k(dy, fx)`` (the inverse FFT of
    the filter over the row frequencies; real, as the filter is real and
    even), evaluated at one row; the padded rows repeat the first or last
    band row, so their kernel values add to those two rows' weights.
    """
    ny, nx = padded
    top = (ny - n_rows) // 2
    target = top + row_in_band
    fy2 = np.fft.fftfreq(ny, d=pixel_size)[:, None] ** 2
    fx2 = np.fft.rfftfreq(nx, d=pixel_size)[None, :] ** 2
    above = (target - np.arange(top)) % ny
    below = (target - np.arange(top + n_rows, ny)) % ny
    inside = (row_in_band - np.arange(n_rows)) % ny
    weights = np.empty((fx2.size, n_rows, ratios.size), np.float32)
    for i, ratio in enumerate(ratios):
        kernel = np.fft.ifft(1.0 / (1.0 + math.pi * lam * distance * ratio * (fy2 + fx2)),
                             axis=0).real                      # (dy, fx)
        w = kernel[inside]
        w[0] += kernel[above].sum(axis=0)
        w[-1] += kernel[below].sum(axis=0)
        weights[:, :, i] = w.T
    return weights


def _row_sinograms(band, ratios, row_in_band, padded, lam, distance, pixel_size, xp, batch):
    """Paganin-filtered transmission at one row of the band, for every ratio: (k, angle, col).

    ``padded`` is the band's (row, col) shape after :func:`tomolab.prep.retrieve_phase`'s
    padding for the largest ratio.
    """
    fft = fft_module(xp)
    n_angles, n_rows, n_cols = band.shape
    nx = padded[1]
    weights = xp.asarray(_row_weights(n_rows, row_in_band, padded, ratios, lam, distance,
                                      pixel_size))            # (fx, row, k) real
    left = (nx - n_cols) // 2
    out = xp.empty((ratios.size, n_angles, n_cols), xp.float32)
    for a0 in range(0, n_angles, batch):
        a1 = min(a0 + batch, n_angles)
        work = xp.pad(band[a0:a1], ((0, 0), (0, 0), (left, nx - n_cols - left)), mode="edge")
        spectrum = fft.rfft(work, axis=-1)                    # (a, row, fx)
        # real and imaginary parts stacked: two real products in one matmul
        parts = xp.concatenate([spectrum.real, spectrum.imag], axis=0)  # (2a, row, fx)
        parts = xp.ascontiguousarray(parts.transpose(2, 0, 1))          # (fx, 2a, row)
        rows = xp.matmul(parts, weights)                                # (fx, 2a, k)
        m = a1 - a0
        line = (rows[:, :m] + 1j * rows[:, m:]).transpose(2, 1, 0)      # (k, a, fx)
        line = fft.irfft(line, n=nx, axis=-1)[..., left:left + n_cols]
        out[:, a0:a1] = line.astype(xp.float32, copy=False)
    return out


def _angle_bytes(n_rows: int, padded_cols: int, n_ratios: int) -> int:
    """Working memory of one projection in a Fourier batch of :func:`_row_sinograms`."""
    nx = padded_cols
    return n_rows * (nx // 2 + 1) * 8 * 4 + n_ratios * (nx // 2 + 1) * 8 * 3 + n_ratios * nx * 4


def phase_sweep_bytes(n_angles: int, n_rows: int, n_cols: int, n_ratios: int, size: int,
                      padded_cols: int) -> int:
    """Memory a δ/β sweep needs at least on its device, its band of ``n_rows`` included.

    The band (float32), the weights, the ratios' transmission sinograms and
    their ``-log``, the batched filtered backprojection of all of them at
    once (:func:`tomolab.recon.fbp_bytes` with the ratios as slices), the
    scoring's copies (3 stacks), and one projection's Fourier batch.

    Examples
    --------
    >>> round(phase_sweep_bytes(1000, 41, 1000, 25, 1000, 2048) / 1e9, 2)
    1.49
    """
    from tomolab.recon import fbp_bytes

    band = n_angles * n_rows * n_cols * 4
    weights = (padded_cols // 2 + 1) * n_rows * n_ratios * 4
    transmission = n_ratios * n_angles * n_cols * 4  # fbp_bytes counts their -log
    fbp = fbp_bytes(n_ratios, n_angles=n_angles, n_cols=n_cols, size=size)
    scoring = 3 * n_ratios * size * size * 4
    return int(band + weights + transmission + fbp + scoring
               + _angle_bytes(n_rows, padded_cols, n_ratios))


#: seconds of work per batch of trial ratios on the CPU (progress and cancel between batches)
CPU_BATCH_SECONDS = 0.5


def sweep_phase_slices(projection_band, angles, ratios, *, row_in_band: int, center: float,
                       energy: float, distance: float, pixel_size: float, filter: str = "ramp",
                       size: int | None = None, batch: int | None = None,
                       ratios_per_batch: int | None = None, progress=None, cancel=None):
    """Reconstruct one row at every trial δ/β ratio, in a few batched operations.

    Parameters
    ----------
    projection_band : ndarray (angle, row, col), numpy or cupy
        Flat-field normalised transmission ``I / I0`` of a band of rows around
        the target row, :func:`tomolab.prep.paganin_halo` rows on each side
        where the detector has them (at the detector's top and bottom the band
        is continued with its edge rows, as :func:`tomolab.prep.retrieve_phase`
        pads).
    angles : array_like (angle,)
        Radians, covering 180°.
    ratios : array_like (k,)
        Trial δ/β values.
    row_in_band : int
        Index of the target row within the band.
    center : float
        Detector column of the rotation axis.
    energy, distance, pixel_size : float
        keV, metres, metres.
    filter : str
        Reconstruction filter, as for :func:`tomolab.recon.fbp`.
    size : int, optional
        Width of the slices (default: the detector width).
    batch : int, optional
        Projections per Fourier batch (default: from free memory).
    ratios_per_batch : int, optional
        Ratios reconstructed together (default: on the GPU all of
        them; on the CPU about :data:`CPU_BATCH_SECONDS` of work each,
        :class:`tomolab.devices.TimedBatches`). The slices do not depend on it.
    progress, cancel : callable, optional
        ``progress(done, total)`` in ratios, once at the start and after each
        batch; ``cancel()`` is polled between batches and raises
        :class:`tomolab.errors.Cancelled` when it returns True.

    Returns
    -------
    ndarray (k, size, size) float32 on the device of ``projection_band``
        Slice ``i`` is ``fbp`` of ``retrieve_phase(band, delta_beta=ratios[i])``
        at the target row: attenuation per pixel of path (multiply by
        ``1 / pixel_size`` for 1/m).

    Examples
    --------
    >>> import numpy as np
    >>> band = np.ones((12, 9, 32), np.float32)
    >>> band[:, :, 12:20] = 0.9
    >>> angles = np.linspace(0, np.pi, 12, endpoint=False)
    >>> stack = sweep_phase_slices(band, angles, [10.0, 100.0], row_in_band=4, center=15.5,
    ...                            energy=20.0, distance=0.05, pixel_size=1e-6)
    >>> stack.shape
    (2, 32, 32)
    """
    import time

    from tomolab.devices import TimedBatches, backend_of, batch_size
    from tomolab.errors import Cancelled
    from tomolab.recon import fbp

    xp = array_module(projection_band)
    band = xp.asarray(projection_band, dtype=xp.float32)
    if band.ndim != 3:
        raise ParameterError("the band must be (angle, row, col)", where="projection_band",
                             value=tuple(band.shape), fix="pass the rows around the target row "
                             "of every projection")
    n_angles, n_rows, n_cols = band.shape
    if not isinstance(row_in_band, (int, np.integer)) or not 0 <= row_in_band < n_rows:
        raise ParameterError("the target row is outside the band", where="row_in_band",
                             value=row_in_band, fix=f"pass a row between 0 and {n_rows - 1}")
    ratios = check_ratios(ratios)
    lam = wavelength(energy)
    distance = check_positive(distance, "distance", "pass the sample-detector distance in metres")
    pixel_size = check_positive(pixel_size, "pixel_size", "pass the pixel size in metres")
    angles = np.asarray(angles, dtype=np.float64)
    padded = padded_shape((n_rows, n_cols), True,
                          paganin_length(ratios.max(), energy, distance, pixel_size))
    if batch is None:
        batch = batch_size(_angle_bytes(n_rows, padded[1], ratios.size), backend=backend_of(xp),
                           count=n_angles, reserved=2 * ratios.size * n_angles * n_cols * 4)
    size = int(size or n_cols)
    total = ratios.size
    if ratios_per_batch is not None and (
            not isinstance(ratios_per_batch, (int, np.integer)) or isinstance(ratios_per_batch, bool)
            or ratios_per_batch < 1):
        raise ParameterError("ratios per batch must be a whole number of at least 1",
                             where="ratios_per_batch", value=ratios_per_batch,
                             fix="pass e.g. 4, or omit it")
    if ratios_per_batch is not None:
        batches = TimedBatches(first=ratios_per_batch, ceiling=ratios_per_batch, seconds=math.inf)
    elif xp is np:  # two ratios first, then as many as the time measured allows
        batches = TimedBatches(first=2, ceiling=total, seconds=CPU_BATCH_SECONDS)
    else:  # the memory for all of them was checked: one batch, no Fourier transform redone
        batches = TimedBatches(first=total, ceiling=total, seconds=math.inf)
    if progress is not None:
        progress(0, total)
    # the band's Fourier transform is shared by all ratios: one pass for all their sinograms
    # (a small part of the work); the backprojections, most of it, go in batches of ratios
    transmission = _row_sinograms(band, ratios, int(row_in_band), padded, lam, distance,
                                  pixel_size, xp, batch)
    out = xp.empty((total, size, size), dtype=xp.float32)
    start = 0
    while start < total:
        if cancel is not None and cancel():
            raise Cancelled(f"δ/β sweep cancelled after {start} of {total} ratios")
        began = time.perf_counter()
        stop = start + batches.next()
        sinograms = minus_log(transmission[start:stop], floor=1e-30)
        out[start:stop] = fbp(sinograms, angles, center=float(center), filter=filter, size=size)
        batches.record(sinograms.shape[0], time.perf_counter() - began)
        start += sinograms.shape[0]
        if progress is not None:
            progress(start, total)
    return out
