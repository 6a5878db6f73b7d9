"""The live frame sources against real publishers and writers.

A real ``tomolab stream-sim`` process publishes over ZeroMQ on loopback or
writes a growing HDF5 file with SWMR; the sources in this process receive or
follow it. Bad messages come through real sockets; a publisher or writer is
killed with SIGKILL; a file is deleted under the reader.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq  # tomolab[live], in tomolab[test]

import tomolab
from tomolab.errors import ParameterError
from tomolab.live import (
    EndOfScan,
    SwmrSource,
    ZmqSource,
    frame_message,
    parse_message,
    simulate_stream,
)

ROOT = Path(__file__).resolve().parents[1]
ROWS, COLS, ANGLES, DARKS, FLATS = 32, 48, 40, 3, 4


def _env():
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return dict(os.environ, PYTHONPATH=os.pathsep.join(paths))


def stream_sim(*args):
    """Start ``tomolab stream-sim`` and return it once it said where it sends, with that place."""
    proc = subprocess.Popen([sys.executable, "-m", "tomolab", "stream-sim", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
    line = proc.stderr.readline()
    if "sending over" not in line:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError(f"stream-sim did not start: {line}{err}")
    return proc, line.split(" to ", 1)[1].split(" at ")[0]


@pytest.fixture
def processes():
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)


@pytest.fixture(scope="module")
def scan_file(tmp_path_factory):
    """A small simulated scan on disk (32 x 48 frames) that the publishers replay."""
    projections, angles, flats, darks, _ = tomolab.data.simulate_arrays(
        COLS, n_rows=ROWS, n_angles=ANGLES, seed=3)
    path = tmp_path_factory.mktemp("live") / "scan.h5"
    tomolab.io.write_dxchange(path, projections, angles, flats[:FLATS], darks[:DARKS])
    return path


def collect(source, timeout=60.0, frames=None):
    """Every frame until the end of the scan, how often nothing came in 0.1 s meanwhile, and why
    it ended."""
    frames, quiet = frames if frames is not None else [], 0
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            frame = source.receive(0.1)
        except EndOfScan as end:
            return frames, quiet, end.reason
        if frame is None:
            quiet += bool(frames)
        else:
            frames.append(frame)
    raise AssertionError(f"no end after {timeout} s ({len(frames)} frames, state {source.state})")


def receive_until(source, count, timeout=60.0):
    """The frames received until ``count`` came (an error after ``timeout`` seconds)."""
    frames = []
    deadline = time.monotonic() + timeout
    while len(frames) < count:
        assert time.monotonic() < deadline, f"{len(frames)} frames in {timeout} s"
        frames += filter(None, [source.receive(0.5)])
    return frames


def assert_frames_equal_file(frames, path):
    scan = tomolab.open_scan(path)
    for kind, var in (("dark", "darks"), ("flat", "flats"), ("projection", "projections")):
        got = [f for f in frames if f.kind == kind]
        assert [f.index for f in got] == list(range(scan.sizes[var[:-1] if var != "projections"
                                                                else "angle"])), kind
        expected = scan[var].values
        assert all(f.data.dtype == expected.dtype for f in got)
        np.testing.assert_array_equal(np.stack([f.data for f in got]), expected)
    angles = [f.angle for f in frames if f.kind == "projection"]
    np.testing.assert_allclose(angles, scan.angle.values, rtol=0, atol=1e-12)
    kinds = [f.kind for f in frames]  # darks, then flats, then projections
    assert kinds == sorted(kinds, key=["dark", "flat", "projection"].index)


def free_address():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{s.getsockname()[1]}"


# --- ZeroMQ --------------------------------------------------------------------------------

@pytest.mark.parametrize("pattern, receiver_binds", [("pull", False), ("pull", True), ("sub", False)],
                         ids=["pull-connects", "pull-binds", "sub"])
def test_zmq_source_receives_every_frame_of_a_publisher_process(scan_file, processes, pattern,
                                                                receiver_binds):
    common = ["--scan", scan_file, "--rate", 200, "--timeout", 30]
    if receiver_binds:
        source = ZmqSource("tcp://127.0.0.1:*", bind=True, timeout_lost=20)
        proc, _ = stream_sim(source.address, "--connect", *common)
    else:
        proc, address = stream_sim("tcp://127.0.0.1:*", "--pattern",
                                   "pub" if pattern == "sub" else "push", *common)
        source = ZmqSource(address, pattern=pattern, timeout_lost=20)
    processes.append(proc)
    with source:
        frames, _, _ = collect(source)
        assert source.state == "ended" and source.errors == []
        assert source.duplicates == source.out_of_order == 0
    assert proc.wait(30) == 0
    assert f"{DARKS + FLATS + ANGLES} frames" in proc.stdout.read()
    assert_frames_equal_file(frames, scan_file)


def _send(push, *parts):
    push.send_multipart([p.encode() if isinstance(p, str) else p for p in parts])


def _header(**changes):
    header = {"type": "projection", "index": 0, "angle": 0.1, "shape": [2, 3], "dtype": "uint16"}
    header.update(changes)
    return json.dumps({k: v for k, v in header.items() if v is not ...})


PIXELS = np.arange(6, dtype=np.uint16).tobytes()
#: a malformed message, and what its error must name
MALFORMED = {
    "not json": (["{type: projection", PIXELS], "not JSON"),
    "not utf-8": ([b"\xff\xfe{}", PIXELS], "not UTF-8"),
    "not an object": (["[1, 2]", PIXELS], "not a JSON object"),
    "no type": ([_header(type=...), PIXELS], "header['type']"),
    "unknown type": ([_header(type="white"), PIXELS], "header['type']='white'"),
    "no index": ([_header(index=...), PIXELS], "header['index']"),
    "negative index": ([_header(index=-1), PIXELS], "header['index']=-1"),
    "index not a number": ([_header(index="3"), PIXELS], "header['index']='3'"),
    "no angle": ([_header(angle=...), PIXELS], "header['angle']"),
    "angle nan": ([_header(angle=math.nan), PIXELS], "header['angle']=nan"),
    "angle text": ([_header(angle="0.1"), PIXELS], "header['angle']='0.1'"),
    "no shape": ([_header(shape=...), PIXELS], "header['shape']"),
    "shape 1-d": ([_header(shape=[6]), PIXELS], "header['shape']=[6]"),
    "shape zero": ([_header(shape=[0, 3]), PIXELS], "header['shape']=[0, 3]"),
    "no dtype": ([_header(dtype=...), PIXELS], "header['dtype']"),
    "unknown dtype": ([_header(dtype="uint17"), PIXELS], "header['dtype']='uint17'"),
    "object dtype": ([_header(dtype="object"), PIXELS], "header['dtype']='object'"),
    "bytes short": ([_header(), PIXELS[:-2]], "pixels=10"),
    "dtype mismatch": ([_header(dtype="uint8"), PIXELS], "pixels=12"),
    "no pixels": ([_header()], "message=1"),
    "three parts": ([_header(), PIXELS, PIXELS], "message=3"),
    "end with pixels": ([json.dumps({"type": "end"}), PIXELS], "end message"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_parse_message_names_the_field_the_value_and_the_fix(case):
    parts, named = MALFORMED[case]
    parts = [p.encode() if isinstance(p, str) else p for p in parts]
    with pytest.raises(ParameterError) as info:
        parse_message(parts)
    message = str(info.value)
    assert named in message and "; fix: " in message and "\n" not in message, message


def test_parse_message_takes_zero_copy_buffers_and_the_end():
    data = np.arange(6, dtype=">u2").reshape(2, 3)  # big-endian: copied into native order
    frame = parse_message([_header(dtype=">u2").encode(), data.tobytes()])
    assert frame.data.dtype == np.dtype("uint16") and frame.data.tolist() == data.tolist()
    native = memoryview(PIXELS)
    frame = parse_message([_header().encode(), native])
    assert np.shares_memory(frame.data, np.frombuffer(PIXELS, np.uint16))  # no copy
    assert not frame.data.flags.writeable
    flat = parse_message([_header(type="flat", angle=...).encode(), PIXELS])
    assert flat.kind == "flat" and flat.angle is None
    for end in ([b'{"type": "end"}'], [b'{"type": "end", "index": 4}', b""]):
        with pytest.raises(EndOfScan):
            parse_message(end)


def test_malformed_messages_are_recorded_and_later_frames_still_come():
    context = zmq.Context()
    with ZmqSource("tcp://127.0.0.1:*", bind=True, timeout_lost=20) as source:
        push = context.socket(zmq.PUSH)
        push.connect(source.address)
        _send(push, _header(index=0), PIXELS)
        for parts, _ in MALFORMED.values():
            _send(push, *parts)
        _send(push, _header(index=1), PIXELS)
        _send(push, json.dumps({"type": "end", "index": 2}))
        frames, _, _ = collect(source, timeout=20)
        push.close()
    context.term()
    assert [f.index for f in frames] == [0, 1] and source.state == "ended"
    assert source.error_count == len(MALFORMED) == len(source.errors)
    for n, ((_, named), error) in enumerate(zip(MALFORMED.values(), source.errors), start=2):
        assert error.startswith(f"message {n}: ") and named in error, error


def test_duplicates_and_out_of_order_frames_pass_through_and_are_counted():
    context = zmq.Context()
    indices = [0, 1, 1, 3, 2, 4, 4]
    with ZmqSource("tcp://127.0.0.1:*", bind=True) as source:
        push = context.socket(zmq.PUSH)
        push.connect(source.address)
        for i in indices:
            push.send_multipart(frame_message("projection", i, np.full((2, 3), i, np.uint16),
                                              angle=i * 0.1))
        push.send_multipart(frame_message("end", 5))
        frames, _, _ = collect(source, timeout=20)
        push.close()
    context.term()
    assert [f.index for f in frames] == indices
    assert [int(f.data[0, 0]) for f in frames] == indices
    assert source.duplicates == 2 and source.out_of_order == 1 and source.frames == len(indices)
    assert source.state == "ended" and source.errors == []


def test_sub_with_a_topic_takes_only_its_messages():
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    with ZmqSource(f"tcp://127.0.0.1:{port}", pattern="sub", topic="cam1") as source:
        message = frame_message("flat", 0, np.ones((2, 3), np.uint8))
        deadline = time.monotonic() + 20
        while source.frames == 0 and time.monotonic() < deadline:  # until the subscription took
            pub.send_multipart([b"cam2", *frame_message("dark", 9, np.zeros((2, 3), np.uint8))])
            pub.send_multipart([b"cam1", *message])
            source.receive(0.05)
        pub.send_multipart([b"cam1", *frame_message("end", 1)])
        rest, _, _ = collect(source, timeout=20)
    pub.close()
    context.term()
    assert source.frames >= 1 and all(f.kind == "flat" for f in rest) and source.errors == []


@pytest.mark.parametrize("monitor, receiver_binds", [(True, False), (True, True), (False, False)],
                         ids=["monitor", "monitor-receiver-binds", "silence"])
def test_a_killed_publisher_is_lost(processes, monitor, receiver_binds):
    # with the monitor, the closed connection is seen first, well before the silence timeout
    options = {"timeout_lost": 5.0 if monitor else 1.5, "monitor": monitor}
    simulated = ["--size", COLS, "--rows", ROWS, "--angles", 600, "--rate", 100]
    if receiver_binds:
        source = ZmqSource("tcp://127.0.0.1:*", bind=True, **options)
        proc, _ = stream_sim(source.address, "--connect", *simulated)
    else:
        proc, address = stream_sim("tcp://127.0.0.1:*", *simulated)
        source = ZmqSource(address, **options)
    processes.append(proc)
    with source:
        receive_until(source, 20)
        os.kill(proc.pid, signal.SIGKILL)
        _, _, reason = collect(source, timeout=30)
        assert source.state == "lost"
    expected = "closed its connection" if monitor else "no frame for 1.5 s"
    assert expected in reason, reason


def test_a_stalled_publisher_that_resumes_is_not_lost(scan_file, processes):
    proc, address = stream_sim("tcp://127.0.0.1:*", "--scan", scan_file, "--rate", 200,
                               "--pause", "20:1.5")
    processes.append(proc)
    with ZmqSource(address, timeout_lost=10) as source:
        frames, quiet, _ = collect(source)
    assert quiet >= 5 and source.state == "ended"  # it waited through the stall
    assert_frames_equal_file(frames, scan_file)


@pytest.mark.parametrize("options, named", [
    ({"address": "localhost:5555"}, "address='localhost:5555'"),
    ({"pattern": "req"}, "pattern='req'"),
    ({"topic": b"cam1"}, "topic=b'cam1'"),
    ({"timeout_lost": 0}, "timeout_lost=0"),
    ({"high_water_mark": -1}, "high_water_mark=-1"),
    ({"address": "tcp://256.1.1.1:1", "bind": True}, "address='tcp://256.1.1.1:1'"),
])
def test_zmq_source_refuses_bad_options(options, named):
    options = {"address": "tcp://127.0.0.1:5555", **options}
    with pytest.raises(ParameterError, match="fix: ") as info:
        ZmqSource(options.pop("address"), **options)
    assert named in str(info.value)


# --- SWMR ----------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["dxchange", "nxtomo"])
def test_swmr_source_follows_a_file_a_writer_process_grows(tmp_path, scan_file, processes,
                                                           layout):
    path = tmp_path / "growing.h5"
    source = SwmrSource(path, timeout_lost=20)  # before the file exists: it waits for it
    # the writer stalls for 2 s after 5 frames: the first frames are read while it is still at it
    proc, _ = stream_sim(path, "--scan", scan_file, "--rate", 200, "--layout", layout,
                         "--pause", "5:2")
    processes.append(proc)
    with source:
        first = receive_until(source, 1)[0]
        writing = proc.poll() is None
        frames, _, reason = collect(source)
        frames.insert(0, first)
    assert writing, "the writer had finished before the first frame: nothing was followed"
    assert source.state == "ended" and source.layout == layout and source.errors == []
    assert "scan_complete" in reason or "end_time" in reason, reason
    assert proc.wait(30) == 0
    assert_frames_equal_file(frames, path)  # the final file's content ...
    assert_frames_equal_file(frames, scan_file)  # ... which is the replayed scan


def test_swmr_source_waits_through_a_stalled_writer(tmp_path, scan_file, processes):
    path = tmp_path / "stalls.h5"
    proc, _ = stream_sim(path, "--scan", scan_file, "--rate", 200, "--pause", "25:1.5")
    processes.append(proc)
    with SwmrSource(path, timeout_lost=10) as source:
        frames, quiet, _ = collect(source)
    assert quiet >= 5 and source.state == "ended"
    assert_frames_equal_file(frames, scan_file)


def test_swmr_writer_killed_is_lost_after_the_timeout(tmp_path, processes):
    path = tmp_path / "crash.h5"
    proc, _ = stream_sim(path, "--size", COLS, "--rows", ROWS, "--angles", 600, "--rate", 100)
    processes.append(proc)
    with SwmrSource(path, timeout_lost=1.5) as source:
        frames = receive_until(source, 30)  # 10 darks, 10 flats, then projections
        os.kill(proc.pid, signal.SIGKILL)
        frames, _, reason = collect(source, frames=frames)
    assert source.state == "lost"
    assert "no frame for 1.5 s" in reason and "h5clear" in reason, reason
    projections = [f.index for f in frames if f.kind == "projection"]
    assert projections == list(range(len(projections))) and len(projections) >= 10


def test_swmr_writer_that_closes_without_the_end_mark_ends_the_scan(tmp_path, processes):
    path = tmp_path / "cut.h5"
    script = ("import sys\nfrom tomolab.live import simulate_stream\n"
              "simulate_stream(sys.argv[1], transport='swmr', rate=100, stop_after=25, "
              "scan={'size': 48, 'n_rows': 8, 'n_angles': 40},"
              " on_ready=lambda where: print('sending over swmr to', where, file=sys.stderr, flush=True))")
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], stderr=subprocess.PIPE,
                            text=True, env=_env())
    processes.append(proc)
    assert "sending over" in proc.stderr.readline()
    with SwmrSource(path, timeout_lost=20) as source:
        frames, _, reason = collect(source)
    assert source.state == "ended" and "without the end mark" in reason, reason
    assert len(frames) == 25 and proc.wait(30) == 0


def test_swmr_file_that_vanishes_is_lost(tmp_path, processes):
    path = tmp_path / "vanishes.h5"
    proc, _ = stream_sim(path, "--size", COLS, "--rows", ROWS, "--angles", 600, "--rate", 100)
    processes.append(proc)
    with SwmrSource(path, timeout_lost=60) as source:
        receive_until(source, 5)
        path.unlink()
        _, _, reason = collect(source, timeout=30)
    assert source.state == "lost" and "vanished" in reason, reason


def test_swmr_source_reads_a_finished_file(scan_file):
    with SwmrSource(scan_file) as source:
        frames, _, reason = collect(source)
    assert source.state == "ended" and "complete" in reason, reason
    assert_frames_equal_file(frames, scan_file)


def test_swmr_source_refuses_a_file_in_no_layout(tmp_path):
    import h5py

    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["notes"] = [1, 2]
    with pytest.raises(tomolab.ScanFormatError, match="no known scan layout"):
        SwmrSource(path)
    with pytest.raises(ParameterError, match="folder does not exist"):
        SwmrSource(tmp_path / "missing" / "scan.h5")


def test_simulate_stream_into_a_file_reads_back_as_a_scan(tmp_path):
    path = tmp_path / "sim.nx"
    stats = simulate_stream(path, transport="swmr", layout="nxtomo", rate=None,
                            scan={"size": COLS, "n_rows": 4, "n_angles": 12, "seed": 1})
    scan = tomolab.open_scan(path)
    reference = tomolab.data.simulate_scan(COLS, n_rows=4, n_angles=12, seed=1)
    np.testing.assert_array_equal(scan.projections.values, reference.projections.values)
    np.testing.assert_array_equal(scan.flats.values, reference.flats.values)
    np.testing.assert_allclose(scan.angle.values, reference.angle.values, atol=1e-12)
    assert stats["frames"] == 12 + scan.sizes["flat"] + scan.sizes["dark"]
    assert scan.attrs["true_center"] == reference.attrs["true_center"]


@pytest.mark.parametrize("kind", ["zmq", "swmr"])
def test_close_from_another_thread_ends_a_waiting_receive(tmp_path, kind):
    import threading

    source = (ZmqSource("tcp://127.0.0.1:*", bind=True) if kind == "zmq"
              else SwmrSource(tmp_path / "not-yet.h5"))
    closer = threading.Timer(0.3, source.close)
    closer.start()
    started = time.monotonic()
    assert source.receive(120.0) is None
    assert time.monotonic() - started < 60  # it returned when closed, not at its timeout
    closer.join()
    with pytest.raises(EndOfScan, match="closed"):
        source.receive(0.1)
    assert source.state == "ended"
    if kind == "zmq":
        assert source._socket.closed
    else:
        assert source._file is None


# --- the command line ----------------------------------------------------------------------

@pytest.mark.parametrize("args, named", [
    (["tcp://127.0.0.1:*", "--rate", "-1"], "--rate=-1.0"),
    (["out.h5", "--transport", "zmq"], "not a ZeroMQ address"),
    (["tcp://127.0.0.1:*", "--scan", "missing.h5"], "missing.h5"),
    (["tcp://127.0.0.1:*", "--pause", "soon"], "--pause='soon'"),
    (["tcp://127.0.0.1:*", "--size", "5"], "--size=5"),
    (["tcp://127.0.0.1:*", "--darks", "999", "--size", "32"], "--darks=999"),
    (["tcp://127.0.0.1:*", "--rate", "fast"], "--rate"),
    (["existing.h5"], "exists"),
])
def test_stream_sim_refuses_bad_arguments_in_one_line(tmp_path, args, named):
    (tmp_path / "existing.h5").write_bytes(b"")
    result = subprocess.run([sys.executable, "-m", "tomolab", "stream-sim", *args, "--timeout", "2"],
                            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
                            check=False)
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tomolab"), result.stderr
    assert named in lines[0] and "fix" in lines[0], lines[0]
    assert not (tmp_path / "out.h5").exists()
