"""Trial slices for many centres at once, with a sharpness score for each.

Each trial centre is folded into the reconstruction filter as a phase ramp
(:func:`tomolab.recon.fbp_centers`): one forward FFT of the sinogram, one
batched inverse FFT that yields every shifted, filtered sinogram, and one
batched backprojection in which the trial centres play the part of slices.
So a sweep of N centres costs one batched operation, not N reconstructions.
"""

from __future__ import annotations

import numpy as np

from tomolab.arrays import array_module, ndimage_module, to_numpy
from tomolab.errors import ParameterError

__all__ = ["CPU_BATCH_SECONDS", "SWEEP_SCORES", "SCORED_WIDTH", "sweep_slices", "sharpness_scores",
           "peak_center", "bin_slices", "score_slices", "best_is_one", "sweep_bytes"]


def _entropy(stack, xp, bins: int = 256):
    """Histogram entropy of each slice (lower = sharper); one bincount for the stack."""
    k = stack.shape[0]
    flat = stack.reshape(k, -1)
    lo = float(xp.percentile(flat[:, ::97], 0.5))
    hi = float(xp.percentile(flat[:, ::97], 99.5))
    index = xp.clip(((flat - lo) * (bins / max(hi - lo, 1e-30))).astype(xp.int32), 0, bins - 1)
    index += (xp.arange(k, dtype=xp.int32) * bins)[:, None]
    counts = xp.bincount(index.ravel(), minlength=k * bins).reshape(k, bins).astype(xp.float64)
    p = counts / counts.sum(axis=1, keepdims=True)
    return -(p * xp.log(xp.where(p > 0, p, 1.0))).sum(axis=1)


def _negativity(stack, xp):
    """Mean negative attenuation (lower = better): arcs of a wrong centre dip below zero."""
    k = stack.shape[0]
    return -xp.minimum(stack.reshape(k, -1), 0).mean(axis=1)


def _gradient(stack, xp):
    """Mean gradient magnitude (lower = fewer streaks and doubled edges)."""
    gy = xp.diff(stack, axis=1)[:, :, :-1]
    gx = xp.diff(stack, axis=2)[:, :-1, :]
    return xp.sqrt(gx * gx + gy * gy).mean(axis=(1, 2))


#: name -> function(stack (k, y, x), xp) -> (k,) values, lower is better
SWEEP_SCORES = {"entropy": _entropy, "negativity": _negativity, "gradient": _gradient}


def best_is_one(values) -> np.ndarray:
    """Metric values (lower is better, numpy or cupy) as host scores: 1 best, 0 worst."""
    values = np.asarray(to_numpy(values), dtype=np.float64)
    span = values.max() - values.min()
    return (values.max() - values) / span if span > 0 else np.ones_like(values)


def bin_slices(stack, factor: int):
    """Average ``factor × factor`` blocks of each slice (a trailing partial block is dropped)."""
    if factor <= 1:
        return stack
    k, ny, nx = stack.shape
    ny, nx = ny // factor * factor, nx // factor * factor
    return stack[:, :ny, :nx].reshape(k, ny // factor, factor, nx // factor, factor).mean(axis=(2, 4))


def score_slices(stack, metric, *, smooth: float, width: int | None = None) -> np.ndarray:
    """``metric`` (lower is better) of the square inside each slice's reconstruction
    circle, averaged in blocks down to about ``width`` pixels (None: not averaged),
    after a Gaussian of ``smooth`` pixels (0: none), as host scores: 1 best, 0 worst."""
    xp = array_module(stack)
    n = stack.shape[-1]
    inner = slice(int(0.18 * n), n - int(0.18 * n))
    region = stack[:, inner, inner]
    if width:
        region = bin_slices(region, max(1, int(round(region.shape[-1] / width))))
    if smooth:
        region = ndimage_module(xp).gaussian_filter(region, (0, smooth, smooth))
    return best_is_one(metric(region, xp))


#: the scored square is averaged down to about this width (noise averages out; arcs stay)
SCORED_WIDTH = 384


def sharpness_scores(stack, *, score: str = "entropy", smooth: float = 1.0) -> np.ndarray:
    """Score each trial slice in [0, 1]: 1 for the sharpest, 0 for the worst.

    The square inside the reconstruction circle is averaged in blocks down to
    about :data:`SCORED_WIDTH` pixels and smoothed by ``smooth`` pixels, which
    keeps photon noise from deciding: on a noisy 2560-pixel scan, picking every
    5th pixel instead (aliasing the noise) made neighbouring centres' scores
    jump at random. ``"entropy"`` (the default; of the histogram, as TomoPy
    uses) is low when the slice has few distinct grey levels; ``"negativity"``
    measures how far a slice dips below zero (the arcs of a wrong centre are
    half negative; meaningless for a sample wider than the detector, whose
    slices are offset anyway); ``"gradient"`` is the mean gradient magnitude.
    On simulated scans from 500 to 20000 photons per pixel, entropy picked the
    centre to within half a pixel every time; the others failed on some.
    """
    try:
        metric = SWEEP_SCORES[score]
    except KeyError:
        raise ParameterError("unknown sweep score", where="score", value=score,
                             fix=f"use one of {', '.join(SWEEP_SCORES)}") from None
    return score_slices(stack, metric, smooth=smooth, width=SCORED_WIDTH)


def peak_center(centers, scores) -> float:
    """Where the scores peak: the vertex of a parabola through the top of the peak.

    The points around the best score down to half the scores' span take
    part (at least the best and its two neighbours); a plateau's middle comes
    out instead of whichever of its points noise put highest. The answer lies
    between the points used, so it is inside the range of ``centers``.

    Examples
    --------
    >>> round(peak_center([1.0, 2.0, 3.0, 4.0, 5.0], [0.0, 0.8, 1.0, 0.8, 0.1]), 2)
    3.0
    """
    centers = np.asarray(centers, float)
    scores = np.asarray(scores, float)
    order = np.argsort(centers)
    centers, scores = centers[order], scores[order]
    best = int(np.argmax(scores))
    if centers.size < 3:
        return float(centers[best])
    floor = scores.max() - 0.5 * (scores.max() - scores.min())
    lo = best
    while lo > 0 and scores[lo - 1] >= floor:
        lo -= 1
    hi = best
    while hi < centers.size - 1 and scores[hi + 1] >= floor:
        hi += 1
    lo, hi = max(0, min(lo, best - 1)), min(centers.size - 1, max(hi, best + 1))
    x, y = centers[lo:hi + 1], scores[lo:hi + 1]
    if x.size < 3:
        return float(centers[best])
    a, b, _ = np.polyfit(x - x.mean(), y, 2)
    if a >= 0:  # not a peak (flat or a valley): the best point itself
        return float(centers[best])
    return float(np.clip(-b / (2 * a) + x.mean(), x[0], x[-1]))


#: seconds of work per batch of trial centres on the CPU (progress and cancel between batches)
CPU_BATCH_SECONDS = 0.5


def _candidate_bytes(n_angles: int, n_cols: int, size: int) -> int:
    """Working memory of one trial centre in a batch of :func:`sweep_slices`."""
    from tomolab.recon import padded_width

    return n_angles * (padded_width(n_cols) // 2 + 1) * 8 * 2 + n_angles * n_cols * 4 \
        + size * size * 4


def sweep_bytes(n_angles: int, n_cols: int, n_centers: int, size: int) -> int:
    """Memory a centre sweep needs at least on its device: stack, one candidate's batch, scoring.

    The stack of ``n_centers`` float32 slices of ``size²``, the working memory
    of a batch of one trial centre (the batch grows into what is free), and
    the scoring's copies of the scored square (two stacks, counted high).
    The batch grows into free memory when there is room; this is the least
    the sweep needs.

    Examples
    --------
    >>> sweep_bytes(1000, 1000, 41, 1000) / 1e6
    516.4
    """
    stack = n_centers * size * size * 4
    return int(3 * stack + _candidate_bytes(n_angles, n_cols, size))


def sweep_slices(sinogram, angles, centers, *, filter: str = "ramp", size: int | None = None,
                 pad_mode: str = "edge", batch: int | None = None, method: str = "auto",
                 kernel: str = "auto", progress=None, cancel=None):
    """Reconstruct one sinogram at every trial centre, as one batched operation.

    Parameters
    ----------
    sinogram : ndarray (angle, col), numpy or cupy
        Line integrals of one detector row.
    angles : array_like (angle,)
        Radians.
    centers : array_like (k,)
        Trial centre columns, in pixels.
    filter, pad_mode : str
        As for :func:`tomolab.recon.fbp`.
    size : int, optional
        Width of the trial slices (default: the detector width).
    batch : int, optional
        Candidates per batch (default: from free memory, and on the CPU also
        about :data:`CPU_BATCH_SECONDS` of work each,
        :class:`tomolab.devices.TimedBatches`).
    method : {"auto", "fbp", "gridrec"}
        ``"fbp"``: the phase-ramp filter and one batched backprojection
        (:func:`tomolab.recon.fbp_centers`; the GPU's fastest). ``"gridrec"``:
        the same sinogram gridded once per candidate, each with its own centre
        in its phase ramp (the CPU's fastest, about ten times the
        backprojection there). ``"auto"`` picks by the array's device.
    kernel : str
        GPU backprojection kernel for ``method="fbp"`` (see
        :func:`tomolab.recon.backproject`); ``"auto"`` is ``"hh8p1"``, which
        stores the filtered sinograms in half precision and sums in half2
        arithmetic flushed to float32 (below 1e-3 from the float32 kernels:
        enough for trial slices to the eye, and 1.46 × faster on an H100).
    progress, cancel : callable, optional
        ``progress(done, total)`` in trial centres, once at the start and
        after each batch; ``cancel()`` is polled between batches and raises
        :class:`tomolab.errors.Cancelled` when it returns True.

    Returns
    -------
    ndarray (k, size, size) float32 on the device of ``sinogram``
        Trial slice ``i`` is the slice reconstructed with ``centers[i]``, with
        that axis at the middle of the grid, in attenuation per pixel.

    Examples
    --------
    >>> import numpy as np
    >>> from tomolab.data.phantom import default_phantom, project_slice
    >>> angles = np.linspace(0, np.pi, 120, endpoint=False)
    >>> sino = project_slice(default_phantom(80, 4, radius_fraction=0.4), angles, np.arange(80),
    ...                      [0.0], center=41.0)[:, 0].astype(np.float32)
    >>> stack = sweep_slices(sino, angles, [39.0, 41.0, 43.0])
    >>> stack.shape, int(np.argmax(sharpness_scores(stack)))
    ((3, 80, 80), 1)
    """
    import math
    import time

    from tomolab.devices import TimedBatches, backend_of, batch_size
    from tomolab.errors import Cancelled
    from tomolab.recon import fbp_centers, gridrec

    xp = array_module(sinogram)
    sino = xp.asarray(sinogram, dtype=xp.float32)
    if sino.ndim != 2:
        raise ParameterError("a sweep takes one sinogram (angle, col)", where="sinogram",
                             value=tuple(sino.shape), fix="select one detector row")
    angles = np.asarray(angles, dtype=np.float64)
    n_angles, n_cols = sino.shape
    centers = np.atleast_1d(np.asarray(centers, dtype=np.float64))
    size = int(size or n_cols)
    if batch is None:
        batch = batch_size(_candidate_bytes(n_angles, n_cols, size), backend=backend_of(xp),
                           count=centers.size, fraction=0.3,
                           reserved=centers.size * size * size * 4)
    if method == "auto":
        method = "fbp" if xp is not np else "gridrec"
    if kernel == "auto" and xp is not np:
        kernel = "hh8p1"  # trial slices are for the eye: half precision, 1.46 × faster
    if method not in ("fbp", "gridrec"):
        raise ParameterError("unknown sweep method", where="method", value=method,
                             fix='use "auto", "fbp" or "gridrec"')
    out = xp.empty((centers.size, size, size), dtype=xp.float32)
    # on the CPU a batch is also about CPU_BATCH_SECONDS of work: two slices first (one pair
    # for gridrec), then as many as the time measured allows; the GPU takes what memory allows
    batches = TimedBatches(first=2 if xp is np else batch, ceiling=batch,
                           seconds=CPU_BATCH_SECONDS if xp is np else math.inf)
    total, start = centers.size, 0
    if progress is not None:
        progress(0, total)
    while start < total:
        if cancel is not None and cancel():
            raise Cancelled(f"sweep cancelled after {start} of {total} centres")
        began = time.perf_counter()
        chunk = centers[start:start + batches.next()]
        if method == "gridrec":
            copies = xp.broadcast_to(sino, (chunk.size, n_angles, n_cols))
            out[start:start + chunk.size] = gridrec(copies, angles, center=chunk, filter=filter,
                                                    size=size, pad_mode=pad_mode)
        else:
            fbp_centers(sino, angles, chunk, filter=filter, size=size, pad_mode=pad_mode,
                        kernel=kernel, out=out[start:start + chunk.size])
        batches.record(chunk.size, time.perf_counter() - began)
        start += chunk.size
        if progress is not None:
            progress(start, total)
    return out
