"""Backends and the per-user GPU memory cap that the hub sets."""

from __future__ import annotations

import pytest

from tomolab.devices import gpu_memory_limit, parse_bytes, resolve_backend
from tomolab.errors import ParameterError
from tomolab.testing import gpu_test


@pytest.mark.parametrize("text, expected", [("20G", 20 << 30), ("512M", 512 << 20), ("1.5K", 1536),
                                            ("4096", 4096), ("2GiB", 2 << 30), (" 3 g ", 3 << 30)])
def test_parse_bytes(text, expected):
    assert parse_bytes(text) == expected


def test_bad_cap_names_the_variable(monkeypatch):
    monkeypatch.setenv("TOMOLAB_GPU_MEMORY_LIMIT", "lots")
    with pytest.raises(ParameterError, match="TOMOLAB_GPU_MEMORY_LIMIT='lots'.*fix"):
        gpu_memory_limit()


def test_no_cap_when_unset(monkeypatch):
    monkeypatch.delenv("TOMOLAB_GPU_MEMORY_LIMIT", raising=False)
    assert gpu_memory_limit() is None


def test_unknown_backend():
    with pytest.raises(ParameterError, match="backend='tpu'.*auto, numpy, cupy"):
        resolve_backend("tpu")


@gpu_test
def test_cap_is_applied_to_cupy_pool(monkeypatch):
    import cupy

    pool = cupy.get_default_memory_pool()
    before = pool.get_limit()
    monkeypatch.setenv("TOMOLAB_GPU_MEMORY_LIMIT", "3G")
    try:
        assert resolve_backend("cupy") == "cupy"
        assert pool.get_limit() == 3 << 30
    finally:
        pool.set_limit(size=before)
