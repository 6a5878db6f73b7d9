"""One place that maps an array to its array module and the matching SciPy.

Compute functions start with ``xp = array_module(x)`` and never import cupy
at module top, so a CPU-only install never touches CUDA.
"""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np

__all__ = [
    "array_module", "is_cupy", "ndimage_module", "fft_module", "to_numpy",
    "cupy_available", "asarray_like",
]


def is_cupy(x) -> bool:
    """True when ``x`` is a CuPy array (checked without importing cupy)."""
    return type(x).__module__.split(".")[0] == "cupy"


def array_module(x) -> ModuleType:
    """Return :mod:`numpy` or :mod:`cupy`, whichever ``x`` belongs to.

    Examples
    --------
    >>> import numpy as np
    >>> array_module(np.zeros(3)).__name__
    'numpy'
    """
    if is_cupy(x):
        return sys.modules["cupy"]
    return np


def ndimage_module(xp: ModuleType) -> ModuleType:
    """``scipy.ndimage`` for numpy, ``cupyx.scipy.ndimage`` for cupy."""
    if xp is np:
        import scipy.ndimage
        return scipy.ndimage
    import cupyx.scipy.ndimage
    return cupyx.scipy.ndimage


def fft_module(xp: ModuleType) -> ModuleType:
    """``scipy.fft`` for numpy, ``cupyx.scipy.fft`` for cupy."""
    if xp is np:
        import scipy.fft
        return scipy.fft
    import cupyx.scipy.fft
    return cupyx.scipy.fft


def to_numpy(x) -> np.ndarray:
    """Copy a CuPy array to the host; pass NumPy arrays through."""
    if is_cupy(x):
        return x.get()
    return np.asarray(x)


def asarray_like(x, like):
    """Put ``x`` on the same device (module) as ``like``."""
    return array_module(like).asarray(x)


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, CUDARuntimeError, missing driver, ...
        return False
