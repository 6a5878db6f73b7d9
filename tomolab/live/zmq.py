"""Frames over ZeroMQ: the wire protocol, its parser and :class:`ZmqSource`.

One message per frame, in two ZeroMQ frames (a *multipart* message):

1. a UTF-8 JSON object: ``{"type": "projection", "index": 12, "angle": 0.0209,
   "shape": [2048, 2048], "dtype": "uint16"}`` (``"type"`` is ``"dark"``,
   ``"flat"``, ``"projection"`` or ``"end"``; ``"angle"`` in radians, for
   projections only; other keys are ignored);
2. the pixels, ``rows * cols * itemsize`` bytes in C order (row after row).

``"end"`` closes the scan and has no pixels (a second, empty frame is
accepted). ``docs/live.md`` has the full description and a publisher.
pyzmq is imported only when a socket is made (``pip install tomolab[live]``).
"""

from __future__ import annotations

import json
import math
import threading
import time

import numpy as np

from tomolab.errors import ParameterError
from tomolab.live._frames import FRAME_KINDS, EndOfScan, Frame, FrameSource

__all__ = ["MESSAGE_TYPES", "PATTERNS", "ZmqSource", "parse_header", "parse_message"]

#: the values of a header's ``"type"``
MESSAGE_TYPES = (*FRAME_KINDS, "end")
#: the receiving socket patterns: ``"pull"`` (PUSH → PULL, no frame lost) or ``"sub"`` (PUB → SUB)
PATTERNS = ("pull", "sub")

_PROTOCOL = "see docs/live.md (the wire protocol)"
_REQUIRED = ("type", "index", "shape", "dtype")


def _header_error(what, key, value, fix):
    return ParameterError(what, where=f"header[{key!r}]" if key else "header", value=value,
                          fix=fix)


def _index(header):
    index = header["index"]
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise _header_error("index must be a whole number from 0", "index", index,
                            "send the frame's number in the scan, counted per type from 0")
    return index


def _angle(header, kind):
    angle = header.get("angle")
    if kind != "projection":
        return None
    if angle is None:
        raise _header_error("a projection needs its rotation angle", "angle", None,
                            'add "angle": the rotation angle in radians')
    if isinstance(angle, bool) or not isinstance(angle, (int, float)) or not math.isfinite(angle):
        raise _header_error("angle must be a finite number (radians)", "angle", angle,
                            "send the rotation angle in radians as a JSON number")
    return float(angle)


def _shape(header):
    shape = header["shape"]
    if (not isinstance(shape, list) or len(shape) != 2
            or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in shape)):
        raise _header_error("shape must be two positive whole numbers [rows, cols]", "shape",
                            shape, 'send e.g. "shape": [2048, 2048]')
    return tuple(shape)


def _dtype(header):
    name = header["dtype"]
    try:
        dtype = np.dtype(name) if isinstance(name, str) else None
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "uif" or dtype.itemsize > 8:
        raise _header_error("dtype must name a numeric numpy type", "dtype", name,
                            'send e.g. "uint16", "uint8", "uint32" or "float32"')
    return dtype


def parse_header(raw) -> dict:
    """Decode and check a header (bytes or a buffer); the dict with every key checked.

    Returns ``{"type", "index", "angle", "shape", "dtype"}`` with ``angle``
    a float (projections) or None, ``shape`` a tuple and ``dtype`` a
    :class:`numpy.dtype`. ``"end"`` needs only ``"type"``. Raises
    :class:`~tomolab.errors.ParameterError` naming the field, the value and the fix.

    Examples
    --------
    >>> parse_header(b'{"type": "flat", "index": 3, "shape": [2, 4], "dtype": "uint16"}')["shape"]
    (2, 4)
    >>> parse_header(b'{"type": "flat", "index": 3, "shape": [2, 4], "dtype": "uint17"}')
    Traceback (most recent call last):
    ...
    tomolab.errors.ParameterError: header['dtype']='uint17': dtype must name a numeric numpy type; fix: send e.g. "uint16", "uint8", "uint32" or "float32"
    """
    try:
        text = bytes(raw).decode("utf-8")
        header = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        shown = bytes(raw[:40]) if len(raw) > 40 else bytes(raw)
        reason = "not UTF-8" if isinstance(exc, UnicodeDecodeError) else f"not JSON ({exc})"
        raise _header_error(f"the header is {reason}", None, shown,
                            f"send a UTF-8 JSON object as the first frame; {_PROTOCOL}") from None
    if not isinstance(header, dict):
        raise _header_error("the header is not a JSON object", None, header,
                            f'send {{"type": ..., "index": ..., ...}}; {_PROTOCOL}')
    if "type" not in header:
        raise _header_error("the header has no type", "type", None,
                            f'add "type": one of {", ".join(MESSAGE_TYPES)}')
    kind = header["type"]
    if kind not in MESSAGE_TYPES:
        raise _header_error("unknown message type", "type", kind,
                            f"send one of: {', '.join(MESSAGE_TYPES)}")
    if kind == "end":
        return {"type": "end", "index": header.get("index"), "angle": None, "shape": None,
                "dtype": None}
    missing = [key for key in _REQUIRED if key not in header]
    if missing:
        raise _header_error(f"the {kind} header has no {missing[0]}", missing[0], None,
                            f"send every key: {', '.join(_REQUIRED)}"
                            + (" and angle (radians)" if kind == "projection" else ""))
    return {"type": kind, "index": _index(header), "angle": _angle(header, kind),
            "shape": _shape(header), "dtype": _dtype(header)}


def _buffer(part):
    """The bytes of one message part without copying (bytes, a zmq.Frame or any buffer)."""
    return memoryview(getattr(part, "buffer", part))


def parse_message(frames, *, arrival: float | None = None) -> Frame:
    """Turn one message (header, pixels) into a :class:`~tomolab.live.Frame`.

    Parameters
    ----------
    frames : sequence
        The message's parts: ``bytes``, ``zmq.Frame`` (received with
        ``copy=False``) or any object with the buffer protocol.
    arrival : float, optional
        ``time.perf_counter()`` when it was received (default: now).

    Returns
    -------
    Frame
        Its ``data`` is a read-only view of the pixel buffer (no copy), or a
        native-order, aligned copy when the buffer is not one (big-endian
        dtypes, a misaligned buffer).

    Raises
    ------
    tomolab.live.EndOfScan
        For an ``"end"`` message.
    tomolab.errors.ParameterError
        For anything malformed, naming the header field, the value and the fix.

    Examples
    --------
    >>> import json, numpy as np
    >>> header = {"type": "projection", "index": 0, "angle": 0.5, "shape": [2, 3],
    ...           "dtype": "uint16"}
    >>> frame = parse_message([json.dumps(header).encode(), np.arange(6, dtype=np.uint16).tobytes()])
    >>> frame.kind, frame.angle, frame.data.tolist()
    ('projection', 0.5, [[0, 1, 2], [3, 4, 5]])
    >>> parse_message([json.dumps(header).encode(), b"123"])
    Traceback (most recent call last):
    ...
    tomolab.errors.ParameterError: pixels=3: 3 bytes of pixels, but shape [2, 3] of uint16 needs 12; fix: send rows * cols * itemsize bytes in C order, or correct the header's shape or dtype
    """
    arrival = time.perf_counter() if arrival is None else arrival
    parts = list(frames)
    if not parts:
        raise _header_error("empty message", None, None, f"send a header and the pixels; {_PROTOCOL}")
    header = parse_header(_buffer(parts[0]))
    kind = header["type"]
    if kind == "end":
        if len(parts) > 2 or (len(parts) == 2 and _buffer(parts[1]).nbytes):
            raise ParameterError(f"an end message has {len(parts) - 1} pixel frame(s) with data",
                                 where="message", value=len(parts),
                                 fix="send the end header alone (or with one empty frame)")
        raise EndOfScan("end message")
    if len(parts) != 2:
        raise ParameterError(f"a {kind} message has {len(parts)} part(s), expected 2", where="message",
                             value=len(parts), fix=f"send [header, pixels]; {_PROTOCOL}")
    pixels = _buffer(parts[1])
    rows, cols = header["shape"]
    dtype = header["dtype"]
    expected = rows * cols * dtype.itemsize
    if pixels.nbytes != expected:
        raise ParameterError(f"{pixels.nbytes} bytes of pixels, but shape [{rows}, {cols}] of "
                             f"{dtype.name} needs {expected}", where="pixels", value=pixels.nbytes,
                             fix="send rows * cols * itemsize bytes in C order, or correct the "
                                 "header's shape or dtype")
    data = np.frombuffer(pixels.cast("B") if pixels.format != "B" else pixels,
                         dtype=dtype).reshape(rows, cols)
    if not dtype.isnative or not data.flags.aligned:
        data = np.ascontiguousarray(data, dtype=dtype.newbyteorder("="))
        data.flags.writeable = False
    return Frame(kind, header["index"], header["angle"], data, arrival=arrival)


class ZmqSource(FrameSource):
    """Frames from a ZeroMQ socket (PULL by default, or SUB), in the protocol above.

    Parameters
    ----------
    address : str
        ``tcp://HOST:PORT``, ``ipc:///path`` ... With ``bind=True`` a port may
        be ``*`` (see :attr:`address` for the one given).
    pattern : {"pull", "sub"}
        ``"pull"``: the publisher PUSHes, nothing is lost (it waits when the
        receiver falls behind). ``"sub"``: the publisher PUBlishes to any
        number of viewers; a viewer that falls behind more than
        ``high_water_mark`` messages loses frames (see :attr:`dropped` in the
        reconstruction, the missing indices).
    bind : bool
        Bind the address (the publisher connects) instead of connecting to it.
    topic : bytes or str
        SUB only: receive messages whose first part starts with it. With a
        non-empty topic the publisher sends the topic as an extra first part
        (``[topic, header, pixels]``), which is dropped.
    timeout_lost : float or None
        Seconds without a message, once frames came, after which the
        publisher is taken for lost (:attr:`state` ``"lost"``). ``None``: never.
    high_water_mark : int
        Messages queued on the receiving side before ZeroMQ stops reading
        (PULL: the publisher waits; SUB: frames are dropped). 0: no limit.
        It bounds memory: 256 frames of 2048² uint16 are 2 GB.
    monitor : bool
        Also take the publisher for lost as soon as its connection closes
        (its process died or it closed the socket) without an ``"end"``
        message, once every frame queued before has been handed out and no
        connection came back within ``min(1, timeout_lost)`` seconds.

    Attributes
    ----------
    duplicates : int
        Frames whose (type, index) came before; they are handed out (the
        reconstruction decides).
    out_of_order : int
        Frames whose index is below an index of the same type that came before.
    messages : int
        Messages received, good and bad.

    Examples
    --------
    >>> import zmq, json, numpy as np
    >>> with ZmqSource("tcp://127.0.0.1:*", bind=True) as source:
    ...     push = zmq.Context.instance().socket(zmq.PUSH)
    ...     _ = push.connect(source.address)
    ...     header = {"type": "flat", "index": 0, "shape": [2, 2], "dtype": "uint8"}
    ...     push.send_multipart([json.dumps(header).encode(), bytes(4)])
    ...     push.send_multipart([b'{"type": "end"}'])
    ...     [frame.kind for frame in source], source.state
    ...     push.close()
    (['flat'], 'ended')
    """

    description = "ZeroMQ"

    def __init__(self, address: str, *, pattern: str = "pull", bind: bool = False,
                 topic: bytes | str = b"", timeout_lost: float | None = 30.0,
                 high_water_mark: int = 256, monitor: bool = True):
        super().__init__()
        self._io = threading.Lock()  # held while receiving: close() from another thread waits for it
        self._close_requested = False
        _check_options(address, pattern, topic, timeout_lost, high_water_mark)
        zmq = _import_zmq()
        self.pattern = pattern
        self.timeout_lost = None if timeout_lost is None else float(timeout_lost)
        self.topic = topic.encode() if isinstance(topic, str) else bytes(topic)
        self.duplicates = 0
        self.out_of_order = 0
        self.messages = 0
        self._seen = {kind: set() for kind in FRAME_KINDS}
        self._highest = dict.fromkeys(FRAME_KINDS, -1)
        self._last_message = None
        self._connections = 0
        self._disconnected_at = None
        self._context = zmq.Context()
        self._socket = self._context.socket(zmq.PULL if pattern == "pull" else zmq.SUB)
        self._socket.rcvhwm = high_water_mark
        self._socket.linger = 0
        if pattern == "sub":
            self._socket.setsockopt(zmq.SUBSCRIBE, self.topic)
        self._monitor = self._socket.get_monitor_socket(
            zmq.EVENT_CONNECTED | zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED) if monitor else None
        self._poller = zmq.Poller()
        self._poller.register(self._socket, zmq.POLLIN)
        if self._monitor is not None:
            self._poller.register(self._monitor, zmq.POLLIN)
        try:
            if bind:
                self._socket.bind(address)
            else:
                self._socket.connect(address)
        except zmq.ZMQError as exc:
            self.close()
            raise ParameterError(f"cannot {'bind' if bind else 'connect'} a ZeroMQ socket ({exc})",
                                 where="address", value=address,
                                 fix="pass tcp://HOST:PORT (a free port when binding), "
                                     "ipc:///PATH or inproc://NAME") from None
        #: the address in use (with the port ZeroMQ chose for ``tcp://HOST:*``)
        self.address = self._socket.last_endpoint.decode() if bind else address
        self._zmq = zmq

    def _next(self, timeout: float) -> Frame | None:
        with self._io:
            frame = None if self._close_requested else self._receive(timeout)
            if self._close_requested:  # closed from another thread meanwhile: drop it, close here
                self._release()
                return None
            return frame

    def _receive(self, timeout: float) -> Frame | None:
        zmq = self._zmq
        deadline = time.perf_counter() + max(timeout, 0.0)
        while not self._close_requested:
            # in slices, so that a close() from another thread is seen within 0.1 s
            wait = min(max(deadline - time.perf_counter(), 0.0), 0.1)
            events = dict(self._poller.poll(math.ceil(wait * 1000)))
            if self._monitor is not None and self._monitor in events:
                self._read_monitor()
            if self._socket in events:
                parts = self._socket.recv_multipart(copy=False)
                arrival = time.perf_counter()
                self._last_message = arrival
                frame = self._parse(parts, arrival)
                if frame is not None:
                    return frame
            else:
                self._check_lost()
            if time.perf_counter() >= deadline and not self._socket.poll(0, zmq.POLLIN):
                return None
        return None

    def _parse(self, parts, arrival) -> Frame | None:
        self.messages += 1
        if self.topic:
            parts = parts[1:]
        try:
            frame = parse_message(parts, arrival=arrival)
        except EndOfScan:
            self.state = "ended"
            counts = ", ".join(f"{len(seen)} {kind}s" for kind, seen in self._seen.items())
            raise EndOfScan(f"end message after {counts}") from None
        except ParameterError as exc:
            self.record_error(f"message {self.messages}: {exc}")
            return None
        seen = self._seen[frame.kind]
        if frame.index in seen:
            self.duplicates += 1
        seen.add(frame.index)
        if frame.index < self._highest[frame.kind]:
            self.out_of_order += 1
        self._highest[frame.kind] = max(self._highest[frame.kind], frame.index)
        return frame

    def _read_monitor(self):
        from zmq.utils.monitor import recv_monitor_message

        zmq = self._zmq
        while self._monitor.poll(0, zmq.POLLIN):
            event = recv_monitor_message(self._monitor)["event"]
            if event in (zmq.EVENT_CONNECTED, zmq.EVENT_ACCEPTED):
                self._connections += 1
                self._disconnected_at = None
            elif event == zmq.EVENT_DISCONNECTED:
                self._connections = max(self._connections - 1, 0)
                if self._connections == 0:
                    self._disconnected_at = time.perf_counter()

    def _check_lost(self):
        """Raise EndOfScan (state lost) when the publisher is gone; called with nothing queued."""
        if self._last_message is None:
            return  # still waiting for the first frame: nothing is lost yet
        now = time.perf_counter()
        if self._disconnected_at is not None:
            grace = 1.0 if self.timeout_lost is None else min(1.0, self.timeout_lost)
            if now - self._disconnected_at >= grace and not self._socket.poll(0, self._zmq.POLLIN):
                self.state = "lost"
                raise EndOfScan("the publisher closed its connection before the end message "
                                f"(after {self.frames} frames): did it stop or crash?")
        if self.timeout_lost is not None and now - self._last_message >= self.timeout_lost:
            self.state = "lost"
            raise EndOfScan(f"no frame for {self.timeout_lost:g} s: the publisher stopped?")

    def close(self):
        """Close the socket (pending messages are dropped).

        Safe from another thread while :meth:`receive` waits: that receive
        returns None within its timeout and closes the socket itself.
        """
        super().close()
        self._close_requested = True
        if self._io.acquire(blocking=False):
            try:
                self._release()
            finally:
                self._io.release()

    def _release(self):
        for sock in (getattr(self, "_monitor", None), getattr(self, "_socket", None)):
            if sock is not None and not sock.closed:
                sock.close(linger=0)
        context = getattr(self, "_context", None)
        if context is not None and not context.closed:
            context.term()


def _import_zmq():
    try:
        import zmq
    except ImportError:
        raise ParameterError("pyzmq is not installed", where="ZmqSource", value=None,
                             fix="pip install tomolab[live] (or pip install pyzmq)") from None
    return zmq


def _check_options(address, pattern, topic, timeout_lost, high_water_mark):
    if not isinstance(address, str) or "://" not in address:
        raise ParameterError("not a ZeroMQ address", where="address", value=address,
                             fix="pass e.g. tcp://127.0.0.1:5555 or ipc:///tmp/frames")
    if pattern not in PATTERNS:
        raise ParameterError("unknown socket pattern", where="pattern", value=pattern,
                             fix="pass pattern='pull' (the publisher PUSHes) or 'sub' (it PUBlishes)")
    if not isinstance(topic, (bytes, str)) or (topic and pattern != "sub"):
        raise ParameterError("a topic filters SUB sockets only (bytes or str)", where="topic",
                             value=topic, fix="pass pattern='sub' with it, or leave topic out")
    if timeout_lost is not None and (isinstance(timeout_lost, bool)
                                     or not isinstance(timeout_lost, (int, float))
                                     or not timeout_lost > 0 or not math.isfinite(timeout_lost)):
        raise ParameterError("must be a positive number of seconds, or None", where="timeout_lost",
                             value=timeout_lost, fix="pass e.g. timeout_lost=30")
    if isinstance(high_water_mark, bool) or not isinstance(high_water_mark, int) \
            or high_water_mark < 0:
        raise ParameterError("must be a whole number of messages from 0 (0: no limit)",
                             where="high_water_mark", value=high_water_mark,
                             fix="pass e.g. high_water_mark=256")
