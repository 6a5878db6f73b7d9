"""Backprojection throughput on one GPU: tomolab's kernel against ASTRA, in the same run.

Giga-updates per second (GU/s) = slices × n² × angles / seconds. Default problem: slices of
2048² from 1800 angles (the issue's reference scan). ASTRA runs where ``import astra`` works
(see ../shared/peers/README.md for a CUDA 13 machine).

    python benchmarks/bench_backprojection.py [--n 2048] [--angles 1800] [--slices 16]
"""

from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _timing import card_name, gpu_time, wall_time, write_rows  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--angles", type=int, default=1800)
    parser.add_argument("--slices", type=int, default=16)
    args = parser.parse_args()

    import cupy

    from tomolab.recon import backproject, fbp
    from tomolab.recon.backproject import KERNELS

    n, na, nz = args.n, args.angles, args.slices
    angles = np.linspace(0, np.pi, na, endpoint=False)
    rng = np.random.default_rng(0)
    sino = rng.random((nz, na, n), dtype=np.float32)
    d_sino = cupy.asarray(sino)
    center = (n - 1) / 2 + 3.3
    card = card_name()
    date = datetime.date.today().isoformat()
    rows = []

    def row(what, seconds, slices):
        rows.append({"date": date, "card": card, "what": what, "n": n, "angles": na,
                     "slices": slices, "ms": round(seconds * 1e3, 3),
                     "GU/s": round(slices * n * n * na / seconds / 1e9, 1)})

    reference = backproject(d_sino, angles, center=center, kernel="reference")
    for name in KERNELS:
        out = backproject(d_sino, angles, center=center, kernel=name)
        rel = float(cupy.linalg.norm(out - reference) / cupy.linalg.norm(reference))
        t = gpu_time(lambda: backproject(d_sino, angles, center=center, kernel=name))
        row(f"tomolab backproject [{name}] (rel diff to reference {rel:.1e})", t, nz)
    t = gpu_time(lambda: fbp(d_sino, angles, center=center))
    row("tomolab fbp (filter + backproject), device-resident", t, nz)
    one = sino[:1]
    t = wall_time(lambda: fbp(cupy.asarray(one), angles, center=center).get(),
                  sync=cupy.cuda.Device().synchronize)
    row("tomolab fbp, one slice, host to host", t, 1)

    try:
        import astra
        vol_geom = astra.create_vol_geom(n, n)
        proj_geom = astra.create_proj_geom("parallel", 1.0, n, angles)
        sino_id = astra.data2d.create("-sino", proj_geom, sino[0])
        rec_id = astra.data2d.create("-vol", vol_geom)
        cfg = astra.astra_dict("FBP_CUDA")
        cfg["ReconstructionDataId"], cfg["ProjectionDataId"] = rec_id, sino_id
        cfg["option"] = {"FilterType": "ram-lak"}
        alg = astra.algorithm.create(cfg)
        t = wall_time(lambda: astra.algorithm.run(alg))
        row("ASTRA 2.5 FBP_CUDA, one slice, host to host", t, 1)
        astra.algorithm.delete(alg)
        astra.data2d.delete([sino_id, rec_id])
        try:
            import astra.experimental
            vg = astra.create_vol_geom(n, n, nz)
            pg = astra.create_proj_geom("parallel3d", 1.0, 1.0, nz, n, angles)
            pid = astra.create_projector("cuda3d", pg, vg)
            d_proj = cupy.ascontiguousarray(d_sino.transpose(0, 1, 2))  # (rows, angles, cols)
            d_vol = cupy.zeros((nz, n, n), cupy.float32)
            t = gpu_time(lambda: astra.experimental.direct_BP3D(pid, d_vol, d_proj))
            row("ASTRA 2.5 direct_BP3D, device-resident CuPy", t, nz)
        except Exception as exc:  # report and go on: the 2D number still stands
            print("ASTRA direct_BP3D failed:", repr(exc))
    except ImportError as exc:
        print("ASTRA not importable here:", exc)
    write_rows(rows, "backprojection")


if __name__ == "__main__":
    main()
