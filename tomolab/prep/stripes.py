"""Stripe removal on sinograms (ring-artefact suppression).

A detector column whose gain differs from its neighbours adds a constant
offset along the angle axis of the ``-log`` sinogram: a vertical stripe,
which becomes a ring in the reconstruction. Three methods are registered
in :data:`STRIPE_METHODS` and reached through :func:`remove_stripes`:

``"sorting"``
    Vo, Atwood & Drakopoulos (2018), algorithm 3.
``"filtering"``
    Vo, Atwood & Drakopoulos (2018), algorithm 2 (Fourier low-pass along
    angle, then algorithm 3 on the smooth part).
``"fourier-wavelet"``
    Münch, Trtik, Marone & Stampanoni (2009).
``"offsets"``
    A per-column offset, constant along angle, estimated robustly in the
    angle-sorted domain of Vo et al. (2018) and subtracted (the form a
    fixed pixel gain error takes after ``-log``); the smoothing across
    columns is a median or (``fit="quadratic"``) a local quadratic fit.

All take a sinogram ``(angle, col)`` or a stack of them ``(angle, row,
col)`` (each row's sinogram is corrected on its own, all rows at once) and
return the same shape and array module.

References
----------
N. T. Vo, R. C. Atwood, M. Drakopoulos, "Superior techniques for eliminating
ring artifacts in X-ray micro-tomography", Opt. Express 26, 28396 (2018).

B. Münch, P. Trtik, F. Marone, M. Stampanoni, "Stripe and ring artifact
removal with combined wavelet-Fourier filtering", Opt. Express 17, 8567
(2009).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from tomolab.arrays import array_module, fft_module, ndimage_module, to_numpy
from tomolab.errors import ParameterError
from tomolab.checks import (check_bool, check_choice, check_int, check_ndim,
                                  check_positive, float_dtype_for)

__all__ = ["remove_stripes", "remove_stripes_sorting", "remove_stripes_filtering",
           "remove_stripes_fourier_wavelet", "remove_stripes_offsets", "STRIPE_METHODS"]

_DIMS = "(angle, col) or (angle, row, col)"


def _as_stack(sinogram):
    """Return a float ``(angle, row, col)`` view/copy and whether it was 2D."""
    check_ndim(sinogram, "sinogram", (2, 3), _DIMS)
    dtype = float_dtype_for(sinogram.dtype)
    s = sinogram.astype(dtype, copy=False)
    return (s[:, None, :], True) if s.ndim == 2 else (s, False)


def _sort_median_unsort(s, size, xp):
    """Algorithm 3 core on a float ``(angle, row, col)`` stack."""
    ndi = ndimage_module(xp)
    # Sort on keys rounded to 1e-6 of each sinogram's largest value, stably:
    # values equal up to rounding noise (air, or a smooth part computed by an
    # FFT) keep their angular order, so numpy and cupy (cuFFT rounds
    # differently) give the same permutation and the same numbers.
    scale = xp.max(xp.abs(s), axis=(0, 2), keepdims=True)
    quantum = scale * s.dtype.type(1e-6) + s.dtype.type(np.finfo(s.dtype).tiny)
    order = xp.argsort(xp.rint(s / quantum), axis=0, kind="stable")
    sorted_ = xp.take_along_axis(s, order, axis=0)
    # In the sorted domain a stripe is an offset of one column against its
    # neighbours whatever the object does: a median across columns removes it.
    smoothed = ndi.median_filter(sorted_, size=(1, 1, size), mode="reflect")
    out = xp.empty_like(smoothed)
    rows = xp.arange(s.shape[1])[None, :, None]
    cols = xp.arange(s.shape[2])[None, None, :]
    out[order, rows, cols] = smoothed  # a permutation: no index repeats
    return out


def remove_stripes_sorting(sinogram, *, size=21):
    """Remove stripes by sorting, median filtering and unsorting.

    Algorithm 3 of Vo, Atwood & Drakopoulos (2018): each detector column is
    sorted along the angle axis, the sorted sinogram is median filtered
    across columns (window ``size``, along ``col`` only, reflected at the
    borders), and the values are put back in their original angular order.
    Removes full and partial stripes; vectorised over all rows and columns.

    Parameters
    ----------
    sinogram : ndarray, shape (angle, col) or (angle, row, col)
        ``-log`` sinogram(s), numpy or cupy; each row is treated on its own.
    size : int, keyword-only
        Median window across columns (>= 3; wider than the widest stripe).
        Default 21 as in the paper; ~1 % of the detector width is a good start.

    Returns
    -------
    ndarray
        Corrected sinogram, same shape and array module; float32 (float64
        for float64 input).

    Examples
    --------
    A stripe in column 30 of a sinogram that varies along angle only:

    >>> import numpy as np
    >>> angles = np.linspace(0, np.pi, 90, endpoint=False)
    >>> clean = np.tile(1 + 0.5 * np.cos(angles)[:, None], (1, 64))
    >>> striped = clean + 0.05 * (np.arange(64) == 30)
    >>> out = remove_stripes_sorting(striped, size=5)
    >>> float(np.abs(out - clean).max()) < 1e-6
    True
    """
    size = check_int(size, "size", 3, "pass a window width such as 21 (about 1% of the columns)")
    s, was_2d = _as_stack(sinogram)
    xp = array_module(s)
    out = _sort_median_unsort(s, size, xp)
    return out[:, 0, :] if was_2d else out


def remove_stripes_filtering(sinogram, *, sigma=3.0, size=21, sort=True):
    """Remove stripes by filtering the low-frequency part along angle.

    Algorithm 2 of Vo, Atwood & Drakopoulos (2018): the sinogram is split,
    along the angle axis, into a smooth part (Fourier low-pass with the
    Gaussian window ``exp(-k^2 / (2 sigma^2))``, ``k`` the frequency index,
    after reflect padding by ``min(150, 10%)`` of the angles) and a sharp
    part (the rest). Stripes live in the smooth part, which is corrected by
    sort-median-unsort (algorithm 3, ``sort=True``) or by a plain median
    across columns (``sort=False``); the sharp part is added back untouched,
    so fine detail is not blurred.

    Parameters
    ----------
    sinogram : ndarray, shape (angle, col) or (angle, row, col)
        ``-log`` sinogram(s), numpy or cupy; each row is treated on its own.
    sigma : float, keyword-only
        Width of the Gaussian low-pass, in frequency samples (default 3).
    size : int, keyword-only
        Median window across columns (>= 3), default 21.
    sort : bool, keyword-only
        Sort before the median filter (default True, as in the paper).

    Returns
    -------
    ndarray
        Corrected sinogram, same shape and array module; float32 (float64
        for float64 input).

    Examples
    --------
    >>> import numpy as np
    >>> angles = np.linspace(0, np.pi, 90, endpoint=False)
    >>> clean = np.tile(1 + 0.5 * np.cos(angles)[:, None], (1, 64))
    >>> striped = clean + 0.05 * (np.arange(64) == 30)
    >>> out = remove_stripes_filtering(striped, size=5)
    >>> float(np.abs(out - clean).max()) < 1e-6
    True
    """
    sigma = check_positive(sigma, "sigma", "pass a low-pass width in frequency samples, e.g. 3")
    size = check_int(size, "size", 3, "pass a window width such as 21 (about 1% of the columns)")
    sort = check_bool(sort, "sort", "pass sort=True (sorting, as in the paper) or sort=False")
    s, was_2d = _as_stack(sinogram)
    xp = array_module(s)
    fft = fft_module(xp)
    n_angle = s.shape[0]
    pad = min(150, int(0.1 * n_angle))
    padded = xp.pad(s, ((pad, pad), (0, 0), (0, 0)), mode="reflect") if pad else s
    n = padded.shape[0]
    k = xp.arange(n // 2 + 1, dtype=s.dtype)
    window = xp.exp(-0.5 * (k / s.dtype.type(sigma)) ** 2)
    spectrum = fft.rfft(padded, axis=0)
    spectrum *= window[:, None, None]
    smooth = fft.irfft(spectrum, n=n, axis=0)[pad:pad + n_angle].astype(s.dtype, copy=False)
    sharp = s - smooth
    if sort:
        smooth = _sort_median_unsort(smooth, size, xp)
    else:
        smooth = ndimage_module(xp).median_filter(smooth, size=(1, 1, size), mode="reflect")
    out = smooth + sharp
    return out[:, 0, :] if was_2d else out


def remove_stripes_fourier_wavelet(sinogram, *, level=None, wavelet="db5", sigma=2.0,
                                   pad=True):
    """Remove stripes by combined wavelet-Fourier filtering.

    Münch et al. (2009): the sinogram is decomposed with a 2D discrete
    wavelet transform (:func:`pywt.wavedec2`, ``level`` levels). A vertical
    stripe (constant along angle, sharp across columns) sits in the vertical
    detail coefficients at low frequency along the angle axis; at each level
    these are Fourier transformed along angle and multiplied by
    ``1 - exp(-k^2 / (2 sigma^2))`` (``k`` the frequency index, so the
    angle-constant part is removed), then the transform is inverted. With
    ``pad`` the angle axis is zero padded by 1/16 of its length at each end
    first (as in TomoPy), so the circular Fourier filter does not wrap the
    first angles onto the last.

    PyWavelets runs on the CPU: a cupy input is copied to the host, filtered
    and copied back (all rows at once).

    Parameters
    ----------
    sinogram : ndarray, shape (angle, col) or (angle, row, col)
        ``-log`` sinogram(s), numpy or cupy; each row is treated on its own.
    level : int, optional, keyword-only
        Number of wavelet levels, at most ``log2`` of the smaller side of the
        (padded) sinogram. Default: :func:`pywt.dwtn_max_level` (4 for 256
        columns with db5). The coarsest approximation, which is not filtered,
        keeps about ``1 / 2**level`` of each stripe; deeper levels remove more
        of the stripes but also more of the object's own structure that
        changes little with angle.
    wavelet : str, keyword-only
        A discrete wavelet known to PyWavelets, default ``"db5"``.
    sigma : float, keyword-only
        Width of the Fourier damping, in frequency samples (default 2).
    pad : bool, keyword-only
        Zero pad along angle before filtering (default True).

    Returns
    -------
    ndarray
        Corrected sinogram, same shape and array module; float32 (float64
        for float64 input).

    Examples
    --------
    >>> import numpy as np
    >>> angles = np.linspace(0, np.pi, 90, endpoint=False)
    >>> clean = np.tile(1 + 0.5 * np.cos(angles)[:, None], (1, 64))
    >>> striped = clean + 0.05 * (np.arange(64) == 30)
    >>> out = remove_stripes_fourier_wavelet(striped, level=5)
    >>> def stripe(x):  # largest column offset left, averaged over angles
    ...     return np.abs((x - clean).mean(axis=0)).max()
    >>> bool(stripe(out) < 0.1 * stripe(striped))
    True
    """
    import pywt
    import scipy.fft

    sigma = check_positive(sigma, "sigma", "pass a damping width in frequency samples, e.g. 2")
    if wavelet not in pywt.wavelist(kind="discrete"):
        raise ParameterError("not a discrete wavelet known to PyWavelets", where="wavelet",
                             value=wavelet, fix="pass e.g. 'db5', 'sym8' or 'haar' "
                             "(see pywt.wavelist(kind='discrete'))")
    s, was_2d = _as_stack(sinogram)
    xp = array_module(s)
    host = to_numpy(s)
    dtype = host.dtype
    n_angle, _, n_col = host.shape
    shift = n_angle // 16 if pad else 0
    padded = np.pad(host, ((shift, shift), (0, 0), (0, 0)), mode="symmetric") if shift else host
    # Up to log2 of the smaller side: deeper than pywt.dwtn_max_level (whose
    # coarsest coefficients would be free of boundary effects), as in TomoPy,
    # because the approximation left at the coarsest level keeps 1 / 2**level
    # of every stripe.
    max_level = max(int(math.log2(min(padded.shape[0], n_col))), 1)
    if level is None:
        # deeper levels also damp the object's own angle-constant structure
        level = max(pywt.dwtn_max_level((padded.shape[0], n_col), wavelet), 1)
    level = check_int(level, "level", 1, f"pass a number of levels in 1..{max_level}")
    if level > max_level:
        raise ParameterError(
            f"too many wavelet levels for a {padded.shape[0]} x {n_col} sinogram "
            f"(at most {max_level})", where="level", value=level,
            fix=f"pass level <= {max_level} or level=None")

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Level value of", category=UserWarning)
        coeffs = pywt.wavedec2(padded, wavelet, level=level, axes=(0, 2))
    for i in range(1, len(coeffs)):
        c_h, c_v, c_d = coeffs[i]
        n = c_v.shape[0]
        k = scipy.fft.fftfreq(n, d=1.0 / n)  # integer frequency index
        damp = -np.expm1(-(k ** 2) / (2.0 * sigma ** 2))
        spectrum = scipy.fft.fft(c_v, axis=0)
        spectrum *= damp[:, None, None]
        coeffs[i] = (c_h, scipy.fft.ifft(spectrum, axis=0).real, c_d)
    out = pywt.waverec2(coeffs, wavelet, axes=(0, 2))
    out = out[shift:shift + n_angle, :, :n_col].astype(dtype, copy=False)
    out = xp.asarray(out)
    return out[:, 0, :] if was_2d else out


def remove_stripes_offsets(sinogram, *, size=31, passes=2, sigma=None, fit="median"):
    """Remove stripes by subtracting a robust per-column offset.

    A pixel whose gain is off by a factor ``g`` adds ``-log(g)`` to every
    angle of its column in the ``-log`` sinogram: an ADDITIVE offset,
    constant along angle. This method estimates that offset and subtracts
    it, leaving every other value of the column untouched (no value is
    replaced by a neighbour's, unlike algorithm 3):

    1. each column is sorted along angle (Vo, Atwood & Drakopoulos 2018):
       neighbouring columns then hold similar, monotone profiles whatever
       the object does;
    2. the sorted sinogram is smoothed across columns, a version that
       follows the object but not a single column's offset: with
       ``fit="median"`` a median over ``size`` columns (reflected at the
       borders); with ``fit="quadratic"`` a median over 5 columns, then a
       least-squares quadratic over ``size`` columns (Savitzky-Golay, edge
       values repeated at the borders), which follows the curved profiles of
       a strongly absorbing sample (the chord of a cylinder) where a median
       returns the middle value of a monotone run, offset included, and
       averages more neighbours' offsets. Across a kink (the sample's
       outer edge, where its chord drops to zero) a quadratic does not fit
       either: the few columns next to it get wrong offsets, up to a few
       times the gain errors' size on a sample that is the same at every
       angle (on the rock core below, the offsets within 10 columns of
       the edge are left about as wrong, 1 % rms, as with no correction);
    3. the offset of a column is the median over angles of (sorted - smooth),
       so a few angles where the object changes fast across columns do not
       bias it; it is subtracted from the column. With ``passes`` > 1 steps
       1-3 are repeated on the corrected sinogram, so the neighbours' own
       offsets no longer shift the smoothing;
    4. optionally (``sigma``), what remains of the angle mean of each column
       against a Gaussian smoothing (width ``sigma`` columns, after a median
       of 3 columns) is subtracted too: this averages the offsets of many
       more columns, for gain errors on every column of a weakly absorbing
       sample; it also takes the object's own angle-constant detail finer
       than ``sigma``, so leave it off for strongly absorbing samples and
       for isolated bad columns.

    Measured on the tests' analytic disk phantom (weakly absorbing, 256
    columns, 360 angles, gains 1 +- 2 %, seeds 0-4; ring amplitude in the
    iradon reconstruction, before / after): isolated bad columns 12-24x
    weaker with the defaults and 30-52x with ``fit="quadratic", size=15``;
    a gain error on every column 9-13x with the defaults, 11-15x with
    ``sigma=10`` (which does only 7-10x on isolated columns), 3-7x with
    ``fit="quadratic", size=15``. The error against the phantom does not
    grow in any of these cases.

    On a strongly absorbing sample with an independent 1 % gain error on
    every pixel (``tomolab.data.simulate_scan(256, n_rows=4, n_angles=360,
    ring_errors=0.01, photons=5e4)``, seeds 0-4; ring amplitude against
    the reconstruction of the exact line integrals) ``fit="quadratic",
    size=15`` removes 3.1-5.5x (4.3x for seed 0), the median with
    ``size=9`` 2.0-4.0x and with ``size=31`` 1.6-2.7x; the error against
    the phantom drops by 25-27 % (median: 13-22 %). With 16 detector rows,
    or with 6e4 photons and 200 flats, they are about the same. No stripe
    filter can reach tenfold there: a column offset constant along angle
    (its part symmetric about the axis, the part that makes rings) is
    exactly the sinogram of a rotationally symmetric object, and the
    sample's own rotationally symmetric profile has 20-300 times more power
    than the offsets at periods longer than ~15 columns, which carry most
    of the rings. Even an oracle that removes the exact offsets at every
    period shorter than 256/15 columns does only 5-12x (7.7x for seed 0),
    and shorter than 256/20 columns 3.7-6.7x, about what the quadratic
    fit does. Neighbouring detector rows do not help either: the sample's
    profile changes more from one row to the next than the offsets do.
    And subtracting the simulator's exact gain errors leaves the noise of
    the 10 averaged flats (an angle-constant offset of its own): 5-9.5x;
    with the flats' noise removed too, photon noise alone allows 26-35x.
    ``benchmarks/ring_removal.py`` prints all of this.

    Parameters
    ----------
    sinogram : ndarray, shape (angle, col) or (angle, row, col)
        ``-log`` sinogram(s), numpy or cupy; each row is treated on its own.
    size : int, keyword-only
        Smoothing window across columns (>= 3, default 31): wider than the
        widest stripe; narrower follows the sample more closely but averages
        fewer neighbours' offsets. Odd and >= 5 with ``fit="quadratic"``,
        where 15 is a good start.
    passes : int, keyword-only
        Repetitions of steps 1-3 (>= 1, default 2).
    sigma : float, optional, keyword-only
        Width in columns of the Gaussian of step 4; ``None`` (default) skips
        it. About 10 for a gain error on every column of a weak absorber.
    fit : {"median", "quadratic"}, keyword-only
        Smoothing of step 2 (default ``"median"``). ``"quadratic"`` for
        strongly absorbing samples and for isolated bad columns.

    Returns
    -------
    ndarray
        Corrected sinogram, same shape and array module; float32 (float64
        for float64 input).

    References
    ----------
    N. T. Vo, R. C. Atwood, M. Drakopoulos, "Superior techniques for
    eliminating ring artifacts in X-ray micro-tomography", Opt. Express 26,
    28396 (2018): sorting along angle (their algorithm 3) and the
    normalisation of column means against a sorted, median-filtered
    sinogram (their algorithm 6, here additive and with a median over
    angles).

    A. Savitzky, M. J. E. Golay, "Smoothing and differentiation of data by
    simplified least squares procedures", Anal. Chem. 36, 1627 (1964).

    Examples
    --------
    An offset on column 30 and another on column 41 of a sinogram that
    varies along angle only:

    >>> import numpy as np
    >>> angles = np.linspace(0, np.pi, 90, endpoint=False)
    >>> clean = np.tile(1 + 0.5 * np.cos(angles)[:, None], (1, 64))
    >>> striped = clean + 0.05 * (np.arange(64) == 30) - 0.03 * (np.arange(64) == 41)
    >>> out = remove_stripes_offsets(striped, size=5)
    >>> float(np.abs(out - clean).max()) < 1e-6
    True

    The same offsets on a curved profile that every angle sees alike (the
    chord of a centred cylinder): a median of 15 columns, which returns the
    middle value of a monotone run, leaves most of them; a local quadratic
    follows the curvature:

    >>> chord = np.sqrt(np.clip(40.0**2 - (np.arange(64) - 31.5)**2, 0, None)) / 40
    >>> clean = np.tile(chord, (90, 1))
    >>> striped = clean + 0.01 * (np.arange(64) == 30) - 0.01 * (np.arange(64) == 41)
    >>> def left(out):  # what is left of the two stripes, as a fraction
    ...     return float(np.abs((out - clean).mean(axis=0))[[30, 41]].max() / 0.01)
    >>> left(remove_stripes_offsets(striped, size=15)) > 0.5
    True
    >>> left(remove_stripes_offsets(striped, size=15, fit="quadratic")) < 0.2
    True
    """
    size = check_int(size, "size", 3, "pass a window width such as 31 (wider than any stripe)")
    passes = check_int(passes, "passes", 1, "pass 1 or 2")
    if sigma is not None:
        sigma = check_positive(sigma, "sigma", "pass a width in columns such as 10, or None")
    check_choice(fit, ("median", "quadratic"), where="fit")
    if fit == "quadratic" and (size < 5 or size % 2 == 0):
        raise ParameterError("a quadratic fit needs an odd window of at least 5 columns",
                             where="size", value=size, fix="pass an odd size such as 15")
    s, was_2d = _as_stack(sinogram)
    xp = array_module(s)
    ndi = ndimage_module(xp)
    if fit == "quadratic":
        from scipy.signal import savgol_coeffs
        weights = xp.asarray(savgol_coeffs(size, 2, use="dot"), dtype=s.dtype)
    out = s
    for _ in range(passes):
        sorted_ = xp.sort(out, axis=0)
        if fit == "median":
            smooth = ndi.median_filter(sorted_, size=(1, 1, size), mode="reflect")
        else:
            # the short median first, so that a neighbour's large offset
            # does not pull the least-squares fit
            smooth = ndi.median_filter(sorted_, size=(1, 1, 5), mode="reflect")
            smooth = ndi.correlate1d(smooth, weights, axis=-1, mode="nearest")
        offset = xp.median(sorted_ - smooth, axis=0)
        out = out - offset[None]
    if sigma is not None:
        profile = xp.mean(out, axis=0)
        base = ndi.median_filter(profile, size=(1, 3), mode="reflect")
        smooth = ndi.gaussian_filter1d(base, sigma, axis=-1, mode="nearest")
        out = out - (profile - smooth)[None]
    out = out.astype(s.dtype, copy=False)
    return out[:, 0, :] if was_2d else out


#: Stripe-removal methods by name, for :func:`remove_stripes` and pipelines.
STRIPE_METHODS = {
    "sorting": remove_stripes_sorting,
    "filtering": remove_stripes_filtering,
    "fourier-wavelet": remove_stripes_fourier_wavelet,
    "offsets": remove_stripes_offsets,
}


def remove_stripes(sinogram, *, method="sorting", **options):
    """Remove stripes with a method from :data:`STRIPE_METHODS`.

    Parameters
    ----------
    sinogram : ndarray, shape (angle, col) or (angle, row, col)
        ``-log`` sinogram(s), numpy or cupy; each row is treated on its own.
    method : str, keyword-only
        ``"sorting"`` (default), ``"filtering"``, ``"fourier-wavelet"`` or
        ``"offsets"``.
    **options
        Keyword options of the chosen method (see each function).

    Returns
    -------
    ndarray
        Corrected sinogram, same shape and array module.

    Examples
    --------
    >>> import numpy as np
    >>> sino = np.ones((90, 64), dtype=np.float32)
    >>> sino[:, 30] += 0.05
    >>> out = remove_stripes(sino, method="filtering", size=5)
    >>> bool(np.allclose(out, 1.0, atol=1e-5))
    True
    """
    check_choice(method, tuple(STRIPE_METHODS), where="method")
    return STRIPE_METHODS[method](sinogram, **options)
