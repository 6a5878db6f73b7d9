"""Thin wrappers that take and return xarray objects.

Every function here validates its arguments against the scan (naming the
parameter, the value and the fix), calls the pure array functions of the
processing layer through the engine, and records its parameters in the attrs
of what it returns.
"""

from __future__ import annotations

import datetime as _dt
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tomolab.arrays import to_numpy
from tomolab.errors import ParameterError

__all__ = ["reconstruct", "find_center", "sweep_center", "resolve_rows", "check_center",
           "CenterEstimate", "combine_centers"]


def check_name(value, choices, *, where: str, what: str) -> str:
    """``value`` if it names one of ``choices`` (a registry), else an error listing them."""
    if value not in choices:
        raise ParameterError(f"unknown {what}", where=where, value=value,
                             fix=f"use one of {', '.join(sorted(choices))}")
    return value


def check_row(scan, row) -> int:
    """A detector row (default: the middle one), validated against the detector."""
    n_rows = int(scan.sizes["row"])
    row = n_rows // 2 if row is None else row
    if not isinstance(row, (int, np.integer)) or isinstance(row, bool) or not 0 <= row < n_rows:
        raise ParameterError("row is outside the detector", where="row", value=row,
                             fix=f"pick a row between 0 and {n_rows - 1}")
    return int(row)


def source_name(scan) -> str:
    """The scan's file for messages (``"scan"`` for data in memory)."""
    return str(scan.attrs.get("source_file") or "scan")


def check_size(scan, size) -> int:
    """Width of the square slices: ``size`` validated, or the detector width."""
    n_cols = int(scan.sizes["col"])
    n = int(size or n_cols)
    if n < 1:
        raise ParameterError("slice size must be positive", where="size", value=size,
                             fix=f"omit it (detector width {n_cols}) or pass a positive int")
    return n


def plane_coords(n: int, pixel_size: float | None, *, binning: int = 1) -> dict:
    """``y`` and ``x`` coordinates of an ``n × n`` slice centred on the axis (metres or pixels),
    each of its pixels ``binning`` detector pixels wide."""
    unit = binning * (float(pixel_size) if pixel_size else 1.0)
    grid = (np.arange(n) - (n - 1) / 2.0) * unit
    length = "m" if pixel_size else "pixel"
    return {"y": ("y", grid, {"units": length}), "x": ("x", grid, {"units": length})}


def resolve_rows(scan, rows) -> range:
    """Turn ``rows`` (None, int, slice, ``"A:B"`` or ``(A, B)``) into a range of detector rows.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> scan = xr.Dataset(coords={"row": np.arange(10)})
    >>> resolve_rows(scan, "2:5"), resolve_rows(scan, 7), resolve_rows(scan, None)
    (range(2, 5), range(7, 8), range(0, 10))
    """
    n_rows = int(scan.sizes["row"])
    original = rows
    if rows is None:
        return range(n_rows)
    if isinstance(rows, str):
        try:
            parts = [int(p) if p.strip() else None for p in rows.split(":")]
        except ValueError:
            parts = []
        if len(parts) not in (1, 2):
            raise ParameterError("rows must be a row or a range A:B", where="rows", value=original,
                                 fix=f"use e.g. 0:{n_rows} or {n_rows // 2}")
        rows = parts[0] if len(parts) == 1 else slice(*parts)
    if isinstance(rows, tuple) and len(rows) == 2:
        rows = slice(*rows)
    if isinstance(rows, (int, np.integer)):
        if not 0 <= rows < n_rows:
            raise ParameterError("row is outside the detector", where="rows", value=original,
                                 fix=f"pick a row between 0 and {n_rows - 1}")
        return range(int(rows), int(rows) + 1)
    if isinstance(rows, slice):
        if rows.step not in (None, 1):
            raise ParameterError("row ranges must be contiguous", where="rows", value=original,
                                 fix="use a step of 1 and select every n-th slice afterwards")
        start = 0 if rows.start is None else int(rows.start)
        stop = n_rows if rows.stop is None else int(rows.stop)
        if not (0 <= start < stop <= n_rows):
            raise ParameterError("row range is outside the detector or empty", where="rows",
                                 value=original, fix=f"use a range within 0:{n_rows}")
        return range(start, stop)
    raise ParameterError("rows must be None, an int, a slice or 'A:B'", where="rows", value=original,
                         fix=f"use e.g. rows=slice(0, {n_rows}) or rows='0:{n_rows}'")


def check_center(scan, center) -> float:
    """Validate a centre column against the detector width."""
    n_cols = int(scan.sizes["col"])
    try:
        value = float(center)
    except (TypeError, ValueError):
        raise ParameterError("centre must be a detector column in pixels", where="center",
                             value=center, fix='pass a number, or "auto" to find it') from None
    if not np.isfinite(value) or not 0.0 <= value <= n_cols - 1:
        raise ParameterError("centre is outside the detector", where="center", value=center,
                             fix=f"pass a column between 0 and {n_cols - 1}, or \"auto\"")
    return value


def _half_turn(angles: np.ndarray) -> np.ndarray:
    """Indices of the projections within the first 180° of the scan."""
    step = float(np.median(np.diff(np.sort(angles)))) if angles.size > 1 else np.pi
    first = angles.min()
    keep = np.nonzero(angles - first < np.pi - 0.5 * step)[0]
    if angles[keep].max() - first < np.pi - 1.5 * step:
        raise ParameterError("the scan covers less than 180°", where="angles",
                             value=f"{np.degrees(angles.max() - first):.1f}°",
                             fix="centre finding and FBP need at least 180° of projections")
    return keep


class CenterEstimate(tuple):
    """``(center, score)`` from :func:`find_center`, with what each method found.

    Unpacks as a pair (``center, score = find_center(scan)``); ``estimates``
    maps each method that ran to its own ``(center, score)``, and ``spread``
    is the largest distance between the centres of the methods that counted
    (pixels; 0 when only one did).
    """

    def __new__(cls, center: float, score: float, estimates: dict):
        self = super().__new__(cls, (float(center), float(score)))
        self.estimates = {name: (float(c), float(sc)) for name, (c, sc) in estimates.items()}
        centers = [c for c, _ in self.estimates.values()]
        self.spread = float(max(centers) - min(centers)) if centers else 0.0
        return self

    @property
    def center(self) -> float:
        return self[0]

    @property
    def score(self) -> float:
        return self[1]


#: two methods further apart than this (pixels) are reported as disagreeing
CENTER_AGREEMENT = 0.5
#: rows of the 0°/180° pair registered by phase correlation ("auto"): two frames, so cheap
PAIR_ROWS = 64


def find_center(scan, *, row: int | None = None, method: str = "auto", rows_averaged: int = 5,
                backend: str = "auto", normalize: bool = True, log: bool = True):
    """Find the rotation axis: a detector column in pixels, and a trust score.

    Parameters
    ----------
    scan : xarray.Dataset
        From :func:`tomolab.open_scan` or :func:`tomolab.from_arrays`.
    row : int, optional
        Detector row to use (default: the middle row).
    method : {"auto", "vo", "phase-correlation"}
        ``"vo"``: Vo's Fourier metric on the sinogram of ``rows_averaged``
        rows. ``"phase-correlation"``: registration of the projections at 0°
        and 180° (up to 64 rows around ``row``). ``"auto"`` (default): both
        where the scan has a 0°/180° pair, combined by their scores; when they
        disagree by more than half a pixel, trial slices between them
        (:func:`sweep_center`) give a third centre, the answer is the median
        of the three, and a warning names all three.
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

    Examples
    --------
    >>> import tomolab
    >>> scan = tomolab.data.simulate_scan(96, n_rows=8, n_angles=180)
    >>> center, score = tomolab.find_center(scan, backend="numpy")
    >>> abs(center - scan.attrs["true_center"]) < 0.5
    True
    """
    from tomolab.center import CENTER_METHODS, LOW_SCORE, opposite_pair
    from tomolab.devices import resolve_backend
    from tomolab.engine import line_integrals

    if method != "auto":
        check_name(method, CENTER_METHODS, where="method", what="centre-finding method")
    backend = resolve_backend(backend)
    n_rows = int(scan.sizes["row"])
    row = check_row(scan, row)
    angles = scan["angle"].values

    def band(count):
        half = max(1, count) // 2
        return slice(max(0, row - half), min(n_rows, row + half + 1))

    estimates = {}
    if method in ("auto", "vo"):
        keep = _half_turn(angles)
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
            rows = band(max(rows_averaged, PAIR_ROWS)) if method == "auto" else band(rows_averaged)
            data = line_integrals(scan.isel(angle=[i, j]), rows, backend=backend,
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
    stack = sweep_center(scan, row=row, centers=centers, **options)
    scores = stack["score"].values
    clarity = float(np.clip(1.0 - 0.5 * (scores[0] + scores[-1]), 0.0, 1.0))
    estimates = {**estimates, "sweep": (float(stack.attrs["best_center"]), clarity)}
    found = np.array([c for c, _ in estimates.values()])
    center = float(np.median(found))
    nearest = float(np.sort(np.abs(found - center))[1])
    score = float(np.median([sc for _, sc in estimates.values()]))
    result = CenterEstimate(center, score / (1.0 + (nearest / CENTER_AGREEMENT) ** 2), estimates)
    result.spread = hi - lo  # the disagreement that called for the sweep
    return result


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
    score = float((scores * weights).sum() / weights.sum()) / (1.0 + (spread / CENTER_AGREEMENT) ** 2)
    result = CenterEstimate(center, score, estimates)
    result.spread = spread  # among the methods that counted
    return result


def preprocessing_steps(scan, *, zingers=None, stripes=None, phase=None):
    """Validate the correction options of :func:`reconstruct` into a :class:`~tomolab.engine.Preprocessing`.

    ``stripes`` is a method name or a dict ``{"method": name, **options}``;
    ``phase`` is δ/β (energy, distance and pixel size then come from the
    scan's attrs) or a dict with ``delta_beta`` and any of those three.
    """
    from tomolab.engine.pipeline import Preprocessing
    from tomolab.prep import STRIPE_METHODS

    if zingers is not None and not (isinstance(zingers, (int, float)) and zingers > 0):
        raise ParameterError("zinger threshold must be a positive number", where="zingers",
                             value=zingers, fix="pass e.g. zingers=0.1 (relative), or None")
    stripe_options = {}
    if isinstance(stripes, dict):
        stripe_options = dict(stripes)
        stripes = stripe_options.pop("method", "sorting")
    if stripes is not None and stripes not in STRIPE_METHODS:
        raise ParameterError("unknown stripe-removal method", where="stripes", value=stripes,
                             fix=f"use one of {', '.join(STRIPE_METHODS)}, or None")
    if phase is not None:
        spec = dict(phase) if isinstance(phase, dict) else {"delta_beta": phase}
        for key, unit in (("energy", "keV"), ("distance", "m"), ("pixel_size", "m")):
            if key not in spec:
                if not scan.attrs.get(key):
                    raise ParameterError(f"phase retrieval needs the {key} and the scan has none",
                                         where=f"phase['{key}'] / scan.attrs['{key}']", value=None,
                                         fix=f"pass phase={{'delta_beta': ..., '{key}': ...}} ({unit})")
                spec[key] = float(scan.attrs[key])
        for key in ("delta_beta", "energy", "distance", "pixel_size"):
            value = spec.get(key)
            if not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
                raise ParameterError("must be a positive number", where=f"phase['{key}']",
                                     value=value, fix="pass a positive value (δ/β, keV, m, m)")
        phase = {k: float(spec[k]) for k in ("delta_beta", "energy", "distance", "pixel_size")}
    return Preprocessing(zingers=zingers, stripes=stripes, stripe_options=stripe_options, phase=phase)


def reconstruct(scan, *, center, rows=None, algorithm: str = "fbp", filter: str = "ramp",
                backend: str = "auto", normalize: bool = True, log: bool = True,
                zingers: float | None = None, stripes=None, phase=None,
                pad_mode: str = "edge", size: int | None = None, precision: str = "single",
                lazy: bool | int = False, progress: Callable[[int, int], None] | None = None,
                cancel: Callable[[], bool] | None = None):
    """Reconstruct slices of a scan.

    Parameters
    ----------
    scan : xarray.Dataset
        From :func:`tomolab.open_scan` or :func:`tomolab.from_arrays`.
    center : float, "auto", array_like or axis fit
        Detector column of the rotation axis, in pixels (``"auto"``:
        :func:`find_center` on the middle of ``rows``). For an axis that is
        tilted or drifts with height: one column per reconstructed row, or an
        object with a ``center(rows)`` method (as ``tomolab.find_axis``
        returns), and each row is reconstructed with its own centre.
    rows : int, slice, "A:B" or (A, B), optional
        Detector rows to reconstruct (default: all).
    algorithm : str
        A name from :data:`tomolab.recon.ALGORITHMS`: ``"fbp"`` (filtered
        backprojection; the fastest on a GPU) or ``"gridrec"`` (Fourier
        gridding; about ten times faster on a CPU, slightly noisier).
    filter : str
        ``ramp``, ``shepp-logan``, ``cosine``, ``hamming``, ``hann`` or ``parzen``.
    backend : {"auto", "numpy", "cupy"}
        ``"auto"`` uses the GPU when CuPy sees one. Both give the same numbers.
    normalize, log : bool
        Flat/dark correction and ``-log`` (switch off for data already corrected).
    zingers : float, optional
        Remove zingers above this relative threshold (e.g. 0.1).
    stripes : str or dict, optional
        Ring removal: ``"sorting"``, ``"filtering"`` or ``"fourier-wavelet"``,
        or ``{"method": ..., **options}``.
    phase : float or dict, optional
        Paganin phase retrieval with this δ/β (energy, distance and pixel size
        from the scan's attrs, or given in a dict); it replaces ``-log``.
    pad_mode : {"edge", "constant"}
        Detector padding before filtering.
    size : int, optional
        Width of the square slices (default: the detector width).
    precision : {"single", "half"}
        ``"half"``: on a GPU, FBP backprojects filtered sinograms rounded to
        half precision with half-precision sums flushed into float32 (kernel
        ``hh8p1``): about 1.4 times the speed on an H100, within a relative
        difference of 1e-3 of ``"single"`` (the issue's bound; 3.5e-5 measured
        on random sinograms, tested on a phantom). The CPU and gridrec always
        compute in single precision; attrs record what was used.
    progress, cancel : callable, optional
        ``progress(done_rows, total_rows)`` after each slab; ``cancel()`` is
        polled between slabs and stops the work when it returns True.
    lazy : bool or int
        Return at once a dask-backed volume, one task per slab of 32 rows (or
        of ``lazy`` rows): nothing is computed until values are asked for, and
        ``volume.sel(z=...)`` or ``.isel(z=...)`` computes only the slabs it
        needs. ``seconds`` in attrs is then the time to build the graph.

    Returns
    -------
    xarray.DataArray (z, y, x) float32
        Linear attenuation coefficient, in 1/m when the scan has a
        ``pixel_size`` (else per pixel). Coordinates in metres (pixels without
        a pixel size); ``row`` gives the detector row of each slice. The
        rotation axis is at ``x = y = 0``, the middle of the grid. Seen from
        above, ``x`` runs along the detector columns and ``y`` along the beam
        at angle 0: the projection at angle 0 is the sum of a slice over ``y``.
        attrs record every parameter.

    Examples
    --------
    >>> import tomolab
    >>> scan = tomolab.data.simulate_scan(64, n_rows=4, n_angles=100)
    >>> vol = tomolab.reconstruct(scan, center=scan.attrs["true_center"], backend="numpy")
    >>> vol.dims, vol.shape
    (('z', 'y', 'x'), (4, 64, 64))
    """
    import xarray as xr

    plan = plan_reconstruction(scan, center=center, rows=rows, algorithm=algorithm, filter=filter,
                               backend=backend, normalize=normalize, log=log, zingers=zingers,
                               stripes=stripes, phase=phase, pad_mode=pad_mode, size=size,
                               precision=precision)
    started = time.perf_counter()
    row_range, n = plan.row_range, plan.n
    if lazy:
        import dask
        import dask.array as da

        step = int(lazy) if not isinstance(lazy, bool) else 32
        blocks = []
        for a in range(0, len(row_range), step):
            b = min(a + step, len(row_range))
            part = range(row_range.start + a, row_range.start + b)
            blocks.append(da.from_delayed(dask.delayed(plan.run, pure=True)(part),
                                          shape=(b - a, n, n), dtype=np.float32))
        data = da.concatenate(blocks, axis=0)
    else:
        data = plan.run(row_range, progress=progress, cancel=cancel)
    attrs = dict(plan.attrs(), seconds=round(time.perf_counter() - started, 4))
    coords = {name: xr.Variable(*spec) for name, spec in plan.coords().items()}
    return xr.DataArray(data, dims=("z", "y", "x"), coords=coords, attrs=attrs, name="attenuation")


#: the backprojection kernel of ``precision="half"`` (fastest on an H100: benchmarks/RESULTS.md)
HALF_PRECISION_KERNEL = "hh8p1"


@dataclass(frozen=True)
class ReconstructionPlan:
    """Everything :func:`reconstruct` decided before computing: validated, centre resolved.

    Made by :func:`plan_reconstruction`; :meth:`run` computes any rows of it,
    so :func:`reconstruct` and :func:`tomolab.reconstruct_to` share one
    validation and one record of parameters.
    """

    scan: object
    row_range: range
    center: object  # float, or ndarray with one column per row of row_range
    center_source: str
    center_score: float | None
    algorithm: str
    filter: str
    pad_mode: str
    backend: str
    normalize: bool
    log: bool
    steps: object
    n: int
    precision: str = "single"
    kernel: str = "auto"  # GPU backprojection kernel of fbp (see tomolab.recon.backproject)

    @property
    def pixel_size(self) -> float:
        return float(self.scan.attrs.get("pixel_size") or 0.0)

    def run(self, rows: range | None = None, *, sink=None, max_height=None, progress=None,
            cancel=None, stats=None):
        """Reconstruct ``rows`` (a sub-range of the plan's, default all) into an array or a sink.

        See :func:`tomolab.engine.reconstruct_rows` for ``sink``, ``max_height``
        and ``stats``. Values are scaled to 1/m on the device when the scan has
        a pixel size.
        """
        from tomolab.engine import reconstruct_rows
        from tomolab.recon import ALGORITHMS

        rows = self.row_range if rows is None else rows
        if sink is None:
            self.check_host_memory(rows)
        centers = self.center
        if np.ndim(centers) == 1:
            first = rows.start - self.row_range.start
            centers = centers[first:first + len(rows)]
        scale = 1.0 / self.pixel_size if self.pixel_size else 1.0
        extra = {"kernel": self.kernel} if self.algorithm == "fbp" else {}
        if np.ndim(self.center) == 1 and self.algorithm == "fbp":
            # one column for all slabs, so slab boundaries leave no trace
            extra["common_center"] = float(np.mean(self.center))
        return reconstruct_rows(self.scan, rows, center=centers, algorithm=ALGORITHMS[self.algorithm],
                                backend=self.backend, n=self.n, normalize=self.normalize,
                                log=self.log, steps=self.steps, scale=scale, sink=sink,
                                max_height=max_height, progress=progress, cancel=cancel,
                                stats=stats, filter=self.filter, pad_mode=self.pad_mode, **extra)

    def check_host_memory(self, rows: range) -> None:
        """Refuse, with the ways out, a volume that host memory cannot hold."""
        from tomolab.devices import host_memory_available

        need = len(rows) * self.n * self.n * 4
        available = host_memory_available()
        if need > 0.8 * available:
            def size(b):
                return f"{b / 1e9:.1f} GB" if b >= 1e9 else f"{b / 1e6:.1f} MB"
            raise ParameterError(
                f"the volume needs {size(need)} and this process has {size(available)} of "
                f"host memory left",
                where="rows", value=f"{rows.start}:{rows.stop}",
                fix="stream it to disk with tomolab.reconstruct_to(scan, 'volume.zarr', ...), "
                    "reconstruct fewer rows (rows='A:B'), a smaller size=, or lazy=True")

    def coords(self) -> dict:
        """``name -> (dims, values, attrs)`` of the volume's coordinates."""
        unit = self.pixel_size or 1.0
        rows_index = np.arange(self.row_range.start, self.row_range.stop)
        coords = {
            "z": ("z", rows_index * unit, {"units": "m" if self.pixel_size else "pixel",
                                           "long_name": "height (detector row × pixel size)"}),
            **plane_coords(self.n, self.pixel_size),
            "row": ("z", rows_index, {"units": "pixel", "long_name": "detector row"}),
        }
        if np.ndim(self.center) == 1:
            coords["center"] = ("z", np.asarray(self.center),
                                {"units": "pixel", "long_name": "rotation axis column"})
        return coords

    def attrs(self) -> dict:
        """The parameters that make the volume (all but the time it took)."""
        center = self.center
        attrs = {
            "long_name": "linear attenuation coefficient",
            "units": "1/m" if self.pixel_size else "1/pixel",
            "center": center if np.ndim(center) == 0 else float(np.mean(center)),
            "center_source": self.center_source,
            "rows": f"{self.row_range.start}:{self.row_range.stop}",
            "algorithm": self.algorithm,
            "filter": self.filter,
            "pad_mode": self.pad_mode,
            "precision": self.precision,
            "backend": self.backend,
            "normalize": int(self.normalize),
            "log": int(self.log),
            "n_angles": int(self.scan.sizes["angle"]),
            "source_file": str(self.scan.attrs.get("source_file") or ""),
            "pixel_size": self.pixel_size,
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "tomolab_version": __import__("tomolab").__version__,
        }
        if self.center_score is not None:
            attrs["center_score"] = self.center_score
        attrs.update(self.steps.describe())
        return attrs


def plan_reconstruction(scan, *, center, rows=None, algorithm: str = "fbp", filter: str = "ramp",
                        backend: str = "auto", normalize: bool = True, log: bool = True,
                        zingers: float | None = None, stripes=None, phase=None,
                        pad_mode: str = "edge", size: int | None = None,
                        precision: str = "single") -> ReconstructionPlan:
    """Validate :func:`reconstruct`'s arguments and resolve the centre, computing nothing else.

    Parameters are those of :func:`reconstruct`. ``center="auto"`` runs
    :func:`find_center` once here, on the middle of ``rows``.
    """
    from tomolab.devices import resolve_backend
    from tomolab.recon import ALGORITHMS, FILTERS

    check_name(algorithm, ALGORITHMS, where="algorithm", what="reconstruction algorithm")
    check_name(filter, FILTERS, where="filter", what="reconstruction filter")
    check_name(precision, ("single", "half"), where="precision", what="precision")
    backend = resolve_backend(backend)
    if backend != "cupy" or algorithm != "fbp":
        precision = "single"  # the only one there
    row_range = resolve_rows(scan, rows)
    steps = preprocessing_steps(scan, zingers=zingers, stripes=stripes, phase=phase)
    _half_turn(scan["angle"].values)  # checked before any data are read for an automatic centre
    n = check_size(scan, size)
    center_source = "given"
    score = None
    if isinstance(center, str) and center == "auto":
        middle = row_range.start + len(row_range) // 2
        estimate = find_center(scan, row=middle, backend=backend, normalize=normalize, log=log)
        center, score = estimate
        center_source = f"auto ({' + '.join(estimate.estimates)} at row {middle})"
    if not isinstance(center, str) and callable(getattr(center, "center", None)):
        center = np.asarray(center.center(np.arange(row_range.start, row_range.stop)), float)
        center_source = "per row, from an axis fit"
    if np.ndim(center) == 1:
        center = np.array([check_center(scan, c) for c in center])
        if center.size != len(row_range):
            raise ParameterError("one centre per reconstructed row is needed", where="center",
                                 value=f"{center.size} values for {len(row_range)} rows",
                                 fix="pass a single column, or one per row of rows=")
        if center_source == "given":
            center_source = "per row, given"
    else:
        center = check_center(scan, center)
    return ReconstructionPlan(scan=scan, row_range=row_range, center=center,
                              center_source=center_source, center_score=score,
                              algorithm=algorithm, filter=filter, pad_mode=pad_mode,
                              backend=backend, normalize=normalize, log=log, steps=steps, n=n,
                              precision=precision,
                              kernel=HALF_PRECISION_KERNEL if precision == "half" else "auto")


def _check_centers(scan, centers) -> np.ndarray:
    n_cols = int(scan.sizes["col"])
    values = np.atleast_1d(np.asarray(centers, dtype=np.float64))
    bad = values[~np.isfinite(values) | (values < 0) | (values > n_cols - 1)]
    if values.size == 0 or bad.size:
        raise ParameterError("trial centres must lie on the detector", where="centers",
                             value=float(bad[0]) if bad.size else "[]",
                             fix=f"pass columns between 0 and {n_cols - 1}, e.g. "
                                 f"numpy.arange({n_cols // 2 - 10}, {n_cols // 2 + 10}, 0.5)")
    return values


def sweep_binning(n_cols: int, backend: str) -> int:
    """Columns averaged per pixel of the CPU's trial slices: none on the GPU, else to ≤ 1280.

    A sweep is scored on slices averaged down to a few hundred pixels anyway;
    on two CPU cores a 2560-wide trial slice costs about 1 s, a 1280-wide one
    a quarter of that.

    Examples
    --------
    >>> sweep_binning(2560, "numpy"), sweep_binning(1280, "numpy"), sweep_binning(2560, "cupy")
    (2, 1, 1)
    """
    return 1 if backend == "cupy" else max(1, -(-int(n_cols) // 1280))


def sweep_center(scan, *, row: int | None = None, centers=None, filter: str = "ramp",
                 score: str = "entropy", size: int | None = None, backend: str = "auto",
                 normalize: bool = True, log: bool = True, binning: int | None = None):
    """Trial slices of one row at many centres, computed at once, each with a score.

    Parameters
    ----------
    scan : xarray.Dataset
    row : int, optional
        Detector row (default: the middle row).
    centers : array_like, optional
        Trial centre columns in pixels (default: 41 centres 0.5 px apart around
        :func:`find_center`'s estimate).
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
        GPU; on the CPU enough to keep the slices at most 1280 wide
        (:func:`sweep_binning`), so a 2560-wide scan sweeps in seconds.

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

    from tomolab.sweep import SWEEP_SCORES, peak_center, sharpness_scores, sweep_slices
    from tomolab.devices import resolve_backend
    from tomolab.engine import line_integrals
    from tomolab.recon import FILTERS

    backend = resolve_backend(backend)
    check_name(filter, FILTERS, where="filter", what="reconstruction filter")
    check_name(score, SWEEP_SCORES, where="score", what="sweep score")
    row = check_row(scan, row)
    n_cols = int(scan.sizes["col"])
    n = check_size(scan, size)
    if binning is None:
        binning = sweep_binning(n_cols, backend)
    elif not isinstance(binning, (int, np.integer)) or isinstance(binning, bool) \
            or not 1 <= binning <= n_cols // 16:
        raise ParameterError("binning must be a whole number of columns", where="binning",
                             value=binning, fix=f"pass an integer from 1 to {max(1, n_cols // 16)}, "
                                                "or omit it")
    binning = int(binning)
    estimate = None
    if centers is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            estimate, _ = find_center(scan, row=int(row), backend=backend, normalize=normalize,
                                      log=log)
        centers = np.clip(np.round(2 * estimate) / 2 + np.arange(-10, 10.25, 0.5), 0, n_cols - 1)
        centers = np.unique(centers)
    centers = _check_centers(scan, centers)
    angles = scan["angle"].values
    _half_turn(angles)  # validates that the scan covers 180°
    started = time.perf_counter()
    sino = line_integrals(scan, slice(row, row + 1), backend=backend, normalize=normalize,
                          log=log)[:, 0, :]
    if binning > 1:
        sino = sino[:, :n_cols // binning * binning].reshape(sino.shape[0], -1, binning).mean(axis=-1)
    stack = sweep_slices(sino, angles, (centers + 0.5) / binning - 0.5, filter=filter,
                         n=-(-n // binning))
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
        "best_center": best,
        "row": int(row),
        "filter": filter,
        "score_method": score,
        "binning": binning,
        "backend": backend,
        "normalize": int(normalize),
        "log": int(log),
        "source_file": str(scan.attrs.get("source_file") or ""),
        "seconds": round(elapsed, 4),
        "tomolab_version": __import__("tomolab").__version__,
    }
    if estimate is not None:
        attrs["estimate"] = float(estimate)
    return xr.DataArray(stack, dims=("center", "y", "x"), name="trial_slices", attrs=attrs,
                        coords={"center": ("center", centers, {"units": "pixel"}),
                                "score": ("center", scores, {"long_name": "sharpness, 1 = best"}),
                                **plane_coords(stack.shape[-1], pixel_size, binning=binning)})
