"""Paganin single-distance phase retrieval and a Fresnel propagator.

Both work in Fourier space on the last two axes ``(row, col)``, batched over
a leading ``angle`` axis, with :mod:`scipy.fft` or :mod:`cupyx.scipy.fft`.
Wavelength from energy: ``lambda[m] = 12.398419843320026e-10 / E[keV]``
(h c = 12.398419843320026 keV Angstrom, CODATA 2018).

References
----------
D. Paganin, S. C. Mayo, T. E. Gureyev, P. R. Miller, S. W. Wilkins,
"Simultaneous phase and amplitude extraction from a single defocused image
of a homogeneous object", J. Microsc. 206, 33-40 (2002).
"""

from __future__ import annotations

import math

import numpy as np

from tomolab.arrays import array_module, fft_module
from tomolab.errors import ParameterError
from tomolab.checks import (check_bool, check_choice, check_ndim, check_nonnegative,
                                  check_positive, float_dtype_for)
from tomolab.prep.normalize import minus_log

__all__ = ["retrieve_phase", "fresnel_propagate", "wavelength", "paganin_length", "paganin_halo",
           "padded_shape", "HC_KEV_M", "PAD_LENGTHS"]

#: h*c in keV*m: ``wavelength[m] = HC_KEV_M / energy[keV]``.
HC_KEV_M = 12.398419843320026e-10


def wavelength(energy):
    """X-ray wavelength in metres for a photon energy in keV.

    Examples
    --------
    >>> round(wavelength(20.0) * 1e10, 6)  # Angstrom
    0.619921
    """
    energy = check_positive(energy, "energy", "pass the photon energy in keV, e.g. 20.0")
    return HC_KEV_M / energy


def _frame_check(images, name):
    check_ndim(images, name, (2, 3), "(angle, row, col) or (row, col)")
    if images.shape[-1] < 2 or images.shape[-2] < 2:
        raise ParameterError(f"each image must be at least 2 x 2 pixels, got {images.shape[-2:]}",
                             where=name, value=tuple(images.shape),
                             fix="pass projections shaped (angle, row, col)")


#: Padding on each side is at least this many filter lengths (exp(-6) = 0.25 %
#: of the filter's tail reaches the periodic wrap-around).
PAD_LENGTHS = 6


def paganin_length(ratio, energy, distance, pixel_size) -> float:
    """Paganin's length ``sqrt(lambda z (delta/beta) / (4 pi))`` in pixels.

    The filter's kernel decays as ``exp(-r / L)``; :func:`retrieve_phase`
    pads each side by :data:`PAD_LENGTHS` of them.

    Examples
    --------
    >>> round(paganin_length(1000, 20.0, 0.1, 1e-6), 2)
    22.21
    """
    return math.sqrt(wavelength(energy) * distance * float(ratio) / (4 * math.pi)) / pixel_size


def paganin_halo(ratio_max, energy, distance, pixel_size) -> int:
    """Rows needed above and below a slice so its Paganin filter sees all it needs.

    ``ceil(PAD_LENGTHS * L)`` for Paganin's length ``L`` at the largest ratio:
    the same margin :func:`retrieve_phase` pads with, beyond which the
    filter's kernel has fallen below ``exp(-6)``.

    Examples
    --------
    >>> paganin_halo(1000, 20.0, 0.1, 1e-6)
    134
    """
    return int(math.ceil(PAD_LENGTHS * paganin_length(ratio_max, energy, distance, pixel_size)))


def padded_shape(shape, pad, length=0.0):
    """Next fast FFT lengths of at least twice each frame axis, with at least
    ``PAD_LENGTHS * length`` pixels of padding on each side (or as is).

    Examples
    --------
    >>> padded_shape((20, 30), True), padded_shape((20, 30), False)
    ((40, 60), (20, 30))
    """
    import scipy.fft
    if not pad:
        return tuple(shape)
    margin = math.ceil(PAD_LENGTHS * length)
    return tuple(scipy.fft.next_fast_len(max(2 * n, n + 2 * margin), real=True) for n in shape)


def _pad(x, padded, pad_mode, xp):
    """Pad the last two axes to ``padded``, centred; return the array and crop slices."""
    n_row, n_col = x.shape[-2:]
    before = ((padded[0] - n_row) // 2, (padded[1] - n_col) // 2)
    widths = [(0, 0)] * (x.ndim - 2) + [(before[0], padded[0] - n_row - before[0]),
                                        (before[1], padded[1] - n_col - before[1])]
    crop = (Ellipsis, slice(before[0], before[0] + n_row), slice(before[1], before[1] + n_col))
    if padded == (n_row, n_col):
        return x, crop
    return xp.pad(x, widths, mode=pad_mode), crop


def _freq_squared(padded, pixel_size, dtype, xp, real):
    """``fx^2 + fy^2`` in 1/m^2 on the (r)fft grid of the last two axes."""
    fft = fft_module(xp)
    fy = fft.fftfreq(padded[0], d=pixel_size).astype(dtype)
    fx = (fft.rfftfreq if real else fft.fftfreq)(padded[1], d=pixel_size).astype(dtype)
    return fy[:, None] ** 2 + fx[None, :] ** 2


def _check_pad(pad, pad_mode):
    check_bool(pad, "pad", "pass pad=True (no edge artefacts) or pad=False (periodic)")
    return check_choice(pad_mode, ("edge", "reflect", "symmetric"), where="pad_mode")


def retrieve_phase(projections, *, delta_beta, energy, distance, pixel_size, beta=None,
                   output="attenuation", pad=True, pad_mode="edge"):
    """Paganin single-distance phase retrieval for a homogeneous object.

    For a homogeneous object (``n = 1 - delta + i beta``, ``mu = 4 pi beta /
    lambda``) the transport-of-intensity equation gives (Paganin et al. 2002)

    .. math::

        \\mu T = -\\ln \\mathcal{F}^{-1}\\left[
            \\frac{\\mathcal{F}[I / I_0]}{1 + \\pi \\lambda z (\\delta/\\beta) |f|^2}
        \\right]

    with ``f`` the spatial frequency in cycles per metre (``|k|^2 = 4 pi^2
    |f|^2`` in Paganin's notation: ``z delta |k|^2 / mu = pi lambda z
    (delta/beta) |f|^2``), ``z`` the sample-detector distance and ``T`` the
    projected thickness.

    The filter is a low-pass whose kernel decays as ``exp(-r / L)``, with
    Paganin's length ``L = sqrt(z delta / mu) = sqrt(lambda z (delta/beta) /
    (4 pi))``. Each frame is padded (``pad=True``) with its edge values
    (``pad_mode``) to the next fast FFT length of at least twice its size and
    of at least ``6 L`` on each side, filtered, and cropped back, so the
    periodic FFT leaves no artefacts at the borders. Memory: the padded
    complex spectrum of the whole stack is held at once; pass slabs.

    Parameters
    ----------
    projections : ndarray, shape (angle, row, col) or (row, col)
        Flat-field normalised intensities ``I / I0`` (e.g. from
        :func:`tomolab.prep.normalize`), numpy or cupy.
    delta_beta : float, keyword-only
        Ratio ``delta / beta`` of the material (> 0), e.g. ~2000 for a
        polymer at 20 keV.
    energy : float, keyword-only
        Photon energy in keV (> 0).
    distance : float, keyword-only
        Sample-detector propagation distance in metres (> 0).
    pixel_size : float, keyword-only
        Effective detector pixel size in metres (> 0).
    beta : float, optional, keyword-only
        Imaginary part of the refractive index decrement; required for
        ``output="thickness"`` (``mu = 4 pi beta / lambda``).
    output : {"attenuation", "thickness", "intensity"}, keyword-only
        ``"attenuation"`` (default): ``mu T``, dimensionless, the line
        integral that filtered backprojection takes (so no extra
        ``minus_log``); ``"thickness"``: ``T`` in metres; ``"intensity"``:
        the low-pass filtered ``I / I0`` itself.
    pad : bool, keyword-only
        Pad to at least twice the frame size before filtering (default).
    pad_mode : {"edge", "reflect", "symmetric"}, keyword-only
        How :func:`numpy.pad` fills the padding (default ``"edge"``).

    Returns
    -------
    ndarray
        Same shape and array module as ``projections``; float32 (float64
        for float64 input). Logarithms are taken through
        :func:`tomolab.prep.minus_log`, so no NaN or inf.

    Examples
    --------
    A uniform field holds no phase: attenuation 0 everywhere.

    >>> import numpy as np
    >>> flat = np.ones((32, 48), dtype=np.float32)
    >>> att = retrieve_phase(flat, delta_beta=1000, energy=20.0, distance=0.1,
    ...                      pixel_size=1e-6)
    >>> float(np.abs(att).max())
    0.0

    A slab of known absorption comes back with its thickness:

    >>> t = retrieve_phase(np.full((8, 8), np.exp(-0.5)), delta_beta=1000, energy=20.0,
    ...                    distance=0.1, pixel_size=1e-6, beta=1e-9, output="thickness")
    >>> mu = 4 * np.pi * 1e-9 / wavelength(20.0)
    >>> bool(np.allclose(t * mu, 0.5, rtol=1e-5))
    True
    """
    _frame_check(projections, "projections")
    delta_beta = check_positive(delta_beta, "delta_beta",
                                "pass delta/beta of the material (> 0), e.g. 1000")
    lam = wavelength(energy)
    distance = check_positive(distance, "distance",
                              "pass the sample-detector distance in metres (> 0), e.g. 0.05")
    pixel_size = check_positive(pixel_size, "pixel_size",
                                "pass the effective pixel size in metres (> 0), e.g. 1e-6")
    output = check_choice(output, ("attenuation", "thickness", "intensity"), where="output")
    pad_mode = _check_pad(pad, pad_mode)
    mu = None
    if output == "thickness":
        if beta is None:
            raise ParameterError("is required for output='thickness' (mu = 4 pi beta / lambda)",
                                 where="beta", value=None,
                                 fix="pass beta of the material, or output='attenuation'")
        beta = check_positive(beta, "beta", "pass beta of the material (> 0), e.g. 3.5e-10")
        mu = 4.0 * math.pi * beta / lam

    xp = array_module(projections)
    fft = fft_module(xp)
    dtype = float_dtype_for(projections.dtype)
    image = projections.astype(dtype, copy=False)
    # Paganin's length sqrt(z delta / mu) is the decay length of the filter's
    # kernel, exp(-r / L): the padding must hold several of them.
    padded = padded_shape(image.shape[-2:], pad,
                          paganin_length(delta_beta, energy, distance, pixel_size))
    work, crop = _pad(image, padded, pad_mode, xp)

    f2 = _freq_squared(padded, pixel_size, dtype, xp, real=True)
    denominator = 1 + dtype.type(math.pi * lam * distance * delta_beta) * f2
    spectrum = fft.rfft2(work, axes=(-2, -1))
    spectrum /= denominator
    filtered = fft.irfft2(spectrum, s=padded, axes=(-2, -1))[crop].astype(dtype, copy=False)
    if output == "intensity":
        return xp.ascontiguousarray(filtered)
    # floor far below any real transmission: only guards against log(<=0)
    attenuation = minus_log(filtered, floor=1e-12 if dtype == np.float64 else 1e-30)
    if mu is not None:
        attenuation /= dtype.type(mu)
    return attenuation


def fresnel_propagate(thickness, *, delta, beta, energy, distance, pixel_size, pad=True,
                      pad_mode="edge"):
    """Intensity after free-space propagation behind a homogeneous object.

    The exit wave of projected thickness ``T`` is ``psi_0 = exp(-i k delta T
    - k beta T)`` (``k = 2 pi / lambda``; refractive index ``1 - delta + i
    beta``; unit incident amplitude), and it is propagated over ``z`` with
    the Fresnel transfer function

    .. math::

        \\psi_z = \\mathcal{F}^{-1}\\left[\\mathcal{F}[\\psi_0]\\,
                  e^{-i \\pi \\lambda z (f_x^2 + f_y^2)}\\right]

    (the global phase ``exp(i k z)`` dropped). Returns ``|psi_z|^2``, which
    is 1 in the open beam. It is the forward model that
    :func:`retrieve_phase` inverts; use it to simulate propagation-based
    phase contrast. With ``pad=True`` the thickness is padded with its edge
    values to at least twice its size first, so that the fringes of one
    border do not wrap onto the other. An object cut by the frame is
    continued by its border values; for a strong phase object crossing the
    border, simulate a wider field and crop it (as a detector does).

    Parameters
    ----------
    thickness : ndarray, shape (angle, row, col) or (row, col)
        Projected thickness in metres, numpy or cupy.
    delta, beta : float, keyword-only
        Refractive index decrement and absorption index (>= 0).
    energy : float, keyword-only
        Photon energy in keV (> 0).
    distance : float, keyword-only
        Propagation distance in metres (>= 0; 0 gives the contact image).
    pixel_size : float, keyword-only
        Pixel size in metres (> 0). The transfer function is sampled without
        aliasing while ``distance * lambda <= (padded size) * pixel_size**2``.
    pad : bool, keyword-only
        Pad to at least twice the size before propagation (default True).
    pad_mode : {"edge", "reflect", "symmetric"}, keyword-only
        How the thickness is padded (default ``"edge"``).

    Returns
    -------
    ndarray
        Intensity ``I / I0``, same shape and array module; float32 (float64
        for float64 input).

    Examples
    --------
    >>> import numpy as np
    >>> slab = np.full((16, 16), 10e-6)  # 10 um everywhere
    >>> i = fresnel_propagate(slab, delta=1e-6, beta=1e-9, energy=20.0, distance=0.1,
    ...                       pixel_size=1e-6)
    >>> k = 2 * np.pi / wavelength(20.0)
    >>> bool(np.allclose(i, np.exp(-2 * k * 1e-9 * 10e-6)))
    True
    """
    _frame_check(thickness, "thickness")
    delta = check_nonnegative(delta, "delta", "pass the refractive index decrement (>= 0), "
                              "e.g. 6.7e-7 for PMMA at 20 keV")
    beta = check_nonnegative(beta, "beta", "pass the absorption index (>= 0), "
                             "e.g. 3.5e-10 for PMMA at 20 keV")
    lam = wavelength(energy)
    distance = check_nonnegative(distance, "distance",
                                 "pass the propagation distance in metres (>= 0)")
    pixel_size = check_positive(pixel_size, "pixel_size",
                                "pass the pixel size in metres (> 0), e.g. 1e-6")
    pad_mode = _check_pad(pad, pad_mode)

    xp = array_module(thickness)
    fft = fft_module(xp)
    dtype = float_dtype_for(thickness.dtype)
    cdtype = np.complex128 if dtype == np.float64 else np.complex64
    t = thickness.astype(dtype, copy=False)
    padded = padded_shape(t.shape[-2:], pad)
    t, crop = _pad(t, padded, pad_mode, xp)

    k = 2.0 * math.pi / lam
    wave = xp.exp((-k * beta - 1j * k * delta) * t).astype(cdtype, copy=False)
    # the phase in float64, then cast: pi*lambda*z*f^2 can reach many radians
    # and float32 would lose its fractional part
    f2 = _freq_squared(padded, pixel_size, np.float64, xp, real=False)
    propagator = xp.exp(-1j * (math.pi * lam * distance) * f2)
    spectrum = fft.fft2(wave, axes=(-2, -1))
    spectrum *= propagator.astype(cdtype, copy=False)
    field = fft.ifft2(spectrum, axes=(-2, -1))[crop]
    return (field.real ** 2 + field.imag ** 2).astype(dtype, copy=False)
