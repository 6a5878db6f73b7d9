"""Test helpers: ``requires_*`` decorators (as in xarray) shared by the test suite."""

from __future__ import annotations

import pytest

from tomolab._array import cupy_available

GPU_REASON = "needs a CUDA GPU with CuPy (CI has none; run on the GPU machine)"

#: skip unless CuPy sees a CUDA device; also marks the test ``gpu``
requires_gpu = pytest.mark.skipif(not cupy_available(), reason=GPU_REASON)


def gpu_test(func):
    """Mark a test as a GPU test that skips, with the reason, where there is no GPU."""
    return pytest.mark.gpu(requires_gpu(func))
