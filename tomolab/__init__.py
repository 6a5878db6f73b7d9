"""tomolab: synchrotron X-ray tomography in Jupyter, on CPU or GPU.

Open a scan lazily, find the rotation centre, reconstruct, look, save::

    >>> import tomolab
    >>> scan = tomolab.from_arrays(*tomolab.data.simulate_scan(size=64, n_angles=90)[:2])  # doctest: +SKIP
    >>> center, score = tomolab.find_center(scan)                                       # doctest: +SKIP
    >>> volume = tomolab.reconstruct(scan, center=center)                               # doctest: +SKIP

``import tomolab`` is light: NumPy and the names below only. xarray, dask,
h5py, cupy and the notebook stack are imported where they are used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> module that defines it (imported on first use)
_LAZY = {
    "open_scan": "tomolab.io",
    "from_arrays": "tomolab.io",
    "reconstruct": "tomolab.api",
    "find_center": "tomolab.api",
    "sweep_center": "tomolab.api",
    "sweep_phase": "tomolab.api",
    "stitch_360": "tomolab.api",
    "find_axis": "tomolab.api",
    "save_volume": "tomolab.io",
    "reconstruct_to": "tomolab.api",
    "data": "tomolab.data",
    "prep": "tomolab.prep",
    "recon": "tomolab.recon",
    "center": "tomolab.center",
    "sweep": "tomolab.sweep",
    "io": "tomolab.io",
    "engine": "tomolab.engine",
    "devices": "tomolab.devices",
    "cluster": "tomolab.cluster",
    "live": "tomolab.live",
    "viz": "tomolab.viz",
    "widgets": "tomolab.widgets",
}

from tomolab.devices import use_user_numba_cache  # noqa: E402
from tomolab.errors import (  # noqa: E402, F401  (re-exported: __all__)
    InsufficientMemory,
    OutputError,
    ParameterError,
    ScanFormatError,
    TomolabError,
)

use_user_numba_cache()  # before numba is imported: never cache inside site-packages

__all__ = sorted([*_LAZY, "TomolabError", "ScanFormatError", "ParameterError", "OutputError",
                  "InsufficientMemory", "__version__"])


def __getattr__(name: str):
    try:
        module_name = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'tomolab' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if module_name == f"tomolab.{name}" else getattr(module, name)
    if module_name in ("tomolab.io", "tomolab.api", "tomolab.data"):
        importlib.import_module("tomolab.api.accessor")  # scans get their .tomo methods
    globals()[name] = value
    return value


def __dir__():
    return __all__
