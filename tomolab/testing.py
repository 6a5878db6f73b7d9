"""Test helpers: ``requires_*`` decorators (as in xarray) shared by the test suite.

Ships in the wheel, so it imports pytest only when a decorator is first used
(``import tomolab.testing`` works where pytest is not installed).
"""

from __future__ import annotations

import threading

from tomolab.arrays import cupy_available

GPU_REASON = "needs a CUDA GPU with CuPy (CI has none; run on the GPU machine)"


def __getattr__(name: str):
    # requires_gpu: skip unless CuPy sees a CUDA device; a pytest mark, made on first use
    if name == "requires_gpu":
        import pytest

        globals()[name] = pytest.mark.skipif(not cupy_available(), reason=GPU_REASON)
        return globals()[name]
    raise AttributeError(f"module 'tomolab.testing' has no attribute {name!r}")


def gpu_test(func):
    """Mark a test as a GPU test that skips, with the reason, where there is no GPU."""
    import pytest

    requires_gpu = globals().get("requires_gpu") or __getattr__("requires_gpu")
    return pytest.mark.gpu(requires_gpu(func))


class CountingArray:
    """Array-like that records every read, to check what a lazy computation touches."""

    def __init__(self, data):
        self.data = data
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim
        self.reads = []
        self._lock = threading.Lock()

    def __getitem__(self, key):
        out = self.data[key]
        if out.size:  # dask probes with empty reads for metadata
            with self._lock:
                self.reads.append(out.size)
        return out
