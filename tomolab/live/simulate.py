"""Replay a scan as an acquisition would deliver it: over ZeroMQ or into a growing SWMR file.

For tests, teaching and commissioning: :func:`simulate_stream` sends darks,
flats, then projections, then the end, at a set frame rate; the command
``tomolab stream-sim`` runs it as a process of its own. :func:`run_publisher`
sends one frame over and over as fast as it can (ingest benchmarks).
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np

from tomolab.errors import ParameterError
from tomolab.live.swmr import END_MARKER
from tomolab.live.zmq import _import_zmq

__all__ = ["SWMR_LAYOUTS", "TRANSPORTS", "SwmrWriter", "frame_message", "run_publisher",
           "simulate_stream"]

TRANSPORTS = ("zmq", "swmr")
#: layouts of the growing file (see :class:`tomolab.live.SwmrSource`)
SWMR_LAYOUTS = ("dxchange", "nxtomo")
_BLOCK = 16  # projections read from a file (or simulated) at a time
#: a scan up to this size is read or simulated into memory before the first frame goes out,
#: so that the frame rate holds; a larger one is read or simulated block by block as it is sent
PRELOAD_BYTES = 1 << 30


def frame_message(kind: str, index: int, data=None, angle: float | None = None) -> list:
    """The two parts of one message of the wire protocol: ``[header bytes, pixels]``.

    ``kind="end"`` gives the one-part end message. ``data`` is sent as it is
    (any C-contiguous array: ZeroMQ reads its buffer).

    Examples
    --------
    >>> import numpy as np
    >>> header, pixels = frame_message("projection", 7, np.zeros((2, 3), np.uint16), angle=0.25)
    >>> header
    b'{"type": "projection", "index": 7, "shape": [2, 3], "dtype": "uint16", "angle": 0.25}'
    >>> frame_message("end", 400)
    [b'{"type": "end", "index": 400}']
    """
    if kind == "end":
        return [json.dumps({"type": "end", "index": int(index)}).encode()]
    data = np.ascontiguousarray(data)
    header = {"type": kind, "index": int(index), "shape": list(data.shape), "dtype": data.dtype.name}
    if angle is not None:
        header["angle"] = float(angle)
    return [json.dumps(header).encode(), data]


# --- what is sent ----------------------------------------------------------------------

def _count(value, available, name):
    if value is None:
        return available
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ParameterError("must be a whole number from 0, or None for all", where=name,
                             value=value, fix=f"pass e.g. {name}=10")
    if value > available:
        raise ParameterError(f"the scan has only {available}", where=name, value=value,
                             fix=f"pass at most {available}, or None for all")
    return int(value)


def _simulated(spec, darks, flats):
    from tomolab.data import (
        SimulationParameters,
        iter_projection_slabs,
        simulate_flats_darks,
        simulation_attrs,
        simulation_parameters,
    )

    if isinstance(spec, SimulationParameters):
        params = spec
    else:
        spec = dict(spec or {})
        size = spec.pop("size", 128)
        params = simulation_parameters(size, spec.pop("n_rows", None), spec.pop("n_angles", None),
                                       **spec)
    all_flats, all_darks = simulate_flats_darks(params)
    n_darks = _count(darks, len(all_darks), "darks")
    n_flats = _count(flats, len(all_flats), "flats")

    blocks = iter_projection_slabs(params, block=_BLOCK)
    if params.n_angles * params.n_rows * params.n_cols * 2 <= PRELOAD_BYTES:
        blocks = list(blocks)

    def frames():
        yield from (("dark", i, None, all_darks[i]) for i in range(n_darks))
        yield from (("flat", i, None, all_flats[i]) for i in range(n_flats))
        for start, stop, block in blocks:
            yield from (("projection", start + i, params.angles[start + i], block[i])
                        for i in range(stop - start))

    meta = {"pixel_size": params.pixel_size, "energy": params.energy, "distance": params.distance,
            "attrs": simulation_attrs(params)}
    return frames(), (params.n_rows, params.n_cols), params.n_angles, meta


def _from_dataset(scan, darks, flats):
    n_darks = _count(darks, scan.sizes.get("dark", 0) if "darks" in scan else 0, "darks")
    n_flats = _count(flats, scan.sizes.get("flat", 0) if "flats" in scan else 0, "flats")
    angles = np.asarray(scan["angle"].values, np.float64)
    projections = scan["projections"]
    if projections.nbytes <= PRELOAD_BYTES:
        projections = projections.load()

    def frames():
        for kind, var, n in (("dark", "darks", n_darks), ("flat", "flats", n_flats)):
            if n:
                values = np.asarray(scan[var][:n].values)
                yield from ((kind, i, None, values[i]) for i in range(n))
        for start in range(0, angles.size, _BLOCK):
            block = np.asarray(projections[start:start + _BLOCK].values)
            yield from (("projection", start + i, angles[start + i], block[i])
                        for i in range(block.shape[0]))

    attrs = {key: value for key, value in scan.attrs.items()
             if isinstance(value, (str, int, float, np.integer, np.floating))}
    meta = {key: scan.attrs.get(key) for key in ("pixel_size", "energy", "distance")}
    meta["attrs"] = attrs
    shape = (scan.sizes["row"], scan.sizes["col"])
    return frames(), shape, angles.size, meta


def _scan_frames(scan, darks, flats):
    """``(frames, (rows, cols), n_projections, metadata)``; frames yields (kind, index, angle, data)."""
    if scan is None or isinstance(scan, dict) or type(scan).__name__ == "SimulationParameters":
        return _simulated(scan, darks, flats)
    if isinstance(scan, (str, os.PathLike)):
        from tomolab.io import open_scan

        scan = open_scan(scan)
    if not hasattr(scan, "data_vars") or "projections" not in scan:
        raise ParameterError("not a scan", where="scan", value=type(scan).__name__,
                             fix="pass a file path, a scan from tomolab.open_scan, a dict of "
                                 "tomolab.data.simulation_parameters options, or None")
    return _from_dataset(scan, darks, flats)


# --- transports --------------------------------------------------------------------------

class _ZmqSender:
    def __init__(self, address, *, pattern, bind, timeout, high_water_mark):
        zmq = _import_zmq()
        if pattern not in ("push", "pub"):
            raise ParameterError("unknown sending pattern", where="pattern", value=pattern,
                                 fix="pass 'push' (the receiver PULLs) or 'pub' (it SUBscribes)")
        self._zmq = zmq
        self._context = zmq.Context()
        # XPUB: a PUB that hears subscriptions, so nothing is published before a viewer listens
        self._socket = self._context.socket(zmq.PUSH if pattern == "push" else zmq.XPUB)
        self._socket.sndhwm = high_water_mark
        self._timeout = timeout
        if timeout is not None:
            self._socket.sndtimeo = int(timeout * 1000)
        self._pattern = pattern
        try:
            if bind:
                self._socket.bind(address)
            else:
                self._socket.connect(address)
        except zmq.ZMQError as exc:
            self.close(linger=0)
            raise ParameterError(f"cannot {'bind' if bind else 'connect'} a ZeroMQ socket ({exc})",
                                 where="target", value=address,
                                 fix="pass tcp://HOST:PORT (a free port when binding)") from None
        self.address = self._socket.last_endpoint.decode() if bind else address
        self._subscribed = pattern != "pub"

    def _wait_for_subscriber(self):
        wait = -1 if self._timeout is None else int(self._timeout * 1000)
        if not self._socket.poll(wait, self._zmq.POLLIN):
            self.close(linger=0)
            raise ParameterError(f"no subscriber came within {self._timeout:g} s", where="target",
                                 value=self.address, fix="start the viewer (a ZmqSource with "
                                 "pattern='sub') first, or pass a longer timeout")
        self._socket.recv()  # the subscription

    def send(self, parts):
        if not self._subscribed:
            self._wait_for_subscriber()
            self._subscribed = True
        try:
            self._socket.send_multipart(parts, copy=False)
        except self._zmq.Again:
            raise ParameterError(f"no receiver took a frame within {self._timeout:g} s",
                                 where="target", value=self.address,
                                 fix="start the receiver (a ZmqSource) or pass a longer "
                                     "timeout") from None

    def close(self, linger=None):
        if linger is None:
            linger = -1 if self._timeout is None else int(self._timeout * 1000)
        if not self._socket.closed:
            self._socket.close(linger=linger)
        self._context.term()


class SwmrWriter:
    """Write frames into an HDF5 file that readers follow with SWMR, one flush per frame.

    Every dataset is made first (SWMR cannot add any later), then the file
    switches to SWMR mode and grows frame by frame. :meth:`finish` sets the
    root attribute ``scan_complete`` to 1 (and, for NXtomo, fills
    ``end_time``) and closes the file.

    Parameters
    ----------
    path : str or os.PathLike
    shape : (rows, cols)
    dtype : numpy dtype
    layout : {"dxchange", "nxtomo"}
        DXchange: ``/exchange/data``, ``data_white``, ``data_dark``, ``theta``
        (degrees). NXtomo: ``/entry0000/instrument/detector/data`` with
        ``image_key`` / ``image_key_control`` (0 projection, 1 flat, 2 dark)
        and ``sample/rotation_angle`` (degrees) for every frame.
    meta : dict, optional
        ``pixel_size`` [m], ``energy`` [keV], ``distance`` [m], ``attrs``
        (root attributes).
    overwrite : bool
        Replace a scan file tomolab wrote (anything else is refused).
    """

    def __init__(self, path, shape, dtype, *, layout="dxchange", meta=None, overwrite=False):
        import h5py

        from tomolab.io import check_overwritable

        if layout not in SWMR_LAYOUTS:
            raise ParameterError("unknown layout of a growing file", where="layout", value=layout,
                                 fix=f"pass one of: {', '.join(SWMR_LAYOUTS)}")
        path = Path(os.fspath(path)).expanduser()
        if path.exists() and not overwrite:
            raise ParameterError("exists", where="target", value=str(path),
                                 fix="name a new file, or pass overwrite=True")
        if overwrite:
            check_overwritable(path, kind="scan")
        if not path.parent.is_dir():
            raise ParameterError("the folder does not exist", where="target", value=str(path),
                                 fix="create the folder first, or name a file in one that exists")
        meta = meta or {}
        self.path, self.layout = path, layout
        self.counts = {"dark": 0, "flat": 0, "projection": 0}
        f = self._file = h5py.File(path, "w", libver="latest")
        f.attrs["tomolab_output"] = "scan"  # what check_overwritable looks for
        for key, value in (meta.get("attrs") or {}).items():
            f.attrs[key] = value
        f.attrs[END_MARKER] = 0
        rows, cols = shape
        grow = {"maxshape": (None, rows, cols), "chunks": (1, rows, cols), "dtype": dtype}
        if layout == "dxchange":
            f.create_dataset("implements", data="exchange:measurement")
            self._data = {kind: f.create_dataset(f"/exchange/{name}", (0, rows, cols), **grow)
                          for kind, name in (("projection", "data"), ("flat", "data_white"),
                                             ("dark", "data_dark"))}
            self._angles = f.create_dataset("/exchange/theta", (0,), "f8", maxshape=(None,))
            self._angles.attrs["units"] = "degree"
            self._dxchange_metadata(f, meta)
        else:
            self._nxtomo_layout(f, rows, cols, grow, meta)
        f.swmr_mode = True

    def _dxchange_metadata(self, f, meta):
        for key, path, scale, unit in (
                ("pixel_size", "/measurement/instrument/detector/actual_pixel_size_x", 1e6, "um"),
                ("energy", "/measurement/instrument/monochromator/energy", 1.0, "keV"),
                ("distance", "/measurement/instrument/detector/distance", 1e3, "mm")):
            if meta.get(key) is not None:
                f.create_dataset(path, data=float(meta[key]) * scale).attrs["units"] = unit

    def _nxtomo_layout(self, f, rows, cols, grow, meta):
        def group(parent, name, nx_class):
            g = parent.create_group(name)
            g.attrs["NX_class"] = nx_class
            return g

        entry = group(f, "entry0000", "NXentry")
        entry.create_dataset("definition", data="NXtomo")
        self._end_time = entry.create_dataset("end_time", data=b" " * 32)  # filled at the end
        detector = group(group(entry, "instrument", "NXinstrument"), "detector", "NXdetector")
        sample = group(entry, "sample", "NXsample")
        data = detector.create_dataset("data", (0, rows, cols), **grow)
        self._data = dict.fromkeys(("projection", "flat", "dark"), data)
        self._keys = [detector.create_dataset(name, (0,), "i4", maxshape=(None,))
                      for name in ("image_key", "image_key_control")]
        self._angles = sample.create_dataset("rotation_angle", (0,), "f8", maxshape=(None,))
        self._angles.attrs["units"] = "degree"
        if meta.get("pixel_size") is not None:
            detector.create_dataset("x_pixel_size", data=float(meta["pixel_size"])).attrs["units"] = "m"
        if meta.get("distance") is not None:
            detector.create_dataset("distance", data=float(meta["distance"])).attrs["units"] = "m"
        nxdata = group(entry, "data", "NXdata")
        nxdata["data"], nxdata["image_key"] = data, self._keys[0]
        nxdata["rotation_angle"] = self._angles
        nxdata.attrs["signal"] = "data"
        self._last_angle = 0.0

    def put(self, kind, data, angle=None):
        """Append one frame and flush it to the readers."""
        dset = self._data[kind]
        n = dset.shape[0]
        dset.resize(n + 1, axis=0)
        dset[n] = data
        if self.layout == "dxchange":
            if kind == "projection":
                self._angles.resize(n + 1, axis=0)
                self._angles[n] = math.degrees(angle)
        else:
            # NXtomo gives every frame an angle: a dark or flat takes the last one
            self._last_angle = math.degrees(angle) if angle is not None else self._last_angle
            key = {"projection": 0, "flat": 1, "dark": 2}[kind]
            for dataset, value in ((self._keys[0], key), (self._keys[1], key),
                                   (self._angles, self._last_angle)):
                dataset.resize(n + 1, axis=0)
                dataset[n] = value
        self.counts[kind] += 1
        self._file.flush()

    def finish(self):
        """Mark the scan complete and close the file."""
        if self.layout == "nxtomo":
            self._end_time[()] = time.strftime("%Y-%m-%dT%H:%M:%S%z").encode().ljust(32)
        self._file.attrs.modify(END_MARKER, 1)
        self._file.flush()
        self._file.close()

    def close(self):
        """Close without marking the end (the file stays as far as it got)."""
        if self._file.id.valid:
            self._file.close()


# --- the public functions ----------------------------------------------------------------

def _check_rate(rate):
    if rate is None:
        return None
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not rate > 0 \
            or not math.isfinite(rate):
        raise ParameterError("must be a positive number of frames per second, or None",
                             where="rate", value=rate, fix="pass e.g. rate=100 frames per second")
    return float(rate)


def _paced(rate):
    """A ``wait(k)`` that sleeps until frame ``k`` is due at ``rate`` frames per second."""
    start = time.perf_counter()

    def wait(k):
        if rate is None:
            return
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            time.sleep(delay)

    return wait


def _stats(frames, nbytes, seconds, transport, target):
    seconds = max(seconds, 1e-9)
    return {"frames": frames, "bytes": nbytes, "seconds": seconds, "rate": frames / seconds,
            "gb_per_s": nbytes / seconds / 1e9, "transport": transport, "target": str(target)}


def simulate_stream(target, *, scan=None, rate: float | None = 100.0, transport: str = "zmq",
                    dtype="uint16", darks: int | None = None, flats: int | None = None,
                    bind: bool = True, pattern: str = "push", layout: str = "dxchange",
                    timeout: float | None = 60.0, high_water_mark: int = 1000,
                    overwrite: bool = False, stop_after: int | None = None,
                    pause: tuple | None = None, on_ready=None) -> dict:
    """Replay a scan as an acquisition: darks, flats, projections, end, at a set frame rate.

    Parameters
    ----------
    target : str or os.PathLike
        ZeroMQ address (``tcp://127.0.0.1:5555``) for ``transport="zmq"``, a
        new HDF5 file for ``transport="swmr"``.
    scan : None, str, xarray.Dataset, dict or SimulationParameters
        What to send: a file :func:`tomolab.open_scan` reads, a scan, or a
        simulated scan -- None (the default simulation) or a dict of
        :func:`tomolab.data.simulation_parameters` options (``size``,
        ``n_rows``, ``n_angles``, ``seed``, ...).
    rate : float or None
        Frames per second (darks and flats count); None: as fast as possible.
    transport : {"zmq", "swmr"}
    dtype : str
        Pixel type sent or written (the scan's values are cast to it).
    darks, flats : int, optional
        How many darks and flats to send first (default: all of the scan's).
    bind : bool
        ZeroMQ: bind the address (the receiver connects) or connect to it.
    pattern : {"push", "pub"}
        ZeroMQ: PUSH (a ``ZmqSource`` with ``pattern="pull"`` receives every
        frame) or PUB (any number of ``pattern="sub"`` viewers; the first
        frame waits for one to subscribe).
    layout : {"dxchange", "nxtomo"}
        SWMR: the file's layout.
    timeout : float or None
        ZeroMQ: seconds to wait for a receiver to take a frame (and, at the
        end, to deliver what is queued) before giving up with an error.
    high_water_mark : int
        ZeroMQ: messages queued on the sending side.
    overwrite : bool
        SWMR: replace a scan file tomolab wrote.
    stop_after : int, optional
        Stop after this many frames without the end (a publisher or writer
        that dies: tests, commissioning).
    pause : (int, float), optional
        ``(after_frames, seconds)``: stall once for that long (a source that
        stalls and resumes).
    on_ready : callable, optional
        Called with the address (the port ZeroMQ chose for ``tcp://HOST:*``)
        or the file's path once the socket or file is open, before the first frame.

    Returns
    -------
    dict
        ``frames`` (pixel frames sent), ``bytes``, ``seconds`` (first frame to
        end), ``rate`` (frames/s achieved), ``gb_per_s``, ``transport``,
        ``target``.

    Examples
    --------
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "growing.h5")
    >>> stats = simulate_stream(path, transport="swmr", rate=None, darks=2, flats=2,
    ...                         scan={"size": 32, "n_rows": 4, "n_angles": 10})
    >>> stats["frames"]
    14
    """
    if transport not in TRANSPORTS:
        raise ParameterError("unknown transport", where="transport", value=transport,
                             fix="pass transport='zmq' (a socket) or 'swmr' (a growing HDF5 file)")
    rate = _check_rate(rate)
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise ParameterError("not a numpy dtype", where="dtype", value=dtype,
                             fix="pass e.g. 'uint16'") from None
    if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ParameterError("must be a positive number of seconds, or None", where="timeout",
                             value=timeout, fix="pass e.g. timeout=60")
    if pause is not None and not (
            isinstance(pause, (tuple, list)) and len(pause) == 2
            and isinstance(pause[0], (int, np.integer)) and pause[0] >= 0
            and isinstance(pause[1], (int, float)) and pause[1] >= 0):
        raise ParameterError("must be (frames, seconds)", where="pause", value=pause,
                             fix="pass e.g. pause=(50, 2.0): stall 2 s after 50 frames")
    if stop_after is not None and (isinstance(stop_after, bool)
                                   or not isinstance(stop_after, (int, np.integer))
                                   or stop_after < 0):
        raise ParameterError("must be a whole number of frames from 0, or None",
                             where="stop_after", value=stop_after, fix="pass e.g. stop_after=50")
    frames, shape, _, meta = _scan_frames(scan, darks, flats)
    if transport == "zmq":
        if not isinstance(target, str) or "://" not in target:
            raise ParameterError("not a ZeroMQ address", where="target", value=target,
                                 fix="pass e.g. tcp://127.0.0.1:5555 (or transport='swmr' "
                                     "with a file name)")
        sink = _ZmqSender(target, pattern=pattern, bind=bind, timeout=timeout,
                          high_water_mark=high_water_mark)
    else:
        sink = SwmrWriter(target, shape, dtype, layout=layout, meta=meta, overwrite=overwrite)
    if on_ready is not None:
        on_ready(getattr(sink, "address", None) or str(sink.path))
    sent = nbytes = 0
    counts = {"dark": 0, "flat": 0, "projection": 0}
    wait, paced_from = _paced(rate), 0
    started = None
    finished = False
    try:
        for kind, index, angle, data in frames:
            if stop_after is not None and sent >= stop_after:
                break
            if pause is not None and sent == pause[0]:
                time.sleep(pause[1])
                wait, paced_from = _paced(rate), sent
            wait(sent - paced_from)
            started = time.perf_counter() if started is None else started
            data = data.astype(dtype, copy=False)
            if transport == "zmq":
                sink.send(frame_message(kind, index, data, angle))
            else:
                sink.put(kind, data, angle)
            counts[kind] += 1
            sent += 1
            nbytes += data.nbytes
        else:
            if transport == "zmq":
                sink.send(frame_message("end", counts["projection"]))
            else:
                sink.finish()
            finished = True
    finally:
        if transport == "zmq":
            sink.close() if finished else sink.close(linger=0)
        elif not finished:
            sink.close()
    seconds = time.perf_counter() - (started or time.perf_counter())
    return _stats(sent, nbytes, seconds, transport, getattr(sink, "address", target))


def run_publisher(address: str, shape=(2048, 2048), n: int = 1000, rate: float | None = None, *,
                  dtype="uint16", bind: bool = True, pattern: str = "push",
                  timeout: float | None = 60.0, high_water_mark: int = 1000) -> dict:
    """Send ``n`` projections of one random frame as fast as it can (or at ``rate``), then the end.

    The ingest benchmark's publisher: no simulation cost, so the socket is
    what is measured. Angles run over 180° in ``n`` steps.

    Returns
    -------
    dict
        As :func:`simulate_stream`.

    Examples
    --------
    >>> from tomolab.live import ZmqSource
    >>> import threading
    >>> with ZmqSource("tcp://127.0.0.1:*", bind=True) as source:
    ...     sender = threading.Thread(target=run_publisher, args=(source.address, (4, 8), 5),
    ...                               kwargs={"bind": False})
    ...     sender.start()
    ...     frames = list(source)
    ...     sender.join()
    >>> len(frames), frames[0].shape, source.state
    (5, (4, 8), 'ended')
    """
    rate = _check_rate(rate)
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(0)
    info = np.iinfo(dtype) if dtype.kind in "ui" else None
    frame = (rng.integers(0, min(info.max, 65535), shape, endpoint=True).astype(dtype)
             if info else rng.random(shape).astype(dtype))
    sink = _ZmqSender(address, pattern=pattern, bind=bind, timeout=timeout,
                      high_water_mark=high_water_mark)
    wait = _paced(rate)
    started = time.perf_counter()
    finished = False
    try:
        for k in range(n):
            wait(k)
            sink.send(frame_message("projection", k, frame, math.pi * k / n))
        sink.send(frame_message("end", n))
        finished = True
    finally:
        sink.close() if finished else sink.close(linger=0)
    return _stats(n, n * frame.nbytes, time.perf_counter() - started, "zmq", sink.address)
