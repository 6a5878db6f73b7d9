"""Live reconstruction: sustained ingest, latency and redraw from the buffer (issue 15's targets).

Frames (uint16, a few distinct random frames reused with new indices and angles; the content
does not change the work) go through a :class:`tomolab.live.MemorySource` from a producer
thread into a :class:`tomolab.live.LiveReconstruction`, which keeps the three slices:

* ``max rate``: the producer puts every frame at once; ``frames/s`` and ``GB/s`` are frames
  (bytes) in the slices per second from the first arrival to the last update, and ``dropped``
  says whether the reconstruction kept up (frames it could not queue are dropped).
* ``paced``: the producer puts ``--rate`` frames a second (the detector's pace); ``latency``
  is from a frame's arrival in the source to slices that include it (median, p95).
* ``cpu ms/frame``: CPU time of the whole process (every thread) per frame in the slices: what
  the work costs, whatever else the machine runs (wall-time figures depend on that).
* ``redraw``: after the scan, ``set_center`` (all three slices) and ``set_slices`` (one row
  and one point) recompute from the ring buffer; median wall time of 5 (synchronised).

``--spool DIR`` keeps the raw frames in a spool file in DIR (written by a thread of its own
as they arrive; the default of a session), so the disk's share is part of the figures; without
it the raw frames are not kept (``keep_frames=False``).

``--transport zmq`` sends the frames over ZeroMQ on loopback with ``tomolab.live.ZmqSource``
(when that source is installed), so the socket copy is part of the figure.

    python benchmarks/bench_live.py [--cols 256] [--rows 256] [--angles 400] [--rate 200]
        [--backend numpy|cupy] [--transport memory|zmq] [--spool DIR]

On a larger machine, ``NUMBA_NUM_THREADS=2 taskset -c 0,1`` gives the 2-core case.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _timing import card_name, write_rows  # noqa: E402


def make_frames(rows: int, cols: int, distinct: int = 8):
    rng = np.random.default_rng(0)
    flat = np.full((rows, cols), 40000, np.uint16)
    dark = np.full((rows, cols), 100, np.uint16)
    projections = [rng.integers(5000, 40000, (rows, cols), dtype=np.uint16) for _ in range(distinct)]
    return flat, dark, projections


def producer(put, finish, *, flat, dark, projections, n_angles, rate):
    from tomolab.live import Frame

    for i in range(2):
        put(Frame("dark", i, None, dark))
        put(Frame("flat", i, None, flat))
    started = time.perf_counter()
    for i in range(n_angles):
        if rate:
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        put(Frame("projection", i, i * np.pi / n_angles, projections[i % len(projections)]))
    finish()


def zmq_pair(address="tcp://127.0.0.1:5599"):
    """A PUSH socket that sends frames as the protocol says, and a ZmqSource that receives them."""
    import json

    import zmq

    from tomolab.live import ZmqSource  # the ZeroMQ source of issue 15 (part 1)

    context = zmq.Context.instance()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 0)
    push.bind(address)
    source = ZmqSource(address)

    def put(frame):
        header = {"type": frame.kind, "index": frame.index, "shape": list(frame.shape),
                  "dtype": str(frame.data.dtype)}
        if frame.angle is not None:
            header["angle"] = frame.angle
        push.send_multipart([json.dumps(header).encode(), frame.data], copy=False)

    def finish():
        push.send_multipart([json.dumps({"type": "end"}).encode(), b""])

    return source, put, finish, push


def _cpu_seconds() -> float:
    """CPU time of every thread of this process so far (user + system): a figure that other
    jobs on the machine do not change, unlike wall time."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_once(args, rate: float):
    from tomolab.live import LiveReconstruction, MemorySource

    flat, dark, projections = make_frames(args.rows, args.cols)
    if args.transport == "zmq":
        source, put, finish, push = zmq_pair()
    else:
        source = MemorySource()
        put, finish, push = source.put, source.finish, None
    keep = {"keep_frames": False} if not args.spool else {"spool": args.spool}
    live = LiveReconstruction(source, center=(args.cols - 1) / 2 + 3.5, backend=args.backend,
                              n_angles_hint=args.angles, **keep)
    live.start()
    thread = threading.Thread(target=producer, args=(put, finish), daemon=True,
                              kwargs={"flat": flat, "dark": dark, "projections": projections,
                                      "n_angles": args.angles, "rate": rate})
    began, cpu_began = time.perf_counter(), _cpu_seconds()
    thread.start()
    ended = live.wait(timeout=args.timeout)
    seconds = time.perf_counter() - began
    cpu = _cpu_seconds() - cpu_began
    stats = live.stats
    if push is not None:
        push.close(linger=0)
    if hasattr(source, "close"):
        source.close()
    frame_bytes = flat.nbytes
    in_slices = stats["in_slices"]
    row = {
        "date": datetime.date.today().isoformat(), "device": card_name(), "backend": live.backend,
        "transport": args.transport, "spool": stats.get("spool", "off"),
        "frame": f"{args.rows}x{args.cols} uint16",
        "angles": args.angles, "mode": f"paced {rate:g}/s" if rate else "max rate",
        "ended": ended, "in slices": in_slices, "dropped": stats["dropped"],
        "frames/s": round(stats["ingest_gbps"] * 1e9 / frame_bytes, 1),
        "GB/s": round(stats["ingest_gbps"], 3), "wall s": round(seconds, 2),
        "cpu ms/frame": round(1e3 * cpu / max(in_slices, 1), 2),
        "latency median ms": round(1e3 * (stats["latency_median"] or 0), 1),
        "latency p95 ms": round(1e3 * (stats["latency_p95"] or 0), 1),
    }
    return live, row


def _release_device_memory(backend):
    import gc

    gc.collect()
    if backend != "numpy":
        try:
            import cupy
        except ImportError:
            return
        cupy.get_default_memory_pool().free_all_blocks()


def redraw_times(live, args):
    rng = np.random.default_rng(1)
    center_times, slice_times = [], []
    for k in range(5):
        t = time.perf_counter()
        live.set_center(live.center + (0.5 if k % 2 else -0.5))
        center_times.append(time.perf_counter() - t)
        t = time.perf_counter()
        live.set_slices(z=int(rng.integers(args.rows)),
                        point=tuple(int(v) for v in rng.integers(args.cols, size=2)))
        slice_times.append(time.perf_counter() - t)
    t = time.perf_counter()
    live.snapshot()
    snapshot = time.perf_counter() - t
    return {"redraw centre ms": round(1e3 * statistics.median(center_times), 1),
            "redraw slices ms": round(1e3 * statistics.median(slice_times), 1),
            "snapshot ms": round(1e3 * snapshot, 1)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cols", type=int, default=256)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--angles", type=int, default=400)
    parser.add_argument("--rate", type=float, default=200.0, help="frames/s of the paced run")
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--transport", choices=("memory", "zmq"), default="memory")
    parser.add_argument("--timeout", type=float, default=240.0)
    parser.add_argument("--spool", default=None, help="folder for the raw frames (default: none)")
    args = parser.parse_args(argv)

    # a warm-up scan compiles the kernels (Numba, CUDA) before anything is timed
    warm = argparse.Namespace(**{**vars(args), "angles": 16, "transport": "memory"})
    live, _ = run_once(warm, 0)
    live.snapshot()
    rows = []
    live, row = run_once(args, 0)
    row.update(redraw_times(live, args))
    rows.append(row)
    # the next run starts as a new session would: this one's ring buffer (half the free device
    # memory) given back first, or the next one's buffer is sized from what is left
    del live
    _release_device_memory(args.backend)
    if args.rate:
        _, row = run_once(args, args.rate)
        rows.append(row)
    write_rows(rows, "bench_live")


if __name__ == "__main__":
    main()
