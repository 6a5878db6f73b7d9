"""Analytic 3D phantoms with exact parallel-beam line integrals.

A phantom is a list of :class:`Ellipsoid` and :class:`Cylinder` shapes, each
with a linear attenuation coefficient added where it lies. Both shapes are
rotated about the vertical (rotation) axis only, so the cross-section at every
detector row is an ellipse, and an ellipse's line integral is known in closed
form. That gives the projections *and* the true volume without discretising
the object: the reference every reconstruction test is measured against.

Geometry (the convention of the whole package)
----------------------------------------------
Positions are in detector pixels, relative to the rotation axis. A point
``(X, Y)`` of a slice projects at angle ``theta`` onto the detector column
``center + X cos(theta) + Y sin(theta)``; the ray runs along
``(-sin(theta), cos(theta))``. At ``theta = 0`` a projection is the sum of the
slice over ``y``. The vertical coordinate of detector row ``r`` is
``Z = r - (n_rows - 1) / 2``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Ellipsoid", "Cylinder", "default_phantom", "tissue_phantom", "project_slice",
           "phantom_slice", "phantom_to_json", "phantom_from_json"]


@dataclass(frozen=True)
class Ellipsoid:
    """An ellipsoid of constant attenuation, rotated by ``phi`` about z.

    Lengths in pixels relative to the rotation axis and the detector's middle
    row; ``value`` is the attenuation added inside, per pixel of path.
    """

    x: float
    y: float
    z: float
    a: float
    b: float
    c: float
    phi: float
    value: float

    def cross_section(self, Z):
        """Semi-axes ``(A, B)`` of the ellipse cut at heights ``Z`` (0 outside)."""
        scale = np.sqrt(np.clip(1.0 - ((np.asarray(Z, float) - self.z) / self.c) ** 2, 0.0, None))
        return self.a * scale, self.b * scale


@dataclass(frozen=True)
class Cylinder:
    """An elliptic cylinder with its axis along z, from ``z0`` to ``z1``."""

    x: float
    y: float
    z0: float
    z1: float
    a: float
    b: float
    phi: float
    value: float

    def cross_section(self, Z):
        inside = (np.asarray(Z, float) >= self.z0) & (np.asarray(Z, float) <= self.z1)
        return self.a * inside, self.b * inside


def default_phantom(width: int, height: int, *, radius_fraction: float = 0.42) -> list:
    """A rock-core-like phantom: a cylinder with grains, pores and a tilted inclusion.

    Parameters
    ----------
    width : int
        Number of detector columns the sample must fit in (centred on the axis).
    height : int
        Number of detector rows.
    radius_fraction : float
        Sample radius as a fraction of ``width``.

    Examples
    --------
    >>> shapes = default_phantom(128, 64)
    >>> len(shapes) > 5
    True
    """
    r = radius_fraction * width
    h = 0.5 * height
    rng = np.random.default_rng(1234)  # a fixed layout: the same phantom every time
    shapes: list = [Cylinder(0.0, 0.0, -0.9 * h, 0.9 * h, r, 0.92 * r, 0.3, 1.0)]
    # dense grains
    for _ in range(6):
        rad = rng.uniform(0.08, 0.16) * r
        dist = rng.uniform(0.0, r * 0.92 - 1.2 * rad)
        ang = rng.uniform(0, 2 * np.pi)
        shapes.append(Ellipsoid(dist * np.cos(ang), dist * np.sin(ang),
                                rng.uniform(-0.5, 0.5) * h, rad, rad * rng.uniform(0.6, 1.0),
                                min(0.8 * h, rad * 1.5), rng.uniform(0, np.pi), 1.5))
    # pores (negative: empty space inside the cylinder)
    for _ in range(5):
        rad = rng.uniform(0.04, 0.09) * r
        dist = rng.uniform(0.0, r * 0.92 - 1.2 * rad)
        ang = rng.uniform(0, 2 * np.pi)
        shapes.append(Ellipsoid(dist * np.cos(ang), dist * np.sin(ang),
                                rng.uniform(-0.6, 0.6) * h, rad, rad, rad, 0.0, -1.0))
    # a thin elongated inclusion
    shapes.append(Ellipsoid(0.3 * r, -0.35 * r, 0.0, 0.35 * r, 0.05 * r, 0.7 * h, 1.1, 0.8))
    return shapes


def tissue_phantom(width: int, height: int, *, radius_fraction: float = 0.7,
                   features: int = 40, seed: int = 4321) -> list:
    """A soft-tissue-like sample wider than the field of view (a "local" or "interior" scan).

    A body of water-like attenuation ``radius_fraction × width`` in radius (0.7:
    the sample sticks out of both sides of the detector at every angle), with
    ``features`` small inclusions that differ from it by a few percent (vessels,
    fat, denser nodules) and two larger organs, as in the real scans that
    centre finding and reconstruction have to survive: little contrast, and
    no empty air at the detector's edges to anchor a method.

    Examples
    --------
    >>> shapes = tissue_phantom(256, 8)
    >>> len(shapes) > 40, shapes[0].a > 128
    (True, True)
    """
    r = radius_fraction * width
    h = 0.5 * height
    rng = np.random.default_rng(seed)
    shapes: list = [Cylinder(0.03 * width, -0.02 * width, -2 * h - 1, 2 * h + 1, r, 0.94 * r, 0.4, 1.0),
                    Ellipsoid(-0.12 * width, 0.1 * width, 0.0, 0.18 * width, 0.11 * width,
                              8 * h + 4, 0.7, 0.06),
                    Ellipsoid(0.2 * width, 0.05 * width, 0.0, 0.09 * width, 0.14 * width,
                              8 * h + 4, -0.3, -0.05)]
    for _ in range(features):
        rad = rng.uniform(0.004, 0.03) * width
        dist = rng.uniform(0.0, 0.6 * width)
        ang = rng.uniform(0, 2 * np.pi)
        shapes.append(Ellipsoid(dist * np.cos(ang), dist * np.sin(ang), rng.uniform(-h, h),
                                rad, rad * rng.uniform(0.4, 1.0), 3 * h + 2 * rad,
                                rng.uniform(0, np.pi), rng.choice([-0.8, -0.4, 0.5, 1.0, 2.0])))
    return shapes


def _ellipse_chord(s, theta, x0, y0, A, B, phi):
    """Chord length through an ellipse along the ray at detector coordinate s."""
    a2 = (A * np.cos(theta - phi)) ** 2 + (B * np.sin(theta - phi)) ** 2
    s_rel = s - (x0 * np.cos(theta) + y0 * np.sin(theta))
    with np.errstate(invalid="ignore", divide="ignore"):
        chord = np.where(a2 > 0, 2.0 * A * B / np.where(a2 > 0, a2, 1.0)
                         * np.sqrt(np.clip(a2 - s_rel ** 2, 0.0, None)), 0.0)
    return chord


def project_slice(shapes, theta, cols, Z, *, center: float, supersample: int = 3):
    """Exact line integrals of the phantom at heights ``Z`` for angles ``theta``.

    Parameters
    ----------
    shapes : list of Ellipsoid or Cylinder
    theta : array_like, shape (n_angles,)
        Angles in radians.
    cols : array_like, shape (n_cols,)
        Detector column indices.
    Z : array_like, shape (n_rows,)
        Heights of the detector rows, relative to the middle row.
    center : float
        Detector column of the rotation axis.
    supersample : int
        Sub-samples per detector pixel (the pixel's average over its width).

    Returns
    -------
    ndarray, shape (n_angles, n_rows, n_cols), float64

    Examples
    --------
    >>> disk = [Cylinder(0, 0, -5, 5, 10, 10, 0, 1.0)]
    >>> p = project_slice(disk, [0.0], np.arange(41), [0.0], center=20.0, supersample=1)
    >>> round(float(p[0, 0, 20]), 6)  # the diameter
    20.0
    """
    theta = np.asarray(theta, float)[:, None, None, None]
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    s = (np.asarray(cols, float)[:, None] + offsets[None, :] - center)[None, None]  # (1,1,col,sub)
    Z = np.asarray(Z, float)
    out = np.zeros((theta.shape[0], Z.size, s.shape[2]), float)
    for shape in shapes:
        A, B = shape.cross_section(Z)
        rows = np.nonzero(A > 0)[0]
        if rows.size == 0:
            continue
        chord = _ellipse_chord(s, theta, shape.x, shape.y,
                               A[rows][None, :, None, None], B[rows][None, :, None, None], shape.phi)
        out[:, rows, :] += shape.value * chord.mean(axis=-1)
    return out


def phantom_slice(shapes, Z: float, n: int, *, supersample: int = 3) -> np.ndarray:
    """The true slice at height ``Z`` on an ``n × n`` grid centred on the axis.

    Voxel ``(iy, ix)`` sits at ``X = ix - (n - 1) / 2``, ``Y = iy - (n - 1) / 2``;
    its value is the shape values averaged over ``supersample²`` points.

    Examples
    --------
    >>> disk = [Cylinder(0, 0, -5, 5, 10, 10, 0, 1.0)]
    >>> img = phantom_slice(disk, 0.0, 31, supersample=1)
    >>> float(img[15, 15]), float(img[0, 0])
    (1.0, 0.0)
    """
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = np.arange(n) - (n - 1) / 2.0
    coords = (grid[:, None] + offsets[None, :]).ravel()
    Y, X = np.meshgrid(coords, coords, indexing="ij")
    img = np.zeros_like(X)
    for shape in shapes:
        A, B = shape.cross_section(Z)
        A, B = float(A), float(B)
        if A <= 0:
            continue
        c, s = np.cos(shape.phi), np.sin(shape.phi)
        u = (X - shape.x) * c + (Y - shape.y) * s
        v = -(X - shape.x) * s + (Y - shape.y) * c
        img += shape.value * ((u / A) ** 2 + (v / B) ** 2 <= 1.0)
    return img.reshape(n, supersample, n, supersample).mean(axis=(1, 3))


def phantom_to_json(shapes) -> str:
    """Serialise a phantom (kept in the attrs of simulated scans)."""
    return json.dumps([{"kind": type(s).__name__, **asdict(s)} for s in shapes])


def phantom_from_json(text: str) -> list:
    """Inverse of :func:`phantom_to_json`."""
    kinds = {"Ellipsoid": Ellipsoid, "Cylinder": Cylinder}
    return [kinds[d.pop("kind")](**d) for d in json.loads(text)]
