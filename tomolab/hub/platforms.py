"""What each spawner platform needs to confine a server to its GPU, from the same pool.

Pure functions of a :class:`~tomolab.hub.pool.GPUDevice` (``None`` for a
CPU-only server); standard library only. The spawner classes
(:mod:`tomolab.hub.systemd_spawner`, :mod:`tomolab.hub.docker_spawner`,
:mod:`tomolab.hub.kube_spawner`) apply them at each start.

============  ==========================================  ==================================
platform      what confines the server                    can the user undo it?
============  ==========================================  ==================================
local         ``CUDA_VISIBLE_DEVICES``                    yes: a convention
systemd       device cgroup: ``DevicePolicy=closed`` +    no (a wall)
              ``DeviceAllow=`` its ``/dev/nvidia*``
Docker        ``device_requests``: only its GPU is in     no (a wall)
              the container
Kubernetes    device plugin: ``nvidia.com/gpu`` or a MIG  no (a wall)
              resource as a limit
============  ==========================================  ==================================

Memory caps: a MIG instance is a wall on every platform; on a shared whole
GPU, CUDA MPS with the daemon's default pinned-memory limit is a wall only in
the EXCLUSIVE_PROCESS compute mode (see :func:`mps_environment`); otherwise the
cap binds tomolab's CuPy pool only.
"""

from __future__ import annotations

import re

from .pool import SHARED, GPUDevice, PoolConfigError

__all__ = [
    "DEFAULT_MPS_PIPE_DIRECTORY",
    "NO_GPU_ENV",
    "NVIDIA_CONTROL_NODES",
    "device_nodes",
    "docker_host_config",
    "isolation_summary",
    "k8s_resource",
    "kube_overrides",
    "mps_environment",
    "mps_setup_script",
    "systemd_properties",
]

#: Device files every CUDA process needs besides its GPU's own.
NVIDIA_CONTROL_NODES = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
#: For CPU-only containers: the NVIDIA container runtime then mounts no GPU, even where
#: it is the default runtime and the image says NVIDIA_VISIBLE_DEVICES=all (CUDA images do).
NO_GPU_ENV = {"NVIDIA_VISIBLE_DEVICES": "void", "CUDA_VISIBLE_DEVICES": ""}

_MIG_PROFILE_RE = re.compile(r"^\d+g\.\d+gb(\+me)?$")


def device_nodes(device: GPUDevice) -> tuple[str, ...]:
    """The device files of ``device`` for a device allow-list.

    Examples
    --------
    >>> from tomolab.hub.pool import parse_devices
    >>> device_nodes(parse_devices([{"id": "2", "policy": "exclusive"}])[0])
    ('/dev/nvidia2',)
    >>> device_nodes(parse_devices([{"id": "2,3", "policy": "exclusive"}])[0])
    ('/dev/nvidia2', '/dev/nvidia3')
    """
    if device.device_nodes:
        return device.device_nodes
    if all(gpu.isdigit() for gpu in device.gpus):
        return tuple(f"/dev/nvidia{gpu}" for gpu in device.gpus)
    raise PoolConfigError(
        f"GPU {device.id}: a UUID does not say which /dev/nvidiaN it is; add 'device_nodes' to its pool entry, "
        "e.g. ['/dev/nvidia3'] (the 'Minor Number' in `nvidia-smi -q`), and for a MIG instance also its "
        "/dev/nvidia-caps/nvidia-capN files (`nvidia-smi mig -lgi`, /proc/driver/nvidia-caps/mig-minors)"
    )


def systemd_properties(device: GPUDevice | None) -> dict:
    """Unit properties that let the server open its GPU's device files and no other GPU's.

    ``DevicePolicy=closed`` allows the standard pseudo devices (``/dev/null``,
    ``/dev/zero``, ``/dev/urandom``, ``/dev/tty``, ``/dev/ptmx``, ...); terminals
    also need ``char-pts``. ``KillMode=control-group`` (systemd's default, kept
    even if the unit's other properties say otherwise) makes stopping the unit
    end every process in it, so a released GPU is really free.

    Examples
    --------
    >>> systemd_properties(None)
    {'DevicePolicy': 'closed', 'DeviceAllow': ['char-pts rw'], 'KillMode': 'control-group'}
    >>> from tomolab.hub.pool import parse_devices
    >>> systemd_properties(parse_devices([{"id": "1", "policy": "exclusive"}])[0])["DeviceAllow"]
    ['char-pts rw', '/dev/nvidiactl rw', '/dev/nvidia-uvm rw', '/dev/nvidia-uvm-tools rw', '/dev/nvidia1 rw']
    """
    allow = ["char-pts rw"]
    if device is not None:
        allow += [f"{node} rw" for node in (*NVIDIA_CONTROL_NODES, *device_nodes(device))]
    return {"DevicePolicy": "closed", "DeviceAllow": allow, "KillMode": "control-group"}


def docker_host_config(device: GPUDevice | None) -> dict:
    """``create_host_config`` arguments that put only ``device`` into the container.

    Examples
    --------
    >>> from tomolab.hub.pool import parse_devices
    >>> docker_host_config(parse_devices([{"id": "MIG-4f0c", "policy": "exclusive"}])[0])
    {'device_requests': [{'driver': 'nvidia', 'device_ids': ['MIG-4f0c'], 'capabilities': [['gpu']]}]}
    >>> docker_host_config(None)
    {}
    """
    if device is None:
        return {}
    return {"device_requests": [{"driver": "nvidia", "device_ids": list(device.gpus), "capabilities": [["gpu"]]}]}


def k8s_resource(device: GPUDevice) -> str:
    """The extended resource a pod asks for to get ``device`` from the NVIDIA device plugin.

    Examples
    --------
    >>> from tomolab.hub.pool import parse_devices
    >>> pool = parse_devices([
    ...     {"id": "0", "policy": "exclusive"},
    ...     {"id": "MIG-4f0c", "policy": "exclusive", "label": "1g.10gb"},
    ...     {"id": "1", "policy": "shared", "max_users": 4, "memory_limit": "18G"},
    ... ])
    >>> [k8s_resource(d) for d in pool]
    ['nvidia.com/gpu', 'nvidia.com/mig-1g.10gb', 'nvidia.com/gpu.shared']
    """
    if device.k8s_resource:
        return device.k8s_resource
    if device.id.startswith("MIG-") and _MIG_PROFILE_RE.match(device.label):
        return f"nvidia.com/mig-{device.label}"  # the device plugin's "mixed" MIG strategy
    if device.policy == SHARED:
        return "nvidia.com/gpu.shared"  # the device plugin's sharing (MPS or time-slicing), renamed
    return "nvidia.com/gpu"


def kube_overrides(device: GPUDevice | None) -> dict:
    """Resource limits, node selector and environment of a pod for ``device``.

    Examples
    --------
    >>> from tomolab.hub.pool import parse_devices
    >>> d = parse_devices([{"id": "0", "policy": "exclusive",
    ...                     "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}}])[0]
    >>> kube_overrides(d)
    {'extra_resource_limits': {'nvidia.com/gpu': '1'}, 'node_selector': {'nvidia.com/gpu.product': 'NVIDIA-H100-80GB-HBM3'}, 'environment': {}}
    >>> kube_overrides(None)["environment"]
    {'NVIDIA_VISIBLE_DEVICES': 'void', 'CUDA_VISIBLE_DEVICES': ''}
    """
    if device is None:
        return {"extra_resource_limits": {}, "node_selector": {}, "environment": dict(NO_GPU_ENV)}
    return {
        "extra_resource_limits": {k8s_resource(device): str(len(device.gpus))},
        "node_selector": dict(device.node_selector),
        "environment": {},
    }


def _mps_size(n: int) -> str:
    mib = -(-n // (1 << 20))
    return f"{mib // 1024}G" if mib % 1024 == 0 else f"{mib}M"


def mps_environment(memory_limit: int | None, pipe_directory: str) -> dict:
    """Environment that makes a server a client of the MPS daemon at ``pipe_directory``.

    ``CUDA_MPS_PINNED_DEVICE_MEM_LIMIT`` caps the client's device memory (the
    context counts: on an H100 about 0.5 GiB of it). A client can only lower
    its limit below the daemon's default, not raise it (seen on an H100, driver
    580), so the wall is the daemon's ``set_default_device_pinned_mem_limit``;
    this variable only repeats it. In the DEFAULT compute mode a client that
    drops ``CUDA_MPS_PIPE_DIRECTORY`` gets the GPU without MPS, and no limit:
    the GPU must be in EXCLUSIVE_PROCESS mode, where only the MPS server may
    open it.

    Examples
    --------
    >>> mps_environment(18 * 1024**3, "/run/nvidia-mps")
    {'CUDA_MPS_PIPE_DIRECTORY': '/run/nvidia-mps', 'CUDA_MPS_PINNED_DEVICE_MEM_LIMIT': '0=18G'}
    """
    env = {"CUDA_MPS_PIPE_DIRECTORY": pipe_directory}
    if memory_limit:
        env["CUDA_MPS_PINNED_DEVICE_MEM_LIMIT"] = f"0={_mps_size(memory_limit)}"
    return env


_WALLS = {
    "GPUPoolSystemdSpawner": "a wall: each unit's device cgroup allows its own GPU's device files only",
    "GPUPoolDockerSpawner": "a wall: each container holds its own GPU's device files only (device requests)",
    "GPUPoolKubeSpawner": "a wall: each pod gets the devices the NVIDIA device plugin allocated to it",
}


def isolation_summary(spawner_class: str, devices, *, mps: bool = False) -> list[str]:
    """Plain statements for admins: which GPU and memory limits a user cannot get around.

    Examples
    --------
    >>> from tomolab.hub.pool import parse_devices
    >>> pool = parse_devices([{"id": "1", "policy": "shared", "max_users": 2, "memory_limit": "8G"}])
    >>> for line in isolation_summary("tomolab.hub.GPUPoolLocalProcessSpawner", pool):
    ...     print(line)
    device: a convention: CUDA_VISIBLE_DEVICES, which a user can change in their own session
    memory caps on GPU 1: a convention: they bind tomolab's CuPy pool only (set gpu_mps for a hard cap)
    """
    name = str(spawner_class).rsplit(".", 1)[-1]
    lines = [f"device: {_WALLS.get(name, 'a convention: CUDA_VISIBLE_DEVICES, which a user can change in their own session')}"]
    for d in devices:
        if d.id.startswith("MIG-"):
            lines.append(f"memory on GPU {d.id}: a wall (a MIG instance has its own memory)")
        elif d.policy == SHARED:
            if name == "GPUPoolKubeSpawner":
                how = "as the device plugin's sharing sets it (MPS sharing: a wall; time-slicing: none)"
            elif mps:
                how = ("a wall only if the GPU is in EXCLUSIVE_PROCESS mode and the MPS daemon's default limit "
                       "is set (otherwise a convention)")
            else:
                how = "a convention: they bind tomolab's CuPy pool only (set gpu_mps for a hard cap)"
            lines.append(f"memory caps on GPU {d.id}: {how}")
    return lines


#: Where the MPS control daemon of each shared GPU listens (``{device}``: its id, '/' as '_').
DEFAULT_MPS_PIPE_DIRECTORY = "/run/nvidia-mps/{device}"


def mps_setup_script(devices, *, pipe_directory: str = DEFAULT_MPS_PIPE_DIRECTORY,
                     log_directory: str = "/var/log/nvidia-mps/{device}") -> str:
    """The root commands that make the memory caps of the pool's shared whole GPUs a wall.

    For each shared GPU: EXCLUSIVE_PROCESS compute mode, an MPS control daemon
    of its own, and the daemon's default pinned-memory limit set to the
    device's ``memory_limit`` (a client can lower its limit, not raise it).
    MIG instances are skipped: their memory is a wall already.

    Examples
    --------
    >>> from tomolab.hub.pool import parse_devices
    >>> pool = parse_devices([{"id": "0", "policy": "exclusive"},
    ...                       {"id": "1", "policy": "shared", "max_users": 4, "memory_limit": "18G"}])
    >>> print(mps_setup_script(pool))
    #!/bin/sh
    # CUDA MPS for the shared GPUs of the tomolab pool; run as root at boot, before the hub.
    set -e
    # GPU 1: up to 4 servers, 18 GiB each
    nvidia-smi -i 1 -c EXCLUSIVE_PROCESS
    mkdir -p /run/nvidia-mps/1 /var/log/nvidia-mps/1
    CUDA_VISIBLE_DEVICES=1 CUDA_MPS_PIPE_DIRECTORY=/run/nvidia-mps/1 CUDA_MPS_LOG_DIRECTORY=/var/log/nvidia-mps/1 nvidia-cuda-mps-control -d
    echo 'set_default_device_pinned_mem_limit 0 18G' | CUDA_MPS_PIPE_DIRECTORY=/run/nvidia-mps/1 nvidia-cuda-mps-control
    <BLANKLINE>
    """
    from .pool import format_bytes

    lines = ["#!/bin/sh", "# CUDA MPS for the shared GPUs of the tomolab pool; run as root at boot, before the hub.",
             "set -e"]
    for d in devices:
        if d.policy != SHARED:
            continue
        if d.id.startswith("MIG-"):
            lines.append(f"# {d.id}: a MIG instance, its memory is a wall already: no MPS")
            continue
        key = d.id.replace("/", "_")
        pipe, log = pipe_directory.format(device=key), log_directory.format(device=key)
        lines += [
            f"# GPU {d.id}: up to {d.max_users} servers, {format_bytes(d.memory_limit)} each",
            f"nvidia-smi -i {d.id} -c EXCLUSIVE_PROCESS",
            f"mkdir -p {pipe} {log}",
            (f"CUDA_VISIBLE_DEVICES={d.id} CUDA_MPS_PIPE_DIRECTORY={pipe} CUDA_MPS_LOG_DIRECTORY={log} "
             "nvidia-cuda-mps-control -d"),
            (f"echo 'set_default_device_pinned_mem_limit 0 {_mps_size(d.memory_limit)}' | "
             f"CUDA_MPS_PIPE_DIRECTORY={pipe} nvidia-cuda-mps-control"),
        ]
    return "\n".join(lines) + "\n"
