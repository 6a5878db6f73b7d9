"""The engine: devices, memory budgets and the slab-by-slab pipeline."""

from tomolab.engine.devices import (BACKENDS, apply_gpu_memory_limit, free_memory,
                                    gpu_memory_limit, resolve_backend)
from tomolab.engine.pipeline import Cancelled, line_integrals, reconstruct_rows, slab_height

__all__ = ["BACKENDS", "Cancelled", "apply_gpu_memory_limit", "free_memory", "gpu_memory_limit",
           "line_integrals", "reconstruct_rows", "resolve_backend", "slab_height"]
