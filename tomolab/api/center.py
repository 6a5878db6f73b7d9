"""Centre of rotation at the api level: the automatic estimate and the trial-slice sweep."""

from __future__ import annotations

import time
import warnings

import numpy as np

from tomolab.api.provenance import provenance
from tomolab.api.validate import (check_centers, check_choice, check_coverage, check_row,
                                  check_scan, check_size, half_turn, plane_coords, source_name,
                                  user_stacklevel)
from tomolab.arrays import to_numpy
from tomolab.center.centroid import CenterScore
from tomolab.errors import ParameterError
from tomolab.sanity import check_whole_number

__all__ = ["CenterEstimate", "find_center", "combine_centers", "sweep_center", "sweep_binning",
           "CENTER_AGREEMENT"]


class CenterEstimate(CenterScore):
    """``(center, score)`` from :func:`find_center`, with what each method found.

    Unpacks as a pair (``center, score = find_center(scan)``); ``estimates``
    maps each method that ran to its own ``(center, score)``, and ``spread``
    is how far apart the methods that counted were (pixels; 0 when only one
    did).
    """

    def __new__(cls, center: float, score: float, estimates: dict, spread: float = 0.0):
        self = super().__new__(cls, (float(center), float(score)))
        self.estimates = {name: (float(c), float(sc)) for name, (c, sc) in estimates.items()}
        self.spread = float(spread)
        return self


#: two methods further apart than this (pixels) are reported as disagreeing
CENTER_AGREEMENT = 0.5
#: rows of the 0°/180° pair registered by phase correlation: two frames, so cheap
PAIR_ROWS = 64
#: below this score the centroid fit of a scan of less than 180° is no answer: find_center
#: asks for the centre (about ±1 px of standard error, or a sample leaving the field of view)
NO_ANSWER_SCORE = 0.05


def _agreement(distance: float) -> float:
    """Factor on a score for methods ``distance`` px apart: 1 together, ½ at CENTER_AGREEMENT."""
    return 1.0 / (1.0 + (distance / CENTER_AGREEMENT) ** 2)


def read_bytes(scan, n_rows: int, *, n_angles: int | None = None, normalize: bool = True) -> int:
    """Memory of :func:`tomolab.engine.line_integrals` of ``n_rows`` rows."""
    n_angles = int(scan.sizes["angle"]) if n_angles is None else int(n_angles)
    n_cols = int(scan.sizes["col"])
    itemsize = scan["projections"].dtype.itemsize
    fields = sum(int(scan.sizes[d]) for d in ("flat", "dark") if d in scan.sizes)
    fields = fields if normalize else 0
    return int(n_angles * n_rows * n_cols * (itemsize + 4)
               + (fields * itemsize + 8 * 3) * n_rows * n_cols)


def _require_on(backend: str, need_device: int, need_host: int, **message) -> None:
    """:func:`tomolab.devices.require_memory` on the backend, and on the host for the results."""
    from tomolab.devices import require_memory

    require_memory(need_device, backend=backend, **message)
    if backend == "cupy":
        require_memory(need_host, backend="numpy", **message)


def center_bytes(scan, *, method: str, rows_averaged: int) -> int:
    """Memory :func:`find_center` needs at least for ``method`` (``"auto"``: both, one at a time).

    Vo: the sinogram of ``rows_averaged`` rows over 180° as it is read, its
    smoothed, mirrored and transformed copies, and one trial centre's
    batch. Phase correlation: the two frames of :data:`PAIR_ROWS` rows, in
    float64 with their complex128 spectra and the upsampled cross-power.
    The batches of trial centres grow into free memory when there is room;
    this is the least they need.
    """
    n_angles, n_cols = int(scan.sizes["angle"]), int(scan.sizes["col"])
    n_rows = int(scan.sizes["row"])
    need = 0
    if method in ("auto", "vo"):
        half = min(n_angles, int(np.ceil(n_angles / 2)) + 1) if n_angles > 2 else n_angles
        band = min(n_rows, max(1, rows_averaged) // 2 * 2 + 1)
        sinogram = half * n_cols * 4
        per_center = half * (8 * (n_cols + 1) + 4 * 2 * n_cols + 8 * n_cols
                             + 3 * 8 * 2 * (n_cols // 2 + 1))
        need = read_bytes(scan, band, n_angles=n_angles) // n_angles * half \
            + 12 * sinogram + per_center
    if method in ("auto", "phase-correlation"):
        band = min(n_rows, max(rows_averaged, PAIR_ROWS) // 2 * 2 + 1)
        pair = read_bytes(scan, band, n_angles=2) + 2 * band * n_cols * 16 * 8
        need = max(need, pair)
    if method in ("auto", "centroid"):  # the band over every angle, summed into float64 copies
        band = min(n_rows, max(1, rows_averaged) // 2 * 2 + 1)
        need = max(need, read_bytes(scan, band) + 4 * n_angles * n_cols * 8)
    return int(need)


def find_center(scan, *, row: int | None = None, method: str = "auto", rows_averaged: int = 5,
                backend: str = "auto", normalize: bool = True, log: bool = True):
    """Find the rotation axis: a detector column in pixels, and a trust score.

    Parameters
    ----------
    scan : xarray.Dataset
        From :func:`tomolab.open_scan` or :func:`tomolab.from_arrays`.
    row : int, optional
        Detector row to use (default: the middle row).
    method : {"auto", "vo", "phase-correlation", "centroid"}
        ``"vo"``: Vo's Fourier metric on the sinogram of ``rows_averaged``
        rows. ``"phase-correlation"``: registration of the projections at 0°
        and 180° (:data:`PAIR_ROWS` rows around ``row``, or ``rows_averaged``
        if more: two frames, so cheap). ``"centroid"``: the projections'
        centres of mass fitted over the angles
        (:func:`tomolab.center.find_center_centroid`): any angular range, for
        a sample inside the field of view. ``"auto"`` (default): on a scan
        over 180°, Vo and the 0°/180° pair where the scan has one, combined
        by their scores; when they disagree by more than half a pixel, trial
        slices between them (:func:`sweep_center`) give a third centre, the
        answer is the median of the three, and a warning names all three. On
        a scan that leaves out a wedge of directions (a ±60° tilt series,
        0°–120°: :func:`tomolab.center.angular_coverage`) neither can work and
        the trial slices' sharpness hardly moves with the centre, so
        ``"auto"`` is the centroid fit; when even that cannot place the
        centre (score below :data:`NO_ANSWER_SCORE`: an uncertainty of about
        a pixel or more, a sample leaving the field of view) it asks for one.
    rows_averaged : int
        Number of neighbouring rows averaged into the sinogram (noise).
    backend : {"auto", "numpy", "cupy"}
    normalize, log : bool
        Flat/dark correction and ``-log``, as for :func:`tomolab.reconstruct`:
        pass ``normalize=False, log=False`` for data that are already line
        integrals (a second ``-log`` moves the centre).

    Returns
    -------
    CenterEstimate
        Unpacks as ``center, score``: the detector column of the rotation axis,
        and a score between 0 and 1. Below :data:`tomolab.center.LOW_SCORE`,
        or when the methods disagree by more than half a pixel, a warning says
        not to trust the answer and suggests :func:`tomolab.sweep_center`.
        ``.estimates`` holds each method's own ``(center, score)``.

    Raises
    ------
    tomolab.errors.ParameterError
        On a scan of less than 180° whose centre the centroid fit cannot
        place: pass the centre instead.

    Examples
    --------
    >>> import numpy as np, tomolab
    >>> scan = tomolab.data.simulate_scan(96, n_rows=8, n_angles=180)
    >>> center, score = tomolab.find_center(scan, backend="numpy")
    >>> abs(center - scan.attrs["true_center"]) < 0.5
    True
    >>> tilt = scan.isel(angle=slice(0, 120))                   # 0°–119°: a missing wedge
    >>> estimate = tomolab.find_center(tilt, backend="numpy")
    >>> list(estimate.estimates), abs(estimate.center - scan.attrs["true_center"]) < 0.5
    (['centroid'], True)
    """
    from tomolab.center import CENTER_METHODS, LOW_SCORE, angular_coverage, opposite_pair
    from tomolab.devices import resolve_backend
    from tomolab.engine import line_integrals

    if method != "auto":
        check_choice(method, CENTER_METHODS, where="method", what="centre-finding method")
    backend = resolve_backend(backend)
    n_rows = int(scan.sizes["row"])
    row = check_row(scan, row)
    rows_averaged = check_whole_number(rows_averaged, "rows_averaged", fix="pass e.g. rows_averaged=5")
    check_scan(scan, normalize=normalize)
    angles = scan["angle"].values
    need = center_bytes(scan, method=method, rows_averaged=int(rows_averaged))
    _require_on(backend, need, need,
                what=f"finding the centre of this scan ({n_angles_cols(scan)})",
                where=source_name(scan),
                fix="fewer angles (scan.isel(angle=slice(None, None, 2))), a smaller "
                    "rows_averaged=, or run where more memory is available")

    def band(count):
        half = max(1, count) // 2
        return slice(max(0, row - half), min(n_rows, row + half + 1))

    coverage = angular_coverage(angles)
    if method == "auto" and coverage.limited:
        return _limited_angle_center(scan, row, band(rows_averaged), angles, coverage,
                                     backend=backend, normalize=normalize, log=log)
    estimates = {}
    if method == "centroid":
        data = line_integrals(scan, band(rows_averaged), backend=backend, normalize=normalize,
                              log=log)
        estimates["centroid"] = CENTER_METHODS["centroid"](data, angles)
    if method in ("auto", "vo"):
        keep = half_turn(angles, fix='use method="centroid" (or "auto", which picks it for '
                                     'scans of less than 180°), or pass center=COLUMN')
        data = line_integrals(scan.isel(angle=keep), band(rows_averaged), backend=backend,
                              normalize=normalize, log=log)
        estimates["vo"] = CENTER_METHODS["vo"](data.mean(axis=1))
    if method in ("auto", "phase-correlation"):
        try:
            i, j = opposite_pair(angles)
        except ParameterError:
            if method != "auto":
                raise
        else:
            data = line_integrals(scan.isel(angle=[i, j]), band(max(rows_averaged, PAIR_ROWS)),
                                  backend=backend,
                                  normalize=normalize, log=log)
            estimates["phase-correlation"] = CENTER_METHODS["phase-correlation"](data[0], data[1])
    result = combine_centers(estimates)
    if method == "auto" and result.spread > CENTER_AGREEMENT:
        result = _settle_by_sweep(scan, row, estimates, backend=backend, normalize=normalize,
                                  log=log)
    center, score = result
    where = f"{source_name(scan)}, row {row}"
    found = ", ".join(f"{name} {c:.2f} (score {sc:.2f})" for name, (c, sc) in result.estimates.items())
    disagree = result.spread > CENTER_AGREEMENT
    if score < LOW_SCORE or disagree:
        lo = min(c for c, _ in result.estimates.values())
        hi = max(c for c, _ in result.estimates.values())
        why = [f"the methods disagree by {result.spread:.2f} px (> {CENTER_AGREEMENT} px)"] \
            if disagree else []
        why += [f"it has a low score ({score:.2f} < {LOW_SCORE})"] if score < LOW_SCORE else []
        warnings.warn(f"{where}: centre {center:.2f}, but {' and '.join(why)} [{found}]; do not "
                      f"trust it blindly: look at trial slices with tomolab.sweep_center(scan, "
                      f"row={row}, centers=numpy.arange({np.floor(lo) - 3:.0f}, "
                      f"{np.ceil(hi) + 3.5:.1f}, 0.5))"
                      f"{' or try the other method' if len(estimates) == 1 else ''}", stacklevel=2)
    return result


def _limited_angle_center(scan, row, rows, angles, coverage, **options) -> CenterEstimate:
    """:func:`find_center` on a scan that leaves out a wedge: the centroid fit, or a request."""
    from tomolab.center import LOW_SCORE, centroid_fit
    from tomolab.engine import line_integrals

    where = f"{source_name(scan)}, row {row}"
    data = line_integrals(scan, rows, **options)
    try:
        fit = centroid_fit(data, angles)
    except ParameterError as exc:
        raise ParameterError(f"{coverage.describe()}; the centroid fit cannot find the "
                             f"centre there: {exc.what}", where=where, value=None,
                             fix="pass the centre (center=COLUMN), e.g. one found on a full "
                                 "180° scan of the same setup") from None
    found = (f"centroid fit {fit.center:.2f} ± {fit.uncertainty:.2f} px, total attenuation "
             f"varying {100 * fit.mass_variation:.1f} % over the angles")
    if fit.score < NO_ANSWER_SCORE:
        raise ParameterError(f"{coverage.describe()}; the centroid fit cannot find the centre "
                             f"over {coverage.covered:.4g}° ({found}, score {fit.score:.2f})",
                             where=where, value=None,
                             fix="pass the centre (center=COLUMN), e.g. one found on a full "
                                 "180° scan of the same setup")
    if fit.score < LOW_SCORE:
        warnings.warn(f"{where}: centre {fit.center:.2f}, but it has a low score ({fit.score:.2f} "
                      f"< {LOW_SCORE}: {found}) on a scan that covers {coverage.covered:.4g}° of "
                      f"180°; do not trust it blindly: pass the centre if you know it (a full "
                      f"scan of the same setup), or look at trial slices with "
                      f"tomolab.sweep_center(scan, row={row}, centers=numpy.arange("
                      f"{np.floor(fit.center) - 5:.0f}, {np.ceil(fit.center) + 5.5:.1f}, 0.5)) "
                      f"(over less than 180° their sharpness moves little with the centre)",
                      stacklevel=user_stacklevel())
    return CenterEstimate(fit.center, fit.score, {"centroid": tuple(fit)})


def n_angles_cols(scan) -> str:
    """``"1800 angles × 2560 columns"`` for messages."""
    return f"{scan.sizes['angle']} angles × {scan.sizes['col']} columns"


def _settle_by_sweep(scan, row, estimates, **options) -> CenterEstimate:
    """When the methods disagree, trial slices between them add a third opinion.

    The sweep runs 0.5 px apart from 2 px below the lowest estimate to 2 px
    above the highest; its own score is how far the range's ends fall below
    its peak (1: a clear peak inside, 0: none). The answer is the median of the
    three centres (one method gone astray cannot move it); its score is the
    median score times the agreement factor of :func:`combine_centers` for the
    distance from the median to the nearest other centre.
    """
    n_cols = int(scan.sizes["col"])
    lo = min(c for c, _ in estimates.values())
    hi = max(c for c, _ in estimates.values())
    centers = np.unique(np.clip(np.arange(np.floor(lo) - 2.0, np.ceil(hi) + 2.25, 0.5), 0, n_cols - 1))
    # the same trial slices on every backend: gridrec on columns binned as the CPU bins them
    # (on the H100 the batched half-precision backprojection, unbinned, put a 5-row scan's
    # peak 1.3 px off where these were within 0.1 px)
    stack = sweep_center(scan, row=row, centers=centers, method="gridrec",
                         binning=sweep_binning(n_cols, "numpy"), **options)
    scores = stack["score"].values
    clarity = float(np.clip(1.0 - 0.5 * (scores[0] + scores[-1]), 0.0, 1.0))
    estimates = {**estimates, "sweep": (float(stack.attrs["best_center"]), clarity)}
    found = np.array([c for c, _ in estimates.values()])
    center = float(np.median(found))
    nearest = float(np.sort(np.abs(found - center))[1])
    score = float(np.median([sc for _, sc in estimates.values()]))
    # spread: the disagreement that called for the sweep
    return CenterEstimate(center, score * _agreement(nearest), estimates, spread=hi - lo)


def combine_centers(estimates: dict) -> CenterEstimate:
    """One centre from several methods' ``(center, score)``: score-weighted, disagreement-aware.

    Methods scoring below :data:`tomolab.center.LOW_SCORE` are left out while
    another scores above it. The centre is the score-weighted mean of the rest;
    the score is their weighted mean score times ``1 / (1 + (spread / 0.5)²)``,
    so two trusted methods half a pixel apart halve it and two pixels apart
    take it below ``LOW_SCORE``.

    Examples
    --------
    >>> round(combine_centers({"vo": (100.0, 0.8), "phase-correlation": (100.2, 0.9)}).center, 3)
    100.106
    >>> round(combine_centers({"vo": (100.0, 0.8), "phase-correlation": (102.0, 0.8)}).score, 3)
    0.047
    >>> combine_centers({"vo": (100.0, 0.8), "phase-correlation": (130.0, 0.05)}).center
    100.0
    """
    from tomolab.center import LOW_SCORE

    trusted = {name: e for name, e in estimates.items() if e[1] >= LOW_SCORE} or estimates
    centers = np.array([c for c, _ in trusted.values()], float)
    scores = np.array([sc for _, sc in trusted.values()], float)
    weights = np.clip(scores, 1e-6, None)
    center = float((centers * weights).sum() / weights.sum())
    spread = float(centers.max() - centers.min())
    score = float((scores * weights).sum() / weights.sum()) * _agreement(spread)
    return CenterEstimate(center, score, estimates, spread=spread)


#: what :func:`sweep_center` warns of on a scan of less than 180°
_SWEEP_ON_A_WEDGE = ("the trial slices show streaks and a missing wedge, and their sharpness "
                     "moves little with the centre (a wrong centre mostly moves the sample): "
                     "use best_center as a hint, and the centre from tomolab.find_center "
                     "(its centroid fit) or from a full scan of the same setup")

#: the CPU's trial slices are binned to at most this width (see :func:`sweep_binning`)
CPU_SWEEP_WIDTH = 1024


def sweep_binning(n_cols: int, backend: str) -> int:
    """Columns averaged per pixel of the CPU's trial slices: none on the GPU, else to ≤ 1024.

    A sweep is scored on slices averaged down to a few hundred pixels anyway.
    Measured on two CPU cores, 41 centres of a 2560-wide scan from 2000
    angles: 12.7 s binned by 2 (1280 wide), 4.5 s binned by 3 (854 wide), the
    peak 0.15 and 0.19 px from the true centre.

    Examples
    --------
    >>> sweep_binning(2560, "numpy"), sweep_binning(1024, "numpy"), sweep_binning(2560, "cupy")
    (3, 1, 1)
    """
    return 1 if backend == "cupy" else max(1, -(-int(n_cols) // CPU_SWEEP_WIDTH))


def sweep_center(scan, *, row: int | None = None, centers=None, filter: str = "ramp",
                 score: str = "entropy", size: int | None = None, backend: str = "auto",
                 normalize: bool = True, log: bool = True, binning: int | None = None,
                 method: str = "auto", progress=None, cancel=None):
    """Trial slices of one row at many centres, computed at once, each with a score.

    Parameters
    ----------
    scan : xarray.Dataset
    row : int, optional
        Detector row (default: the middle row).
    centers : array_like, optional
        Trial centre columns in pixels (default: 41 centres 0.5 px apart around
        Vo's estimate, :func:`find_center` with ``method="vo"``).
    filter : str
        Reconstruction filter.
    score : {"entropy", "negativity", "gradient"}
        Sharpness measure; see :func:`tomolab.sweep.sharpness_scores`.
    size : int, optional
        Width of the trial slices in detector pixels (default: the detector width).
    backend : {"auto", "numpy", "cupy"}
    normalize, log : bool
        Flat/dark correction and ``-log``, as for :func:`reconstruct`.
    binning : int, optional
        Detector columns averaged into one pixel of the trial slices (the
        centres stay full-resolution detector columns). Default: none on the
        GPU; on the CPU enough to keep the slices at most 1024 wide
        (:func:`sweep_binning`), so a 2560-wide scan sweeps in seconds.
    method : {"auto", "fbp", "gridrec"}
        How the trial slices are made (:func:`tomolab.sweep.sweep_slices`):
        ``"auto"`` is the batched backprojection on the GPU and gridrec on
        the CPU.
    progress, cancel : callable, optional
        ``progress(done, total)`` in trial centres, when the trial slices start
        and after each batch (on the CPU about every half second);
        ``cancel()`` is polled between batches and raises
        :class:`tomolab.errors.Cancelled` when it returns True.

    Returns
    -------
    xarray.DataArray (center, y, x) float32
        One slice per trial centre (attenuation, as :func:`reconstruct`), with
        coordinate ``score`` along ``center`` (1 = sharpest) and attrs
        ``best_center`` (where the scores peak: :func:`tomolab.sweep.peak_center`,
        inside the range of ``centers``), ``row``, ``binning`` and every parameter.

    Examples
    --------
    >>> import numpy as np, tomolab
    >>> scan = tomolab.data.simulate_scan(96, n_rows=4, n_angles=150)
    >>> stack = tomolab.sweep_center(scan, centers=np.arange(52, 60, 0.5), backend="numpy")
    >>> stack.dims, abs(stack.attrs["best_center"] - scan.attrs["true_center"]) <= 0.5
    (('center', 'y', 'x'), True)
    """
    import xarray as xr

    from tomolab.sweep import SWEEP_SCORES, peak_center, sharpness_scores, sweep_bytes, sweep_slices
    from tomolab.devices import resolve_backend
    from tomolab.engine import line_integrals
    from tomolab.recon import FILTERS

    backend = resolve_backend(backend)
    check_choice(filter, FILTERS, where="filter", what="reconstruction filter")
    check_choice(score, SWEEP_SCORES, where="score", what="sweep score")
    row = check_row(scan, row)
    n_cols = int(scan.sizes["col"])
    size = check_size(scan, size)
    if binning is None:
        binning = sweep_binning(n_cols, backend)
    elif not isinstance(binning, (int, np.integer)) or isinstance(binning, bool) \
            or not 1 <= binning <= n_cols // 16:
        raise ParameterError("binning must be a whole number of columns", where="binning",
                             value=binning, fix=f"pass an integer from 1 to {max(1, n_cols // 16)}, "
                                                "or omit it")
    binning = int(binning)
    estimate = None
    angles = scan["angle"].values
    coverage = check_coverage(scan, what=_SWEEP_ON_A_WEDGE)
    if centers is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # Vo alone places the ±10 px range ("auto" could run a sweep of its own first);
            # over less than 180° the centroid fit does
            estimate, _ = find_center(scan, row=int(row), backend=backend, normalize=normalize,
                                      log=log, method="centroid" if coverage.limited else "vo")
        centers = np.clip(np.round(2 * estimate) / 2 + np.arange(-10, 10.25, 0.5), 0, n_cols - 1)
        centers = np.unique(centers)
    centers = check_centers(scan, centers)
    check_scan(scan, normalize=normalize)
    width = -(-size // binning)
    stack_bytes = centers.size * width * width * 4
    _require_on(backend, read_bytes(scan, 1, normalize=normalize)
                + sweep_bytes(angles.size, n_cols // binning, centers.size, width),
                stack_bytes * 2,
                what=f"{centers.size} trial slices of {width} × {width} pixels",
                where="centers", value=f"{centers.size} centres",
                fix="fewer centres (centers=), a smaller size=, or a larger binning= "
                    f"(now {binning})")
    started = time.perf_counter()
    sino = line_integrals(scan, slice(row, row + 1), backend=backend, normalize=normalize,
                          log=log)[:, 0, :]
    if binning > 1:
        sino = sino[:, :n_cols // binning * binning].reshape(sino.shape[0], -1, binning).mean(axis=-1)
    if method == "auto":
        method = "fbp" if backend == "cupy" else "gridrec"
    stack = sweep_slices(sino, angles, (centers + 0.5) / binning - 0.5, filter=filter,
                         size=-(-size // binning), method=method, progress=progress,
                         cancel=cancel)
    scores = sharpness_scores(stack, score=score)
    stack = to_numpy(stack)
    elapsed = time.perf_counter() - started
    pixel_size = scan.attrs.get("pixel_size")
    # slices of binned columns hold attenuation per binned pixel
    stack *= np.float32(1.0 / (binning * (float(pixel_size) if pixel_size else 1.0)))
    best = peak_center(centers, scores)
    attrs = {
        "long_name": "trial slices, one per centre",
        "units": "1/m" if pixel_size else "1/pixel",
        **provenance(scan, backend=backend, normalize=normalize, log=log, best_center=best,
                     row=int(row), filter=filter, score_method=score, binning=binning, method=method,
                     seconds=round(elapsed, 4)),
    }
    if estimate is not None:
        attrs["estimate"] = float(estimate)
    return xr.DataArray(stack, dims=("center", "y", "x"), name="trial_slices", attrs=attrs,
                        coords={"center": ("center", centers, {"units": "pixel"}),
                                "score": ("center", scores, {"long_name": "sharpness, 1 = best"}),
                                **plane_coords(stack.shape[-1], pixel_size, binning=binning)})
