"""Slab sinks: a volume written slab by slab into zarr, HDF5 or a TIFF folder, resumably.

A sink is what a streamed reconstruction writes into. :func:`open_sink` lays
out the whole volume in a partial output next to the target
(``.NAME.partial``, for every format) and returns a :class:`SlabSink`. Each
:meth:`SlabSink.write` puts one slab of z rows in it and then records the slab
as finished, in the partial output itself; :meth:`SlabSink.finish` moves the
partial output into place once every slab is there. A run that was killed
leaves its partial output: opening the same path with the same
``fingerprint`` finds the finished slabs in :attr:`SlabSink.done`, so only
the others need computing, and the result is the same as an uninterrupted
run. Nothing is ever at the target path before it is complete.

Safety:

* The sink holds the output's lock (``.NAME.lock``, see
  :class:`tomolab.io._guard.OutputLock`) from :func:`open_sink` until it is
  closed: a second run writing the same output refuses at once.
* The partial output is laid out in full (coords, attrs, bookkeeping) under a
  temporary name and renamed to ``.NAME.partial`` only then, so a run killed
  while creating it leaves nothing that a resume trusts.
* ``source``: the input's identity (file sizes, mtimes, a checksum of sample
  frames) is stored with the bookkeeping; a partial output made from another
  input is discarded with a warning, never mixed with the new one.
* Free space is checked before writing (HDF5: the whole file is reserved at
  creation); a full disk or a read-only folder ends in one
  :class:`~tomolab.errors.OutputError` line, and the finished slabs stay
  resumable.
* ``overwrite`` replaces only an output tomolab wrote
  (:func:`tomolab.io._guard.check_overwritable`).

Output dtype: float32 (default), float16, or uint16 with a scale and an
offset (:mod:`tomolab.io._encode`; CF's ``scale_factor`` and ``add_offset``
in the volume's attrs, recorded when the partial output is laid out, so a
resumed run stores with the same ones). Values clipped by a 16-bit dtype are
counted slab by slab (in the slab's ``.slabs_done`` file; HDF5: attribute
``slabs_clipped``) and their total is the output's ``clipped_voxels`` attr.
:func:`tomolab.io.open_volume` gives back float32 in the volume's units.

The outputs are those of :func:`tomolab.io.save_volume`, so
:func:`tomolab.io.open_volume` opens them:

* zarr: an xarray store, variable ``volume`` with its coords; chunks are one
  slab high and split in y/x into tiles of at most 16 MiB; uncompressed (a
  reconstruction's float noise compresses by 10-20 % only, at a quarter of the
  speed or less); optionally an OME-Zarr (NGFF 0.4) pyramid ``level1``, ... .
  Finished slabs: one empty file per slab in ``.slabs_done/`` (created after
  the slab's chunks are written; several processes — the workers of a cluster,
  through :meth:`SlabSink.region_writer` — write slabs of one partial store at
  once without losing each other's records).
* HDF5: dataset ``/volume`` chunked ``(1, y, x)`` with the attrs and ``dims``,
  coords as ``/z``, ``/y``, ``/x``; coords along z that are not dimensions
  (``row``, ``center``) as datasets with a ``dims`` attribute (JSON list).
  Finished slabs: file attribute ``slabs_done`` (one 0/1 flag per slab).
* TIFF: a folder of ``slice_00000.tif``, ... and ``metadata.json``; coords
  that are not dimensions under its ``aux_coords`` key. Finished slabs: a
  ``.slabs_done/`` file per slab, as for zarr; ``.progress.json`` holds the
  fingerprint.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from tomolab.devices import usable_cpus
from tomolab.errors import OutputError, ParameterError
from tomolab.io._encode import ENCODING_KEYS, check_dtype, encode
from tomolab.io._guard import (
    MARKER,
    OutputLock,
    check_free_space,
    check_overwritable,
    file_size_limit,
    foreign_files,
    make_parent,
    remove_stale_temporaries,
    storage_errors,
)
from tomolab.io._write import (
    _h5_volume_layout,
    _jsonable,
    _move_into_place,
    _quiet_consolidated,
    _remove,
    _volume_format,
    _write_tiff_metadata,
    check_replaceable,
)

__all__ = ["open_sink", "SlabSink", "ZarrRegionWriter", "TiffRegionWriter"]

_DONE = "slabs_done"
_CLIPPED = "slabs_clipped"    # HDF5: values clipped per slab (16-bit outputs)
_FINGERPRINT = "fingerprint"
_SOURCE = "source_identity"   # JSON text: the input's identity, compared on resume
_PROGRESS = ".progress.json"  # TIFF: bookkeeping file inside the partial folder
_DONE_DIR = ".slabs_done"     # zarr, TIFF: one empty file per finished slab (concurrent writers)
_CHUNK_BYTES = 16 * 2 ** 20   # zarr: largest chunk before y/x are split into tiles
_MIN_TILE = 256               # zarr: smallest y/x tile of that split
_VOLUME_DIMS = ("z", "y", "x")

class _Corrupt(Exception):
    """A partial output that cannot be read (or is not what this sink writes)."""


class _OtherRun(Exception):
    """A readable partial output of another run (other fingerprint, input or layout)."""


_OTHER_PARAMETERS = "a partial store from a run with other parameters"


def open_sink(path, *, shape, coords, attrs, slab_rows, fingerprint, format="auto", overwrite=False,
              multiscale=0, source=None, dtype="float32", encoding=None):
    """Open a resumable, slab-by-slab writer of a volume ``(z, y, x)`` (float32 slabs in).

    Parameters
    ----------
    path : str or os.PathLike
        Final output. The format follows the name as for
        :func:`tomolab.io.save_volume`: ``*.zarr`` -> zarr; ``*.h5``, ``*.hdf5``,
        ``*.hdf``, ``*.nxs``, ``*.nx`` -> HDF5; no suffix, ``*.tif``, ``*.tiff``
        -> a folder of TIFFs. The work happens in ``.NAME.partial`` next to it.
    shape : tuple of int
        ``(n_z, n_y, n_x)``.
    coords : dict
        ``name -> (dim, values, attrs)`` for ``"z"``, ``"y"``, ``"x"``, and
        coords along z such as ``"row"`` and ``"center"`` (one value per z).
    attrs : dict
        The parameters that made the volume (saved as its attrs).
    slab_rows : int
        Rows per slab: slab ``i`` is z rows ``[i * slab_rows, (i + 1) * slab_rows)``
        (the last one shorter). Also the z size of zarr chunks.
    fingerprint : str
        What makes two runs the same. A partial output with the same
        fingerprint is resumed; one with another is discarded with a warning,
        as is one that cannot be read (e.g. a file killed mid-write).
    source : dict, optional
        The input's identity (JSON-able; see
        :func:`tomolab.api.volume.source_identity`). A partial output made from
        an input of another identity is discarded with a warning saying what
        changed: resuming it would mix two inputs in one volume.
    format : {"auto", "zarr", "tiff", "hdf5"}
    overwrite : bool
        Replace an existing output at ``path`` (only when :meth:`SlabSink.finish`
        moves the new one into place), and only one that tomolab wrote.
    multiscale : int
        zarr only: add this many block-averaged levels and OME-Zarr
        ``multiscales`` metadata when finishing (float32 levels whatever
        ``dtype``).
    dtype : {"float32", "float16", "uint16"}
        How the volume is stored (see :mod:`tomolab.io._encode`).
    encoding : dict or callable, optional
        uint16: the attrs of :func:`tomolab.io._encode.uint16_encoding`, or a
        function returning them, called only when the partial output is made
        afresh (a resumed one keeps those it recorded, so every slab is
        stored alike).

    Returns
    -------
    SlabSink
        With ``done`` (the slabs already in the partial output) and ``slabs``.

    Raises
    ------
    tomolab.errors.ParameterError
        If ``path`` exists and not ``overwrite`` (or is not tomolab's output),
        the format is unknown, ``multiscale`` is asked of HDF5 or TIFF, or the
        shape, coords or ``slab_rows`` do not fit together.
    tomolab.errors.OutputError
        If another run is writing ``path``, the disk has no room for the
        volume, or the folder cannot be written.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> from tomolab.io import open_volume
    >>> out = os.path.join(tempfile.mkdtemp(), "vol.h5")
    >>> coords = {"z": ("z", np.arange(5.0), {}), "y": ("y", np.arange(4.0), {}),
    ...           "x": ("x", np.arange(3.0), {}), "row": ("z", np.arange(5), {})}
    >>> sink = open_sink(out, shape=(5, 4, 3), coords=coords, attrs={"center": 1.5},
    ...                  slab_rows=2, fingerprint="run-1")
    >>> sink.format, sink.slabs
    ('hdf5', [(0, 2), (2, 4), (4, 5)])
    >>> volume = np.arange(60, dtype=np.float32).reshape(5, 4, 3)
    >>> for index in (2, 0):
    ...     start, stop = sink.slabs[index]
    ...     sink.write(index, volume[start:stop])
    >>> sink.close()  # stopped here: the partial output stays
    >>> sink = open_sink(out, shape=(5, 4, 3), coords=coords, attrs={"center": 1.5},
    ...                  slab_rows=2, fingerprint="run-1")
    >>> sorted(sink.done)
    [0, 2]
    >>> sink.write(1, volume[2:4])
    >>> sink.finish()
    >>> back = open_volume(out)
    >>> bool((back.values == volume).all()), float(back.attrs["center"])
    (True, 1.5)
    """
    path = Path(os.fspath(path)).expanduser()
    fmt = _volume_format(path, format)
    shape = _check_shape(shape)
    slab_rows = _check_slab_rows(slab_rows)
    if not isinstance(multiscale, (int, np.integer)) or isinstance(multiscale, bool) \
            or not 0 <= multiscale <= 8:
        raise ParameterError("levels of the pyramid must be an integer from 0 to 8",
                             where="multiscale", value=multiscale, fix="pass e.g. multiscale=3")
    if multiscale and fmt != "zarr":
        raise ParameterError(f"a multiscale pyramid is written to zarr only, not {fmt}",
                             where="multiscale", value=multiscale,
                             fix="name the output NAME.zarr for a pyramid, or pass multiscale=0")
    if not isinstance(fingerprint, str) or not fingerprint:
        raise ParameterError("the fingerprint must be a non-empty string", where="fingerprint",
                             value=fingerprint,
                             fix="pass e.g. a sha256 hex digest of the parameters")
    coords = _check_coords(coords, shape)
    dtype = check_dtype(dtype)
    if dtype == "uint16" and encoding is None:
        raise ParameterError("a uint16 volume needs its scale and offset", where="encoding",
                             value=None, fix="pass encoding=uint16_encoding(lo, hi) (or a function "
                                             "returning it)")
    check_replaceable(path, protect=[(attrs or {}).get("source_file")])
    _refuse_existing(path, overwrite)
    source = None if source is None else json.dumps(_jsonable(source), sort_keys=True)
    make_parent(path)
    lock = OutputLock(path).acquire()
    try:
        _refuse_existing(path, overwrite)  # again, under the lock
        remove_stale_temporaries(path)
        cls = {"zarr": _ZarrSink, "hdf5": _HDF5Sink, "tiff": _TiffSink}[fmt]
        return cls(path, shape=shape, coords=coords, attrs=_jsonable(dict(attrs or {})),
                   slab_rows=slab_rows, fingerprint=fingerprint, overwrite=bool(overwrite),
                   multiscale=int(multiscale), source=source, lock=lock, dtype=dtype,
                   encoding=encoding)
    except BaseException:
        lock.release()
        raise


class SlabSink:
    """A volume being written slab by slab into a partial output; see :func:`open_sink`.

    Attributes
    ----------
    path : pathlib.Path
        The final output.
    partial : pathlib.Path
        ``.NAME.partial`` next to ``path``: the output while it is written.
    format : {"zarr", "hdf5", "tiff"}
    shape : tuple of int
    slabs : list of (int, int)
        ``(start, stop)`` z rows of each slab.
    done : set of int
        Indices of the slabs in the partial output (found there when resuming,
        and each one written since).
    dtype : numpy.dtype
        How the volume is stored.
    encoding : dict
        uint16: ``scale_factor``, ``add_offset`` and the value range they span
        (those recorded in the partial output when resuming); else empty.

    Notes
    -----
    :meth:`write` is meant for one writer thread; slabs may come in any order.
    When it returns, the slab is in the partial output and recorded as done
    (written to the operating system: a killed process loses nothing; a power
    cut may). A write that is interrupted leaves its slab not done. The sink
    holds the output's lock until :meth:`close` (or :meth:`finish`).
    """

    format = ""

    def __init__(self, path, *, shape, coords, attrs, slab_rows, fingerprint, overwrite,
                 multiscale, source=None, lock=None, dtype="float32", encoding=None):
        self.path = path
        self.partial = path.with_name(f".{path.name}.partial")
        self.shape = shape
        self.slab_rows = slab_rows
        self.slabs = [(s, min(s + slab_rows, shape[0])) for s in range(0, shape[0], slab_rows)]
        self.done: set[int] = set()
        self._coords = coords
        self._attrs = attrs
        self._fingerprint = fingerprint
        self._overwrite = overwrite
        self._multiscale = multiscale
        self._source = source
        self._lock = lock
        self._closed = False
        self._finished = False
        self.dtype = np.dtype(dtype)
        self.encoding: dict = {}
        self._clipped: dict[int, int] = {}  # values clipped per slab (16-bit outputs)
        if self.partial.exists() or self.partial.is_symlink():
            try:
                self.done = self._resume()
                self._check_space()
                return
            except _OtherRun as exc:
                message = str(exc) or _OTHER_PARAMETERS
            except OutputError:
                self._release()
                raise
            except Exception as exc:  # noqa: BLE001  (whatever a corrupt file raises)
                message = f"an unreadable partial output ({type(exc).__name__}: {exc})"
            self._release()
            self._discard_partial()
            warnings.warn(f"{self.partial}: {message}; starting afresh", stacklevel=4)
        self._check_space()
        if self.dtype != np.float32:
            self.encoding = dict(encoding() if callable(encoding) else (encoding or {}))
        self._create()

    def _discard_partial(self):
        """Remove the partial output, unless something other than tomolab's files is in it."""
        if self.partial.is_dir() and not self.partial.is_symlink():
            foreign = foreign_files(self.partial)
            if foreign:
                raise ParameterError(f"the partial output holds files tomolab did not write, e.g. "
                                     f"{foreign[0]}", where=str(self.partial),
                                     fix="move those files elsewhere, or remove the folder "
                                         "yourself")
        _remove(self.partial)

    def _check_space(self):
        rows = sum(b - a for i, (a, b) in enumerate(self.slabs) if i not in self.done)
        needed = rows * self.shape[1] * self.shape[2] * self.dtype.itemsize
        if self._multiscale:
            needed += needed // 7  # the pyramid: 1/8 + 1/64 + ... of the volume
        if self.format == "hdf5" and self.partial.exists():
            needed = 0  # its space was reserved when it was created
        check_free_space(self.path, needed)

    def _create(self):
        """Lay out the partial output under a temporary name, then rename it into place."""
        tmp = self.partial.with_name(f"{self.partial.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            with storage_errors(self.path):
                self._build(tmp)
                os.replace(tmp, self.partial)
        except BaseException:
            _remove(tmp)
            raise
        self._open_partial()

    def __repr__(self):
        return (f"<{type(self).__name__} {self.path} {len(self.done)}/{len(self.slabs)} slabs done"
                f"{', closed' if self._closed else ''}>")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- the public part

    def write(self, index, data, clipped: int | None = None) -> None:
        """Write slab ``index`` and record it as done.

        Parameters
        ----------
        index : int
            Which slab (``0 <= index < len(slabs)``).
        data : numpy.ndarray
            ``(stop - start, n_y, n_x)``, float32 (other dtypes are converted),
            stored in the sink's ``dtype``.
        clipped : int, optional
            Given when ``data`` is already stored values (in the sink's
            ``dtype``, encoded with its ``encoding``, e.g. on the GPU by
            :func:`tomolab.io.encode_rows`): the count of values clipped in it.
        """
        self._check_open()
        if not isinstance(index, (int, np.integer)) or not 0 <= index < len(self.slabs):
            raise ParameterError("no such slab", where="index", value=index,
                                 fix=f"pass an index from 0 to {len(self.slabs) - 1}")
        start, stop = self.slabs[int(index)]
        data, clipped = _stored(data, self.dtype, self.encoding, clipped)
        expected = (stop - start,) + tuple(self.shape[1:])
        if data.shape != expected:
            raise ParameterError(f"slab {index} is z rows {start}:{stop}, of shape {expected}",
                                 where="data", value=data.shape, fix="pass that slab's rows only")
        stored = data
        with storage_errors(self.path, partial=self.partial):
            self._write_data(start, stop, stored)
            self._clipped[int(index)] = clipped
            self.done.add(int(index))
            try:
                self._record_done()
            except BaseException:
                self.done.discard(int(index))
                raise

    def finish(self) -> None:
        """Check every slab is done, drop the bookkeeping, and move the output into place.

        Writes the multiscale pyramid first when one was asked for. Closes the sink.

        Raises
        ------
        tomolab.errors.ParameterError
            If a slab is missing (the partial output stays, for resuming), or
            ``path`` appeared meanwhile and ``overwrite`` is False.
        """
        self._check_open()
        missing = sorted(set(range(len(self.slabs))) - self.done)
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (", ..." if len(missing) > 10 else "")
            raise ParameterError(f"{len(missing)} of {len(self.slabs)} slabs are not written yet",
                                 where="slabs", value=f"missing {shown}",
                                 fix="write the missing slabs, then call finish() again")
        _refuse_existing(self.path, self._overwrite)
        try:
            with storage_errors(self.path, partial=self.partial):
                self._final_attrs = {} if self.dtype == np.float32 else \
                    {"clipped_voxels": int(self._clipped_total())}
                self._finalize()
                self._closed = True
                self._release()
                _refuse_existing(self.path, self._overwrite)
                _move_into_place(self.partial, self.path)
            self._finished = True
        finally:
            self.close()

    def region_writer(self):
        """A small picklable writer of this sink's slabs, for other processes (dask workers).

        Each process writes whole slabs straight into the partial output and
        records each one done on its own (one marker file per slab), so many
        writers never touch the same bytes; :meth:`sync_done` then gathers
        what they finished. zarr (a slab is whole chunks) and TIFF (a slab is
        whole files).

        Raises
        ------
        tomolab.errors.ParameterError
            For HDF5 output (one file that many processes cannot write safely).
        """
        writer = self._region_writer_class()
        if writer is None:
            raise ParameterError(f"{self.format.upper()} output cannot be written by many "
                                 f"processes at once", where="path", value=str(self.path),
                                 fix="name the output NAME.zarr (each slab is its own zarr "
                                     "chunks) or a TIFF folder, or run without a cluster")
        self._check_open()
        return writer(self.partial, self.slabs, dtype=self.dtype.name, encoding=self.encoding)

    def sync_done(self) -> set[int]:
        """Add to :attr:`done` the slabs that region writers recorded; return :attr:`done`."""
        self._check_open()
        if self._region_writer_class() is not None:
            self.done |= _checked_markers(self.partial, len(self.slabs))
        return self.done

    def _region_writer_class(self):
        """The picklable writer of this format's slabs for other processes; None: one writer only."""
        return None

    def _clipped_total(self) -> int:
        """Values clipped in all slabs (zarr, TIFF: from the slabs' records, any process's)."""
        return sum(_clipped_counts(self.partial).values())

    def _recorded_encoding(self, attrs) -> dict:
        """The encoding a resumed partial output recorded (checked against this sink's dtype)."""
        if self.dtype == np.float32:
            return {}
        found = {k: _plain(attrs[k]) for k in ENCODING_KEYS if k in attrs}
        if self.dtype == np.uint16 and not {"scale_factor", "add_offset"} <= set(found):
            raise _Corrupt("a uint16 partial output without its scale_factor and add_offset")
        return found

    def close(self) -> None:
        """Release file handles, threads and the lock; the partial output stays. Idempotent."""
        if not self._closed:
            self._closed = True
            self._release()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- what each format provides

    def _resume(self) -> set[int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _build(self, tmp: Path) -> None:  # pragma: no cover - abstract
        """Write the whole layout and the bookkeeping (nothing done) at ``tmp``; close it."""
        raise NotImplementedError

    def _open_partial(self) -> None:
        """Open the handles on the partial output just created."""

    def _write_data(self, start, stop, data) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _record_done(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _finalize(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _release(self) -> None:
        pass

    # -- helpers

    def _check_open(self):
        if self._closed:
            raise ParameterError("the sink is closed" + (" (finished)" if self._finished else ""),
                                 where="sink", value=str(self.path),
                                 fix="open_sink again (with the same fingerprint, to resume)")

    def _checked_done(self, fingerprint, done, source=None) -> set[int]:
        if fingerprint != self._fingerprint:
            raise _OtherRun(_OTHER_PARAMETERS)
        source = source.decode() if isinstance(source, bytes) else source
        if self._source is not None and source != self._source:
            raise _OtherRun(f"a partial output made from another input ({_changes(source, self._source)})")
        done = [int(i) for i in done]
        if any(not 0 <= i < len(self.slabs) for i in done):
            raise _Corrupt(f"slab indices out of range in {done}")
        return set(done)


# ----------------------------------------------------------------------------- zarr

class _ZarrSink(SlabSink):
    format = "zarr"

    def _chunks(self):
        """One slab high; y/x halved (the larger first) until a chunk is at most 16 MiB.

        Uncompressed writes of a (32, 1024, 1024) slab measured 1-2 GB/s for
        tiles of 128 to 1024 (2 cores, page cache); tiles keep partial reads
        of a region and parallel chunk writes possible.
        """
        cz = min(self.slab_rows, self.shape[0])
        cy, cx = self.shape[1:]
        while cz * cy * cx * self.dtype.itemsize > _CHUNK_BYTES and max(cy, cx) > _MIN_TILE:
            if cy >= cx:
                cy = -(-cy // 2)
            else:
                cx = -(-cx // 2)
        return cz, cy, cx

    def _resume(self):
        import zarr

        group = zarr.open_group(str(self.partial), mode="r+")
        meta = dict(group.attrs)
        if _FINGERPRINT not in meta or _DONE not in meta:
            raise _Corrupt("no resume bookkeeping in the store's attrs")
        done = self._checked_done(meta[_FINGERPRINT], list(meta[_DONE]) + _slab_files(self.partial),
                                  meta.get(_SOURCE))
        array = group["volume"]
        if tuple(array.shape) != self.shape or tuple(array.chunks) != self._chunks() \
                or array.dtype != self.dtype:
            raise _OtherRun(_OTHER_PARAMETERS)
        self.encoding = self._recorded_encoding(dict(array.attrs))
        self._open_handles(group)
        _remove_zarr_temporaries(self.partial)
        return done

    def _build(self, tmp):
        import dask.array as da
        import xarray as xr

        chunks = self._chunks()
        data = da.zeros(self.shape, dtype=self.dtype, chunks=chunks)
        volume = xr.DataArray(data, dims=_VOLUME_DIMS, coords=self._coords,
                              attrs=dict(self._attrs, **self.encoding), name="volume")
        ds = volume.to_dataset()
        ds.attrs = dict(self._attrs, **{MARKER: "volume", _FINGERPRINT: self._fingerprint,
                                        _DONE: []})
        if self._source is not None:
            ds.attrs[_SOURCE] = self._source
        with _quiet_consolidated():
            ds.to_zarr(str(tmp), mode="w", compute=False, consolidated=False,
                       encoding={"volume": {"chunks": chunks, "compressors": None}})
        (tmp / _DONE_DIR).mkdir()

    def _open_partial(self):
        import zarr
        self._open_handles(zarr.open_group(str(self.partial), mode="r+"))

    def _open_handles(self, group):
        self._group = group
        # every chunk of a slab is written whole: skip zarr's check for all-fill chunks
        self._array = group["volume"].with_config({"write_empty_chunks": True})

    def _write_data(self, start, stop, data):
        self._array[start:stop] = data

    def _region_writer_class(self):
        return ZarrRegionWriter

    def _record_done(self):
        _record_slab_files(self.partial, self.done, self._counts())

    def _counts(self):
        return None if self.dtype == np.float32 else self._clipped

    def _finalize(self):
        import zarr

        _remove_zarr_temporaries(self.partial)  # of writers killed mid-chunk (other processes)
        with _quiet_consolidated():
            if self._multiscale:  # the bookkeeping stays meanwhile: a kill here resumes
                _write_pyramid(self.partial, self._multiscale, self._chunks())
            shutil.rmtree(self.partial / _DONE_DIR, ignore_errors=True)  # every slab is done
            group = zarr.open_group(str(self.partial), mode="r+", use_consolidated=False)
            attrs = dict(group.attrs)
            for key in (_FINGERPRINT, _DONE, _SOURCE):
                attrs.pop(key, None)
            attrs.update(self._final_attrs)
            group.attrs.put(attrs)  # one metadata write (clear + update wrote once per key)
            if self._final_attrs:
                group["volume"].attrs.update(self._final_attrs)
            # readers that trust consolidated metadata see the final attrs
            zarr.consolidate_metadata(str(self.partial))

    def _release(self):
        self._group = self._array = None


class _RegionWriter:
    """What both region writers share: the partial output's path, the slabs, the markers."""

    def __init__(self, store, slabs, *, dtype="float32", encoding=None):
        self.store = Path(os.path.abspath(store))
        self.slabs = [(int(a), int(b)) for a, b in slabs]
        self.dtype = check_dtype(dtype)
        self.encoding = dict(encoding or {})
        self._array = None

    def __getstate__(self):
        return {"store": self.store, "slabs": self.slabs, "dtype": self.dtype,
                "encoding": self.encoding, "_array": None}

    def _encode(self, index, data, clipped=None):
        """``(stored, mark)``: the slab in the store's dtype, and what records it done once written."""
        start, stop = self.slabs[int(index)]
        stored, clipped = _stored(data, np.dtype(self.dtype), self.encoding, clipped)
        if stored.ndim != 3 or stored.shape[0] != stop - start:
            raise ParameterError(f"slab {index} is z rows {start}:{stop}", where="data",
                                 value=stored.shape, fix="pass that slab's rows only")
        count = None if self.dtype == "float32" else clipped
        return stored, lambda: _mark_done(self.store, index, count)

    def __repr__(self):
        return f"<{type(self).__name__} {self.store} {len(self.slabs)} slabs>"

    def done(self) -> set[int]:
        """Slabs marked done in the partial output, by any process."""
        return _read_markers(self.store)


class ZarrRegionWriter(_RegionWriter):
    """Writes whole slabs into a partial zarr store from any process, and marks each one done.

    Made by :meth:`SlabSink.region_writer`; pickles to the store's path and
    the slab bounds. Slabs are whole chunks along z and span y and x, so two
    writers of different slabs never write the same chunk file; zarr replaces
    each chunk file atomically, and the slab's marker file is made only after
    all its chunks are there.

    Attributes
    ----------
    store : pathlib.Path
        The partial store (absolute).
    slabs : list of (int, int)
        ``(start, stop)`` z rows of each slab.
    """

    def write(self, index, data, clipped: int | None = None) -> None:
        """Write slab ``index`` (``(stop - start, n_y, n_x)``, float32) and mark it done.

        ``clipped``: as for :meth:`SlabSink.write` (``data`` already stored values).
        """
        import zarr

        start, stop = self.slabs[int(index)]
        if self._array is None:
            group = zarr.open_group(str(self.store), mode="r+", use_consolidated=False)
            self._array = group["volume"].with_config({"write_empty_chunks": True})
        data, mark = self._encode(index, data, clipped)
        expected = (stop - start,) + tuple(self._array.shape[1:])
        if data.shape != expected:
            raise ParameterError(f"slab {index} is z rows {start}:{stop}, of shape {expected}",
                                 where="data", value=data.shape, fix="pass that slab's rows only")
        self._array[start:stop] = data
        mark()


class TiffRegionWriter(_RegionWriter):
    """Writes whole slabs into a partial TIFF folder from any process, and marks each one done.

    Each slice is its own file, written under a temporary name and renamed
    into place, so writers of different slabs never touch the same file.
    """

    def write(self, index, data, clipped: int | None = None) -> None:
        """Write slab ``index`` (``(stop - start, n_y, n_x)``, float32) and mark it done.

        ``clipped``: as for :meth:`SlabSink.write` (``data`` already stored values).
        """
        import tifffile

        start, stop = self.slabs[int(index)]
        data, mark = self._encode(index, data, clipped)
        for z, plane in zip(range(start, stop), data):
            _replace_atomically(self.store / f"slice_{z:05d}.tif",
                                lambda tmp, plane=plane: tifffile.imwrite(tmp, plane))
        mark()


def _stored(data, dtype: np.dtype, encoding: dict, clipped: int | None):
    """``(stored, clipped)``: a float32 slab encoded here, or one encoded already (``clipped`` given)."""
    from tomolab.arrays import to_numpy

    if clipped is None:
        data = np.ascontiguousarray(to_numpy(data), dtype=np.float32)
        return encode(data, dtype.name, encoding)
    data = np.ascontiguousarray(to_numpy(data))
    if data.dtype != dtype:
        raise ParameterError(f"an encoded slab must be {dtype.name}, as the output stores it",
                             where="data", value=data.dtype.name,
                             fix="pass float32 slices without clipped=, or encode them with "
                                 "tomolab.io.encode_rows(slices, dtype, sink.encoding)")
    return data, int(clipped)


def _mark_done(store: Path, index, clipped: int | None = None) -> None:
    """Record slab ``index`` as finished; with ``clipped`` (16-bit outputs), the count in it."""
    folder = Path(store) / _DONE_DIR
    folder.mkdir(exist_ok=True)
    record = folder / f"{int(index):06d}"
    if clipped is None:
        record.touch()
    else:  # the count appears with the record, never an empty record of a clipping slab
        _replace_atomically(record, lambda tmp: tmp.write_text(str(int(clipped))))


def _clipped_counts(store: Path) -> dict[int, int]:
    """Values clipped per finished slab, from the slabs' records (0 where none is written)."""
    folder = Path(store) / _DONE_DIR
    counts = {}
    if folder.is_dir():
        for record in folder.iterdir():
            if record.name.isdigit():
                text = record.read_text().strip()
                counts[int(record.name)] = int(text) if text.isdigit() else 0
    return counts


def _plain(value):
    """An attribute as JSON-able Python (HDF5 gives numpy scalars and arrays, bytes)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _checked_markers(store: Path, n_slabs: int) -> set[int]:
    markers = _read_markers(store)
    if any(not 0 <= i < n_slabs for i in markers):
        raise ParameterError("slab markers out of range in the partial output",
                             where=str(Path(store) / _DONE_DIR), value=sorted(markers),
                             fix="delete the partial output and run again")
    return markers


def _read_markers(store: Path) -> set[int]:
    folder = Path(store) / _DONE_DIR
    return set(_slab_files(Path(store))) if folder.is_dir() else set()


def _remove_zarr_temporaries(store: Path) -> None:
    """Delete what a killed process left of zarr's atomic writes (``NAME.<32 hex>.partial``)."""
    import re

    pattern = re.compile(r"\.[0-9a-f]{32}\.partial$")
    for folder, _, files in os.walk(store):
        for name in files:
            if pattern.search(name):
                os.unlink(os.path.join(folder, name))


def _write_pyramid(store: Path, levels: int, chunks) -> None:
    """Block-mean levels of the stored volume, and their OME-Zarr multiscales metadata."""
    with warnings.catch_warnings():  # our .slabs_done folder, if still there, is no zarr node
        warnings.filterwarnings("ignore", message=".*not recognized as a component")
        _write_levels(store, levels, chunks)


def _write_levels(store: Path, levels: int, chunks) -> None:
    import xarray as xr
    import zarr

    group = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    for name in list(group.array_keys()):  # left by a run killed while writing the pyramid
        if name.startswith("level"):
            del group[name]
    group_attrs = dict(group.attrs)  # to_zarr(mode="a") replaces the group's attrs with its own
    base = xr.open_zarr(str(store), consolidated=False)["volume"]
    unit = float(base.attrs.get("pixel_size") or 0.0)
    datasets = [("volume", 1)]
    level = base
    for k in range(1, levels + 1):
        if min(level.shape) < 2:
            break
        level = level.coarsen(z=2, y=2, x=2, boundary="trim").mean().astype(np.float32)
        name = f"level{k}"
        level_chunks = (max(1, chunks[0] // 2 ** k), min(chunks[1], level.shape[1]),
                        min(chunks[2], level.shape[2]))
        level = level.chunk(dict(zip(_VOLUME_DIMS, level_chunks)))
        level.attrs = {"downsampled": 2 ** k}
        ds = level.to_dataset(name=name).drop_vars(list(level.coords))
        ds = ds.rename_dims({"z": f"z{k}", "y": f"y{k}", "x": f"x{k}"})
        ds.attrs = group_attrs
        ds.to_zarr(str(store), mode="a", consolidated=False,
                   encoding={name: {"chunks": level_chunks, "compressors": None}})
        datasets.append((name, 2 ** k))
    space = {"type": "space", "unit": "meter"} if unit else {"type": "space"}
    group = zarr.open_group(str(store), mode="r+", use_consolidated=False)
    group.attrs["multiscales"] = [{
        "version": "0.4", "name": "volume",
        "axes": [{"name": axis, **space} for axis in _VOLUME_DIMS],
        "datasets": [{"path": path, "coordinateTransformations": [
            {"type": "scale", "scale": [(unit or 1.0) * factor] * 3}]}
            for path, factor in datasets],
        "type": "mean",
    }]


# ----------------------------------------------------------------------------- HDF5

class _HDF5Sink(SlabSink):
    """HDF5 with every chunk allocated when the file is made.

    A slab's write then changes raw data only, never the chunk index, so a
    process killed mid-write leaves the finished slabs readable; the flags of
    finished slabs are one fixed-size attribute, rewritten in place.
    """

    format = "hdf5"
    _file = None

    def _resume(self):
        import h5py

        if not self.partial.is_file():
            raise _Corrupt("not a file")
        self._file = h5py.File(self.partial, "r+")
        f = self._file
        if _FINGERPRINT not in f.attrs or _DONE not in f.attrs:
            raise _Corrupt("no resume bookkeeping in the file's attributes")
        fingerprint = f.attrs[_FINGERPRINT]
        fingerprint = fingerprint.decode() if isinstance(fingerprint, bytes) else str(fingerprint)
        flags = np.asarray(f.attrs[_DONE])
        dset = f["volume"]
        done = self._checked_done(fingerprint, [], f.attrs.get(_SOURCE))
        if flags.shape != (len(self.slabs),) or tuple(dset.shape) != self.shape \
                or dset.dtype != self.dtype:
            raise _OtherRun(_OTHER_PARAMETERS)
        self.encoding = self._recorded_encoding(dict(dset.attrs))
        self._flags = flags.astype(np.uint8)
        self._dset = dset
        done |= self._checked_done(fingerprint, np.flatnonzero(self._flags).tolist(),
                                   f.attrs.get(_SOURCE))
        if self.dtype != np.float32:
            counts = np.asarray(f.attrs[_CLIPPED]) if _CLIPPED in f.attrs else None
            if counts is None or counts.shape != (len(self.slabs),):
                raise _Corrupt(f"no {_CLIPPED} of a 16-bit output")
            self._clipped = {i: int(counts[i]) for i in done}
        return done

    def _build(self, tmp):
        import h5py

        # the whole dataset is allocated at creation: past the process's file size limit
        # (ulimit -f) HDF5 would meet a failed write, so refuse before it starts
        limit = file_size_limit()
        if limit is not None and int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize > limit:
            raise OSError(errno.EFBIG, os.strerror(errno.EFBIG), os.fspath(tmp))
        with h5py.File(tmp, "w") as f:
            dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
            dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
            _h5_volume_layout(f, self.shape, self.dtype, _VOLUME_DIMS, self._coords,
                              dict(self._attrs, **self.encoding), dcpl=dcpl, fill_time="never")
            f.attrs[_FINGERPRINT] = self._fingerprint
            if self.dtype != np.float32:
                f.attrs.create(_CLIPPED, np.zeros(len(self.slabs), np.int64))
            if self._source is not None:
                f.attrs[_SOURCE] = self._source
            f.attrs.create(_DONE, np.zeros(len(self.slabs), np.uint8))
        # the chunks are allocated in the file but not on the disk (a sparse file): reserve the
        # blocks now, so that a full disk stops this run here and never in the middle of a slab
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                raise
        finally:
            os.close(fd)

    def _open_partial(self):
        import h5py

        self._file = h5py.File(self.partial, "r+")
        self._dset = self._file["volume"]
        self._flags = np.zeros(len(self.slabs), np.uint8)

    def _write_data(self, start, stop, data):
        self._dset[start:stop] = data
        self._file.flush()  # the data before the flag that says they are there

    def _record_done(self):
        if self.dtype != np.float32:  # the counts before the flags that make them count
            counts = np.zeros(len(self.slabs), np.int64)
            for index, count in self._clipped.items():
                counts[index] = count
            self._file.attrs.modify(_CLIPPED, counts)
        self._flags[sorted(self.done)] = 1
        self._file.attrs.modify(_DONE, self._flags)
        self._file.flush()

    def _clipped_total(self) -> int:
        return sum(self._clipped.get(i, 0) for i in self.done)

    def _finalize(self):
        for key in (_FINGERPRINT, _DONE, _SOURCE, _CLIPPED):
            if key in self._file.attrs:
                del self._file.attrs[key]
        for key, value in self._final_attrs.items():
            self._dset.attrs[key] = value

    def _release(self):
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = self._dset = None


# ----------------------------------------------------------------------------- TIFF

class _TiffSink(SlabSink):
    """A folder of one TIFF per z; each file appears whole (temporary name, then rename)."""

    format = "tiff"
    _pool = None

    def _resume(self):
        progress = json.loads((self.partial / _PROGRESS).read_text())
        if not isinstance(progress, dict) or _DONE not in progress:
            raise _Corrupt(f"no list of finished slabs in {_PROGRESS}")
        meta = json.loads((self.partial / "metadata.json").read_text())
        self._checked_done(progress.get(_FINGERPRINT), [], progress.get(_SOURCE))
        if list(meta["shape"]) != list(self.shape) or progress.get("slab_rows") != self.slab_rows \
                or meta.get("dtype") != self.dtype.name:
            raise _OtherRun(_OTHER_PARAMETERS)
        self.encoding = self._recorded_encoding(meta.get("attrs") or {})
        done = self._checked_done(progress[_FINGERPRINT],
                                  list(progress[_DONE]) + _slab_files(self.partial),
                                  progress.get(_SOURCE))
        for stray in self.partial.glob(".*.tmp"):  # files of a write that was killed
            stray.unlink()
        # a slab counts only if all its files are there (e.g. someone deleted one)
        return {i for i in done if all(self._slice(z).is_file() for z in range(*self.slabs[i]))}

    def _build(self, tmp):
        tmp.mkdir()
        _write_tiff_metadata(tmp, self.shape, self.dtype, _VOLUME_DIMS, self._coords,
                             dict(self._attrs, **self.encoding))
        progress = {_FINGERPRINT: self._fingerprint, "slab_rows": self.slab_rows, _DONE: []}
        if self._source is not None:
            progress[_SOURCE] = self._source
        _write_atomically(tmp / _PROGRESS, json.dumps(progress))
        (tmp / _DONE_DIR).mkdir()

    def _slice(self, z):
        return self.partial / f"slice_{z:05d}.tif"

    def _write_data(self, start, stop, data):
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=min(8, usable_cpus()),
                                            thread_name_prefix="tomolab-tiff")
        futures = [self._pool.submit(self._write_slice, z, plane)
                   for z, plane in zip(range(start, stop), data)]
        errors = [f.exception() for f in futures]  # wait for all before raising
        for error in errors:
            if error is not None:
                raise error

    def _write_slice(self, z, plane):
        import tifffile

        _replace_atomically(self._slice(z), lambda tmp: tifffile.imwrite(tmp, plane))

    def _region_writer_class(self):
        return TiffRegionWriter

    def _record_done(self):
        _record_slab_files(self.partial, self.done,
                           None if self.dtype == np.float32 else self._clipped)

    def _finalize(self):
        if self._final_attrs:
            meta = json.loads((self.partial / "metadata.json").read_text())
            meta["attrs"] = dict(meta.get("attrs") or {}, **self._final_attrs)
            _write_atomically(self.partial / "metadata.json", json.dumps(meta, indent=1))
        (self.partial / _PROGRESS).unlink()
        shutil.rmtree(self.partial / _DONE_DIR, ignore_errors=True)
        for stray in self.partial.glob(".*.tmp"):
            stray.unlink()

    def _release(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None


# ----------------------------------------------------------------------------- helpers

def _check_shape(shape):
    try:
        shape = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        shape = None
    if shape is None or len(shape) != 3 or min(shape) < 1:
        raise ParameterError("the volume shape must be three positive integers (n_z, n_y, n_x)",
                             where="shape", value=shape, fix="pass e.g. shape=(n_rows, size, size)")
    return shape


def _check_slab_rows(slab_rows):
    if not isinstance(slab_rows, (int, np.integer)) or isinstance(slab_rows, bool) or slab_rows < 1:
        raise ParameterError("slab height must be a positive integer", where="slab_rows",
                             value=slab_rows, fix="pass e.g. slab_rows=64")
    return int(slab_rows)


def _check_coords(coords, shape):
    sizes = dict(zip(_VOLUME_DIMS, shape))
    out = {}
    for name, entry in dict(coords or {}).items():
        try:
            dim, values, attrs = entry
        except (TypeError, ValueError):
            raise ParameterError("each coord is a tuple (dim, values, attrs)",
                                 where=f"coords[{name!r}]", value=type(entry).__name__,
                                 fix="pass e.g. ('z', values, {})") from None
        values = np.asarray(values)
        if dim not in sizes or values.shape != (sizes[dim],):
            raise ParameterError(f"coord {name!r} must be 1-D along z, y or x, with one value per "
                                 f"position", where=f"coords[{name!r}]",
                                 value=f"dim {dim!r}, shape {values.shape}",
                                 fix=f"give it the length of its dim (shape is {shape})")
        if name in _VOLUME_DIMS and dim != name:
            raise ParameterError(f"coord {name!r} must lie along dim {name!r}",
                                 where=f"coords[{name!r}]",
                                 value=dim, fix=f"pass ({name!r}, values, attrs)")
        out[str(name)] = (dim, values, dict(attrs or {}))
    return out


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise ParameterError("the output already exists", where="path", value=str(path),
                             fix="choose another path or pass overwrite=True")
    check_overwritable(path, kind="volume")


def _changes(stored, current) -> str:
    """What differs between two identities (JSON text), in a few words."""
    try:
        old, new = json.loads(stored), json.loads(current)
    except (TypeError, ValueError):
        return "no identity recorded" if stored is None else "identity unreadable"
    keys = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    shown = "; ".join(f"{k}: {old.get(k)!r:.60} -> {new.get(k)!r:.60}" for k in keys[:3])
    return shown or "identity differs"


def _slab_files(partial: Path) -> list[int]:
    """The slabs recorded as finished by a file each in ``partial/.slabs_done``."""
    folder = partial / _DONE_DIR
    if not folder.is_dir():
        raise _Corrupt(f"no {_DONE_DIR} folder")
    return [int(p.name) for p in folder.iterdir() if p.name.isdigit()]


def _record_slab_files(partial: Path, done, clipped=None) -> None:
    """Record finished slabs, one file each (its creation is atomic; writers never clash).

    ``clipped`` (16-bit outputs): slab index -> values clipped, written in the record.
    """
    for index in done:
        if not (partial / _DONE_DIR / f"{int(index):06d}").exists():
            _mark_done(partial, index, None if clipped is None else clipped.get(int(index), 0))


def _replace_atomically(path: Path, write) -> None:
    """``write(tmp)`` a hidden temporary beside ``path``, then rename it into place (or remove it)."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_atomically(path: Path, text: str) -> None:
    _replace_atomically(path, lambda tmp: tmp.write_text(text))
