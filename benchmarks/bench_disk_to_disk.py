"""Full volume disk to disk: a DXchange scan file in, a reconstructed volume on disk out.

Issue target: 2048 slices of 2048² from 1800 angles, disk to disk in at least 80 % of the disk's
sequential read bandwidth measured on the same machine (15.1 GB of uint16 projections in, 34.4 GB
of float32 slices out).

Method
------
1. Write a DXchange file (``/exchange/data``, ``data_white``, ``data_dark``, ``theta`` in
   degrees) as a beamline does: uncompressed, one HDF5 chunk per projection (AreaDetector's
   default; ``--layout contiguous`` for one unchunked dataset). The projections are rolled copies
   of one random frame: distinct, cheap to make, and incompressible. The reconstruction reads
   this file in slabs of detector rows, i.e. a short piece of every projection per slab: the hard
   case of this layout, and the one beamlines hand us.
2. Measure the file system under ``--dir``: sequential writes of a scratch file (large blocks, one
   stream and ``--threads`` streams at distinct offsets, timed up to the end of ``fsync``), then
   sequential reads of the scan file itself, one stream and ``--threads`` streams. The larger of
   each pair is "the disk's" bandwidth.
3. A file just written sits in the page cache, and reading it again runs at memory speed, which
   says nothing about the disk. So before every timed read the file is flushed (``fsync``) and
   its clean pages dropped (``posix_fadvise(POSIX_FADV_DONTNEED)``). Two checks that this worked:
   ``mincore`` reports the fraction of the file still cached, and a warm re-read gives the
   memory-speed rate that a cold read must stay well below. (On network file systems the server
   may still cache the file; then the "disk" figures are the server's.)
4. Time ``tomolab.open_scan`` + ``tomolab.reconstruct_to`` (its final rename included) wall clock,
   then ``os.sync()`` so the volume is on disk; both times are reported, and the target uses the
   synced one: input bytes / seconds against the disk's read bandwidth.

    python benchmarks/bench_disk_to_disk.py [--rows 2048] [--n 2048] [--angles 1800] [--dir DIR]
        [--format zarr|hdf5|tiff] [--layout per-projection|contiguous] [--backend auto]
        [--keep] [--no-record] [--host-to-host-seconds S]

The GPU stream's host options come from ``TOMOLAB_STREAM`` (``current``, ``candidate``: see
``tomolab.engine.stream.StreamOptions``), recorded in the row; e.g. a 16-bit output encoded on
the GPU: ``TOMOLAB_STREAM=candidate python benchmarks/bench_disk_to_disk.py --dtype uint16``.
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _timing import card_name, write_rows  # noqa: E402

BLOCK = 32 << 20  # bytes per read/write call in the bandwidth passes
N_FLATS, N_DARKS = 20, 10
OUTPUTS = {"zarr": "out.zarr", "hdf5": "out.h5", "tiff": "out_tiff"}


def write_scan(path, rows, n, n_angles, layout):
    """DXchange file of rolled copies of one random frame, a few frames in memory at a time."""
    import h5py
    base = np.random.default_rng(0).integers(2000, 60000, size=(rows, n), dtype=np.uint16)
    chunks = (1, rows, n) if layout == "per-projection" else None
    step = max(1, (64 << 20) // base.nbytes)
    with h5py.File(path, "w") as f:
        f.create_dataset("implements", data="exchange:measurement")
        data = f.create_dataset("exchange/data", (n_angles, rows, n), np.uint16, chunks=chunks)
        block = np.empty((step, rows, n), np.uint16)
        for start in range(0, n_angles, step):
            k = min(step, n_angles - start)
            for i in range(k):
                block[i] = np.roll(base, start + i, axis=1)
            data[start:start + k] = block[:k]
        for name, count, value in (("data_white", N_FLATS, 61000), ("data_dark", N_DARKS, 100)):
            f.create_dataset(f"exchange/{name}", data=np.full((count, rows, n), value, np.uint16),
                             chunks=chunks)
        degrees = np.linspace(0, 180, n_angles, endpoint=False)
        theta = f.create_dataset("exchange/theta", data=degrees)
        theta.attrs["units"] = "degree"


def cached_fraction(path) -> float | None:
    """Fraction of the file's pages in the page cache (``mincore``); None where unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mmap.restype = ctypes.c_void_p
        libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                              ctypes.c_int, ctypes.c_long]
        libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
        libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
        size, page = os.path.getsize(path), os.sysconf("SC_PAGE_SIZE")
        fd = os.open(path, os.O_RDONLY)
        try:
            addr = libc.mmap(None, size, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
            if addr in (None, ctypes.c_void_p(-1).value):
                return None
            vec = (ctypes.c_ubyte * (-(-size // page)))()
            ok = libc.mincore(addr, size, vec) == 0
            libc.munmap(addr, size)
        finally:
            os.close(fd)
        return float(np.mean(np.frombuffer(vec, np.uint8) & 1)) if ok else None
    except (OSError, AttributeError, ValueError):
        return None


def evict(path) -> float | None:
    """Flush the file and drop it from the page cache; return the fraction still cached."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return cached_fraction(path)


def readahead_kb(path) -> int | None:
    """Read-ahead (KiB) of the block device under ``path``: how far the kernel reads ahead."""
    dev = os.stat(path).st_dev
    base = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    for queue in (base / "queue", base / ".." / "queue"):  # a disk, or a partition of one
        try:
            return int((queue / "read_ahead_kb").read_text())
        except (OSError, ValueError):
            continue
    return None


def stream(path, size, threads, *, write=False, start=0) -> float:
    """Bytes/s reading (or writing, fsync included) ``size`` bytes in ``threads`` parts at once."""
    fd = os.open(path, (os.O_WRONLY | os.O_CREAT) if write else os.O_RDONLY, 0o644)
    part = -(-size // threads // BLOCK) * BLOCK
    payload = np.random.default_rng(1).bytes(BLOCK) if write else None

    def run(k):
        view = memoryview(payload if write else bytearray(BLOCK))
        at, end = start + k * part, start + min(size, (k + 1) * part)
        while at < end:
            m = min(BLOCK, end - at)
            done = os.pwrite(fd, view[:m], at) if write else os.preadv(fd, [view[:m]], at)
            if done <= 0:
                raise OSError(f"{path}: short {'write' if write else 'read'} at byte {at}")
            at += done

    try:
        t = time.perf_counter()
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(run, range(threads)))
        if write:
            os.fsync(fd)
        return size / (time.perf_counter() - t)
    finally:
        os.close(fd)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--angles", type=int, default=1800)
    parser.add_argument("--dir", default="d2d-scratch", help="scratch folder on the disk measured")
    parser.add_argument("--format", choices=list(OUTPUTS), default="zarr")
    parser.add_argument("--layout", choices=["per-projection", "contiguous"],
                        default="per-projection")
    parser.add_argument("--backend", choices=["auto", "cupy", "numpy"], default="auto")
    parser.add_argument("--dtype", choices=["float32", "float16", "uint16"], default="float32",
                        help="how the volume is stored (uint16: range from reconstruct_to's preview)")
    parser.add_argument("--threads", type=int, default=4, help="streams of the parallel passes")
    parser.add_argument("--host-to-host-seconds", type=float, help="bench_full_volume.py's time")
    parser.add_argument("--keep", action="store_true", help="keep the scratch files")
    parser.add_argument("--no-record", action="store_true", help="print only, no rows in $OUT")
    args = parser.parse_args()

    import tomolab

    rows, n, na = args.rows, args.n, args.angles
    in_bytes = (na + N_FLATS + N_DARKS) * rows * n * 2
    out_bytes = rows * n * n * np.dtype(args.dtype).itemsize
    probe_bytes = int(np.clip(out_bytes, 256 << 20, 8 << 30))  # the write-test file
    need = max(in_bytes + out_bytes, probe_bytes) + max(1 << 30, (in_bytes + out_bytes) // 20)
    work = Path(args.dir).resolve()
    made_dir = not work.exists()
    work.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(work).free
    if free < need:
        if made_dir:
            work.rmdir()
        sys.exit(f"{work}: {free / 1e9:.1f} GB free, but the input ({in_bytes / 1e9:.1f} GB) and "
                 f"the output ({out_bytes / 1e9:.1f} GB) need {need / 1e9:.1f} GB with margin; "
                 f"try --rows {max(1, int(0.9 * rows * free / need) // 8 * 8)}")
    scan_path, probe = work / "scan.h5", work / "write-test.bin"
    out_path = work / OUTPUTS[args.format]
    try:
        speeds = {}
        for threads in sorted({1, args.threads}):
            speeds[f"write x{threads}"] = stream(probe, probe_bytes, threads, write=True)
            probe.unlink()
        t = time.perf_counter()
        write_scan(scan_path, rows, n, na, args.layout)
        size = os.path.getsize(scan_path)
        left = evict(scan_path)
        print(f"wrote {size / 1e9:.2f} GB ({args.layout}) in {time.perf_counter() - t:.1f} s; "
              f"{'?' if left is None else f'{left:.0%}'} of it cached after eviction")
        for threads in sorted({1, args.threads}):
            evict(scan_path)
            speeds[f"read x{threads}"] = stream(scan_path, size, threads)
        tail = min(size, 1 << 30)  # warm now, unless memory is short: the memory-speed rate
        warm = stream(scan_path, tail, 1, start=size - tail)
        for what, rate in speeds.items():
            print(f"  {what:9s} {rate / 1e9:6.2f} GB/s")
        print(f"  warm read {warm / 1e9:6.2f} GB/s (page cache); read-ahead "
              f"{readahead_kb(scan_path) or '?'} KiB")
        disk_read = max(v for k, v in speeds.items() if k.startswith("read"))
        disk_write = max(v for k, v in speeds.items() if k.startswith("write"))
        if size < 256 << 20:
            print("(the scan is too small for a meaningful bandwidth: use at least 256 MB)")
        elif disk_read > 0.7 * warm:
            print("WARNING: cold reads ran near page-cache speed: eviction did not work here (or "
                  "the file system caches elsewhere); the disk read bandwidth is not trustworthy")

        left = evict(scan_path)
        if left:
            print(f"WARNING: {left:.0%} of the scan is still in the page cache before the run")
        t = time.perf_counter()
        scan = tomolab.open_scan(scan_path)
        stages: dict = {}
        volume = tomolab.reconstruct_to(scan, out_path, center=n / 2 - 0.5,
                                        backend=args.backend, overwrite=True, dtype=args.dtype,
                                        stats=stages)
        seconds = time.perf_counter() - t
        os.sync()
        synced = time.perf_counter() - t
        assert np.isfinite(volume[rows // 2].values).all(), "the middle slice is not finite"
    finally:
        if not args.keep:
            for p in [scan_path, probe, out_path, *work.glob(f".{out_path.name}*")]:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                elif p.exists():
                    p.unlink()
            if made_dir and not any(work.iterdir()):
                work.rmdir()

    read_floor, write_floor = in_bytes / disk_read, out_bytes / disk_write
    bounds = [("read input at disk read speed", read_floor),
              ("write output at disk write speed", write_floor)]
    if args.host_to_host_seconds:
        bounds.append(("reconstruct host to host (given)", args.host_to_host_seconds))
    print("stages (s; the stream's reader, writer and GPU overlap): " + ", ".join(
        f"{k} {v:.2f}" if isinstance(v, float) else f"{k} {v}" for k, v in stages.items()))
    print(f"reconstruct_to: {seconds:.2f} s, {synced:.2f} s with os.sync(); what bounds it:")
    for what, s in bounds:
        print(f"  {what:34s} {s:7.2f} s")
    print(f"  {'all overlapped (max) / in series':34s} {max(s for _, s in bounds):7.2f} / "
          f"{sum(s for _, s in bounds):.2f} s")
    achieved = in_bytes / synced
    if args.no_record:
        os.environ.pop("OUT", None)
    write_rows([{"date": datetime.date.today().isoformat(), "card": card_name(),
                 "volume": f"{rows} × {n}²", "angles": na, "input GB": round(in_bytes / 1e9, 1),
                 "output GB": round(out_bytes / 1e9, 1), "s total": round(synced, 2),
                 "s before sync": round(seconds, 2), "input GB/s": round(achieved / 1e9, 2),
                 "disk read GB/s": round(disk_read / 1e9, 2),
                 "% of disk read": round(100 * achieved / disk_read, 1),
                 "disk write GB/s": round(disk_write / 1e9, 2), "format": args.format,
                 "dtype": args.dtype, "layout": args.layout,
                 "TOMOLAB_STREAM": os.environ.get("TOMOLAB_STREAM", "current")}], "disk_to_disk")


if __name__ == "__main__":
    main()
