"""Timing helpers shared by the benchmarks (CUDA events on the GPU, perf_counter on the CPU)."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time


def gpu_time(fn, *, warmup: int = 2, repeat: int = 7) -> float:
    """Median seconds of ``fn()`` on the current CUDA stream, measured with events."""
    import cupy

    for _ in range(warmup):
        fn()
    cupy.cuda.Device().synchronize()
    times = []
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop) / 1e3)
    return statistics.median(times)


def wall_time(fn, *, warmup: int = 1, repeat: int = 5, sync=None) -> float:
    """Median wall seconds of ``fn()`` (``sync`` is called before reading the clock)."""
    for _ in range(warmup):
        fn()
        if sync:
            sync()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        if sync:
            sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def card_name() -> str:
    try:
        import cupy
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        return props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    except Exception:
        return f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores"


def write_rows(rows: list[dict], name: str) -> None:
    """Print a table; with $OUT set (the GPU machine), also append the rows to $OUT/<name>.json."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    widths = {k: max(len(k), *(len(str(r.get(k, ""))) for r in rows)) for k in keys}
    print(" | ".join(k.ljust(widths[k]) for k in keys))
    for r in rows:
        print(" | ".join(str(r.get(k, "")).ljust(widths[k]) for k in keys))
    out = os.environ.get("OUT")
    if not out:
        return
    with open(os.path.join(out, f"{name}.json"), "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
