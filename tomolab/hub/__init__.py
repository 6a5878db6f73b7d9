"""JupyterHub integration: a spawner that shares a pool of GPUs among users.

Runs inside the hub process, so it imports only tomolab's base layer
(:func:`tomolab.devices.parse_bytes`, the one reader of memory sizes, and
:mod:`tomolab.errors`; no NumPy, no CuPy). The pool and the ledger need
nothing else; the spawner classes import JupyterHub when first used::

    c.JupyterHub.spawner_class = "tomolab.hub.GPUPoolLocalProcessSpawner"
    c.GPUPoolMixin.gpu_devices = [
        {"id": "0", "policy": "exclusive"},
        {"id": "1", "policy": "shared", "max_users": 3, "memory_limit": "20G"},
    ]

See ``deploy/jupyterhub_config.py`` and ``docs/deployment.md``; list who
holds what with ``python -m tomolab.hub list --db PATH``.
"""

from __future__ import annotations

import importlib

from .ledger import Allocation, Ledger, PoolExhausted
from .pool import GPUDevice, PoolConfigError, format_bytes, parse_bytes, parse_devices

__all__ = [
    "EndAllProcessesMixin",
    "GPUPoolDockerSpawner",
    "GPUPoolKubeSpawner",
    "GPUPoolMixin",
    "GPUPoolSystemdSpawner",
    "GPUPoolLocalProcessSpawner",
    "Allocation",
    "Ledger",
    "PoolExhausted",
    "GPUDevice",
    "PoolConfigError",
    "parse_devices",
    "parse_bytes",
    "format_bytes",
]

_LAZY = {
    "GPUPoolMixin": "tomolab.hub.spawner",
    "GPUPoolLocalProcessSpawner": "tomolab.hub.spawner",
    "EndAllProcessesMixin": "tomolab.hub.spawner",
    "GPUPoolSystemdSpawner": "tomolab.hub.systemd_spawner",
    "GPUPoolDockerSpawner": "tomolab.hub.docker_spawner",
    "GPUPoolKubeSpawner": "tomolab.hub.kube_spawner",
}


def __getattr__(name):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tomolab.hub' has no attribute {name!r}")


def __dir__():
    return __all__
