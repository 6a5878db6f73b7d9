"""Fixtures for the hub tests; the machinery lives in hubtools.py."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # hubtools, whatever pytest's import mode

from hubtools import Hub, hub_requirements_missing  # noqa: E402


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """One running hub per test module; everything it started is killed at the end."""
    why = hub_requirements_missing()
    if why:
        pytest.skip(why)
    h = Hub(tmp_path_factory.mktemp("hub"))
    h.start()
    try:
        yield h
    finally:
        try:
            if h.proc is not None and h.proc.poll() is None:
                asyncio.run(asyncio.wait_for(h.stop_everything(), 60))
        except Exception as e:  # the processes are killed below anyway
            print(f"stopping servers failed: {e}")
        h.stop()
        h.kill_all_servers()
