"""KubeSpawner with the GPU pool: each pod asks the NVIDIA device plugin for its GPU or MIG slice.

Needs ``jupyterhub-kubespawner`` and the NVIDIA device plugin (or GPU
Operator) in the cluster (``pip install "tomolab[hub-k8s]"``)::

    c.JupyterHub.spawner_class = "tomolab.hub.GPUPoolKubeSpawner"

The pod of a GPU server has its device's extended resource as a limit
(``nvidia.com/gpu``, a MIG resource such as ``nvidia.com/mig-1g.10gb``, or
``nvidia.com/gpu.shared`` for the device plugin's sharing), plus the device's
``node_selector``; the kubelet gives the container exactly the devices the
plugin allocated, so it reaches no other GPU. Which physical device a pod gets
is the plugin's choice: on Kubernetes a pool entry is a place of that resource,
and the ledger counts places (so a full pool is a clear message, not a pod
pending forever). A CPU-only pod gets ``NVIDIA_VISIBLE_DEVICES=void``.
"""

from __future__ import annotations

from kubespawner import KubeSpawner

from .platforms import kube_overrides
from .spawner import ContainerGPUMixin, GPUPoolMixin

__all__ = ["GPUPoolKubeSpawner"]


class GPUPoolKubeSpawner(ContainerGPUMixin, GPUPoolMixin, KubeSpawner):
    """:class:`kubespawner.KubeSpawner` with the GPU pool; the GPU is a resource limit of the pod."""

    async def get_pod_manifest(self):
        pod = await super().get_pod_manifest()
        gpu = kube_overrides(self.gpu_device())
        container = pod.spec.containers[0]
        limits = dict(container.resources.limits or {})
        limits.update(gpu["extra_resource_limits"])
        container.resources.limits = limits
        if gpu["node_selector"]:
            pod.spec.node_selector = {**(pod.spec.node_selector or {}), **gpu["node_selector"]}
        return pod
