"""Ring removal: how far each stripe method lowers the rings, against the oracles' ceiling.

Issue 3's criterion: on a simulated scan with pixel gain errors, the ring amplitude in the
reconstruction drops at least tenfold while the error against the phantom does not grow.

Ring amplitude: RMS over radius (and slices) of the angular mean, about the rotation axis, of
recon - recon(reference), where the reference is the ring-free sinogram (for the rock core the
exact line integrals, so the noise of the flats counts as rings). ``x`` is before / after,
one number per seed; ``err %`` is the change of the RMS error against the phantom (range over
the seeds; negative is better).

Scans:

``weak disk``
    The tests' analytic phantom (three disks, at most ~10 % absorption), 256 columns, 360
    angles, gains 1 +- 2 % on isolated columns (~1 in 10) or on every column; iradon.
``rock core``
    ``simulate_scan(256, n_rows, n_angles=360, ring_errors=0.01, photons, n_flats)``: a
    strongly absorbing cylinder with grains and pores (up to 1.5 in -log), an independent 1 %
    gain error on every pixel, through flat/dark correction (``line_integrals``); tomolab fbp.

Oracles (rock core only; they know what no method can):

``oracle gains``
    subtracts the exact gain offsets ``-log(gain)``: what is left are the flats' and darks' noise
    (an angle-constant offset of its own) and the photon noise.
``oracle fixed offsets``
    also subtracts the flats' and darks' noise (the line integrals normalised by the noise-free
    beam minus those normalised by the measured flats): only photon noise is left.
``oracle k>=K``
    subtracts the exact fixed offsets at spatial frequencies of K and more cycles per 256
    columns: a perfect separation of offsets from the sample everywhere but at the coarse
    scales, where the sample's own rotationally symmetric profile is stronger than the offsets.

    python benchmarks/ring_removal.py [--seeds 5] [--quick]
"""

from __future__ import annotations

import argparse
import json

import numpy as np

N = 256
ANGLES = np.linspace(0, np.pi, 360, endpoint=False)

# (method, options) measured on every scan
METHODS = [
    ("sorting", {"size": 21}),
    ("filtering", {"size": 21}),
    ("fourier-wavelet", {}),
    ("offsets", {}),
    ("offsets", {"sigma": 10.0}),
    ("offsets", {"size": 9}),
    ("offsets", {"size": 15, "fit": "quadratic"}),
]


# -- weak disk (the tests' analytic phantom) ---------------------------------------------------

DISKS = [(18.0, 12.0, 80.0, 5e-4), (30.0, -20.0, 35.0, 7.5e-4), (-40.0, 35.0, 20.0, -3e-4)]
_yy, _xx = np.mgrid[:N, :N] - N // 2
_IR_INSIDE = np.hypot(_yy, _xx) < N // 2 - 2
_IR_BINS = np.rint(np.hypot(_yy, _xx)).astype(int)


def disk_image():
    image = np.zeros((N, N))
    for x0, y0, r, mu in DISKS:
        image += mu * ((_xx - x0) ** 2 + (_yy - y0) ** 2 <= r * r)
    return image


def disk_sinogram():
    s = np.arange(N) - N // 2
    sino = np.zeros((len(ANGLES), N))
    for x0, y0, r, mu in DISKS:
        s0 = x0 * np.cos(ANGLES) - y0 * np.sin(ANGLES)
        sino += mu * 2 * np.sqrt(np.clip(r * r - (s[None, :] - s0[:, None]) ** 2, 0, None))
    return sino


def disk_gains(kind, seed):
    rng = np.random.default_rng(seed)
    if kind == "every column":
        return 1 + rng.uniform(-0.02, 0.02, N)
    g = np.ones(N)
    base = np.arange(3, N - 3, 10)
    g[base + rng.integers(-2, 3, len(base))] = 1 + rng.choice([-0.02, 0.02], len(base))
    return g


def iradon(sino):
    from skimage.transform import iradon as _iradon
    return _iradon(np.asarray(sino, float).T, theta=np.degrees(ANGLES), circle=True,
                   filter_name="ramp")


def ir_rings(difference):
    total = np.bincount(_IR_BINS[_IR_INSIDE], difference[_IR_INSIDE])
    count = np.bincount(_IR_BINS[_IR_INSIDE])
    return float(np.sqrt(np.mean((total[1:] / count[1:]) ** 2)))


def weak_disk_rows(seeds):
    from tomolab.prep import remove_stripes

    clean = disk_sinogram().astype(np.float32)
    clean_recon, image = iradon(clean), disk_image()

    def error(recon):
        return float(np.sqrt(np.mean((recon - image)[_IR_INSIDE] ** 2)))

    rows = []
    for kind in ("isolated columns", "every column"):
        cases = []
        for seed in seeds:
            sino = (clean - np.log(disk_gains(kind, seed))[None, :]).astype(np.float32)
            recon = iradon(sino)
            cases.append((sino, ir_rings(recon - clean_recon), error(recon)))
        for method, options in METHODS:
            xs, errs = [], []
            for sino, before, err0 in cases:
                recon = iradon(remove_stripes(sino, method=method, **options))
                xs.append(before / ir_rings(recon - clean_recon))
                errs.append(100 * (error(recon) / err0 - 1))
            rows.append((f"weak disk, {kind}", method, options, xs, errs))
    return rows


# -- rock core (simulate_scan) ------------------------------------------------------------------

def rock_core(seed, n_rows, photons, n_flats):
    """Measured sinogram, exact line integrals, the exact fixed offsets, recon and metrics."""
    from tomolab.data import simulate_scan
    from tomolab.data.phantom import phantom_from_json, project_slice
    from tomolab.data.simulate import (SimulationParameters, _beam, _drift, _gains, _timeline,
                                       true_volume)
    from tomolab.engine.pipeline import line_integrals
    from tomolab.recon import fbp

    scan = simulate_scan(N, n_rows=n_rows, n_angles=len(ANGLES), ring_errors=0.01,
                         photons=photons, n_flats=n_flats, seed=seed)
    angles, center = scan.angle.values, scan.attrs["true_center"]
    z = np.arange(n_rows) - (n_rows - 1) / 2
    exact = project_slice(phantom_from_json(scan.attrs["phantom"]), angles, np.arange(N), z,
                          center=center) * scan.attrs["attenuation_per_pixel"]
    sino = np.asarray(line_integrals(scan, slice(None)), dtype=np.float64)
    params = SimulationParameters(**json.loads(scan.attrs["simulation"]),
                                  phantom=scan.attrs["phantom"])
    gain_offsets = -np.log(_gains(params))                      # (row, col)
    t_proj, _ = _timeline(params)
    beam = _beam(params)[None] * _drift(params, t_proj)[:, None, None]
    raw = scan["projections"].values.astype(np.float64)
    ideal = -np.log(np.clip(raw - params.dark_level, 1.0, None) / beam)  # noise-free flats/darks
    fixed = gain_offsets + (sino - ideal).mean(axis=0)           # gains + flats' and darks' noise

    radius = np.hypot(*(np.mgrid[:N, :N] - (N - 1) / 2))        # fbp's axis: (n - 1) / 2
    inside = radius < N // 2 - 2
    bins = np.rint(radius[inside]).astype(int)
    count = np.bincount(bins)

    def recon(s):
        return np.asarray(fbp(np.asarray(s, np.float32).transpose(1, 0, 2), angles,
                              center=center))

    reference = recon(exact)
    truth = true_volume(scan) * scan.attrs["pixel_size"]

    def rings(volume):
        profiles = [np.bincount(bins, d[inside])[1:] / count[1:] for d in volume - reference]
        return float(np.sqrt(np.mean(np.square(profiles))))

    def error(volume):
        return float(np.sqrt(np.mean((volume - truth)[:, inside] ** 2)))

    return dict(sino=sino, fixed=fixed, gain_offsets=gain_offsets, recon=recon, rings=rings,
                error=error)


def band(offsets, k0):
    """The part of (row, col) offsets at k0 and more cycles per detector width."""
    spectrum = np.fft.rfft(offsets, axis=-1)
    spectrum[..., :k0] = 0
    return np.fft.irfft(spectrum, n=offsets.shape[-1], axis=-1)


def rock_core_rows(label, seeds, n_rows, photons, n_flats, bands=(10, 15, 20)):
    from tomolab.prep import remove_stripes

    per_seed = []
    for seed in seeds:
        case = rock_core(seed, n_rows, photons, n_flats)
        striped = case["recon"](case["sino"])
        before, err0 = case["rings"](striped), case["error"](striped)
        results = {}

        def measure(key, corrected):
            volume = case["recon"](corrected)
            results[key] = (before / case["rings"](volume),
                            100 * (case["error"](volume) / err0 - 1))

        measure(("oracle gains", ""), case["sino"] - case["gain_offsets"][None])
        measure(("oracle fixed offsets", ""), case["sino"] - case["fixed"][None])
        for k0 in bands:
            measure((f"oracle k>={k0}", ""), case["sino"] - band(case["fixed"], k0)[None])
        for method, options in METHODS:
            measure((method, _opts(options)), remove_stripes(case["sino"], method=method,
                                                             **options))
        per_seed.append(results)
    rows = []
    for key in per_seed[0]:
        rows.append((label, key[0], key[1], [r[key][0] for r in per_seed],
                     [r[key][1] for r in per_seed]))
    return rows


def _opts(options):
    return ", ".join(f"{k}={v}" for k, v in options.items()) if isinstance(options, dict) \
        else options


def print_table(rows):
    print(f"| {'scan':<42} | {'method':<20} | {'options':<26} | {'rings x (per seed)':<34} "
          f"| {'err %':>13} |")
    print(f"| {'-' * 42} | {'-' * 20} | {'-' * 26} | {'-' * 34} | {'-' * 13} |")
    for scan, method, options, xs, errs in rows:
        xs_text = " ".join(f"{x:5.1f}" for x in xs)
        err_text = (f"{min(errs):+.0f}..{max(errs):+.0f}" if len(errs) > 1
                    else f"{errs[0]:+.0f}")
        print(f"| {scan:<42} | {method:<20} | {_opts(options):<26} | {xs_text:<34} "
              f"| {err_text:>13} |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="gain/noise seeds 0..N-1")
    parser.add_argument("--quick", action="store_true", help="rock core, 4 rows, seed 0 only")
    args = parser.parse_args(argv)
    seeds = list(range(args.seeds))
    if args.quick:
        print_table(rock_core_rows("rock core, 4 rows, 5e4 photons, 10 flats", [0], 4, 5e4, 10))
        return
    rows = weak_disk_rows(seeds)
    rows += rock_core_rows("rock core, 4 rows, 5e4 photons, 10 flats", seeds, 4, 5e4, 10)
    rows += rock_core_rows("rock core, 16 rows, 5e4 photons, 10 flats", seeds[:2], 16, 5e4, 10)
    rows += rock_core_rows("rock core, 4 rows, 6e4 photons, 200 flats", seeds, 4, 6e4, 200)
    print_table(rows)


if __name__ == "__main__":
    main()
