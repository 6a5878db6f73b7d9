"""Shared test fixtures: the array modules to run each test on."""

from __future__ import annotations

import numpy as np
import pytest

from tomolab.testing import requires_gpu


def _modules():
    return [pytest.param("numpy", id="numpy"),
            pytest.param("cupy", id="cupy", marks=[requires_gpu, pytest.mark.gpu])]


@pytest.fixture(params=_modules())
def xp(request):
    """The array module under test: numpy, and cupy where a GPU is present."""
    if request.param == "numpy":
        return np
    import cupy
    return cupy


@pytest.fixture(params=_modules())
def backend(request):
    """A tomolab backend name: "numpy", and "cupy" where a GPU is present."""
    return request.param
