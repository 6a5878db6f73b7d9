"""The raw frames of a live session, written to disk as they arrive (a writer thread of its own).

:class:`Spooler` takes each projection from the receiving thread without ever
blocking it (a queue; a frame that finds a gigabyte of frames waiting for the
disk is left out of the spool and counted), and a thread of its own appends it
to a :class:`tomolab.io.FrameSpool`. A problem with the disk (no room, a
read-only folder, a quota) stops the spool with one line in the session's
errors; the live slices go on.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import queue
import re
import socket
import threading
import uuid
from pathlib import Path

import numpy as np

__all__ = ["SPOOL_QUEUE_BYTES", "SPOOL_STATES", "Spooler", "default_spool_folder"]

#: what the spool is doing: ``"waiting"`` (no frame yet), ``"writing"``, ``"complete"`` (closed at
#: the end of the scan or at a stop), ``"failed"`` (a disk problem; see the session's errors)
SPOOL_STATES = ("waiting", "writing", "complete", "failed")

#: bytes of frames that may wait for the disk; past that, frames are left out of the spool
SPOOL_QUEUE_BYTES = 1_000_000_000

_CLOSE = "close"
_MAX_BATCH = 64  # frames written in one call, at most


def _is_close(item) -> bool:
    return isinstance(item, tuple) and item[0] == _CLOSE
_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs")
_OUR_NAME = re.compile(r"^live-(?P<host>.+)-(?P<pid>\d+)-\d{8}-\d{6}-[0-9a-f]{6}\.h5$")


def default_spool_folder() -> Path:
    """Where spools go unless the session names a place: the user's cache folder, ``live/``."""
    from tomolab.devices import user_cache_dir

    return Path(user_cache_dir("live"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_ended_spools(folder: Path) -> list[Path]:
    """Delete this host's default spools whose Python process has ended; returns them."""
    removed = []
    host = socket.gethostname()
    with contextlib.suppress(OSError):
        for item in folder.iterdir():
            match = _OUR_NAME.match(item.name)
            if match and match["host"] == host and not _alive(int(match["pid"])):
                with contextlib.suppress(OSError):
                    item.unlink()
                    removed.append(item)
    return removed


def spool_path(where) -> tuple[Path, bool]:
    """The spool file for ``where`` (a folder, or a file ending in .h5), and whether it is ours.

    A session's file in a folder is ``live-HOST-PID-YYYYmmdd-HHMMSS-XXXXXX.h5``.
    """
    if where is None:
        folder, default = default_spool_folder(), True
    else:
        path = Path(os.fspath(where)).expanduser()
        if path.suffix.lower() in _SUFFIXES:
            return path, False
        folder, default = path, False
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    name = f"live-{socket.gethostname()}-{os.getpid()}-{stamp}-{uuid.uuid4().hex[:6]}.h5"
    return folder / name, default


class Spooler:
    """Writes the projections handed to :meth:`put` into a spool file, in a thread of its own.

    Parameters
    ----------
    where : path-like or None
        A folder (a new file named after the session goes there), a file
        ending in ``.h5``, or None for :func:`default_spool_folder` (where the
        spools of ended Python processes are removed at the first frame).
    expected : int, optional
        Projections the scan will have (the free-space check).
    report : callable
        ``report(message)`` for each problem (the session's error list).
    queue_bytes : int
        Frames waiting for the disk, in bytes, at most.
    """

    def __init__(self, where, *, expected=None, report=print, queue_bytes=SPOOL_QUEUE_BYTES):
        self.path, self._default = spool_path(where)
        self.expected = expected
        self.state = "waiting"
        self.error = ""
        self.skipped = 0  # frames left out of the spool (the disk was behind)
        self.positions: dict[int, int] = {}  # frame index -> position in the file
        self._report = report
        self._queue_bytes_max = int(queue_bytes)
        self._queued_bytes = 0
        self._count_lock = threading.Lock()
        self._written = threading.Condition()
        self._queue: queue.Queue = queue.Queue()
        self._spool = None
        self._thread = None

    # -- the receiving thread --------------------------------------------------------
    def put(self, frame) -> None:
        """Queue one projection for the disk; never waits."""
        if self.state == "failed":
            return
        with self._count_lock:
            if self._queued_bytes + frame.nbytes > self._queue_bytes_max and self._queued_bytes:
                self.skipped += 1
                if self.skipped == 1:
                    self._report(f"spool: the disk is behind the frames ({self._queued_bytes / 1e9:.1f} "
                                 f"GB waiting); projection {frame.index} and others are left out of "
                                 f"{self.path}")
                return
            self._queued_bytes += frame.nbytes
        self._queue.put(frame)

    # -- the thread ------------------------------------------------------------------
    def new_thread(self) -> threading.Thread:
        """The writer thread (not started: the session starts it with its own)."""
        self._thread = threading.Thread(target=self._loop, daemon=True, name="tomolab-live-spool")
        return self._thread

    def close(self, **fields) -> None:
        """Write ``flats``, ``darks`` (arrays or None) and the metadata, close the file; waits."""
        self._queue.put((_CLOSE, fields))
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def _loop(self):
        while True:
            # what has queued up goes in one write: fewer calls (each needs the GIL) when behind
            batch = [self._queue.get()]
            while len(batch) < _MAX_BATCH and not _is_close(batch[-1]):
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            close = batch.pop() if _is_close(batch[-1]) else None
            with self._count_lock:
                self._queued_bytes -= sum(frame.nbytes for frame in batch)
            try:
                if batch and self.state != "failed":
                    self._write(batch)
            except Exception as exc:  # noqa: BLE001 - a disk problem stops the spool, not the session
                self._fail(exc)
            finally:
                for _ in batch:
                    self._queue.task_done()
                with self._written:
                    self._written.notify_all()
            if close is not None:
                self._close(close[1])
                self._queue.task_done()
                return

    def _write(self, frames):
        from tomolab.io import FrameSpool

        frame = frames[0]
        if self._spool is None:
            if self._default:
                remove_ended_spools(self.path.parent)
            self._spool = FrameSpool(self.path, frame_shape=frame.shape, dtype=frame.data.dtype,
                                     expected=self.expected)
        elif self._spool.closed:
            self._spool.reopen()
        self.state = "writing"
        first = self._spool.extend([f.data for f in frames], angles=[f.angle for f in frames],
                                   indices=[f.index for f in frames])
        with self._written:
            for k, f in enumerate(frames):
                self.positions[int(f.index)] = first + k
            self._written.notify_all()

    def _close(self, fields):
        if self._spool is None or self.state == "failed":
            return
        try:
            self._spool.close(**fields)
            self.state = "complete"
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)

    def _fail(self, exc):
        self.state = "failed"
        self.error = getattr(exc, "what", None) or f"{type(exc).__name__}: {exc}"
        if self._spool is not None:
            with contextlib.suppress(Exception):
                self._spool.abandon()
        self._report(f"spool {self.path}: {self.error}; the raw frames are no longer written "
                     f"(the live slices go on)")
        with self._written:
            self._written.notify_all()

    # -- reading back ----------------------------------------------------------------
    @property
    def written(self) -> int:
        return 0 if self._spool is None else self._spool.count

    def read(self, indices, timeout: float = 60.0):
        """The raw frames of projections ``indices`` (waits for them to reach the disk).

        Returns None when the spool cannot give them (failed, or left out).
        """
        indices = [int(i) for i in indices]
        with self._written:
            ok = self._written.wait_for(
                lambda: self.state == "failed" or all(i in self.positions for i in indices)
                or not self._pending(), timeout)
            if not ok or self.state == "failed" or not all(i in self.positions for i in indices):
                return None
            positions = [self.positions[i] for i in indices]
        return self._spool.read(positions)

    def _pending(self) -> bool:
        """Frames queued or being written (taken from the queue, not yet on disk)."""
        return self._queue.unfinished_tasks > 0

    def describe(self) -> dict:
        return {"state": self.state, "path": str(self.path), "frames": self.written,
                "skipped": self.skipped, "error": self.error}


def frame_order(indices) -> np.ndarray | None:
    """Positions that put the spool's frames in index order, or None when they already are."""
    indices = np.asarray(indices, np.int64)
    if indices.size < 2 or np.all(np.diff(indices) > 0):
        return None
    return np.argsort(indices, kind="stable")
