"""How :func:`tomolab.engine.reconstruct_rows` plans the GPU stream, run on the CPU.

The planning (slab height from device and pinned host memory, the even slabs of gridrec, the
stream options, whether a 16-bit output is encoded on the device) is host code ahead of any
CuPy call. Here it runs for real with ``backend="cupy"``; only the two things that need a GPU
stand in: the memory budget (``batch_size``, which asks the device for its free memory) answers
as a card would, and the GPU stream (``_stream_rows_gpu``) records what it was handed instead
of running. With default options the plan must be the measured one: pinned memory of two raw
input slabs and two float32 output slabs per row, no encoding on the device, the measured
:data:`~tomolab.engine.stream.CURRENT` options.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import tomolab
from tomolab.engine import pipeline
from tomolab.engine.stream import CANDIDATE, CURRENT, StreamOptions
from tomolab.recon import ALGORITHMS, AUTO
from tomolab.testing import gpu_test


@pytest.fixture(scope="module")
def scan():
    return tomolab.data.simulate_scan(32, n_rows=9, n_angles=30, seed=1)


@pytest.fixture
def plan_of(monkeypatch):
    """``plan_of(scan, **options)``: what the GPU stream of ``reconstruct_rows`` is handed."""
    asked = {}

    def budget(bytes_per_item, *, backend, count=None, **_):
        # a card and a host with room for 1000 rows (so the caps and rules below decide)
        asked.setdefault(backend, []).append(bytes_per_item)
        return min(count or 10 ** 6, 1000)

    def stream(scan, rows, out, sink, **kwargs):
        asked["stream"] = dict(kwargs, rows=rows, out=out, sink=sink)

    monkeypatch.setattr(pipeline, "batch_size", budget)
    monkeypatch.setattr(pipeline, "_stream_rows_gpu", stream)
    monkeypatch.delenv("TOMOLAB_STREAM", raising=False)

    def run(scan, *, algorithm="gridrec", rows=None, **options):
        asked.clear()
        rows = range(scan.sizes["row"]) if rows is None else rows
        pipeline.reconstruct_rows(scan, rows, center=15.5, algorithm=ALGORITHMS[algorithm],
                                  backend="cupy", size=32, **options)
        return asked
    return run


def _pinned_row(scan, *, out_buffers=2, out_itemsize=4, size=32):
    raw = scan.sizes["angle"] * scan.sizes["col"] * scan["projections"].dtype.itemsize
    return 2 * raw + out_buffers * size * size * out_itemsize


def test_the_default_gpu_algorithm_pairs_its_slices():
    assert AUTO["cupy"] == "gridrec" and ALGORITHMS["gridrec"].pairs_slices
    assert not getattr(ALGORITHMS["fbp"], "pairs_slices", False)


def test_default_options_plan_the_measured_stream(scan, plan_of):
    asked = plan_of(scan)
    stream = asked["stream"]
    assert stream["options"] == CURRENT == StreamOptions()
    assert stream["encode_as"] is None
    assert isinstance(stream["out"], np.ndarray) and stream["out"].dtype == np.float32
    # the host budget was asked for the measured pinned buffers: 2 raw slabs, 2 float32 slabs
    assert asked["numpy"] == [_pinned_row(scan)]
    # 9 rows, room for all: the tallest even height (gridrec's pairs), one slab of 8 and one of 1
    assert stream["height"] == 8


@pytest.mark.parametrize("max_height, expected", [(1, 1), (2, 2), (3, 2), (5, 4), (32, 8)])
def test_gridrec_slabs_are_even_on_the_gpu(scan, plan_of, max_height, expected):
    assert plan_of(scan, max_height=max_height)["stream"]["height"] == expected


@pytest.mark.parametrize("max_height", [3, 5])
def test_fbp_slabs_are_left_as_asked(scan, plan_of, max_height):
    assert plan_of(scan, algorithm="fbp", max_height=max_height)["stream"]["height"] == max_height


def test_the_gpu_slab_height_is_capped(plan_of):
    tall = tomolab.data.simulate_scan(16, n_rows=40, n_angles=12, seed=1)
    assert plan_of(tall)["stream"]["height"] == pipeline.MAX_GPU_SLAB_ROWS


@pytest.mark.parametrize("store_as, encoded", [
    (("uint16", {"scale_factor": 1e-3, "add_offset": -1.0}), True),
    (("float16", {}), True),
    (("float32", {}), False),
    (None, False),
])
def test_a_16_bit_output_is_encoded_on_the_device_only_when_asked(scan, plan_of, store_as,
                                                                  encoded):
    def sink(start, stop, block, *extras):
        pass

    current = plan_of(scan, sink=sink, store_as=store_as)
    assert current["stream"]["encode_as"] is None  # the default never encodes on the device
    candidate = plan_of(scan, sink=sink, store_as=store_as, stream_options=CANDIDATE)
    assert candidate["stream"]["encode_as"] == (store_as if encoded else None)
    assert candidate["numpy"] == [_pinned_row(scan, out_buffers=CANDIDATE.out_buffers,
                                              out_itemsize=2 if encoded else 4)]


def test_without_a_sink_nothing_is_encoded_on_the_device(scan, plan_of):
    asked = plan_of(scan, store_as=("uint16", {"scale_factor": 1.0, "add_offset": 0.0}),
                    stream_options=CANDIDATE)
    assert asked["stream"]["encode_as"] is None and asked["stream"]["out"].dtype == np.float32


def test_the_environment_selects_the_stream_options(scan, plan_of, monkeypatch):
    monkeypatch.setenv("TOMOLAB_STREAM", "candidate")
    assert plan_of(scan)["stream"]["options"] == CANDIDATE
    monkeypatch.setenv("TOMOLAB_STREAM", "write_threads=3")
    assert plan_of(scan)["stream"]["options"] == StreamOptions(write_threads=3)


@gpu_test
def test_the_default_gpu_stream_runs_the_measured_way():
    """On the card: ``auto`` is gridrec, in even slabs, with the measured host side (nothing
    encoded or prefaulted on the device, 8 copy threads at most), and the CPU's slices."""
    from tomolab.api import plan_reconstruction

    scan = tomolab.data.simulate_scan(64, n_rows=9, n_angles=90, seed=3)
    center = scan.attrs["true_center"]
    plan = plan_reconstruction(scan, center=center, backend="cupy")
    assert plan.algorithm == "gridrec"
    stats: dict = {}
    volume = plan.run(stats=stats)
    assert stats["encoded_on_device"] is False and stats["slices_prefaulted"] == 0
    assert stats["write_threads"] == min(8, os.cpu_count() or 1)
    assert (stats["height"], stats["slabs"]) == (8, 2)
    assert stats["first_write"] >= 0 and 0 <= stats["pinned"] <= stats["setup"]
    cpu = plan_reconstruction(scan, center=center, backend="numpy").run()
    assert np.linalg.norm(volume - cpu) / np.linalg.norm(cpu) < 1e-5
