"""Three orthogonal slices that reconstruct themselves while the frames arrive.

:class:`LiveReconstruction` pulls frames from a :class:`~tomolab.live.FrameSource`
in one thread and reconstructs in another. Darks and flats are averaged per
set (a set of a kind ends when a projection comes; the next frame of that
kind starts a new set, which replaces it). Each projection is flat/dark
corrected, ``-log``, and filtered along its rows with the filter and padding of
:func:`tomolab.reconstruct` (:func:`tomolab.recon.filter_sinograms`); the
filtered projection goes into a ring buffer on the device (CuPy arrays on a
GPU, NumPy on the CPU) and is backprojected at once into unnormalised sums:

* ``xy``: the slice at detector row ``z``, by :func:`tomolab.recon.backproject`
  of that row;
* ``xz`` and ``yz``: the vertical planes through ``point = (y, x)`` of the
  ``size × size`` grid, one line of voxels per detector row, by
  :func:`tomolab.recon.backproject_points` (the same geometry and centre).

:meth:`~LiveReconstruction.snapshot` scales the sums by FBP's angle weight
``pi / n`` for the ``n`` projections they hold, so the slices at the end equal
:func:`tomolab.reconstruct` of the same frames (the reference of the tests).
Moving a slice or changing the centre recomputes the three from the ring
buffer, without waiting for frames. The reconstruction filter does not depend
on the centre, so the buffer holds for every centre.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import threading
import time
import warnings
from collections import deque
from pathlib import Path

import numpy as np

from tomolab.checks import check_bool, check_choice
from tomolab.errors import ParameterError
from tomolab.live._frames import FRAME_KINDS, EndOfScan, Frame
from tomolab.sanity import check_centre_value, check_whole_number

__all__ = ["BUFFER_FRACTION", "LIVE_STATES", "QUEUE_BYTES", "WINDOWS", "LiveReconstruction"]

#: how the slices cover the rotation: every projection so far, or the last 180° only
WINDOWS = ("accumulate", "sliding")

#: what a live reconstruction is doing (``"stopped"``: by :meth:`LiveReconstruction.stop`)
LIVE_STATES = ("waiting", "running", "ended", "lost", "stopped")

_END = object()  # put by the receiver after its last frame
_ANGLE_TOLERANCE = 1e-6  # radians: angles this close to 180° apart count as one turn apart
_LATENCIES_KEPT = 2000

#: share of the backend's free memory that the ring buffer may take (unless ``buffer_angles`` is given)
BUFFER_FRACTION = 0.5

#: bytes of frames that may wait for the reconstruction thread (unless ``queue_frames`` is given)
QUEUE_BYTES = 1_000_000_000


#: interpolations below which a CPU kernel runs in the calling thread alone: waking the other
#: threads costs ~50 µs on idle cores but ~10 ms on a machine whose cores are busy (measured on
#: 2 shared cores, benchmarks/RESULTS.md), more than one frame's three slices take on one core
_PARALLEL_WORK = 4_000_000


@contextlib.contextmanager
def _kernel_threads(xp, work: int):
    """Run the Numba kernels of this thread on one thread when ``work`` is small (CPU only)."""
    if xp is not np or work >= _PARALLEL_WORK:
        yield
        return
    import numba

    before = numba.get_num_threads()
    numba.set_num_threads(1)  # numba's thread count is per calling thread
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _array_module(backend: str):
    if backend == "cupy":
        import cupy
        return cupy
    return np


class LiveReconstruction:
    """Slices ``xy``, ``xz`` and ``yz`` of a scan, updated as its frames arrive.

    Parameters
    ----------
    source : tomolab.live.FrameSource
        Where the frames come from (ZeroMQ, a growing SWMR file, a
        :class:`~tomolab.live.MemorySource`). It is read by one thread of this
        object; closing it is the caller's.
    center : float
        Detector column of the rotation axis, in pixels (as everywhere in tomolab).
    z : int, optional
        Detector row of the ``xy`` slice (default: the middle row).
    point : (int, int), optional
        ``(y, x)`` voxel of the ``size × size`` grid that the ``xz`` (at ``y``)
        and ``yz`` (at ``x``) planes go through (default: the grid's middle).
    size : int, optional
        Width of the square slices (default: the detector width), the axis at
        their middle as in :func:`tomolab.reconstruct`.
    filter : str
        Reconstruction filter (:data:`tomolab.recon.FILTERS`).
    pad_mode : {"edge", "constant"}
        Detector padding before filtering, as in :func:`tomolab.reconstruct`.
    backend : {"auto", "numpy", "cupy"}
        Where the buffer and the slices live.
    window : {"accumulate", "sliding"}
        ``"accumulate"``: every projection that arrived; ``"sliding"``: the
        last 180° of a continuous rotation (older projections leave the sums).
    n_angles_hint : int, optional
        Projections the scan will have: sizes the buffer at the start, tells
        how many are missing at the end, and gives the angle of a projection
        sent without one (``index × pi / n_angles_hint``).
    buffer_angles : int, optional
        Filtered projections the ring buffer holds, at most (default: what
        half the free memory of the backend holds, :data:`BUFFER_FRACTION`,
        e.g. 1800 projections of 2048² on an 80 GB GPU; a sliding window
        needs 180° of them). In ``"accumulate"`` mode a projection that finds
        the buffer full is dropped from the slices (``stats["dropped"]``), so
        the slices stay the reconstruction of exactly the buffered projections.
    pixel_size : float, optional
        Metres: values in 1/m and coordinates in metres, as
        :func:`tomolab.reconstruct` gives them (default: per pixel, in pixels).
    normalize, log : bool
        Flat/dark correction and ``-log``, as in :func:`tomolab.reconstruct`.
    keep_frames : bool
        Keep the raw frames (where: ``spool``), so that :meth:`to_scan` can
        hand them to :func:`tomolab.reconstruct_to`, and so that new flats
        re-normalise the buffer. ``False``: neither.
    spool : path-like, None or False
        Where the raw frames are kept. ``None`` (default): a DXchange file in
        the user's cache folder (``~/.cache/tomolab/live/``; the spools of
        Python processes that have ended are removed by the next session); a
        folder: a new file there; a path ending in ``.h5``: that file (kept).
        Each projection is written by a thread of its own as it arrives
        (``rows × cols × itemsize`` bytes on disk per frame: 15 GB for 1800
        frames of 2048² uint16, nothing in memory), the flats and darks when
        the scan ends or the session stops. ``False``: in host memory, as a
        reference to each frame (the same 15 GB, in RAM: for small scans).
        A disk problem (full, read-only, a quota) stops the spool with one
        line in :meth:`errors`; the slices go on. ``stats["spool"]`` says
        where it stands.
    queue_frames : int, optional
        Frames waiting for the reconstruction thread, at most; a projection
        that finds the queue full (the reconstruction is behind the source)
        is dropped from the slices, never from :meth:`to_scan`. Default:
        what 1 GB holds (at least 16).

    Attributes
    ----------
    center, z, point
        The current parameters (change them with :meth:`set_center` and
        :meth:`set_slices`).

    Examples
    --------
    >>> import tomolab
    >>> from tomolab.live import Frame, MemorySource
    >>> scan = tomolab.data.simulate_scan(32, n_rows=4, n_angles=40)
    >>> source = MemorySource()
    >>> for i, flat in enumerate(scan.flats.values):
    ...     source.put(Frame("flat", i, None, flat))
    >>> for i, (angle, p) in enumerate(zip(scan.angle.values, scan.projections.values)):
    ...     source.put(Frame("projection", i, float(angle), p))
    >>> source.finish()
    >>> with LiveReconstruction(source, center=scan.attrs["true_center"], backend="numpy") as live:
    ...     live.wait(timeout=60)
    ...     slices = live.snapshot()
    True
    >>> slices.xy.dims, slices.xz.dims, slices.attrs["n_projections"], live.stats["state"]
    (('y', 'x'), ('z', 'x'), 40, 'ended')
    """

    def __init__(self, source, *, center, z: int | None = None, point=None, size: int | None = None,
                 filter: str = "ramp", pad_mode: str = "edge", backend: str = "auto",
                 window: str = "accumulate", n_angles_hint: int | None = None,
                 buffer_angles: int | None = None, pixel_size: float | None = None,
                 normalize: bool = True, log: bool = True, keep_frames: bool = True,
                 queue_frames: int | None = None, spool=None):
        from tomolab.devices import resolve_backend
        from tomolab.recon import FILTERS
        from tomolab.sanity import check_quantity

        if not callable(getattr(source, "receive", None)):
            raise ParameterError("is not a frame source", where="source", value=type(source).__name__,
                                 fix="pass a tomolab.live source (ZmqSource, SwmrSource, MemorySource)")
        self.source = source
        self.center = check_centre_value(center)
        if not np.isfinite(self.center) or self.center < 0:
            raise ParameterError("centre must be a detector column", where="center", value=center,
                                 fix="pass a column between 0 and the detector width - 1")
        self.filter = check_choice(filter, FILTERS, where="filter", what="reconstruction filter")
        self.pad_mode = check_choice(pad_mode, ("edge", "constant"), where="pad_mode",
                                     what="padding mode")
        self.window = check_choice(window, WINDOWS, where="window", what="live window")
        self.backend = resolve_backend(backend)
        self.normalize = check_bool(normalize, "normalize", "pass True (flat/dark correct) or False")
        self.log = check_bool(log, "log", "pass True (take -log) or False (already line integrals)")
        self.keep_frames = check_bool(keep_frames, "keep_frames",
                                      "pass True (keep raw frames for to_scan) or False")
        self.pixel_size = None if pixel_size is None else check_quantity("pixel_size", pixel_size)
        self._spool_where = self._check_spool(spool)
        self._spooler = None
        whole = {}
        for name, value in (("size", size), ("n_angles_hint", n_angles_hint),
                            ("buffer_angles", buffer_angles), ("queue_frames", queue_frames)):
            whole[name] = None if value is None else check_whole_number(value, name)
        self._size_asked, self.n_angles_hint = whole["size"], whole["n_angles_hint"]
        self._buffer_asked, self._queue_asked = whole["buffer_angles"], whole["queue_frames"]
        self.z = None if z is None else check_whole_number(z, "z", minimum=0)
        self.point = None if point is None else self._check_point(point)
        self._xp = _array_module(self.backend)

        self._lock = threading.RLock()  # the buffer, the sums and the parameters
        self._stopping = threading.Event()
        self._count_lock = threading.Lock()
        self._queued_bytes = 0
        self._threads: list[threading.Thread] = []
        self._queue: queue.Queue | None = None
        self._state = "waiting"
        self._end_reason = ""
        # frame bookkeeping (receiver thread)
        self._shape = None
        self._dtype = None
        self._seen: set = set()
        self._raw: dict[int, Frame] = {}  # projection index -> frame, for to_scan
        self._counts = {"received": 0, "projections": 0, "dropped": 0, "dropped_ring": 0,
                        "duplicates": 0, "late": 0, "errors": 0, "bytes": 0, "processed_bytes": 0}
        self._errors: deque = deque(maxlen=1000)
        self._max_index = -1
        self._first_arrival = None
        self._last_update = None
        self._latencies: deque = deque(maxlen=_LATENCIES_KEPT)
        # fields (reconstruction thread)
        self._sets = {"dark": [], "flat": []}  # frames of the current set of each kind
        self._set_open = {"dark": False, "flat": False}  # no projection since the set began
        self._fields = None  # (flat, dark, bad) on the device, or None before any flat
        self._fields_version = 0
        self._pending: list[Frame] = []  # projections waiting for the first flats
        self._renormalised_from_raw = True
        # buffer and sums, made at the first projection
        self._ring = None
        self._slot_angle = np.zeros(0)
        self._slot_index = np.zeros(0, np.int64)
        self._slot_version = np.zeros(0, np.int64)
        self._free: list[int] = []
        self._high = 0  # slots 0.._high-1 have been used
        self._capacity = 0
        self._newest_angle = -np.inf
        self._since_resync = 0
        self._sums = None  # {"xy": (size, size), "xz": (rows, size), "yz": (rows, size)}
        #: goes up each time the slices change (new frames, a moved slice, a new centre)
        self.version = 0

    # -- parameters ------------------------------------------------------------
    def _check_point(self, point):
        try:
            y, x = point
        except (TypeError, ValueError):
            raise ParameterError("point must be a (y, x) voxel of the slice grid", where="point",
                                 value=point, fix="pass two whole numbers, e.g. point=(128, 128)") \
                from None
        return (check_whole_number(y, "point[0] (y)", minimum=0),
                check_whole_number(x, "point[1] (x)", minimum=0))

    def _check_spool(self, spool):
        if spool is False or (spool is None and not self.keep_frames):
            return False
        if spool is not None and not isinstance(spool, (str, os.PathLike)):
            raise ParameterError("spool must be a folder, a .h5 file, None or False", where="spool",
                                 value=spool, fix="pass e.g. spool='/data/spool/', or spool=False to "
                                                  "keep the raw frames in memory")
        if not self.keep_frames:
            raise ParameterError("a spool keeps the raw frames, but keep_frames=False",
                                 where="spool", value=spool,
                                 fix="pass keep_frames=True, or leave spool out")
        from tomolab.live._spool import spool_path

        if spool is not None and spool_path(spool)[0] == Path(os.fspath(spool)).expanduser() \
                and os.path.lexists(spool):
            raise ParameterError("the spool file already exists", where="spool", value=str(spool),
                                 fix="name a new .h5 file, or a folder (a new file goes there)")
        return spool

    @property
    def size(self) -> int | None:
        """Width of the square slices (None until the first frame when not given)."""
        if self._size_asked is not None:
            return self._size_asked
        return None if self._shape is None else self._shape[1]

    def set_center(self, center: float):
        """Use a new rotation axis column and recompute the three slices from the buffer."""
        value = check_centre_value(center)
        with self._lock:
            n_cols = None if self._shape is None else self._shape[1]
            if not np.isfinite(value) or value < 0 or (n_cols is not None and value > n_cols - 1):
                raise ParameterError("centre is outside the detector", where="center", value=center,
                                     fix=f"pass a column between 0 and {(n_cols or 1) - 1}")
            self.center = value
            if self._sums is not None:
                self._recompute(("xy", "xz", "yz"))

    def set_slices(self, *, z: int | None = None, point=None):
        """Move the ``xy`` slice to detector row ``z`` and/or the vertical planes to ``point = (y, x)``.

        The moved slices are recomputed from the buffer at once.
        """
        with self._lock:
            if z is not None:
                z = check_whole_number(z, "z", minimum=0)
                if self._shape is not None and z >= self._shape[0]:
                    raise ParameterError("row is outside the detector", where="z", value=z,
                                         fix=f"pass a row between 0 and {self._shape[0] - 1}")
            if point is not None:
                point = self._check_point(point)
                if self.size is not None and max(point) >= self.size:
                    raise ParameterError("point is outside the slice grid", where="point",
                                         value=point, fix=f"pass y and x between 0 and {self.size - 1}")
            changed = []
            if z is not None and z != self.z:
                self.z = z
                changed.append("xy")
            if point is not None and point != self.point:
                self.point = point
                changed += ["xz", "yz"]
            if changed and self._sums is not None:
                self._recompute(tuple(changed))

    # -- threads ---------------------------------------------------------------
    def start(self):
        """Start receiving and reconstructing (again, after :meth:`stop`). Returns self."""
        if any(thread.is_alive() for thread in self._threads):
            return self
        self._stopping.clear()
        if self._state == "stopped":
            self._state = "running" if self._counts["received"] else "waiting"
        if self._state in ("ended", "lost"):
            return self
        self._queue = queue.Queue()
        spool_thread = []
        if self._spool_where is not False:
            from tomolab.live._spool import Spooler

            if self._spooler is None:
                self._spooler = Spooler(self._spool_where, expected=self.n_angles_hint,
                                        report=self._error)
            spool_thread = [self._spooler.new_thread()]
        self._threads = spool_thread + [threading.Thread(target=self._receive_loop, daemon=True,
                                          name="tomolab-live-receive"),
                         threading.Thread(target=self._reconstruct_loop, daemon=True,
                                          name="tomolab-live-reconstruct")]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self, timeout: float = 10.0):
        """Stop receiving; frames already queued are reconstructed first. The source stays open."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout)
        if self._state in ("waiting", "running"):
            self._state = "stopped"

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the scan has ended (or the source was lost) and every frame is in the slices.

        Returns False if ``timeout`` seconds passed first.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in list(self._threads):
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
        return self._state in ("ended", "lost")

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def _queue_full(self, nbytes: int) -> bool:
        """Is there no room for one more projection of ``nbytes`` in the queue?"""
        if self._queue_asked:
            return self._queue.qsize() >= self._queue_asked
        return self._queue.qsize() >= 16 and self._queued_bytes + nbytes > QUEUE_BYTES

    def _error(self, message: str):
        with self._count_lock:
            self._counts["errors"] += 1
            self._errors.append(message)

    def _receive_loop(self):
        source = self.source
        while not self._stopping.is_set():
            try:
                frame = source.receive(0.1)
            except EndOfScan as end:
                self._end_reason = end.reason
                break
            except Exception as exc:  # noqa: BLE001 - a broken source must not end the session
                self._error(f"source: {type(exc).__name__}: {exc}")
                time.sleep(0.1)
                continue
            if frame is not None:
                try:
                    self._accept(frame)
                except Exception as exc:  # noqa: BLE001 - a malformed frame never stops it
                    self._error(f"{getattr(frame, 'kind', '?')} {getattr(frame, 'index', '?')}: "
                                f"{type(exc).__name__}: {exc}")
        self._queue.put(_END)

    def _accept(self, frame: Frame):
        """Check one frame, count it, keep it, and queue it for reconstruction."""
        counts = self._counts
        counts["received"] += 1
        if self._first_arrival is None:
            self._first_arrival = frame.arrival
            if self._state == "waiting":
                self._state = "running"
        where = f"{frame.kind} {frame.index}"
        if frame.kind not in FRAME_KINDS:
            self._error(f"{where}: unknown frame kind (expected {', '.join(FRAME_KINDS)}); ignored")
            return
        data = frame.data
        if not isinstance(data, np.ndarray) or data.ndim != 2 or data.dtype.kind not in "uif":
            self._error(f"{where}: pixels must be a 2-D array of numbers, got "
                        f"{getattr(data, 'shape', type(data).__name__)}; ignored")
            return
        if self._shape is None:
            self._shape, self._dtype = tuple(data.shape), data.dtype
        elif tuple(data.shape) != self._shape:
            self._error(f"{where}: shape {tuple(data.shape)} differs from the scan's {self._shape}; "
                        f"ignored")
            return
        key = (frame.kind, int(frame.index))
        if key in self._seen:
            counts["duplicates"] += 1
            return
        self._seen.add(key)
        counts["bytes"] += frame.nbytes
        if frame.kind == "projection":
            counts["projections"] += 1
            self._max_index = max(self._max_index, int(frame.index))
            if self._spooler is not None:
                angle = frame.angle
                if (angle is None or not np.isfinite(angle)) and self.n_angles_hint:
                    angle = frame.index * np.pi / self.n_angles_hint
                if angle is not None and np.isfinite(angle):  # without one it is an error later
                    self._spooler.put(dataclasses.replace(frame, angle=float(angle)))
            elif self.keep_frames:
                self._raw[int(frame.index)] = frame
            if self._queue_full(frame.nbytes):
                counts["dropped"] += 1
                return
        with self._count_lock:  # fields are few and always wanted: never dropped
            self._queued_bytes += frame.nbytes
        self._queue.put(frame)

    def _reconstruct_loop(self):
        max_batch = 64
        done = False
        while not done:
            try:
                first = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            batch = [first]
            while len(batch) < max_batch and batch[-1] is not _END:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if batch[-1] is _END:
                done = True
                batch.pop()
            if batch:
                with self._count_lock:
                    self._queued_bytes -= sum(frame.nbytes for frame in batch)
                try:
                    self._process(batch)
                except Exception as exc:  # noqa: BLE001 - e.g. out of memory: say so, go on
                    self._error(f"reconstruction: {type(exc).__name__}: {exc}")
                max_batch = self._batch_limit()
        if self._spooler is not None:
            self._close_spool()
        if not self._stopping.is_set():
            state = getattr(self.source, "state", "ended")
            self._state = "lost" if state == "lost" else "ended"

    def _close_spool(self):
        """Finish the spool file (the frames queued for it first): flats, darks, metadata."""
        fields = {kind: np.stack([frame.data for frame in self._sets[kind]])
                  if self._sets[kind] else None for kind in ("flat", "dark")}
        self._spooler.close(flats=fields["flat"], darks=fields["dark"], pixel_size=self.pixel_size,
                            attrs={"live_source": str(getattr(self.source, "description",
                                                              type(self.source).__name__)),
                                   "live_center": float(self.center),
                                   "live_projections": int(self._counts["projections"]),
                                   "live_spool_skipped": int(self._spooler.skipped),
                                   "note": "raw frames of a tomolab live session, in arrival "
                                           "order (/exchange/frame_index: their numbers)"})

    def _batch_limit(self) -> int:
        """Projections filtered at once: the FFT's working memory within a tenth of free memory."""
        from tomolab.devices import batch_size
        from tomolab.recon import padded_width

        if self._shape is None:
            return 64
        rows, cols = self._shape
        per_frame = rows * (cols * 4 * 3 + padded_width(cols) * 8 * 3)
        return batch_size(per_frame, backend=self.backend, count=64, fraction=0.1)

    # -- reconstruction (under the lock) ---------------------------------------------
    def _process(self, batch):
        with self._lock:
            projections = []
            fields_changed = False
            for frame in batch:
                if frame.kind == "projection":
                    projections.append(frame)
                    for kind in self._set_open:
                        self._set_open[kind] = False
                else:
                    if not self._set_open[frame.kind]:  # a projection came since: a new set
                        self._sets[frame.kind] = []
                        self._set_open[frame.kind] = True
                    self._sets[frame.kind].append(frame)
                    fields_changed = True
            if fields_changed:
                self._update_fields()
            if self.normalize and self._fields is None:
                self._pending.extend(projections)
                return
            if self._pending:
                projections, self._pending = self._pending + projections, []
            if projections:
                self._ingest(projections)
                now = time.perf_counter()
                self._last_update = now
                for frame in projections:
                    self._latencies.append(now - frame.arrival)

    def _update_fields(self):
        """Mean dark and flat of the current sets (as the offline path averages them)."""
        from tomolab.prep import defective_pixels

        if not self.normalize or not self._sets["flat"]:
            return
        xp = self._xp

        def mean(frames):
            total = np.zeros(frames[0].data.shape, np.float64)
            for frame in frames:
                total += frame.data
            return (total / len(frames)).astype(np.float32)

        flat = mean(self._sets["flat"])
        dark = mean(self._sets["dark"]) if self._sets["dark"] else None
        bad = defective_pixels(flat, dark)
        # the defective pixels stay on the host, where repair_pixels reads them
        self._fields = (xp.asarray(flat), None if dark is None else xp.asarray(dark), bad)
        self._fields_version += 1
        if self._sums is not None and self._high:
            self._renormalise()

    def _renormalise(self):
        """New flats or darks: correct the buffered projections again from their raw frames."""
        used = [k for k in range(self._high) if self._slot_index[k] >= 0]
        if not self.keep_frames:
            self._renormalised_from_raw = False
            return
        for start in range(0, len(used), 64):
            slots = used[start:start + 64]
            frames = self._raw_frames([int(self._slot_index[k]) for k in slots])
            if frames is None:  # the spool failed or left some out: they keep the old flats
                self._renormalised_from_raw = False
                continue
            self._ring[slots] = self._filtered(frames)
            self._slot_version[slots] = self._fields_version
        self._recompute(("xy", "xz", "yz"))

    def _raw_frames(self, indices):
        """The raw projections ``indices`` as frames (from the spool or memory), or None."""
        if self._spooler is None:
            return [self._raw[i] for i in indices]
        data = self._spooler.read(indices)
        if data is None:
            return None
        return [Frame("projection", i, None, d) for i, d in zip(indices, data)]

    def _allocate(self):
        """The sums and an empty ring buffer, at the first projection."""
        from tomolab.devices import batch_size

        xp = self._xp
        rows, cols = self._shape
        size = self.size
        if self.z is None:
            self.z = rows // 2
        elif self.z >= rows:
            self._error(f"z={self.z} is outside the detector's {rows} rows; the middle row is shown")
            self.z = rows // 2
        if self.center > cols - 1:
            self._error(f"center={self.center} is outside the detector's {cols} columns; "
                        f"set_center() to a column between 0 and {cols - 1}")
        if self.point is None:
            self.point = (size // 2, size // 2)
        elif max(self.point) >= size:
            self._error(f"point={self.point} is outside the {size}² grid; its middle is shown")
            self.point = (size // 2, size // 2)
        per_angle = rows * cols * 4
        limit = self._buffer_asked or batch_size(per_angle, backend=self.backend,
                                                 fraction=BUFFER_FRACTION)
        self._capacity = int(limit)
        self._grow(min(self._capacity, max(64, self.n_angles_hint or 0)))
        self._sums = {"xy": xp.zeros((size, size), xp.float32),
                      "xz": xp.zeros((rows, size), xp.float32),
                      "yz": xp.zeros((rows, size), xp.float32)}

    def _grow(self, slots: int):
        xp = self._xp
        rows, cols = self._shape
        old = 0 if self._ring is None else self._ring.shape[0]
        if slots <= old:
            return
        ring = xp.zeros((slots, rows, cols), xp.float32)
        if old:
            ring[:old] = self._ring
        self._ring = ring
        self._slot_angle = np.concatenate([self._slot_angle, np.zeros(slots - old)])
        self._slot_index = np.concatenate([self._slot_index, np.full(slots - old, -1, np.int64)])
        self._slot_version = np.concatenate([self._slot_version, np.zeros(slots - old, np.int64)])

    def _take_slot(self) -> int | None:
        if self._free:
            return self._free.pop()
        if self._high < self._ring.shape[0]:
            self._high += 1
            return self._high - 1
        if self._ring.shape[0] < self._capacity:
            self._grow(min(self._capacity, 2 * self._ring.shape[0]))
            self._high += 1
            return self._high - 1
        return None

    def _ring_full_message(self) -> str:
        rows, cols = self._shape
        gigabytes = self._capacity * rows * cols * 4 / 1e9
        where = "memory" if self._xp is np else "GPU memory"
        return (f"ring buffer full at {self._capacity} projections of {rows}×{cols} "
                f"({gigabytes:.1f} GB, {BUFFER_FRACTION:.0%} of the free {where} when the scan "
                f"began): later projections are not in the slices (stats['dropped']); to keep "
                f"them, free {where} before starting, give buffer_angles= (a larger buffer), or "
                f"use window='sliding'; to_scan() still has every frame")

    def _angle_of(self, frame: Frame) -> float | None:
        if frame.angle is not None and np.isfinite(frame.angle):
            return float(frame.angle)
        if self.n_angles_hint:
            return frame.index * np.pi / self.n_angles_hint
        self._error(f"projection {frame.index}: no angle, and no n_angles_hint to place it; ignored")
        return None

    def _filtered(self, frames):
        """Raw frames → corrected, ``-log``, filtered projections (b, rows, cols) on the device."""
        from tomolab.prep import minus_log, normalize
        from tomolab.recon import filter_sinograms

        xp = self._xp
        raw = xp.empty((len(frames),) + self._shape, dtype=self._dtype)
        for i, frame in enumerate(frames):
            if xp is np:
                raw[i] = frame.data
            else:  # straight from the frame to the device, in the detector's dtype
                raw[i].set(np.ascontiguousarray(frame.data, dtype=self._dtype))
        if self.normalize:
            flat, dark, bad = self._fields
            data = normalize(raw, flat, dark, bad_pixels=bad)
        else:
            data = raw.astype(np.float32)
        if self.log:
            data = minus_log(data)
        if xp is not np:
            return filter_sinograms(data, filter=self.filter, pad_mode=self.pad_mode)
        import scipy.fft

        workers = -1 if data.size >= _PARALLEL_WORK // 64 else 1  # an FFT is ~64× an interpolation
        with scipy.fft.set_workers(workers):
            return filter_sinograms(data, filter=self.filter, pad_mode=self.pad_mode)

    def _ingest(self, frames):
        if self._sums is None:
            self._allocate()
        placed = [(frame, self._angle_of(frame)) for frame in frames]
        placed = [(frame, angle) for frame, angle in placed if angle is not None]
        if self.window == "sliding":
            placed = self._slide(placed)
        slots, angles, kept = [], [], []
        for frame, angle in placed:
            slot = self._take_slot()
            if slot is None:
                if not self._counts["dropped_ring"]:
                    self._error(self._ring_full_message())
                self._counts["dropped"] += 1
                self._counts["dropped_ring"] += 1
                continue
            slots.append(slot)
            angles.append(angle)
            kept.append(frame)
        if not kept:
            return
        filtered = self._filtered(kept)
        self._ring[slots] = filtered
        self._slot_angle[slots] = angles
        self._slot_index[slots] = [int(frame.index) for frame in kept]
        self._slot_version[slots] = self._fields_version
        self._counts["processed_bytes"] += sum(frame.nbytes for frame in kept)
        self._add(filtered, np.asarray(angles), 1.0)
        self.version += 1
        if self.window == "sliding":
            self._since_resync += len(kept)
            if self._since_resync >= max(self._in_buffer(), 64):
                self._recompute(("xy", "xz", "yz"))  # the sums lose nothing to adds and subtracts
        if self._xp is not np:
            self._xp.cuda.get_current_stream().synchronize()

    def _slide(self, placed):
        """Sliding window: keep the last 180°; evict what fell out, drop what arrives too late."""
        if placed:
            self._newest_angle = max(self._newest_angle, max(angle for _, angle in placed))
        oldest = self._newest_angle - np.pi + _ANGLE_TOLERANCE
        kept = []
        for frame, angle in placed:
            if angle <= oldest:
                self._counts["late"] += 1
            else:
                kept.append((frame, angle))
        out = [k for k in range(self._high) if self._slot_index[k] >= 0 and self._slot_angle[k] <= oldest]
        if out:
            self._add(self._ring[out], self._slot_angle[out], -1.0)
            self._ring[out] = 0
            self._slot_index[out] = -1
            self._slot_angle[out] = 0.0
            self._free.extend(out)
        return kept

    def _plane_points(self, which=("xz", "yz")):
        """The voxel offsets ``(X, Y)`` of the named vertical planes, one after the other."""
        from tomolab.recon import plane_points

        y, x = self.point
        at = {"xz": {"y": y}, "yz": {"x": x}}
        parts = [plane_points(self.size, **at[name]) for name in which]
        return np.concatenate([X for X, _ in parts]), np.concatenate([Y for _, Y in parts])

    def _add(self, filtered, angles, sign: float):
        """Add (or take away) the contributions of filtered projections ``(b, rows, cols)``."""
        from tomolab.recon import backproject, backproject_points

        sums, size = self._sums, self.size
        with _kernel_threads(self._xp, filtered.shape[0] * filtered.shape[1] * size * 3):
            xy = backproject(filtered[:, self.z][None], angles, center=self.center, size=size)[0]
            # both planes in one pass: each filtered row is read once for the two
            X, Y = self._plane_points()
            planes = backproject_points(filtered, angles, center=self.center, X=X, Y=Y)
        if sign > 0:
            sums["xy"] += xy
            sums["xz"] += planes[:, :size]
            sums["yz"] += planes[:, size:]
        else:
            sums["xy"] -= xy
            sums["xz"] -= planes[:, :size]
            sums["yz"] -= planes[:, size:]

    def _recompute(self, which):
        """The named sums again from the whole buffer (empty slots hold zeros)."""
        from tomolab.recon import backproject, backproject_points

        xp, sums, size = self._xp, self._sums, self.size
        ring, angles = self._ring[:self._high], self._slot_angle[:self._high]
        planes = [name for name in ("xz", "yz") if name in which]
        with _kernel_threads(xp, ring.shape[0] * ring.shape[1] * size * len(which)):
            if "xy" in which:
                sums["xy"] = backproject(ring[:, self.z][None], angles, center=self.center,
                                         size=size)[0]
            if planes:
                X, Y = self._plane_points(planes)
                both = backproject_points(ring, angles, center=self.center, X=X, Y=Y)
                for k, name in enumerate(planes):
                    sums[name] = xp.ascontiguousarray(both[:, k * size:(k + 1) * size])
        self._since_resync = 0
        self.version += 1
        if xp is not np:
            xp.cuda.get_current_stream().synchronize()

    def _in_buffer(self) -> int:
        return int(np.count_nonzero(self._slot_index[:self._high] >= 0))

    # -- results ---------------------------------------------------------------------
    @property
    def n_projections(self) -> int:
        """Projections in the slices now."""
        with self._lock:
            return 0 if self._ring is None else self._in_buffer()

    def _missing(self) -> int:
        expected = max(self._max_index + 1, self.n_angles_hint or 0)
        return max(0, expected - self._counts["projections"])

    @property
    def stats(self) -> dict:
        """Counters and timings of the session (a new dict each time; any thread may read it).

        ``received`` (frames, all kinds, duplicates included), ``projections``
        (distinct), ``in_slices``, ``dropped`` (not in the slices: queue full,
        or ring buffer full in ``"accumulate"`` mode), ``late`` (sliding window:
        older than the window when they came), ``duplicates``, ``missing``
        (projection indices not received below the highest, or below
        ``n_angles_hint``), ``errors`` (bad frames and source problems; the
        session went on), ``last_error``, ``ingest_gbps`` (bytes of frames in
        the slices per second, from the first arrival to the last update),
        ``latency_last``/``latency_median``/``latency_p95`` (seconds from a
        frame's arrival to slices that include it), ``state``, ``reason``,
        ``spool`` (where the raw frames are: ``"waiting"``, ``"writing"``,
        ``"complete"``, ``"failed"``; ``"memory"`` with ``spool=False``,
        ``"off"`` with ``keep_frames=False``) and ``spool_path``.
        """
        counts = dict(self._counts)
        errors = list(self._errors)
        source_errors = list(getattr(self.source, "errors", []))
        latencies = np.asarray(list(self._latencies))
        elapsed = None
        if self._first_arrival is not None and self._last_update is not None:
            elapsed = self._last_update - self._first_arrival
        return {
            "state": self._state,
            "reason": self._end_reason,
            "received": counts["received"],
            "projections": counts["projections"],
            "in_slices": self.n_projections,
            "pending": len(self._pending),
            "dropped": counts["dropped"],
            "late": counts["late"],
            "duplicates": counts["duplicates"],
            "missing": self._missing(),
            "errors": counts["errors"] + int(getattr(self.source, "error_count", len(source_errors))),
            "last_error": (errors or source_errors or [""])[-1],
            "ingest_gbps": counts["processed_bytes"] / elapsed / 1e9 if elapsed else 0.0,
            "latency_last": float(latencies[-1]) if latencies.size else None,
            "latency_median": float(np.median(latencies)) if latencies.size else None,
            "latency_p95": float(np.percentile(latencies, 95)) if latencies.size else None,
            "spool": self._spool_state(),
            "spool_path": "" if self._spooler is None else str(self._spooler.path),
        }

    def _spool_state(self) -> str:
        if self._spooler is not None:
            return self._spooler.state
        if self._spool_where is not False:  # not started yet
            return "waiting"
        return "memory" if self.keep_frames else "off"

    def errors(self) -> list[str]:
        """Every problem noted, from the source and from the reconstruction, oldest first."""
        return list(getattr(self.source, "errors", [])) + list(self._errors)

    def snapshot(self):
        """The three slices now, as an :class:`xarray.Dataset` (``xy``, ``xz``, ``yz``).

        Values in 1/m when the pixel size is known (per pixel otherwise), as
        :func:`tomolab.reconstruct`; coordinates ``x``, ``y``, ``z`` in metres
        (pixels without a pixel size) and ``row`` (detector rows); attrs
        record every parameter, and that the slices reconstruct what arrived
        (``n_projections``, ``missing``, ``dropped``).

        Returns None before the first projection is in the slices.
        """
        import xarray as xr

        from tomolab.api.provenance import provenance
        from tomolab.api.validate import plane_coords
        from tomolab.arrays import to_numpy

        with self._lock:
            if self._sums is None:
                return None
            n = self._in_buffer()
            slices = {name: to_numpy(value).copy() for name, value in self._sums.items()}
            used = self._slot_index[:self._high] >= 0
            angles = self._slot_angle[:self._high][used]
            z, point, center, size = self.z, self.point, self.center, self.size
            renormalised = self._renormalised_from_raw
        scale = np.float32(np.pi / n) if n else np.float32(0)
        unit = self.pixel_size or 1.0
        for value in slices.values():
            value *= scale
            if self.pixel_size:
                value *= np.float32(1.0 / self.pixel_size)
        rows = np.arange(self._shape[0])
        coords = {name: xr.Variable(*spec) for name, spec in plane_coords(size, self.pixel_size).items()}
        coords["z"] = xr.Variable("z", rows * unit, {"units": "m" if self.pixel_size else "pixel",
                                                      "long_name": "height (detector row × pixel size)"})
        coords["row"] = xr.Variable("z", rows, {"units": "pixel", "long_name": "detector row"})
        stats = self.stats
        n_expected = max(self._max_index + 1, self.n_angles_hint or 0)
        attrs = {
            "long_name": "linear attenuation coefficient",
            "units": "1/m" if self.pixel_size else "1/pixel",
            **provenance(xr.Dataset(), backend=self.backend, normalize=self.normalize, log=self.log,
                         center=float(center), center_source="given", algorithm="fbp",
                         filter=self.filter, pad_mode=self.pad_mode, precision="single",
                         pixel_size=float(self.pixel_size or 0.0), size=int(size),
                         z=int(z), point_y=int(point[0]), point_x=int(point[1]),
                         window=self.window, n_projections=int(n), n_angles=int(n),
                         n_expected=int(n_expected), missing=int(stats["missing"]),
                         dropped=int(stats["dropped"]), late=int(stats["late"]),
                         duplicates=int(stats["duplicates"]), errors=int(stats["errors"]),
                         state=stats["state"],
                         angle_min=float(angles.min()) if angles.size else 0.0,
                         angle_max=float(angles.max()) if angles.size else 0.0,
                         source=str(getattr(self.source, "description", type(self.source).__name__))),
            "note": (f"live reconstruction of the {n} projections that arrived"
                     + (f" ({stats['missing']} missing)" if stats["missing"] else "")
                     + (f", {stats['dropped']} dropped from the slices" if stats["dropped"] else "")
                     + ("" if renormalised else "; some were normalised with earlier flats")),
        }
        names = {"xy": ("y", "x"), "xz": ("z", "x"), "yz": ("z", "y")}
        data = {name: xr.DataArray(slices[name], dims=dims, attrs={"units": attrs["units"]})
                for name, dims in names.items()}
        return xr.Dataset(data, coords=coords, attrs=attrs)

    def to_scan(self):
        """The frames that arrived as a scan, read lazily from the spool.

        Projections by index (those dropped from the slices included; a
        duplicate counts once, as it arrived first), the latest set of flats
        and of darks, and the pixel size: what :func:`tomolab.reconstruct` or
        :func:`tomolab.reconstruct_to` of everything that arrived needs.

        With a spool (the default) this is :func:`tomolab.open_scan` of the
        finished spool file: lazy, nothing is copied. The file holds the
        projections in the order they arrived (appending is what lets each
        frame go to disk at once); when they arrived out of order, the scan
        puts them back in index order (a lazy selection), as the memory path
        does. Available once the scan has ended or the session was stopped
        (the spool is then complete). With ``spool=False`` the projections are
        stacked from memory into one new array (a second copy of them).
        Needs ``keep_frames=True``.
        """
        from tomolab.io import from_arrays

        if not self.keep_frames:
            raise ParameterError("the raw frames were not kept", where="keep_frames", value=False,
                                 fix="make the LiveReconstruction with keep_frames=True")
        if self._spool_where is not False:
            return self._spooled_scan()
        with self._lock:
            frames = [self._raw[k] for k in sorted(self._raw)]
            flats = [frame.data for frame in self._sets["flat"]]
            darks = [frame.data for frame in self._sets["dark"]]
        if not frames:
            raise ParameterError("no projection has arrived yet", where="to_scan", value=0,
                                 fix="wait for frames (live.stats['projections'])")
        angles = np.array([self._angle_of(frame) for frame in frames], dtype=np.float64)
        return from_arrays(np.stack([frame.data for frame in frames]), angles,
                           flats=np.stack(flats) if flats else None,
                           darks=np.stack(darks) if darks else None, pixel_size=self.pixel_size,
                           attrs={"source_file": "", "live_source": str(
                               getattr(self.source, "description", type(self.source).__name__))})

    def _spooled_scan(self):
        from tomolab.errors import OutputError
        from tomolab.io import open_scan
        from tomolab.live._spool import frame_order

        spooler = self._spooler
        state = "waiting" if spooler is None else spooler.state
        if state == "failed":
            raise OutputError(f"the spool of raw frames failed: {spooler.error}",
                              where=str(spooler.path),
                              fix="give the next session spool= a folder on a disk with room (or "
                                  "spool=False to keep a small scan in memory)")
        if state == "waiting" or spooler.written == 0:
            raise ParameterError("no projection has arrived yet", where="to_scan", value=0,
                                 fix="wait for frames (live.stats['projections'])")
        if state == "writing" or self.running:
            raise ParameterError("the spool is still being written", where="to_scan", value=state,
                                 fix="wait for the end of the scan (live.wait()) or stop() the "
                                     "session first")
        indices = sorted(spooler.positions, key=spooler.positions.get)
        order = frame_order(indices)
        with warnings.catch_warnings():
            if order is not None:  # put back in order here
                warnings.filterwarnings("ignore", message=".*angles are not in order")
            scan = open_scan(spooler.path)
        return scan if order is None else scan.isel(angle=order)

    def __repr__(self):
        s = self.stats
        return (f"<LiveReconstruction {s['state']}: {s['in_slices']} projections in the slices, "
                f"{s['dropped']} dropped, {s['missing']} missing, centre {self.center}>")
