"""The frame contract shared by every live source and the live reconstruction.

A *source* hands out :class:`Frame` objects one at a time through
:meth:`FrameSource.receive`; it never raises on a bad message (that is
recorded in :attr:`FrameSource.errors` and the session goes on); it raises
:class:`EndOfScan` once the scan has ended (an ``"end"`` message, the writer
closed its file) or the source was lost (publisher gone, file vanished), and
says which in :attr:`FrameSource.state`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

__all__ = ["FRAME_KINDS", "SOURCE_STATES", "EndOfScan", "Frame", "FrameSource", "MemorySource"]

#: the kinds of frame a scan carries
FRAME_KINDS = ("dark", "flat", "projection")

#: what a source can be doing: waiting for its first frame, receiving, ended
#: normally (``"end"`` message, file closed), or lost (publisher gone, file
#: vanished, too long without a frame)
SOURCE_STATES = ("waiting", "receiving", "ended", "lost")


class EndOfScan(Exception):
    """Raised by :meth:`FrameSource.receive` once no more frames will come.

    ``reason`` says why, in words a user understands ("end message after
    1800 projections", "publisher silent for 30 s").
    """

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Frame:
    """One detector frame as it arrived.

    Attributes
    ----------
    kind : str
        ``"dark"``, ``"flat"`` or ``"projection"``.
    index : int
        The frame's number in the scan (per kind, as the acquisition numbers it).
    angle : float or None
        Rotation angle in radians (projections only).
    data : numpy.ndarray
        The raw pixels, 2-D ``(row, col)``, in the detector's dtype (often uint16).
    arrival : float
        ``time.perf_counter()`` when the source received it (latency is measured from here).

    Examples
    --------
    >>> import numpy as np
    >>> frame = Frame("projection", 0, 0.0, np.zeros((4, 6), np.uint16), arrival=0.0)
    >>> frame.shape, frame.nbytes
    ((4, 6), 48)
    """

    kind: str
    index: int
    angle: float | None
    data: np.ndarray
    arrival: float = field(default_factory=time.perf_counter)

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.data.shape)

    @property
    def nbytes(self) -> int:
        return int(self.data.nbytes)


class FrameSource:
    """Base class of the live sources: bookkeeping shared by all of them.

    Subclasses implement :meth:`_next` (one frame, ``None`` after ``timeout``
    seconds without one, or raise :class:`EndOfScan`) and may override
    :meth:`close`. A source is used by one consumer thread; :attr:`errors`
    and the counters may be read from any thread.

    Attributes
    ----------
    state : str
        One of :data:`SOURCE_STATES`.
    errors : list of str
        One line per bad message or problem ("frame 12: header is not JSON ..."),
        newest last, at most :attr:`max_errors` kept.
    frames, bytes : int
        Frames and bytes of pixels handed out so far.
    """

    max_errors = 1000
    description = "a frame source"

    def __init__(self):
        self.state = "waiting"
        self.errors: list[str] = []
        self.error_count = 0
        self.frames = 0
        self.bytes = 0
        self._lock = threading.Lock()

    def receive(self, timeout: float = 0.1) -> Frame | None:
        """The next frame, or ``None`` when none came within ``timeout`` seconds.

        Raises
        ------
        EndOfScan
            Once the scan ended or the source was lost (see :attr:`state`).
        """
        if self.state in ("ended", "lost"):
            raise EndOfScan(self._end_reason)
        try:
            frame = self._next(timeout)
        except EndOfScan as end:
            self._end_reason = end.reason
            if self.state not in ("ended", "lost"):
                self.state = "ended"
            raise
        if frame is not None:
            with self._lock:
                self.state = "receiving"
                self.frames += 1
                self.bytes += frame.nbytes
        return frame

    def __iter__(self):
        """Every frame until the end of the scan (blocks while waiting)."""
        while True:
            try:
                frame = self.receive(0.1)
            except EndOfScan:
                return
            if frame is not None:
                yield frame

    def record_error(self, message: str):
        """Note a bad message; the session goes on."""
        with self._lock:
            self.error_count += 1
            self.errors.append(message)
            del self.errors[:-self.max_errors]

    def _next(self, timeout: float) -> Frame | None:
        raise NotImplementedError

    def close(self):
        """Release sockets and files; further :meth:`receive` calls end the scan."""
        if self.state not in ("ended", "lost"):
            self.state = "ended"
            self._end_reason = "source closed"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    _end_reason = "source closed"


class MemorySource(FrameSource):
    """Frames handed in by the program itself (tests, replays, other transports).

    :meth:`put` may be called from another thread; :meth:`finish` ends the scan.

    Examples
    --------
    >>> import numpy as np
    >>> source = MemorySource()
    >>> source.put(Frame("flat", 0, None, np.ones((2, 3), np.uint16)))
    >>> source.finish()
    >>> [frame.kind for frame in source], source.state
    (['flat'], 'ended')
    """

    description = "frames put by the program"

    def __init__(self, frames=()):
        super().__init__()
        self._queue: deque = deque(frames)
        self._ready = threading.Condition()
        self._finished = False

    def put(self, frame: Frame):
        with self._ready:
            self._queue.append(frame)
            self._ready.notify()

    def finish(self, reason: str = "the program finished the scan"):
        with self._ready:
            self._finished = reason
            self._ready.notify()

    def _next(self, timeout: float) -> Frame | None:
        with self._ready:
            if not self._queue and not self._finished:
                self._ready.wait(timeout)
            if self._queue:
                return self._queue.popleft()
            if self._finished:
                raise EndOfScan(self._finished)
            return None
