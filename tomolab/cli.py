"""The ``tomolab`` command: demo, info, recon, simulate, stream-sim.

Bad input ends with one line on stderr that names the file or parameter, the
value and the fix, and a non-zero exit status; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

EXIT_BAD_INPUT = 2

#: the api's keywords as each command's flags, so that its error messages speak in flags
#: (:meth:`tomolab.errors.TomolabError.renamed`)
FLAGS = {
    "recon": {"center": "--center", "rows": "--rows", "path": "-o/--output",
              "format": "--format", "filter": "--filter", "backend": "--backend",
              "algorithm": "--algorithm", "dtype": "--dtype", "value_range": "--value-range",
              "precision": "--precision", "normalize=False": "--no-normalize",
              "iterations": "--iterations", "regularization": "--regularization",
              "log=False": "--no-log", "overwrite=True": "--overwrite", "overwrite": "--overwrite"},
    "simulate": {"size": "--size", "n_rows/n_angles": "--rows/--angles", "n_rows": "--rows",
                 "n_angles": "--angles", "center": "--center", "photons": "--photons",
                 "ring_errors": "--rings", "zingers": "--zingers", "seed": "--seed",
                 "path": "OUTPUT", "overwrite=True": "--overwrite", "overwrite": "--overwrite"},
    "stream-sim": {"target": "ADDRESS_OR_PATH", "scan": "--scan", "size": "--size",
                   "n_rows/n_angles": "--rows/--angles", "n_rows": "--rows", "n_angles": "--angles",
                   "rate": "--rate", "transport": "--transport", "pattern": "--pattern",
                   "darks": "--darks", "flats": "--flats", "layout": "--layout",
                   "timeout": "--timeout", "seed": "--seed", "pause": "--pause",
                   "overwrite=True": "--overwrite", "overwrite": "--overwrite"},
    "demo": {"size": "--size", "n_rows/n_angles": "--rows/--angles", "n_rows": "--rows",
             "n_angles": "--angles", "seed": "--seed", "backend": "--backend"},
}

#: what ``tomolab --help`` says first (plain text: argparse prints it as it is)
DESCRIPTION = ("Synchrotron X-ray tomography from the command line: run a demo, describe a scan, "
               "reconstruct it into a volume file, or write a simulated scan with a known answer.")
EPILOG = "Bad input ends with one line naming the file or flag, the value and the fix (exit status 2)."


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line, like tomolab's own (no usage block)."""

    def error(self, message):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}; fix: see {self.prog} "
                                  f"--help\n")


def _parse_center(text: str):
    if text == "auto":
        return "auto"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--center={text!r}: not a number; fix: pass a detector "
                                         "column in pixels, or auto") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: not a positive integer; fix: pass e.g. 2")
    return value


def demo_folder() -> Path:
    """Where ``tomolab demo`` writes by default: the user's cache, never the current folder."""
    from tomolab.devices import user_cache_dir

    return Path(user_cache_dir("demo"))


def _progress_bar(args, *, desc: str, unit: str):
    """A ``progress(done, total)`` callback drawing a tqdm bar on stderr, and the bars it made.

    The bar appears at the first call (work started, all checks passed), so
    a bad argument ends with its one line and no bar; none with ``--quiet``.
    """
    bars = []

    def progress(done, total):
        if getattr(args, "quiet", False):
            return
        if not bars:
            from tqdm import tqdm
            bars.append(tqdm(total=total, unit=unit, desc=desc, file=sys.stderr))
        bars[0].update(done - bars[0].n)

    return progress, bars


def _elapsed(bars, fallback: float) -> float:
    """Seconds the bar has been running (what it shows), or ``fallback`` without one."""
    return bars[0].format_dict["elapsed"] if bars else fallback


def cmd_demo(args) -> int:
    import numpy as np

    import tomolab
    from tomolab.data import (iter_projection_slabs, simulate_flats_darks, simulation_attrs,
                              simulation_parameters)
    from tomolab.errors import ParameterError
    from tomolab.viz import save_png

    out = Path(args.out).expanduser() if args.out else demo_folder()
    if out.exists() and not out.is_dir():
        raise ParameterError("is a file, not a folder", where="--out", value=str(out),
                             fix="name a folder for the demo's files (it is made if missing)")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    params = simulation_parameters(args.size, args.rows, args.angles, seed=args.seed)
    sample = out / "sample.h5"
    flats, darks = simulate_flats_darks(params)
    tomolab.io.write_dxchange(sample, iter_projection_slabs(params), params.angles, flats, darks,
                              pixel_size=params.pixel_size, energy=params.energy,
                              distance=params.distance, attrs=simulation_attrs(params),
                              overwrite=True)
    t_sim = time.perf_counter() - t0
    print(f"sample     {sample} ({params.n_angles} projections of {params.n_rows} x "
          f"{params.n_cols}, simulated in {t_sim:.1f} s)")

    t1 = time.perf_counter()
    scan = tomolab.open_scan(sample)
    center, score = tomolab.find_center(scan, backend=args.backend)
    t_center = time.perf_counter() - t1
    true_center = params.center
    print(f"centre     found {center:.2f} px, true {true_center:.2f} px, error "
          f"{center - true_center:+.2f} px, score {score:.2f} ({t_center:.2f} s)")

    t2 = time.perf_counter()
    volume = tomolab.reconstruct(scan, center=center, backend=args.backend)
    t_recon = time.perf_counter() - t2
    truth = tomolab.data.true_volume(simulation_attrs(params))
    n = volume.sizes["x"]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    inside = np.hypot(yy, xx) < 0.4 * n
    rel = (np.sqrt(np.mean((volume.values - truth)[:, inside] ** 2))
           / np.sqrt(np.mean(truth[:, inside] ** 2)))
    print(f"volume     {volume.sizes['z']} x {n} x {n} on {volume.attrs['backend']} in "
          f"{t_recon:.2f} s; error against the phantom {100 * rel:.1f} % (RMS, inside the sample)")

    zarr_path = out / "volume.zarr"
    tomolab.save_volume(volume, zarr_path, overwrite=True)
    png_path = out / "middle_slice.png"
    save_png(volume.values[volume.sizes["z"] // 2], png_path)
    print(f"written    {zarr_path} and {png_path} (another folder: --out DIR)")
    print(f"total      {time.perf_counter() - t0:.1f} s")
    return 0


def cmd_info(args) -> int:
    import tomolab

    print(tomolab.io.describe(args.file))
    return 0


def cmd_recon(args) -> int:
    import tomolab
    from tomolab.errors import ParameterError

    if not args.output.strip():
        raise ParameterError("no output named", where="-o/--output", value=args.output,
                             fix="name the volume, e.g. -o volume.zarr")
    if args.no_log and not args.no_normalize:
        raise ParameterError("flat-field corrected projections need -log to become line "
                             "integrals", where="--no-log", value=None,
                             fix="add --no-normalize too (the projections are already line "
                                 "integrals), or drop --no-log")
    output = tomolab.io.check_replaceable(args.output, protect=[args.file])
    if output.exists() and not args.overwrite:
        raise ParameterError("output exists", where="-o/--output", value=str(output),
                             fix="choose another path or pass --overwrite")
    tomolab.io.check_overwritable(output, kind="volume", flag="--overwrite")  # tomolab's own
    started = time.perf_counter()
    scan = tomolab.open_scan(args.file)
    # the bar appears when the first slab starts (after all checks and the centre), and the
    # summary gives the time it shows
    progress, bars = _progress_bar(args, desc="reconstruct", unit="row")
    options = dict(center=args.center, rows=args.rows, filter=args.filter, backend=args.backend,
                   algorithm=args.algorithm, precision=args.precision, progress=progress,
                   normalize=not args.no_normalize, log=not args.no_log, dtype=args.dtype,
                   value_range=args.value_range, iterations=args.iterations,
                   regularization=args.regularization)
    client = _cluster_client(args)
    try:
        # streamed to disk slab by slab (zarr, HDF5 or TIFF); a killed run resumes when started again
        volume = tomolab.reconstruct_to(scan, output, format=args.format, overwrite=args.overwrite,
                                        client=client, **options)
    finally:
        for bar in bars:
            bar.close()
        if client is not None:
            client.close()
    total = time.perf_counter() - started
    reconstructed = _elapsed(bars, total)
    print(f"{output}: {volume.sizes['z']} slices of {volume.sizes['y']} x {volume.sizes['x']}, "
          f"centre {volume.attrs['center']:.2f} px, {volume.attrs['algorithm']} on "
          f"{volume.attrs['backend']}, {volume.attrs.get('output_dtype', 'float32')}"
          f"{_clipped_text(volume.attrs)}, reconstructed in "
          f"{reconstructed:.1f} s ({total:.1f} s with opening the scan and the centre)")
    return 0


def _clipped_text(attrs) -> str:
    clipped = int(attrs.get("clipped_voxels", 0) or 0)
    return f" ({clipped} values clipped)" if clipped else ""


def _cluster_client(args):
    """The dask client of ``--scheduler`` or ``--workers``, or None; shows the dashboard link."""
    if args.scheduler is None and args.workers is None:
        return None
    from tomolab.errors import ParameterError

    if args.scheduler == "hub":  # the cluster of this JupyterHub server
        from tomolab.cluster import connect_hub

        client = connect_hub()
    elif args.scheduler is not None:
        try:
            from distributed import Client
        except ImportError:
            raise ParameterError("dask.distributed is not installed", where="--scheduler",
                                 value=args.scheduler, fix="pip install tomolab[cluster]") from None
        try:
            client = Client(args.scheduler, timeout=30)
        except (OSError, TimeoutError) as exc:
            raise ParameterError(f"no dask scheduler answers ({type(exc).__name__})",
                                 where="--scheduler", value=args.scheduler,
                                 fix="start one (dask scheduler) or pass its tcp://HOST:PORT"
                                 ) from None
    else:
        from tomolab.cluster import start_cluster

        client = start_cluster("local", workers=args.workers)
    if not args.quiet and client.dashboard_link:
        print(f"dask dashboard: {client.dashboard_link}", file=sys.stderr)
    return client


def cmd_simulate(args) -> int:
    import tomolab
    from tomolab.data import (iter_projection_slabs, simulate_flats_darks, simulation_attrs,
                              simulation_parameters)
    from tomolab.errors import ParameterError

    suffix = Path(args.output).suffix.lower()
    if args.format == "tiff" and suffix in (".h5", ".hdf5", ".nxs", ".zarr"):
        raise ParameterError(f"--format tiff writes a folder of TIFFs, not a {suffix} file",
                             where="OUTPUT", value=str(args.output),
                             fix="name a folder without a suffix, or pass --format dxchange")
    params = simulation_parameters(args.size, args.rows, args.angles, center=args.center,
                                   seed=args.seed, ring_errors=args.rings, zingers=args.zingers,
                                   photons=args.photons)
    if args.overwrite:
        tomolab.io.check_overwritable(args.output, kind="scan", flag="--overwrite")
    # the writers cannot size a stream of slabs: refuse what the disk cannot hold before starting
    tomolab.io.check_free_space(Path(args.output).expanduser(),
                     2 * params.n_angles * params.n_rows * params.n_cols)
    flats, darks = simulate_flats_darks(params)
    meta = dict(pixel_size=params.pixel_size, energy=params.energy, distance=params.distance,
                attrs=simulation_attrs(params), overwrite=args.overwrite)
    progress, bars = _progress_bar(args, desc="simulate", unit="projection")

    def reported(blocks):  # the bar moves as the writer takes each block of projections
        progress(0, params.n_angles)
        for start, stop, counts in blocks:
            yield start, stop, counts
            progress(stop, params.n_angles)

    slabs = reported(iter_projection_slabs(params))
    try:
        _write_simulated(args, slabs, params, flats, darks, meta)
    finally:
        for bar in bars:
            bar.close()
    print(f"{args.output}: {args.format}, {params.n_angles} projections of {params.n_rows} x "
          f"{params.n_cols}, axis at column {params.center:.2f}")
    return 0


def _write_simulated(args, slabs, params, flats, darks, meta) -> None:
    import tomolab

    if args.format == "dxchange":
        tomolab.io.write_dxchange(args.output, slabs, params.angles, flats, darks, **meta)
    elif args.format in ("nxtomo", "nxtomo-diamond"):
        tomolab.io.write_nxtomo(args.output, slabs, params.angles, flats, darks,
                                variant="diamond" if args.format == "nxtomo-diamond" else "esrf",
                                **meta)
    else:
        tomolab.io.write_tiff_stack(args.output, slabs, params.angles, flats, darks, **meta)


def cmd_stream_sim(args) -> int:
    from tomolab.errors import ParameterError
    from tomolab.live import simulate_stream

    transport = args.transport
    if transport == "auto":
        transport = "zmq" if "://" in args.target else "swmr"
    if args.scan is not None and (args.size, args.rows, args.angles) != (128, None, None):
        raise ParameterError("--scan replays a file; --size/--rows/--angles shape a simulated "
                             "scan", where="--scan", value=args.scan,
                             fix="pass either --scan FILE or the simulation's flags")
    scan = args.scan if args.scan is not None else {
        "size": args.size, "n_rows": args.rows, "n_angles": args.angles, "seed": args.seed}
    pause = None
    if args.pause is not None:
        try:
            after, seconds = args.pause.split(":")
            pause = (int(after), float(seconds))
        except ValueError:
            raise ParameterError("not FRAMES:SECONDS", where="--pause", value=args.pause,
                                 fix="pass e.g. --pause 50:2 (stall 2 s after 50 frames)") from None
    def ready(where):  # the socket or file is open: say where (the port of tcp://HOST:*)
        if not args.quiet:
            print(f"tomolab stream-sim: sending over {transport} to {where} at "
                  f"{f'{args.rate:g} frames/s' if args.rate else 'full speed'}", file=sys.stderr,
                  flush=True)

    stats = simulate_stream(args.target, scan=scan, rate=args.rate or None, transport=transport,
                            dtype=args.dtype, darks=args.darks, flats=args.flats,
                            bind=not args.connect, pattern=args.pattern, layout=args.layout,
                            timeout=args.timeout or None, overwrite=args.overwrite, pause=pause,
                            on_ready=ready)
    print(f"{stats['target']}: {stats['frames']} frames ({stats['bytes'] / 1e6:.1f} MB) in "
          f"{stats['seconds']:.2f} s, {stats['rate']:.0f} frames/s, "
          f"{stats['gb_per_s']:.3f} GB/s over {transport}")
    return 0


def _add_stream_sim(sub) -> None:
    sim = sub.add_parser(
        "stream-sim", help="replay a scan as a live acquisition (ZeroMQ or a growing file)",
        description="Send darks, flats, projections and the end at a set frame rate, as a "
                    "detector would during a scan: over ZeroMQ (PUSH or PUB, the wire protocol "
                    "of docs/live.md) or into a growing HDF5 file written with SWMR. Replays "
                    "--scan FILE, or a simulated scan of the analytic phantom.")
    sim.add_argument("target", metavar="ADDRESS_OR_PATH",
                     help="tcp://HOST:PORT (ZeroMQ) or a new .h5 file (SWMR)")
    sim.add_argument("--scan", metavar="FILE", default=None,
                     help="scan file to replay (default: a simulated scan)")
    sim.add_argument("--size", type=int, default=128,
                     help="simulated detector width in pixels (default: %(default)s)")
    sim.add_argument("--rows", type=int, default=None,
                     help="simulated detector rows (default: size/4, at least 8)")
    sim.add_argument("--angles", type=int, default=None,
                     help="simulated projections over 180 degrees (default: size x pi/2)")
    sim.add_argument("--seed", type=int, default=0,
                     help="seed of the simulated noise (default: %(default)s)")
    sim.add_argument("--rate", type=float, default=100.0,
                     help="frames per second, 0 for as fast as possible (default: %(default)g)")
    sim.add_argument("--transport", default="auto", choices=["auto", "zmq", "swmr"],
                     help="auto: zmq for an address with ://, else swmr (default: %(default)s)")
    sim.add_argument("--pattern", default="push", choices=["push", "pub"],
                     help="ZeroMQ: push (one receiver gets every frame) or pub (viewers "
                          "subscribe) (default: %(default)s)")
    sim.add_argument("--connect", action="store_true",
                     help="ZeroMQ: connect to the address (default: bind it; the receiver "
                          "connects)")
    sim.add_argument("--darks", type=int, default=None,
                     help="darks to send first (default: all of the scan's)")
    sim.add_argument("--flats", type=int, default=None,
                     help="flats to send after them (default: all of the scan's)")
    sim.add_argument("--dtype", default="uint16",
                     help="pixel type sent (default: %(default)s)")
    sim.add_argument("--layout", default="dxchange", choices=["dxchange", "nxtomo"],
                     help="SWMR: the growing file's layout (default: %(default)s)")
    sim.add_argument("--timeout", type=float, default=60.0,
                     help="ZeroMQ: seconds to wait for a receiver, 0 for ever "
                          "(default: %(default)g)")
    sim.add_argument("--pause", metavar="FRAMES:SECONDS", default=None,
                     help="stall once, after FRAMES frames, for SECONDS (default: no stall)")
    sim.add_argument("--overwrite", action="store_true",
                     help="SWMR: replace a scan file tomolab wrote (default: refuse)")
    sim.add_argument("-q", "--quiet", action="store_true",
                     help="no line on stderr when sending starts (default: one, with the address)")
    sim.set_defaults(func=cmd_stream_sim)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tomolab", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error (default: its one line)")
    parser.add_argument("--version", action="version",
                        version=f"tomolab {__import__('tomolab').__version__}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    backends = ["auto", "numpy", "cupy"]
    backend_help = "auto: the GPU when CuPy sees one, else numpy (the CPU) (default: %(default)s)"

    demo = sub.add_parser(
        "demo", help="simulate a sample, find its centre, reconstruct, save",
        description="Simulate a scan of an analytic phantom, open it lazily, find the rotation "
                    "centre, reconstruct, and write volume.zarr and middle_slice.png; prints the "
                    "centre found against the true one and the error against the phantom.")
    demo.add_argument("--out", default=None, metavar="DIR",
                      help=f"output folder (default: {_home_relative(demo_folder())}, the user's "
                           "cache, so no checkout or working folder fills up)")
    demo.add_argument("--size", type=int, default=256,
                      help="detector width in pixels (default: %(default)s)")
    demo.add_argument("--rows", type=int, default=16,
                      help="detector rows, one slice each (default: %(default)s)")
    demo.add_argument("--angles", type=int, default=400,
                      help="projections over 180 degrees (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the photon noise (default: %(default)s)")
    demo.add_argument("--backend", default="auto", choices=backends, help=backend_help)
    demo.set_defaults(func=cmd_demo)

    info = sub.add_parser("info", help="describe a scan file or folder",
                          description="Print the layout, sizes, angles and metadata of a scan "
                                      "(DXchange, NXtomo or a TIFF folder), reading no pixel data.")
    info.add_argument("file", help="HDF5 scan file or TIFF folder")
    info.set_defaults(func=cmd_info)

    recon = sub.add_parser(
        "recon", help="reconstruct a scan into a volume file",
        description="Reconstruct a scan slab by slab into a zarr store, an HDF5 file or a TIFF "
                    "folder, with a progress bar; a run that is killed resumes when started "
                    "again with the same arguments.")
    recon.add_argument("file", help="HDF5 scan file or TIFF folder")
    recon.add_argument("--center", type=_parse_center, default="auto", metavar="COLUMN|auto",
                       help="rotation axis as a detector column in pixels, or auto to find it "
                            "(default: %(default)s)")
    recon.add_argument("--rows", default=None, metavar="A:B",
                       help="detector rows A to B-1 (default: all)")
    recon.add_argument("-o", "--output", required=True, metavar="OUT",
                       help="OUT.zarr, OUT.h5 or a folder name for TIFFs (required)")
    recon.add_argument("--format", default="auto", choices=["auto", "zarr", "hdf5", "tiff"],
                       help="output format; auto tells it from OUT (default: %(default)s)")
    recon.add_argument("--filter", default="ramp",
                       help="reconstruction filter: ramp, shepp-logan, cosine, hamming, hann or "
                            "parzen (default: %(default)s)")
    recon.add_argument("--backend", default="auto", choices=backends, help=backend_help)
    recon.add_argument("--algorithm", default="auto", metavar="NAME",
                       help="auto (the fastest accurate method on the backend: gridrec on the CPU "
                            "and on a GPU), fbp, gridrec, or for few angles, a missing wedge or "
                            "low dose the iterative sirt, cgls or tv (default: %(default)s)")
    recon.add_argument("--iterations", type=_positive_int, default=None, metavar="N",
                       help="iterations of sirt (default 100), cgls (20) or tv (200)")
    recon.add_argument("--regularization", type=float, default=None, metavar="LAMBDA",
                       help="tv's weight, in attenuation per pixel (default: 1/20 of each "
                            "slice's FBP maximum)")
    recon.add_argument("--dtype", default="float32", choices=["float32", "float16", "uint16"],
                       help="how the volume is stored: float16 and uint16 halve the bytes "
                            "written; uint16 spreads --value-range over 0..65535 and records "
                            "the scale and offset (default: %(default)s)")
    recon.add_argument("--value-range", nargs=2, type=float, default=None, metavar=("LO", "HI"),
                       help="with --dtype uint16: the values kept, in 1/m (default: from a "
                            "preview of three rows)")
    recon.add_argument("--precision", default="single", choices=["single", "half"],
                       help="half: faster GPU backprojection, within 1e-3 of single "
                            "(default: %(default)s)")
    recon.add_argument("--no-normalize", action="store_true",
                       help="projections are already flat-field corrected (default: correct them)")
    recon.add_argument("--no-log", action="store_true",
                       help="projections are already line integrals: no -log, with "
                            "--no-normalize (default: take -log)")
    recon.add_argument("--overwrite", action="store_true",
                       help="replace an existing OUT that tomolab wrote (default: refuse)")
    where = recon.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="reconstruct on this dask cluster (tcp://HOST:PORT, or 'hub': the "
                            "cluster of this JupyterHub server); zarr or TIFF output "
                            "(default: no cluster)")
    where.add_argument("--workers", metavar="N", type=_positive_int, default=None,
                       help="reconstruct on N local worker processes; zarr or TIFF output "
                            "(default: no cluster)")
    recon.add_argument("-q", "--quiet", action="store_true",
                       help="no progress bar (default: a bar on stderr)")
    recon.set_defaults(func=cmd_recon)

    sim = sub.add_parser(
        "simulate", help="write a simulated scan with a known answer",
        description="Write a simulated scan of an analytic phantom (Poisson noise, a drifting "
                    "beam, the axis off the middle) in a facility layout; the true centre and "
                    "phantom travel in its metadata.")
    sim.add_argument("output", help="OUT.h5, or a folder name for --format tiff")
    sim.add_argument("--format", default="dxchange",
                     choices=["dxchange", "nxtomo", "nxtomo-diamond", "tiff"],
                     help="file layout (default: %(default)s)")
    sim.add_argument("--size", type=int, default=256,
                     help="detector width in pixels (default: %(default)s)")
    sim.add_argument("--rows", type=int, default=None,
                     help="detector rows (default: size/4, at least 8)")
    sim.add_argument("--angles", type=int, default=None,
                     help="projections over 180 degrees (default: size x pi/2)")
    sim.add_argument("--center", type=float, default=None, metavar="COLUMN",
                     help="rotation axis column in pixels (default: 7.31 %% of the width right of "
                          "the middle)")
    sim.add_argument("--photons", type=float, default=2.0e4,
                     help="photons per pixel in the flat field (default: %(default)g)")
    sim.add_argument("--rings", type=float, default=0.0,
                     help="relative pixel gain error that makes rings, e.g. 0.01 "
                          "(default: %(default)g, none)")
    sim.add_argument("--zingers", type=float, default=0.0,
                     help="fraction of pixels hit by zingers, e.g. 1e-4 (default: %(default)g, none)")
    sim.add_argument("--seed", type=int, default=0,
                     help="seed of the noise (default: %(default)s)")
    sim.add_argument("--overwrite", action="store_true",
                     help="replace an existing OUT (default: refuse)")
    sim.add_argument("-q", "--quiet", action="store_true",
                     help="no progress bar (default: a bar on stderr)")
    sim.set_defaults(func=cmd_simulate)
    _add_stream_sim(sub)
    return parser


def _home_relative(path: Path) -> str:
    """``/home/ada/.cache/tomolab/demo`` → ``~/.cache/tomolab/demo``."""
    home = Path.home()
    try:
        return f"~/{path.relative_to(home).as_posix()}"
    except ValueError:
        return str(path)


def _in_flags(text: str, command: str) -> str:
    """A warning's text with the api's keywords told as ``command``'s flags (``--algorithm``)."""
    from tomolab.errors import TomolabError

    return TomolabError(text).renamed(FLAGS.get(command, {})).what


def main(argv=None) -> int:
    from tomolab.errors import TomolabError

    parser = build_parser()
    args = parser.parse_args(argv)
    shown = warnings.showwarning
    try:
        if not args.debug:  # a warning is one line too (e.g. a partial output started afresh)
            warnings.showwarning = lambda message, *_, **__: print(
                f"tomolab {args.command}: warning: "
                f"{' '.join(_in_flags(str(message), args.command).split())}", file=sys.stderr)
        return args.func(args)
    except (TomolabError, OSError) as exc:
        if args.debug:
            raise
        if isinstance(exc, TomolabError):
            exc = exc.renamed(FLAGS.get(args.command, {}))
        message = " ".join(str(exc).split())
        print(f"tomolab {args.command}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError:
        if args.debug:
            raise
        # the estimates refuse what cannot fit before allocating; this is the last resort
        print(f"tomolab {args.command}: error: out of memory (a request the estimates let "
              "through); fix: a smaller request (--rows, --size), or run where more memory is "
              "available", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"tomolab {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = shown


if __name__ == "__main__":
    sys.exit(main())
