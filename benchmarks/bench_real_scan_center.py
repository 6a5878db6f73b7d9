"""The real-scan case of centre finding, end to end: time and peak memory of what a user runs.

The scan is shaped like the synchrotron scan of the issue: 2000 projections over 180° (90° is
one of them), 2560 columns, 5 rows (a 52 MB DXchange file with flats and darks), photon noise,
0.5 % pixel gains (rings), and soft tissue wider than the field of view
(:func:`tomolab.data.tissue_phantom`), axis at column 1272.3. Each case runs in its own fresh
subprocess from the file; its peak memory is the growth of the child's peak RSS (VmHWM) over
its baseline after imports:

* ``tomolab.find_center(scan)`` (``method="auto"``: Vo, the 0°/180° pair and, when they
  disagree, trial slices between them),
* ``tomolab.sweep_center(scan)`` (41 trial centres around the estimate),
* ``tomolab recon FILE --center auto --rows 2:3`` (the whole command line),
* algotom's ``find_center_vo`` on the same sinogram (3 rows averaged), for comparison.

    python benchmarks/bench_real_scan_center.py [--backend numpy|cupy]
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from _timing import card_name, write_rows  # noqa: E402

TRUE_CENTER = 1272.3

CHILD = r"""
import json, sys, time, warnings
def peak_kb():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
case, path, backend, out = sys.argv[1:5]
import numpy as np, tomolab, tomolab.api, tomolab.cli
before = peak_kb()
started = time.perf_counter()
result = {}
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    if case == "find_center":
        scan = tomolab.open_scan(path)
        estimate = tomolab.find_center(scan, backend=backend)
        result = {"center": estimate.center, "score": estimate.score,
                  "methods": {k: round(c, 2) for k, (c, s) in estimate.estimates.items()}}
    elif case == "sweep_center":
        scan = tomolab.open_scan(path)
        stack = tomolab.sweep_center(scan, backend=backend)
        result = {"center": stack.attrs["best_center"], "candidates": stack.sizes["center"]}
    elif case == "cli":
        code = tomolab.cli.main(["recon", path, "--center", "auto", "--rows", "2:3", "-q",
                                 "--backend", backend, "-o", out])
        import zarr
        result = {"center": float(zarr.open_group(out, mode="r").attrs["center"]), "exit": code}
    else:
        from algotom.prep.calculation import find_center_vo
        from tomolab.engine import line_integrals
        scan = tomolab.open_scan(path)
        before = peak_kb()
        sino = np.asarray(line_integrals(scan, slice(1, 4), backend="numpy").mean(axis=1))
        result = {"center": float(find_center_vo(sino))}
seconds = time.perf_counter() - started
result.update(s=seconds, peak_mb=(peak_kb() - before) / 1024, warnings=len(caught))
print(json.dumps(result))
"""


def write_scan(path: Path) -> None:
    import tomolab
    from tomolab.data import simulate_scan, tissue_phantom

    scan = simulate_scan(2560, 5, 2000, phantom=tissue_phantom(2560, 5), center=TRUE_CENTER,
                         photons=5000, ring_errors=0.005, max_attenuation=1.0, seed=1)
    tomolab.io.write_dxchange(path, scan.projections.values, scan.angle.values,
                              scan.flats.values, scan.darks.values,
                              pixel_size=scan.attrs["pixel_size"])


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend", default="numpy", choices=["numpy", "cupy"])
    parser.add_argument("--cases", default="find_center,sweep_center,cli,algotom")
    args = parser.parse_args()
    from importlib.metadata import version

    common = {"date": datetime.date.today().isoformat(), "card": card_name(),
              "backend": args.backend}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "scan.h5"
        write_scan(path)
        size_mb = path.stat().st_size / 1e6
        for case in args.cases.split(","):
            out = Path(folder) / f"{case}.zarr"
            run = subprocess.run([sys.executable, "-c", CHILD, case, str(path), args.backend,
                                  str(out)], capture_output=True, text=True)
            if run.returncode:
                print(run.stderr[-3000:], file=sys.stderr)
                continue
            result = json.loads(run.stdout.strip().splitlines()[-1])
            label = (f"algotom {version('algotom')} find_center_vo" if case == "algotom"
                     else f"tomolab {case}")
            rows.append({**common, "what": label, "file MB": round(size_mb),
                         "s": round(result["s"], 2), "peak MB": round(result["peak_mb"]),
                         "error px": round(result["center"] - TRUE_CENTER, 2),
                         "warnings": result["warnings"],
                         "detail": json.dumps({k: v for k, v in result.items()
                                               if k in ("methods", "score", "candidates")})})
    write_rows(rows, "real_scan_center")


if __name__ == "__main__":
    main()
