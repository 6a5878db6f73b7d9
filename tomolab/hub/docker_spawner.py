"""DockerSpawner with the GPU pool: each container gets its GPU, and only it, as a device request.

Needs ``dockerspawner`` and the NVIDIA Container Toolkit on the Docker host
(``pip install "tomolab[hub-docker]"``)::

    c.JupyterHub.spawner_class = "tomolab.hub.GPUPoolDockerSpawner"

A GPU server's container is created with ``device_requests`` naming its
device (an index, a ``GPU-`` or a ``MIG-`` UUID): the container holds that
device's files only, so no environment variable inside it reaches another
GPU. Inside, CUDA numbers it 0, so ``CUDA_VISIBLE_DEVICES`` is not set. A
CPU-only container gets ``NVIDIA_VISIBLE_DEVICES=void``, so that a host whose
default runtime is ``nvidia`` gives it no GPU either. Stopping the container
ends every process in it.
"""

from __future__ import annotations

import inspect

from dockerspawner import DockerSpawner

from .platforms import docker_host_config
from .spawner import ContainerGPUMixin, GPUPoolMixin

__all__ = ["GPUPoolDockerSpawner"]


class GPUPoolDockerSpawner(ContainerGPUMixin, GPUPoolMixin, DockerSpawner):
    """:class:`dockerspawner.DockerSpawner` with the GPU pool; the GPU is a device request."""

    async def create_object(self):
        configured = self.extra_host_config
        base = self._eval_if_callable(configured)
        if inspect.isawaitable(base):
            base = await base
        # create_object reads the trait: give it this start's copy with the device request
        self.extra_host_config = {**(base or {}), **docker_host_config(self.gpu_device())}
        try:
            return await super().create_object()
        finally:
            self.extra_host_config = configured
