"""A Jupyter server extension: the user's server runs a dask cluster of one worker per GPU.

The spawner enables it for a server whose pool entry has ``cluster`` (a group
of GPUs such as ``"0,1"``, by default) and puts the number of GPUs into
``TOMOLAB_HUB_CLUSTER``. When the server starts, the extension starts
``python -m tomolab.cluster serve`` beside it: a dask scheduler on loopback,
TLS with a certificate made for this server only, and one worker per GPU
(dask-cuda's workers where dask-cuda is installed, else one CPU worker
process per GPU with ``CUDA_VISIBLE_DEVICES`` set to that GPU). It writes
where to connect, with the certificate, to a file readable by the user only
in Jupyter's runtime folder, and puts that file's path into
``TOMOLAB_CLUSTER_FILE`` of the server, so every kernel and terminal the
server starts finds it: ``tomolab.cluster.start_cluster("hub")``,
``reconstruct_to(..., client="hub")`` and ``tomolab recon --scheduler hub``.

The cluster lives as long as the server: it ends when the server exits
(an exit handler), and the kernel sends it SIGTERM if the server dies
without one (``--parent``: ``PR_SET_PDEATHSIG`` on Linux); the hub's
:class:`~tomolab.hub.EndAllProcessesMixin`, systemd units and containers
end it with everything else of the server.

Standard library only (the server imports it; dask runs in the child).
"""

from __future__ import annotations

import atexit
import os
import subprocess
import sys

__all__ = ["ENV_CLUSTER", "ENV_CLUSTER_FILE", "cluster_command", "start_server_cluster"]

ENV_CLUSTER = "TOMOLAB_HUB_CLUSTER"
ENV_CLUSTER_FILE = "TOMOLAB_CLUSTER_FILE"


def _jupyter_server_extension_points():
    return [{"module": "tomolab.hub.server_cluster"}]


def cluster_command(path: str, gpus: int, environ=None) -> list[str]:
    """The command line of the server's cluster process, writing its address to ``path``.

    The GPUs are those of ``CUDA_VISIBLE_DEVICES`` where the hub set it (a
    local or systemd server), else ``0 .. gpus-1`` (a container that holds
    only its own GPUs).

    Examples
    --------
    >>> cluster_command("/run/c.json", 2, {"CUDA_VISIBLE_DEVICES": "2,3"})[-6:-2]
    ['--file', '/run/c.json', '--devices', '2,3']
    >>> cluster_command("/run/c.json", 2, {})[-4:-2]
    ['--devices', '0,1']
    """
    environ = os.environ if environ is None else environ
    visible = [g.strip() for g in environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    devices = visible or [str(i) for i in range(gpus)]
    return [sys.executable, "-m", "tomolab.cluster", "serve", "--file", path, "--devices", ",".join(devices),
            "--parent", str(os.getpid())]


def start_server_cluster(runtime_dir: str, *, environ=None, log=None):
    """Start the cluster process of this server; return it (a ``subprocess.Popen``) or None.

    None when ``TOMOLAB_HUB_CLUSTER`` is not a number of GPUs ≥ 1. Sets
    ``TOMOLAB_CLUSTER_FILE`` in ``environ`` (default: this process's
    environment, which the server's kernels inherit); the file appears once
    the scheduler listens, and goes when the cluster ends.
    """
    environ = os.environ if environ is None else environ
    value = environ.get(ENV_CLUSTER, "").strip()
    if not value:
        return None
    try:
        gpus = int(value)
    except ValueError:
        gpus = 0
    if gpus < 1:
        if log is not None:
            log.warning("tomolab: %s=%r is not a number of GPUs; no cluster started", ENV_CLUSTER, value)
        return None
    os.makedirs(runtime_dir, mode=0o700, exist_ok=True)
    path = os.path.join(runtime_dir, f"tomolab-cluster-{os.getpid()}.json")
    command = cluster_command(path, gpus, environ)
    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, env={**environ, ENV_CLUSTER_FILE: path})
    environ[ENV_CLUSTER_FILE] = path
    if log is not None:
        log.info("tomolab: started the server's dask cluster (pid %d): %s", proc.pid, " ".join(command))
    atexit.register(_stop, proc)
    return proc


def _stop(proc, grace: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _load_jupyter_server_extension(serverapp):
    serverapp._tomolab_cluster = start_server_cluster(serverapp.runtime_dir, log=serverapp.log)
