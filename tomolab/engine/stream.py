"""Overlapped slab streaming on a GPU: read, upload, compute, download, write at once.

While slab ``k`` is being reconstructed on the compute stream, slab ``k + 1``
is uploaded on a copy stream from a pinned buffer that a reader thread filled,
and slab ``k - 1`` is downloaded on another copy stream into a pinned buffer
that a writer thread empties. Buffers are allocated once; raw counts travel
in their own dtype (uint16: half the bytes of float32). Memory stays bounded
by the slab height whatever the size of the scan.

The host side has options (:class:`StreamOptions`): how many threads copy a
finished slab out of pinned memory, whether the output's pages are faulted in
ahead of the writer, and whether a 16-bit output is encoded on the GPU before
it is downloaded. Their defaults are the measured ones; ``TOMOLAB_STREAM``
selects others for a run (see :meth:`StreamOptions.from_environment`).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace

import numpy as np

__all__ = ["StreamOptions", "populate", "stream_slabs"]

#: the environment variable that selects :class:`StreamOptions` for a run
STREAM_VARIABLE = "TOMOLAB_STREAM"


@dataclass(frozen=True)
class StreamOptions:
    """How the host side of the GPU stream runs.

    Parameters
    ----------
    write_threads : int
        Threads (at most; never more than the machine's cores) that copy each
        finished slab from pinned memory into the output array. Host memory
        bandwidth needs several; a freshly allocated output also has its pages
        faulted in by these copies.
    prefault : bool
        Fault the output array's pages in (``MADV_POPULATE_WRITE``, Linux ≥
        5.14; nothing elsewhere) from the same number of threads, slab by slab
        ahead of the writer, while the first slabs are read and computed.
        It never changes the array's contents, so it may race with the writer.
    encode_on_device : bool
        Encode a 16-bit output (uint16 with its scale and offset, or float16)
        on the GPU before the download (:func:`tomolab.io.encode_rows`, bit for
        bit the host's values), so PCIe and the host move half the bytes.
    out_buffers : int
        Pinned output buffers: slabs downloaded but not yet written.

    Examples
    --------
    >>> StreamOptions.parse("candidate") == CANDIDATE
    True
    >>> StreamOptions.parse("write_threads=16,prefault=1")
    StreamOptions(write_threads=16, prefault=True, encode_on_device=False, out_buffers=2)
    """

    write_threads: int = 8
    prefault: bool = False
    encode_on_device: bool = False
    out_buffers: int = 2

    @classmethod
    def parse(cls, text: str) -> StreamOptions:
        """``"current"``, ``"candidate"``, or ``"name=value,..."`` (starting from the current)."""
        from tomolab.errors import ParameterError

        text = text.strip()
        if text in ("", "current"):
            return CURRENT
        if text == "candidate":
            return CANDIDATE
        types = {f.name: f.type for f in fields(cls)}
        values = {}
        for item in text.split(","):
            name, _, value = item.partition("=")
            name, value = name.strip(), value.strip().lower()
            fix = (f"set {STREAM_VARIABLE} to 'current', 'candidate' or e.g. "
                   f"'write_threads=16,prefault=1' (names: {', '.join(types)})")
            if name not in types:
                raise ParameterError("unknown stream option", where=STREAM_VARIABLE, value=item,
                                     fix=fix)
            if types[name] in (bool, "bool"):
                if value not in ("0", "1", "true", "false"):
                    raise ParameterError("a stream switch is 0 or 1", where=STREAM_VARIABLE,
                                         value=item, fix=fix)
                values[name] = value in ("1", "true")
            else:
                if not value.isdigit() or int(value) < 1:
                    raise ParameterError("a count of the stream must be a positive integer",
                                         where=STREAM_VARIABLE, value=item, fix=fix)
                values[name] = int(value)
        return replace(CURRENT, **values)

    @classmethod
    def from_environment(cls) -> StreamOptions:
        """The options ``TOMOLAB_STREAM`` names (see :meth:`parse`); the current ones without it."""
        return cls.parse(os.environ.get(STREAM_VARIABLE, ""))


#: the options measured and in use
CURRENT = StreamOptions()
#: the options under trial (``TOMOLAB_STREAM=candidate``): ``benchmarks/bench_host_stream.py``
#: times them against :data:`CURRENT`
CANDIDATE = StreamOptions(write_threads=16, prefault=True, encode_on_device=True, out_buffers=3)

#: madvise(2) advice that faults pages in writable without changing them (Linux 5.14)
_MADV_POPULATE_WRITE = 23


def populate(array: np.ndarray, start: int = 0, stop: int | None = None) -> bool:
    """Fault in the pages of ``array[start:stop]`` (along its first axis), contents unchanged.

    Returns False where the system cannot (not Linux, a kernel before 5.14,
    memory that is not the process's own); the pages are then faulted in by
    the first write, as they would be anyway. Safe while other threads write
    the same pages: ``MADV_POPULATE_WRITE`` only maps them.

    Examples
    --------
    >>> a = np.empty((4, 1024, 1024), np.float32)
    >>> a[0] = 1
    >>> done = populate(a)
    >>> float(a[0].min())
    1.0
    """
    import ctypes
    import mmap

    if not array.flags.c_contiguous or array.ndim == 0:
        return False
    stop = array.shape[0] if stop is None else stop
    row = array.nbytes // max(array.shape[0], 1)
    begin = array.ctypes.data + start * row
    end = array.ctypes.data + stop * row
    page = mmap.PAGESIZE
    first, last = -(-begin // page) * page, end // page * page  # whole pages inside only
    if last <= first:
        return True
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        madvise = libc.madvise
    except (OSError, AttributeError):
        return False
    madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    madvise.restype = ctypes.c_int
    return madvise(first, last - first, _MADV_POPULATE_WRITE) == 0


def _pinned(shape, dtype):
    import cupyx
    return cupyx.empty_pinned(shape, dtype=dtype)


def stream_slabs(n_rows: int, height: int, *, in_shape: Callable[[int], tuple], in_dtype,
                 out_shape: Callable[[int], tuple],
                 read: Callable[[int, int, np.ndarray], None],
                 compute: Callable[[object, int, int], object],
                 write: Callable[[int, int, np.ndarray], None],
                 progress: Callable[[int, int], None] | None = None,
                 cancel: Callable[[], bool] | None = None, buffers: int = 2,
                 out_buffers: int | None = None, out_dtype=np.float32,
                 stats: dict | None = None) -> None:
    """Run ``read → upload → compute → download → write`` over slabs of rows, overlapped.

    Parameters
    ----------
    n_rows, height : int
        Rows in all, rows per slab.
    in_shape, out_shape : callable(h) -> tuple
        Host shapes of one slab of ``h`` rows, read and written.
    in_dtype : dtype
        Dtype of the raw slab (uploaded as it is).
    read : callable(start, stop, buffer)
        Fills the pinned host ``buffer`` (of ``in_shape(stop - start)``) with rows ``start:stop``.
        Runs in a reader thread.
    compute : callable(device_slab, start, stop) -> device array of ``out_shape``
        Runs on the current (compute) stream. It may return a tuple
        ``(slab, *extras)`` of device arrays: the small ``extras`` (e.g. counts
        per row) are downloaded with the slab and passed to ``write``.
    write : callable(start, stop, host_array, *extras)
        Stores a finished slab; runs in a writer thread. The arrays are only
        valid during the call.
    buffers, out_buffers : int
        Pinned input buffers (and device input buffers), pinned output buffers
        (default: as many as ``buffers``).
    out_dtype : dtype
        Dtype of the downloaded slab.
    progress, cancel : callable, optional
        As for :func:`tomolab.reconstruct`.
    stats : dict, optional
        Filled with seconds spent per stage, to tell what bounds a run:
        ``read`` and ``write`` (busy time of the reader and writer threads),
        ``compute`` (GPU time of the compute stream, from CUDA events),
        ``wait_read`` and ``wait_write`` (time the main loop waited for a
        filled input buffer or a free output buffer), ``setup`` (buffers and
        threads; ``pinned`` of it allocating pinned memory, which a process's first
        run pays and later ones find in CuPy's pool), ``first_write`` (seconds
        from the start until the first slab was stored), ``slabs`` and ``height``.
    """
    import cupy

    from tomolab.errors import Cancelled

    started = time.perf_counter()
    timings = {"read": 0.0, "write": 0.0, "compute": 0.0, "wait_read": 0.0, "wait_write": 0.0}
    slabs = [(s, min(s + height, n_rows)) for s in range(0, n_rows, height)]
    # flat buffers, viewed as a contiguous slab of any height (the last slab is shorter)
    in_size, out_size = int(np.prod(in_shape(height))), int(np.prod(out_shape(height)))
    out_buffers = buffers if out_buffers is None else out_buffers
    pinned_in = [_pinned((in_size,), in_dtype) for _ in range(buffers)]
    pinned_out = [_pinned((out_size,), out_dtype) for _ in range(out_buffers)]
    timings["pinned"] = time.perf_counter() - started
    pinned_extras: list[list] = [[] for _ in range(out_buffers)]  # small, made on first use
    device_in = [cupy.empty((in_size,), dtype=in_dtype) for _ in range(buffers)]

    def view(buffer, shape):
        return buffer[:int(np.prod(shape))].reshape(shape)
    upload, download = cupy.cuda.Stream(non_blocking=True), cupy.cuda.Stream(non_blocking=True)
    compute_stream = cupy.cuda.Stream(non_blocking=True)
    free_in, ready_in = queue.Queue(), queue.Queue()
    free_out, ready_out = queue.Queue(), queue.Queue()
    for i in range(buffers):
        free_in.put(i)
    for i in range(out_buffers):
        free_out.put(i)
    last_use = [None] * buffers  # compute event that last read each device input buffer
    errors: list[BaseException] = []
    stop_event = threading.Event()

    def reader():
        try:
            for start, stop in slabs:
                slot = free_in.get()
                if stop_event.is_set():
                    return
                t = time.perf_counter()
                read(start, stop, view(pinned_in[slot], in_shape(stop - start)))
                timings["read"] += time.perf_counter() - t
                ready_in.put((slot, start, stop))
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller)
            errors.append(exc)
            ready_in.put(None)

    def writer():
        try:
            while True:
                item = ready_out.get()
                if item is None:
                    return
                slot, start, stop, event, _result, extras = item  # _result alive until downloaded
                event.synchronize()
                t = time.perf_counter()
                write(start, stop, view(pinned_out[slot], out_shape(stop - start)), *extras)
                timings["write"] += time.perf_counter() - t
                timings.setdefault("first_write", time.perf_counter() - started)
                free_out.put(slot)
                if progress is not None:
                    progress(stop, n_rows)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop_event.set()

    threads = [threading.Thread(target=reader, daemon=True), threading.Thread(target=writer, daemon=True)]
    for t in threads:
        t.start()
    timings["setup"] = time.perf_counter() - started
    compute_events = []
    try:
        for k in range(len(slabs)):
            if errors:
                break
            if cancel is not None and cancel():
                raise Cancelled(f"reconstruction cancelled after {slabs[k][0]} of {n_rows} rows")
            t = time.perf_counter()
            item = ready_in.get()
            timings["wait_read"] += time.perf_counter() - t
            if item is None:
                break
            slot, start, stop = item
            shape = in_shape(stop - start)
            d_in = view(device_in[slot], shape)
            if last_use[slot] is not None:  # the compute that read this buffer must be done
                upload.wait_event(last_use[slot])
            with upload:
                d_in.set(view(pinned_in[slot], shape), stream=upload)
                uploaded = upload.record()
            compute_stream.wait_event(uploaded)
            with compute_stream:
                began = compute_stream.record()
                result = compute(d_in, start, stop)
                result, extras = (result[0], result[1:]) if isinstance(result, tuple) else (result, ())
                computed = compute_stream.record()
            compute_events.append((began, computed))
            last_use[slot] = computed
            # the pinned input may be refilled once its upload is done
            uploaded.synchronize()
            free_in.put(slot)
            t = time.perf_counter()
            out_slot = free_out.get()
            timings["wait_write"] += time.perf_counter() - t
            download.wait_event(computed)
            with download:
                host = view(pinned_out[out_slot], out_shape(stop - start))
                result.get(stream=download, out=host, blocking=False)
                host_extras = []
                for j, extra in enumerate(extras):
                    kept = pinned_extras[out_slot]
                    if j == len(kept) or kept[j].size < extra.size or kept[j].dtype != extra.dtype:
                        kept[j:j + 1] = [_pinned((max(extra.size, 1),), extra.dtype)]
                    into = view(kept[j], extra.shape)
                    extra.get(stream=download, out=into, blocking=False)
                    host_extras.append(into)
                downloaded = download.record()
            ready_out.put((out_slot, start, stop, downloaded, (result, extras), tuple(host_extras)))
            del result, extras
    finally:
        stop_event.set()
        for _ in range(buffers):
            free_in.put(0)  # wake the reader if it waits for a slot
        ready_out.put(None)
        for t in threads:
            t.join()
        cupy.cuda.Device().synchronize()
    if errors:
        raise errors[0]
    if stats is not None:
        timings["compute"] = sum(cupy.cuda.get_elapsed_time(a, b) for a, b in compute_events) / 1e3
        stats.update(timings, slabs=len(slabs), height=height)
