"""Simulated scans with a known answer: the sample data and the test ground truth.

A simulated scan is what a detector records of the analytic phantom in
:mod:`tomolab.data.phantom`: uint16 counts with a non-uniform beam that drifts
slowly, darks with an offset and read noise, Poisson noise at a chosen photon
count, the rotation axis at a chosen column off the detector middle, and
optionally pixel gain errors (rings) and zingers. The true volume is known
exactly (:func:`true_volume`), so reconstruction and centre finding are
measured, not eyeballed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import numpy as np

from tomolab.data.phantom import (default_phantom, phantom_from_json,
                                  phantom_slice, phantom_to_json, project_slice)
from tomolab.errors import ParameterError

__all__ = ["SimulationParameters", "simulation_parameters", "simulate_scan", "simulate_arrays",
           "simulate_flats_darks", "simulation_attrs", "iter_projection_slabs", "true_volume",
           "simulation_bytes"]

#: float64 temporaries of one projection in :func:`iter_projection_slabs` (chords of 3
#: sub-samples, 4 temporaries), in bytes per detector pixel
_BYTES_PER_PIXEL = 8 * 3 * 4
#: :func:`iter_projection_slabs` keeps a block's temporaries under this many bytes
BLOCK_MEMORY = 256 << 20


@dataclass(frozen=True)
class SimulationParameters:
    """Everything that defines a simulated scan (stored in its attrs).

    Lengths are in detector pixels except ``pixel_size`` (metres).
    """

    n_cols: int = 128
    n_rows: int = 32
    n_angles: int = 180
    center: float = 0.0
    angle_range: float = np.pi
    photons: float = 2.0e4
    max_attenuation: float = 1.5
    n_flats: int = 10
    n_darks: int = 10
    drift: float = 0.02
    dark_level: float = 100.0
    read_noise: float = 2.0
    ring_errors: float = 0.0
    zingers: float = 0.0
    pixel_size: float = 1.0e-6
    energy: float = 25.0
    distance: float = 0.05
    seed: int = 0
    phantom: str = field(default="", repr=False)

    @property
    def attenuation_per_pixel(self) -> float:
        """Scale from phantom values to attenuation per pixel of path."""
        return self.max_attenuation / (0.84 * self.n_cols * 1.5)

    @property
    def angles(self) -> np.ndarray:
        return np.linspace(0.0, self.angle_range, self.n_angles, endpoint=False)

    def shapes(self) -> list:
        return phantom_from_json(self.phantom)


def _check_rows_angles(n_rows, n_angles) -> None:
    if int(n_rows) < 1 or int(n_angles) < 2:
        raise ParameterError("need at least one row and two angles", where="n_rows/n_angles",
                             value=(n_rows, n_angles), fix="pass n_rows >= 1 and n_angles >= 2")


def _check_center(center: float, size: int) -> float:
    center = float(center)
    if not 0.0 <= center <= size - 1:
        raise ParameterError("the rotation axis must lie on the detector", where="center",
                             value=center, fix=f"pass a column between 0 and {size - 1}")
    return center


def _check_photons(photons: float) -> None:
    if not 10 <= photons <= 60000:
        raise ParameterError("photon count per pixel must fit uint16 counts", where="photons",
                             value=photons, fix="pass between 10 and 60000")


def _check_fraction(value, name: str, what: str, example: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not 0 <= value < 1:
        raise ParameterError(f"{what} must be a number from 0 to below 1", where=name,
                             value=value, fix=f"pass {example}")


def simulation_parameters(size: int = 128, n_rows: int | None = None,
                          n_angles: int | None = None, *, center: float | None = None,
                          **options) -> SimulationParameters:
    """The checked :class:`SimulationParameters` that :func:`simulate_scan` would use.

    Same arguments and defaults as :func:`simulate_scan`. With
    :func:`iter_projection_slabs`, :func:`simulate_flats_darks` and
    :func:`simulation_attrs` it writes a simulated scan to a file slab by
    slab, without holding the projections in memory.

    Examples
    --------
    >>> params = simulation_parameters(64, n_rows=4, n_angles=60, seed=1)
    >>> params.n_cols, params.n_rows, params.n_angles, params.seed
    (64, 4, 60, 1)
    """
    if not isinstance(size, (int, np.integer)) or not 16 <= size <= 4096:
        raise ParameterError("detector width must be an integer between 16 and 4096",
                             where="size", value=size, fix="use e.g. size=128 (64 to 2048 are typical)")
    n_rows = int(n_rows if n_rows is not None else max(8, size // 4))
    n_angles = int(n_angles if n_angles is not None else int(np.ceil(size * np.pi / 2)))
    _check_rows_angles(n_rows, n_angles)
    if center is None:
        center = (size - 1) / 2.0 + 0.0731 * size  # off the middle, not on a half pixel
    center = _check_center(center, size)
    _check_photons(options.get("photons", SimulationParameters.photons))
    _check_fraction(options.get("ring_errors", 0.0), "ring_errors", "relative gain error",
                    "e.g. 0.01 (1 %), or 0 for none")
    _check_fraction(options.get("zingers", 0.0), "zingers", "fraction of pixels hit",
                    "e.g. 1e-4, or 0 for none")
    phantom = options.pop("phantom", None)
    # keep the sample inside the field of view whatever the axis position
    margin = min(center, size - 1 - center) / size
    shapes = phantom if phantom is not None else default_phantom(
        size, n_rows, radius_fraction=min(0.42, 0.95 * margin))
    params = SimulationParameters(n_cols=int(size), n_rows=n_rows, n_angles=n_angles,
                                  center=center, phantom=phantom_to_json(shapes), **options)
    _check_memory(params, in_memory=False)
    return params


def _beam(params: SimulationParameters, rows: slice = slice(None)) -> np.ndarray:
    """Beam profile in photons per pixel (rows, cols) at the start of the scan."""
    r = np.arange(params.n_rows)[rows][:, None]
    c = np.arange(params.n_cols)[None, :]
    prof = np.exp(-((c - 0.45 * params.n_cols) / (0.9 * params.n_cols)) ** 2
                  - ((r - 0.5 * params.n_rows) / (1.5 * max(params.n_rows, 8))) ** 2)
    prof = prof * (1.0 + 0.03 * np.sin(2 * np.pi * c / max(params.n_cols / 7.3, 2)))
    return params.photons * prof / prof.max()


def _drift(params: SimulationParameters, time_fraction) -> np.ndarray:
    return 1.0 + params.drift * (np.asarray(time_fraction, float) - 0.5)


def _timeline(params: SimulationParameters):
    """Acquisition order: half the flats, the projections, the other half."""
    n_before = params.n_flats // 2
    total = params.n_flats + params.n_angles
    t_flats = np.r_[np.arange(n_before), np.arange(params.n_flats - n_before) + n_before + params.n_angles]
    t_proj = n_before + np.arange(params.n_angles)
    return t_proj / total, t_flats / total


def _gains(params: SimulationParameters) -> np.ndarray:
    rng = np.random.default_rng([params.seed, 7])
    if params.ring_errors <= 0:
        return np.ones((params.n_rows, params.n_cols))
    return 1.0 + params.ring_errors * rng.standard_normal((params.n_rows, params.n_cols))


def _counts(rng, expected, params: SimulationParameters) -> np.ndarray:
    counts = rng.poisson(expected).astype(np.float64)
    counts += params.dark_level + params.read_noise * rng.standard_normal(counts.shape)
    return np.clip(np.rint(counts), 0, 65535).astype(np.uint16)


def _block_length(params: SimulationParameters, memory: int = BLOCK_MEMORY) -> int:
    per_projection = params.n_rows * params.n_cols * _BYTES_PER_PIXEL
    return int(np.clip(memory // per_projection, 1, 64))


def simulation_bytes(params: SimulationParameters, *, in_memory: bool) -> int:
    """Host memory a simulation needs: streamed block by block, or (``in_memory``) as arrays.

    One block of projections with its float64 temporaries, the flats or
    darks (whichever are more) as they are drawn (five float64 temporaries
    a pixel), the beam and gains; ``in_memory`` adds the uint16 projections.

    Examples
    --------
    >>> params = simulation_parameters(256, n_rows=16, n_angles=400)
    >>> round(simulation_bytes(params, in_memory=True) / 1e6, 1)
    31.0
    """
    frame = params.n_rows * params.n_cols
    block = _block_length(params) * frame * (_BYTES_PER_PIXEL + 2)
    fields = max(params.n_flats, params.n_darks, 1) * frame * (8 * 5 + 2)
    need = block + fields + frame * 8 * 4
    if in_memory:
        need += params.n_angles * frame * 2 + (params.n_flats + params.n_darks) * frame * 2
    return int(need)


def _check_memory(params: SimulationParameters, *, in_memory: bool) -> None:
    from tomolab.devices import require_memory

    require_memory(simulation_bytes(params, in_memory=in_memory), backend="numpy",
                   what=f"simulating {params.n_angles} projections of {params.n_rows} × "
                        f"{params.n_cols}" + (" in memory" if in_memory else ""),
                   where="size/n_rows/n_angles",
                   value=(params.n_cols, params.n_rows, params.n_angles),
                   fix="a smaller size=, fewer n_rows= or n_angles="
                       + (" (or write it to a file block by block: tomolab simulate)"
                          if in_memory else ""))


def iter_projection_slabs(params: SimulationParameters, *, block: int | None = None,
                          memory: int = BLOCK_MEMORY) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(start, stop, counts)`` blocks of projections, in bounded memory.

    Each block is ``uint16`` of shape ``(stop - start, n_rows, n_cols)``. The
    block length keeps the float64 temporaries of one block under ``memory``
    bytes (a 2048² detector is simulated a projection or two at a time). The
    noise of each projection is seeded from ``(seed, index)``, so the scan is
    the same however it is cut into blocks.
    """
    if block is None:
        block = _block_length(params, memory)
    shapes = params.shapes()
    gains = _gains(params)
    beam = _beam(params)
    t_proj, _ = _timeline(params)
    Z = np.arange(params.n_rows) - (params.n_rows - 1) / 2.0
    cols = np.arange(params.n_cols)
    angles = params.angles
    for start in range(0, params.n_angles, block):
        stop = min(start + block, params.n_angles)
        line = project_slice(shapes, angles[start:stop], cols, Z, center=params.center)
        line *= params.attenuation_per_pixel
        expected = beam * gains * _drift(params, t_proj[start:stop])[:, None, None] * np.exp(-line)
        counts = np.empty(expected.shape, np.uint16)
        for i in range(stop - start):
            rng = np.random.default_rng([params.seed, 1, start + i])
            counts[i] = _counts(rng, expected[i], params)
            if params.zingers > 0:
                hit = rng.random(counts[i].shape) < params.zingers
                boost = rng.uniform(0.5, 2.0, size=int(hit.sum())) * params.photons
                counts[i][hit] = np.clip(counts[i][hit] + boost, 0, 65535).astype(np.uint16)
        yield start, stop, counts


def simulate_flats_darks(params: SimulationParameters) -> tuple[np.ndarray, np.ndarray]:
    """Flats ``(n_flats, row, col)`` and darks ``(n_darks, row, col)`` as uint16 counts."""
    _, t_flats = _timeline(params)
    rng = np.random.default_rng([params.seed, 2])
    flats = _counts(rng, _beam(params)[None] * _drift(params, t_flats)[:, None, None], params)
    darks = _counts(rng, np.zeros((params.n_darks, params.n_rows, params.n_cols)), params)
    return flats, darks


def simulate_arrays(size: int = 128, n_rows: int | None = None, n_angles: int | None = None, *,
                    center: float | None = None, **options):
    """Simulate a scan in memory and return plain arrays.

    Returns
    -------
    projections : ndarray (angle, row, col) uint16
    angles : ndarray (angle,) float64, radians
    flats, darks : ndarray uint16
    params : SimulationParameters
    """
    params = simulation_parameters(size, n_rows, n_angles, center=center, **options)
    _check_memory(params, in_memory=True)
    projections = np.empty((params.n_angles, params.n_rows, params.n_cols), np.uint16)
    for start, stop, block in iter_projection_slabs(params):
        projections[start:stop] = block
    flats, darks = simulate_flats_darks(params)
    return projections, params.angles, flats, darks, params


def simulate_scan(size: int = 128, n_rows: int | None = None, n_angles: int | None = None, *,
                  center: float | None = None, **options):
    """Simulate a scan of the analytic phantom, as :func:`tomolab.open_scan` returns one.

    Parameters
    ----------
    size : int
        Detector width in pixels (64 to 2048 are typical).
    n_rows : int, optional
        Detector rows (default ``size // 4``).
    n_angles : int, optional
        Projections over ``angle_range`` (default ``ceil(size * pi / 2)``).
    center : float, optional
        Column of the rotation axis (default 7.31 % of the width right of the middle).
    **options
        Any field of :class:`SimulationParameters`: ``photons``, ``ring_errors``
        (relative gain error of each pixel, e.g. 0.01), ``zingers`` (fraction of
        pixels hit per projection), ``drift``, ``pixel_size``, ``seed``, ...

    Returns
    -------
    xarray.Dataset
        ``projections``, ``flats``, ``darks`` (uint16) and ``angle`` in radians;
        attrs hold ``true_center`` and every simulation parameter.

    Examples
    --------
    >>> scan = simulate_scan(64, n_rows=4, n_angles=60)
    >>> scan.projections.shape, scan.attrs["true_center"] > 31.5
    ((60, 4, 64), True)
    """
    from tomolab.io import from_arrays

    projections, angles, flats, darks, params = simulate_arrays(size, n_rows, n_angles,
                                                                center=center, **options)
    scan = from_arrays(projections, angles, flats=flats, darks=darks, pixel_size=params.pixel_size,
                       energy=params.energy, distance=params.distance)
    scan.attrs.update(simulation_attrs(params))
    return scan


def simulation_attrs(params: SimulationParameters) -> dict:
    """The attrs a simulated scan carries (also written into simulated files)."""
    fields = asdict(params)
    fields.pop("phantom")
    return {"true_center": params.center, "simulation": json.dumps(fields),
            "phantom": params.phantom, "attenuation_per_pixel": params.attenuation_per_pixel}


def true_volume(scan_or_attrs, rows=None, *, supersample: int = 3) -> np.ndarray:
    """The phantom's attenuation sampled on the reconstruction grid.

    Parameters
    ----------
    scan_or_attrs : xarray.Dataset or dict
        A simulated scan (or its attrs).
    rows : slice or sequence of int, optional
        Detector rows (z) to sample; all by default.

    Returns
    -------
    ndarray (z, y, x) float32
        Attenuation in 1/m (per pixel of path divided by ``pixel_size``), the
        unit :func:`tomolab.reconstruct` returns.
    """
    attrs = getattr(scan_or_attrs, "attrs", scan_or_attrs)
    if "phantom" not in attrs:
        raise ParameterError("this scan has no ground truth", where="scan.attrs['phantom']",
                             value=None, fix="use a scan made by tomolab.data.simulate_scan")
    sim = json.loads(attrs["simulation"])
    shapes = phantom_from_json(attrs["phantom"])
    n_rows, n_cols = sim["n_rows"], sim["n_cols"]
    if rows is None:
        rows = slice(None)
    row_index = np.atleast_1d(np.arange(n_rows)[rows] if isinstance(rows, (slice, int, np.integer))
                              else np.asarray(rows))
    Z = row_index - (n_rows - 1) / 2.0
    scale = float(attrs["attenuation_per_pixel"]) / sim["pixel_size"]
    return np.stack([phantom_slice(shapes, z, n_cols, supersample=supersample) * scale
                     for z in Z]).astype(np.float32)
