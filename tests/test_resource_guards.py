"""Resource guards: requests that memory cannot hold are refused before anything is allocated.

The limits are real: child processes run under ``RLIMIT_AS`` (set with
``preexec_fn`` before Python starts), cgroup files are real files in a
temporary cgroup root, and a scan that declares a giant shape is a real
HDF5 file whose datasets were never written.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import tomolab
from tomolab.devices import (MEMORY_MARGIN, cgroup_memory, host_memory_bounds, require_memory,
                             rlimit_memory)
from tomolab.errors import InsufficientMemory, ParameterError

REPO = Path(__file__).resolve().parents[1]
#: address space of the children: Python with numpy, scipy, numba, xarray and dask takes ~1 GB
ADDRESS_SPACE = 3 << 30


def run_limited(args, *, cwd, limit: int = ADDRESS_SPACE, timeout: float = 300,
                which: str = "RLIMIT_AS"):
    """Run ``python args...`` under the resource limit ``which``, single-threaded libraries."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO),
                                                                    os.environ.get("PYTHONPATH")])),
               OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")

    def limit_address_space():
        resource.setrlimit(getattr(resource, which), (limit, limit))

    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit_address_space)


def run_code(code: str, *, cwd, limit: int = ADDRESS_SPACE, which: str = "RLIMIT_AS"):
    return run_limited(["-c", textwrap.dedent(code)], cwd=cwd, limit=limit, which=which)


def write_giant_scan(path: Path, *, n_angles=3000, n_rows=8, n_cols=100_000) -> Path:
    """A DXchange file that declares a scan of 4.8 GB of projections and stores almost nothing."""
    import h5py

    with h5py.File(path, "w") as f:
        frame = (1, n_rows, n_cols)
        f.create_dataset("/exchange/data", (n_angles, n_rows, n_cols), np.uint16, chunks=frame)
        f.create_dataset("/exchange/data_white", (4, n_rows, n_cols), np.uint16, chunks=frame,
                         fillvalue=1000)
        f.create_dataset("/exchange/data_dark", (4, n_rows, n_cols), np.uint16, chunks=frame,
                         fillvalue=100)
        f["/exchange/theta"] = np.linspace(0.0, 180.0, n_angles, endpoint=False)
        f["/exchange/theta"].attrs["units"] = "degrees"
    return path


# ---------------------------------------------------------------------------- cgroup files

def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_cgroup_v2_the_tightest_limit_on_the_way_up_counts(tmp_path):
    root = tmp_path / "cgroup"
    job = root / "user.slice" / "job-7"
    write(root / "user.slice" / "memory.max", str(16 << 30))
    write(root / "user.slice" / "memory.current", str(10 << 30))
    write(root / "user.slice" / "memory.stat", f"anon {8 << 30}\ninactive_file {2 << 30}\n")
    write(job / "memory.max", "max\n")  # no limit of its own: the parent's binds it
    write(job / "memory.current", str(1 << 30))
    membership = tmp_path / "self-cgroup"
    write(membership, "0::/user.slice/job-7\n")
    bound = cgroup_memory(root=str(root), membership=str(membership))
    # 16 GB limit, 10 GB used of which 2 GB inactive page cache (reclaimed before a kill)
    assert (bound.name, bound.limit, bound.available) == ("cgroup memory.max", 16 << 30, 8 << 30)
    write(job / "memory.max", str(4 << 30))  # now the job's own limit is tighter
    bound = cgroup_memory(root=str(root), membership=str(membership))
    assert (bound.limit, bound.available) == (4 << 30, 3 << 30)
    bounds = host_memory_bounds(cgroup_root=str(root), membership=str(membership))
    assert bounds[0] == bound
    assert [b.available for b in bounds] == sorted(b.available for b in bounds)


def test_cgroup_v2_namespace_root_and_no_limit(tmp_path):
    root = tmp_path / "cgroup"
    membership = tmp_path / "self-cgroup"
    write(membership, "0::/\n")  # inside a cgroup namespace: the container's own cgroup is the root
    write(root / "memory.max", "max\n")
    write(root / "memory.current", "12345\n")
    assert cgroup_memory(root=str(root), membership=str(membership)) is None
    write(root / "memory.max", "2000000\n")
    bound = cgroup_memory(root=str(root), membership=str(membership))
    assert (bound.limit, bound.available) == (2000000, 2000000 - 12345)
    write(root / "memory.current", "3000000\n")  # over the limit: nothing left, never negative
    assert cgroup_memory(root=str(root), membership=str(membership)).available == 0


def test_cgroup_v1_memory_controller(tmp_path):
    root = tmp_path / "cgroup"
    group = root / "memory" / "process_api" / "ab12"
    membership = tmp_path / "self-cgroup"
    write(membership, "9:name=systemd:/\n4:memory:/process_api/ab12\n1:cpu:/\n0::/\n")
    write(group / "memory.limit_in_bytes", "9223372036854771712\n")  # v1's "no limit"
    write(group / "memory.usage_in_bytes", str(3 << 30))
    assert cgroup_memory(root=str(root), membership=str(membership)) is None
    write(group / "memory.limit_in_bytes", str(6 << 30))
    write(group / "memory.stat", f"cache {2 << 30}\ntotal_inactive_file {1 << 30}\n")
    bound = cgroup_memory(root=str(root), membership=str(membership))
    assert (bound.name, bound.limit, bound.available) == \
        ("cgroup memory.limit_in_bytes", 6 << 30, 4 << 30)


# ---------------------------------------------------------------------------- rlimits

@pytest.mark.parametrize("which, mapped", [("RLIMIT_AS", "VmSize"), ("RLIMIT_DATA", "VmData")])
def test_rlimits_are_seen_with_what_they_leave(which, mapped, tmp_path):
    out = run_code(f"""
        from tomolab.devices import rlimit_memory, host_memory_bounds
        status = open("/proc/self/status").read()
        used = int(status.split("{mapped}:")[1].split()[0]) * 1024
        (bound,) = [b for b in rlimit_memory() if b.name == "{which}"]
        print(bound.limit, bound.available, used, host_memory_bounds()[0].name)
    """, cwd=tmp_path, which=which)
    assert out.returncode == 0, out.stderr
    limit, available, used, tightest = out.stdout.split()
    assert int(limit) == ADDRESS_SPACE and tightest == which
    # what is left is the limit less what is already mapped (read a moment apart)
    assert abs(int(available) - (ADDRESS_SPACE - int(used))) < 64 << 20
    unlimited = resource.getrlimit(getattr(resource, which))[0] == resource.RLIM_INFINITY
    assert any(b.name == which for b in rlimit_memory()) != unlimited  # and in this process


def test_require_memory_names_the_numbers_the_margin_and_the_fix(backend, monkeypatch):
    from tomolab.devices import free_memory

    if backend == "cupy":
        import cupy

        pool = cupy.get_default_memory_pool()
        monkeypatch.setenv("TOMOLAB_GPU_MEMORY_LIMIT", "1G")
        before = pool.get_limit()
        try:
            check_refusal(backend, free_memory(backend))
        finally:
            pool.set_limit(size=before)  # the cap is applied to the pool: undo it for later tests
        return
    check_refusal(backend, free_memory(backend))


def check_refusal(backend, available):
    # free memory moves while other processes run: compare within a few per cent
    assert require_memory(0.5 * available, backend=backend, what="half", fix="-") == \
        pytest.approx(available, rel=0.05)
    with pytest.raises(InsufficientMemory) as info:
        require_memory(0.99 * available, backend=backend, what="a stack of slices",
                       where="centers", value="41 centres", fix="fewer centres")
    message = str(info.value)
    kind = "GPU" if backend == "cupy" else "host"
    assert message.startswith("centers='41 centres': a stack of slices needs ")
    assert f"of {kind} memory" in message and "keeping a 10 % margin" in message
    assert message.endswith("fix: fewer centres") and "\n" not in message
    assert isinstance(info.value, ParameterError)
    assert info.value.available == pytest.approx(available, rel=0.05)
    assert info.value.needed == int(0.99 * available) and MEMORY_MARGIN == 0.10
    if backend == "cupy":  # the hub's per-user cap binds CuPy's pool: it is what is named
        assert "TOMOLAB_GPU_MEMORY_LIMIT 1.1 GB" in message


# ---------------------------------------------------------------------------- the api, limited

def test_api_refuses_what_the_address_space_cannot_hold(tmp_path):
    out = run_code(f"""
        import os, warnings
        import numpy as np
        import tomolab
        from tomolab.errors import InsufficientMemory
        warnings.simplefilter("ignore")
        scan = tomolab.data.simulate_scan(64, n_rows=8, n_angles=60)
        c = scan.attrs["true_center"]

        def refused(name, call):
            try:
                call()
            except InsufficientMemory as exc:
                print(name, "REFUSED", str(exc).replace("\\n", " "))
            else:
                print(name, "RAN")

        # 8 slices of 16384² float32: 8.6 GB
        refused("reconstruct", lambda: tomolab.reconstruct(scan, center=c, size=16384,
                                                         backend="numpy"))
        # one slab of 64 slices of 8192² to disk: 34 GB; refused before the partial exists
        refused("reconstruct_to", lambda: tomolab.reconstruct_to(
            scan, {str(tmp_path / 'vol.zarr')!r}, center=c, size=8192, slab_rows=64,
            backend="numpy"))
        refused("sweep_center", lambda: tomolab.sweep_center(
            scan, centers=np.arange(20, 44, 0.5), size=8192, backend="numpy"))
        refused("sweep_phase", lambda: tomolab.sweep_phase(
            scan, center=c, size=8192, backend="numpy"))
        refused("simulate_scan", lambda: tomolab.data.simulate_scan(4096, n_rows=2048,
                                                                   n_angles=6000))
        giant = tomolab.open_scan({str(write_giant_scan(tmp_path / "giant.h5"))!r})  # lazily
        refused("find_center", lambda: tomolab.find_center(giant, backend="numpy"))
        refused("giant_recon", lambda: tomolab.reconstruct_to(
            giant, {str(tmp_path / 'giant.zarr')!r}, center=50000.0, rows=4, backend="numpy"))
        # the guards leave room for what fits: the same process still reconstructs
        vol = tomolab.reconstruct(scan, center=c, backend="numpy")
        print("small", "RAN", vol.shape)
    """, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines())
    for name in ("reconstruct", "reconstruct_to", "sweep_center", "sweep_phase", "simulate_scan",
                 "find_center", "giant_recon"):
        assert lines[name].startswith("REFUSED"), (name, lines[name])
        assert "RLIMIT_AS 3.2 GB" in lines[name], lines[name]
        assert "keeping a 10 % margin" in lines[name] and "; fix: " in lines[name]
    assert "rows='0:8'" in lines["reconstruct"] and "reconstruct_to" in lines["reconstruct"]
    assert "slab_rows=64" in lines["reconstruct_to"]
    assert "smaller slab_rows=" in lines["reconstruct_to"]
    assert "fewer centres" in lines["sweep_center"] and "fewer ratios" in lines["sweep_phase"]
    assert "giant.h5" in lines["find_center"] and "100000 columns" in lines["giant_recon"]
    assert lines["small"] == "RAN (8, 64, 64)"
    assert "MemoryError" not in out.stdout + out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["giant.h5"]  # no partial, no output


# ---------------------------------------------------------------------------- the CLI, limited

def test_cli_refuses_with_one_line_and_leaves_nothing(tmp_path):
    giant = write_giant_scan(tmp_path / "giant.h5")
    info = run_limited(["-m", "tomolab.cli", "info", str(giant)], cwd=tmp_path)
    assert info.returncode == 0 and "3000" in info.stdout  # a giant declared shape opens lazily
    for center in ("50000", "auto"):
        out = run_limited(["-m", "tomolab.cli", "recon", str(giant), "-o", "vol.zarr",
                           "--center", center, "-q"], cwd=tmp_path)
        assert out.returncode == 2, out.stderr
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("tomolab recon: error: ")
        assert "needs" in lines[0] and "RLIMIT_AS" in lines[0] and "fix: " in lines[0]
        assert "Traceback" not in out.stderr and "MemoryError" not in out.stderr
    sim = run_limited(["-m", "tomolab.cli", "simulate", "big.h5", "--size", "4096",
                       "--rows", "200000", "--angles", "10"], cwd=tmp_path)
    assert sim.returncode == 2 and len(sim.stderr.strip().splitlines()) == 1, sim.stderr
    assert "simulating 10 projections of 200000 × 4096" in sim.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["giant.h5"]  # no partial, no output


# ---------------------------------------------------------------------------- honest estimates

def test_the_reconstruction_estimate_is_close_to_the_measured_peak(monkeypatch):
    """memray's peak of a CPU reconstruction (native allocations included) against the estimate:
    at most the estimate (it may not let an allocation through that then fails), and not far
    below it (a guard that refuses what would fit is no use either). Measured 0.78.

    FBP's: the estimate (``slab_bytes``) is FBP's working memory; gridrec, the CPU's
    ``algorithm="auto"``, reconstructs one slice at a time and peaks lower (0.41 of it)."""
    memray = pytest.importorskip("memray")  # in .[test]; not built for Windows
    from tomolab.api.reconstruct import plan_reconstruction
    from tomolab.engine import pipeline

    monkeypatch.setattr(pipeline, "CPU_SLAB_SECONDS", 1e6)  # one slab of memory's size, not of time

    scan = tomolab.data.simulate_scan(256, n_rows=8, n_angles=400)
    center = scan.attrs["true_center"]
    tomolab.reconstruct(scan, center=center, rows=1, backend="numpy",
                        algorithm="fbp")  # compile, warm caches
    plan = plan_reconstruction(scan, center=center, backend="numpy", algorithm="fbp")
    from tomolab.engine import slab_bytes
    estimate = 8 * 256 * 256 * 4 + slab_bytes(8, n_angles=400, n_cols=256, size=256, n_fields=20)
    # the whole volume went in one slab here (plenty free); the plan's least need is a slab of one
    assert plan.memory_needed(range(8))["numpy"] <= estimate
    trace = Path(os.environ.get("TMPDIR", "/tmp")) / f"tomolab-peak-{os.getpid()}.bin"
    try:
        with memray.Tracker(trace):
            volume = tomolab.reconstruct(scan, center=center, backend="numpy", algorithm="fbp")
            del volume
        peak = memray.FileReader(trace).metadata.peak_memory
    finally:
        trace.unlink(missing_ok=True)
    assert 0.6 < peak / estimate <= 1.0, peak / estimate


_FILE_SIZE_LIMIT_CHILD = textwrap.dedent("""
    import json, os, resource, sys
    import numpy as np
    import tomolab

    folder = sys.argv[1]
    scan = tomolab.data.simulate_scan(64, n_rows=32, n_angles=120, seed=2)
    tomolab.reconstruct(scan, rows=0, center=31.5, backend="numpy")  # kernels cached before
    resource.setrlimit(resource.RLIMIT_FSIZE, (2 ** 18, 2 ** 18))  # 256 KiB: each output is 0.5+ MB
    found = {}
    for name, write in [
        ("scan.h5", lambda path: tomolab.io.write_dxchange(
            path, np.tile(scan.projections.values, (4, 1, 1)),
            np.tile(scan.angle.values, 4), scan.flats.values, scan.darks.values)),
        ("volume.h5", lambda path: tomolab.reconstruct_to(
            scan, path, center=scan.attrs["true_center"], backend="numpy", slab_rows=8)),
    ]:
        path = os.path.join(folder, name)
        try:
            write(path)
            found[name] = "written"
        except tomolab.OutputError as exc:
            found[name] = "OutputError: " + str(exc)
    found["left"] = sorted(os.listdir(folder))
    print(json.dumps(found))
""")


def test_a_file_size_limit_is_a_clear_error_and_leaves_nothing_half_written(tmp_path):
    """``ulimit -f`` (RLIMIT_FSIZE) in a batch job: HDF5 outputs stop cleanly before the limit,
    as on a full disk (HDF5 that meets a failed write may crash when the file closes)."""
    folder = tmp_path / "out"
    folder.mkdir()
    result = subprocess.run([sys.executable, "-c", _FILE_SIZE_LIMIT_CHILD, str(folder)],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    found = json.loads(result.stdout.strip().splitlines()[-1])
    for name in ("scan.h5", "volume.h5"):
        assert found[name].startswith("OutputError"), found
        assert "RLIMIT_FSIZE: 256.0 KiB" in found[name] and "ulimit -f" in found[name], found
    assert not [n for n in found["left"] if not n.startswith(".") or "partial" in n], found
