"""Lazy, picklable array views of frames stored on disk.

Each array holds only the file name, where the frames are, their shape and
dtype. Every ``__getitem__`` opens the file, reads the requested frames and
closes it again, so the objects pickle to a few hundred bytes and work on
dask workers in other processes. A frame is one 2-D image ``(row, col)``;
axis 0 of the array is the frame axis.

The module-level :func:`read_count` counts pixel reads in this process; the
tests use it to prove that opening a scan reads no pixel data.
"""

from __future__ import annotations

import itertools
import os
import threading

import numpy as np

from tomolab.errors import ParameterError, ScanFormatError

__all__ = ["HDF5Frames", "TiffFrames", "frame_runs", "read_count"]

_reads = [0]
_reads_lock = threading.Lock()


def _count_read() -> None:
    with _reads_lock:
        _reads[0] += 1


def read_count() -> int:
    """Number of pixel reads made by lazy frame arrays in this process so far."""
    return _reads[0]


#: the environment variable choosing how uncompressed HDF5 rows are read (see frame_reader)
ENV_READER = "TOMOLAB_FRAME_READER"
FRAME_READERS = ("python", "nogil")


def frame_reader() -> str:
    """How rows of uncompressed HDF5 frames are read: ``TOMOLAB_FRAME_READER``.

    ``"python"`` (default): one ``os.preadv`` per frame from Python.
    ``"nogil"``: the same reads from a loop compiled by Numba that holds no
    GIL (:mod:`tomolab.io._pread`), for processes with other busy Python
    threads (a dask worker); its first use in a process loads Numba.

    Examples
    --------
    >>> frame_reader() in FRAME_READERS
    True
    """
    value = os.environ.get(ENV_READER, "").strip().lower() or "python"
    if value not in FRAME_READERS:
        raise ParameterError("unknown frame reader", where=ENV_READER, value=value,
                             fix=f"set it to one of {', '.join(FRAME_READERS)} (or unset it)")
    return value


def frame_runs(indices) -> list[tuple[int, int]]:
    """Split ascending frame indices into maximal runs ``[start, stop)``.

    Examples
    --------
    >>> frame_runs([0, 1, 2, 5, 6, 9])
    [(0, 3), (5, 7), (9, 10)]
    """
    idx = np.asarray(indices, dtype=np.int64).ravel()
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.concatenate([[0], breaks])
    stops = np.concatenate([breaks, [idx.size]])
    return [(int(idx[a]), int(idx[b - 1]) + 1) for a, b in zip(starts, stops)]


def _normalize_key(key, shape):
    """Turn a basic index into (frame indices, row slice, col slice, axes to drop)."""
    if not isinstance(key, tuple):
        key = (key,)
    if any(k is Ellipsis for k in key):
        at = next(i for i, k in enumerate(key) if k is Ellipsis)
        fill = (slice(None),) * (len(shape) - len(key) + 1)
        key = key[:at] + fill + key[at + 1:]
    if len(key) > len(shape):
        raise IndexError(f"too many indices for a {len(shape)}-D frame array")
    key = key + (slice(None),) * (len(shape) - len(key))
    out, drop = [], []
    for axis, (k, n) in enumerate(zip(key, shape)):
        if isinstance(k, (int, np.integer)):
            i = int(k) + n if k < 0 else int(k)
            if not 0 <= i < n:
                raise IndexError(f"index {k} is out of bounds for axis {axis} with size {n}")
            out.append(slice(i, i + 1, 1))
            drop.append(axis)
        elif isinstance(k, slice):
            start, stop, step = k.indices(n)
            if step < 0 and axis > 0:
                raise IndexError("negative steps along row/col are not supported")
            out.append(slice(start, max(stop, start) if step > 0 else stop, step))
        else:
            raise TypeError(f"lazy frame arrays take ints and slices, not {type(k).__name__}")
    frames = np.arange(shape[0])[out[0]]
    return frames, out[1], out[2], tuple(drop)


def _sliced_len(s: slice) -> int:
    return len(range(s.start, s.stop, s.step))


class _Frames:
    """Shared logic: logical frame ``i`` is stored frame ``self._frame(i)``."""

    shape: tuple[int, int, int]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return 3

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        frames, rows, cols, drop = _normalize_key(key, self.shape)
        out = np.empty((frames.size, _sliced_len(rows), _sliced_len(cols)), self.dtype)
        if out.size:
            _count_read()
            self._read(frames, rows, cols, out)
        return out.squeeze(axis=drop) if drop else out

    def __array__(self, dtype=None, copy=None):
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)

    def read_into(self, frames: slice, rows: slice, out: np.ndarray) -> None:
        """Fill ``out`` (frame, row, col) with ``rows`` of ``frames``, every column, from the files.

        Only those rows are read, where the format allows it (HDF5 without
        compression reads just the bytes of the rows of each frame).
        """
        frames = np.arange(self.shape[0])[frames]
        rows = slice(*rows.indices(self.shape[1]))
        cols = slice(0, self.shape[2], 1)
        if rows.step != 1:
            raise IndexError("rows must be a contiguous slice")
        _count_read()
        if out.flags.c_contiguous:
            self._read(frames, rows, cols, out)
        else:
            block = np.empty(out.shape, self.dtype)
            self._read(frames, rows, cols, block)
            out[...] = block


class HDF5Frames(_Frames):
    """Frames of a 3-D HDF5 dataset, optionally a subset of its first axis.

    Parameters
    ----------
    filename : str
        The HDF5 file.
    path : str
        The dataset inside it, shape ``(n, row, col)``.
    runs : sequence of (start, stop), optional
        The stored frames that make up this array, in order (for example the
        projections of an NXtomo ``image_key``). Default: all frames.
    shape, dtype :
        Of the whole stored dataset, as read from its metadata.

    Examples
    --------
    >>> import h5py, numpy as np, tempfile, os
    >>> fn = os.path.join(tempfile.mkdtemp(), "a.h5")
    >>> with h5py.File(fn, "w") as f:
    ...     _ = f.create_dataset("d", data=np.arange(24).reshape(6, 2, 2))
    >>> frames = HDF5Frames(fn, "d", shape=(6, 2, 2), dtype="int64", runs=[(1, 3), (4, 5)])
    >>> frames.shape
    (3, 2, 2)
    >>> frames[:, 0, 0]
    array([ 4,  8, 16])
    """

    def __init__(self, filename, path, *, shape, dtype, runs=None):
        self.filename = str(filename)
        self.path = str(path)
        n = int(shape[0])
        runs = [(0, n)] if runs is None else [(int(a), int(b)) for a, b in runs]
        self.runs = tuple(runs)
        lengths = np.array([b - a for a, b in runs], dtype=np.int64)
        self._offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.shape = (int(self._offsets[-1]), int(shape[1]), int(shape[2]))
        self.dtype = np.dtype(dtype)
        self._offsets_lock = threading.Lock()

    def stored_frames(self, logical=None) -> np.ndarray:
        """Indices in the stored dataset of logical frames (default: all)."""
        logical = np.arange(self.shape[0]) if logical is None else np.asarray(logical)
        k = np.searchsorted(self._offsets, logical, side="right") - 1
        starts = np.array([a for a, _ in self.runs], dtype=np.int64)
        return starts[k] + (logical - self._offsets[k])

    def _frame_offsets(self):
        """Byte offset in the file of each stored frame, or None where h5py must read.

        Known without h5py when the frames are stored uncompressed, in native
        byte order, contiguously or in chunks of whole frames; then rows are
        read with ``os.preadv``, which (unlike h5py, which lets one thread in
        at a time) reads from several threads at once.
        """
        if "_offsets_in_file" in self.__dict__:
            return self.__dict__["_offsets_in_file"]
        # the reader threads of a slab all ask at once: one of them looks, the others wait for it
        # (each looking took as long as the slab's read, and h5py lets one thread in at a time)
        with self._offsets_lock:
            if "_offsets_in_file" not in self.__dict__:
                self.__dict__["_offsets_in_file"] = self._look_up_offsets()
        return self.__dict__["_offsets_in_file"]

    def _look_up_offsets(self):
        import h5py

        offsets = None
        with h5py.File(self.filename, "r", locking=False) as f:
            dset = f[self.path]
            frame_bytes = int(np.prod(dset.shape[1:])) * dset.dtype.itemsize
            plain = (dset.compression is None and not dset.id.get_create_plist().get_nfilters()
                     and dset.dtype.isnative and dset.dtype == self.dtype)
            if plain and dset.chunks is None and dset.id.get_offset() is not None:
                base = dset.id.get_offset()
                offsets = base + np.arange(dset.shape[0], dtype=np.int64) * frame_bytes
            elif plain and dset.chunks is not None and tuple(dset.chunks[1:]) == dset.shape[1:]:
                per_chunk = dset.chunks[0]
                stored = _stored_chunks(dset)
                offsets = np.empty(dset.shape[0], np.int64)
                for first in range(0, dset.shape[0], per_chunk):
                    byte_offset, size = stored(first)
                    if byte_offset is None or size != per_chunk * frame_bytes:
                        offsets = None  # a chunk never written (fill value) or of another size
                        break
                    last = min(first + per_chunk, dset.shape[0])
                    offsets[first:last] = byte_offset + np.arange(last - first) * frame_bytes
        return offsets

    def __getstate__(self):
        state = dict(self.__dict__)
        state.pop("_offsets_lock", None)
        if "_offsets_in_file" in state:  # known: they travel, with the file's size and time
            offsets = state.pop("_offsets_in_file")
            try:
                stat = os.stat(self.filename)
            except OSError:
                return state
            state["_offsets_note"] = (stat.st_size, stat.st_mtime_ns, _compact(offsets))
        return state

    def __setstate__(self, state):
        note = state.pop("_offsets_note", None)
        self.__dict__.update(state)
        self._offsets_lock = threading.Lock()
        if note is None:
            return
        # a dask worker reads the same file: no need to look the offsets up again (0.1 s for
        # 1800 chunks); a file that changed or is not there is looked at when it is read
        try:
            stat = os.stat(self.filename)
        except OSError:
            return
        if (stat.st_size, stat.st_mtime_ns) == note[:2]:
            self.__dict__["_offsets_in_file"] = _expand(note[2])

    def _read(self, frames, rows, cols, out):
        import h5py

        stored = self.stored_frames(frames)
        offsets = self._frame_offsets() if cols == slice(0, self.shape[2], 1) else None
        if offsets is not None and rows.step == 1 and out.flags.c_contiguous:
            row_bytes = self.shape[2] * self.dtype.itemsize
            fd = os.open(self.filename, os.O_RDONLY)
            try:
                first = 0
                if frame_reader() == "nogil":
                    from tomolab.io._pread import pread_frames

                    first = pread_frames(fd, np.ascontiguousarray(offsets[stored], np.int64),
                                         rows.start * row_bytes, out[0].nbytes, out.ctypes.data,
                                         out.strides[0])
                    first = len(stored) if first < 0 else first  # else: read it again, for why
                for k in range(first, len(stored)):
                    frame = stored[k]
                    target = memoryview(out[k]).cast("B")
                    start = int(offsets[frame]) + rows.start * row_bytes
                    if os.preadv(fd, [target], start) != target.nbytes:
                        raise OSError(f"{self.filename}: file ends inside frame {frame}")
            finally:
                os.close(fd)
            return
        # no chunk cache: with one (8 MiB by default in HDF5 2) a frame-sized chunk is read
        # whole for each part of it that is asked for; without, only the bytes of the rows
        with h5py.File(self.filename, "r", locking=False, rdcc_nbytes=0) as f:
            dset = f[self.path]
            at = 0
            for a, b in frame_runs(stored):
                n = b - a
                dset.read_direct(out, source_sel=np.s_[a:b, rows, cols],
                                 dest_sel=np.s_[at:at + n])
                at += n

    def __repr__(self):
        return (f"HDF5Frames({self.filename!r}, {self.path!r}, shape={self.shape}, "
                f"dtype={self.dtype}, runs={len(self.runs)})")


def _stored_chunks(dset):
    """``where(first_frame) -> (byte offset, size)`` of a dataset's chunks (None: not written).

    One pass over the chunk index where HDF5 has it (``chunk_iter``, HDF5 1.14:
    0.01 s for 1800 chunks), else one look-up per chunk (0.1 s).
    """
    found = {}
    try:
        dset.id.chunk_iter(lambda info: found.__setitem__(info.chunk_offset[0],
                                                          (info.byte_offset, info.size)))
    except (AttributeError, NotImplementedError, RuntimeError):
        def by_coord(first):
            info = dset.id.get_chunk_info_by_coord((first, 0, 0))
            return info.byte_offset, info.size
        return by_coord
    return lambda first: found.get(first, (None, None))


def _compact(offsets):
    """Frame offsets as ``(first, step, n)`` where evenly spaced (they mostly are), else as they are."""
    if offsets is None or len(offsets) < 2:
        return offsets
    steps = np.diff(offsets)
    if (steps == steps[0]).all():
        return (int(offsets[0]), int(steps[0]), len(offsets))
    return offsets


def _expand(compact):
    if isinstance(compact, tuple):
        first, step, n = compact
        return first + step * np.arange(n, dtype=np.int64)
    return compact


class TiffFrames(_Frames):
    """Frames spread over TIFF files: frame ``i`` is page ``pages[i]`` of ``files[i]``.

    Parameters
    ----------
    files : sequence of str
        File of each frame (repeat a multi-page file once per page).
    pages : sequence of int
        Page of each frame within its file.
    shape : (row, col)
        Shape of one frame.
    dtype :
        Pixel type.

    Examples
    --------
    >>> import tifffile, numpy as np, tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> for i in range(3):
    ...     tifffile.imwrite(os.path.join(d, f"p{i}.tif"), np.full((2, 3), i, np.uint16))
    >>> files = [os.path.join(d, f"p{i}.tif") for i in range(3)]
    >>> frames = TiffFrames(files, [0, 0, 0], shape=(2, 3), dtype="uint16")
    >>> frames[1:, 0, 0]
    array([1, 2], dtype=uint16)
    """

    def __init__(self, files, pages, *, shape, dtype):
        self.files = tuple(str(f) for f in files)
        self.pages = tuple(int(p) for p in pages)
        if len(self.files) != len(self.pages):
            raise ValueError("files and pages must have the same length")
        self.shape = (len(self.files), int(shape[0]), int(shape[1]))
        self.dtype = np.dtype(dtype)

    def _read(self, frames, rows, cols, out):
        import tifffile

        at = 0
        # consecutive frames of one file are read with the file opened once
        for name, group in itertools.groupby(frames, key=lambda i: self.files[i]):
            group = list(group)
            with tifffile.TiffFile(name) as tif:
                for i in group:
                    page = tif.pages[self.pages[i]]
                    if tuple(page.shape) != self.shape[1:] or page.dtype != self.dtype:
                        raise ScanFormatError(
                            f"image is {tuple(page.shape)} {page.dtype}, but the stack's first is "
                            f"{self.shape[1:]} {self.dtype}", where=f"{name} (page {self.pages[i]})",
                            value=tuple(page.shape),
                            fix="remove or replace the odd file so that all images match")
                    out[at] = page.asarray()[rows, cols]
                    at += 1

    def __repr__(self):
        return f"TiffFrames({len(set(self.files))} files, shape={self.shape}, dtype={self.dtype})"
