"""The host side of the GPU stream: the measured options against the candidate ones, one run.

Issue 16 (host to host, 16-bit disk to disk). ``tomolab.engine.stream.StreamOptions`` holds what
the host does around the GPU: threads copying slabs out of pinned memory, the output's pages
faulted in ahead of the writer, 16-bit outputs encoded on the GPU before the download. This
script runs each variant in one process on the same scan, checks it against the current one
(bit for bit) and prints the stream's stage timings:

1. host to host, ``tomolab.reconstruct`` of ``--rows`` × ``--n``² from ``--angles`` angles
   (uint16 in, float32 out; ``--algorithm``, default gridrec): current, candidate, the
   candidate's changes one by one, then current and candidate again. A process's first full
   run also pays for allocating pinned memory (``pinned``; later runs find it in CuPy's pool).
   On a virtual machine that returns free memory to its host (free page reporting: the
   workplace's and, likely, the GPU machine's kernels run with ``page_reporting_order=11``),
   touching memory the host took back is several times slower than touching memory just
   freed, so each run starts ``--settle`` seconds after the last one freed its volume, and
   every run pays that first touch as a user's first run does (see ``write``);
2. ``reconstruct_to`` a uint16 zarr store of the first ``--disk-rows`` rows under ``--dir``
   (default /tmp; mostly page cache, not the disk's speed): current (encoded on the host after a float32 download) against the candidate
   (encoded on the GPU). Stored values and ``clipped_voxels`` must be identical.

    python benchmarks/bench_host_stream.py [--rows 2048] [--n 2048] [--angles 1800]
        [--algorithm gridrec] [--dir /tmp] [--disk-rows 1024] [--settle 3] [--no-disk]

``--cpu`` times only the host's part (no GPU needed): slabs copied from a buffer into a freshly
allocated volume by the writer's threads while a paced "compute" makes the next slab, with and
without faulting the pages in ahead: what the options cost on a 2-core machine.

    python benchmarks/bench_host_stream.py --cpu [--rows 256] [--n 2048] [--compute-ms 28] [--rounds 5]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _timing import card_name, write_rows

#: (label, TOMOLAB_STREAM) of the host-to-host runs, in order
HOST_VARIANTS = [
    ("current", "current"),
    ("candidate", "candidate"),
    ("copy threads 16 only", "write_threads=16"),
    ("copy threads 16 + prefault", "write_threads=16,prefault=1"),
    ("current, again", "current"),
    ("candidate, again", "candidate"),
]
STAGES = ("setup", "pinned", "first_write", "read", "compute", "write", "wait_read",
          "wait_write", "slices_prefaulted", "write_threads", "encoded_on_device")


def _stage_columns(stats):
    return {k: (round(stats[k], 2) if isinstance(stats[k], float) else stats[k])
            for k in STAGES if k in stats}


def make_scan(rows, n, n_angles):
    import tomolab

    base = np.random.default_rng(0).integers(2000, 60000, size=(rows, n), dtype=np.uint16)
    projections = np.empty((n_angles, rows, n), np.uint16)

    def fill(a):  # distinct projections without 7 G random numbers
        projections[a] = np.roll(base, a, axis=1)

    with ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        list(pool.map(fill, range(n_angles)))
    flats = np.full((4, rows, n), 61000, np.uint16)
    darks = np.full((2, rows, n), 100, np.uint16)
    return tomolab.from_arrays(projections, np.linspace(0, np.pi, n_angles, endpoint=False),
                               flats=flats, darks=darks, chunks={"angle": 64, "row": -1, "col": -1})


def host_to_host(scan, options, sample, settle):
    from tomolab.api import plan_reconstruction

    date, card = datetime.date.today().isoformat(), card_name()
    plan = plan_reconstruction(scan, **options)
    for stream in ("current", "candidate"):  # compile, warm up kernels and plans (not pinned pool)
        os.environ["TOMOLAB_STREAM"] = stream
        plan.run(range(8))
    if options["backend"] == "cupy":
        import cupy

        from tomolab.io import encode_rows, uint16_encoding

        for dtype in ("uint16", "float16"):  # compile the GPU encoders
            encode_rows(cupy.zeros((2, 64, 64), cupy.float32), dtype, uint16_encoding(0.0, 1.0))
    reference, table = None, []
    for label, stream in HOST_VARIANTS:
        time.sleep(settle)  # freed memory goes back to a VM's host meanwhile, as before a first run
        os.environ["TOMOLAB_STREAM"] = stream
        stats: dict = {}
        t = time.perf_counter()
        volume = plan.run(stats=stats)
        seconds = time.perf_counter() - t
        picked = volume[sample]
        if reference is None:
            reference = picked.copy()
        same = bool(np.array_equal(picked, reference, equal_nan=True))
        del volume, picked
        table.append({"date": date, "card": card, "variant": label, "TOMOLAB_STREAM": stream,
                      "s": round(seconds, 2), "same as current": same, **_stage_columns(stats)})
    return table


def to_uint16(scan, options, folder, sample, rows):
    import zarr

    import tomolab

    date, card = datetime.date.today().isoformat(), card_name()
    table, reference = [], None
    for label, stream in (("current: host encodes", "current"),
                          ("candidate: GPU encodes", "candidate")):
        os.environ["TOMOLAB_STREAM"] = stream
        path = Path(tempfile.mkdtemp(dir=folder)) / "vol16.zarr"
        stats: dict = {}
        try:
            t = time.perf_counter()
            volume = tomolab.reconstruct_to(scan, path, dtype="uint16", stats=stats,
                                            rows=f"0:{rows}", **options)
            seconds = time.perf_counter() - t
            stored = zarr.open_group(str(path), mode="r")["volume"]
            picked = np.stack([stored[z] for z in range(0, stored.shape[0], sample)])
            found = (picked, volume.attrs["clipped_voxels"], volume.attrs["value_range"])
        finally:
            shutil.rmtree(path.parent, ignore_errors=True)
        if reference is None:
            reference = found
        same = (np.array_equal(found[0], reference[0]) and found[1] == reference[1]
                and found[2] == reference[2])
        table.append({"date": date, "card": card,
                      "variant": f"reconstruct_to uint16 zarr, {rows} rows, {label}",
                      "TOMOLAB_STREAM": stream, "s": round(seconds, 2),
                      "same as current": bool(same), "clipped": int(found[1]),
                      **_stage_columns(stats)})
    return table


def cpu_only(rows, n, compute_ms, threads_list, rounds):
    """The writer's copies into a fresh volume, paced by a pretend compute, with and without
    faulting the pages in ahead (the stream's own ``populate``); interleaved rounds, medians,
    after one untimed allocation (a process's first large allocation may wait for the kernel
    to reclaim memory, whichever variant comes first)."""
    import statistics

    from tomolab.engine.stream import populate

    height = 32
    slab = np.random.default_rng(0).random((height, n, n), np.float32)  # the pinned buffer
    np.ones((rows, n, n), np.float32)
    times: dict = {}
    for _ in range(rounds):
        for threads in threads_list:
            for prefault in (False, True):
                volume = np.empty((rows, n, n), np.float32)
                copier = ThreadPoolExecutor(threads)
                faulter = ThreadPoolExecutor(threads) if prefault else None
                t = time.perf_counter()
                faulting = [faulter.submit(populate, volume, z, z + 1)
                            for z in range(rows)] if faulter else []
                busy = 0.0
                for start in range(0, rows, height):
                    time.sleep(compute_ms / 1e3)  # the GPU making this slab; the writer waits
                    stop = min(start + height, rows)
                    w = time.perf_counter()
                    list(copier.map(lambda z, s=start, v=volume: np.copyto(v[s + z], slab[z]),
                                    range(stop - start)))
                    busy += time.perf_counter() - w
                seconds = time.perf_counter() - t
                supported = all(f.result() for f in faulting)
                copier.shutdown()
                if faulter:
                    faulter.shutdown()
                times.setdefault((threads, prefault and supported), []).append((seconds, busy))
                del volume
    return [{"date": datetime.date.today().isoformat(), "card": card_name(),
             "volume": f"{rows} × {n}²", "threads": threads, "prefault": prefault,
             "rounds": len(runs), "median s": round(statistics.median(r[0] for r in runs), 2),
             "min s": round(min(r[0] for r in runs), 2),
             "writer busy s (median)": round(statistics.median(r[1] for r in runs), 2),
             "paced compute s": round(-(-rows // height) * compute_ms / 1e3, 2)}
            for (threads, prefault), runs in times.items()]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--angles", type=int, default=1800)
    parser.add_argument("--algorithm", default="gridrec")
    parser.add_argument("--backend", default="cupy", choices=["cupy", "numpy"],
                        help="numpy: a smoke run of this script without a GPU (options unused)")
    parser.add_argument("--dir", default="/tmp", help="where the uint16 zarr stores go")
    parser.add_argument("--no-disk", action="store_true", help="host to host only")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds between host-to-host runs (see the module's notes)")
    parser.add_argument("--disk-rows", type=int, default=1024,
                        help="rows of the uint16 reconstruct_to runs (the first ones)")
    parser.add_argument("--sample", type=int, default=16, help="compare every this many slices")
    parser.add_argument("--cpu", action="store_true", help="the host's copies only, no GPU")
    parser.add_argument("--compute-ms", type=float, default=28.0,
                        help="--cpu: pretend GPU time per 32-row slab (H100, gridrec: ~28 ms)")
    parser.add_argument("--threads", type=int, nargs="+", help="--cpu: copy threads to try")
    parser.add_argument("--rounds", type=int, default=5, help="--cpu: interleaved rounds")
    args = parser.parse_args()

    if args.cpu:
        cores = os.cpu_count() or 1
        threads = args.threads or sorted({min(8, cores), min(16, cores)})
        write_rows(cpu_only(args.rows, args.n, args.compute_ms, threads, args.rounds),
                   "host_stream_cpu")
        return
    t = time.perf_counter()
    scan = make_scan(args.rows, args.n, args.angles)
    print(f"made the scan in {time.perf_counter() - t:.1f} s", flush=True)
    options = {"center": args.n / 2 - 0.5, "backend": args.backend, "algorithm": args.algorithm}
    sample = slice(None, None, args.sample)
    table = host_to_host(scan, options, sample, args.settle)
    if not args.no_disk:
        table += to_uint16(scan, options, args.dir, args.sample, min(args.disk_rows, args.rows))
    write_rows(table, "host_stream")
    for what, rows in (("host to host", [r for r in table if "reconstruct_to" not in r["variant"]]),
                       ("uint16 reconstruct_to", [r for r in table
                                                  if "reconstruct_to" in r["variant"]])):
        by = {name: [r["s"] for r in rows if r["TOMOLAB_STREAM"] == name]
              for name in ("current", "candidate")}
        if by["current"] and by["candidate"]:
            print(f"{what}: current {min(by['current']):.2f} s, candidate "
                  f"{min(by['candidate']):.2f} s (best of {len(by['current'])}, "
                  f"{len(by['candidate'])}); identical: "
                  f"{all(r['same as current'] for r in rows)}")


if __name__ == "__main__":
    main()
