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


def filter_sinograms(sinograms, *, filter: str = "ramp", pad_mode: str = "edge", center=None,
                     centers=None, to_column: float | None = None):
    """Filter sinograms along the detector axis (the last axis), moving the axis to a column.

    Without ``center`` or ``centers`` the sinograms are only filtered. With
    one of them, the rotation axis is also moved from its column to
    ``to_column`` by a phase ramp in the same FFT (content moves by
    ``to_column - center`` pixels), so the result can be backprojected with
    ``center=to_column``.

    Parameters
    ----------
    sinograms : ndarray (..., angle, col), numpy or cupy, float32
    filter : str
        A name from :data:`FILTERS`.
    pad_mode : {"edge", "constant"}
        How the detector is extended before filtering. ``"edge"`` repeats the
        border values, which avoids cupping when the sample is wider than the
        field of view.
    center : float or ndarray (z,), optional
        Detector column of the rotation axis, in pixels; or one per sinogram
        of a ``(z, angle, col)`` stack (a tilted axis, brought to one column).
    centers : array_like (k,), optional
        Trial axis columns (instead of ``center``): a new leading axis, one
        filtered stack per column, for the price of one forward FFT.
    to_column : float, optional
        Where the axis ends up, a detector column in pixels (default: the
        detector's middle, ``(n_cols - 1) / 2``).

    Returns
    -------
    ndarray like ``sinograms`` (with a leading axis of ``len(centers)`` if ``centers`` is given)

    Examples
    --------
    >>> import numpy as np
    >>> sino = np.zeros((1, 4, 64), np.float32); sino[..., 40] = 1.0
    >>> moved = filter_sinograms(sino, center=40.0, to_column=31.0)
    >>> int(moved[0, 0].argmax())
    31
    >>> filter_sinograms(sino[0], centers=[30.0, 31.5, 33.0]).shape
    (3, 4, 64)
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
    if center is not None and centers is not None:
        raise ParameterError("one centre (or one per sinogram), or trial centres, not both",
                             where="centers", value="center= and centers=",
                             fix="pass center= to move the axis, or centers= for one stack per "
                                 "trial column")
    if to_column is None:
        to_column = (n_cols - 1) / 2.0
    spectrum = fft.rfft(xp.pad(sinograms, pad, mode=pad_mode), axis=-1)
    response = xp.asarray(fourier_filter(n_pad, filter).astype(np.complex64))
    freq = np.fft.rfftfreq(n_pad)
    if center is None and centers is None:
        filtered = fft.irfft(spectrum * response, n=n_pad, axis=-1)
        return filtered[..., left:left + n_cols].astype(sinograms.dtype, copy=False)
    if center is not None and np.ndim(center) == 0:
        centers = np.asarray(center, float)  # one axis: a leading axis of one, dropped below
    elif center is not None:
        per_slice = to_column - np.asarray(center, float).reshape(-1)
        if sinograms.ndim != 3 or per_slice.size != sinograms.shape[0]:
            raise ParameterError("one centre per sinogram of a (z, angle, col) stack is needed",
                                 where="center", value=f"{per_slice.size} centres for shape "
                                 f"{tuple(sinograms.shape)}",
                                 fix="pass a single column, or one per sinogram")
        ramps = np.exp(-2j * np.pi * freq[None, :] * per_slice[:, None]).astype(np.complex64)
        response = xp.asarray(ramps)[:, None, :] * response
        filtered = fft.irfft(spectrum * response, n=n_pad, axis=-1)
        return filtered[..., left:left + n_cols].astype(sinograms.dtype, copy=False)
    shifts = to_column - np.asarray(centers, float)
    ramps = np.exp(-2j * np.pi * freq[None, :] * np.atleast_1d(shifts)[:, None]).astype(np.complex64)
    ramps = xp.asarray(ramps) * response  # (n_shift, n_freq)
    ramps = ramps.reshape(ramps.shape[:1] + (1,) * (sinograms.ndim - 1) + ramps.shape[-1:])
    filtered = fft.irfft(spectrum[None] * ramps, n=n_pad, axis=-1)[..., left:left + n_cols]
    filtered = filtered.astype(sinograms.dtype, copy=False)
    return filtered if shifts.ndim else filtered[0]
