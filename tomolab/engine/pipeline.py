"""The slab pipeline: rows of a scan in, reconstructed slices out.

A reconstruction reads a slab of detector rows, moves it to the device as the
file's dtype, corrects darks and flats, removes zingers, retrieves the phase
(Paganin) or takes ``-log``, removes stripes, filters and backprojects, and
copies the slices back, slab after slab, so memory stays bounded whatever the
scan's size. Steps that work on whole projections (zingers, Paganin) read a
halo of extra rows above and below each slab, so slab edges leave no trace.
The slab height comes from free memory, and on the CPU also from time: each
slab is about :data:`CPU_SLAB_SECONDS` of work
(:class:`tomolab.devices.TimedBatches`), so
progress moves and a cancel takes effect within about a second.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from tomolab.arrays import array_module, to_numpy
from tomolab.devices import TimedBatches, batch_size, usable_cpus
from tomolab.errors import Cancelled, ParameterError
from tomolab.prep.normalize import (defective_pixels, minus_log, normalize as flat_field,
                                    normalize_interpolated)

__all__ = ["CPU_SLAB_SECONDS", "Preprocessing", "line_integrals", "reconstruct_rows",
           "slab_bytes", "slab_height"]


#: rows per slab on the GPU path, at most (the kernels are saturated well before)
MAX_GPU_SLAB_ROWS = 32
#: seconds of work per CPU slab: progress is reported and cancel polled about this often
CPU_SLAB_SECONDS = 0.5
#: voxel updates a second that the first CPU slab is sized for: a slow core (FBP measured
#: 1.5e8 to 3.9e8 on 2 cores, gridrec more); later slabs are sized from measured time
CPU_UPDATES_PER_SECOND = 1e8


@dataclass(frozen=True)
class Preprocessing:
    """Corrections between flat-fielding and filtering, with their parameters.

    Parameters
    ----------
    zingers : float, optional
        Relative threshold for :func:`tomolab.prep.remove_zingers` (e.g. 0.1);
        ``None`` leaves zingers alone.
    stripes : str, optional
        A method of :data:`tomolab.prep.STRIPE_METHODS` (``"sorting"``,
        ``"filtering"``, ``"fourier-wavelet"``); ``None`` for none.
    stripe_options : dict
        Keyword options of that method (e.g. ``{"size": 21}``).
    phase : dict, optional
        Paganin phase retrieval: ``delta_beta``, ``energy`` [keV],
        ``distance`` [m], ``pixel_size`` [m]; replaces ``-log``.
    """

    zingers: float | None = None
    stripes: str | None = None
    stripe_options: dict = field(default_factory=dict)
    phase: dict | None = None

    def halo(self) -> int:
        """Rows needed above and below a slab by the steps that filter projections in 2D."""
        rows = 0
        if self.zingers is not None:
            rows = 2
        if self.phase:
            from tomolab.prep import paganin_halo
            p = self.phase
            rows = max(rows, paganin_halo(p["delta_beta"], p["energy"], p["distance"],
                                          p["pixel_size"]) + 2)
        return rows

    def describe(self) -> dict:
        """The parameters as flat attrs for an output file."""
        out = {}
        if self.zingers is not None:
            out["zingers_threshold"] = float(self.zingers)
        if self.stripes:
            out["stripes"] = self.stripes
            out.update({f"stripes_{k}": v for k, v in self.stripe_options.items()})
        if self.phase:
            out.update({f"phase_{k}": float(v) for k, v in self.phase.items()})
        return out


NO_PREPROCESSING = Preprocessing()


def _array_module(backend: str):
    if backend == "cupy":
        import cupy
        return cupy
    return np


def _flats_before_after(scan):
    """Indices of flats taken before and after the projections (by acquisition order)."""
    if "flat_frame" not in scan.coords or "angle_frame" not in scan.coords:
        return None, None
    frames = scan["flat_frame"].values
    first, last = scan["angle_frame"].values.min(), scan["angle_frame"].values.max()
    before, after = np.nonzero(frames < first)[0], np.nonzero(frames > last)[0]
    if before.size and after.size:
        return before, after
    return None, None


def row_index(start: int, stop: int, halo: int, n_rows: int):
    """Rows ``start - halo`` to ``stop + halo``, the detector's edge rows repeated beyond it."""
    if halo == 0:
        return slice(start, stop)
    if start - halo >= 0 and stop + halo <= n_rows:
        return slice(start - halo, stop + halo)
    return np.clip(np.arange(start - halo, stop + halo), 0, n_rows - 1)


def field_means(scan, rows, *, backend: str = "numpy", normalize: bool = True) -> dict:
    """Mean dark and flat fields of ``rows`` on the backend's device (read once per run).

    With flats taken before *and* after the projections, the two means are
    kept apart (``flat_before``, ``flat_after``) so that the flat can be
    interpolated across the scan; otherwise there is one ``flat``. ``bad``
    (on the host) marks the pixels that cannot be flat-field corrected
    (:func:`tomolab.prep.defective_pixels`); they are interpolated along their
    row, and a warning says how many there are.
    """
    if not normalize:
        return {}
    xp = _array_module(backend)
    if "flats" not in scan:
        raise ParameterError("the scan has no flat fields, so it cannot be normalised",
                             where=f"{scan.attrs.get('source_file') or 'scan'}: flats",
                             value=None,
                             fix="pass normalize=False if the projections are already "
                                 "flat-field corrected, or give flats= to open_scan/from_arrays")

    from tomolab.io import read_frames

    def mean(values):
        return values.mean(axis=0, dtype=np.float64).astype(np.float32)

    fields = {}
    if "darks" in scan:
        fields["dark"] = mean(read_frames(scan["darks"], rows))
    flats = read_frames(scan["flats"], rows)
    before, after = _flats_before_after(scan)
    if before is not None:
        fields["flat_before"], fields["flat_after"] = mean(flats[before]), mean(flats[after])
    else:
        fields["flat"] = mean(flats)
    bad = np.zeros(flats.shape[1:], bool)
    for key in ("flat", "flat_before", "flat_after"):
        if key in fields:
            bad |= defective_pixels(fields[key], fields.get("dark"))
    if bad.any():
        row_numbers = np.arange(int(scan.sizes["row"]))[rows]
        first_row, first_col = (int(i) for i in np.argwhere(bad)[0])
        warnings.warn(
            f"{scan.attrs.get('source_file') or 'scan'}: flats/darks: {int(bad.sum())} of "
            f"{bad.size} detector pixels in rows {row_numbers.min()}-{row_numbers.max()} have a "
            f"flat no brighter than the dark, or a flat or dark that is not finite (first: row "
            f"{row_numbers[first_row]}, col {first_col}); their values are interpolated from the "
            f"neighbouring columns, so the result stays right; fix: none needed (to be rid of "
            f"this warning, replace those pixels in the flats and darks, e.g. from a new flat "
            f"series)", stacklevel=3)
    fields = {key: xp.asarray(value) for key, value in fields.items()}
    fields["bad"] = bad
    return fields


def _fill_nonfinite(data):
    """Replace NaN/inf pixels by the mean of their finite neighbours in the row, and say so.

    Without this, ``-log`` would turn each into its largest value (a bright streak).
    A pixel with no finite neighbour becomes 1 (no attenuation).
    """
    xp = array_module(data)
    bad = ~xp.isfinite(data)
    count = int(bad.sum())
    if not count:
        return data
    first = tuple(int(i) for i in xp.argwhere(bad)[0])
    clean = xp.where(bad, 0, data)
    left, right = xp.roll(clean, 1, axis=-1), xp.roll(clean, -1, axis=-1)
    left_ok, right_ok = xp.roll(~bad, 1, axis=-1), xp.roll(~bad, -1, axis=-1)
    left_ok[..., 0] = False  # no wrapping around the detector's edges
    right_ok[..., -1] = False
    n = left_ok.astype(data.dtype) + right_ok.astype(data.dtype)
    mean = (left * left_ok + right * right_ok) / xp.maximum(n, 1)
    data = xp.where(bad, xp.where(n > 0, mean, 1), data)
    warnings.warn(f"projections: {count} pixel{'s are' if count > 1 else ' is'} not finite (NaN "
                  f"or inf; first at angle index {first[0]}, row {first[1]} of this slab, col "
                  f"{first[2]}); each is replaced by the mean of its neighbours in the row; fix: "
                  f"none needed, or repair those pixels in the projections", stacklevel=3)
    return data


def correct(raw, fields: dict, *, rows=slice(None), log: bool = True, halo: int = 0,
            steps: Preprocessing = NO_PREPROCESSING):
    """From raw counts to line integrals: flat/dark, zingers, phase or ``-log``, stripes.

    Parameters
    ----------
    raw : ndarray (angle, row, col)
        Raw counts of the whole scan's angles, including ``halo`` rows above and below.
    fields : dict
        From :func:`field_means`, for the same rows as ``raw``; ``rows``
        selects them when the fields cover more.
    halo : int
        Rows above and below that are cropped after the 2D steps.
    """
    from tomolab.prep import remove_stripes, remove_zingers, retrieve_phase

    if not fields:
        data = raw.astype(np.float32)
    elif "flat_before" in fields:
        data = normalize_interpolated(raw, fields["flat_before"][rows], fields["flat_after"][rows],
                                      fields["dark"][rows] if "dark" in fields else None,
                                      bad_pixels=fields["bad"][rows])
    else:
        data = flat_field(raw, fields["flat"][rows], fields["dark"][rows] if "dark" in fields else None,
                          bad_pixels=fields["bad"][rows])
    if np.dtype(raw.dtype).kind == "f":  # counts stored as floats may hold NaN or inf
        data = _fill_nonfinite(data)
    if steps.zingers is not None:
        data = remove_zingers(data, threshold=steps.zingers)
    if steps.phase:
        data = retrieve_phase(data, output="attenuation", **steps.phase)
    elif log:
        data = minus_log(data)
    if halo:
        data = data[:, halo:data.shape[1] - halo]
    if steps.stripes:
        data = remove_stripes(data, method=steps.stripes, **steps.stripe_options)
    return data


def line_integrals(scan, rows: slice, *, backend: str = "numpy", normalize: bool = True,
                   log: bool = True, steps: Preprocessing = NO_PREPROCESSING):
    """Read ``rows`` of every projection and turn them into line integrals.

    Parameters
    ----------
    scan : xarray.Dataset
        As :func:`tomolab.open_scan` returns it.
    rows : slice
        Detector rows to read.
    backend : {"numpy", "cupy"}
        Where the correction runs; the raw counts are uploaded in their own dtype.
    normalize : bool
        Divide by flats after subtracting darks. With flats before *and* after
        the projections, the flat is interpolated between the two (beam drift).
        ``False`` for projections that are already flat-field corrected.
    log : bool
        Take ``-log`` (``False`` for data that are already line integrals).
    steps : Preprocessing
        Zingers, phase retrieval and stripe removal.

    Returns
    -------
    ndarray (angle, row, col) float32 on the backend's device
    """
    from tomolab.io import read_frames

    xp = _array_module(backend)
    halo = steps.halo()
    start, stop, _ = rows.indices(int(scan.sizes["row"]))
    index = row_index(start, stop, halo, int(scan.sizes["row"]))
    fields = field_means(scan, index, backend=backend, normalize=normalize)
    raw = xp.asarray(read_frames(scan["projections"], index))
    return correct(raw, fields, log=log, halo=halo, steps=steps)


def slab_bytes(height: int, *, n_angles: int, n_cols: int, size: int, itemsize: int = 2,
               halo: int = 0, n_fields: int = 0) -> int:
    """Working memory of a slab of ``height`` rows: what is alive at once while it is reconstructed.

    Counted as if all were alive together (they are not quite: the estimate
    errs on the safe side): the raw counts of the slab and its halo
    (``itemsize`` bytes per pixel), the corrected float32 sinograms, the
    padded sinograms of the filter with their complex64 spectrum and its
    filtered copy, the filtered sinograms, and the slices; ``n_fields`` flat
    and dark frames of the slab's rows as they are read and averaged. The
    measured peak of a CPU reconstruction is 0.7 to 0.85 of it
    (``tests/test_resource_guards.py`` checks).

    Examples
    --------
    >>> slab_bytes(1, n_angles=1000, n_cols=1000, size=1000)
    38616000
    """
    from tomolab.recon import fbp_bytes

    rows_read = height + 2 * halo
    raw = n_angles * rows_read * n_cols * itemsize + n_angles * 2 * halo * n_cols * 4  # halo, float32
    fields = n_fields * rows_read * n_cols * itemsize + rows_read * n_cols * 8 * 3
    return int(raw + fields + fbp_bytes(height, n_angles=n_angles, n_cols=n_cols, size=size))


def slab_height(n_angles: int, n_cols: int, size: int, backend: str, *, n_rows: int,
                fraction: float = 0.25, itemsize: int = 2, reserved: int = 0) -> int:
    """Detector rows per slab so that one slab uses at most ``fraction`` of free memory.

    ``reserved`` bytes (the volume the caller holds) are not free.
    """
    per_row = slab_bytes(1, n_angles=n_angles, n_cols=n_cols, size=size, itemsize=itemsize)
    return batch_size(per_row, backend=backend, count=n_rows, fraction=fraction, reserved=reserved)


def reconstruct_rows(scan, rows: range, *, center, algorithm: Callable, backend: str,
                     size: int, normalize: bool = True, log: bool = True,
                     steps: Preprocessing = NO_PREPROCESSING, scale: float = 1.0,
                     sink: Callable[[int, int, np.ndarray], None] | None = None,
                     max_height: int | None = None,
                     progress: Callable[[int, int], None] | None = None,
                     cancel: Callable[[], bool] | None = None, stats: dict | None = None,
                     store_as: tuple[str, dict] | None = None,
                     stream_options=None, **algorithm_options) -> np.ndarray | None:
    """Reconstruct a contiguous range of detector rows, slab by slab.

    Parameters
    ----------
    center : float or ndarray (len(rows),)
        The axis column, or one per row (tilted axis).
    size : int
        Width of the square slices, in pixels (the axis at their middle).
    steps : Preprocessing
        Corrections between flat-fielding and filtering.
    scale : float
        Factor applied to the slices on the device (e.g. 1 / pixel size), so
        the host never makes a pass over the volume.
    sink : callable(start, stop, slices), optional
        Receives each finished slab (rows ``start:stop`` of ``rows``, float32
        ``(stop - start, size, size)`` on the host) instead of collecting the volume;
        on the GPU it runs in the writer thread, overlapped with the compute,
        and ``slices`` is only valid during the call. Slabs arrive in order.
    max_height : int, optional
        At most this many rows per slab (otherwise from free memory, and on the
        GPU at most :data:`MAX_GPU_SLAB_ROWS`). On the CPU, slabs are also
        kept to about :data:`CPU_SLAB_SECONDS` of work
        (:class:`tomolab.devices.TimedBatches`).
    progress : callable(done, total), optional
        Called with ``done=0`` when the first slab starts (after all checks),
        then after each slab with the number of rows done; with an iterative
        algorithm also after each iteration, ``done`` then fractional.
    cancel : callable() -> bool, optional
        Polled between slabs (and iterations); when it returns True,
        :class:`Cancelled` is raised.
    stats : dict, optional
        Filled with the seconds per stage of the GPU stream
        (see :func:`tomolab.engine.stream.stream_slabs`); on the CPU with
        ``compute`` (seconds), ``slabs`` and ``height`` (the tallest slab).
    store_as : (dtype, encoding), optional
        How the ``sink`` stores the volume (:func:`tomolab.io.encode_rows`), for
        a 16-bit output. Where the GPU stream encodes on the device
        (``stream_options.encode_on_device``), the sink is called as
        ``sink(start, stop, stored, clipped)`` with the slab already in
        ``dtype`` and ``clipped`` the count of clipped values per row;
        otherwise as without it (float32 slices, which the sink encodes).
    stream_options : tomolab.engine.stream.StreamOptions, optional
        The host side of the GPU stream; default: as ``TOMOLAB_STREAM`` says
        (:meth:`~tomolab.engine.stream.StreamOptions.from_environment`).

    Returns
    -------
    ndarray (z, size, size) float32 on the host, attenuation per pixel times ``scale``;
    ``None`` when a ``sink`` took the slabs.
    """
    angles = scan["angle"].values
    n_rows = len(rows)
    volume = n_rows * size * size * 4 if sink is None and backend != "cupy" else 0
    height = slab_height(angles.size, scan.sizes["col"], size, backend, n_rows=n_rows,
                         itemsize=scan["projections"].dtype.itemsize, reserved=volume)
    if backend == "cupy":  # pinned buffers take time to allocate; 32 rows fill an H100
        height = min(height, MAX_GPU_SLAB_ROWS)
        # two pinned input buffers and the output buffers of a slab, on the host next to the volume
        from tomolab.engine.stream import StreamOptions

        options = stream_options or StreamOptions.from_environment()
        halo = steps.halo()
        itemsize = scan["projections"].dtype.itemsize
        # a 16-bit output encoded on the device comes down (and waits pinned) in 16 bits
        encode = (options.encode_on_device and sink is not None and store_as is not None
                  and store_as[0] in ("uint16", "float16"))
        out_itemsize = 2 if encode else 4
        pinned_row = (2 * angles.size * scan.sizes["col"] * itemsize
                      + options.out_buffers * size * size * out_itemsize)
        pinned_halo = 2 * angles.size * 2 * halo * scan.sizes["col"] * itemsize
        volume = n_rows * size * size * 4 if sink is None else 0
        height = min(height, batch_size(pinned_row, backend="numpy", count=n_rows,
                                        reserved=volume + pinned_halo))
    if getattr(algorithm, "iterative", False):  # more working memory than FBP's, more work
        from tomolab.recon import iterative_bytes
        per_row_bytes = slab_bytes(1, n_angles=angles.size, n_cols=scan.sizes["col"], size=size,
                                   itemsize=scan["projections"].dtype.itemsize) + iterative_bytes(
            1, n_angles=angles.size, n_cols=scan.sizes["col"], size=size)
        height = min(height, batch_size(per_row_bytes, backend=backend, count=n_rows,
                                        reserved=volume))
        progress = _rising(progress)
    if max_height:
        height = min(height, max_height)
    if backend == "cupy" and getattr(algorithm, "pairs_slices", False) and height > 1:
        height -= height % 2  # each slice keeps its partner (and its bits) whatever the slabs
    out = None
    if sink is None:
        out = np.empty((n_rows, size, size), np.float32)
    if progress is not None:
        progress(0, n_rows)
    if backend == "cupy":
        _stream_rows_gpu(scan, rows, out, sink, height=height, center=center, algorithm=algorithm,
                         size=size, scale=scale, normalize=normalize, log=log, steps=steps,
                         progress=progress, cancel=cancel, stats=stats,
                         encode_as=store_as if encode else None, options=options,
                         **algorithm_options)
        return out
    # the first slab from the backprojection's cost (n_angles × size² updates a row)
    per_row = angles.size * size * size / CPU_UPDATES_PER_SECOND
    if hasattr(algorithm, "passes"):  # an iterative algorithm: a backprojection's work per pass
        per_row *= algorithm.passes(**algorithm_options)
    heights = TimedBatches(first=int(CPU_SLAB_SECONDS // max(per_row, 1e-9)), ceiling=height,
                           seconds=CPU_SLAB_SECONDS)
    _stream_rows_cpu(scan, rows, out, sink, heights=heights, center=center, algorithm=algorithm,
                     size=size, scale=scale, normalize=normalize, log=log, steps=steps,
                     progress=progress, cancel=cancel, stats=stats, **algorithm_options)
    return out


def _rising(progress):
    """``progress`` called only with rising ``done``: slab reports (from the GPU path's writer
    thread) and the iterations of the next slab (from the compute) may arrive out of order."""
    if progress is None:
        return None
    import threading

    lock, last = threading.Lock(), [-1.0]

    def report(done, total):
        with lock:
            if done <= last[0]:
                return
            last[0] = done
        progress(done, total)
    return report


def _per_iteration(algorithm, progress, cancel, start: int, stop: int, n_rows: int) -> dict:
    """The ``callback`` option of an iterative algorithm: progress and cancel after each iteration.

    Progress counts rows, fractional while a slab iterates (``start + (stop - start) · k / n``
    after iteration ``k`` of ``n``); the slab's last row is reported when it is stored.
    """
    if not getattr(algorithm, "iterative", False) or (progress is None and cancel is None):
        return {}

    def callback(iteration: int, iterations: int) -> None:
        if cancel is not None and cancel():
            raise Cancelled(f"reconstruction cancelled after iteration {iteration} of {iterations} "
                            f"of rows {start}:{stop} ({start} of {n_rows} rows done)")
        if progress is not None and iteration < iterations:
            progress(start + (stop - start) * iteration / iterations, n_rows)
    return {"callback": callback}


def _stream_rows_cpu(scan, rows: range, out, sink, *, heights: TimedBatches, center, algorithm,
                     size: int, scale: float, normalize: bool, log: bool, steps: Preprocessing,
                     progress, cancel, stats=None, **algorithm_options):
    """The CPU path: slab after slab; a sink writes slab ``k`` while slab ``k + 1`` is computed."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    from tomolab.io import read_frames

    angles = scan["angle"].values
    n_rows = len(rows)
    n_detector_rows = int(scan.sizes["row"])
    halo = steps.halo()
    # the fields of every row once (as on the GPU): read once, defective pixels reported once
    fields = field_means(scan, row_index(rows.start, rows.stop, halo, n_detector_rows),
                         backend="numpy", normalize=normalize)
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tomolab-write") if sink else None
    pending = None
    start, slabs, tallest, busy = 0, 0, 0, 0.0
    try:
        while start < n_rows:
            if cancel is not None and cancel():
                raise Cancelled(f"reconstruction cancelled after {start} of {n_rows} rows")
            began = time.perf_counter()
            stop = min(start + heights.next(), n_rows)
            index = row_index(rows.start + start, rows.start + stop, halo, n_detector_rows)
            raw = read_frames(scan["projections"], index)
            sinograms = correct(raw, fields, rows=slice(start, stop + 2 * halo), log=log, halo=halo,
                                steps=steps)
            sinograms = sinograms.transpose(1, 0, 2)  # (row, angle, col)
            centers = center if np.ndim(center) == 0 else np.asarray(center)[start:stop]
            slices = to_numpy(algorithm(sinograms, angles, center=centers, size=size,
                                        **_per_iteration(algorithm, progress, cancel, start, stop,
                                                         n_rows), **algorithm_options))
            if scale != 1:
                slices *= np.float32(scale)
            seconds = time.perf_counter() - began  # the compute only: the writer overlaps
            heights.record(stop - start, seconds)
            slabs, tallest, busy = slabs + 1, max(tallest, stop - start), busy + seconds
            if sink is None:
                out[start:stop] = slices
            else:
                if pending is not None:
                    pending.result()  # one slab in flight: memory stays bounded
                pending = writer.submit(sink, start, stop, slices)
            if progress is not None:
                progress(stop, n_rows)
            start = stop
        if pending is not None:
            pending.result()
    finally:
        if writer is not None:
            writer.shutdown(wait=True)
    if stats is not None:
        stats.update(compute=busy, slabs=slabs, height=tallest)


def _stream_rows_gpu(scan, rows: range, out, sink, *, height: int, center, algorithm, size: int,
                     scale: float, normalize: bool, log: bool, steps: Preprocessing, progress,
                     cancel, stats=None, encode_as=None, options, **algorithm_options):
    """The GPU path of :func:`reconstruct_rows`: overlapped slabs (see :mod:`tomolab.engine.stream`)."""
    from concurrent.futures import ThreadPoolExecutor

    from tomolab.engine.stream import populate, stream_slabs
    from tomolab.io import encode_rows, read_frames

    angles = scan["angle"].values
    n_angles, n_cols = angles.size, int(scan.sizes["col"])
    n_detector_rows = int(scan.sizes["row"])
    projections = scan["projections"]
    halo = steps.halo()
    # fields for every row a slab may read, halo included (edge rows repeated)
    field_rows = row_index(rows.start, rows.stop, halo, n_detector_rows)
    fields = field_means(scan, field_rows, backend="cupy", normalize=normalize)
    cores = usable_cpus()
    workers = min(8, cores)
    copiers = min(options.write_threads, cores)
    copier = ThreadPoolExecutor(max_workers=copiers, thread_name_prefix="tomolab-copy")
    encoded = encode_as is not None  # (dtype, encoding): slabs encoded before the download
    out_dtype = np.dtype(encode_as[0]) if encoded else np.dtype(np.float32)

    def read(start, stop, buffer):
        # only the slab's rows, straight into the pinned buffer, frames split among threads
        index = row_index(rows.start + start, rows.start + stop, halo, n_detector_rows)
        read_frames(projections, index, out=buffer, threads=workers)

    def compute(raw, start, stop):
        # the fields start ``halo`` rows above rows.start, as the raw slab does above ``start``
        sinograms = correct(raw, fields, rows=slice(start, stop + 2 * halo), log=log, halo=halo,
                            steps=steps).transpose(1, 0, 2)
        centers = center if np.ndim(center) == 0 else np.asarray(center)[start:stop]
        slices = algorithm(sinograms, angles, center=centers, size=size,
                           **_per_iteration(algorithm, progress, cancel, start, stop, len(rows)),
                           **algorithm_options)
        if scale != 1:
            slices *= np.float32(scale)
        if encoded:  # the stored values and the clipped count per row, before the download
            return encode_rows(slices, *encode_as)
        return slices

    def write(start, stop, host, *extras):
        if sink is not None:
            sink(start, stop, host, *extras)
            return
        # host memory bandwidth needs several threads; each copies whole slices
        list(copier.map(lambda z: np.copyto(out[start + z], host[z]), range(stop - start)))

    faulter, faulting = None, []
    if options.prefault and out is not None:
        # the output's pages faulted in ahead of the writer, slice by slice in order (all
        # threads on the first slabs first), while the first slabs are read and computed; the
        # writer faults in any it gets to first. A pool of its own, so that the writer's copies
        # never queue behind it.
        faulter = ThreadPoolExecutor(max_workers=copiers, thread_name_prefix="tomolab-fault")
        faulting = [faulter.submit(populate, out, z, z + 1) for z in range(len(rows))]
    try:
        stream_slabs(len(rows), height, in_shape=lambda h: (n_angles, h + 2 * halo, n_cols),
                     in_dtype=projections.dtype, out_shape=lambda h: (h, size, size), read=read,
                     compute=compute, write=write, progress=progress, cancel=cancel, stats=stats,
                     out_buffers=options.out_buffers, out_dtype=out_dtype)
    finally:
        if faulter is not None:
            faulter.shutdown(cancel_futures=True)
        copier.shutdown()
    if stats is not None:
        faulted = sum(1 for f in faulting if f.done() and not f.cancelled() and f.result())
        stats.update(write_threads=copiers, slices_prefaulted=faulted,
                     encoded_on_device=encoded)
