"""Full volumes straight to disk: streamed slab by slab into zarr, HDF5 or TIFF, resumable.

:func:`reconstruct_to` never holds the volume in memory. The reconstruction
streams (on the GPU: read, upload, compute, download overlapped) and each
finished slab is written by the stream's writer thread into a partial output
next to the target (``.NAME.partial``), where it is recorded as done; the
output is moved into place only when every slab is done. A run that was
killed or cancelled picks up where it stopped when it is started again with
the same parameters: finished slabs are not recomputed, and the result is
identical to an uninterrupted run. The output opens with
:func:`tomolab.io.open_volume` (the layouts of :func:`tomolab.save_volume`).

A partial output is resumed only if it was made with the same parameters
from the same input: the input's identity (:func:`source_identity`: size and
modification time of its file(s), and a checksum of sample frames read
through the scan) is recorded in it. A partial output of another input is
discarded with a warning and the volume is computed afresh: resuming it would
mix two scans in one volume, and discarding loses only computing time.

With a :class:`dask.distributed.Client`, the slabs become tasks: each worker
unpickles the plan (the scan is lazy, so only file names and parameters
travel), reconstructs its slabs with the same engine on its own GPU or CPU,
and writes them straight into the one partial zarr store (or TIFF folder),
marking each slab done with a file of its own. The client creates the partial store, submits,
follows completions, and moves the finished store into place; no volume data
come back to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
import uuid
from functools import partial
from pathlib import Path

import numpy as np

from tomolab.api.reconstruct import plan_reconstruction
from tomolab.checks import check_bool
from tomolab.errors import ParameterError
from tomolab.io import check_dtype, check_value_range, uint16_encoding

__all__ = ["reconstruct_to", "source_identity"]

_log = logging.getLogger("tomolab")

#: largest pickled plan sent with each task; above it the scan holds its data in memory
MAX_TASK_BYTES = 4 * 2 ** 20
#: longest wait for a cluster task before cancel() is asked again (a task's end wakes it at once)
CANCEL_POLL_S = 0.1


def _fingerprint(scan, params: dict) -> str:
    """What makes two runs the same: the source, its shape, and every parameter."""
    source = {"source_file": str(scan.attrs.get("source_file") or ""),
              "shape": [int(scan.sizes[d]) for d in ("angle", "row", "col")]}
    text = json.dumps({"source": source, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _file_identity(path) -> dict | None:
    """Size and mtime of a file; for a folder (TIFF stack), of every file in it, summed up."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    if not os.path.isdir(path):
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    count = size = latest = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                item = os.stat(os.path.join(folder, name))
            except OSError:
                continue
            count, size, latest = count + 1, size + item.st_size, max(latest, item.st_mtime_ns)
    return {"files": count, "size": size, "mtime_ns": latest}


def _frame(data) -> np.ndarray:
    from tomolab.arrays import to_numpy

    if hasattr(data, "compute"):  # a few frames, read here: never through an active dask client
        data = data.compute(scheduler="threads")
    return np.ascontiguousarray(to_numpy(data))


def source_identity(scan) -> dict:
    """What identifies a scan's data: its file(s) and a checksum of sample frames.

    The first, middle and last projection, flat and dark are read through the
    scan (a few frames, not the scan) and hashed with the angles. The file's
    size and modification time (``mtime_ns``) are recorded where the scan has
    a ``source_file``. Two scans with the same identity hold the same data for
    every practical purpose; a scan replaced by another of the same shape
    differs in the checksum even where size and mtime were made to match.

    Examples
    --------
    >>> import tomolab
    >>> a = tomolab.data.simulate_scan(32, n_rows=2, n_angles=30, seed=1)
    >>> b = tomolab.data.simulate_scan(32, n_rows=2, n_angles=30, seed=2)
    >>> source_identity(a) == source_identity(a), source_identity(a) == source_identity(b)
    (True, False)
    """
    digest = hashlib.sha256()
    for var, dim in (("projections", "angle"), ("flats", "flat"), ("darks", "dark")):
        if var not in scan.data_vars or scan.sizes.get(dim, 0) == 0:
            continue
        n = scan.sizes[dim]
        for index in sorted({0, n // 2, n - 1}):
            frame = _frame(scan[var].isel({dim: index}).data)
            digest.update(f"{var}[{index}] {frame.dtype.str} {frame.shape}".encode())
            digest.update(frame.tobytes())
    if "angle" in scan.coords:
        digest.update(np.ascontiguousarray(np.asarray(scan["angle"].values, np.float64)).tobytes())
    identity = {"frames_sha256": digest.hexdigest()}
    source = scan.attrs.get("source_file")
    if source:
        identity["file"] = _file_identity(source)
    return identity


class _SlabAssembler:
    """Collects the stream's slabs into the output's slabs and writes each one when it is whole.

    The stream's slabs and the output's need not line up; a stream slab that is
    exactly one output slab is written straight from the stream's buffer.
    Slabs encoded on the device come with their clipped counts per row
    (``clipped``), summed here over each output slab.
    """

    def __init__(self, sink, indices: list[int], first_row: int, size: int):
        self.sink, self.size = sink, size
        self.slabs = {i: sink.slabs[i] for i in indices}
        self.first_row = first_row  # output row of the stream's row 0
        self.pending: dict[int, tuple[np.ndarray, int, int | None]] = {}

    def store_as(self):
        """``(dtype, encoding)`` of a 16-bit output, for the engine to encode on the device."""
        dtype = np.dtype(self.sink.dtype).name
        return None if dtype == "float32" else (dtype, dict(self.sink.encoding))

    def __call__(self, start: int, stop: int, block: np.ndarray, clipped=None) -> None:
        start, stop = start + self.first_row, stop + self.first_row
        for index, (a, b) in self.slabs.items():
            lo, hi = max(a, start), min(b, stop)
            if lo >= hi:
                continue
            count = None if clipped is None else int(np.sum(clipped[lo - start:hi - start]))
            if (lo, hi) == (a, b) and index not in self.pending:
                self.sink.write(index, block[a - start:b - start], **_counted(count))
                continue
            buffer, filled, total = self.pending.get(index) or (
                np.empty((b - a, self.size, self.size), block.dtype), 0, None)
            buffer[lo - a:hi - a] = block[lo - start:hi - start]
            filled += hi - lo
            if count is not None:
                total = (total or 0) + count
            if filled == b - a:
                self.pending.pop(index, None)
                self.sink.write(index, buffer, **_counted(total))
            else:
                self.pending[index] = (buffer, filled, total)


def _counted(clipped) -> dict:
    """The ``clipped=`` of a sink's write: only for slabs encoded already."""
    return {} if clipped is None else {"clipped": clipped}


def reconstruct_to(scan, path, *, center, rows=None, slab_rows: int = 32, format: str = "auto",
                   overwrite: bool = False, multiscale: int = 0, dtype: str = "float32",
                   value_range=None, progress=None, cancel=None, stats: dict | None = None,
                   client=None, slabs_per_task="auto", **options):
    """Reconstruct into a file on disk, slab by slab, resumably.

    Parameters
    ----------
    scan : xarray.Dataset
    path : str or os.PathLike
        Output: ``NAME.zarr`` (zarr store), ``NAME.h5`` (or ``.hdf5``, ``.nxs``:
        HDF5 dataset ``/volume``) or a folder name without suffix (or ending in
        ``.tif``/``.tiff``: one TIFF per slice), as :func:`tomolab.save_volume`
        writes them.
    center : float, "auto", array_like or axis fit
        As for :func:`tomolab.reconstruct`; ``"auto"`` is resolved once, before
        the first slab, so every slab uses the same centre.
    rows : int, slice, "A:B" or (A, B), optional
        Detector rows (default: all).
    slab_rows : int
        Rows per slab: the unit of resumption and of zarr chunks along z. On a
        GPU, slabs of up to 32 rows stream without an extra copy.
    format : {"auto", "zarr", "hdf5", "tiff"}
        Output format; ``"auto"`` tells it from the name.
    overwrite : bool
        Replace an existing output at ``path`` -- only one that tomolab wrote
        (it carries the ``tomolab_output`` marker) and that holds nothing else.
    multiscale : int
        zarr only: add this many block-averaged levels (each half the size of
        the one before, ``level1``, ``level2``, ...) and OME-Zarr (NGFF 0.4)
        ``multiscales`` metadata, so OME-Zarr viewers open the store with a
        pyramid. The levels are computed from the stored volume in chunks
        (float32, whatever ``dtype``).
    dtype : {"float32", "float16", "uint16"}
        How the volume is stored. The 16-bit ones halve the bytes written
        (which bound a disk-to-disk run). ``"float16"``: as it is, within a
        relative 4.9e-4 (values beyond ±65504 are clipped). ``"uint16"``: the
        range ``value_range`` spread over 0 .. 65535, within half a step
        (``scale_factor / 2``); values outside it are clipped. Scale, offset,
        range and ``clipped_voxels`` (the count of clipped values) are
        recorded in the output's attrs; :func:`tomolab.io.open_volume` gives
        back float32 in 1/m, as for a float32 output.
    value_range : (float, float), optional
        ``dtype="uint16"``: the lowest and highest value to keep, in the
        volume's units (1/m with a pixel size). Default: from a preview of
        three rows (a quarter, half and three quarters of the way through
        ``rows``), their 0.01 and 99.99 percentiles widened by 5 % of the span
        each side. The range is recorded before the first slab, so a resumed
        run stores with the same scale and offset.
    progress, cancel : callable, optional
        ``progress(done_rows, total_rows)`` when the first slab starts and
        after each slab; ``cancel()`` is polled between slabs. A cancelled run leaves its partial output, and the
        next call with the same parameters resumes it.
    stats : dict, optional
        Filled with the seconds per stage of the GPU stream, to tell what
        bounds a run (see :func:`tomolab.engine.stream.stream_slabs`). With a
        client: ``tasks``, ``workers`` (slabs per worker process),
        ``worker_seconds`` (time spent in tasks, summed) and ``slabs_skipped``
        (slabs that a retried task found done by the worker that died).
    client : dask.distributed.Client, "active" or "hub", optional
        Reconstruct on a dask cluster (see :func:`tomolab.cluster.start_cluster`);
        ``"active"`` takes the client of this process
        (:func:`distributed.get_client`), ``"hub"`` the cluster of this
        JupyterHub server (:func:`tomolab.cluster.connect_hub`). zarr or TIFF output (not HDF5), on a
        file system that every worker sees; the scan must be opened from a file that every
        worker can read. ``backend="auto"`` is resolved on the workers (all
        must agree). A worker that dies has its slabs recomputed elsewhere;
        a client that dies leaves the partial output, which the same call
        (with or without a cluster) completes. The output is identical to a
        run without a cluster.
    slabs_per_task : int or "auto"
        With a client: consecutive slabs per task (one GPU stream each).
        ``"auto"``: about four tasks per worker thread, at most 16 slabs.
    **options
        Passed to :func:`tomolab.reconstruct` (``filter``, ``algorithm``,
        ``backend``, ``stripes``, ``phase``, ...).

    Returns
    -------
    xarray.DataArray
        The volume, opened lazily from ``path``.

    Raises
    ------
    tomolab.errors.OutputError
        If another run writes ``path`` (its lock ``.NAME.lock`` is held), the
        disk has no room for the volume, or the folder cannot be written; the
        finished slabs stay resumable.

    Warns
    -----
    UserWarning
        When a partial output from other parameters or another input (see
        :func:`source_identity`) is discarded.

    Examples
    --------
    >>> import os, tempfile, tomolab
    >>> scan = tomolab.data.simulate_scan(64, n_rows=6, n_angles=90)
    >>> out = os.path.join(tempfile.mkdtemp(), "vol.zarr")
    >>> vol = reconstruct_to(scan, out, center=scan.attrs["true_center"], slab_rows=4,
    ...                      backend="numpy")
    >>> vol.shape, vol.attrs["slab_rows"]
    ((6, 64, 64), 4)
    >>> small = reconstruct_to(scan, os.path.join(os.path.dirname(out), "vol16.zarr"),
    ...                        center=scan.attrs["true_center"], backend="numpy", dtype="uint16")
    >>> small.dtype, small.encoding["dtype"], small.attrs["output_dtype"]
    (dtype('float32'), dtype('uint16'), 'uint16')
    """
    from tomolab.errors import Cancelled
    from tomolab.io import frame_runs, open_sink, open_volume

    path = Path(os.fspath(path)).expanduser()
    if not isinstance(slab_rows, (int, np.integer)) or isinstance(slab_rows, bool) or slab_rows < 1:
        raise ParameterError("slab height must be a positive integer", where="slab_rows",
                             value=slab_rows, fix="pass e.g. slab_rows=32")
    if not isinstance(multiscale, (int, np.integer)) or not 0 <= multiscale <= 8:
        raise ParameterError("levels of the pyramid must be an integer from 0 to 8",
                             where="multiscale", value=multiscale, fix="pass e.g. multiscale=3")
    check_bool(overwrite, "overwrite", "pass overwrite=True or overwrite=False")
    dtype = check_dtype(dtype)
    value_range = check_value_range(value_range)
    if value_range is not None and dtype != "uint16":
        raise ParameterError("a value range is for uint16 output only", where="value_range",
                             value=value_range, fix='pass dtype="uint16" too, or drop value_range')
    if isinstance(client, str) and client == "hub":  # the cluster of this JupyterHub server
        from tomolab.cluster import connect_hub

        with connect_hub() as hub:
            return reconstruct_to(scan, path, center=center, rows=rows, slab_rows=slab_rows,
                                  format=format, overwrite=overwrite, multiscale=multiscale,
                                  dtype=dtype, value_range=value_range, progress=progress,
                                  cancel=cancel, stats=stats, client=hub,
                                  slabs_per_task=slabs_per_task, **options)
    if client is not None:
        client = _resolve_client(client)
        _check_cluster_format(path, format)
        from tomolab.cluster import worker_cpus

        cpus = worker_cpus()  # a wrong value fails before any output exists
        plan = _plan_for_workers(client, scan, center=center, rows=rows, **options)
    else:
        plan = plan_reconstruction(scan, center=center, rows=rows, **options)
    row_range, size = plan.row_range, plan.size
    plan.check_memory(row_range, slab_rows=int(slab_rows))  # before a partial output exists
    per_row = np.ndim(plan.center) == 1
    params = {"center": plan.center.tolist() if per_row else plan.center,
              "rows": [row_range.start, row_range.stop], "slab_rows": int(slab_rows),
              "size": size, **{k: v for k, v in options.items() if k not in ("backend", "size")},
              "algorithm": plan.algorithm}  # what runs: "auto" may differ between machines
    if dtype != "float32":
        params.update(dtype=dtype, value_range=value_range)
    attrs = dict(plan.attrs(), slab_rows=int(slab_rows), output_dtype=dtype)
    encoding = None
    if dtype == "uint16":
        encoding = (uint16_encoding(*value_range) if value_range is not None
                    else partial(_preview_encoding, plan, stats))  # only for a fresh output
    sink = open_sink(path, shape=(len(row_range), size, size), coords=plan.coords(), attrs=attrs,
                     slab_rows=int(slab_rows), fingerprint=_fingerprint(scan, params),
                     format=format, overwrite=overwrite, multiscale=int(multiscale),
                     source=source_identity(scan), dtype=dtype, encoding=encoding)
    total = len(row_range)
    if client is not None:
        try:
            if not sink.slabs:
                raise ParameterError("nothing was reconstructed", where="rows", value=rows,
                                     fix="select at least one row")
            _run_on_cluster(client, plan, sink, slab_rows=int(slab_rows),
                            slabs_per_task=slabs_per_task, progress=progress, cancel=cancel,
                            stats=stats, cpus=cpus)
            sink.finish()
        finally:
            sink.close()
        return open_volume(path)
    try:
        todo = [i for i in range(len(sink.slabs)) if i not in sink.done]
        done_rows = sum(b - a for i, (a, b) in enumerate(sink.slabs) if i in sink.done)
        for a, b in frame_runs(todo):  # consecutive slabs run as one stream
            run = list(range(a, b))
            first, last = sink.slabs[a][0], sink.slabs[b - 1][1]
            assembler = _SlabAssembler(sink, run, first, size)

            def report(done, _total, offset=done_rows):
                if progress is not None:
                    progress(offset + done, total)
            run_stats: dict = {}
            try:
                plan.run(range(row_range.start + first, row_range.start + last), sink=assembler,
                         max_height=int(slab_rows), progress=report, cancel=cancel,
                         stats=run_stats, store_as=assembler.store_as())
            except Cancelled:
                finished = len(sink.done)
                raise Cancelled(f"cancelled after {finished} of {len(sink.slabs)} slabs; run again "
                                f"with the same parameters to resume from {sink.partial}") from None
            done_rows += last - first
            if stats is not None:
                for key, value in run_stats.items():
                    stats[key] = stats.get(key, 0) + value if key != "height" else value
        if not sink.slabs:
            raise ParameterError("nothing was reconstructed", where="rows", value=rows,
                                 fix="select at least one row")
        sink.finish()
    finally:
        sink.close()
    return open_volume(path)


#: the preview of a uint16 output's value range: rows, percentiles, margin (fraction of the span)
PREVIEW_ROWS = 3
PREVIEW_PERCENTILES = (0.01, 99.99)
PREVIEW_MARGIN = 0.05


def _preview_encoding(plan, stats: dict | None = None) -> dict:
    """A uint16 encoding from a preview of a few rows (see ``value_range`` of :func:`reconstruct_to`).

    On a cluster planned here without its GPU, the preview runs here on the CPU.
    Its seconds go in ``stats["preview"]``: it reads a row of every projection
    three times, scattered over the input file, before the first slab.
    """
    started = time.perf_counter()
    import dataclasses

    from tomolab.arrays import cupy_available

    rows = plan.row_range
    picks = sorted({rows.start + len(rows) * (k + 1) // (PREVIEW_ROWS + 1)
                    for k in range(PREVIEW_ROWS)} & set(rows))
    if plan.backend == "cupy" and not cupy_available():
        plan = dataclasses.replace(plan, backend="numpy", precision="single", kernel="auto")
    values = np.concatenate([plan.run(range(r, r + 1)).ravel() for r in picks] or [np.zeros(0)])
    values = values[np.isfinite(values)]
    lo, hi = (np.percentile(values, PREVIEW_PERCENTILES) if values.size else (0.0, 1.0))
    margin = PREVIEW_MARGIN * (hi - lo) if hi > lo else max(abs(float(hi)), 1.0)
    p_lo, p_hi = PREVIEW_PERCENTILES
    if stats is not None:
        stats["preview"] = time.perf_counter() - started
    return uint16_encoding(float(lo - margin), float(hi + margin),
                           source=f"preview of rows {', '.join(map(str, picks))}: percentiles "
                                  f"{p_lo:g} to {p_hi:g}, widened by {PREVIEW_MARGIN:.0%} each side")


# ----------------------------------------------------------------------------- on a dask cluster

def _resolve_client(client):
    """A ``distributed.Client`` from ``client=`` (a client, or ``"active"``)."""
    if isinstance(client, str):
        if client != "active":
            raise ParameterError("client must be a dask.distributed.Client, 'active' or 'hub'",
                                 where="client", value=client,
                                 fix="pass client=tomolab.cluster.start_cluster('local'), or "
                                     "client='active' to use the client of this process")
        try:
            from distributed import get_client
        except ImportError:
            raise ParameterError("dask.distributed is not installed", where="client",
                                 value=client, fix="pip install tomolab[cluster]") from None
        try:
            return get_client()
        except ValueError:
            raise ParameterError("no dask client is active in this process", where="client",
                                 value=client,
                                 fix="start one first, e.g. tomolab.cluster.start_cluster('local')"
                                 ) from None
    if not all(hasattr(client, name) for name in ("submit", "run", "scheduler_info")):
        raise ParameterError("client must be a dask.distributed.Client or 'active'",
                             where="client", value=type(client).__name__,
                             fix="pass client=tomolab.cluster.start_cluster('local')")
    return client


def _check_cluster_format(path: Path, format: str) -> None:
    suffix = path.suffix.lower()
    fmt = format if format != "auto" else ("zarr" if suffix == ".zarr" else
                                           "hdf5" if suffix in (".h5", ".hdf5", ".hdf", ".nxs",
                                                                ".nx") else "tiff")
    if fmt not in ("zarr", "tiff"):
        raise ParameterError(f"many workers cannot write one {fmt.upper()} file safely",
                             where="path", value=str(path),
                             fix="name the output NAME.zarr (or a TIFF folder), or run without "
                                 "client=")


def _worker_backend(backend: str) -> str:
    from tomolab.devices import resolve_backend

    return resolve_backend(backend)


def _plan_for_workers(client, scan, *, center, rows, **options):
    """The plan, validated here, with the backend that the workers resolve."""
    import dataclasses

    from tomolab.api.reconstruct import HALF_PRECISION_KERNEL, resolve_algorithm
    from tomolab.arrays import cupy_available
    from tomolab.devices import BACKENDS

    backend = options.get("backend", "auto")
    if backend not in BACKENDS:
        raise ParameterError("unknown backend", where="backend", value=backend,
                             fix=f"use one of {', '.join(BACKENDS)}")
    if not client.scheduler_info().get("workers"):
        client.wait_for_workers(1, timeout=120)
    try:
        found = client.run(_worker_backend, backend)  # {worker address: backend}
    except ImportError as exc:
        raise ParameterError(f"the workers cannot import tomolab ({exc})", where="client",
                             value=client.scheduler_info().get("address"),
                             fix="install the same tomolab in the workers' environment (e.g. "
                                 "python= in the cluster file)") from None
    kinds = sorted(set(found.values()))
    if len(kinds) != 1:
        raise ParameterError("the workers do not all have a GPU", where="backend",
                             value=f"{backend!r} resolves to {kinds} on {len(found)} workers",
                             fix='pass backend="numpy" (or give every worker a GPU)')
    workers_backend = kinds[0]
    here = workers_backend if (workers_backend == "numpy" or cupy_available()) else "numpy"
    plan = plan_reconstruction(scan, center=center, rows=rows, **dict(options, backend=here))
    if plan.backend != workers_backend:  # planned here without a GPU, run there with one
        algorithm = resolve_algorithm(plan.algorithm_requested, workers_backend)
        precision = options.get("precision", "single")
        if algorithm not in ("fbp", "gridrec"):
            precision = "single"
        plan = dataclasses.replace(plan, backend=workers_backend, precision=precision,
                                   algorithm=algorithm,
                                   kernel=HALF_PRECISION_KERNEL if precision == "half" else "auto")
    return plan


def _task_groups(todo: list[int], size: int) -> list[list[int]]:
    """Runs of consecutive slabs, cut into groups of at most ``size``."""
    from tomolab.io import frame_runs

    groups = []
    for a, b in frame_runs(todo):
        groups.extend(list(range(s, min(s + size, b))) for s in range(a, b, size))
    return groups


def _reconstruct_slabs(payload: bytes, writer, indices: list[int], slab_rows: int,
                       cpus: str = "pinned") -> dict:
    """On a worker: reconstruct slabs ``indices`` of the plan into the store; skip those done."""
    from tomolab.cluster import task_cpus

    with task_cpus(cpus) as used:
        result = _reconstruct_slabs_here(payload, writer, indices, slab_rows)
    result["cpus"] = used
    return result


def _reconstruct_slabs_here(payload: bytes, writer, indices: list[int], slab_rows: int) -> dict:
    import pickle
    import socket

    from tomolab.devices import resolve_backend
    from tomolab.io import frame_runs

    started = time.perf_counter()
    plan = pickle.loads(payload)
    resolve_backend(plan.backend)  # fails here, clearly, on a worker without the GPU it needs
    done = writer.done()
    todo = [i for i in indices if i not in done]  # a retried task redoes only what is missing
    run_stats: dict = {}
    for a, b in frame_runs(todo):
        first, last = writer.slabs[a][0], writer.slabs[b - 1][1]
        assembler = _SlabAssembler(writer, list(range(a, b)), first, plan.size)
        start = plan.row_range.start
        part: dict = {}
        plan.run(range(start + first, start + last), sink=assembler, max_height=slab_rows,
                 stats=part, store_as=assembler.store_as())
        for key, value in part.items():
            if key != "height":
                run_stats[key] = run_stats.get(key, 0) + value
    return {"slabs": todo, "skipped": len(indices) - len(todo), "host": socket.gethostname(),
            "pid": os.getpid(), "seconds": time.perf_counter() - started, "stats": run_stats}


def _run_on_cluster(client, plan, sink, *, slab_rows, slabs_per_task, progress, cancel, stats,
                    cpus="pinned"):
    """Submit the slabs that are not done, follow completions, leave the store complete."""
    import cloudpickle
    from distributed import wait

    from tomolab.errors import Cancelled

    writer = sink.region_writer()
    sink.sync_done()
    todo = [i for i in range(len(sink.slabs)) if i not in sink.done]
    total = sum(b - a for a, b in sink.slabs)
    done_rows = total - sum(sink.slabs[i][1] - sink.slabs[i][0] for i in todo)  # resumed
    payload = cloudpickle.dumps(plan)
    if len(payload) > MAX_TASK_BYTES:
        raise ParameterError(
            f"the scan holds its data in memory ({len(payload) / 2 ** 20:.0f} MiB pickled), "
            f"so every task would carry a copy", where="scan",
            value=plan.scan.attrs.get("source_file") or "from_arrays",
            fix="save it with tomolab.io.write_dxchange and pass tomolab.open_scan(file), "
                "which the workers read lazily")
    if slabs_per_task == "auto":
        threads = sum(w.get("nthreads", 1) for w in client.scheduler_info()["workers"].values())
        threads = max(threads, 1)
        if plan.backend == "cupy":
            # a GPU task pays for its stream's setup (pinned buffers, a pipeline to fill and
            # drain): one task per worker thread; a killed one is redone from its last slab
            slabs_per_task = -(-len(todo) // threads)
        else:  # about four tasks per thread, so that work moves to the workers that are free
            slabs_per_task = min(16, -(-len(todo) // (4 * threads)))
        slabs_per_task = max(1, slabs_per_task)
    elif not isinstance(slabs_per_task, (int, np.integer)) or isinstance(slabs_per_task, bool) \
            or slabs_per_task < 1:
        raise ParameterError("slabs per task must be a positive integer or 'auto'",
                             where="slabs_per_task", value=slabs_per_task,
                             fix="pass e.g. slabs_per_task=4")
    link = getattr(client, "dashboard_link", None)
    if link:
        _log.info("tomolab: reconstructing %d slabs on a dask cluster; dashboard %s",
                  len(todo), link)
    groups = _task_groups(todo, int(slabs_per_task))
    # new keys every run: a rerun must not meet the cancelled futures of the last one
    prefix = f"tomolab-slabs-{uuid.uuid4().hex[:12]}"
    futures = [client.submit(_reconstruct_slabs, payload, writer, group, slab_rows, cpus,
                             key=f"{prefix}-{group[0]}", pure=False)
               for group in groups]
    per_worker: dict = {}
    stream: dict = {}
    busy = 0.0
    finished = skipped = 0
    previously = set(sink.done)
    reported = done_rows

    def report():  # rows of the slabs marked done so far: finer than whole tasks
        nonlocal reported
        now = sum(b - a for i, (a, b) in enumerate(sink.slabs)
                  if i in previously or i in marked)
        if progress is not None and now > reported:
            progress(now, total)
        reported = max(reported, now)

    marked: set = set()
    polled = time.monotonic()
    used_cpus: set = set()
    try:
        remaining = set(futures)
        while remaining:
            if cancel is not None and cancel():
                raise Cancelled(f"cancelled after {finished} of {len(futures)} tasks; run again "
                                f"with the same parameters to resume from {sink.partial}")
            # woken by the first task to end (not a fixed poll), or after CANCEL_POLL_S to look
            # at cancel() and at the slabs marked done
            try:
                ended = wait(remaining, timeout=CANCEL_POLL_S, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                ended = set()
            if not ended:
                if time.monotonic() - polled > 0.5:
                    marked, polled = writer.done(), time.monotonic()
                    report()
                continue
            remaining -= ended
            for future in ended:
                result = future.result()  # a task's error is raised here, as it was raised there
                finished += 1
                busy += result["seconds"]
                where = f"{result['host']}:{result['pid']}"
                per_worker[where] = per_worker.get(where, 0) + len(result["slabs"])
                for key, value in result["stats"].items():
                    stream[key] = stream.get(key, 0) + value
                marked |= set(result["slabs"])
                skipped += result["skipped"]
                used_cpus.add(result.get("cpus"))
            report()
    except BaseException:
        # with the scheduler lost, cancelling fails too: the first error is the one to show
        with contextlib.suppress(Exception):
            client.cancel(futures)
        raise
    sink.sync_done()
    if stats is not None:
        stats.update(stream, tasks=len(futures), workers=per_worker, worker_seconds=busy,
                     slabs_per_task=int(slabs_per_task), slabs_skipped=skipped,
                     worker_cpus=sorted(c for c in used_cpus if c is not None), cpus_choice=cpus)
