"""Issue 13: a dask-cuda worker's stream read at half the speed of the direct stream.

Found: a scan unpickled on a worker looked up the byte offsets of its frames
again, in every reader thread of the first slab at once (0.7-0.9 s for 1800
frames, against 0.02 s for the slab's read): the offsets now travel with the
pickled scan, checked against the file's size and time, and are looked up
once per object.

Two options under measurement: ``TOMOLAB_FRAME_READER=nogil`` reads the
rows of uncompressed HDF5 frames in a loop that holds no GIL;
``TOMOLAB_WORKER_CPUS=all`` lets a cluster task's threads use the CPUs of the
worker's nanny where the worker was pinned to fewer (as dask-cuda pins a GPU
worker). Both must give what the defaults give,
bit for bit, on real files, real worker processes and real CPU sets.
"""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import tomolab
from tomolab.errors import ParameterError
from tomolab.io import read_frames
from tomolab.io._lazy import HDF5Frames

distributed = pytest.importorskip("distributed")

import tomolab.cluster

CENTER = 9.7


@pytest.fixture(scope="module")
def stack():
    return np.random.default_rng(5).integers(0, 60000, size=(30, 16, 20), dtype=np.uint16)


@pytest.mark.parametrize("layout", [{}, {"chunks": (1, 16, 20)}, {"chunks": (4, 16, 20)}])
def test_the_nogil_reader_reads_what_the_python_reader_reads(tmp_path, stack, layout,
                                                            monkeypatch):
    import h5py

    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=stack, **layout)
    runs = [(2, 9), (11, 30)]  # frames between flats, as in an NXtomo file
    frames = HDF5Frames(path, "data", shape=stack.shape, dtype=stack.dtype, runs=runs)
    assert frames._frame_offsets() is not None  # the pread path, not h5py's
    expected = np.concatenate([stack[a:b] for a, b in runs])
    for rows in (slice(0, 16), slice(3, 11), slice(15, 16)):
        got = {}
        for reader in ("python", "nogil"):
            monkeypatch.setenv("TOMOLAB_FRAME_READER", reader)
            out = np.zeros((frames.shape[0], rows.stop - rows.start, 20), stack.dtype)
            frames.read_into(slice(None), rows, out)
            got[reader] = out
            picked = np.zeros((7, rows.stop - rows.start, 20), stack.dtype)
            frames.read_into(slice(4, 18, 2), rows, picked)  # frames that are not consecutive
            assert np.array_equal(picked, expected[4:18:2, rows])
        assert np.array_equal(got["nogil"], expected[:, rows])
        assert np.array_equal(got["nogil"], got["python"])
    from tomolab.io._pread import pread_frames

    assert pread_frames.signatures  # the compiled loop read them


def test_the_nogil_reader_fills_a_scan_slab_from_many_threads(tmp_path, stack, monkeypatch):
    angles = np.linspace(0, np.pi, stack.shape[0], endpoint=False)
    path = tmp_path / "scan.h5"
    tomolab.io.write_dxchange(path, stack, angles, np.full((2, 16, 20), 61000, np.uint16),
                              np.full((2, 16, 20), 100, np.uint16), chunks=(1, 16, 20))
    scan = tomolab.open_scan(path)
    monkeypatch.setenv("TOMOLAB_FRAME_READER", "nogil")
    halo = np.array([0, 0, 1, 2, 3])  # an edge row repeated, as a slab with a halo asks
    assert np.array_equal(read_frames(scan["projections"], halo, threads=4), stack[:, halo])
    assert np.array_equal(read_frames(scan["projections"], slice(6, 14), threads=3),
                          stack[:, 6:14])


def test_a_truncated_file_is_the_same_error_with_either_reader(tmp_path, stack, monkeypatch):
    import h5py

    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=stack, chunks=(1, 16, 20))
    frames = HDF5Frames(path, "data", shape=stack.shape, dtype=stack.dtype)
    assert frames._frame_offsets() is not None
    with open(path, "r+b") as f:
        f.truncate(path.stat().st_size - 2 * 16 * 20 * 2)
    for reader in ("python", "nogil"):
        monkeypatch.setenv("TOMOLAB_FRAME_READER", reader)
        out = np.zeros(stack.shape, stack.dtype)
        with pytest.raises(OSError, match=r"file ends inside frame 28"):
            frames.read_into(slice(None), slice(0, 16), out)
        assert np.array_equal(out[:28], stack[:28])  # the frames before it were read


def test_an_unknown_frame_reader_is_named(tmp_path, stack, monkeypatch):
    import h5py

    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=stack)
    frames = HDF5Frames(path, "data", shape=stack.shape, dtype=stack.dtype)
    monkeypatch.setenv("TOMOLAB_FRAME_READER", "fast")
    with pytest.raises(ParameterError, match="TOMOLAB_FRAME_READER") as caught:
        frames[:, 0:2]
    assert "fast" in str(caught.value) and "nogil" in str(caught.value)


# ----------------------------------------------------------------------------- frame offsets

def _h5(path, stack, **layout):
    import h5py

    with h5py.File(path, "w") as f:
        if layout.pop("padding", False):  # something stored before the frames: other offsets
            f.create_dataset("before", data=np.arange(5000, dtype=np.int64))
        f.create_dataset("data", data=stack, **layout)
    return HDF5Frames(path, "data", shape=stack.shape, dtype=stack.dtype)


def test_the_offsets_travel_with_a_pickled_scan_to_the_same_file(tmp_path, stack):
    import pickle

    frames = _h5(tmp_path / "d.h5", stack, chunks=(1, 16, 20))
    offsets = frames._frame_offsets()
    state = frames.__getstate__()
    assert state["_offsets_note"][2] == (int(offsets[0]), int(offsets[1] - offsets[0]), 30)
    assert "_offsets_lock" not in state
    there = pickle.loads(pickle.dumps(frames))
    assert np.array_equal(there.__dict__["_offsets_in_file"], offsets)  # not looked up again
    out = np.empty((30, 4, 20), stack.dtype)
    there.read_into(slice(None), slice(6, 10), out)
    assert np.array_equal(out, stack[:, 6:10])
    fresh = pickle.loads(pickle.dumps(_h5(tmp_path / "e.h5", stack)))  # never looked up here
    assert "_offsets_in_file" not in fresh.__dict__
    assert np.array_equal(fresh[:, 2:3], stack[:, 2:3])


def test_offsets_of_a_file_that_changed_since_are_looked_up_again(tmp_path, stack):
    import pickle

    path = tmp_path / "d.h5"
    frames = _h5(path, stack)
    frames._frame_offsets()
    payload = pickle.dumps(frames)
    other = stack[::-1].copy()
    _h5(path, other, padding=True, chunks=(1, 16, 20))  # the same name, other bytes and offsets
    there = pickle.loads(payload)
    assert "_offsets_in_file" not in there.__dict__
    out = np.empty((30, 16, 20), stack.dtype)
    there.read_into(slice(None), slice(0, 16), out)
    assert np.array_equal(out, other)


def test_a_frame_never_written_is_read_as_its_fill_value(tmp_path, stack):
    import h5py

    path = tmp_path / "d.h5"
    with h5py.File(path, "w") as f:
        data = f.create_dataset("data", shape=stack.shape, dtype=stack.dtype, chunks=(1, 16, 20),
                                fillvalue=7)
        for k in range(stack.shape[0]):
            if k != 12:  # frame 12 never arrived: HDF5 stores no chunk for it
                data[k] = stack[k]
    frames = HDF5Frames(path, "data", shape=stack.shape, dtype=stack.dtype)
    assert frames._frame_offsets() is None  # not every frame has bytes in the file: h5py reads
    expected = stack.copy()
    expected[12] = 7
    assert np.array_equal(frames[:, 3:9], expected[:, 3:9])


def test_reader_threads_look_the_offsets_up_once(tmp_path, stack, monkeypatch):
    frames = _h5(tmp_path / "d.h5", stack, chunks=(1, 16, 20))
    looked = []
    real = HDF5Frames._look_up_offsets

    def counted(self):
        looked.append(threading.get_ident())
        return real(self)
    monkeypatch.setattr(HDF5Frames, "_look_up_offsets", counted)
    outs = [np.empty((10, 16, 20), stack.dtype) for _ in range(3)]
    threads = [threading.Thread(target=frames.read_into, args=(slice(10 * k, 10 * k + 10),
                                                                slice(0, 16), outs[k]))
               for k in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(looked) == 1
    assert np.array_equal(np.concatenate(outs), stack)


# ----------------------------------------------------------------------------- worker CPUs

def _parent_cpus():
    return os.sched_getaffinity(os.getppid()) if hasattr(os, "sched_getaffinity") else set()


needs_two_cpus = pytest.mark.skipif(len(_parent_cpus()) < 2,
                                    reason="needs sched_getaffinity and two CPUs to pin to one")


@needs_two_cpus
def test_a_task_thread_runs_on_the_nanny_cpus_and_gets_its_own_back():
    from tomolab.cluster import task_cpus

    seen = {}

    def pinned_thread():  # as dask-cuda pins a worker: one thread's set, inherited by its threads
        own = {min(os.sched_getaffinity(0))}
        os.sched_setaffinity(0, own)
        with task_cpus("pinned") as used:
            seen["pinned"] = (used, os.sched_getaffinity(0))
        with task_cpus("all") as used:
            child = {}
            t = threading.Thread(target=lambda: child.update(cpus=os.sched_getaffinity(0)))
            t.start()
            t.join()
            seen["all"] = (used, os.sched_getaffinity(0), child["cpus"])
        seen["after"] = os.sched_getaffinity(0)
        seen["own"] = own

    t = threading.Thread(target=pinned_thread)
    t.start()
    t.join()
    wide = os.sched_getaffinity(os.getppid()) | seen["own"]
    assert seen["pinned"] == (1, seen["own"])
    assert seen["all"] == (len(wide), wide, wide)  # the threads a task starts inherit the set
    assert seen["after"] == seen["own"]
    assert os.sched_getaffinity(0) != seen["own"]  # only that thread was pinned


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory, stack):
    path = tmp_path_factory.mktemp("scan") / "scan.h5"
    angles = np.linspace(0, np.pi, stack.shape[0], endpoint=False)
    tomolab.io.write_dxchange(path, stack, angles, np.full((2, 16, 20), 61000, np.uint16),
                              np.full((2, 16, 20), 100, np.uint16), chunks=(1, 16, 20))
    return path


@needs_two_cpus
def test_a_pinned_worker_reconstructs_the_same_on_all_cpus(scan_file, tmp_path, monkeypatch):
    reference = tomolab.reconstruct_to(tomolab.open_scan(scan_file), tmp_path / "ref.zarr",
                                       center=CENTER, slab_rows=4, backend="numpy").values
    with tomolab.cluster.start_cluster("local", workers=1, dashboard=False) as client:
        # pinned as dask-cuda's plugin pins a GPU worker: its event loop thread, before any task
        client.run(lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
        stats = {}
        pinned = tomolab.reconstruct_to(tomolab.open_scan(scan_file), tmp_path / "a.zarr",
                                        center=CENTER, slab_rows=4, backend="numpy",
                                        client=client, stats=stats)
        assert stats["worker_cpus"] == [1] and stats["cpus_choice"] == "pinned"
        monkeypatch.setenv("TOMOLAB_WORKER_CPUS", "all")
        stats = {}
        wide = tomolab.reconstruct_to(tomolab.open_scan(scan_file), tmp_path / "b.zarr",
                                      center=CENTER, slab_rows=4, backend="numpy", client=client,
                                      stats=stats)
        assert stats["worker_cpus"] == [len(_parent_cpus())] and stats["cpus_choice"] == "all"
        # the task gave its thread's set back: the next task is pinned again
        monkeypatch.setenv("TOMOLAB_WORKER_CPUS", "pinned")
        stats = {}
        tomolab.reconstruct_to(tomolab.open_scan(scan_file), tmp_path / "c.zarr", center=CENTER,
                               slab_rows=4, backend="numpy", client=client, stats=stats)
        assert stats["worker_cpus"] == [1]
    assert np.array_equal(pinned.values, reference)
    assert np.array_equal(wide.values, reference)


def test_an_unknown_cpu_choice_is_named_before_anything_is_written(scan_file, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("TOMOLAB_WORKER_CPUS", "gpu")
    with tomolab.cluster.start_cluster("local", workers=1, dashboard=False) as client, \
            pytest.raises(ParameterError, match="TOMOLAB_WORKER_CPUS") as caught:
        tomolab.reconstruct_to(tomolab.open_scan(scan_file), tmp_path / "v.zarr",
                               center=CENTER, backend="numpy", client=client)
    assert "pinned, all" in str(caught.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
