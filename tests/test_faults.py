"""Faults an output must survive: a second writer, a replaced input, kills at any moment,
a full disk, a read-only or forbidden folder. Real processes, real SIGKILLs, real file systems."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import xarray as xr

import tomolab
from tomolab.cli import main as cli_main
from tomolab.errors import OutputError
from tomolab.io import OutputLock, open_sink, open_volume

NAMES = {"zarr": "vol.zarr", "hdf5": "vol.h5", "tiff": "vol"}
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [os.path.dirname(os.path.dirname(tomolab.__file__)), os.environ.get("PYTHONPATH", "")])}


def _python(code, *args, **kwargs):
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                          capture_output=True, text=True, timeout=300, check=False,
                          **{"env": ENV, **kwargs})


def _cli(*args, cwd=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "tomolab.cli", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300, check=False,
                          **{"env": ENV, **kwargs})


def _one_line(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def _assert_same_volume(path, reference):
    """Bit for bit, coords and attrs included (but the time each run was made)."""
    a, b = open_volume(path).load(), open_volume(reference).load()
    for volume in (a, b):
        volume.attrs.pop("created", None)
    xr.testing.assert_identical(a, b)


@pytest.fixture(params=list(NAMES))
def fmt(request):
    return request.param


# ----------------------------------------------------------------------------- locks

_HOLDER = """
    import sys
    import numpy as np
    from tomolab.io import open_sink
    sink = open_sink(sys.argv[1], shape=(4, 3, 3), coords={}, attrs={}, slab_rows=2,
                     fingerprint="holder")
    sink.write(0, np.zeros((2, 3, 3)))
    print("holding", flush=True)
    sys.stdin.readline()
    sink.write(1, np.ones((2, 3, 3)))
    sink.finish()
"""


def _start_holder(path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_HOLDER), str(path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=ENV)
    assert holder.stdout.readline().strip() == "holding", holder.stderr.read()
    return holder


@pytest.fixture()
def small_scan(tmp_path):
    path = tmp_path / "scan.h5"
    assert cli_main(["simulate", str(path), "--size", "32", "--rows", "4",
                             "--angles", "40", "--center", "15.5"]) == 0
    return path


def test_a_second_writer_refuses_at_once_naming_the_holder(tmp_path, fmt, small_scan):
    path = tmp_path / NAMES[fmt]
    holder = _start_holder(path)
    try:
        # the command line, a one-shot writer and a resumable one: each refuses, touching nothing
        cli = _cli("recon", small_scan, "--center", "15.5", "--backend", "numpy", "-o", path)
        assert cli.returncode == 2
        line = _one_line(cli)
        assert f"another run is writing this output (pid {holder.pid} on " in line
        assert "started" in line and "fix: wait until it has finished" in line
        one_shot = _python("""
            import sys, numpy as np, tomolab
            tomolab.save_volume(np.zeros((4, 3, 3), np.float32), sys.argv[1], overwrite=True)
        """, path)
        assert f"OutputError: {path}: another run is writing this output (pid {holder.pid}" \
            in one_shot.stderr
        with pytest.raises(OutputError, match=f"pid {holder.pid}"):
            open_sink(path, shape=(4, 3, 3), coords={}, attrs={}, slab_rows=2,
                      fingerprint="holder")
    finally:
        _, err = holder.communicate("go\n", timeout=120)
    assert holder.returncode == 0, err
    expected = np.concatenate([np.zeros((2, 3, 3)), np.ones((2, 3, 3))]).astype(np.float32)
    assert np.array_equal(open_volume(path).values, expected)  # the holder's run, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, small_scan.name])


def test_a_killed_holder_releases_the_lock(tmp_path, fmt):
    path = tmp_path / NAMES[fmt]
    holder = _start_holder(path)
    holder.kill()  # SIGKILL: the kernel drops the lock
    holder.communicate(timeout=60)
    assert holder.returncode == -signal.SIGKILL
    assert (tmp_path / f".{path.name}.lock").exists()  # left behind, and harmless
    sink = open_sink(path, shape=(4, 3, 3), coords={}, attrs={}, slab_rows=2,
                     fingerprint="holder")
    assert sink.done == {0}
    sink.write(1, np.ones((2, 3, 3)))
    sink.finish()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_two_runs_started_together_never_interleave(tmp_path):
    scan = tmp_path / "scan.h5"
    assert cli_main(["simulate", str(scan), "--size", "48", "--rows", "72",
                             "--angles", "60", "--center", "24.3"]) == 0
    args = [sys.executable, "-m", "tomolab.cli", "recon", str(scan), "--center", "24.3",
            "--backend", "numpy", "-q", "-o", str(tmp_path / "vol.zarr")]
    runs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=ENV) for _ in range(2)]
    results = [(run.wait(timeout=300), run.stderr.read()) for run in runs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, err in results if code == 2).strip()
    assert len(loser.splitlines()) == 1
    assert "another run is writing this output" in loser or "output exists" in loser
    tomolab.reconstruct_to(tomolab.open_scan(scan), tmp_path / "ref.zarr", center=24.3,
                           backend="numpy")
    _assert_same_volume(tmp_path / "vol.zarr", tmp_path / "ref.zarr")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.zarr", "scan.h5", "vol.zarr"]


# ----------------------------------------------------------------------------- input identity

_KILL_AFTER_SLABS = """
    import os, signal, sys
    from tomolab.io import _sinks
    real = _sinks.SlabSink.write

    def write(self, index, data):  # the real write, then a real SIGKILL
        real(self, index, data)
        if len(self.done) >= int(os.environ["KILL_AFTER_SLABS"]):
            os.kill(os.getpid(), signal.SIGKILL)

    _sinks.SlabSink.write = write
    from tomolab.cli import main
    sys.exit(main(sys.argv[1:]))
"""


def _simulate(path, seed):
    assert cli_main(["simulate", str(path), "--size", "48", "--rows", "72", "--angles",
                             "60", "--center", "24.3", "--seed", str(seed), "--overwrite"]) == 0


@pytest.mark.parametrize("replaced", [True, False])
@pytest.mark.parametrize("name", ["vol.zarr", "vol.h5"])
def test_killed_cli_run_resumes_only_from_the_same_input(tmp_path, replaced, name):
    scan, out = tmp_path / "scan.h5", tmp_path / name
    _simulate(scan, seed=1)
    recon = ["recon", str(scan), "--center", "24.3", "--backend", "numpy", "-q", "-o", str(out)]
    killed = _python(_KILL_AFTER_SLABS, *recon, env={**ENV, "KILL_AFTER_SLABS": "1"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not out.exists() and (tmp_path / f".{name}.partial").exists()
    if replaced:  # another scan of the same shape, at the same path
        _simulate(scan, seed=2)
    again = _cli(*recon)
    assert again.returncode == 0, again.stderr
    assert ("made from another input" in again.stderr) == replaced, again.stderr
    if replaced:  # one line, as the command line says everything
        assert again.stderr.strip().startswith("tomolab recon: warning: ")
        assert len(again.stderr.strip().splitlines()) == 1, again.stderr
    uninterrupted = _cli(*recon[:-1], tmp_path / f"ref-{name}")
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    _assert_same_volume(out, tmp_path / f"ref-{name}")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, f"ref-{name}", "scan.h5"])


def test_same_size_and_mtime_but_other_frames_is_another_input(tmp_path):
    from tomolab.errors import Cancelled

    scan, out = tmp_path / "scan.h5", tmp_path / "vol.zarr"
    _simulate(scan, seed=1)
    stat = scan.stat()
    calls = []

    def cancel_after_one_slab():
        calls.append(1)
        return len(calls) > 1

    with pytest.raises(Cancelled):
        tomolab.reconstruct_to(tomolab.open_scan(scan), out, center=24.3, backend="numpy",
                               slab_rows=24, cancel=cancel_after_one_slab)
    _simulate(scan, seed=2)
    os.utime(scan, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (scan.stat().st_size, scan.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    with pytest.warns(UserWarning, match="made from another input.*frames_sha256"):
        volume = tomolab.reconstruct_to(tomolab.open_scan(scan), out, center=24.3,
                                        backend="numpy", slab_rows=24)
    reference = tomolab.reconstruct(tomolab.open_scan(scan), center=24.3, backend="numpy")
    assert np.array_equal(volume.values, reference.values)


# ----------------------------------------------------------------------------- kills at any moment

_KILL_SERVER = """
    import json, os, pickle, signal, sys, time
    import numpy as np, xarray as xr
    from tomolab.io import open_sink, save_volume

    volume, coords, attrs, slab_rows = pickle.load(open(sys.argv[1], "rb"))

    def job(kind, path):
        if kind == "save":
            data = xr.DataArray(volume, dims=("z", "y", "x"),
                                coords={k: (d, v, a) for k, (d, v, a) in coords.items()},
                                attrs=attrs, name="volume")
            save_volume(data, path, overwrite=os.path.exists(path))
            return
        if os.path.exists(path):  # finished by the run before
            return
        sink = open_sink(path, shape=volume.shape, coords=coords, attrs=attrs,
                         slab_rows=slab_rows, fingerprint="f")
        for i, (start, stop) in enumerate(sink.slabs):
            if i not in sink.done:
                sink.write(i, volume[start:stop])
        sink.finish()

    for line in sys.stdin:  # "KIND PATH DELAY": run a job in a fresh child, SIGKILL it at DELAY
        kind, path, delay = line.split()
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                job(kind, path)
                code = 0
            finally:
                os._exit(code)
        if float(delay) >= 0:
            time.sleep(float(delay))
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"killed": os.WIFSIGNALED(status),
                          "failed": os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0,
                          "seconds": time.perf_counter() - started}), flush=True)
"""


def _kill_case():
    rng = np.random.default_rng(7)
    n_z, n = 16, 96
    volume = rng.normal(size=(n_z, n, n)).astype(np.float32)
    coords = {"z": ("z", np.arange(n_z) * 1e-6, {"units": "m"}),
              "y": ("y", (np.arange(n) - 47.5) * 1e-6, {"units": "m"}),
              "x": ("x", (np.arange(n) - 47.5) * 1e-6, {"units": "m"}),
              "row": ("z", np.arange(100, 100 + n_z), {"long_name": "detector row"}),
              "center": ("z", np.linspace(47.1, 48.2, n_z), {"units": "pixel"})}
    attrs = {"center": 47.6, "filter": "ramp", "units": "1/m", "slab_rows": 2}
    return volume, coords, attrs, 2


def _complete(kind, path, case):
    volume, coords, attrs, slab_rows = case
    if path.exists():
        return
    if kind == "save":
        data = xr.DataArray(volume, dims=("z", "y", "x"), coords=coords, attrs=attrs,
                            name="volume")
        tomolab.save_volume(data, path)
        return
    sink = open_sink(path, shape=volume.shape, coords=coords, attrs=attrs, slab_rows=slab_rows,
                     fingerprint="f")
    for i, (start, stop) in enumerate(sink.slabs):
        if i not in sink.done:
            sink.write(i, volume[start:stop])
    sink.finish()


@pytest.mark.slow
def test_kills_at_random_moments_always_resume_to_the_uninterrupted_volume(tmp_path):
    """40 writers (resumable sinks of each format, one-shot saves) each SIGKILLed twice at
    moments spread over a run -- while the partial is created, slabs written, the output
    moved into place -- then completed: every volume is identical to an uninterrupted one."""
    case = _kill_case()
    job = tmp_path / "case.pkl"
    job.write_bytes(pickle.dumps(case))
    server = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_KILL_SERVER), str(job)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)

    def run(kind, path, delay):
        server.stdin.write(f"{kind} {path} {delay}\n")
        server.stdin.flush()
        return json.loads(server.stdout.readline())

    rng = np.random.default_rng(0)
    trials = [("sink", "vol.zarr"), ("sink", "vol.h5"), ("sink", "vol"), ("save", "vol.zarr"),
              ("save", "vol.h5")]
    counts = {"sink": 10, "save": 5}
    outcomes = {}
    try:
        for kind, name in trials:
            folder = tmp_path / f"{kind}-{name}"
            folder.mkdir()
            reference = folder / f"ref-{name}"
            seconds = run(kind, reference, -1)["seconds"]  # uninterrupted, in the same way
            n = counts[kind]
            for trial in range(n):
                path = folder / f"t{trial}-{name}"
                first = seconds * (trial + rng.random()) / n  # spread over the whole run
                runs = [run(kind, path, first), run(kind, path, seconds * rng.random())]
                assert not any(r["failed"] for r in runs), runs  # killed or finished, no error
                outcomes[(kind, name, trial)] = [r["killed"] for r in runs]
                if path.exists():  # a kill after the move: the output must be whole already
                    xr.testing.assert_identical(open_volume(path).load(),
                                                open_volume(reference).load())
                _complete(kind, path, case)
                xr.testing.assert_identical(open_volume(path).load(),
                                            open_volume(reference).load())
                assert np.array_equal(open_volume(path).values, case[0])
            for lock in folder.glob(".*.lock"):
                # a kill between the move into place and the lock's release leaves the lock
                # file (OutputLock's documented contract): it must be free, and the next run
                # that writes there takes it over and removes it
                target = folder / lock.name[1:-len(".lock")]
                OutputLock(target).acquire().release()
                assert not lock.exists(), lock
            names = sorted(p.name for p in folder.iterdir())
            assert names == sorted([reference.name] + [f"t{t}-{name}" for t in range(n)]), names
    finally:
        server.stdin.close()
        server.wait(timeout=60)
    killed = sum(state for states in outcomes.values() for state in states)
    assert killed >= len(outcomes), outcomes  # most kills landed mid-run, not after it
    print(f"{killed} kills of {2 * len(outcomes)} landed mid-run; all resumed identically")


_KILL_BEFORE_RENAME = """
    import os, pickle, signal, sys
    from tomolab.io import _sinks, open_sink

    def killed_after(build):
        def wrapper(self, tmp):
            build(self, tmp)  # the whole layout, under its temporary name
            os.kill(os.getpid(), signal.SIGKILL)  # and killed before it is renamed
        return wrapper

    for cls in (_sinks._ZarrSink, _sinks._HDF5Sink, _sinks._TiffSink):
        cls._build = killed_after(cls._build)
    volume, coords, attrs, slab_rows = pickle.load(open(sys.argv[2], "rb"))
    open_sink(sys.argv[1], shape=volume.shape, coords=coords, attrs=attrs, slab_rows=slab_rows,
              fingerprint="f")
"""


def test_a_kill_while_the_partial_is_created_leaves_nothing_a_resume_trusts(tmp_path, fmt):
    case = _kill_case()
    job = tmp_path / "case.pkl"
    job.write_bytes(pickle.dumps(case))
    path = tmp_path / NAMES[fmt]
    killed = _python(_KILL_BEFORE_RENAME, path, job)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("."))
    assert left[0] == f".{path.name}.lock" and left[1].startswith(f".{path.name}.partial-")
    assert len(left) == 2  # a temporary layout, never .NAME.partial
    _complete("sink", path, case)
    reference = tmp_path / f"ref-{NAMES[fmt]}"
    _complete("sink", reference, case)
    _assert_same_volume(path, reference)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([path.name, reference.name,
                                                                  "case.pkl"])


# ----------------------------------------------------------------------------- disk full, read-only

def _in_small_filesystem(tmp_path, script, *args, size="4m", read_only=False):
    """Run ``script`` with a fresh tmpfs of ``size`` mounted at tmp_path/"disk" (a private mount
    namespace: nothing is mounted outside it). Returns the finished process."""
    disk = tmp_path / "disk"
    disk.mkdir()
    code = tmp_path / "script.py"
    code.write_text(textwrap.dedent(script))
    mount = f"mount -t tmpfs -o size={size} tmpfs {disk}"
    if read_only:
        mount += f" && mkdir {disk}/old && mount -o remount,ro {disk}"
    command = f"{mount} && exec {sys.executable} {code} {disk} " + " ".join(map(str, args))
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux) to mount a small file system")
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs tmpfs {disk}"],
                           capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a user namespace here: {probe.stderr!r}")
    return subprocess.run(["unshare", "-rm", "sh", "-c", command], capture_output=True,
                          text=True, timeout=300, env=ENV, check=False)


def test_cli_refuses_a_volume_that_does_not_fit_before_writing(tmp_path):
    scan = tmp_path / "scan.h5"
    assert cli_main(["simulate", str(scan), "--size", "160", "--rows", "40",
                             "--angles", "30"]) == 0  # a volume of 40 x 160 x 160 x 4 = 4 MB
    result = _in_small_filesystem(tmp_path, """
        import json, os, subprocess, sys
        disk, scan = sys.argv[1:3]
        out = {}
        for name in ("vol.zarr", "vol.h5", "vol"):
            run = subprocess.run([sys.executable, "-m", "tomolab.cli", "recon", scan, "--center",
                                  "80", "--backend", "numpy", "-o", os.path.join(disk, name)],
                                 capture_output=True, text=True)
            out[name] = [run.returncode, run.stderr, sorted(os.listdir(disk))]
        print(json.dumps(out))
    """, scan, size="2m")
    assert result.returncode == 0, result.stderr
    for name, (code, stderr, left) in json.loads(result.stdout).items():
        assert code == 2 and len(stderr.strip().splitlines()) == 1, stderr
        assert f"disk/{name}: the output needs 3.9 MiB but only" in stderr
        assert "are free on the disk of" in stderr and "fix: free space there" in stderr
        assert left == [], left  # no partial, no lock


_FILL_DISK = """
    import json, os, sys
    import numpy as np, xarray as xr
    from tomolab.errors import OutputError
    from tomolab.io import open_sink, open_volume, save_volume, write_dxchange

    disk = sys.argv[1]
    ballast = os.path.join(disk, "ballast")

    def fill():  # take every free byte, as another user's job would
        fd = os.open(ballast, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        for size in (65536, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\\0" * size)
            except OSError:
                pass
        os.close(fd)

    volume = np.random.default_rng(3).normal(size=(12, 128, 128)).astype(np.float32)
    coords = {"row": ("z", np.arange(12), {})}
    report = {}
    for name in ("vol.zarr", "vol.h5", "vol"):
        path = os.path.join(disk, name)
        sink = open_sink(path, shape=volume.shape, coords=coords, attrs={"a": 1}, slab_rows=4,
                         fingerprint="f")
        sink.write(0, volume[0:4])
        fill()
        try:
            sink.write(1, volume[4:8])
            error = None
        except OutputError as exc:
            error = str(exc)
        sink.close()
        os.unlink(ballast)
        again = open_sink(path, shape=volume.shape, coords=coords, attrs={"a": 1}, slab_rows=4,
                          fingerprint="f")
        done = sorted(again.done)
        for i, (a, b) in enumerate(again.slabs):
            if i not in again.done:
                again.write(i, volume[a:b])
        again.finish()
        back = open_volume(path)
        report[name] = {"error": error, "done": done,
                        "equal": bool(np.array_equal(back.values, volume)),
                        "row": back["row"].values.tolist()}

    # one-shot writers: the disk fills while they write (the data are computed lazily)
    import dask.array as da
    filled = []

    def fill_once(block):
        if not filled:
            filled.append(1)
            fill()
        return block

    for name in ("once.h5", "once.zarr", "once"):
        lazy = da.from_array(volume, chunks=(2, 128, 128)).map_blocks(fill_once, meta=volume[:0])
        filled.clear()
        try:
            save_volume(xr.DataArray(lazy, dims=("z", "y", "x")), os.path.join(disk, name))
            error = None
        except OutputError as exc:
            error = str(exc)
        left = sorted(os.listdir(disk))
        os.unlink(ballast)
        report[name] = {"error": error, "left": left}

    def slabs():
        yield np.ones((4, 128, 128), np.uint16)
        fill()
        yield np.ones((4, 128, 128), np.uint16)

    try:
        write_dxchange(os.path.join(disk, "scan.h5"), slabs(), np.linspace(0, 3, 8))
        error = None
    except OutputError as exc:
        error = str(exc)
    report["scan.h5"] = {"error": error, "left": sorted(os.listdir(disk))}
    print(json.dumps(report))
"""


def test_a_disk_that_fills_up_mid_write_gives_one_line_and_stays_resumable(tmp_path):
    result = _in_small_filesystem(tmp_path, _FILL_DISK, size="8m")
    assert result.returncode == 0, result.stderr  # never a segfault
    report = json.loads(result.stdout)
    for name in ("vol.zarr", "vol"):  # chunks and TIFF files need new blocks: they fail cleanly
        entry = report[name]
        assert entry["error"] and "cannot write the output: no space left on the disk" in \
            entry["error"] and "kept and resumed" in entry["error"], entry
        assert "\n" not in entry["error"]
        assert entry["done"] == [0], entry
    # HDF5 reserved its whole file when it was created: the write goes through
    assert report["vol.h5"]["error"] is None and report["vol.h5"]["done"] == [0, 1]
    for name in ("vol.zarr", "vol.h5", "vol"):
        assert report[name]["equal"] and report[name]["row"] == list(range(12))
    for name in ("once.h5", "once.zarr", "once", "scan.h5"):
        entry = report[name]
        assert entry["error"] and "no space left on the disk" in entry["error"], (name, entry)
        assert "nothing of this output was kept" in entry["error"]
        # nothing half-written left: only the finished volumes and the ballast
        assert entry["left"] == ["ballast", "vol", "vol.h5", "vol.zarr"], (name, entry)


def test_a_read_only_destination_gives_one_line(tmp_path, small_scan):
    result = _in_small_filesystem(tmp_path, """
        import json, os, subprocess, sys
        disk, scan = sys.argv[1:3]
        out = {}
        for name in ("old/vol.zarr", "old/vol.h5", "new/vol"):
            run = subprocess.run([sys.executable, "-m", "tomolab.cli", "recon", scan, "--center",
                                  "15.5", "--backend", "numpy", "-o", os.path.join(disk, name)],
                                 capture_output=True, text=True)
            out[name] = [run.returncode, run.stderr]
        print(json.dumps(out))
    """, small_scan, read_only=True)
    assert result.returncode == 0, result.stderr
    for name, (code, stderr) in json.loads(result.stdout).items():
        assert code == 2 and len(stderr.strip().splitlines()) == 1, (name, stderr)
        assert "cannot write the output: the file system is read-only" in stderr, stderr
        assert "fix: write the output to a folder you can write to" in stderr


def test_a_folder_without_write_permission_gives_one_line(tmp_path, small_scan):
    import tempfile

    folder = tempfile.mkdtemp(prefix="tomolab-readonly-")
    try:
        os.chmod(folder, 0o755)
        scan = os.path.join(folder, "scan.h5")
        shutil.copy(small_scan, scan)
        os.chmod(scan, 0o644)
        os.chmod(folder, 0o555)
        command = [sys.executable, "-m", "tomolab.cli", "recon", scan, "--center", "15.5",
                   "--backend", "numpy", "-o", os.path.join(folder, "vol.zarr")]
        if os.geteuid() == 0:  # root writes anywhere: run as an ordinary user (a user namespace)
            if shutil.which("unshare") is None:
                pytest.skip("running as root without unshare to drop the privilege")
            command = ["unshare", "--user", "--map-user=1000", "--map-group=1000", *command]
        run = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV,
                             check=False)
        if "unshare:" in run.stderr:
            pytest.skip(f"cannot drop root's privilege here: {run.stderr.strip()}")
        assert run.returncode == 2, run.stderr
        line = _one_line(run)
        assert "vol.zarr" in line and "no permission to write there" in line, line
        assert sorted(os.listdir(folder)) == ["scan.h5"]
    finally:
        os.chmod(folder, 0o755)
        shutil.rmtree(folder)


_KILL_IN_PYRAMID = """
    import os, pickle, signal, sys
    from tomolab.io import _sinks, open_sink

    real = _sinks._write_levels

    def killed_midway(store, levels, chunks):
        real(store, 1, chunks)  # the first level only, then a kill
        os.kill(os.getpid(), signal.SIGKILL)

    _sinks._write_levels = killed_midway
    volume, coords, attrs, slab_rows = pickle.load(open(sys.argv[2], "rb"))
    sink = open_sink(sys.argv[1], shape=volume.shape, coords=coords, attrs=attrs,
                     slab_rows=slab_rows, fingerprint="f", multiscale=2)
    for i, (start, stop) in enumerate(sink.slabs):
        sink.write(i, volume[start:stop])
    sink.finish()
"""


def test_a_kill_while_the_pyramid_is_written_resumes_without_recomputing(tmp_path):
    case = _kill_case()
    job = tmp_path / "case.pkl"
    job.write_bytes(pickle.dumps(case))
    path = tmp_path / "vol.zarr"
    killed = _python(_KILL_IN_PYRAMID, path, job)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    volume, coords, attrs, slab_rows = case
    sink = open_sink(path, shape=volume.shape, coords=coords, attrs=attrs, slab_rows=slab_rows,
                     fingerprint="f", multiscale=2)
    assert sink.done == set(range(len(sink.slabs)))  # every slab kept: only the pyramid is redone
    sink.finish()
    reference = open_sink(tmp_path / "ref.zarr", shape=volume.shape, coords=coords, attrs=attrs,
                          slab_rows=slab_rows, fingerprint="f", multiscale=2)
    for i, (start, stop) in enumerate(reference.slabs):
        reference.write(i, volume[start:stop])
    reference.finish()
    xr.testing.assert_identical(xr.open_zarr(path).load(),
                                xr.open_zarr(tmp_path / "ref.zarr").load())
