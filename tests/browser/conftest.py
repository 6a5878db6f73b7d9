"""Fixtures for the browser tests: one JupyterLab on loopback per session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture(scope="session")
def lab_server(tmp_path_factory):
    """JupyterLab on 127.0.0.1 (random port, random token, temporary root dir)."""
    import harness

    if not os.path.exists(harness.CHROMIUM):
        pytest.fail(f"{harness.CHROMIUM} is missing: run .ci/browser-setup.sh "
                    "(or set TOMOLAB_CHROMIUM to a Chromium binary)")
    pytest.importorskip("playwright", reason="install the test extra: pip install -e .[test,notebook]")
    with harness.jupyter_lab(tmp_path_factory.mktemp("lab")) as server:
        yield server
