"""The engine: the slab-by-slab pipeline (read, correct, reconstruct, write), on CPU or GPU.

Devices and memory budgets are in :mod:`tomolab.devices` (the base layer).
"""

from tomolab.engine.pipeline import line_integrals, reconstruct_rows, slab_bytes, slab_height

__all__ = ["line_integrals", "reconstruct_rows", "slab_bytes", "slab_height"]
