"""The spool: a live session's raw frames written to a DXchange file as they arrive.

Real files (h5py), real threads, and a real process whose file size limit
(``RLIMIT_FSIZE``) runs out mid-scan for the full disk.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

import tomolab
from tomolab.errors import OutputError, ParameterError
from tomolab.live import Frame, LiveReconstruction, MemorySource

N_COLS, N_ROWS, N_ANGLES = 40, 5, 60
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def cache_home(tmp_path, monkeypatch):
    """The default spool folder (the user's cache) of each test is its own."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "tomolab" / "live"


@pytest.fixture(scope="module")
def scan():
    return tomolab.data.simulate_scan(N_COLS, n_rows=N_ROWS, n_angles=N_ANGLES, seed=11)


def _frames(scan, order=None):
    frames = [Frame("dark", i, None, d) for i, d in enumerate(scan.darks.values)]
    frames += [Frame("flat", i, None, f) for i, f in enumerate(scan.flats.values)]
    angles, projections = scan.angle.values, scan.projections.values
    for i in range(N_ANGLES) if order is None else order:
        frames.append(Frame("projection", int(i), float(angles[i]), projections[i]))
    return frames


def _run(scan, frames, *, finish=True, **options):
    source = MemorySource()
    live = LiveReconstruction(source, center=scan.attrs["true_center"] + 0.4, backend="numpy",
                              pixel_size=scan.attrs["pixel_size"], z=2, point=(13, 29), **options)
    live.start()

    def feed():
        for k, frame in enumerate(frames):
            source.put(Frame(frame.kind, frame.index, frame.angle, frame.data))
            if k % 9 == 8:
                time.sleep(0.003)
        if finish:
            source.finish()
    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    thread.join()
    return live, source


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _assert_slices_equal(live, volume):
    slices = live.snapshot()
    y, x = live.point
    assert _rel(slices.xy, volume.values[live.z]) < 1e-4
    assert _rel(slices.xz, volume.values[:, y, :]) < 1e-4
    assert _rel(slices.yz, volume.values[:, :, x]) < 1e-4


def test_to_scan_reads_the_spool_lazily_and_equals_the_frames(scan, cache_home):
    live, _ = _run(scan, _frames(scan))
    assert live.wait(timeout=120), live.stats
    stats = live.stats
    assert stats["spool"] == "complete" and stats["errors"] == 0
    path = Path(stats["spool_path"])
    assert path.parent == cache_home and path.is_file()
    assert [p.name for p in cache_home.iterdir()] == [path.name]  # no partial, no lock left
    with h5py.File(path, "r") as f:
        assert f.attrs["tomolab_output"] == "scan" and f.attrs["spool_complete"] == 1
        np.testing.assert_array_equal(f["exchange/frame_index"][()], np.arange(N_ANGLES))

    spooled = live.to_scan()
    assert spooled.projections.chunks is not None  # dask: lazy, read from the file
    assert spooled.attrs["source_file"] == str(path) or str(path) in str(spooled.attrs)
    np.testing.assert_array_equal(spooled.projections.values, scan.projections.values)
    np.testing.assert_array_equal(spooled.flats.values, scan.flats.values)
    np.testing.assert_array_equal(spooled.darks.values, scan.darks.values)
    np.testing.assert_allclose(spooled.angle.values, scan.angle.values, rtol=0, atol=1e-12)
    assert spooled.attrs["pixel_size"] == pytest.approx(scan.attrs["pixel_size"])

    volume = tomolab.reconstruct(spooled, center=live.center, backend="numpy", algorithm="fbp")
    _assert_slices_equal(live, volume)


def test_out_of_order_and_duplicate_frames_spool_what_the_slices_used(scan, tmp_path):
    rng = np.random.default_rng(2)
    order = [int(i) for i in rng.permutation(N_ANGLES) if i not in (7, 33)]
    first_copy = {order[4]: scan.projections.values[order[4]]}
    frames = _frames(scan, order)
    # a duplicate with other pixels: the first copy is the one used, and spooled
    frames.append(Frame("projection", order[4], float(scan.angle.values[order[4]]),
                        np.zeros_like(first_copy[order[4]])))
    target = tmp_path / "kept" / "scan_live.h5"
    live, _ = _run(scan, frames, spool=target)
    assert live.wait(timeout=120), live.stats
    assert live.stats["duplicates"] == 1 and live.stats["spool_path"] == str(target)
    with h5py.File(target, "r") as f:  # on disk: arrival order, with the frame numbers
        np.testing.assert_array_equal(f["exchange/frame_index"][()], order)
        np.testing.assert_array_equal(f["exchange/data"][4], first_copy[order[4]])
    spooled = live.to_scan()  # by frame number, as the memory path gives them
    arrived = [i for i in range(N_ANGLES) if i not in (7, 33)]
    np.testing.assert_array_equal(spooled.projections.values, scan.projections.values[arrived])
    volume = tomolab.reconstruct(spooled, center=live.center, backend="numpy", algorithm="fbp")
    _assert_slices_equal(live, volume)
    with pytest.raises(ParameterError, match="spool.*already exists"):
        LiveReconstruction(MemorySource(), center=20.0, backend="numpy", spool=target)


def test_spool_false_keeps_the_frames_in_memory(scan, cache_home):
    live, _ = _run(scan, _frames(scan), spool=False)
    assert live.wait(timeout=120)
    assert live.stats["spool"] == "memory" and not cache_home.exists()
    np.testing.assert_array_equal(live.to_scan().projections.values, scan.projections.values)
    with pytest.raises(ParameterError, match="keep_frames"):
        LiveReconstruction(MemorySource(), center=20.0, backend="numpy", keep_frames=False,
                           spool=cache_home)
    with pytest.raises(ParameterError, match="spool"):
        LiveReconstruction(MemorySource(), center=20.0, backend="numpy", spool=3)


def test_a_disk_that_cannot_be_written_stops_the_spool_not_the_session(scan, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    live, _ = _run(scan, _frames(scan), spool=blocker / "spool")
    assert live.wait(timeout=120), live.stats
    stats = live.stats
    assert stats["state"] == "ended" and stats["spool"] == "failed"
    assert stats["in_slices"] == N_ANGLES and stats["dropped"] == 0
    assert stats["last_error"].startswith(f"spool {blocker / 'spool'}")
    assert "a part of the path above it is a file" in stats["last_error"]
    volume = tomolab.reconstruct(scan, center=live.center, backend="numpy", algorithm="fbp")
    _assert_slices_equal(live, volume)
    with pytest.raises(OutputError, match="spool of raw frames failed"):
        live.to_scan()


def test_stop_closes_the_spool_and_start_appends_to_it(scan):
    frames = _frames(scan)
    live, source = _run(scan, frames[:30], finish=False)
    deadline = time.monotonic() + 60
    while live.stats["received"] < 30 and time.monotonic() < deadline:
        time.sleep(0.01)
    live.stop()
    first = live.to_scan()
    n_first = 30 - scan.sizes["flat"] - scan.sizes["dark"]
    assert live.stats["spool"] == "complete" and first.sizes["angle"] == n_first
    for frame in frames[30:]:
        source.put(Frame(frame.kind, frame.index, frame.angle, frame.data))
    source.finish()
    live.start()
    assert live.wait(timeout=120) and live.stats["spool"] == "complete"
    assert int(first.projections[-1].sum()) == int(scan.projections[n_first - 1].sum())
    whole = live.to_scan()
    np.testing.assert_array_equal(whole.projections.values, scan.projections.values)


def test_the_default_folder_sheds_the_spools_of_ended_processes(scan, cache_home):
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    host = socket.gethostname()
    cache_home.mkdir(parents=True)
    stale = cache_home / f"live-{host}-{ended.stdout.strip()}-20260101-000000-abcdef.h5"
    ours = cache_home / f"live-{host}-{os.getpid()}-20260101-000000-abcdef.h5"
    theirs = cache_home / "notes.h5"  # not a spool's name: never touched
    for path in (stale, ours, theirs):
        path.write_bytes(b"x")
    live, _ = _run(scan, _frames(scan))
    assert live.wait(timeout=120)
    assert not stale.exists() and ours.exists() and theirs.exists()


_FULL_DISK = textwrap.dedent("""
    import json, resource, sys
    from pathlib import Path
    import numpy as np
    import tomolab
    from tomolab.live import Frame, LiveReconstruction, MemorySource

    folder = Path(sys.argv[1])
    scan = tomolab.data.simulate_scan(128, n_rows=64, n_angles=100, seed=1)
    tomolab.reconstruct(scan.isel(angle=slice(0, 8)), center=60.0, backend="numpy",
                        algorithm="fbp")  # compile the kernels before the limit
    limit = 2 * 2 ** 20  # ~ 60 of the 100 frames of 16 KiB, after HDF5's headroom
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    source = MemorySource()
    live = LiveReconstruction(source, center=scan.attrs["true_center"], backend="numpy",
                              pixel_size=scan.attrs["pixel_size"], spool=folder)
    live.start()
    for i, f in enumerate(scan.flats.values):
        source.put(Frame("flat", i, None, f))
    for i, d in enumerate(scan.darks.values):
        source.put(Frame("dark", i, None, d))
    for i, (a, p) in enumerate(zip(scan.angle.values, scan.projections.values)):
        source.put(Frame("projection", i, float(a), p))
    source.finish()
    ok = live.wait(timeout=300)
    reference = tomolab.reconstruct(scan, center=live.center, backend="numpy", algorithm="fbp")
    xy = live.snapshot().xy.values
    try:
        live.to_scan()
        to_scan = "no error"
    except tomolab.errors.OutputError as exc:
        to_scan = str(exc)
    stats = live.stats
    print(json.dumps({"ok": ok, "state": stats["state"], "spool": stats["spool"],
                      "in_slices": stats["in_slices"], "errors": live.errors(),
                      "to_scan": to_scan, "path": stats["spool_path"], "files": sorted(p.name for p in folder.iterdir()),
                      "rel": float(np.linalg.norm(xy - reference.values[live.z])
                                   / np.linalg.norm(reference.values[live.z]))}))
""")


def test_a_full_disk_mid_scan_keeps_the_session_going(tmp_path):
    """The file size limit (RLIMIT_FSIZE) runs out after ~60 frames: the spool stops cleanly."""
    folder = tmp_path / "spool"
    folder.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               XDG_CACHE_HOME=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", _FULL_DISK, str(folder)], check=False,
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["state"] == "ended" and report["in_slices"] == 100
    assert report["spool"] == "failed"
    (line,) = report["errors"]
    assert line.startswith(f"spool {report['path']}: cannot write the output: the file grew past "
                           f"the size this process may write") and line.endswith("slices go on)")
    assert "spool of raw frames failed" in report["to_scan"]
    assert report["files"] == []  # nothing half-written is left
    assert report["rel"] < 1e-4, report
