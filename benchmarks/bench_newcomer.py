"""Issue 12's two CPU costs: Numba's first call with and without a cache, and slabs sized by time.

1. The first call of each CPU kernel in a fresh interpreter, with an empty
   ``NUMBA_CACHE_DIR`` (what every process pays without ``cache=True``) and
   with a filled one (what tomolab's cache in the user's folder gives).
2. A CPU reconstruction as one slab (what memory alone allowed: the bar sat
   still and a cancel waited for the end) against slabs of about
   ``CPU_SLAB_SECONDS`` (progress and cancel about twice a second): what the
   extra slabs cost in total time. Interleaved rounds, medians.

    python benchmarks/bench_newcomer.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

FIRST_CALLS = """
import time, tomolab
scan = tomolab.data.simulate_scan(64, n_rows=2, n_angles=90)
for algorithm in ("fbp", "gridrec"):
    t = time.perf_counter()
    tomolab.reconstruct(scan, center=32.0, backend="numpy", algorithm=algorithm)
    print(algorithm, time.perf_counter() - t)
"""


def first_calls(cache: str) -> dict:
    env = dict(os.environ, NUMBA_CACHE_DIR=cache, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", FIRST_CALLS], env=env, capture_output=True,
                         text=True, check=True).stdout
    return {name: float(value) for name, value in (line.split() for line in out.splitlines())}


def slabs(rounds: int) -> None:
    import tomolab
    from tomolab.engine import pipeline

    scan = tomolab.data.simulate_scan(256, n_rows=64, n_angles=400, seed=1)
    center = scan.attrs["true_center"]
    tomolab.reconstruct(scan, center=center, rows="0:2", backend="numpy")  # compiled
    times: dict = {"one slab": [], "timed slabs": []}
    counts: dict = {}
    target = pipeline.CPU_SLAB_SECONDS
    for _ in range(rounds):
        for name, seconds in (("one slab", 1e9), ("timed slabs", target)):
            pipeline.CPU_SLAB_SECONDS = seconds
            calls = []
            t = time.perf_counter()
            tomolab.reconstruct(scan, center=center, backend="numpy",
                                progress=lambda done, total, calls=calls: calls.append(
                                    time.perf_counter()))
            times[name].append(time.perf_counter() - t)
            gaps = [b - a for a, b in itertools.pairwise(calls)]
            counts[name] = (len(calls) - 1, max(gaps))
    pipeline.CPU_SLAB_SECONDS = target
    print("64 rows of 256² from 400 angles, FBP on the CPU (median of rounds; slabs, longest "
          "wait between progress reports in the last round)")
    for name, values in times.items():
        print(f"  {name:12s} {statistics.median(values):6.2f} s   {counts[name][0]:3d} slabs, "
              f"longest wait {counts[name][1]:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    cold, warm = {}, {}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as cache:
            for name, value in first_calls(cache).items():
                cold.setdefault(name, []).append(value)
            for name, value in first_calls(cache).items():
                warm.setdefault(name, []).append(value)
    print("first call in a fresh interpreter (median s): kernel, empty cache, filled cache")
    for name, values in cold.items():
        print(f"  {name:8s} {statistics.median(values):5.2f}  {statistics.median(warm[name]):5.2f}")
    slabs(args.rounds)


if __name__ == "__main__":
    main()
