"""Start a dask cluster from a short spec: local processes, one worker per GPU, SLURM or PBS.

:func:`start_cluster` returns a :class:`distributed.Client` connected to a new
cluster; closing the client closes the cluster and its workers. Pass the
client to :func:`tomolab.reconstruct_to` (``client=``), or let it be the
default of the process (it is, once made) and pass ``client="active"``.

* ``"local"``: CPU worker processes on this machine (``workers``, default one
  per two cores), one thread each: the engine uses the cores for a slab.
* ``"local-cuda"``: one worker per GPU that this process may use (dask-cuda's
  ``LocalCUDACluster``), respecting ``CUDA_VISIBLE_DEVICES`` and the hub's cap
  ``TOMOLAB_GPU_MEMORY_LIMIT``, which every worker inherits.
* ``"slurm"``, ``"pbs"``: dask-jobqueue jobs of one worker each, ``gpus`` per
  job (``--gres``, ``ngpus``), ``memory``, ``cores``, ``walltime``, ``queue``,
  ``account`` from keyword arguments or a YAML file (``config=``; arguments win).
* ``"hub"``: connect to the cluster that the user's JupyterHub server runs
  (a pool entry of several GPUs starts one: :mod:`tomolab.hub.server_cluster`);
  closing this client leaves that cluster running for the next one. Its
  address and TLS certificate are in the file named by ``TOMOLAB_CLUSTER_FILE``,
  which :func:`serve` (``python -m tomolab.cluster serve``) writes.

Imports dask.distributed (and dask-cuda, dask-jobqueue) only when called:
``pip install tomolab[cluster]`` (and ``tomolab[cluster-gpu]`` for ``"local-cuda"``).
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path

from tomolab.devices import usable_cpus
from tomolab.errors import ParameterError

__all__ = [
    "JOBQUEUE_OPTIONS",
    "SPECS",
    "WORKER_CPUS",
    "connect_hub",
    "make_cluster",
    "read_config",
    "serve",
    "start_cluster",
    "task_cpus",
    "visible_gpus",
    "worker_cpus",
]

SPECS = ("local", "local-cuda", "slurm", "pbs", "hub")
#: the environment variable naming the file of the user's server cluster (see :func:`serve`)
ENV_CLUSTER_FILE = "TOMOLAB_CLUSTER_FILE"

#: options of the ``"slurm"`` and ``"pbs"`` specs (keyword arguments or YAML keys)
JOBQUEUE_OPTIONS = {
    "jobs": "jobs to start, one worker each (0: start none yet; scale later)",
    "gpus": "GPUs per job (0: a CPU job)",
    "cores": "CPU cores per job",
    "memory": "memory per job, e.g. '64GB'",
    "walltime": "wall time per job, 'HH:MM:SS'",
    "queue": "partition (SLURM) or queue (PBS)",
    "account": "account to charge",
    "job_script_prologue": "shell lines run before the worker (modules, environments)",
    "job_extra_directives": "more #SBATCH / #PBS directives",
    "local_directory": "scratch folder on the node",
    "interface": "network interface of the workers and scheduler (e.g. 'ib0')",
    "python": "the Python that runs the workers",
    "log_directory": "folder for the jobs' logs",
}


def start_cluster(spec: str = "local", *, config=None, dashboard: bool = True, **options):
    """Start a dask cluster and return a client that closes it when closed.

    Parameters
    ----------
    spec : {"local", "local-cuda", "slurm", "pbs", "hub"} or str
        The kind of cluster (see the module's table), or a YAML file whose
        ``kind`` key names it and whose other keys are options. ``"hub"``
        connects to the cluster of the user's server (:func:`connect_hub`)
        instead of starting one.
    config : str or os.PathLike, optional
        A YAML file of options (``"slurm"``/``"pbs"``: :data:`JOBQUEUE_OPTIONS`);
        keyword arguments win over it.
    dashboard : bool
        Serve the dask dashboard on a free port of this host (needs bokeh; the
        link is ``client.dashboard_link``).
    **options
        ``"local"``: ``workers`` (processes), ``threads`` (per worker, default 1),
        ``memory_limit``. ``"local-cuda"``: ``devices`` (overrides
        ``CUDA_VISIBLE_DEVICES``). ``"slurm"``/``"pbs"``: :data:`JOBQUEUE_OPTIONS`.

    Returns
    -------
    distributed.Client
        Connected to the new cluster (``client.cluster``); ``client.close()``
        (or leaving a ``with`` block) stops the workers and the scheduler.

    Examples
    --------
    >>> import tomolab.cluster
    >>> with tomolab.cluster.start_cluster("local", workers=1, dashboard=False) as client:
    ...     len(client.scheduler_info()["workers"])
    1
    """
    if spec == "hub":
        _refuse_unknown({k: v for k, v in options.items() if k != "timeout"}, "hub", ("timeout",))
        return connect_hub(**options)
    cluster = make_cluster(spec, config=config, dashboard=dashboard, **options)
    try:
        client = _client_class()(cluster)
        kind = getattr(cluster, "_tomolab_kind", "")
        if kind in ("local", "local-cuda"):
            client.wait_for_workers(len(cluster.workers), timeout=120)
    except BaseException:
        cluster.close()
        raise
    return client


def make_cluster(spec: str = "local", *, config=None, dashboard: bool = True, **options):
    """The cluster of :func:`start_cluster`, without a client (e.g. to read ``job_script()``).

    Examples
    --------
    >>> cluster = make_cluster("slurm", jobs=0, gpus=1, memory="32GB", walltime="00:30:00",
    ...                        dashboard=False)  # doctest: +SKIP
    >>> print(cluster.job_script())                                        # doctest: +SKIP
    """
    if isinstance(spec, (str, os.PathLike)) and str(spec).lower().endswith((".yaml", ".yml")):
        file_options = read_config(spec)
        kind = file_options.pop("kind", None)
        if kind is None:
            raise ParameterError("the cluster file names no kind", where=f"{spec}: kind",
                                 value=None, fix=f"add e.g. 'kind: slurm' (one of {', '.join(SPECS)})")
        spec, options = kind, {**file_options, **options}
    if spec not in SPECS:
        raise ParameterError("unknown cluster spec", where="spec", value=spec,
                             fix=f"use one of {', '.join(SPECS)}, or a YAML file with a 'kind' key")
    if spec == "hub":
        raise ParameterError("the hub's cluster runs already; connect to it", where="spec",
                             value=spec, fix='use tomolab.cluster.start_cluster("hub")')
    if config is not None:
        options = {**read_config(config), **options}
        options.pop("kind", None)
    _require("distributed", "cluster")
    dashboard = bool(dashboard) and _has("bokeh")
    if spec == "local":
        with _glibc_malloc_defaults():
            cluster = _local(dashboard, **options)
    elif spec == "local-cuda":
        with _glibc_malloc_defaults():
            cluster = _local_cuda(dashboard, **options)
    else:
        cluster = _jobqueue(spec, dashboard, **options)
    cluster._tomolab_kind = spec
    return cluster


def visible_gpus(environ=None) -> list[str] | None:
    """The GPUs that ``CUDA_VISIBLE_DEVICES`` lets this process see; None when it is unset.

    Examples
    --------
    >>> visible_gpus({"CUDA_VISIBLE_DEVICES": "2,3"})
    ['2', '3']
    >>> visible_gpus({"CUDA_VISIBLE_DEVICES": ""})
    []
    >>> visible_gpus({}) is None
    True
    """
    environ = os.environ if environ is None else environ
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [part.strip() for part in value.split(",") if part.strip()]


def read_config(path) -> dict:
    """Options from a YAML file: a mapping of option names to values."""
    import yaml

    path = Path(os.fspath(path)).expanduser()
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ParameterError(f"cannot read the cluster file ({exc.strerror})", where="config",
                             value=str(path), fix="pass the path of a YAML file") from None
    except yaml.YAMLError as exc:
        raise ParameterError(f"not valid YAML ({' '.join(str(exc).split())})", where=str(path),
                             value=None, fix="write 'option: value' lines (see docs/cluster.md)"
                             ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParameterError("a cluster file holds a mapping of option: value", where=str(path),
                             value=type(data).__name__, fix="write 'option: value' lines")
    return {str(k): v for k, v in data.items()}


# ----------------------------------------------------------------------------- the server's cluster

def serve(path, *, devices, dashboard: bool = False) -> None:
    """Run a cluster of one worker per GPU until SIGTERM or SIGINT; its address goes to ``path``.

    What a JupyterHub server of several GPUs runs beside itself
    (``python -m tomolab.cluster serve --file PATH --devices 0,1``, started by
    :mod:`tomolab.hub.server_cluster`). The scheduler listens on loopback
    with TLS: a certificate made for this cluster, written with the address
    to ``path`` (mode 0600, so only the user's own processes can connect,
    not other users of the host). The workers are dask-cuda's where it is
    installed, else one CPU worker process per GPU whose
    ``CUDA_VISIBLE_DEVICES`` is that GPU (the engine then uses it where CuPy
    is installed); each worker inherits ``TOMOLAB_GPU_MEMORY_LIMIT``. On
    SIGTERM the workers stop and ``path`` is removed; if this process is
    killed, its workers exit with it.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write: JSON with ``address``, ``workers``, ``kind``,
        ``dashboard`` and the TLS certificate and key (PEM).
    devices : sequence of str or str
        GPUs, one worker each (``"0,1"``, ``["0", "1"]``, UUIDs).
    dashboard : bool
        Serve the dask dashboard on a free loopback port (its link goes to the file).
    """
    import json
    import signal
    import tempfile
    import time

    _require("distributed", "cluster")
    _require("cryptography", "cluster")
    from distributed.security import Security

    gpus = [str(d).strip() for d in (devices.split(",") if isinstance(devices, str) else devices)]
    gpus = [g for g in gpus if g]
    if not gpus:
        raise ParameterError("no GPU to start workers for", where="devices", value=devices,
                             fix="pass e.g. --devices 0,1")
    path = Path(os.fspath(path)).expanduser()
    received = []  # a SIGTERM while the cluster starts ends it as soon as it is up
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: received.append(number))
    security = Security.temporary()
    dashboard = bool(dashboard) and _has("bokeh")
    with _glibc_malloc_defaults():
        if _has("dask_cuda"):
            cluster = _local_cuda(dashboard, devices=gpus, security=security)
            kind = "local-cuda"
        else:
            cluster = _per_device(dashboard, gpus, security)
            kind = "local"
    try:
        record = {"address": cluster.scheduler_address, "workers": len(gpus), "kind": kind,
                  "devices": gpus, "pid": os.getpid(),
                  "dashboard": cluster.dashboard_link if dashboard else None,
                  "tls_ca": security.tls_ca_file, "tls_cert": security.tls_client_cert,
                  "tls_key": security.tls_client_key}
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # 0600
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        os.replace(partial, path)
        while not received:  # a signal cuts the sleep short (no pause(): it could miss one)
            time.sleep(1)
    finally:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        cluster.close(timeout=30)


def connect_hub(*, timeout: float = 120):
    """A client of the cluster that the user's server runs (see :func:`serve`).

    Waits up to ``timeout`` seconds for the cluster's file and for all its
    workers. Closing the client leaves the cluster running.

    Raises
    ------
    tomolab.errors.ParameterError
        If this server runs no cluster (``TOMOLAB_CLUSTER_FILE`` unset), or
        it does not come up in time.
    """
    import json
    import time

    _require("distributed", "cluster")
    from distributed import Client
    from distributed.security import Security

    name = os.environ.get(ENV_CLUSTER_FILE, "").strip()
    if not name:
        raise ParameterError("this server runs no dask cluster", where=ENV_CLUSTER_FILE, value=None,
                             fix="start the server with a profile of several GPUs, or use "
                                 'start_cluster("local") / start_cluster("local-cuda")')
    path = Path(name)
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise ParameterError(f"the server's cluster did not start within {timeout:g} s",
                                 where=ENV_CLUSTER_FILE, value=name,
                                 fix="see the server's log (the lines of tomolab.cluster serve)")
        time.sleep(0.2)
    record = json.loads(path.read_text())
    security = Security(tls_ca_file=record["tls_ca"], tls_client_cert=record["tls_cert"],
                        tls_client_key=record["tls_key"], require_encryption=True)
    try:
        client = Client(record["address"], security=security,
                        timeout=max(1.0, deadline - time.monotonic()))
    except (OSError, TimeoutError) as exc:
        raise ParameterError(f"the server's cluster does not answer ({type(exc).__name__})",
                             where=ENV_CLUSTER_FILE, value=name,
                             fix="restart the server (its cluster ends with it)") from None
    try:
        client.wait_for_workers(record["workers"], timeout=max(1.0, deadline - time.monotonic()))
    except TimeoutError:
        client.close()
        raise ParameterError(f"the server's cluster has fewer than {record['workers']} workers "
                             f"after {timeout:g} s", where=ENV_CLUSTER_FILE, value=name,
                             fix="see the server's log (the lines of tomolab.cluster serve)"
                             ) from None
    except BaseException:
        client.close()
        raise
    return client


def _per_device(dashboard, gpus, security):
    """CPU worker processes, one per GPU, each seeing that GPU only (no dask-cuda)."""
    from distributed import Nanny, Scheduler, SpecCluster

    limit = os.environ.get("TOMOLAB_GPU_MEMORY_LIMIT", "").strip()
    workers = {}
    for gpu in gpus:
        env = {"CUDA_VISIBLE_DEVICES": gpu, **({"TOMOLAB_GPU_MEMORY_LIMIT": limit} if limit else {})}
        workers[f"gpu-{gpu}"] = {"cls": Nanny, "options": {
            "nthreads": 1, "env": env, "host": "127.0.0.1", "security": security,
            "memory_limit": "auto", "name": f"gpu-{gpu}"}}
    scheduler_options = {"host": "127.0.0.1", "security": security, "dashboard": dashboard,
                         "dashboard_address": "127.0.0.1:0"}
    if not dashboard:
        scheduler_options.pop("dashboard_address")
    return SpecCluster(workers=workers, scheduler={"cls": Scheduler, "options": scheduler_options},
                       security=security)


def _die_with_parent(parent: int) -> None:
    """Have the kernel send SIGTERM to this process when its parent exits (Linux only)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the spawner's process cleanup remains
        return
    if os.getppid() != parent:  # the parent went before the request took hold
        raise SystemExit(0)


def main(argv=None) -> int:
    """``python -m tomolab.cluster serve --file PATH --devices 0,1 [--dashboard]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tomolab.cluster",
                                     description="Run the dask cluster of a JupyterHub server.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="one worker per GPU until SIGTERM; the address goes to --file")
    run.add_argument("--file", required=True, help="where to write the address and certificate")
    run.add_argument("--devices", required=True, help="GPUs, one worker each: 0,1")
    run.add_argument("--dashboard", action="store_true", help="serve the dask dashboard on loopback")
    run.add_argument("--parent", type=int, default=None, metavar="PID",
                     help="end (SIGTERM) when this process, the parent, exits (Linux)")
    args = parser.parse_args(argv)
    if args.parent is not None:
        _die_with_parent(args.parent)
    try:
        serve(args.file, devices=args.devices, dashboard=args.dashboard)
    except ParameterError as exc:
        print(f"tomolab.cluster: {exc}", file=__import__("sys").stderr)
        return 2
    return 0


# ----------------------------------------------------------------------------- kinds

def _local(dashboard, *, workers=None, threads=1, memory_limit="auto", **unknown):
    from distributed import LocalCluster

    _refuse_unknown(unknown, "local", ("workers", "threads", "memory_limit"))
    workers = _positive_int(workers if workers is not None else max(1, usable_cpus() // 2),
                            "workers")
    threads = _positive_int(threads, "threads")
    return LocalCluster(n_workers=workers, threads_per_worker=threads, processes=True,
                        memory_limit=memory_limit, **_local_addresses(dashboard))


def local_cuda_options(environ=None, *, devices=None) -> dict:
    """Keyword arguments of dask-cuda's ``LocalCUDACluster``: one worker per visible GPU.

    ``CUDA_VISIBLE_DEVICES`` (as the hub sets it) decides which GPUs, in its
    order; ``TOMOLAB_GPU_MEMORY_LIMIT`` is passed on to every worker, whose
    engine caps its memory pool at it.

    Examples
    --------
    >>> local_cuda_options({"CUDA_VISIBLE_DEVICES": "1,3", "TOMOLAB_GPU_MEMORY_LIMIT": "20G"})
    {'CUDA_VISIBLE_DEVICES': ['1', '3'], 'n_workers': 2, 'threads_per_worker': 1, 'env': {'TOMOLAB_GPU_MEMORY_LIMIT': '20G'}}
    """
    environ = os.environ if environ is None else environ
    if devices is not None:
        gpus = [str(d).strip() for d in (devices.split(",") if isinstance(devices, str) else devices)]
        gpus = [g for g in gpus if g]
    else:
        gpus = visible_gpus(environ)
    if gpus is not None and not gpus:
        raise ParameterError("no GPU is visible to this process", where="CUDA_VISIBLE_DEVICES",
                             value=environ.get("CUDA_VISIBLE_DEVICES", ""),
                             fix='start_cluster("local") for CPU workers, or ask the hub for a GPU')
    options: dict = {}
    if gpus is not None:
        options.update(CUDA_VISIBLE_DEVICES=gpus, n_workers=len(gpus))
    options["threads_per_worker"] = 1
    limit = environ.get("TOMOLAB_GPU_MEMORY_LIMIT", "").strip()
    if limit:
        from tomolab.devices import parse_bytes

        parse_bytes(limit)  # a wrong value fails here, not in every worker
        options["env"] = {"TOMOLAB_GPU_MEMORY_LIMIT": limit}
    return options


def _local_cuda(dashboard, *, devices=None, security=None, **unknown):
    _refuse_unknown(unknown, "local-cuda", ("devices",))
    options = local_cuda_options(devices=devices)
    _require("dask_cuda", "cluster-gpu")
    from dask_cuda import LocalCUDACluster

    if "CUDA_VISIBLE_DEVICES" in options:  # indices or GPU-/MIG- UUIDs, as CUDA reads them
        options["CUDA_VISIBLE_DEVICES"] = ",".join(options["CUDA_VISIBLE_DEVICES"])
    # the limit in options["env"] came from this process's environment, which the nannies pass
    # on to their workers as it is: nothing to set (and no global state to change)
    options.pop("env", None)
    if security is not None:
        options["security"] = security
    return LocalCUDACluster(**_local_addresses(dashboard), **options)


def jobqueue_options(kind: str, *, jobs=1, gpus=0, cores=None, memory=None, walltime="01:00:00",
                     queue=None, account=None, job_script_prologue=(), job_extra_directives=(),
                     local_directory=None, interface=None, python=None, log_directory=None,
                     **unknown) -> tuple[dict, int]:
    """Keyword arguments of dask-jobqueue's ``SLURMCluster``/``PBSCluster``, and the jobs to start.

    One worker per job; a GPU job asks for ``gpus`` GPUs (SLURM ``--gres=gpu:N``,
    PBS ``ngpus=N``) and its worker uses them with one thread.
    """
    _refuse_unknown(unknown, kind, tuple(JOBQUEUE_OPTIONS))
    jobs = _count(jobs, "jobs")
    gpus = _count(gpus, "gpus")
    cores = _positive_int(cores if cores is not None else (8 if gpus else 1), "cores")
    if memory is None:
        raise ParameterError("a batch job needs its memory", where="memory", value=None,
                             fix="pass e.g. memory='64GB' (or 'memory: 64GB' in the YAML file)")
    from dask.utils import parse_bytes

    try:
        parse_bytes(str(memory))
    except ValueError:
        raise ParameterError("not an amount of memory", where="memory", value=memory,
                             fix="pass e.g. memory='64GB'") from None
    if not (isinstance(walltime, str) and all(p.isdigit() for p in walltime.split(":"))
            and 1 <= len(walltime.split(":")) <= 3):
        raise ParameterError("wall time must be 'HH:MM:SS'", where="walltime", value=walltime,
                             fix="pass e.g. walltime='01:00:00'")
    directives = list(_lines(job_extra_directives, "job_extra_directives"))
    # a GPU worker runs one slab at a time (one thread); its job still asks for the cores
    options = {"cores": 1 if gpus else cores, "processes": 1, "memory": str(memory),
               "walltime": walltime,
               "job_script_prologue": [JOB_MALLOC_EXPORTS,
                                       *_lines(job_script_prologue, "job_script_prologue")]}
    if queue:
        options["queue"] = str(queue)
    if account:
        options["account"] = str(account)
    if kind == "slurm":
        options["job_cpu"] = cores
        if gpus:
            directives.append(f"--gres=gpu:{gpus}")
    else:
        mem = f"{parse_bytes(str(memory)) // 2 ** 20}mb"  # PBS: mb are MiB
        spec = f"select=1:ncpus={cores}:mem={mem}"
        options["resource_spec"] = spec + (f":ngpus={gpus}" if gpus else "")
    options["job_extra_directives"] = directives
    for key, value in (("local_directory", local_directory), ("interface", interface),
                       ("python", python), ("log_directory", log_directory)):
        if value is not None:
            options[key] = str(value)
    return options, jobs


def _jobqueue(kind, dashboard, **options):
    job_options, jobs = jobqueue_options(kind, **options)
    _require("dask_jobqueue", "cluster")
    from dask_jobqueue import PBSCluster, SLURMCluster

    cls = SLURMCluster if kind == "slurm" else PBSCluster
    # the scheduler listens where the jobs' workers can reach it (dask-jobqueue's choice)
    scheduler_options = {"dashboard_address": ":0"} if dashboard else {"dashboard": False}
    cluster = cls(scheduler_options=scheduler_options, **job_options)
    if jobs:
        cluster.scale(jobs=jobs)
    return cluster


# ----------------------------------------------------------------------------- a task's CPUs

#: the environment variable (read where reconstruct_to runs) choosing the CPUs of a task's threads
ENV_WORKER_CPUS = "TOMOLAB_WORKER_CPUS"
WORKER_CPUS = ("pinned", "all")


def worker_cpus(environ=None) -> str:
    """The CPUs of a cluster task's threads: ``TOMOLAB_WORKER_CPUS``, ``"pinned"`` or ``"all"``.

    ``"pinned"`` (the default) leaves each worker on the CPUs it was given
    (dask-cuda pins a GPU worker to the CPUs "near" its GPU); ``"all"``
    runs each task of :func:`tomolab.reconstruct_to` on every CPU that the
    worker's nanny may use (:func:`task_cpus`).

    Examples
    --------
    >>> worker_cpus({})
    'pinned'
    >>> worker_cpus({"TOMOLAB_WORKER_CPUS": "all"})
    'all'
    """
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_WORKER_CPUS, "").strip().lower() or "pinned"
    if value not in WORKER_CPUS:
        raise ParameterError("unknown choice of worker CPUs", where=ENV_WORKER_CPUS, value=value,
                             fix=f"set it to one of {', '.join(WORKER_CPUS)} (or unset it)")
    return value


@contextlib.contextmanager
def task_cpus(choice: str = "pinned"):
    """Run the calling thread, and the threads it starts, on the CPUs that ``choice`` names.

    dask-cuda pins each worker to the CPUs "near" its GPU (``os.sched_setaffinity``
    in its event loop thread, which the task threads inherit). A slab stream
    keeps many host threads busy (8 readers, the writer, its copies):
    ``"all"`` lets them use every CPU that the worker's nanny (the parent
    process, which nothing pins) may use, for the length of the block, and
    then gives the thread its own set back. ``"pinned"`` changes nothing.
    Only this thread's set changes (Linux sets affinity per thread), and only
    where the platform has ``sched_setaffinity``.

    Yields
    ------
    int or None
        The number of CPUs the thread runs on (None where the platform cannot tell).

    Examples
    --------
    >>> with task_cpus("pinned") as used:
    ...     used is None or used >= 1
    True
    """
    if not hasattr(os, "sched_getaffinity"):
        yield None
        return
    own = os.sched_getaffinity(0)
    wide = own
    if choice == "all":
        with contextlib.suppress(OSError):  # the parent gone or not ours to ask: keep the set
            wide = os.sched_getaffinity(os.getppid()) | own
    if wide == own:
        yield len(own)
        return
    os.sched_setaffinity(0, wide)
    try:
        yield len(os.sched_getaffinity(0))
    finally:
        os.sched_setaffinity(0, own)


# ----------------------------------------------------------------------------- helpers

@functools.cache
def _client_class():
    """``distributed.Client`` that closes the cluster it was made for when it is closed."""
    from distributed import Client

    class ClusterClient(Client):
        """A dask client that owns its cluster: ``close()`` stops the workers too."""

        def close(self, *args, **kwargs):
            try:
                return super().close(*args, **kwargs)
            finally:
                cluster = getattr(self, "cluster", None)
                if cluster is not None and getattr(cluster, "status", None) is not None \
                        and cluster.status.name not in ("closed", "closing"):
                    cluster.close()

    return ClusterClient


#: what the jobs' shell exports so that their workers keep glibc's large-buffer reuse (see
#: _glibc_malloc_defaults): return memory above 4 GiB only, take buffers up to 32 MiB from the heap
JOB_MALLOC_EXPORTS = "export MALLOC_TRIM_THRESHOLD_=4294967296 MALLOC_MMAP_THRESHOLD_=33554432"


@contextlib.contextmanager
def _glibc_malloc_defaults():
    """Start worker processes without dask's ``MALLOC_TRIM_THRESHOLD_=65536``.

    dask's nannies set it so that workers hand freed memory back at once;
    glibc then stops adapting its mmap threshold, and every buffer of more
    than 128 KiB is a fresh mapping whose pages fault in on first touch.
    Writing slabs copies each one into chunk buffers of up to 16 MiB: 16 MiB
    copies ran 6-8 times slower with it (2.0-2.4 s against 0.3 s per 2 GiB,
    measured here), and the GPU worker's write stage took 0.5-1 s more than
    the same stream outside dask. Our workers keep no data between tasks
    (volumes go to disk), so there is nothing for the trim to hand back.
    The variable is read when a process starts, so it must be absent from
    this process's environment when the nannies spawn their workers.
    """
    import dask
    import distributed  # noqa: F401  (its config defaults first: the context restores onto them)

    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)  # left by an earlier nanny of this process
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        yield


def _local_addresses(dashboard: bool) -> dict:
    """Scheduler and dashboard on loopback ports that are free (never a fixed 8787)."""
    return {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0",
            "scheduler_kwargs": {"dashboard": dashboard}}


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _require(module: str, extra: str) -> None:
    if not _has(module):
        raise ParameterError(f"{module} is not installed", where="spec", value=module,
                             fix=f"pip install tomolab[{extra}]")


def _refuse_unknown(unknown: dict, kind: str, known) -> None:
    if unknown:
        name = min(unknown)
        raise ParameterError(f"not an option of a {kind!r} cluster", where=name,
                             value=unknown[name], fix=f"use {', '.join(known)}")


def _positive_int(value, where):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ParameterError("must be a positive integer", where=where, value=value,
                             fix=f"pass e.g. {where}=2")
    return value


def _count(value, where):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ParameterError("must be an integer, 0 or more", where=where, value=value,
                             fix=f"pass e.g. {where}=1")
    return value


def _lines(value, where):
    if isinstance(value, str):
        return [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise ParameterError("must be a list of lines", where=where, value=value,
                             fix=f"pass e.g. {where}=['module load cuda']")
    return list(value)


if __name__ == "__main__":
    raise SystemExit(main())
