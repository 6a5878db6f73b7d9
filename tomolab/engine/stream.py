"""Overlapped slab streaming on a GPU: read, upload, compute, download, write at once.

While slab ``k`` is being reconstructed on the compute stream, slab ``k + 1``
is uploaded on a copy stream from a pinned buffer that a reader thread filled,
and slab ``k - 1`` is downloaded on another copy stream into a pinned buffer
that a writer thread empties. Buffers are allocated once; raw counts travel
in their own dtype (uint16: half the bytes of float32). Memory stays bounded
by the slab height whatever the size of the scan.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable

import numpy as np

__all__ = ["stream_slabs"]


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
        Runs on the current (compute) stream.
    write : callable(start, stop, host_array)
        Stores a finished slab; runs in a writer thread. The array is only
        valid during the call.
    progress, cancel : callable, optional
        As for :func:`tomolab.reconstruct`.
    stats : dict, optional
        Filled with seconds spent per stage, to tell what bounds a run:
        ``read`` and ``write`` (busy time of the reader and writer threads),
        ``compute`` (GPU time of the compute stream, from CUDA events),
        ``wait_read`` and ``wait_write`` (time the main loop waited for a
        filled input buffer or a free output buffer), ``setup`` (buffers and
        threads), ``slabs`` and ``height``.
    """
    import cupy

    from tomolab.errors import Cancelled

    started = time.perf_counter()
    timings = {"read": 0.0, "write": 0.0, "compute": 0.0, "wait_read": 0.0, "wait_write": 0.0}
    slabs = [(s, min(s + height, n_rows)) for s in range(0, n_rows, height)]
    # flat buffers, viewed as a contiguous slab of any height (the last slab is shorter)
    in_size, out_size = int(np.prod(in_shape(height))), int(np.prod(out_shape(height)))
    pinned_in = [_pinned((in_size,), in_dtype) for _ in range(buffers)]
    pinned_out = [_pinned((out_size,), np.float32) for _ in range(buffers)]
    device_in = [cupy.empty((in_size,), dtype=in_dtype) for _ in range(buffers)]

    def view(buffer, shape):
        return buffer[:int(np.prod(shape))].reshape(shape)
    upload, download = cupy.cuda.Stream(non_blocking=True), cupy.cuda.Stream(non_blocking=True)
    compute_stream = cupy.cuda.Stream(non_blocking=True)
    free_in, ready_in = queue.Queue(), queue.Queue()
    free_out, ready_out = queue.Queue(), queue.Queue()
    for i in range(buffers):
        free_in.put(i)
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
                slot, start, stop, event, _result = item  # _result stays alive until downloaded
                event.synchronize()
                t = time.perf_counter()
                write(start, stop, view(pinned_out[slot], out_shape(stop - start)))
                timings["write"] += time.perf_counter() - t
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
                downloaded = download.record()
            ready_out.put((out_slot, start, stop, downloaded, result))
            del result
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
