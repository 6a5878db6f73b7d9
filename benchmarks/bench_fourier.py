"""Gridrec on one GPU (Fourier gridding, a gather with no atomics) against FBP and ASTRA.

Default problem: slices of 2048² from 1800 angles (the issue's reference scan), device
resident, in slabs of ``--slices`` rows. Times are medians of CUDA-event runs after warm-ups
(``_timing.gpu_time``); every row says the card. Three parts, each optional:

``--profile``
    Where the time of one slab goes, stage by stage (``gridrec(..., stats=)``: pack the slice
    pairs, FFT them, filter and shift the spectra, gather onto the grid, 2D inverse FFT, crop),
    in single and half precision; and whether a second compute stream pays: two slabs at once
    (flat field, ``-log`` and gridrec), each in its own thread, stream and cuFFT plans, against
    the same slabs one after another.
``--compare`` (default on)
    Milliseconds per slab and per slice pair: gridrec single and half against ``fbp``
    (float32 ``z4p2`` and the half-precision ``hh8p1``) and ASTRA's ``FBP_CUDA`` (one slice,
    host to host, where ``import astra`` works), with the relative difference to FBP on a
    smooth phantom.
``--full-volume``
    ``tomolab.reconstruct(algorithm="gridrec")`` of a ``--rows`` × n² volume host memory to
    host memory, and the stream's stage timings (single and half precision).
``--gather-compare``
    The two GPU gather kernels, ``gather="tiles"`` (the default) and ``gather="nodes"``, on
    the same slab: milliseconds per stage and per slab (the whole call, CUDA events) in
    single and half precision, their relative difference on the random slab and on a smooth
    phantom, and each one's difference to FBP there. One table, about a minute on an H100:

    python3 benchmarks/bench_fourier.py --gather-compare --no-compare

``--gather KIND`` picks the kernel for ``--profile``, ``--compare`` and the stage timings of
``--full-volume`` (its ``tomolab.reconstruct`` rows use the default; default ``tiles``).

    python benchmarks/bench_fourier.py [--n 2048] [--angles 1800] [--slices 16]
                                       [--profile] [--no-compare] [--full-volume --rows 2048]
                                       [--gather-compare] [--gather tiles|nodes]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _timing import card_name, gpu_time, wall_time, write_rows


def _blob_sinograms(n_slices, angles, n, center):
    """Gaussian blobs inside the field of view, exact line integrals (a smooth phantom)."""
    s = np.arange(n) - center
    out = np.zeros((n_slices, angles.size, n), np.float32)
    rng = np.random.default_rng(1)
    for z in range(n_slices):
        for _ in range(4):
            x0, y0 = rng.uniform(-0.25 * n, 0.25 * n, 2)
            sigma, value = rng.uniform(0.03 * n, 0.1 * n), rng.uniform(-0.01, 0.03)
            at = x0 * np.cos(angles) + y0 * np.sin(angles)
            out[z] += (value * np.sqrt(2 * np.pi) * sigma
                       * np.exp(-(s - at[:, None]) ** 2 / (2 * sigma ** 2))).astype(np.float32)
    return out


def profile(d_sino, angles, center, rows, card, date, repeat=5, gather="tiles"):
    """Stage timings of one slab (``stats=``), and one stream against two."""
    import statistics
    import threading

    import cupy

    from tomolab.recon import gridrec

    gridrec = functools.partial(gridrec, gather=gather)
    n_z, n_angles, n = d_sino.shape
    n_b = (n_z + 1) // 2
    for precision in ("single", "half"):
        gridrec(d_sino, angles, center=center, precision=precision)  # compile, plans
        runs = []
        for _ in range(repeat):
            stats = {}
            gridrec(d_sino, angles, center=center, precision=precision, stats=stats)
            runs.append(stats)
        for stage in runs[0]:
            ms = statistics.median(r[stage] for r in runs) * 1e3
            rows.append({"date": date, "card": card, "precision": precision, "stage": stage,
                         "slices": n_z, "ms": round(ms, 3), "ms per pair": round(ms / n_b, 3)})

    # a second compute stream: two slabs at once, each from uint16 counts (flat field, -log,
    # gridrec) in its own host thread, stream and cuFFT plans (CuPy's plan cache is per
    # thread), against the same slabs one after another on one stream
    raw = cupy.asarray(np.random.default_rng(2).integers(20000, 60000, (n_angles, n_z, n),
                                                         dtype=np.uint16))
    flat = cupy.full((n_z, n), 61000, cupy.float32)
    n_slabs = 8

    def slab():
        sino = (-cupy.log(raw / flat)).astype(cupy.float32).transpose(1, 0, 2)
        return gridrec(sino, angles, center=center)

    def one_stream():
        for _ in range(n_slabs):
            slab()

    streams = [cupy.cuda.Stream(non_blocking=True) for _ in range(2)]

    def worker(stream, count):
        with stream:
            for _ in range(count):
                slab()
            stream.synchronize()

    def two_streams():
        threads = [threading.Thread(target=worker, args=(s, n_slabs // 2)) for s in streams]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    for what, fn in (("one stream", one_stream), ("two streams, two threads", two_streams)):
        t = wall_time(fn, warmup=1, repeat=repeat, sync=cupy.cuda.Device().synchronize)
        rows.append({"date": date, "card": card, "precision": "single",
                     "stage": f"{n_slabs} slabs from uint16 counts, {what}", "slices": n_z,
                     "ms": round(t * 1e3, 3), "ms per pair": round(t * 1e3 / (n_slabs * n_b), 3)})


def compare(d_sino, sino, angles, center, rows, card, date, gather="tiles"):
    """gridrec against FBP (two kernels) and ASTRA, and its difference to FBP."""
    import cupy

    from tomolab.recon import fbp, gridrec

    gridrec = functools.partial(gridrec, gather=gather)
    n_z, n_angles, n = sino.shape

    def row(what, seconds, slices, rel=None):
        rows.append({"date": date, "card": card, "what": what, "n": n, "angles": n_angles,
                     "slices": slices, "ms": round(seconds * 1e3, 3),
                     "ms per pair": round(seconds * 1e3 * 2 / slices, 3),
                     "GU/s": round(slices * n * n * n_angles / seconds / 1e9, 1),
                     "rel. diff to fbp": "" if rel is None else f"{rel:.1e}"})

    mask = cupy.asarray(np.hypot(*(np.mgrid[:n, :n] - (n - 1) / 2.0)) < 0.45 * n)
    smooth = cupy.asarray(_blob_sinograms(2, angles, n, center))
    reference = fbp(smooth, angles, center=center)

    def rel(a, b):
        return float(cupy.linalg.norm((a - b)[:, mask]) / cupy.linalg.norm(b[:, mask]))

    single = gridrec(smooth, angles, center=center)
    for precision in ("single", "half"):
        ours = gridrec(smooth, angles, center=center, precision=precision)
        t = gpu_time(lambda p=precision: gridrec(d_sino, angles, center=center, precision=p))
        row(f"tomolab gridrec, precision={precision} (rel. diff to single "
            f"{rel(ours, single):.1e})", t, n_z, rel(ours, reference))
    for kernel, what in (("auto", "float32 z4p2"), ("hh8p1", "half hh8p1")):
        ours = fbp(smooth, angles, center=center, kernel=kernel)
        t = gpu_time(lambda k=kernel: fbp(d_sino, angles, center=center, kernel=k))
        row(f"tomolab fbp, {what}", t, n_z, rel(ours, reference))
    one = sino[:1]
    t = wall_time(lambda: gridrec(cupy.asarray(one), angles, center=center).get(),
                  sync=cupy.cuda.Device().synchronize)
    row("tomolab gridrec, one slice, host to host", t, 1)
    t = wall_time(lambda: fbp(cupy.asarray(one), angles, center=center).get(),
                  sync=cupy.cuda.Device().synchronize)
    row("tomolab fbp, one slice, host to host", t, 1)
    try:
        import astra
    except ImportError as exc:
        print("ASTRA not importable here:", exc)
        return
    vol_geom = astra.create_vol_geom(n, n)
    proj_geom = astra.create_proj_geom("parallel", 1.0, n, angles)
    sino_id = astra.data2d.create("-sino", proj_geom, sino[0])
    rec_id = astra.data2d.create("-vol", vol_geom)
    cfg = astra.astra_dict("FBP_CUDA")
    cfg["ReconstructionDataId"], cfg["ProjectionDataId"] = rec_id, sino_id
    cfg["option"] = {"FilterType": "ram-lak"}
    alg = astra.algorithm.create(cfg)
    t = wall_time(lambda: astra.algorithm.run(alg))
    row(f"ASTRA {astra.__version__} FBP_CUDA, one slice, host to host", t, 1)
    astra.algorithm.delete(alg)
    astra.data2d.delete([sino_id, rec_id])


def gather_compare(d_sino, angles, center, rows, card, date, repeat=7):
    """``gather="tiles"`` against ``gather="nodes"``: stages, slabs and differences, one table."""
    import statistics

    import cupy

    from tomolab.recon import fbp, gridrec

    n_z, n_angles, n = d_sino.shape
    gathers = ("tiles", "nodes")

    def row(precision, what, tiles, nodes, unit="ms"):
        ratio = f"{nodes / tiles:.2f}" if unit == "ms" and tiles else ""

        def fmt(x):
            return "" if x is None else f"{x:.3f}" if unit == "ms" else f"{x:.1e}"
        rows.append({"date": date, "card": card, "slab": f"{n_z} × {n_angles} × {n}",
                     "precision": precision, "what": f"{what} [{unit}]",
                     "tiles": fmt(tiles), "nodes": fmt(nodes), "nodes / tiles": ratio})

    for precision in ("single", "half"):
        stages, slab = {}, {}
        for gather in gathers:
            call = functools.partial(gridrec, d_sino, angles, center=center,
                                     precision=precision, gather=gather)
            call()  # compile, plans
            runs = []
            for _ in range(repeat):
                stats = {}
                call(stats=stats)
                runs.append(stats)
            stages[gather] = {k: statistics.median(r[k] for r in runs) * 1e3 for k in runs[0]}
            slab[gather] = gpu_time(call, warmup=1, repeat=repeat) * 1e3
        for stage in stages["tiles"]:
            row(precision, stage, stages["tiles"][stage], stages["nodes"][stage])
        row(precision, "per slab, the whole call", slab["tiles"], slab["nodes"])

    mask = cupy.asarray(np.hypot(*(np.mgrid[:n, :n] - (n - 1) / 2.0)) < 0.45 * n)

    def rel(a, b):
        return float(cupy.linalg.norm((a - b)[:, mask]) / cupy.linalg.norm(b[:, mask]))

    smooth = cupy.asarray(_blob_sinograms(2, angles, n, center))
    reference = fbp(smooth, angles, center=center)
    for precision in ("single", "half"):
        on_random = {g: gridrec(d_sino, angles, center=center, precision=precision, gather=g)
                     for g in gathers}
        on_smooth = {g: gridrec(smooth, angles, center=center, precision=precision, gather=g)
                     for g in gathers}
        again = gridrec(d_sino, angles, center=center, precision=precision, gather="nodes")
        same = bool((again == on_random["nodes"]).all())
        row(precision, "nodes vs tiles, random slab", None,
            rel(on_random["nodes"], on_random["tiles"]), unit="rel. diff")
        row(precision, "nodes vs tiles, smooth phantom", None,
            rel(on_smooth["nodes"], on_smooth["tiles"]), unit="rel. diff")
        row(precision, "vs fbp, smooth phantom", rel(on_smooth["tiles"], reference),
            rel(on_smooth["nodes"], reference), unit="rel. diff")
        row(precision, f"nodes twice on the random slab: bitwise equal = {same}", None, None,
            unit="-")
        del on_random, on_smooth, again


def full_volume(args, rows, stage_rows, card, date):
    """A whole volume host memory to host memory through the public call and the stream."""
    import cupy  # noqa: F401  (the stream needs it; fail early if it is missing)

    import tomolab
    from tomolab.api import plan_reconstruction
    from tomolab.engine import reconstruct_rows
    from tomolab.recon import gridrec

    n_rows, n, na = args.rows, args.n, args.angles
    base = np.random.default_rng(0).integers(2000, 60000, size=(n_rows, n), dtype=np.uint16)
    projections = np.empty((na, n_rows, n), np.uint16)
    for a in range(na):
        projections[a] = np.roll(base, a, axis=1)
    flats = np.full((4, n_rows, n), 61000, np.uint16)
    darks = np.full((2, n_rows, n), 100, np.uint16)
    scan = tomolab.from_arrays(projections, np.linspace(0, np.pi, na, endpoint=False),
                               flats=flats, darks=darks, chunks={"angle": 64, "row": -1, "col": -1})
    center = n / 2 - 0.5
    for algorithm in ("gridrec", "fbp"):
        options = {"center": center, "backend": "cupy", "algorithm": algorithm}
        tomolab.reconstruct(scan, rows="0:16", **options)  # compile, warm up
        t = time.perf_counter()
        volume = tomolab.reconstruct(scan, **options)
        seconds = time.perf_counter() - t
        assert np.isfinite(volume.values[::97, ::97, ::97]).all()
        del volume
        rows.append({"date": date, "card": card,
                     "what": f"tomolab reconstruct(algorithm={algorithm!r}), host to host",
                     "rows": n_rows, "n": n, "angles": na, "s": round(seconds, 2)})
    plan = plan_reconstruction(scan, center=center, backend="cupy", algorithm="gridrec")
    for precision in ("single", "half"):
        algorithm = functools.partial(gridrec, precision=precision, gather=args.gather)
        stats = {}
        t = time.perf_counter()
        reconstruct_rows(scan, plan.row_range, center=center, algorithm=algorithm, backend="cupy",
                         size=n, stats=stats, filter="ramp", pad_mode="edge")
        stage_rows.append({"date": date, "card": card, "algorithm": f"gridrec {precision}",
                           "wall s": round(time.perf_counter() - t, 2),
                           **{k: round(v, 2) if isinstance(v, float) else v
                              for k, v in stats.items()}})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--angles", type=int, default=1800)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-compare", action="store_true")
    parser.add_argument("--full-volume", action="store_true")
    parser.add_argument("--rows", type=int, default=2048)
    parser.add_argument("--gather-compare", action="store_true")
    parser.add_argument("--gather", choices=("tiles", "nodes"), default="tiles")
    args = parser.parse_args()

    import cupy

    n, na, nz = args.n, args.angles, args.slices
    angles = np.linspace(0, np.pi, na, endpoint=False)
    sino = np.random.default_rng(0).random((nz, na, n), dtype=np.float32)
    d_sino = cupy.asarray(sino)
    center = (n - 1) / 2 + 3.3
    card, date = card_name(), datetime.date.today().isoformat()
    if args.gather_compare:
        rows = []
        gather_compare(d_sino, angles, center, rows, card, date)
        write_rows(rows, "fourier_gather")
        print("adopt gather='nodes' where, in single precision, nodes vs tiles is within 1e-5 "
              "and the whole call takes at most 8 ms per slab of 16 slices")
    if args.profile:
        rows = []
        profile(d_sino, angles, center, rows, card, date, gather=args.gather)
        write_rows(rows, "fourier_stages")
    if not args.no_compare:
        rows = []
        compare(d_sino, sino, angles, center, rows, card, date, gather=args.gather)
        write_rows(rows, "fourier_compare")
    if args.full_volume:
        rows, stage_rows = [], []
        full_volume(args, rows, stage_rows, card, date)
        write_rows(rows, "fourier_full_volume")
        write_rows(stage_rows, "fourier_full_volume_stages")


if __name__ == "__main__":
    main()
