"""Gridrec over the angle sets and sizes of real scans, each case under a time limit.

Real scans have an even number of projections over 180° (so 90° is one of the
angles, where ``cos θ`` is 6e-17 rather than 0), wide detectors and any number
of rows; a single row, or the last row of an odd slab, takes the half-plane
path. That combination once made the CPU spreading loop run for ever. The
cases run in a child process read line by line, so a case that hangs fails
with its name instead of stalling the suite. The CPU centre sweep, which
grids through the same path, is checked the same way.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from tomolab.testing import requires_gpu

MU = 0.02  # attenuation per pixel of the disk
#: seconds a case may take before it counts as hung: the bug ran for ever, a case takes 0.01-5 s
#: alone; the margin is for a CI machine shared with other jobs (a load of 9 on 2 cores)
HANG_LIMIT = 180.0

#: (name, angles) — each set holds 0°, 45°, 90° and 135° exactly (as the float nearest)
ANGLE_SETS = {
    "180-even": np.linspace(0, np.pi, 180, endpoint=False),
    "2000-even": np.linspace(0, np.pi, 2000, endpoint=False),
    "exact-degrees": np.radians(np.arange(0, 180, 1.5)),
    "with-endpoint": np.linspace(0, np.pi, 181),  # 0° and 180° both present
    "360": np.linspace(0, 2 * np.pi, 360, endpoint=False),
    "jittered": np.sort(np.concatenate([[0, np.pi / 4, np.pi / 2, 3 * np.pi / 4],
                                        np.random.default_rng(3).uniform(0, np.pi, 140)])),
}
for _angles in ANGLE_SETS.values():
    _angles[np.argmin(np.abs(_angles - np.pi / 2))] = np.pi / 2  # exactly the float π/2
    _angles[np.argmin(np.abs(_angles - np.pi / 4))] = np.pi / 4

#: (angle set, width, rows): every set at a wide and a small width, odd and even rows,
#: plus the widths from 64 to 4096 on the real-scan set
CASES = ([(name, width, rows) for name in ANGLE_SETS for width in (96, 1280) for rows in (1, 2, 3)]
         + [("180-even", width, rows) for width in (64, 640, 1001, 2048, 4096) for rows in (1, 2)]
         + [("2000-even", 2560, 1)])

_CHILD = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    from tomolab.data.phantom import Cylinder, project_slice
    from tomolab.recon.gridrec import gridrec

    module, mu, cases = sys.argv[1], float(sys.argv[2]), json.loads(sys.stdin.read())
    xp = np
    if module == "cupy":
        import cupy as xp
    print(json.dumps({"ready": True}), flush=True)
    for name, angles, width, rows in cases:
        angles = np.asarray(angles)
        center = (width - 1) / 2 + 0.137 * width / 8
        radius = 0.2 * width
        disk = [Cylinder(0.1 * width, -0.05 * width, -1, 1, radius, radius, 0, mu)]
        sino = project_slice(disk, angles, np.arange(width), [0.0], center=center)[:, 0, :]
        if rows < 0:  # a sweep of -rows trial centres 2 px apart around the true one
            from tomolab.sweep import sharpness_scores, sweep_slices
            trials = center + 2.0 * (np.arange(-rows) - (-rows) // 2)
            started = time.perf_counter()
            scores = sharpness_scores(sweep_slices(xp.asarray(sino, dtype=np.float32), angles,
                                                   trials))
            print(json.dumps({"name": name, "width": width, "rows": rows,
                              "seconds": time.perf_counter() - started,
                              "best": int(np.argmax(scores)), "middle": (-rows) // 2}), flush=True)
            continue
        stack = xp.asarray(np.repeat(sino[None].astype(np.float32), rows, axis=0))
        started = time.perf_counter()
        img = gridrec(stack, angles, center=center)
        if module == "cupy":
            xp.cuda.Device().synchronize()
        seconds = time.perf_counter() - started
        img = img.get() if hasattr(img, "get") else img
        yy, xx = np.mgrid[:width, :width] - (width - 1) / 2.0
        r = np.hypot(xx - 0.1 * width, yy + 0.05 * width)
        inside = float(np.median(img[0][r < 0.8 * radius]))
        outside = float(np.sqrt(np.mean(img[0][(r > 1.2 * radius) & (np.hypot(xx, yy) < 0.45 * width)] ** 2)))
        spread = float(np.abs(img - img[:1]).max())
        print(json.dumps({"name": name, "width": width, "rows": rows, "seconds": seconds,
                          "inside": inside, "outside": outside, "spread": spread}), flush=True)
""")


def _run_cases(module: str, cases, *, limit: float, first_limit: float = 300.0):
    """Run ``cases`` in a child; each must report within ``limit`` seconds (the first,
    which compiles the kernels, within ``first_limit``). Returns the reports."""
    payload = json.dumps([(name, ANGLE_SETS[name].tolist(), width, rows)
                          for name, width, rows in cases])
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    child = subprocess.Popen([sys.executable, "-c", _CHILD, module, str(MU)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    child.stdin.write(payload)
    child.stdin.close()
    reports = []
    try:
        for index in range(len(cases) + 1):  # the "ready" line, then one line per case
            what = "start-up" if index == 0 else f"case {cases[index - 1]}"
            deadline = time.monotonic() + (first_limit if index <= 1 else limit)
            ready, _, _ = select.select([child.stdout], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                pytest.fail(f"gridrec ({module}) did not finish {what} within "
                            f"{first_limit if index <= 1 else limit:.0f} s")
            line = child.stdout.readline()
            if not line:
                pytest.fail(f"gridrec ({module}) child died in {what}:\n{child.stderr.read()[-3000:]}")
            if index:
                reports.append(json.loads(line))
    finally:
        child.kill()
        child.wait()
    return reports


def _check(reports):
    for report in reports:
        case = f"{report['name']} width {report['width']} rows {report['rows']}"
        # the disk's value comes back (the 360° and endpoint sets weigh angles unevenly: 2 %)
        assert abs(report["inside"] - MU) < 0.02 * MU, case
        # outside it, only the streaks of view aliasing: a few % of the disk with fewer
        # angles than π/2 × the width (or gaps), about 1 % with 2000 angles (the edge's ringing)
        assert report["outside"] < (0.02 if report["name"] == "2000-even" else 0.12) * MU, case
        # every row of the stack is the same slice, whether it went in a pair or alone
        assert report["spread"] < 5e-4 * MU, case  # float32 sums (atomic on the GPU: 2.4e-4 at 4096)


#: sweeps of an odd number of trial centres (the last one is gridded alone on the CPU); wide
#: detectors with the 2000 angles they need: with too few angles the streaks of view aliasing
#: decide (a 360° scan of 360 angles on 1280 columns looked sharpest 2 px off the axis, where the
#: two half-turns' streaks interleave)
SWEEP_CASES = ([(name, 96, -count) for name in ANGLE_SETS for count in (3, 5)]
               + [("2000-even", width, -count) for width in (640, 2560) for count in (3, 5)])


@pytest.mark.parametrize("module", ["numpy", pytest.param("cupy", marks=[requires_gpu,
                                                                         pytest.mark.gpu])])
def test_sweeps_finish_and_peak_at_the_centre_on_real_scan_angle_sets(module):
    reports = _run_cases(module, SWEEP_CASES, limit=HANG_LIMIT)
    assert len(reports) == len(SWEEP_CASES)
    for report in reports:
        assert report["best"] == report["middle"], report


@pytest.mark.parametrize("module", ["numpy", pytest.param("cupy", marks=[requires_gpu,
                                                                         pytest.mark.gpu])])
def test_gridrec_finishes_and_is_right_on_real_scan_angle_sets(module):
    reports = _run_cases(module, CASES, limit=HANG_LIMIT)
    assert len(reports) == len(CASES)
    _check(reports)
