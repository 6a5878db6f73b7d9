"""Centre-sweep latency: N trial slices of one row, computed as one batched operation.

Issue target: 101 candidates on a 2048-wide slice from 1800 angles in ≤ 0.25 s on an H100;
CPU (2 cores): 21 candidates on a 512-wide slice from 720 angles in ≤ 2 s.

    python benchmarks/bench_center_sweep.py [--backend cupy|numpy] [--n 2048] [--angles 1800] [--candidates 101]
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
    parser.add_argument("--backend", default="cupy", choices=["cupy", "numpy"])
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--angles", type=int, default=None)
    parser.add_argument("--candidates", type=int, default=None)
    args = parser.parse_args()
    gpu = args.backend == "cupy"
    n = args.n or (2048 if gpu else 512)
    na = args.angles or (1800 if gpu else 720)
    k = args.candidates or (101 if gpu else 21)

    from tomolab.sweep import sharpness_scores, sweep_slices

    rng = np.random.default_rng(0)
    sino = rng.random((na, n), dtype=np.float32)
    angles = np.linspace(0, np.pi, na, endpoint=False)
    centers = (n - 1) / 2 + np.linspace(-25, 25, k)
    rows = []
    date = datetime.date.today().isoformat()
    common = {"date": date, "card": card_name(), "n": n, "angles": na, "candidates": k}
    if gpu:
        import cupy
        data = cupy.asarray(sino)
        for kernel in ("auto", "h8p2", "z4p2"):
            run = lambda: sharpness_scores(sweep_slices(data, angles, centers, kernel=kernel))  # noqa: E731
            stack_only = gpu_time(lambda: sweep_slices(data, angles, centers, kernel=kernel),
                                  warmup=1, repeat=5)
            total = wall_time(run, repeat=5, sync=cupy.cuda.Device().synchronize)
            ref = sweep_slices(data, angles, centers[:8], kernel="z4p2")  # float32
            rel = float(cupy.linalg.norm(sweep_slices(data, angles, centers[:8], kernel=kernel) - ref)
                        / cupy.linalg.norm(ref))
            rows += [{**common, "what": f"tomolab sweep [{kernel}]: trial slices (rel {rel:.1e})",
                      "s": round(stack_only, 4), "GU/s": round(k * n * n * na / stack_only / 1e9, 1)},
                     {**common, "what": f"tomolab sweep [{kernel}]: slices + scores",
                      "s": round(total, 4), "GU/s": round(k * n * n * na / total / 1e9, 1)}]
        write_rows(rows, "center_sweep")
        return
    else:
        run = lambda: sharpness_scores(sweep_slices(sino, angles, centers))  # noqa: E731
        stack_only = wall_time(lambda: sweep_slices(sino, angles, centers), repeat=3)
        total = wall_time(run, repeat=3)
    write_rows([{**common, "what": "tomolab sweep: trial slices", "s": round(stack_only, 4),
                 "GU/s": round(k * n * n * na / stack_only / 1e9, 1)},
                {**common, "what": "tomolab sweep: slices + scores", "s": round(total, 4),
                 "GU/s": round(k * n * n * na / total / 1e9, 1)}], "center_sweep")


if __name__ == "__main__":
    main()
