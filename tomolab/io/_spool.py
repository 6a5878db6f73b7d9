"""A DXchange scan written one frame at a time, as the frames of a live scan arrive.

:class:`FrameSpool` appends each projection (its pixels, its angle, its frame
number) to resizable datasets of one HDF5 file, chunked one frame per chunk,
and writes the flats and darks when it is closed. The layout is
:func:`tomolab.io.write_dxchange`'s, so :func:`tomolab.open_scan` reads the
closed file lazily like any other scan; ``/exchange/frame_index`` adds the
number each projection carried (the file holds them in the order they were
appended).

The guards of every other writer apply: the file is built under
``.NAME.partial-*`` and renamed into place when first closed; ``.NAME.lock``
is held while it is open; it carries the ``tomolab_output`` marker; free space
is checked before the first frame; and each frame's disk blocks are reserved
before HDF5 writes it (:class:`SpaceReservation`), so a full disk, a quota or
the process's file size limit ends in one :class:`~tomolab.errors.OutputError`
while the file stays whole (HDF5 itself never meets the failed write).
"""

from __future__ import annotations

import os
import threading
import uuid
from pathlib import Path

import numpy as np

from tomolab.errors import OutputError, ParameterError
from tomolab.io._guard import (
    MARKER,
    OutputLock,
    SpaceReservation,
    check_free_space,
    make_parent,
    refuse_existing,
    remove_stale_temporaries,
    storage_errors,
)

__all__ = ["FrameSpool"]

_HEADROOM = 2 ** 20  # bytes beyond the data kept for HDF5's metadata
_BLOCK = 256  # angles and frame numbers written together


class FrameSpool:
    """A DXchange scan file that grows one frame at a time.

    Parameters
    ----------
    path : path-like
        The file (``.h5``); refused if it exists unless ``overwrite`` and it is
        an output tomolab wrote.
    frame_shape : (int, int)
        ``(row, col)`` of every frame.
    dtype : numpy dtype
        The detector's dtype (the frames are stored as they came).
    expected : int, optional
        Projections the scan will have: the free space for them (and the
        frame's worth for one otherwise) is checked before anything is written.
    overwrite : bool

    Examples
    --------
    >>> import numpy as np, tempfile, os, tomolab
    >>> path = os.path.join(tempfile.mkdtemp(), "spool.h5")
    >>> spool = FrameSpool(path, frame_shape=(2, 3), dtype=np.uint16, expected=4)
    >>> for i in range(4):
    ...     _ = spool.append(np.full((2, 3), i, np.uint16), angle=i * np.pi / 4, index=i)
    >>> spool.close(flats=np.full((1, 2, 3), 9, np.uint16), darks=np.zeros((1, 2, 3), np.uint16),
    ...             pixel_size=1e-6).name
    'spool.h5'
    >>> scan = tomolab.open_scan(path)
    >>> scan.sizes["angle"], int(scan.projections[3, 0, 0]), int(scan.flats[0, 0, 0])
    (4, 3, 9)
    """

    def __init__(self, path, *, frame_shape, dtype, expected: int | None = None,
                 overwrite: bool = False):
        import h5py

        self.path = Path(os.fspath(path)).expanduser()
        self.frame_shape = tuple(int(n) for n in frame_shape)
        self.dtype = np.dtype(dtype)
        if len(self.frame_shape) != 2 or min(self.frame_shape) < 1:
            raise ParameterError("frames must be 2-D", where="frame_shape", value=frame_shape,
                                 fix="pass (rows, cols) of the detector")
        self.frame_bytes = int(np.prod(self.frame_shape)) * self.dtype.itemsize
        self.count = 0
        self._pending: list[tuple[float, int]] = []  # (angle in degrees, index) not yet written
        self._resumed_at = None  # frames in the file when it was reopened (None: a new file)
        self._io = threading.Lock()  # appends (one thread) and reads (another)
        refuse_existing(self.path, overwrite, kind="scan")
        make_parent(self.path)
        self._lock = OutputLock(self.path).acquire()
        self._file = self._reserve = None
        try:
            refuse_existing(self.path, overwrite, kind="scan")  # again, under the lock
            check_free_space(self.path, self.frame_bytes * max(int(expected or 1), 1))
            remove_stale_temporaries(self.path)
            self.partial = self.path.parent / f".{self.path.name}.partial-{os.getpid()}-" \
                                              f"{uuid.uuid4().hex[:8]}"
            with storage_errors(self.path):
                self._file = h5py.File(self.partial, "w")
                self._file.attrs[MARKER] = "scan"
                self._file.attrs["spool_complete"] = 0
                self._file.create_dataset("implements", data="exchange:measurement")
                exchange = self._file.create_group("exchange")
                exchange.create_dataset("data", shape=(0, *self.frame_shape), dtype=self.dtype,
                                        maxshape=(None, *self.frame_shape),
                                        chunks=(1, *self.frame_shape))
                theta = exchange.create_dataset("theta", shape=(0,), maxshape=(None,),
                                                dtype=np.float64, chunks=(4096,))
                theta.attrs["units"] = "degree"
                exchange.create_dataset("frame_index", shape=(0,), maxshape=(None,),
                                        dtype=np.int64, chunks=(4096,))
                self._file.flush()
            self._reserve = SpaceReservation(self.partial, headroom=_HEADROOM)
        except BaseException:
            self._abandon()
            raise

    # -- writing ------------------------------------------------------------------
    def _make_room(self, nbytes: int) -> None:
        """Reserve disk blocks for ``nbytes`` more before HDF5 writes them (OSError if none)."""
        self._reserve.ensure(nbytes)  # also refuses a write past RLIMIT_FSIZE

    def append(self, data, *, angle: float, index: int) -> int:
        """Add one projection; returns its position in the file.

        Raises :class:`~tomolab.errors.OutputError` when the disk is full (the
        file stays whole, holding the frames before this one).
        """
        return self.extend([data], angles=[angle], indices=[index])

    def extend(self, frames, *, angles, indices) -> int:
        """Add several projections at once (one resize, one write); returns the first's position."""
        if self._file is None:
            raise OutputError("the spool is closed", where=str(self.path),
                              fix="reopen() it before appending")
        block = np.stack([np.asarray(frame, dtype=self.dtype) for frame in frames]) \
            if not isinstance(frames, np.ndarray) else np.asarray(frames, dtype=self.dtype)
        if block.shape[1:] != self.frame_shape or len(angles) != len(block) \
                or len(indices) != len(block):
            raise ParameterError(f"frames are {block.shape[1:]}, the spool's are "
                                 f"{self.frame_shape} (one angle and index each)", where="frames",
                                 value=block.shape, fix="append frames of one shape")
        with self._io, storage_errors(self.path):
            self._make_room(block.nbytes + 16 * len(block))
            dset = self._file["exchange/data"]
            n = self.count
            dset.resize(n + len(block), axis=0)
            dset[n:n + len(block)] = block
            # angles and numbers go in blocks: a small write costs as much as a frame's
            self._pending.extend((np.rad2deg(float(a)), int(i)) for a, i in zip(angles, indices))
            self.count = n + len(block)
            if len(self._pending) >= _BLOCK:
                self._write_pending()
        return n

    def _write_pending(self):
        if not self._pending:
            return
        exchange = self._file["exchange"]
        start = exchange["theta"].shape[0]
        stop = start + len(self._pending)
        theta, index = zip(*self._pending)
        for name, values in (("theta", theta), ("frame_index", index)):
            exchange[name].resize(stop, axis=0)
            exchange[name][start:stop] = values
        self._pending = []

    def read(self, positions) -> np.ndarray:
        """The frames at ``positions`` (in the file's order) as one ``(k, row, col)`` array."""
        positions = np.asarray(positions, np.int64).ravel()
        with self._io:
            if self._file is None:
                import h5py

                with h5py.File(self.path, "r", locking=False) as f:
                    return np.stack([f["exchange/data"][int(k)] for k in positions])
            dset = self._file["exchange/data"]
            return np.stack([dset[int(k)] for k in positions])

    # -- closing -------------------------------------------------------------------
    def close(self, *, flats=None, darks=None, pixel_size: float | None = None,
              attrs: dict | None = None) -> Path:
        """Write the flats, darks and metadata, close the file and put it at :attr:`path`.

        ``flats``/``darks`` (``(k, row, col)``) replace any written at an earlier close.
        Returns the path of the finished file.
        """
        if self._file is None:
            return self.path
        with self._io:
            try:
                with storage_errors(self.path):
                    f = self._file
                    self._write_pending()
                    exchange = f["exchange"]
                    for name, frames in (("data_white", flats), ("data_dark", darks)):
                        if name in exchange:
                            del exchange[name]
                        if frames is not None and len(frames):
                            frames = np.asarray(frames)
                            self._make_room(frames.nbytes)
                            exchange.create_dataset(name, data=frames,
                                                    chunks=(1, *frames.shape[1:]))
                    resolution = "measurement/instrument/detection_system/objective/resolution"
                    if resolution in f:
                        del f[resolution]
                    if pixel_size:
                        dset = f.create_dataset(resolution, data=np.float64(pixel_size * 1e6))
                        dset.attrs["units"] = "um"
                    from tomolab.io._write import _h5_attr

                    for key, value in (attrs or {}).items():
                        f.attrs[str(key)] = _h5_attr(value)
                    f.attrs["spool_complete"] = 1
                    f.close()
                    self._file = None
                    self._reserve.release()
                    if self._resumed_at is None:
                        os.replace(self.partial, self.path)
            except BaseException:
                self._abandon_locked()
                raise
            finally:
                self._lock.release()
        return self.path

    def reopen(self) -> FrameSpool:
        """Open the closed file again to append more frames (a session that resumes)."""
        import h5py

        if self._file is not None:
            return self
        self._lock.acquire()
        try:
            with storage_errors(self.path):
                self._file = h5py.File(self.path, "a")
                self._file.attrs["spool_complete"] = 0
            self._resumed_at = self.count
            self._reserve = SpaceReservation(self.path, headroom=_HEADROOM)
            self._reserve.data = os.path.getsize(self.path)
        except BaseException:
            self._file = None
            self._lock.release()
            raise
        return self

    def abandon(self) -> None:
        """After a failed write: a new file is removed; a reopened one goes back to what it held."""
        with self._io:
            self._abandon_locked()
            self._lock.release()

    def _abandon(self):
        self._abandon_locked()
        self._lock.release()

    def _abandon_locked(self):
        import contextlib

        if self._file is not None:
            self._pending = []
            with contextlib.suppress(Exception):
                if self._resumed_at is not None:  # shrink back: nothing of the failed part stays
                    for name in ("data", "theta", "frame_index"):
                        self._file["exchange"][name].resize(self._resumed_at, axis=0)
                    self.count = self._resumed_at
                    self._file.attrs["spool_complete"] = 1
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None
        if self._reserve is not None:
            with contextlib.suppress(OSError):
                self._reserve.release()
        partial = getattr(self, "partial", None)
        if self._resumed_at is None and partial is not None:
            with contextlib.suppress(OSError):
                partial.unlink()

    @property
    def closed(self) -> bool:
        return self._file is None

    def __repr__(self):
        return f"<FrameSpool {self.path}: {self.count} frames{' (open)' if self._file else ''}>"
