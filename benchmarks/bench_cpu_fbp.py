"""CPU reconstruction of one slice: tomolab FBP and gridrec against the peers, in the same run.

Issue 5's CPU question: one 512² slice from 720 angles on the machine at hand (target ≤ 0.10 s on
2 cores). Measured in the same process: tomolab ``fbp`` (direct Numba backprojection) and
``gridrec`` (Fourier gridding), scikit-image ``iradon``, and where they import, ASTRA's CPU ``FBP``
(``linear`` projector) and algotom's CPU ``fbp_reconstruction`` and ``dfi_reconstruction``
(direct Fourier inversion). algotom's ``gridrec_reconstruction`` wraps tomopy, which PyPI does not
serve, so it is left out.

The methods take turns, round after round, and each reports the median over the rounds: on a
machine shared with other jobs, load then hits every method alike. ``cpu ms`` is the process CPU
time per call (all threads), which load inflates far less than the wall time.

The sinogram is the exact projection of the analytic phantom, axis at the detector middle, and
``rms err`` is the RMS difference from the true slice inside the sample (values ~1 to 1.5), the
orientation that fits best among the eight flips and quarter turns (the packages differ in theirs).
scikit-image puts its axis at column ``n // 2``, half a pixel from the others for an even width, so
its error is not comparable and is not shown.

    python benchmarks/bench_cpu_fbp.py [--n 512] [--angles 720] [--rounds 7]

On a larger machine, ``NUMBA_NUM_THREADS=2 OMP_NUM_THREADS=2 taskset -c 0,1`` gives the 2-core case.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _timing import wall_time, write_rows  # noqa: E402


def cpu_name() -> str:
    """The processor model and the cores this process may use (taskset shows here)."""
    import os
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next(line.split(":", 1)[1].strip() for line in f
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    used = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"CPU: {model}, {used} of {os.cpu_count()} cores"


def _orientations(img):
    for k in range(4):
        rot = np.rot90(img, k)
        yield rot
        yield rot[:, ::-1]


def _rms_error(img, truth, mask):
    return min(float(np.sqrt(np.mean((o - truth)[mask] ** 2))) for o in _orientations(img))


def _peers(sino, angles, center, n):
    """name -> callable returning the slice, for the peers that import here."""
    peers = {}
    from skimage.transform import iradon
    degrees = np.degrees(angles)
    peers["scikit-image iradon (ramp, linear)"] = (
        lambda: iradon(sino.T, degrees, filter_name="ramp", circle=False, output_size=n), False)
    try:
        import astra

        vol_geom = astra.create_vol_geom(n, n)
        proj_geom = astra.create_proj_geom("parallel", 1.0, sino.shape[1], angles)
        projector = astra.create_projector("linear", proj_geom, vol_geom)
        sino_id = astra.data2d.create("-sino", proj_geom, sino)
        rec_id = astra.data2d.create("-vol", vol_geom)
        cfg = astra.astra_dict("FBP")
        cfg.update(ProjectorId=projector, ProjectionDataId=sino_id, ReconstructionDataId=rec_id)
        cfg["option"] = {"FilterType": "ram-lak"}
        alg = astra.algorithm.create(cfg)

        def run_astra():
            astra.algorithm.run(alg)
            return astra.data2d.get(rec_id)

        peers[f"ASTRA {astra.__version__} FBP (CPU, linear projector, ram-lak)"] = (run_astra, True)
    except (ImportError, OSError) as exc:  # OSError: its CUDA libraries are missing
        print("ASTRA not importable here:", exc)
    try:
        from algotom.rec import reconstruction as alg_rec

        s = np.ascontiguousarray(sino, dtype=np.float32)
        peers["algotom fbp_reconstruction (CPU, ramp)"] = (
            lambda: alg_rec.fbp_reconstruction(s, center, angles=angles, ratio=None,
                                               filter_name=None, apply_log=False, gpu=False),
            True)
        peers["algotom dfi_reconstruction (direct Fourier inversion)"] = (
            lambda: alg_rec.dfi_reconstruction(s, center, angles=angles, ratio=None,
                                               filter_name=None, apply_log=False), True)
    except ImportError as exc:
        print("algotom not importable here:", exc)
    return peers


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=512)
    parser.add_argument("--angles", type=int, default=720)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    import numba

    from tomolab.data.phantom import default_phantom, phantom_slice, project_slice
    from tomolab.recon import fbp, gridrec

    n, na = args.n, args.angles
    center = (n - 1) / 2.0
    angles = np.linspace(0, np.pi, na, endpoint=False)
    shapes = default_phantom(n, 16)
    sino = project_slice(shapes, angles, np.arange(n), [0.0], center=center)[:, 0, :]
    sino = sino.astype(np.float32)
    truth = phantom_slice(shapes, 0.0, n)
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    mask = np.hypot(yy, xx) < 0.4 * n
    one, two = sino[None], np.stack([sino, sino])

    methods = {
        "tomolab fbp (Numba backprojection)": (lambda: fbp(one, angles, center=center)[0], True),
        "tomolab gridrec": (lambda: gridrec(one, angles, center=center)[0], True),
        "tomolab gridrec, 2 slices (time per slice)": (lambda: gridrec(two, angles, center=center),
                                                       None),
    }
    methods.update(_peers(sino, angles, center, n))

    errors, slices = {}, {}
    for name, (fn, score) in methods.items():  # warm-up (Numba compiles, plans) and accuracy
        out = np.asarray(fn())
        slices[name] = 2 if out.ndim == 3 else 1
        errors[name] = _rms_error(out if out.ndim == 2 else out[0], truth, mask) if score else None

    walls = {name: [] for name in methods}
    cpus = {name: [] for name in methods}
    for _ in range(args.rounds):
        for name, (fn, _score) in methods.items():
            c0 = time.process_time()
            walls[name].append(wall_time(fn, warmup=0, repeat=1))
            cpus[name].append(time.process_time() - c0)

    card = f"{cpu_name()}, numba threads {numba.get_num_threads()}"
    date = datetime.date.today().isoformat()
    base = statistics.median(walls["tomolab fbp (Numba backprojection)"])
    rows = []
    for name in methods:
        per = slices[name]
        wall = statistics.median(walls[name]) / per
        rows.append({"date": date, "card": card, "what": name, "n": n, "angles": na,
                     "ms": round(wall * 1e3, 1),
                     "ms min": round(min(walls[name]) / per * 1e3, 1),
                     "cpu ms": round(statistics.median(cpus[name]) / per * 1e3, 1),
                     "× tomolab fbp": round(base / wall, 1),
                     "rms err": "" if errors[name] is None else round(errors[name], 4)})
    write_rows(rows, "cpu_fbp")


if __name__ == "__main__":
    main()
