"""Ring cases with known answers: gain errors on exact sinograms, and how strong rings are.

Used by the tests and by ``benchmarks/ring_removal.py`` to judge stripe removal
(:mod:`tomolab.prep.stripes`) on the reconstruction, where rings are seen:

* an analytic phantom of three disks (a weak absorber) whose sinogram is exact,
  with per-column gain errors (:func:`disk_sinogram`, :func:`column_gains`);
* a whole simulated scan with a gain error on every pixel, with its exact line
  integrals, the exact offsets the gains make, and the truth
  (:func:`ring_scan`);
* :func:`ring_amplitude`: the RMS over radius of the angle-averaged difference
  between a reconstruction and a ring-free one. Rings are exactly the
  rotationally symmetric part of that difference.
"""

from __future__ import annotations

import json

import numpy as np

__all__ = ["RING_DISKS", "disk_image", "disk_sinogram", "column_gains", "ring_amplitude",
           "inside_error", "ring_scan"]

#: (x0, y0, radius, mu): pixels from the centre, attenuation per pixel. A weakly absorbing
#: sample (at most ~10 % absorption). No disk is centred on the axis: such a disk would
#: itself be angle-constant, like a stripe.
RING_DISKS = [(18.0, 12.0, 80.0, 5e-4), (30.0, -20.0, 35.0, 7.5e-4), (-40.0, 35.0, 20.0, -3e-4)]


def disk_image(n: int = 256) -> np.ndarray:
    """The disk phantom on an ``n × n`` grid with the axis at ``n // 2`` (scikit-image's)."""
    y, x = np.mgrid[:n, :n] - n // 2
    image = np.zeros((n, n))
    for x0, y0, r, mu in RING_DISKS:
        image += mu * ((x - x0) ** 2 + (y - y0) ** 2 <= r * r)
    return image


def disk_sinogram(n: int = 256, angles=None) -> np.ndarray:
    """Exact sinogram ``(angle, col)`` of :func:`disk_image` (scikit-image's radon convention).

    A uniform disk of radius r, attenuation mu and centre (x0, y0) projects to
    ``mu * 2 sqrt(r² - (s - s0)²)`` with ``s0 = x0 cos θ - y0 sin θ``.

    Examples
    --------
    >>> disk_sinogram(256, [0.0]).shape
    (1, 256)
    """
    angles = np.linspace(0, np.pi, 360, endpoint=False) if angles is None else np.asarray(angles)
    s = np.arange(n) - n // 2
    sino = np.zeros((len(angles), n))
    for x0, y0, r, mu in RING_DISKS:
        s0 = x0 * np.cos(angles) - y0 * np.sin(angles)
        sino += mu * 2 * np.sqrt(np.clip(r * r - (s[None, :] - s0[:, None]) ** 2, 0, None))
    return sino


def column_gains(kind: str, seed: int = 0, n: int = 256) -> np.ndarray:
    """Per-column gains 1 ± 2 %: ``"every column"``, or ``"isolated columns"`` (~1 in 10).

    ``-log(gain)`` added to a ``-log`` sinogram is what a wrong pixel gain does.
    """
    rng = np.random.default_rng(seed)
    if kind == "every column":
        return 1 + rng.uniform(-0.02, 0.02, n)
    g = np.ones(n)
    base = np.arange(3, n - 3, 10)
    g[base + rng.integers(-2, 3, len(base))] = 1 + rng.choice([-0.02, 0.02], len(base))
    return g


def _radius(n: int, axis: float | None):
    axis = (n - 1) / 2 if axis is None else axis
    return np.hypot(*(np.mgrid[:n, :n] - axis))


def ring_amplitude(volume, reference, *, axis: float | None = None, margin: int = 2) -> float:
    """RMS over radius (and slices) of the angular mean of ``volume - reference``.

    Parameters
    ----------
    volume, reference : ndarray (y, x) or (z, y, x)
        A reconstruction and a ring-free one (e.g. of the exact line integrals).
    axis : float, optional
        Grid position of the rotation axis: ``(n - 1) / 2`` (tomolab, default)
        or ``n // 2`` (scikit-image's iradon).
    margin : int
        Pixels left out at the edge of the reconstruction circle.

    Examples
    --------
    >>> n = 64
    >>> r = np.hypot(*(np.mgrid[:n, :n] - (n - 1) / 2))
    >>> ring = 0.1 * (np.abs(r - 20) < 0.5)
    >>> ring_amplitude(ring, np.zeros((n, n))) > 0.01, ring_amplitude(np.zeros((n, n)), 0 * ring)
    (True, 0.0)
    """
    difference = np.asarray(volume, float) - np.asarray(reference, float)
    difference = difference[None] if difference.ndim == 2 else difference
    n = difference.shape[-1]
    radius = _radius(n, axis)
    inside = radius < n // 2 - margin
    bins = np.rint(radius[inside]).astype(int)
    count = np.bincount(bins)
    profiles = [np.bincount(bins, d[inside])[1:] / count[1:] for d in difference]
    return float(np.sqrt(np.mean(np.square(profiles))))


def inside_error(volume, truth, *, axis: float | None = None, margin: int = 2) -> float:
    """RMS of ``volume - truth`` inside the reconstruction circle (2-D or 3-D)."""
    difference = np.asarray(volume, float) - np.asarray(truth, float)
    n = difference.shape[-1]
    inside = _radius(n, axis) < n // 2 - margin
    return float(np.sqrt(np.mean(difference[..., inside] ** 2)))


def ring_scan(size: int = 256, *, n_rows: int = 4, n_angles: int = 360, seed: int = 0,
              ring_errors: float = 0.01, **simulation) -> dict:
    """A simulated scan with a gain error on every pixel, and what is known about it.

    Parameters
    ----------
    size, n_rows, n_angles, seed, ring_errors
        As for :func:`tomolab.data.simulate_scan`.
    **simulation
        Any other option of it (``photons``, ``n_flats``, ``max_attenuation``, ...).

    Returns
    -------
    dict
        ``scan``; ``sino`` (the measured ``-log`` sinograms ``(angle, row, col)``,
        flat/dark corrected); ``recon`` (function: sinograms -> ``(z, y, x)`` by
        FBP at the true centre); ``reference`` (the reconstruction of the exact
        line integrals: no rings); ``truth`` (attenuation per pixel);
        ``gain_offsets`` (the exact ``-log(gain)``, ``(row, col)``) and
        ``fixed_offsets`` (those plus the angle-constant noise of the averaged
        flats and darks: every angle-constant error a stripe filter could remove).
    """
    from tomolab.data.phantom import phantom_from_json, project_slice
    from tomolab.data.simulate import (SimulationParameters, _beam, _drift, _gains, _timeline,
                                       simulate_scan, true_volume)
    from tomolab.engine import line_integrals
    from tomolab.recon import fbp

    scan = simulate_scan(size, n_rows=n_rows, n_angles=n_angles, ring_errors=ring_errors,
                         seed=seed, **simulation)
    angles, center = scan.angle.values, scan.attrs["true_center"]
    z = np.arange(n_rows) - (n_rows - 1) / 2
    exact = project_slice(phantom_from_json(scan.attrs["phantom"]), angles, np.arange(size), z,
                          center=center) * scan.attrs["attenuation_per_pixel"]

    def recon(sino):
        return np.asarray(fbp(np.asarray(sino, np.float32).transpose(1, 0, 2), angles,
                              center=center))

    sino = np.asarray(line_integrals(scan, slice(None)), dtype=np.float64)
    # the line integrals normalised by the noise-free beam and dark level instead of the
    # measured flats and darks: the difference, averaged over angles, is their noise
    params = SimulationParameters(**json.loads(scan.attrs["simulation"]),
                                  phantom=scan.attrs["phantom"])
    gain_offsets = -np.log(_gains(params))
    beam = _beam(params)[None] * _drift(params, _timeline(params)[0])[:, None, None]
    raw = scan["projections"].values.astype(np.float64)
    ideal = -np.log(np.clip(raw - params.dark_level, 1.0, None) / beam)
    return dict(scan=scan, sino=sino, recon=recon, reference=recon(exact),
                truth=true_volume(scan) * scan.attrs["pixel_size"], gain_offsets=gain_offsets,
                fixed_offsets=gain_offsets + (sino - ideal).mean(axis=0))
