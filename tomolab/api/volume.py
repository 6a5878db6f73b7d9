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
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from tomolab.api.reconstruct import plan_reconstruction
from tomolab.errors import ParameterError

__all__ = ["reconstruct_to"]


def _fingerprint(scan, params: dict) -> str:
    """What makes two runs the same: the source, its shape, and every parameter."""
    source = {"source_file": str(scan.attrs.get("source_file") or ""),
              "shape": [int(scan.sizes[d]) for d in ("angle", "row", "col")]}
    text = json.dumps({"source": source, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class _SlabAssembler:
    """Collects the stream's slabs into the output's slabs and writes each one when it is whole.

    The stream's slabs and the output's need not line up; a stream slab that is
    exactly one output slab is written straight from the stream's buffer.
    """

    def __init__(self, sink, indices: list[int], first_row: int, size: int):
        self.sink, self.size = sink, size
        self.slabs = {i: sink.slabs[i] for i in indices}
        self.first_row = first_row  # output row of the stream's row 0
        self.pending: dict[int, tuple[np.ndarray, int]] = {}

    def __call__(self, start: int, stop: int, block: np.ndarray) -> None:
        start, stop = start + self.first_row, stop + self.first_row
        for index, (a, b) in self.slabs.items():
            lo, hi = max(a, start), min(b, stop)
            if lo >= hi:
                continue
            if (lo, hi) == (a, b) and index not in self.pending:
                self.sink.write(index, block[a - start:b - start])
                continue
            buffer, filled = self.pending.get(index) or (np.empty((b - a, self.size, self.size), np.float32), 0)
            buffer[lo - a:hi - a] = block[lo - start:hi - start]
            filled += hi - lo
            if filled == b - a:
                self.pending.pop(index, None)
                self.sink.write(index, buffer)
            else:
                self.pending[index] = (buffer, filled)


def reconstruct_to(scan, path, *, center, rows=None, slab_rows: int = 32, format: str = "auto",
                   overwrite: bool = False, multiscale: int = 0, progress=None, cancel=None,
                   stats: dict | None = None, **options):
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
        Replace an existing output at ``path``.
    multiscale : int
        zarr only: add this many block-averaged levels (each half the size of
        the one before, ``level1``, ``level2``, ...) and OME-Zarr (NGFF 0.4)
        ``multiscales`` metadata, so OME-Zarr viewers open the store with a
        pyramid. The levels are computed from the stored volume in chunks.
    progress, cancel : callable, optional
        ``progress(done_rows, total_rows)`` when the first slab starts and
        after each slab; ``cancel()`` is polled between slabs. A cancelled run leaves its partial output, and the
        next call with the same parameters resumes it.
    stats : dict, optional
        Filled with the seconds per stage of the GPU stream, to tell what
        bounds a run (see :func:`tomolab.engine.stream.stream_slabs`).
    **options
        Passed to :func:`tomolab.reconstruct` (``filter``, ``algorithm``,
        ``backend``, ``stripes``, ``phase``, ...).

    Returns
    -------
    xarray.DataArray
        The volume, opened lazily from ``path``.

    Examples
    --------
    >>> import os, tempfile, tomolab
    >>> scan = tomolab.data.simulate_scan(64, n_rows=6, n_angles=90)
    >>> out = os.path.join(tempfile.mkdtemp(), "vol.zarr")
    >>> vol = reconstruct_to(scan, out, center=scan.attrs["true_center"], slab_rows=4,
    ...                      backend="numpy")
    >>> vol.shape, vol.attrs["slab_rows"]
    ((6, 64, 64), 4)
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
    plan = plan_reconstruction(scan, center=center, rows=rows, **options)
    row_range, size = plan.row_range, plan.size
    per_row = np.ndim(plan.center) == 1
    params = {"center": plan.center.tolist() if per_row else plan.center,
              "rows": [row_range.start, row_range.stop], "slab_rows": int(slab_rows),
              "size": size, **{k: v for k, v in options.items() if k not in ("backend", "size")}}
    attrs = dict(plan.attrs(), slab_rows=int(slab_rows))
    sink = open_sink(path, shape=(len(row_range), size, size), coords=plan.coords(), attrs=attrs,
                     slab_rows=int(slab_rows), fingerprint=_fingerprint(scan, params),
                     format=format, overwrite=overwrite, multiscale=int(multiscale))
    total = len(row_range)
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
                         stats=run_stats)
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
