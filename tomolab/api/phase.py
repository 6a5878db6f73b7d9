"""δ/β sweep of a scan: trial slices for many Paganin ratios, computed at once.

The api-level wrapper of :func:`tomolab.sweep.sweep_phase_slices`:
it reads the band of rows that Paganin's filter needs around the chosen row,
takes the physical parameters from the scan's attrs unless given, and returns
an :class:`xarray.DataArray` ``(ratio, y, x)`` with a score per ratio.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from tomolab.api.center import _require_on, find_center, read_bytes
from tomolab.api.provenance import provenance
from tomolab.api.validate import (check_center, check_choice, check_coverage, check_row,
                                  check_scan, check_size, iterative_hint, plane_coords)
from tomolab.arrays import to_numpy
from tomolab.errors import ParameterError
from tomolab.sanity import check_quantity

__all__ = ["sweep_phase", "physical_parameter", "DEFAULT_RATIOS"]

#: default trial δ/β: 25 ratios from 10 to 3000, 1.27 apart on a log scale
DEFAULT_RATIOS = np.geomspace(10.0, 3000.0, 25)

_PHYSICAL = {
    "energy": ("keV", "photon energy", "20.0"),
    "distance": ("m", "sample-detector distance", "0.05"),
    "pixel_size": ("m", "effective pixel size", "1e-6"),
}


def physical_parameter(scan, name: str, value=None) -> float:
    """``value`` if given, else ``scan.attrs[name]``; a positive finite number or a clear error.

    Examples
    --------
    >>> import xarray as xr
    >>> physical_parameter(xr.Dataset(attrs={"energy": 25.0}), "energy")
    25.0
    >>> physical_parameter(xr.Dataset(), "distance", 0.1)
    0.1
    """
    unit, what, example = _PHYSICAL[name]
    source = "argument"
    if value is None:
        value = scan.attrs.get(name)
        source = f"scan.attrs[{name!r}]"
        if value is None or (isinstance(value, float) and np.isnan(value)):
            raise ParameterError(
                f"the {what} is needed and the scan does not record it (no attrs[{name!r}])",
                where=name, value=None,
                fix=f"pass {name}=<{unit}> (e.g. {name}={example}), or set "
                    f"scan.attrs[{name!r}] (in {unit})")
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number) or number <= 0:
        raise ParameterError(f"the {what} must be a positive number in {unit} (from {source})",
                             where=name, value=value, fix=f"pass e.g. {name}={example}")
    return check_quantity(name, number, fix=f"pass {name} in {unit}, e.g. {name}={example}")


def sweep_phase(scan, *, row: int | None = None, ratios=None, center, energy=None, distance=None,
                pixel_size=None, filter: str = "ramp", score: str = "levels",
                size: int | None = None, backend: str = "auto", normalize: bool = True,
                progress=None, cancel=None):
    """Trial slices of one row at many δ/β ratios (Paganin), computed at once, each scored.

    Parameters
    ----------
    scan : xarray.Dataset
        From :func:`tomolab.open_scan` or :func:`tomolab.from_arrays`, raw
        counts with flats (or ``normalize=False`` for transmission ``I/I0``).
    row : int, optional
        Detector row (default: the middle row). Paganin's filter is 2D, so the
        rows within :func:`tomolab.prep.paganin_halo` of it are
        read as well (those the detector has).
    ratios : array_like, optional
        Trial δ/β (default :data:`DEFAULT_RATIOS`, 10 to 3000).
    center : float or "auto"
        Detector column of the rotation axis in pixels (``"auto"``:
        :func:`tomolab.find_center` at ``row``).
    energy, distance, pixel_size : float, optional
        keV, metres, metres; default ``scan.attrs``.
    filter : str
        Reconstruction filter.
    score : {"levels", "entropy"}
        See :func:`tomolab.sweep.phase_scores`.
    size : int, optional
        Width of the trial slices (default: the detector width).
    backend : {"auto", "numpy", "cupy"}
    normalize : bool
        Flat/dark correction (``False``: the projections are ``I/I0`` already).
    progress, cancel : callable, optional
        ``progress(done, total)`` in ratios, when the trial slices start and
        after each batch (on the CPU about every half second; on the GPU all
        ratios are one batch); ``cancel()`` is polled between batches and
        raises :class:`tomolab.errors.Cancelled` when it returns True.

    Returns
    -------
    xarray.DataArray (ratio, y, x) float32
        One slice per ratio: the attenuation ``mu`` (1/m with a pixel size) that
        a Paganin reconstruction at that δ/β gives, i.e. ``4 pi beta / lambda``
        inside a homogeneous material. Coordinate ``score`` along ``ratio``
        (1 = best) and attrs ``best_ratio``, ``row``, ``center``,
        ``energy``, ``distance``, ``pixel_size``, ``halo``, ``band`` and every
        other parameter.

    Examples
    --------
    >>> from tomolab.data.phase_contrast import simulate_phase_scan
    >>> scan = simulate_phase_scan(64, n_rows=8, n_angles=90, delta_beta=100.0, distance=0.1)
    >>> stack = sweep_phase(scan, center=scan.attrs["true_center"], ratios=[30, 100, 300],
    ...                     backend="numpy")
    >>> stack.dims, stack.sizes["ratio"]
    (('ratio', 'y', 'x'), 3)
    """
    import xarray as xr

    from tomolab.api.center import n_angles_cols
    from tomolab.prep import padded_shape, paganin_halo, paganin_length
    from tomolab.sweep import (PHASE_SCORES, check_ratios, phase_scores, phase_sweep_bytes,
                               sweep_phase_slices)
    from tomolab.devices import resolve_backend
    from tomolab.engine import line_integrals
    from tomolab.recon import FILTERS


    backend = resolve_backend(backend)
    check_choice(filter, FILTERS, where="filter", what="reconstruction filter")
    check_choice(score, PHASE_SCORES, where="score", what="δ/β sweep score")
    n_rows = int(scan.sizes["row"])
    row = check_row(scan, row)
    ratios = check_ratios(DEFAULT_RATIOS if ratios is None else ratios)
    energy = physical_parameter(scan, "energy", energy)
    distance = physical_parameter(scan, "distance", distance)
    pixel_size = physical_parameter(scan, "pixel_size", pixel_size)
    size = check_size(scan, size)
    angles = scan["angle"].values
    check_coverage(scan, what=f"the trial slices show streaks and a missing wedge; for the "
                              f"volume {iterative_hint()}")
    check_scan(scan, normalize=normalize)
    center_source = "given"
    if isinstance(center, str) and center == "auto":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimate = find_center(scan, row=row, backend=backend, normalize=normalize)
        center = estimate.center
        center_source = f"auto ({' + '.join(estimate.estimates)} at row {row})"
    center = check_center(scan, center)

    halo = paganin_halo(ratios.max(), energy, distance, pixel_size)
    first, last = max(0, row - halo), min(n_rows, row + halo + 1)
    n_cols = int(scan.sizes["col"])
    padded = padded_shape((last - first, n_cols), True,
                          paganin_length(ratios.max(), energy, distance, pixel_size))
    _require_on(backend, read_bytes(scan, last - first, normalize=normalize)
                + phase_sweep_bytes(angles.size, last - first, n_cols, ratios.size, size,
                                    padded[1]),
                2 * ratios.size * size * size * 4,
                what=f"{ratios.size} trial slices of {size} × {size} pixels from a band of "
                     f"{last - first} rows × {n_angles_cols(scan)}",
                where="ratios", value=f"{ratios.size} ratios",
                fix="fewer ratios (ratios=), a smaller size=, fewer angles "
                    "(scan.isel(angle=slice(None, None, 2))), or a smaller largest ratio "
                    "(its filter reaches further: a wider band of rows)")
    started = time.perf_counter()
    band = line_integrals(scan, slice(first, last), backend=backend, normalize=normalize,
                          log=False)
    stack = sweep_phase_slices(band, angles, ratios, row_in_band=row - first, center=center,
                               energy=energy, distance=distance, pixel_size=pixel_size,
                               filter=filter, size=size, progress=progress, cancel=cancel)
    del band
    scores = phase_scores(stack, score=score)
    stack = to_numpy(stack)
    stack *= np.float32(1.0 / pixel_size)
    elapsed = time.perf_counter() - started

    best = float(ratios[int(np.argmax(scores))])
    attrs = {
        "long_name": "trial slices, one per δ/β (Paganin)",
        "units": "1/m",
        **provenance(scan, backend=backend, normalize=normalize, best_ratio=best, row=row,
                     center=float(center), center_source=center_source, energy=energy,
                     distance=distance, pixel_size=pixel_size, halo=int(halo),
                     band=f"{first}:{last}", filter=filter, score_method=score,
                     n_angles=int(angles.size), seconds=round(elapsed, 4)),
    }
    if last - first < 2 * halo + 1:
        attrs["band_note"] = ("the detector has fewer rows than the filter reaches; the band is "
                              "continued with its edge rows, as retrieve_phase pads")
    return xr.DataArray(stack, dims=("ratio", "y", "x"), name="trial_slices", attrs=attrs,
                        coords={"ratio": ("ratio", ratios, {"long_name": "δ/β"}),
                                "score": ("ratio", scores, {"long_name": "two-level score, 1 = best"}),
                                **plane_coords(size, pixel_size)})
