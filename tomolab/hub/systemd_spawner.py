"""SystemdSpawner with the GPU pool: each server is a systemd unit that can open its GPU only.

Needs ``jupyterhub-systemdspawner`` (``pip install "tomolab[hub-systemd]"``)::

    c.JupyterHub.spawner_class = "tomolab.hub.GPUPoolSystemdSpawner"

The unit gets ``DevicePolicy=closed`` and a ``DeviceAllow=`` list of
``/dev/nvidiactl``, ``/dev/nvidia-uvm(-tools)``, the allocated GPU's own
device files and ``char-pts`` (terminals): the kernel's device cgroup refuses
every other GPU to every process of the unit, whatever ``CUDA_VISIBLE_DEVICES``
says. A CPU-only server can open no GPU at all. Stopping the unit ends every
process in its cgroup (systemd's ``KillMode=control-group``), detached ones
included. ``c.SystemdSpawner.mem_limit`` sets ``MemoryMax=`` (host memory).
"""

from __future__ import annotations

from systemdspawner import SystemdSpawner
from traitlets import TraitError, validate

from .platforms import systemd_properties
from .spawner import GPUPoolMixin

__all__ = ["GPUPoolSystemdSpawner"]


class _UnitWithDeviceAllowList(SystemdSpawner):
    """Starts the unit with the device properties of the allocation (made by GPUPoolMixin.start first)."""

    async def start(self):
        configured = self.unit_extra_properties
        props = dict(configured)
        for key, value in self.gpu_unit_properties().items():
            if key == "DeviceAllow" and key in props:  # keep what the admin allowed besides
                extra = props[key] if isinstance(props[key], list) else [props[key]]
                value = [*value, *extra]
            props[key] = value
        # SystemdSpawner.start reads (and expands) the trait: give it this start's copy
        self.unit_extra_properties = props
        try:
            return await super().start()
        finally:
            self.unit_extra_properties = configured

    def _expand_user_vars(self, value):
        # a list value becomes one --property= per item (DeviceAllow= takes one device each)
        if isinstance(value, list):
            return [super(_UnitWithDeviceAllowList, self)._expand_user_vars(v) for v in value]
        return super()._expand_user_vars(value)


class GPUPoolSystemdSpawner(GPUPoolMixin, _UnitWithDeviceAllowList):
    """:class:`systemdspawner.SystemdSpawner` with the GPU pool and a device allow-list per unit."""

    @validate("isolate_devices")
    def _gpu_no_private_devices(self, proposal):
        if proposal.value:
            raise TraitError(
                "isolate_devices=True (PrivateDevices=yes) hides every GPU from the unit; "
                "GPUPoolSystemdSpawner confines devices with DevicePolicy=closed instead: leave it False"
            )
        return proposal.value

    def gpu_unit_properties(self) -> dict:
        """Unit properties for the device this server holds: ``DevicePolicy``, ``DeviceAllow``."""
        return systemd_properties(self.gpu_device())
