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
``weak core``
    the same scan of the same sample absorbing at most 5 % (``max_attenuation=0.05``).

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

def iradon(sino):
    from skimage.transform import iradon as _iradon
    return _iradon(np.asarray(sino, float).T, theta=np.degrees(ANGLES), circle=True,
                   filter_name="ramp")


def weak_disk_rows(seeds):
    from tomolab.prep import remove_stripes

    from tomolab.data.rings import column_gains, disk_image, disk_sinogram, inside_error
    from tomolab.data.rings import ring_amplitude

    clean = disk_sinogram(N, ANGLES).astype(np.float32)
    clean_recon, image = iradon(clean), disk_image(N)

    def error(recon):
        return inside_error(recon, image, axis=N // 2)

    def ir_rings(difference):
        return ring_amplitude(difference, 0 * difference, axis=N // 2)

    rows = []
    for kind in ("isolated columns", "every column"):
        cases = []
        for seed in seeds:
            sino = (clean - np.log(column_gains(kind, seed, N))[None, :]).astype(np.float32)
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

def rock_core(seed, n_rows, photons, n_flats, max_attenuation=1.5):
    """The measured sinogram, the exact fixed offsets, recon and the two measures."""
    from tomolab.data.rings import inside_error, ring_amplitude, ring_scan

    case = ring_scan(N, n_rows=n_rows, n_angles=len(ANGLES), photons=photons, n_flats=n_flats,
                     seed=seed, max_attenuation=max_attenuation)
    return dict(sino=case["sino"], fixed=case["fixed_offsets"], gain_offsets=case["gain_offsets"],
                recon=case["recon"],
                rings=lambda volume: ring_amplitude(volume, case["reference"]),
                error=lambda volume: inside_error(volume, case["truth"]))


def band(offsets, k0):
    """The part of (row, col) offsets at k0 and more cycles per detector width."""
    spectrum = np.fft.rfft(offsets, axis=-1)
    spectrum[..., :k0] = 0
    return np.fft.irfft(spectrum, n=offsets.shape[-1], axis=-1)


def rock_core_rows(label, seeds, n_rows, photons, n_flats, bands=(10, 15, 20),
                   max_attenuation=1.5):
    from tomolab.prep import remove_stripes

    per_seed = []
    for seed in seeds:
        case = rock_core(seed, n_rows, photons, n_flats, max_attenuation)
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
    rows += rock_core_rows("weak core (<= 5 %), 4 rows, 6e4 photons, 200 flats", seeds[:3], 4,
                           6e4, 200, max_attenuation=0.05)
    print_table(rows)


if __name__ == "__main__":
    main()
