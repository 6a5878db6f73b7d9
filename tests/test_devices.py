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


def _affinity():
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _cgroup(tmp_path, files, membership_line):
    """A cgroup tree written as the kernel shows it, and a /proc/self/cgroup pointing into it."""
    for relative, text in files.items():
        path = tmp_path / "cg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "cg").mkdir(exist_ok=True)
    membership = tmp_path / "self_cgroup"
    membership.write_text(membership_line)
    return str(tmp_path / "cg"), str(membership)


@pytest.mark.parametrize("files,membership,cap", [
    # cgroup v2: a hub server's limit of 2.5 CPUs on its own cgroup: 3 threads' worth
    ({"jupyter/user-ana/cpu.max": "250000 100000\n", "cpu.max": "max 100000\n"},
     "0::/jupyter/user-ana\n", 3),
    # a parent's quota binds its child
    ({"kubepods/cpu.max": "100000 100000\n", "kubepods/pod1/cpu.max": "max 100000\n"},
     "0::/kubepods/pod1\n", 1),
    # cgroup v1, the cpu controller mounted with cpuacct
    ({"cpu,cpuacct/slurm/job7/cpu.cfs_quota_us": "200000\n",
      "cpu,cpuacct/slurm/job7/cpu.cfs_period_us": "100000\n"},
     "4:cpu,cpuacct:/slurm/job7\n3:memory:/slurm/job7\n", 2),
    # no quota anywhere ("max", v1's -1): the affinity alone
    ({"cpu.max": "max 100000\n", "cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"},
     "0::/\n1:cpu:/\n", None),
])
def test_usable_cpus_is_the_affinity_capped_by_the_cgroup_quota(tmp_path, files, membership, cap):
    from tomolab.devices import usable_cpus

    root, membership_file = _cgroup(tmp_path, files, membership)
    expected = _affinity() if cap is None else min(cap, _affinity())
    assert usable_cpus(root=root, membership=membership_file) == expected


def test_usable_cpus_follows_a_real_affinity_mask():
    """A process pinned to one CPU (as taskset or a batch system does) counts one."""
    import os
    import subprocess
    import sys

    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("this platform has no CPU affinity")
    one = min(os.sched_getaffinity(0))
    code = (f"import os; os.sched_setaffinity(0, {{{one}}}); "
            "from tomolab.devices import usable_cpus; print(usable_cpus())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"
