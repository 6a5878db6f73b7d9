"""Full-volume reconstruction host memory to host memory, on the GPU, through the slab stream.

Issue target (H100 80GB): 2048 slices of 2048² from 1800 angles in ≤ 2.0 s. The transfers alone
(uint16 in, float32 out, at the pinned copy rate measured here) bound it from below.

    python benchmarks/bench_full_volume.py [--rows 2048] [--n 2048] [--angles 1800]
                                           [--precision single half]

For each precision it times ``tomolab.reconstruct`` (the public call, output allocated inside), then
runs the same plan again with the stream's stage timings, to tell what bounds the run: busy seconds
of the reader and writer threads, GPU seconds of the compute stream, and the main loop's waits.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _timing import card_name, write_rows  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--angles", type=int, default=1800)
    parser.add_argument("--precision", nargs="+", default=["single", "half"])
    parser.add_argument("--half-kernels", nargs="*", default=[],
                        help="also time these half-precision kernels (stage timings only)")
    args = parser.parse_args()

    import cupy
    import cupyx

    import tomolab

    rows, n, na = args.rows, args.n, args.angles
    rng = np.random.default_rng(0)
    base = rng.integers(2000, 60000, size=(rows, n), dtype=np.uint16)
    t = time.perf_counter()
    projections = np.empty((na, rows, n), np.uint16)
    for a in range(na):  # distinct projections without paying for 7 G random numbers
        projections[a] = np.roll(base, a, axis=1)
    print(f"made {projections.nbytes / 1e9:.1f} GB of projections in {time.perf_counter() - t:.1f} s")
    flats = np.full((4, rows, n), 61000, np.uint16)
    darks = np.full((2, rows, n), 100, np.uint16)
    scan = tomolab.from_arrays(projections, np.linspace(0, np.pi, na, endpoint=False), flats=flats,
                               darks=darks, chunks={"angle": 64, "row": -1, "col": -1})

    # pinned copy rates: the floor of this job
    pinned = cupyx.empty_pinned((256 << 20,), np.uint8)
    dev = cupy.empty_like(pinned)
    for _ in range(2):
        dev.set(pinned)
    cupy.cuda.Device().synchronize()
    t = time.perf_counter()
    for _ in range(5):
        dev.set(pinned)
    cupy.cuda.Device().synchronize()
    h2d = 5 * pinned.nbytes / (time.perf_counter() - t)
    t = time.perf_counter()
    for _ in range(5):
        dev.get(out=pinned)
    cupy.cuda.Device().synchronize()
    d2h = 5 * pinned.nbytes / (time.perf_counter() - t)
    floor = projections.nbytes / h2d + rows * n * n * 4 / d2h

    from tomolab.api import plan_reconstruction

    date = datetime.date.today().isoformat()
    rows_out, stage_rows = [], []
    for precision in args.precision:
        options = dict(center=n / 2 - 0.5, backend="cupy", precision=precision)
        tomolab.reconstruct(scan, rows="0:16", **options)  # compile, warm up
        t = time.perf_counter()
        volume = tomolab.reconstruct(scan, **options)
        seconds = time.perf_counter() - t
        assert np.isfinite(volume.values[::97, ::97, ::97]).all()
        del volume
        rows_out.append({"date": date, "card": card_name(),
                         "what": f"tomolab reconstruct, host to host, precision={precision}",
                         "rows": rows, "n": n, "angles": na, "s": round(seconds, 2),
                         "GU/s": round(rows * n * n * na / seconds / 1e9, 1),
                         "transfer floor s": round(floor, 2),
                         "H2D GB/s": round(h2d / 1e9, 1), "D2H GB/s": round(d2h / 1e9, 1)})
        stats = {}
        t = time.perf_counter()
        plan_reconstruction(scan, **options).run(stats=stats)
        stage_rows.append({"precision": precision, "wall s": round(time.perf_counter() - t, 2),
                           **{k: round(v, 2) if isinstance(v, float) else v
                              for k, v in stats.items()}})
    for kernel in args.half_kernels:
        import dataclasses
        plan = dataclasses.replace(plan_reconstruction(scan, center=n / 2 - 0.5, backend="cupy",
                                                       precision="half"), kernel=kernel)
        plan.run(rows=range(16))  # compile
        stats = {}
        t = time.perf_counter()
        plan.run(stats=stats)
        stage_rows.append({"precision": f"half, kernel {kernel}",
                           "wall s": round(time.perf_counter() - t, 2),
                           **{k: round(v, 2) if isinstance(v, float) else v
                              for k, v in stats.items()}})
    write_rows(rows_out, "full_volume")
    write_rows(stage_rows, "full_volume_stages")


if __name__ == "__main__":
    main()
