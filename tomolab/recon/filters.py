"""Reconstruction filters for filtered backprojection.

The ramp is built from its band-limited spatial kernel (Kak & Slaney, eq. 61),
as scikit-image does, so the zero frequency is handled exactly; the windows
multiply it. One registry maps a filter name to its window.
"""

from __future__ import annotations

import numpy as np

from tomolab.arrays import array_module, fft_module
from tomolab.errors import ParameterError

__all__ = ["FILTERS", "fourier_filter", "padded_width", "filter_sinograms"]


def _shepp_logan(freq):
    return np.sinc(freq)  # sin(πf) / (πf)


def _cosine(freq):
    return np.cos(np.pi * freq)


def _hamming(freq):
    return 0.54 + 0.46 * np.cos(2 * np.pi * freq)


def _hann(freq):
    return 0.5 + 0.5 * np.cos(2 * np.pi * freq)


def _parzen(freq):
    u = np.abs(freq) / 0.5
    return np.where(u <= 0.5, 1 - 6 * u ** 2 + 6 * u ** 3, 2 * (1 - u) ** 3)


# name -> window over frequency in cycles per pixel, |freq| <= 0.5
FILTERS = {
    "ramp": lambda freq: np.ones_like(freq),
    "shepp-logan": _shepp_logan,
    "cosine": _cosine,
    "hamming": _hamming,
    "hann": _hann,
    "parzen": _parzen,
}


def padded_width(n_cols: int) -> int:
    """FFT length used for a detector of ``n_cols``: a power of two ≥ 2 × width."""
    return max(64, int(2 ** np.ceil(np.log2(2 * n_cols))))


def fourier_filter(n_padded: int, name: str = "ramp") -> np.ndarray:
    """The filter on ``rfft`` frequencies of length ``n_padded`` (float64, NumPy).

    The result includes the factor that makes the discrete backprojection
    sum, multiplied by the angle step, an attenuation per pixel.

    Examples
    --------
    >>> f = fourier_filter(64, "ramp")
    >>> f.shape, bool(f[0] > 0), bool(f[-1] > f[1])
    ((33,), True, True)
    """
    try:
        window = FILTERS[name]
    except (KeyError, TypeError):
        raise ParameterError("unknown reconstruction filter", where="filter", value=name,
                             fix=f"use one of {', '.join(sorted(FILTERS))}") from None
    n = np.concatenate((np.arange(1, n_padded // 2 + 1, 2), np.arange(n_padded // 2 - 1, 0, -2)))
    kernel = np.zeros(n_padded)
    kernel[0] = 0.25
    kernel[1::2] = -1.0 / (np.pi * n) ** 2
    ramp = np.real(np.fft.rfft(kernel))  # ≈ |freq|, exact at DC for a band-limited ramp
    freq = np.fft.rfftfreq(n_padded)
    return ramp * window(freq)


def filter_sinograms(sinograms, *, filter: str = "ramp", pad_mode: str = "edge", shift: float = 0.0,
                     slice_shift=None):
    """Filter sinograms along the detector axis (the last axis).

    Parameters
    ----------
    sinograms : ndarray (..., angle, col), numpy or cupy, float32
    filter : str
        A name from :data:`FILTERS`.
    pad_mode : {"edge", "constant"}
        How the detector is extended before filtering. ``"edge"`` repeats the
        border values, which avoids cupping when the sample is wider than the
        field of view.
    shift : float or ndarray (n_shift,)
        Shift of the sinograms along the detector in pixels, applied as a
        phase ramp in the same FFT (positive moves content to higher columns).
        An array of shifts gives a new leading axis: one filtered stack per
        shift for the price of one forward FFT.
    slice_shift : ndarray (z,), optional
        One shift per sinogram of a ``(z, angle, col)`` stack (no new axis):
        how a tilted axis, with a centre per row, is brought to one centre.

    Returns
    -------
    ndarray like ``sinograms`` (with a leading shift axis if ``shift`` is an array)
    """
    xp = array_module(sinograms)
    fft = fft_module(xp)
    n_cols = sinograms.shape[-1]
    n_pad = padded_width(n_cols)
    left = (n_pad - n_cols) // 2
    pad = [(0, 0)] * (sinograms.ndim - 1) + [(left, n_pad - n_cols - left)]
    if pad_mode not in ("edge", "constant"):
        raise ParameterError("unknown padding mode", where="pad_mode", value=pad_mode,
                             fix='use "edge" or "constant"')
    spectrum = fft.rfft(xp.pad(sinograms, pad, mode=pad_mode), axis=-1)
    response = xp.asarray(fourier_filter(n_pad, filter).astype(np.complex64))
    freq = np.fft.rfftfreq(n_pad)
    if slice_shift is not None:
        per_slice = np.asarray(slice_shift, float).reshape(-1)
        if sinograms.ndim != 3 or per_slice.size != sinograms.shape[0]:
            raise ValueError("slice_shift needs one shift per sinogram of a (z, angle, col) stack")
        ramps = np.exp(-2j * np.pi * freq[None, :] * per_slice[:, None]).astype(np.complex64)
        response = xp.asarray(ramps)[:, None, :] * response
    shifts = np.asarray(shift, float)
    if shifts.ndim == 0 and shifts == 0:
        filtered = fft.irfft(spectrum * response, n=n_pad, axis=-1)
        return filtered[..., left:left + n_cols].astype(sinograms.dtype, copy=False)
    ramps = np.exp(-2j * np.pi * freq[None, :] * np.atleast_1d(shifts)[:, None]).astype(np.complex64)
    ramps = xp.asarray(ramps) * response  # (n_shift, n_freq)
    ramps = ramps.reshape(ramps.shape[:1] + (1,) * (sinograms.ndim - 1) + ramps.shape[-1:])
    filtered = fft.irfft(spectrum[None] * ramps, n=n_pad, axis=-1)[..., left:left + n_cols]
    filtered = filtered.astype(sinograms.dtype, copy=False)
    return filtered if shifts.ndim else filtered[0]
