"""A full volume through a dask cluster against the direct stream, on the same scan and machine.

CPU (``--mode cpu``): ``reconstruct_to`` with no cluster, then through a LocalCluster of 1 and of
2 worker processes (one thread each): strong scaling on this machine's cores.

GPU (``--mode gpu``): ``reconstruct_to`` with no cluster (the direct three-stream slab pipeline),
then through a dask-cuda ``LocalCUDACluster`` of one worker on the same GPU, with
``slabs_per_task="auto"`` and with the whole volume as one task. Target: the cluster within 10 %
of the direct stream.

Method: one DXchange file (``bench_disk_to_disk.write_scan``: uncompressed, one chunk per
projection) in the page cache, output to zarr on the same disk. The cluster is started before the
timing (its start is reported apart). Runs alternate (direct, cluster, direct, cluster, ...); each
output is deleted and ``os.sync()`` flushes the page cache's dirty pages before the next run, so
no run pays for the last one's writes. Wall seconds from the call to the moved-into-place output;
the median of ``--rounds`` rounds. Outputs are checked bit-identical to the direct run's.

    python benchmarks/bench_cluster.py --mode cpu [--rows 64 --n 256 --angles 360]
    python benchmarks/bench_cluster.py --mode gpu [--rows 1024 --n 1024 --angles 1800]
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _timing import card_name, write_rows
from bench_disk_to_disk import write_scan


def timed_run(scan_path, out, center, **options):
    import tomolab

    if out.exists():
        shutil.rmtree(out)
    os.sync()
    stats = {}
    started = time.perf_counter()
    tomolab.reconstruct_to(tomolab.open_scan(scan_path), out, center=center, slab_rows=32,
                           stats=stats, **options)
    return time.perf_counter() - started, stats


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--n", type=int, default=None)
    parser.add_argument("--angles", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    parser.add_argument("--algorithm", default="fbp")
    parser.add_argument("--dir", default=None)
    args = parser.parse_args(argv)
    gpu = args.mode == "gpu"
    rows = args.rows or (1024 if gpu else 64)
    n = args.n or (1024 if gpu else 256)
    angles = args.angles or (1800 if gpu else 360)
    backend = "cupy" if gpu else "numpy"

    import tomolab
    import tomolab.cluster

    work = Path(tempfile.mkdtemp(dir=args.dir, prefix="bench_cluster_"))
    scan_path = work / "scan.h5"
    t = time.perf_counter()
    write_scan(scan_path, rows, n, angles, "per-projection")
    print(f"scan {rows} x {n} x {angles} written in {time.perf_counter() - t:.1f} s", flush=True)
    center = (n - 1) / 2
    reference = work / "direct.zarr"
    peers = {"direct stream (no cluster)": None}
    clients = {}
    try:
        if gpu:
            t = time.perf_counter()
            clients["local-cuda"] = tomolab.cluster.start_cluster("local-cuda", dashboard=False)
            print(f"local-cuda cluster of {len(clients['local-cuda'].scheduler_info()['workers'])}"
                  f" worker(s) started in {time.perf_counter() - t:.1f} s", flush=True)
            peers["dask-cuda, 1 GPU worker, slabs_per_task=auto"] = ("local-cuda", "auto")
            peers["dask-cuda, 1 GPU worker, one task"] = ("local-cuda", 10 ** 6)
        else:
            for workers in (1, 2):
                t = time.perf_counter()
                clients[workers] = tomolab.cluster.start_cluster("local", workers=workers,
                                                                 dashboard=False)
                print(f"local cluster of {workers} started in {time.perf_counter() - t:.1f} s",
                      flush=True)
                peers[f"LocalCluster, {workers} worker process(es) x 1 thread"] = (workers, "auto")
        times = {name: [] for name in peers}
        for round_ in range(-args.warmup, args.rounds):
            for name, peer in peers.items():
                out = reference if peer is None else work / "cluster.zarr"
                options = {"backend": backend, "algorithm": args.algorithm}
                if peer is not None:
                    options.update(client=clients[peer[0]], slabs_per_task=peer[1])
                seconds, stats = timed_run(scan_path, out, center, **options)
                shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in stats.items()}
                print(f"{name}: {seconds:.2f} s{' (warm-up)' if round_ < 0 else ''} {shown}",
                      flush=True)
                if round_ < 0:
                    continue
                times[name].append(seconds)
                if peer is not None and round_ == 0:
                    a = tomolab.io.open_volume(reference).values
                    b = tomolab.io.open_volume(out).values
                    assert np.array_equal(a, b), f"{name}: output differs from the direct run"
        load = os.getloadavg()[0]
        base = statistics.median(times["direct stream (no cluster)"])
        rows_out = []
        for name, values in times.items():
            median = statistics.median(values)
            rows_out.append({
                "date": datetime.date.today().isoformat(), "card": card_name(),
                "volume": f"{rows} x {n}^2", "angles": angles, "peer": name,
                "median s": round(median, 3), "runs": " ".join(f"{v:.2f}" for v in values),
                "x direct": round(median / base, 3), "load before": round(load, 2),
                "identical": "yes",
            })
        write_rows(rows_out, f"bench_cluster_{args.mode}")
    finally:
        for client in clients.values():
            client.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
