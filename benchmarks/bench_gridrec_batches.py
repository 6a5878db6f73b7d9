"""CPU gridrec on a stack of slices: one at a time, unpaired batches, and pairs.

The CPU api reconstructs every slice on its own (``pair_slices=False``), so that a slice's
bits do not depend on the slab (CPU slabs are sized by time; a resumed or clustered volume
must match an uninterrupted one bit for bit). Until 2026-12-06 it called gridrec once per
slice, which costs small slices a fixed overhead per call (waking the threads, planning the
FFTs); now the slices go through in batches of at most ``CPU_UNPAIRED_BATCH_BYTES``.

Timed per slice, interleaved rounds, medians:

* ``one at a time``: ``gridrec`` called per slice (the api's way before);
* ``unpaired batches``: ``gridrec(stack, pair_slices=False)`` (the api's way now), checked
  bit for bit against one at a time;
* ``pairs``: ``gridrec(stack)``, two slices as one complex sinogram (the array function's
  default; its slices depend on their partners);
* ``reconstruct()``: the api on a scan of line integrals with that many rows, default
  algorithm on the CPU, planning and checks included.

With ``--large``: gridrec of 2048² slices from 1800 angles, two slices a call (a CPU slab's
height at that size), unpaired: the time a slice, median, least and most of the rounds. To
compare two versions, run it in each (``git worktree add /tmp/old REV`` and
``PYTHONPATH=/tmp/old python benchmarks/bench_gridrec_batches.py --large``), in turns.

    python benchmarks/bench_gridrec_batches.py [--rounds 5] [--large]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_cpu_fbp import cpu_name  # noqa: E402

CASES = ((64, 96, 64), (128, 180, 32), (256, 360, 16), (512, 720, 8))  # n, angles, slices


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--large", action="store_true",
                        help="2048² slices from 1800 angles, two a call")
    args = parser.parse_args()
    if args.large:
        return _large(args.rounds)

    import numba

    import tomolab
    from tomolab.io import ScanWarning
    from tomolab.recon import gridrec

    load = os.getloadavg()[0]
    print(f"{datetime.date.today()}, {cpu_name()}, {os.cpu_count()} cores, "
          f"numba {numba.get_num_threads()} threads, load {load:.1f}")
    print("| slices | one at a time | unpaired batches | pairs | reconstruct() | "
          "batches vs one at a time | identical |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    rng = np.random.default_rng(0)
    for n, n_angles, n_z in CASES:
        angles = np.linspace(0, np.pi, n_angles, endpoint=False)
        stack = rng.normal(size=(n_z, n_angles, n)).astype(np.float32)
        center = (n - 1) / 2 + 0.3
        with warnings.catch_warnings():  # line integrals: no flats or darks, on purpose
            warnings.simplefilter("ignore", ScanWarning)
            scan = tomolab.from_arrays(stack.transpose(1, 0, 2).copy(), angles)
        methods = {
            "one": lambda: np.concatenate([gridrec(s[None], angles, center=center,
                                                   pair_slices=False) for s in stack]),
            "batches": lambda: gridrec(stack, angles, center=center, pair_slices=False),
            "pairs": lambda: gridrec(stack, angles, center=center),
            "api": lambda: tomolab.reconstruct(scan, center=center, normalize=False, log=False,
                                               backend="numpy").values,
        }
        results = {name: fn() for name, fn in methods.items()}  # warm-up
        identical = np.array_equal(results["one"], results["batches"]) and \
            np.array_equal(results["api"], results["batches"])
        times = {name: [] for name in methods}
        for _ in range(args.rounds):
            for name, fn in methods.items():
                t = time.perf_counter()
                fn()
                times[name].append((time.perf_counter() - t) / n_z)
        ms = {name: 1e3 * statistics.median(values) for name, values in times.items()}
        print(f"| {n_z} × {n}², {n_angles} angles | {ms['one']:.2f} ms | {ms['batches']:.2f} ms | "
              f"{ms['pairs']:.2f} ms | {ms['api']:.2f} ms | {ms['one'] / ms['batches']:.2f} × | "
              f"{'yes' if identical else 'NO'} |")
    print(f"load at the end {os.getloadavg()[0]:.1f}")


def _large(rounds: int) -> None:
    import importlib.util

    from tomolab.recon import gridrec

    n, n_angles, n_z = 2048, 1800, 2
    rng = np.random.default_rng(0)
    angles = np.linspace(0, np.pi, n_angles, endpoint=False)
    stack = rng.normal(size=(n_z, n_angles, n)).astype(np.float32)
    center = (n - 1) / 2 + 0.3
    gridrec(stack[:1], angles, center=center, pair_slices=False)  # compiled, planned
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        gridrec(stack, angles, center=center, pair_slices=False)
        times.append(1e3 * (time.perf_counter() - t) / n_z)
    where = Path(importlib.util.find_spec("tomolab").origin).parent
    print(f"{datetime.date.today()}, {cpu_name()}, tomolab from {where}, "
          f"load {os.getloadavg()[0]:.1f}: {n_z} × {n}², {n_angles} angles, two a call: "
          f"{statistics.median(times):.0f} ms a slice (median; {min(times):.0f}-{max(times):.0f})")


if __name__ == "__main__":
    main()
