"""Shared test fixtures (the array modules to run each test on) and the grouping for xdist."""

from __future__ import annotations

from pathlib import Path

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


_TESTS = Path(__file__).resolve().parent
_SHARED_SCOPES = ("module", "package", "session")


def _shares_a_fixture_of_its_module(item) -> bool:
    """Whether ``item`` uses a module- or session-scoped fixture defined in these tests."""
    info = getattr(item, "_fixtureinfo", None)
    for definitions in (info.name2fixturedefs.values() if info else ()):
        for definition in definitions:
            source = getattr(definition.func, "__code__", None)
            if (definition.scope in _SHARED_SCOPES and source is not None
                    and Path(source.co_filename).resolve().is_relative_to(_TESTS)):
                return True
    return False


def pytest_collection_modifyitems(config, items):
    """Groups for ``pytest -n N --dist loadgroup`` (as CI runs): a group runs on one worker.

    The browser tests share one JupyterLab and must not drive two Chromiums at once (on 2
    cores a second one starved the first's kernel); a module whose tests share an expensive
    fixture (a simulated scan, a LocalCluster, a running JupyterHub) builds it once, not once
    per worker. Every other test goes to whichever worker is free.
    """
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        path = Path(str(item.path)).resolve()
        if path.is_relative_to(_TESTS / "browser"):
            group = "browser"
        elif _shares_a_fixture_of_its_module(item):
            group = path.relative_to(_TESTS).as_posix()
        else:
            continue
        item.add_marker(pytest.mark.xdist_group(group))
