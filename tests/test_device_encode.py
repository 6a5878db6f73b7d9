"""16-bit outputs encoded on the GPU before the download, and the host side of the GPU stream.

The GPU encoders must store what the host encoder stores, bit for bit (a resumed or clustered
run may mix the two), and count clipped values per row exactly. Here (no GPU) the kernels are
compiled with nvcc where it is on PATH and their index logic is run in a NumPy emulation; on a
GPU the same checks run on the device.
"""

from __future__ import annotations

import shutil
import subprocess
import threading

import numpy as np
import pytest
import zarr

import tomolab
from tomolab.api.volume import _SlabAssembler
from tomolab.engine.stream import CANDIDATE, CURRENT, StreamOptions, populate
from tomolab.errors import Cancelled, ParameterError
from tomolab.io import encode_rows, open_sink, uint16_encoding
from tomolab.io._encode import _CUDA_SOURCE, encode, launch_shape
from tomolab.testing import gpu_test

ENCODING = uint16_encoding(-1.0, 3.0)


def _awkward_values(rng, shape):
    """Values that test the rounding and clipping: halfway steps, edges, NaN, inf, float16 limits."""
    values = rng.normal(1.0, 1.5, size=shape).astype(np.float32)
    flat = values.reshape(-1)
    scale, offset = ENCODING["scale_factor"], ENCODING["add_offset"]
    k = rng.integers(0, 65535, size=flat.size // 4)
    flat[: k.size] = ((k + 0.5) * scale + offset).astype(np.float32)  # about halfway between steps
    specials = np.array([np.nan, np.inf, -np.inf, -1.0, 3.0, 3.0001, -1.0001, 65504.0, 65519.0,
                         65520.0, -65504.0, -7e4, 7e4, 6e-8, 3e-8, -6e-8, 1e-45, 0.0, -0.0],
                        np.float32)
    n = min(specials.size, flat.size)
    flat[-n:] = specials[:n]
    return values


def _host_by_rows(values, dtype, encoding):
    rows = [encode(row, dtype, encoding) for row in values]
    return np.stack([r for r, _ in rows]), np.array([c for _, c in rows])


@pytest.mark.parametrize("dtype", ["uint16", "float16"])
def test_encode_rows_on_the_host_is_encode_row_by_row(dtype):
    values = _awkward_values(np.random.default_rng(0), (5, 33, 29))
    stored, clipped = encode_rows(values, dtype, ENCODING)
    whole, count = encode(values, dtype, ENCODING)
    assert stored.dtype == np.dtype(dtype) and clipped.dtype == np.int64
    np.testing.assert_array_equal(stored.view(np.uint16), whole.view(np.uint16))
    assert clipped.sum() == count > 0
    np.testing.assert_array_equal(clipped, _host_by_rows(values, dtype, ENCODING)[1])


def test_float16_stores_nan_as_zero_and_clips_infinities():
    stored, clipped = encode(np.array([np.nan, np.inf, -np.inf, 1.5], np.float32), "float16")
    assert stored.tolist() == [0.0, 65504.0, -65504.0, 1.5] and clipped == 3


def _emulate(values, dtype, encoding, *, block, per_thread):
    """The kernels of ``_CUDA_SOURCE`` run thread by thread in NumPy: the same indices, the
    same arithmetic, the warp sums added to their row's counter."""
    n_rows = values.shape[0]
    plane = values[0].size
    v = values.reshape(n_rows, plane)
    out = np.zeros((n_rows, plane), np.uint16)
    writes = np.zeros((n_rows, plane), np.int64)
    counters = np.zeros(n_rows, np.uint64)
    blocks, threads = launch_shape(plane, block=block, per_thread=per_thread)
    stride = blocks * threads
    for row in range(n_rows):                      # blockIdx.y
        for bx in range(blocks):                   # blockIdx.x
            counts = np.zeros(threads, np.uint64)  # one per threadIdx.x
            for tx in range(threads):
                i = bx * threads + tx
                while i < plane:
                    x = v[row, i]
                    if dtype == "uint16":
                        q = np.rint((np.float64(x) - encoding["add_offset"])
                                    / encoding["scale_factor"])
                        if 0.0 <= q <= 65535.0:
                            out[row, i] = np.uint16(q)
                        else:
                            out[row, i] = 65535 if q > 65535.0 else 0
                            counts[tx] += 1
                    else:
                        if not abs(x) <= np.float32(65504.0):
                            x = np.float32(0.0) if np.isnan(x) else np.float32(
                                65504.0 if x > 0 else -65504.0)
                            counts[tx] += 1
                        out[row, i] = np.float16(x).view(np.uint16)  # round to nearest even
                    writes[row, i] += 1
                    i += stride
            for warp in range(0, threads, 32):     # lane 0 adds the warp's sum
                total = counts[warp:warp + 32].sum()
                if total:
                    counters[row] += total
    return out.reshape(values.shape), writes, counters.astype(np.int64)


@pytest.mark.parametrize("dtype", ["uint16", "float16"])
@pytest.mark.parametrize("shape", [(3, 17, 61), (2, 1, 11), (1, 40, 40)])
def test_kernel_index_logic_in_an_emulation_matches_the_host(dtype, shape):
    values = _awkward_values(np.random.default_rng(1), shape)
    # small blocks so that the grid-stride loop turns several times
    out, writes, counts = _emulate(values, dtype, ENCODING, block=64, per_thread=3)
    stored, clipped = _host_by_rows(values, dtype, ENCODING)
    assert (writes == 1).all()  # every value written, and once
    np.testing.assert_array_equal(out, stored.view(np.uint16))
    np.testing.assert_array_equal(counts, clipped)


def test_launch_shape_covers_every_value():
    for plane in (1, 255, 256, 1024, 1025, 2048 * 2048, 10 ** 9):
        blocks, threads = launch_shape(plane)
        assert threads % 32 == 0 and 1 <= blocks <= 2 ** 31 - 1
        assert blocks * threads * 4 >= plane or blocks == 2 ** 31 - 1


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH")
def test_kernels_compile_for_the_h100(tmp_path):
    source = tmp_path / "encode.cu"
    source.write_text(_CUDA_SOURCE)
    done = subprocess.run(["nvcc", "-arch=sm_90", "-c", str(source), "-o",
                           str(tmp_path / "encode.o")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stderr


@gpu_test
@pytest.mark.parametrize("dtype", ["uint16", "float16"])
@pytest.mark.parametrize("shape", [(3, 17, 61), (4, 256, 256), (2, 1031, 1031)])
def test_gpu_encoders_store_what_the_host_stores(dtype, shape):
    import cupy

    values = _awkward_values(np.random.default_rng(2), shape)
    stored, clipped = encode_rows(cupy.asarray(values), dtype, ENCODING)
    host, counts = _host_by_rows(values, dtype, ENCODING)
    assert stored.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(cupy.asnumpy(stored).view(np.uint16), host.view(np.uint16))
    np.testing.assert_array_equal(cupy.asnumpy(clipped), counts)


@gpu_test
def test_gpu_float16_rounds_every_halfway_value_as_numpy():
    import cupy

    halves = np.arange(0, 0x7BFF, dtype=np.uint16).view(np.float16).astype(np.float32)
    nexts = (np.arange(1, 0x7C00, dtype=np.uint16).view(np.float16)).astype(np.float32)
    middle = ((halves.astype(np.float64) + nexts) / 2).astype(np.float32)  # exact in float32
    values = np.concatenate([middle, np.nextafter(middle, 0), np.nextafter(middle, np.inf)])
    values = np.concatenate([values, -values])[None]
    stored, _ = encode_rows(cupy.asarray(values), "float16")
    np.testing.assert_array_equal(cupy.asnumpy(stored).view(np.uint16),
                                  values.astype(np.float16).view(np.uint16))


# ----------------------------------------------------------------------------- the sink side

def _coords(shape):
    return {"z": ("z", np.arange(float(shape[0])), {}), "y": ("y", np.arange(float(shape[1])), {}),
            "x": ("x", np.arange(float(shape[2])), {}), "row": ("z", np.arange(shape[0]), {})}


@pytest.mark.parametrize("dtype", ["uint16", "float16"])
def test_slabs_encoded_before_the_sink_store_what_the_sink_would(tmp_path, dtype):
    """Stream slabs of 3 rows into output slabs of 4: the stored values and the clipped counts are
    those of float32 slabs encoded by the sink."""
    shape = (11, 16, 16)
    values = _awkward_values(np.random.default_rng(3), shape) * np.float32(
        1.0 if dtype == "uint16" else 3e4)
    encoding = ENCODING if dtype == "uint16" else None
    outputs = {}
    for how in ("host", "encoded"):
        path = tmp_path / f"{how}.zarr"
        sink = open_sink(path, shape=shape, coords=_coords(shape), attrs={}, slab_rows=4,
                         fingerprint="f", dtype=dtype, encoding=encoding)
        assembler = _SlabAssembler(sink, list(range(len(sink.slabs))), 0, shape[1])
        assert assembler.store_as() == (dtype, dict(sink.encoding))
        for start in range(0, shape[0], 3):
            block = values[start:start + 3]
            if how == "host":
                assembler(start, start + block.shape[0], block)
            else:
                assembler(start, start + block.shape[0], *encode_rows(block, dtype, encoding))
        sink.finish()
        outputs[how] = zarr.open_group(str(path), mode="r")
    host, encoded = outputs["host"], outputs["encoded"]
    np.testing.assert_array_equal(encoded["volume"][...].view(np.uint16),
                                  host["volume"][...].view(np.uint16))
    assert encoded.attrs["clipped_voxels"] == host.attrs["clipped_voxels"] == encode(
        values, dtype, encoding)[1] > 0


def test_an_encoded_slab_of_another_dtype_is_refused(tmp_path):
    shape = (4, 8, 8)
    sink = open_sink(tmp_path / "v.zarr", shape=shape, coords=_coords(shape), attrs={},
                     slab_rows=4, fingerprint="f", dtype="uint16", encoding=ENCODING)
    try:
        with pytest.raises(ParameterError, match="must be uint16"):
            sink.write(0, np.zeros(shape, np.float16), clipped=0)
        writer = sink.region_writer()
        with pytest.raises(ParameterError, match="must be uint16"):
            writer.write(0, np.zeros(shape, np.float32), clipped=0)
        writer.write(0, np.full(shape, 7, np.uint16), clipped=5)
        assert sink.sync_done() == {0}
    finally:
        sink.close()


# ----------------------------------------------------------------------------- the stream's host side

def test_stream_options_from_their_text(monkeypatch):
    assert StreamOptions.parse("current") == CURRENT == StreamOptions()
    assert StreamOptions.parse(" candidate ") == CANDIDATE
    assert StreamOptions.parse("encode_on_device=1,out_buffers=3") == StreamOptions(
        encode_on_device=True, out_buffers=3)
    monkeypatch.setenv("TOMOLAB_STREAM", "write_threads=4")
    assert StreamOptions.from_environment().write_threads == 4
    for text, message in (("threads=4", "unknown stream option"),
                          ("prefault=yes", "0 or 1"), ("out_buffers=0", "positive integer")):
        with pytest.raises(ParameterError, match=message) as error:
            StreamOptions.parse(text)
        assert "TOMOLAB_STREAM" in str(error.value)


def test_populate_keeps_what_another_thread_writes_meanwhile():
    """Pages faulted in while a writer fills them: nothing the writer wrote is lost."""
    volume = np.empty((64, 512, 512), np.float32)
    supported = []

    def fault():
        for start in range(0, 64, 4):
            supported.append(populate(volume, start, start + 4))

    def write():
        for z in range(64):
            volume[z] = z

    threads = [threading.Thread(target=fault), threading.Thread(target=write)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_array_equal(volume[:, ::97, ::89],
                                  np.broadcast_to(np.arange(64, dtype=np.float32)[:, None, None],
                                                  volume[:, ::97, ::89].shape))
    assert len(supported) == 16


def test_populate_of_nothing_or_an_array_that_is_not_contiguous():
    volume = np.ones((4, 64, 64), np.float32)
    assert populate(volume, 2, 2) is True
    assert populate(volume[:, ::2]) is False
    assert (volume == 1).all()


# ----------------------------------------------------------------------------- on a GPU, end to end

@gpu_test
def test_candidate_stream_reconstructs_the_same_volume_host_to_host(monkeypatch):
    scan = tomolab.data.simulate_scan(96, n_rows=40, n_angles=90, seed=4)
    center = scan.attrs["true_center"]
    monkeypatch.setenv("TOMOLAB_STREAM", "current")
    current = tomolab.reconstruct(scan, center=center, backend="cupy").values
    monkeypatch.setenv("TOMOLAB_STREAM", "candidate")
    candidate = tomolab.reconstruct(scan, center=center, backend="cupy").values
    np.testing.assert_array_equal(candidate, current)


@gpu_test
@pytest.mark.parametrize("dtype", ["uint16", "float16"])
def test_device_encoding_stores_what_the_host_stores_and_resumes_alike(tmp_path, monkeypatch,
                                                                       dtype):
    """Encoded on the GPU (stream slabs of 3 rows into output slabs of 4), cancelled after three
    slabs and resumed with the host encoding: the same stored values and clipped count as a run
    encoded on the host throughout."""
    from tomolab.engine import pipeline

    monkeypatch.setattr(pipeline, "MAX_GPU_SLAB_ROWS", 3)
    scan = tomolab.data.simulate_scan(96, n_rows=22, n_angles=90, seed=6)
    center = scan.attrs["true_center"]
    options = {"center": center, "backend": "cupy", "slab_rows": 4, "dtype": dtype}
    if dtype == "uint16":
        options["value_range"] = (-2e4, 5e4)  # narrow enough to clip
    monkeypatch.setenv("TOMOLAB_STREAM", "current")
    host = tomolab.reconstruct_to(scan, tmp_path / "host.zarr", **options)
    monkeypatch.setenv("TOMOLAB_STREAM", "candidate")
    stats: dict = {}
    device = tomolab.reconstruct_to(scan, tmp_path / "device.zarr", stats=stats, **options)
    assert stats["encoded_on_device"]
    calls = iter(range(100))
    with pytest.raises(Cancelled):
        tomolab.reconstruct_to(scan, tmp_path / "resumed.zarr",
                               cancel=lambda: next(calls) >= 3, **options)
    monkeypatch.setenv("TOMOLAB_STREAM", "current")
    resumed = tomolab.reconstruct_to(scan, tmp_path / "resumed.zarr", **options)
    for other in (device, resumed):
        name = "device.zarr" if other is device else "resumed.zarr"
        np.testing.assert_array_equal(
            zarr.open_group(str(tmp_path / name), mode="r")["volume"][...].view(np.uint16),
            zarr.open_group(str(tmp_path / "host.zarr"), mode="r")["volume"][...].view(np.uint16))
        assert other.attrs["clipped_voxels"] == host.attrs["clipped_voxels"]
