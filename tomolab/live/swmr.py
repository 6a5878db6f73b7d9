"""Frames from an HDF5 file that the acquisition is still writing (SWMR).

The writer makes every dataset first, switches the file to SWMR mode
(``f.swmr_mode = True``), then appends frames and flushes after each. This
source opens the file with ``swmr=True``, refreshes the datasets and hands
out what was flushed, in file order. The scan has ended when

* the root attribute ``scan_complete`` is true, or an NXtomo entry's
  ``end_time`` is filled (the writer marks the end), or
* the file opens without SWMR: no writer holds it any longer (HDF5 refuses a
  plain open while a SWMR writer has the file), so everything is in it.

A writer that crashed leaves its mark in the file (clear it with
``h5clear -s``); the source then ends as *lost* once no frame came for
``timeout_lost`` seconds. A file that vanishes or is replaced is lost at once.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from tomolab.errors import ParameterError, ScanFormatError
from tomolab.live._frames import EndOfScan, Frame, FrameSource

__all__ = ["END_MARKER", "SwmrSource"]

#: root attribute a writer sets to 1 when the scan is complete
END_MARKER = "scan_complete"
_NXTOMO_KEYS = {0: "projection", 1: "flat", 2: "dark"}
_MAX_READ = 64  # frames read from the file at once (bounds the latency of the first)


class SwmrSource(FrameSource):
    """Follow a DXchange or NXtomo file written with HDF5 SWMR; frames as they are flushed.

    Parameters
    ----------
    path : str or os.PathLike
        The file. It may not exist yet (the source waits for it); its folder must.
    layout : {"auto", "dxchange", "nxtomo", "nxtomo-diamond"}
        DXchange: ``/exchange/data``, ``data_white``, ``data_dark`` and
        ``theta`` (degrees unless its ``units`` say otherwise), each growing;
        darks, then flats, then projections of each refresh are handed out
        (a projection once its angle is there too). NXtomo: one detector
        dataset with ``image_key`` (0 projection, 1 flat, 2 dark; -1,
        alignment frames, are skipped) and a ``rotation_angle`` per frame,
        handed out in file order once all three have it.
    entry : str, optional
        NXtomo entry (the first by default).
    timeout_lost : float or None
        Seconds without a new frame, once frames came, after which the writer
        is taken for lost (None: never).
    poll : float
        Seconds between refreshes while nothing new is there.
    check_interval : float
        Seconds between checks for the end (the file is reopened for them).

    Attributes
    ----------
    layout : str
        The file's layout, once it was opened.

    Examples
    --------
    >>> import os, tempfile
    >>> from tomolab.live import simulate_stream
    >>> path = os.path.join(tempfile.mkdtemp(), "scan.h5")
    >>> _ = simulate_stream(path, transport="swmr", rate=None, darks=1, flats=1,
    ...                     scan={"size": 32, "n_rows": 2, "n_angles": 4})
    >>> with SwmrSource(path) as source:
    ...     [frame.kind for frame in source], source.state
    (['dark', 'flat', 'projection', 'projection', 'projection', 'projection'], 'ended')
    """

    description = "a growing HDF5 file (SWMR)"

    def __init__(self, path, *, layout: str = "auto", entry: str | None = None,
                 timeout_lost: float | None = 30.0, poll: float = 0.02,
                 check_interval: float = 0.25):
        super().__init__()
        self._io = threading.Lock()  # held while reading: close() from another thread waits for it
        self._close_requested = False
        self.path = Path(os.fspath(path)).expanduser()
        if not self.path.parent.is_dir():
            raise ParameterError("the folder does not exist", where="path", value=str(self.path),
                                 fix="name a file in an existing folder (the file itself may "
                                     "appear later)")
        if layout not in ("auto", "dxchange", "nxtomo", "nxtomo-diamond"):
            raise ParameterError("unknown layout", where="layout", value=layout,
                                 fix="pass auto, dxchange, nxtomo or nxtomo-diamond")
        for name, value in (("timeout_lost", timeout_lost), ("poll", poll),
                            ("check_interval", check_interval)):
            if (value is not None or name != "timeout_lost") and (
                    isinstance(value, bool) or not isinstance(value, (int, float))
                    or not value > 0 or not math.isfinite(value)):
                raise ParameterError("must be a positive number of seconds", where=name,
                                     value=value, fix=f"pass e.g. {name}=1")
        self._layout_wanted, self._entry = layout, entry
        self.timeout_lost = timeout_lost
        self._poll, self._check_interval = float(poll), float(check_interval)
        self.layout = None
        self._file = None
        self._paths = None
        self._inode = None
        self._pending: deque = deque()
        self._done = {"dark": 0, "flat": 0, "projection": 0}  # DXchange: frames read per dataset
        self._position = 0  # NXtomo: frames of the detector dataset read
        self._counts = {"dark": 0, "flat": 0, "projection": 0}
        self._last_frame = None
        self._last_check = 0.0
        self._ending = None  # (state, reason) once the end is known; frames still pending go first
        if self.path.exists():
            self._open()  # a file in no known layout is refused now, not during the scan

    # --- opening -----------------------------------------------------------------------------

    def _open(self) -> bool:
        """Open the file (SWMR, or plainly when no writer holds it); False while it cannot be."""
        import h5py

        try:
            stat = self.path.stat()
            try:
                f = h5py.File(self.path, "r")  # refused while a SWMR writer holds the file
                writing = False
            except OSError:
                f = h5py.File(self.path, "r", libver="latest", swmr=True)
                writing = True
        except OSError:
            return False  # not there yet, or the writer has not switched to SWMR mode yet
        try:
            paths = self._paths or self._find_layout(f)
        except Exception:
            f.close()
            raise
        if self._paths is None and paths["angles"] is None:
            self.record_error(f"{self.path}: no rotation angles in the {paths['layout']} layout; "
                              "projections come without an angle")
        self._file, self._paths, self._inode = f, paths, (stat.st_dev, stat.st_ino)
        self.layout = paths["layout"]
        if not writing:
            self._ending = ("ended", "no writer held the file when it was opened (complete)")
        return True

    def _find_layout(self, f):
        from tomolab.io import layout_paths

        paths = layout_paths(f, layout=self._layout_wanted, entry=self._entry)
        for name in ("projections", "flats", "darks"):
            if paths[name] is not None and f[paths[name]].ndim != 3:
                raise ScanFormatError(f"dataset has {f[paths[name]].ndim} dimensions, expected 3 "
                                      "(frame, row, col)", where=f"{self.path}:{paths[name]}",
                                      value=f[paths[name]].shape,
                                      fix="write the frames as (n, rows, cols), growing along n")
        return paths

    def _close_file(self):
        if self._file is not None:
            with contextlib.suppress(Exception):  # h5py raises several kinds on a vanished file
                self._file.close()
            self._file = None

    # --- reading -----------------------------------------------------------------------------

    def _dataset(self, path, refresh):
        dset = self._file[path]
        if refresh:
            dset.refresh()
        return dset

    def _read_new(self, refresh=True) -> int:
        """Queue the frames flushed since the last read; how many were queued."""
        before = len(self._pending)
        arrival = time.perf_counter()
        paths = self._paths
        factor = paths["angle_factor"]
        angles = self._dataset(paths["angles"], refresh) if paths["angles"] else None
        if paths["image_key"] is None:
            for kind, name in (("dark", "darks"), ("flat", "flats"), ("projection", "projections")):
                if paths[name] is None:
                    continue
                dset = self._dataset(paths[name], refresh)
                n = dset.shape[0]
                if kind == "projection" and angles is not None:
                    n = min(n, angles.shape[0])
                start = self._done[kind]
                stop = min(n, start + _MAX_READ)
                if stop <= start:
                    continue
                block = dset[start:stop]
                values = (angles[start:stop] * factor if kind == "projection" and angles is not None
                          else [None] * (stop - start))
                for i in range(stop - start):
                    angle = None if values[i] is None else float(values[i])
                    self._pending.append(Frame(kind, start + i, angle, block[i], arrival=arrival))
                self._done[kind] = stop
        else:
            dset = self._dataset(paths["projections"], refresh)
            keys = self._dataset(paths["image_key"], refresh)
            n = min(dset.shape[0], keys.shape[0], angles.shape[0] if angles is not None else math.inf)
            start = self._position
            stop = int(min(n, start + _MAX_READ))
            if stop > start:
                block = dset[start:stop]
                kinds = keys[start:stop]
                values = angles[start:stop] * factor if angles is not None else None
                for i, key in enumerate(np.asarray(kinds).tolist()):
                    kind = _NXTOMO_KEYS.get(key)
                    if kind is None:
                        continue  # an alignment frame (-1) or a key of no use here
                    angle = float(values[i]) if kind == "projection" and values is not None else None
                    self._pending.append(Frame(kind, self._counts[kind], angle, block[i],
                                               arrival=arrival))
                    self._counts[kind] += 1
                self._position = stop
        return len(self._pending) - before

    def _marked_end(self) -> str | None:
        """The writer's end mark, read from a freshly opened file, or None."""
        f = self._file
        if bool(np.asarray(f.attrs.get(END_MARKER, 0)).ravel()[:1].any()):
            return f"the writer set {END_MARKER}"
        entry = self._paths.get("entry")
        if entry is not None:
            for name in (f"{entry}/end_time", f"{entry.rsplit('/', 1)[0]}/end_time"):
                node = f.get(name)
                if node is not None and hasattr(node, "shape"):
                    value = node[()]
                    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
                    if text.strip(" \x00"):
                        return "the writer filled end_time"
        return None

    def _check_end(self):
        """Reopen the file: without SWMR when no writer holds it, else for its end mark."""
        import h5py

        self._last_check = time.perf_counter()
        self._close_file()
        try:
            self._file = h5py.File(self.path, "r")  # refused while a SWMR writer has the file
            mark = self._marked_end()
            self._ending = ("ended", f"the writer closed the file ({mark})" if mark else
                            f"the writer closed the file without the end mark ({END_MARKER})")
            return
        except OSError:
            pass
        try:
            self._file = h5py.File(self.path, "r", libver="latest", swmr=True)
        except OSError:
            return  # between two states of the writer: try again at the next check
        mark = self._marked_end()
        if mark is not None:
            self._ending = ("ended", mark)

    def _lost(self) -> str | None:
        """Why the file is lost (vanished, replaced, silent too long), or None."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return f"the file {self.path} vanished"
        if self._inode is not None and (stat.st_dev, stat.st_ino) != self._inode:
            return f"the file {self.path} was replaced by another one"
        if self._last_frame is not None and self.timeout_lost is not None and \
                time.perf_counter() - self._last_frame >= self.timeout_lost:
            return (f"no frame for {self.timeout_lost:g} s and the writer still holds the file: "
                    "stalled or crashed? (h5clear -s clears a crashed writer's mark)")
        return None

    def _next(self, timeout: float) -> Frame | None:
        with self._io:
            frame = None if self._close_requested else self._follow(timeout)
            if self._close_requested:  # closed from another thread meanwhile: close here
                self._close_file()
                return None
            return frame

    def _follow(self, timeout: float) -> Frame | None:
        deadline = time.perf_counter() + max(timeout, 0.0)
        while not self._close_requested:
            if self._pending:
                self._last_frame = time.perf_counter()
                return self._pending.popleft()
            if self._file is None and self._ending is None and not self._open():
                if self._inode is not None:  # it was open once
                    reason = self._lost()
                    if reason:
                        self.state = "lost"
                        raise EndOfScan(reason)
            elif self._file is not None:
                try:
                    queued = self._read_new(refresh=self._ending is None)
                except (OSError, KeyError, RuntimeError) as exc:
                    reason = self._lost()
                    if reason:
                        self._close_file()
                        self.state = "lost"
                        raise EndOfScan(reason) from None
                    self.record_error(f"reading {self.path}: {exc}")
                    self._close_file()
                    queued = 0
                if queued:
                    continue
                if self._ending is not None:
                    self._close_file()
                    self.state, reason = self._ending
                    counts = ", ".join(f"{n} {kind}s" for kind, n in self._frame_counts().items())
                    raise EndOfScan(f"{reason} after {counts}")
                if time.perf_counter() - self._last_check >= self._check_interval:
                    reason = self._lost()
                    if reason:
                        self._close_file()
                        self.state = "lost"
                        raise EndOfScan(reason)
                    self._check_end()
                    if self._file is not None or self._ending is not None:
                        continue  # read what came before the end
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            time.sleep(min(self._poll, remaining))
        return None

    def _frame_counts(self):
        if self._paths is not None and self._paths["image_key"] is None:
            return dict(self._done)
        return dict(self._counts)

    def close(self):
        """Close the file; safe from another thread while :meth:`receive` waits."""
        super().close()
        self._close_requested = True
        if self._io.acquire(blocking=False):
            try:
                self._close_file()
            finally:
                self._io.release()
