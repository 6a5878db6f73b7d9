"""Reconstruction at the api level: validate and plan once, then compute any rows of the plan.

:func:`plan_reconstruction` checks every argument against the scan and
resolves the centre before any data are read; :class:`ReconstructionPlan`
computes rows through the engine and records the parameters that made them.
:func:`reconstruct` returns an in-memory (or lazy) volume;
:func:`tomolab.api.volume.reconstruct_to` streams the same plan to disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tomolab.api.center import find_center
from tomolab.api.provenance import provenance
from tomolab.api.validate import (check_center, check_choice, check_coverage, check_scan,
                                  check_size, plane_coords, resolve_rows, source_name)
from tomolab.checks import check_bool
from tomolab.errors import ParameterError
from tomolab.sanity import RANGES, check_quantity, check_whole_number

__all__ = ["reconstruct", "plan_reconstruction", "ReconstructionPlan", "preprocessing_steps",
           "resolve_algorithm", "HALF_PRECISION_KERNEL"]


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
            if key in RANGES:
                check_quantity(key, value, where=f"phase['{key}']")
        phase = {k: float(spec[k]) for k in ("delta_beta", "energy", "distance", "pixel_size")}
    return Preprocessing(zingers=zingers, stripes=stripes, stripe_options=stripe_options, phase=phase)


def reconstruct(scan, *, center, rows=None, algorithm: str = "auto", filter: str = "ramp",
                backend: str = "auto", normalize: bool = True, log: bool = True,
                zingers: float | None = None, stripes=None, phase=None,
                pad_mode: str = "edge", size: int | None = None, precision: str = "single",
                iterations: int | None = None, regularization: float | None = None,
                nonnegative: bool = True,
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
        ``"auto"`` (default): the fastest method that meets the accuracy bar
        on the backend that computes (:data:`tomolab.recon.AUTO`: gridrec on
        the CPU and on a GPU), chosen by measurement
        (benchmarks/RESULTS.md). Or a name from
        :data:`tomolab.recon.ALGORITHMS`: ``"fbp"`` (filtered
        backprojection, the reference) or ``"gridrec"`` (Fourier gridding;
        several times faster on a CPU, three times on a GPU, band-limited
        instead of linear interpolation, so no less accurate), or an iterative method
        for few angles, a missing wedge or low dose: ``"sirt"``, ``"cgls"``
        or ``"tv"`` (total variation; see :mod:`tomolab.recon.iterative`),
        each starting from an FBP with ``filter``. attrs record the method
        that ran (``algorithm``) and the one asked for
        (``algorithm_requested``).
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
        on random sinograms, tested on a phantom); gridrec on a GPU keeps its
        radial samples in half precision, positions, weights and sums in
        float32 (not yet measured on a GPU). The CPU and the iterative methods
        compute in single precision; attrs record what was used.
    iterations : int, optional
        Iterations of ``"sirt"`` (default 100), ``"cgls"`` (20) or ``"tv"`` (200).
    regularization : float, optional
        ``λ`` of ``"tv"``, in attenuation per pixel: edges of a contrast well
        above it stay, texture and streaks below it go (default: a twentieth
        of the largest magnitude of each slice's FBP).
    nonnegative : bool
        Iterative methods: keep the attenuation at or above 0 (``"cgls"``:
        clipped at the end).
    progress, cancel : callable, optional
        ``progress(done_rows, total_rows)`` when the first slab starts (0 done)
        and after each slab; ``cancel()`` is polled between slabs and stops the
        work when it returns True. CPU slabs are about half a second of work
        each, so both act within about a second. Iterative methods also
        report and poll after each iteration (``done_rows`` is then fractional).
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
    >>> vol.dims, vol.shape, vol.attrs["algorithm"], vol.attrs["algorithm_requested"]
    (('z', 'y', 'x'), (4, 64, 64), 'gridrec', 'auto')
    """
    import xarray as xr

    plan = plan_reconstruction(scan, center=center, rows=rows, algorithm=algorithm, filter=filter,
                               backend=backend, normalize=normalize, log=log, zingers=zingers,
                               stripes=stripes, phase=phase, pad_mode=pad_mode, size=size,
                               precision=precision, iterations=iterations,
                               regularization=regularization, nonnegative=nonnegative)
    started = time.perf_counter()
    row_range, size = plan.row_range, plan.size
    if lazy:
        import dask
        import dask.array as da

        step = 32 if isinstance(lazy, bool) else check_whole_number(
            lazy, "lazy", fix="pass lazy=True (slabs of 32 rows) or a whole number of rows per slab")
        blocks = []
        for a in range(0, len(row_range), step):
            b = min(a + step, len(row_range))
            part = range(row_range.start + a, row_range.start + b)
            blocks.append(da.from_delayed(dask.delayed(plan.run, pure=True)(part),
                                          shape=(b - a, size, size), dtype=np.float32))
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
    size: int  # width of the square slices, in pixels
    precision: str = "single"
    kernel: str = "auto"  # GPU backprojection kernel of fbp (see tomolab.recon.backproject)
    iterations: int | None = None  # of an iterative algorithm (None for the others)
    regularization: float | None = None  # λ of "tv" (None: per slice, from its FBP)
    nonnegative: bool = True  # of an iterative algorithm
    algorithm_requested: str = ""  # "auto", or the algorithm's name when one was named

    def iterative_options(self) -> dict:
        """The options of an iterative algorithm (``{}`` for the others)."""
        from tomolab.recon import ITERATIVE

        if self.algorithm not in ITERATIVE:
            return {}
        options = {"iterations": self.iterations, "nonnegative": self.nonnegative}
        if self.algorithm == "tv":
            options["regularization"] = self.regularization
        return options

    @property
    def pixel_size(self) -> float:
        return float(self.scan.attrs.get("pixel_size") or 0.0)

    def run(self, rows: range | None = None, *, sink=None, max_height=None, progress=None,
            cancel=None, stats=None, store_as=None):
        """Reconstruct ``rows`` (a sub-range of the plan's, default all) into an array or a sink.

        See :func:`tomolab.engine.reconstruct_rows` for ``sink``, ``max_height``,
        ``stats`` and ``store_as``. Values are scaled to 1/m on the device when the scan has
        a pixel size.
        """
        from tomolab.engine import reconstruct_rows
        from tomolab.recon import ALGORITHMS

        rows = self.row_range if rows is None else rows
        if sink is None:
            self.check_memory(rows)
        centers = self.center
        if np.ndim(centers) == 1:
            first = rows.start - self.row_range.start
            centers = centers[first:first + len(rows)]
        scale = 1.0 / self.pixel_size if self.pixel_size else 1.0
        extra = {"kernel": self.kernel} if self.algorithm == "fbp" else self.iterative_options()
        if self.algorithm == "gridrec" and self.precision == "half":
            extra["precision"] = "half"
        if np.ndim(self.center) == 1 and self.algorithm == "fbp":
            # one column for all slabs, so slab boundaries leave no trace
            extra["common_center"] = float(np.mean(self.center))
        algorithm = ALGORITHMS[self.algorithm]
        if self.algorithm == "gridrec" and self.backend == "numpy":
            # every slice on its own (in batches), so its bits do not depend on the slab: CPU
            # slabs are sized by time, and a resumed or clustered volume must be the same
            extra["pair_slices"] = False
        return reconstruct_rows(self.scan, rows, center=centers, algorithm=algorithm,
                                backend=self.backend, size=self.size, normalize=self.normalize,
                                log=self.log, steps=self.steps, scale=scale, sink=sink,
                                max_height=max_height, progress=progress, cancel=cancel,
                                stats=stats, store_as=store_as, filter=self.filter,
                                pad_mode=self.pad_mode, **extra)

    def memory_needed(self, rows: range, *, slab_rows: int | None = None) -> dict:
        """Bytes a run of ``rows`` needs at least: ``{"slab": ..., "numpy": ...}``.

        ``"slab"`` is the working memory of one detector row (the least a
        slab can be: :func:`tomolab.engine.slab_bytes`, halo and flat/dark
        frames included; on the GPU with its two device input buffers) on the
        backend that computes; ``"numpy"`` is all the host needs: that, or
        on the GPU path its pinned buffers, plus the volume held in memory
        or, with ``slab_rows``, the output slab being assembled and the one
        being written.
        """
        from tomolab.engine import slab_bytes

        scan = self.scan
        n_angles, n_cols = int(scan.sizes["angle"]), int(scan.sizes["col"])
        itemsize = scan["projections"].dtype.itemsize
        halo = self.steps.halo()
        n_fields = sum(int(scan.sizes[d]) for d in ("flat", "dark") if d in scan.sizes) \
            if self.normalize else 0
        one_row = slab_bytes(1, n_angles=n_angles, n_cols=n_cols, size=self.size, itemsize=itemsize,
                             halo=halo, n_fields=n_fields)
        read = n_angles * (1 + 2 * halo) * n_cols
        if self.steps.zingers is not None:
            one_row += read * 4 * 2  # the median-filtered copy and the mask
        if self.steps.phase:
            one_row += read * 64  # Paganin: padded to twice each side, complex64, and its product
        if self.iterative_options():
            from tomolab.recon import iterative_bytes
            one_row += iterative_bytes(1, n_angles=n_angles, n_cols=n_cols, size=self.size)
        slice_bytes = self.size * self.size * 4
        output = len(rows) * slice_bytes if slab_rows is None else 2 * int(slab_rows) * slice_bytes
        if self.backend != "cupy":
            return {"slab": one_row, "numpy": output + one_row}
        raw = n_angles * (1 + 2 * halo) * n_cols * itemsize
        pinned = 2 * (raw + slice_bytes)  # two pinned input and output buffers of one row
        return {"slab": one_row + 2 * raw, "numpy": output + pinned}

    def check_memory(self, rows: range, *, slab_rows: int | None = None) -> None:
        """Refuse, with the ways out, a run that memory cannot hold, before anything is allocated.

        ``slab_rows``: the volume is streamed to disk in slabs of this many
        rows (:func:`tomolab.reconstruct_to`); None: it is held in memory.
        Limits, margin and message: :func:`tomolab.devices.require_memory`.
        """
        from tomolab.devices import require_memory

        need = self.memory_needed(rows, slab_rows=slab_rows)
        scan = self.scan
        shape = f"{scan.sizes['angle']} angles × {scan.sizes['col']} columns"
        size_fix = f"a smaller size= (now {self.size})" if self.size > 1 else ""
        require_memory(need["slab"], backend=self.backend,
                       what=f"one detector row of this scan ({shape}, slices of {self.size}²)",
                       where=source_name(scan), value=None,
                       fix=", ".join(filter(None, [
                           size_fix, "fewer angles (scan.isel(angle=slice(None, None, 2)))",
                           'free GPU memory held by other notebooks, or backend="numpy"'
                           if self.backend == "cupy" else "",
                           "or run where more memory is available"])))
        rows_text = f"{rows.start}:{rows.stop}"
        if slab_rows is None:
            require_memory(need["numpy"], backend="numpy",
                           what=f"a volume of {len(rows)} × {self.size} × {self.size} float32 "
                                f"held in memory, with one slab's working memory,",
                           where="rows", value=rows_text,
                           fix="stream it to disk with tomolab.reconstruct_to(scan, 'volume.zarr', "
                               "...), reconstruct fewer rows (rows='A:B'), a smaller size=, "
                               "or lazy=True")
        else:
            require_memory(need["numpy"], backend="numpy",
                           what=f"streaming slabs of {slab_rows} × {self.size} × {self.size} "
                                f"float32 to disk, with one slab's working memory,",
                           where="slab_rows", value=int(slab_rows),
                           fix="a smaller slab_rows= or size=, or fewer angles")

    def coords(self) -> dict:
        """``name -> (dims, values, attrs)`` of the volume's coordinates."""
        unit = self.pixel_size or 1.0
        rows_index = np.arange(self.row_range.start, self.row_range.stop)
        coords = {
            "z": ("z", rows_index * unit, {"units": "m" if self.pixel_size else "pixel",
                                           "long_name": "height (detector row × pixel size)"}),
            **plane_coords(self.size, self.pixel_size),
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
            **provenance(
                self.scan, backend=self.backend, normalize=self.normalize, log=self.log,
                center=center if np.ndim(center) == 0 else float(np.mean(center)),
                center_source=self.center_source,
                rows=f"{self.row_range.start}:{self.row_range.stop}",
                algorithm=self.algorithm,
                algorithm_requested=self.algorithm_requested or self.algorithm,
                filter=self.filter, pad_mode=self.pad_mode, precision=self.precision,
                n_angles=int(self.scan.sizes["angle"]),
                pixel_size=self.pixel_size),
        }
        if self.center_score is not None:
            attrs["center_score"] = self.center_score
        for key, value in self.iterative_options().items():
            if key == "regularization" and value is None:
                value = "per slice: 1/20 of the largest magnitude of its FBP"
            attrs[key] = value
        attrs.update(self.steps.describe())
        return attrs


def resolve_algorithm(algorithm: str, backend: str) -> str:
    """The algorithm that runs for ``algorithm`` (a name, or ``"auto"``) on ``backend``.

    Examples
    --------
    >>> resolve_algorithm("auto", "numpy"), resolve_algorithm("fbp", "numpy")
    ('gridrec', 'fbp')
    """
    from tomolab.recon import ALGORITHMS, AUTO

    check_choice(algorithm, (*ALGORITHMS, "auto"), where="algorithm",
                 what="reconstruction algorithm")
    return AUTO[backend] if algorithm == "auto" else algorithm


def plan_reconstruction(scan, *, center, rows=None, algorithm: str = "auto", filter: str = "ramp",
                        backend: str = "auto", normalize: bool = True, log: bool = True,
                        zingers: float | None = None, stripes=None, phase=None,
                        pad_mode: str = "edge", size: int | None = None,
                        precision: str = "single", iterations: int | None = None,
                        regularization: float | None = None,
                        nonnegative: bool = True) -> ReconstructionPlan:
    """Validate :func:`reconstruct`'s arguments and resolve the centre, computing nothing else.

    Parameters are those of :func:`reconstruct`. ``center="auto"`` runs
    :func:`find_center` once here, on the middle of ``rows``.
    """
    from tomolab.devices import resolve_backend
    from tomolab.recon import ALGORITHMS, FILTERS

    check_choice(algorithm, (*ALGORITHMS, "auto"), where="algorithm",
                 what="reconstruction algorithm")
    check_choice(filter, FILTERS, where="filter", what="reconstruction filter")
    check_choice(precision, ("single", "half"), where="precision", what="precision")
    check_iterative_options(algorithm, iterations, regularization, nonnegative)
    backend = resolve_backend(backend)
    requested, algorithm = algorithm, resolve_algorithm(algorithm, backend)
    if backend != "cupy" or algorithm not in ("fbp", "gridrec"):
        precision = "single"  # the only one there
    row_range = resolve_rows(scan, rows)
    steps = preprocessing_steps(scan, zingers=zingers, stripes=stripes, phase=phase)
    check_coverage(scan, algorithm=algorithm)  # a missing wedge: warn, before any data are read
    check_scan(scan, normalize=normalize)
    check_bool(log, "log", "pass log=True (take -log) or False (already line integrals)")
    size = check_size(scan, size)
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
                              backend=backend, normalize=normalize, log=log, steps=steps, size=size,
                              precision=precision,
                              kernel=HALF_PRECISION_KERNEL if precision == "half" else "auto",
                              iterations=_iterations(algorithm, iterations),
                              regularization=None if regularization is None else float(regularization),
                              nonnegative=bool(nonnegative),
                              algorithm_requested=requested)


def _iterations(algorithm: str, iterations) -> int | None:
    """The iterations an iterative algorithm will run (its default for None); None for the others."""
    from tomolab.recon.iterative import DEFAULT_ITERATIONS

    if algorithm not in DEFAULT_ITERATIONS:
        return None
    return DEFAULT_ITERATIONS[algorithm] if iterations is None else int(iterations)


def check_iterative_options(algorithm: str, iterations, regularization, nonnegative) -> None:
    """``iterations`` and ``nonnegative`` of an iterative algorithm, ``regularization`` of "tv"."""
    from tomolab.recon import ITERATIVE

    check_bool(nonnegative, "nonnegative", "pass nonnegative=True (attenuation ≥ 0) or False")
    if iterations is not None:
        if algorithm not in ITERATIVE:
            name = "the automatic choice (a direct method)" if algorithm == "auto" else algorithm
            raise ParameterError(f"{name} does not iterate", where="iterations",
                                 value=iterations,
                                 fix=f"drop iterations=, or use algorithm= {', '.join(ITERATIVE)}")
        check_whole_number(iterations, "iterations", fix="pass e.g. iterations=100")
    if regularization is not None:
        if algorithm != "tv":
            raise ParameterError(f"{algorithm} takes no regularization", where="regularization",
                                 value=regularization,
                                 fix='drop regularization=, or use algorithm="tv"')
        if (isinstance(regularization, bool) or not isinstance(regularization, (int, float))
                or not np.isfinite(regularization) or regularization < 0):
            raise ParameterError("must be a number of at least 0", where="regularization",
                                 value=regularization,
                                 fix="pass e.g. regularization=1e-3 (attenuation per pixel), "
                                     "or None for the default")


