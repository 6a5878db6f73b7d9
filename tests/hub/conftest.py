"""Fixtures for the hub tests; the machinery lives in hubtools.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # hubtools, whatever pytest's import mode

from hubtools import hub_requirements_missing, running_hub  # noqa: E402


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """One running hub per test module; everything it started is killed at the end."""
    why = hub_requirements_missing()
    if why:
        pytest.skip(why)
    with running_hub(tmp_path_factory.mktemp("hub")) as h:
        yield h
