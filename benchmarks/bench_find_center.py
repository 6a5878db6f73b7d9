"""Vo's centre search on the issue's scan size: tomolab against algotom, time and peak memory.

The scan: 2000 projections over 180°, 2560 columns, noisy soft tissue wider than the field of
view (``tissue_phantom``), axis at 1272.3. Each method runs in its own fresh subprocess; the
peak memory is the growth of the child's peak RSS (VmHWM) over its baseline after imports and loading
the sinogram (the sinogram itself is 20 MB).

    python benchmarks/bench_find_center.py [--cols 2560] [--angles 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _timing import card_name, write_rows  # noqa: E402

CHILD = """
import json, sys, time
import numpy as np
def peak_rss_kb():
    # VmHWM, the peak RSS of this process image: ru_maxrss would carry the parent's peak
    # over fork and exec (Linux keeps it), hiding the child's own growth
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
method, path, repeat = sys.argv[1], sys.argv[2], int(sys.argv[3])
sino = np.load(path)
if method == "algotom":
    from algotom.prep.calculation import find_center_vo
    run = lambda: float(find_center_vo(sino))
else:
    from tomolab.center import find_center_vo
    run = lambda: find_center_vo(sino)[0]
before = peak_rss_kb()
times = []
for _ in range(repeat):
    t = time.perf_counter()
    center = run()
    times.append(time.perf_counter() - t)
growth = peak_rss_kb() - before
print(json.dumps({"center": center, "s": sorted(times)[len(times) // 2], "peak_growth_mb": growth / 1024}))
"""


def scan_sinogram(n_cols: int, n_angles: int, center: float) -> np.ndarray:
    from tomolab.data import simulate_scan, tissue_phantom
    from tomolab.engine import line_integrals
    scan = simulate_scan(n_cols, 3, n_angles, phantom=tissue_phantom(n_cols, 3), center=center,
                         photons=600, ring_errors=0.01, max_attenuation=1.0, seed=1)
    return np.asarray(line_integrals(scan, slice(0, 3), backend="numpy").mean(axis=1), np.float32)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--cols", type=int, default=2560)
    parser.add_argument("--angles", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    true_center = (args.cols - 1) / 2 - 7.2  # 1272.3 for 2560 columns
    sino = scan_sinogram(args.cols, args.angles, true_center)

    from importlib.metadata import version
    date = datetime.date.today().isoformat()
    common = {"date": date, "card": card_name(), "angles": args.angles, "cols": args.cols}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sino.npy"
        np.save(path, sino)
        for method, label in (("tomolab", f"tomolab {version('tomolab')} find_center_vo"),
                              ("algotom", f"algotom {version('algotom')} find_center_vo")):
            # algotom takes tens of seconds: run it once
            repeat = args.repeat if method == "tomolab" else 1
            out = subprocess.run([sys.executable, "-c", CHILD, method, str(path), str(repeat)],
                                 capture_output=True, text=True, check=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append({**common, "what": label, "s": round(result["s"], 2),
                         "peak MB": round(result["peak_growth_mb"]),
                         "centre": round(result["center"], 2),
                         "error px": round(result["center"] - true_center, 2)})
    write_rows(rows, "find_center")


if __name__ == "__main__":
    main()
