"""A full volume through a dask cluster against the direct stream, on the same scan and machine.

CPU (``--mode cpu``): ``reconstruct_to`` with no cluster, then through a LocalCluster of 1 and of
2 worker processes (one thread each): strong scaling on this machine's cores.

GPU (``--mode gpu``): ``reconstruct_to`` with no cluster (the direct three-stream slab pipeline),
then through a dask-cuda ``LocalCUDACluster`` of one worker on the same GPU (``slabs_per_task=
"auto"``: one task, the whole volume). Target: the cluster within 10 % of the direct stream.
Issue 13: a worker's stream read at half the speed of the direct one. Found on the CPU: a scan
unpickled on a worker looked its frames' byte offsets up again, in all 8 reader threads of the
first slab at once (h5py lets one in at a time); the offsets now travel with the pickled scan.
The facts below print that first slab both ways. More peers look for what else may remain:

* ``TOMOLAB_FRAME_READER=nogil``, direct and on a second cluster whose worker inherits it: the
  rows of each frame read by a Numba loop that holds no GIL (GIL hand-offs to the worker's
  other threads; see ``tomolab/io/_pread.py``);
* ``TOMOLAB_WORKER_CPUS=all``, on a third cluster, only where dask-cuda pinned the worker's task
  to fewer CPUs than this process has: the task's threads may use every CPU of the nanny;
* ``--quiet-worker``: a cluster whose workers run no profiler or system monitor and look at
  their event loop, memory and heartbeats rarely.

Before the runs it prints what differs between this process, the worker's event loop and a
worker task (CPUs allowed, the nanny's environment, switch interval, threads, whether the scan's
file note survives pickling), and the read stage alone (every slab's rows read with
``read_frames`` into one buffer) here, here beside a busy Python thread, and in a worker task.
In the first timed round it prints the CPU seconds and context switches of each thread of the
process that ran the stream (this one, then the worker).

Method: one DXchange file (``bench_disk_to_disk.write_scan``: uncompressed, one chunk per
projection) in the page cache, output to zarr on the same disk. The cluster is started before the
timing (its start is reported apart). Runs alternate (direct, cluster, direct, cluster, ...); each
output is deleted and ``os.sync()`` flushes the page cache's dirty pages before the next run, so
no run pays for the last one's writes. Wall seconds from the call to the moved-into-place output;
the median of ``--rounds`` rounds. Outputs are checked bit-identical to the direct run's.

    python benchmarks/bench_cluster.py --mode cpu [--rows 64 --n 256 --angles 360]
    python benchmarks/bench_cluster.py --mode gpu [--rows 1024 --n 1024 --angles 1800]

The table's stage columns are medians of the stream's stats (busy seconds of the reader and
writer threads, waits of the main loop, GPU compute) and ``client`` is the wall time less the
worker's task time: the client's own share.
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

FACT_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MALLOC_TRIM_THRESHOLD_",
            "MALLOC_MMAP_THRESHOLD_", "CUDA_VISIBLE_DEVICES", "TOMOLAB_GPU_MEMORY_LIMIT",
            "TOMOLAB_FRAME_READER", "TOMOLAB_WORKER_CPUS")

#: dask settings of the "quiet worker" cluster: the worker's own threads rarely want the GIL
QUIET_WORKER = {"distributed.worker.profile.enabled": False,
                "distributed.admin.system-monitor.interval": "1h",
                "distributed.admin.system-monitor.gil.enabled": False,
                "distributed.admin.tick.interval": "1s",
                "distributed.worker.memory.monitor-interval": "1s"}


def facts(scan=None):
    """What may make the same stream slower in one place than another (run there)."""
    import importlib.util
    import threading

    import dask

    found = {"cpus": len(os.sched_getaffinity(0)), "cpu_count": os.cpu_count(),
             "switch ms": sys.getswitchinterval() * 1e3, "threads": threading.active_count(),
             "thread": threading.current_thread().name[:24],
             "env": {k: os.environ[k] for k in FACT_ENV if k in os.environ},
             "profile": dask.config.get("distributed.worker.profile.enabled", None),
             "gilknocker": importlib.util.find_spec("gilknocker") is not None}
    if scan is not None:
        note = scan["projections"].variable.encoding.get("tomolab_source")
        found["note"] = note is not None and note[0] == scan["projections"].data.name
    return found


def thread_times():
    """{thread: [cpu seconds, voluntary, involuntary context switches]} of this process (Linux).

    Python threads by name (numbered where names repeat); the others (CUDA, blosc, the
    kernel's) by their command name. Many involuntary switches: the thread waited for a CPU;
    many voluntary ones: it slept, e.g. waiting for the GIL or for I/O.
    """
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/self/task/{tid}/status") as f:
                status = dict(line.split(":", 1) for line in f if ":" in line)
            with open(f"/proc/self/task/{tid}/comm") as f:
                comm = f.read().strip()
        except OSError:  # the thread ended meanwhile
            continue
        label = names.get(int(tid), f"native {comm}")
        found[f"{label} [{tid}]"] = [(int(fields[11]) + int(fields[12])) / ticks,
                                      int(status["voluntary_ctxt_switches"]),
                                      int(status["nonvoluntary_ctxt_switches"])]
    with open("/proc/self/stat") as f:  # the whole process, threads that ended included
        fields = f.read().rsplit(")", 1)[1].split()
    found["process"] = [(int(fields[11]) + int(fields[12])) / ticks, 0, 0]
    return found


def print_thread_times(where, before, after, top=10):
    """The threads that ran most between two :func:`thread_times`."""
    rows = []
    for label, (cpu, vol, invol) in after.items():
        was = before.get(label, [0.0, 0, 0])
        if label != "process":
            rows.append((cpu - was[0], vol - was[1], invol - was[2], label))
    rows.sort(reverse=True)
    total = after["process"][0] - before["process"][0]
    alive = sum(r[0] for r in rows)
    print(f"CPU by thread, {where}: {total:.2f} s in all, {total - alive:.2f} s of them in "
          f"threads that ended (the per-slab read pools among them)")
    for cpu, vol, invol, label in rows[:top]:
        print(f"    {cpu:6.2f} s  {vol:7d} vol  {invol:6d} invol  {label}")


def read_alone(scan, slab_rows, busy_thread=False, slabs=8, reader=None):
    """Seconds to read the rows of the first ``slabs`` slabs into one (pinned) buffer.

    ``busy_thread``: with a pure-Python loop running beside (it holds the GIL but for the
    interpreter's switches); ``reader``: ``TOMOLAB_FRAME_READER`` for this call.
    """
    import threading

    from tomolab.io import read_frames

    projections = scan["projections"]
    n_angles, n_rows, n_cols = projections.shape
    try:
        import cupyx
        buffer = cupyx.empty_pinned((n_angles * slab_rows * n_cols,), projections.dtype)
    except ImportError:
        buffer = np.empty((n_angles * slab_rows * n_cols,), projections.dtype)
    stop = threading.Event()

    def spin():  # pure Python: holds the GIL but for the interpreter's switches
        while not stop.is_set():
            sum(range(1000))
    spinner = threading.Thread(target=spin, daemon=True) if busy_thread else None
    if spinner is not None:
        spinner.start()
    saved = os.environ.get("TOMOLAB_FRAME_READER")
    if reader:
        os.environ["TOMOLAB_FRAME_READER"] = reader
    try:
        started = time.perf_counter()
        for start in range(0, min(n_rows, slabs * slab_rows), slab_rows):
            height = min(slab_rows, n_rows - start)
            out = buffer[:n_angles * height * n_cols].reshape(n_angles, height, n_cols)
            read_frames(projections, slice(start, start + height), out=out,
                        threads=min(8, os.cpu_count() or 1))
        return time.perf_counter() - started
    finally:
        stop.set()
        if spinner is not None:
            spinner.join()
        if reader:
            os.environ.pop("TOMOLAB_FRAME_READER")
            if saved is not None:
                os.environ["TOMOLAB_FRAME_READER"] = saved


def first_slab(scan, slab_rows, forget):
    """Seconds to read the first slab of a copy of ``scan``; ``forget``: its frame offsets unknown.

    Before the offsets travelled with a pickled scan, a worker's first slab looked them up.
    """
    import pickle

    from tomolab.io import read_frames

    copy = pickle.loads(pickle.dumps(scan))
    projections = copy["projections"]
    if forget:
        projections.variable.encoding["tomolab_source"][1].__dict__.pop("_offsets_in_file", None)
    started = time.perf_counter()
    read_frames(projections, slice(0, slab_rows), threads=min(8, os.cpu_count() or 1))
    return time.perf_counter() - started


def in_task(cpus, function, *args):
    """``function(*args)`` in a worker's task thread, its CPUs chosen as reconstruct_to's tasks do."""
    from tomolab.cluster import task_cpus

    with task_cpus(cpus):
        return function(*args)


def print_facts(clients, scan_path, slab_rows, cpus="pinned"):
    """Print where the stream runs (see the module's docstring); return this process's CPUs."""
    import tomolab

    scan = tomolab.open_scan(scan_path)
    print("where | " + " | ".join(f"{k}={v}" for k, v in facts(scan).items()) + "  (this process)")
    for name, client in clients.items():
        for address, found in client.run(facts).items():
            print(f"{name}: worker loop {address} | "
                  + " | ".join(f"{k}={v}" for k, v in found.items()))
        found = client.submit(in_task, cpus, facts, scan, pure=False).result()
        print(f"{name}: worker task | " + " | ".join(f"{k}={v}" for k, v in found.items()))
    read_alone(scan, slab_rows, reader="nogil")  # warm: page cache, offsets, Numba loaded
    here = min(read_alone(scan, slab_rows) for _ in range(2))
    here_nogil = min(read_alone(scan, slab_rows, reader="nogil") for _ in range(2))
    busy = read_alone(scan, slab_rows, busy_thread=True)
    busy_nogil = read_alone(scan, slab_rows, busy_thread=True, reader="nogil")
    print(f"read of 8 slabs alone, this process: {here:.3f} s (nogil reader {here_nogil:.3f} s); "
          f"beside a busy Python thread {busy:.3f} s (nogil reader {busy_nogil:.3f} s)",
          flush=True)
    for name, client in clients.items():
        there = [client.submit(in_task, cpus, read_alone, scan, slab_rows, pure=False).result()
                 for _ in range(3)]
        print(f"read of 8 slabs alone, {name} worker task: {min(there[1:]):.3f} s", flush=True)
    print(f"first slab of an unpickled scan, frame offsets to look up (once; before the fix all "
          f"8 reader threads did, one after another): {first_slab(scan, slab_rows, True):.3f} s; "
          f"known (they travel now): {first_slab(scan, slab_rows, False):.3f} s", flush=True)
    return facts()["cpus"]


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
    parser.add_argument("--spec", default="local-cuda",
                        help="gpu: the cluster spec (local: try the GPU mode's steps on a CPU)")
    parser.add_argument("--backend", default=None, help="default: cupy for gpu, numpy for cpu")
    parser.add_argument("--quiet-worker", action="store_true",
                        help="gpu: add a cluster whose workers run no profiler or system monitor")
    args = parser.parse_args(argv)
    gpu = args.mode == "gpu"
    rows = args.rows or (1024 if gpu else 64)
    n = args.n or (1024 if gpu else 256)
    angles = args.angles or (1800 if gpu else 360)
    backend = args.backend or ("cupy" if gpu else "numpy")
    cuda = {"workers": 1} if args.spec == "local" else {}

    import dask

    import tomolab
    import tomolab.cluster

    work = Path(tempfile.mkdtemp(dir=args.dir, prefix="bench_cluster_"))
    scan_path = work / "scan.h5"
    t = time.perf_counter()
    write_scan(scan_path, rows, n, angles, "per-projection")
    print(f"scan {rows} x {n} x {angles} written in {time.perf_counter() - t:.1f} s", flush=True)
    center = (n - 1) / 2
    reference = work / "direct.zarr"
    nogil = {"TOMOLAB_FRAME_READER": "nogil"}
    # peer: (cluster or None, slabs_per_task, environment of this process during the run)
    peers = {"direct stream (no cluster)": (None, None, {})}
    clients = {}

    def start(name, spec, settings=None, environ=None, **options):
        """A cluster whose workers start under dask ``settings`` and ``environ`` (inherited)."""
        t = time.perf_counter()
        saved = {k: os.environ.get(k) for k in environ or {}}
        os.environ.update(environ or {})
        try:
            with dask.config.set(settings or {}):
                clients[name] = tomolab.cluster.start_cluster(spec, dashboard=False, **options)
        finally:
            for k, v in saved.items():
                os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
        print(f"{name}: cluster of {len(clients[name].scheduler_info()['workers'])} worker(s) "
              f"started in {time.perf_counter() - t:.1f} s", flush=True)

    try:
        if gpu:
            start("local-cuda", args.spec, **cuda)
            start("local-cuda, nogil reader", args.spec, environ=nogil, **cuda)
            mine = print_facts({"local-cuda": clients["local-cuda"]}, scan_path, 32)
            for address, found in clients["local-cuda, nogil reader"].run(facts).items():
                print(f"local-cuda, nogil reader: worker loop {address} | env={found['env']}")
            pinned = clients["local-cuda"].submit(in_task, "pinned", facts, pure=False).result()
            peers["direct stream, TOMOLAB_FRAME_READER=nogil"] = (None, None, nogil)
            peers["dask-cuda, 1 GPU worker (one task)"] = ("local-cuda", "auto", {})
            peers["dask-cuda, TOMOLAB_FRAME_READER=nogil"] = ("local-cuda, nogil reader", "auto",
                                                              {})
            if pinned["cpus"] < mine:  # dask-cuda pinned the worker to fewer CPUs than ours
                start("local-cuda, cpus=all", args.spec, **cuda)
                print_facts({"local-cuda, cpus=all": clients["local-cuda, cpus=all"]}, scan_path,
                            32, cpus="all")
                peers["dask-cuda, TOMOLAB_WORKER_CPUS=all"] = (
                    "local-cuda, cpus=all", "auto", {"TOMOLAB_WORKER_CPUS": "all"})
            else:
                print(f"the worker's task may use {pinned['cpus']} CPUs, this process {mine}: "
                      f"no TOMOLAB_WORKER_CPUS=all peer", flush=True)
            if args.quiet_worker:
                start("local-cuda, quiet worker", args.spec, settings=QUIET_WORKER, **cuda)
                peers["dask-cuda, quiet worker (no profiler, no system monitor)"] = (
                    "local-cuda, quiet worker", "auto", {})
        else:
            for workers in (1, 2):
                start(f"local {workers}", "local", workers=workers)
                peers[f"LocalCluster, {workers} worker process(es) x 1 thread"] = (
                    f"local {workers}", "auto", {})
            print_facts(clients, scan_path, 32)
        first_cluster = "local-cuda" if gpu else "local 1"
        expected = None  # the direct run's volume, read once
        times = {name: [] for name in peers}
        stages = {name: [] for name in peers}
        for round_ in range(-args.warmup, args.rounds):
            for name, (cluster, per_task, environ) in peers.items():
                out = reference if name == "direct stream (no cluster)" else work / "other.zarr"
                options = {"backend": backend, "algorithm": args.algorithm}
                if cluster is not None:
                    options.update(client=clients[cluster], slabs_per_task=per_task)
                watch = round_ == 0 and cluster in (None, first_cluster) and not environ
                if watch:  # which threads of the process that runs the stream use the CPU
                    where = (lambda f: f()) if cluster is None else \
                        (lambda f, c=clients[cluster]: next(iter(c.run(f).values())))
                    before = where(thread_times)
                os.environ.update(environ)
                try:
                    seconds, stats = timed_run(scan_path, out, center, **options)
                finally:
                    for key in environ:
                        os.environ.pop(key, None)
                if watch:
                    print_thread_times(name, before, where(thread_times))
                shown = {k: round(v, 2) if isinstance(v, float) else v for k, v in stats.items()}
                print(f"{name}: {seconds:.2f} s{' (warm-up)' if round_ < 0 else ''} {shown}",
                      flush=True)
                if round_ < 0:
                    continue
                times[name].append(seconds)
                stages[name].append(dict(stats, client=seconds - stats["worker_seconds"])
                                    if "worker_seconds" in stats else stats)
                if out != reference and round_ == 0:
                    if expected is None:
                        expected = tomolab.io.open_volume(reference).values
                    same = np.array_equal(expected, tomolab.io.open_volume(out).values)
                    assert same, f"{name}: output differs from the direct run"
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
            for key in ("read", "wait_read", "write", "wait_write", "compute", "client"):
                seen = [s[key] for s in stages[name] if isinstance(s.get(key), float)]
                if seen:
                    rows_out[-1][key] = round(statistics.median(seen), 2)
            cpus = {c for s in stages[name] for c in s.get("worker_cpus", [])}
            if cpus:
                rows_out[-1]["task cpus"] = ",".join(map(str, sorted(cpus)))
        write_rows(rows_out, f"bench_cluster_{args.mode}")
    finally:
        for client in clients.values():
            client.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
