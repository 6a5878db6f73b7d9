"""Shared test fixtures (the array modules to run each test on) and how ``pytest -n`` shares out the tests."""

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



#: the test files that must share one worker, whole: one JupyterLab and one Chromium at a time
#: (two browser tests at once on 2 cores left a kernel that never ran its cells)
SERIAL_FOLDERS = ("tests/browser/",)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With ``pytest -n N`` (as CI runs): each test file goes whole to one worker.

    So a file's module- and session-scoped fixtures (a simulated scan, a LocalCluster, a running
    JupyterHub) are built once, not once per worker, and the files under ``SERIAL_FOLDERS`` run
    one after another on one worker. Files go out in collection order (the browser tests and the
    hub first: the longest chains), each to whichever worker is free. pytest-xdist's own
    ``xdist_group`` marks do not take with pytest 9 (xdist 3.8 renames ``item._nodeid``, which
    pytest 9 no longer reads), hence a scheduler here. Other ``--dist`` modes are left alone.
    """
    if config.getvalue("dist") not in ("load", "loadfile", "loadgroup"):
        return None
    from xdist.scheduler import LoadScopeScheduling

    class FileScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            for folder in SERIAL_FOLDERS:
                if nodeid.startswith(folder):
                    return folder
            return nodeid.split("::", 1)[0]

    config.option.loadscopereorder = False  # collection order, not the number of tests
    return FileScheduling(config, log)
