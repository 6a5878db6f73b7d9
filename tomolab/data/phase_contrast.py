"""Simulated propagation-based phase-contrast scans of a homogeneous sample.

The sample is one material (refractive index ``1 - delta + i beta``) shaped
by an analytic phantom whose values are 1 inside the material and 0 outside
(pores are shapes of value -1 inside the body). Its projected thickness is
exact (:func:`tomolab.data.phantom.project_slice`); each projection is the
exit wave of that thickness propagated to the detector by
:func:`tomolab.prep.phase.fresnel_propagate` (the full Fresnel transfer
function, not the transport-of-intensity approximation that Paganin's
retrieval inverts), then recorded as Poisson counts. The truth is the
material's attenuation ``mu = 4 pi beta / lambda`` where the phantom is 1.
"""

from __future__ import annotations

import json
import math

import numpy as np

from tomolab.data.phantom import Cylinder, Ellipsoid, phantom_to_json, project_slice
from tomolab.data.simulate import _check_center, _check_photons, _check_rows_angles
from tomolab.errors import ParameterError

__all__ = ["simulate_phase_scan", "homogeneous_phantom", "DEFAULT_BETA"]

#: absorption index used when none is given: a light material (glass fibre,
#: aluminium alloy, bone-like) near 20 keV has beta of about 1e-9 to 5e-9
DEFAULT_BETA = 2.0e-9


def homogeneous_phantom(width: int, height: int, *, radius: float | None = None,
                        seed: int = 1234) -> list:
    """A one-material sample: a cylinder with spherical-ish pores and two thin rods.

    Every shape has value 1 (material) or -1 (a pore wholly inside the body,
    not touching another pore), so the phantom is exactly 1 in material and 0
    elsewhere: a homogeneous object, as Paganin's retrieval assumes.

    Parameters
    ----------
    width, height : int
        Detector columns and rows (the body is centred on the axis).
    radius : float, optional
        Body radius in pixels (default ``0.3 * width``).

    Examples
    --------
    >>> from tomolab.data.phantom import phantom_slice
    >>> img = phantom_slice(homogeneous_phantom(64, 16), 0.0, 64)
    >>> float(img.max()), float(img.min())
    (1.0, 0.0)
    """
    r = 0.3 * width if radius is None else float(radius)
    rng = np.random.default_rng(seed)
    h = 0.5 * height
    shapes: list = [Cylinder(0.0, 0.0, -10.0 * h - 10, 10.0 * h + 10, r, 0.9 * r, 0.4, 1.0)]
    pores: list[tuple[float, float, float]] = []
    for _ in range(200):
        if len(pores) == 5:
            break
        rad = rng.uniform(0.12, 0.22) * r
        dist = rng.uniform(0.0, 0.9 * r - 1.3 * rad)
        ang = rng.uniform(0, 2 * np.pi)
        x, y = dist * np.cos(ang), dist * np.sin(ang)
        if all(math.hypot(x - px, y - py) > 1.15 * (rad + pr) for px, py, pr in pores):
            pores.append((x, y, rad))
    for x, y, rad in pores:
        # tall ellipsoids: the pores change slowly with height, as in a real sample
        shapes.append(Ellipsoid(x, y, 0.0, rad, rad, max(3.0 * rad, 1.5 * h), 0.0, -1.0))
    # two rods outside the body, also of the material
    for ang, rad in ((0.6, 0.08 * r), (3.9, 0.05 * r)):
        d = r + 0.2 * (0.5 * width - r) + rad
        d = min(d, 0.46 * width - rad)
        shapes.append(Cylinder(d * np.cos(ang), d * np.sin(ang), -10.0 * h - 10, 10.0 * h + 10,
                               rad, rad, 0.0, 1.0))
    return shapes


def simulate_phase_scan(size: int = 128, n_rows: int = 32, n_angles: int = 180, *,
                        delta_beta: float = 300.0, energy: float = 20.0, distance: float = 0.05,
                        pixel_size: float = 1.0e-6, photons: float = 2.0e4,
                        center: float | None = None, seed: int = 0,
                        beta: float = DEFAULT_BETA, phantom=None):
    """Simulate a propagation-based phase-contrast scan of a homogeneous sample.

    Parameters
    ----------
    size : int
        Detector width in pixels.
    n_rows : int
        Detector rows.
    n_angles : int
        Projections over 180°.
    delta_beta : float
        ``delta / beta`` of the material (``delta = delta_beta * beta``).
    energy : float
        Photon energy in keV.
    distance : float
        Sample-detector distance in metres.
    pixel_size : float
        Pixel size in metres.
    photons : float
        Photons per pixel in the open beam.
    center : float, optional
        Column of the rotation axis (default 3.1 % of the width right of the middle).
    seed : int
        Seed of the Poisson noise.
    beta : float
        Absorption index of the material (default :data:`DEFAULT_BETA`).
    phantom : list of shapes, optional
        Shapes with values 1 (material) and -1 (pores inside material); default
        :func:`homogeneous_phantom`.

    Returns
    -------
    xarray.Dataset
        As :func:`tomolab.io.from_arrays`: uint16 ``projections``, ``flats``,
        ``darks`` and attrs ``pixel_size``, ``energy``, ``distance``, and the
        truth: ``true_delta_beta``, ``true_center``, ``delta``, ``beta``,
        ``mu`` (1/m), ``phantom`` and ``attenuation_per_pixel`` (so
        :func:`tomolab.data.true_volume` gives ``mu`` inside material, in 1/m).

    Examples
    --------
    >>> scan = simulate_phase_scan(64, n_rows=8, n_angles=30)
    >>> scan.projections.shape, scan.attrs["true_delta_beta"]
    ((30, 8, 64), 300.0)
    """
    from tomolab.io import from_arrays
    from tomolab.prep import fresnel_propagate, wavelength

    if not isinstance(size, (int, np.integer)) or not 16 <= size <= 4096:
        raise ParameterError("detector width must be an integer between 16 and 4096",
                             where="size", value=size, fix="use e.g. size=128")
    _check_rows_angles(n_rows, n_angles)
    if not (isinstance(delta_beta, (int, float, np.floating)) and delta_beta > 0):
        raise ParameterError("delta/beta must be > 0", where="delta_beta", value=delta_beta,
                             fix="pass the material's delta/beta, e.g. 300")
    _check_photons(photons)
    center = _check_center((size - 1) / 2.0 + 0.031 * size if center is None else center, size)
    n_rows, n_angles = int(n_rows), int(n_angles)
    lam = wavelength(energy)
    delta = float(delta_beta) * float(beta)
    mu = 4.0 * math.pi * float(beta) / lam
    if phantom is None:
        reach = min(center, size - 1 - center)
        phantom = homogeneous_phantom(size, n_rows, radius=0.62 * reach)
    angles = np.linspace(0.0, np.pi, n_angles, endpoint=False)
    # simulate rows beyond the detector and crop, so the fringes at the top and
    # bottom rows come from the sample there, not from edge-padding
    margin = max(8, math.ceil(4 * math.sqrt(lam * distance) / pixel_size))
    Z = np.arange(-margin, n_rows + margin) - (n_rows - 1) / 2.0
    cols = np.arange(size)
    projections = np.empty((n_angles, n_rows, size), np.uint16)
    block = max(1, int(2**25 // (Z.size * size * 4 * 8)))
    dark_level = 100.0
    for start in range(0, n_angles, block):
        stop = min(start + block, n_angles)
        thickness = project_slice(phantom, angles[start:stop], cols, Z, center=center)
        thickness *= pixel_size
        intensity = fresnel_propagate(thickness, delta=delta, beta=float(beta), energy=energy,
                                      distance=distance, pixel_size=pixel_size)
        intensity = intensity[:, margin:margin + n_rows].astype(np.float64)
        for i in range(stop - start):
            rng = np.random.default_rng([seed, 11, start + i])
            counts = rng.poisson(photons * np.clip(intensity[i], 0, None)) + dark_level
            projections[start + i] = np.clip(counts, 0, 65535).astype(np.uint16)
    rng = np.random.default_rng([seed, 12])
    flats = np.clip(rng.poisson(photons, (8, n_rows, size)) + dark_level, 0, 65535).astype(np.uint16)
    darks = np.full((4, n_rows, size), dark_level, np.uint16)
    simulation = {"n_cols": int(size), "n_rows": n_rows, "n_angles": n_angles,
                  "pixel_size": float(pixel_size), "photons": float(photons), "seed": int(seed),
                  "center": center, "energy": float(energy), "distance": float(distance),
                  "delta_beta": float(delta_beta), "beta": float(beta), "kind": "phase-contrast"}
    attrs = {"true_center": center, "true_delta_beta": float(delta_beta), "delta": delta,
             "beta": float(beta), "mu": mu, "phantom": phantom_to_json(phantom),
             "attenuation_per_pixel": mu * pixel_size, "simulation": json.dumps(simulation)}
    return from_arrays(projections, angles, flats=flats, darks=darks, pixel_size=pixel_size,
                       energy=energy, distance=distance, attrs=attrs)
