"""reconstruct() on whole scans: physics, attrs, backends and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import tomolab
from tomolab.errors import ParameterError
from tomolab.testing import gpu_test


@pytest.fixture(scope="module")
def scan():
    return tomolab.data.simulate_scan(128, n_rows=12, n_angles=240, photons=20000)


def _rel_error(volume, truth, n):
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    mask = np.hypot(yy, xx) < 0.4 * n
    diff = (volume - truth)[:, mask]
    return np.sqrt(np.mean(diff ** 2)) / np.sqrt(np.mean(truth[:, mask] ** 2))


def test_reconstruction_matches_the_phantom_in_physical_units(scan):
    vol = tomolab.reconstruct(scan, center=scan.attrs["true_center"], rows="3:9", backend="numpy")
    assert vol.dims == ("z", "y", "x") and vol.shape == (6, 128, 128)
    assert vol.attrs["units"] == "1/m"
    truth = tomolab.data.true_volume(scan, rows=slice(3, 9))
    assert _rel_error(vol.values, truth, 128) < 0.15
    # the mean inside the sample is right to 2 % (the noise averages out)
    yy, xx = np.mgrid[:128, :128] - 63.5
    inner = np.hypot(yy, xx) < 40
    assert abs(vol.values[:, inner].mean() / truth[:, inner].mean() - 1) < 0.02
    assert list(vol["row"].values) == [3, 4, 5, 6, 7, 8]
    assert np.isclose(vol["x"].values[1] - vol["x"].values[0], scan.attrs["pixel_size"])


def test_every_parameter_is_recorded(scan):
    vol = tomolab.reconstruct(scan, center=70.25, rows=5, filter="hann", backend="numpy",
                              algorithm="fbp")
    for key, value in {"center": 70.25, "rows": "5:6", "filter": "hann", "algorithm": "fbp",
                       "algorithm_requested": "fbp", "backend": "numpy", "pad_mode": "edge",
                       "normalize": 1}.items():
        assert vol.attrs[key] == value


def test_wrong_center_is_worse_than_right_center(scan):
    truth = tomolab.data.true_volume(scan, rows=[6])
    right = tomolab.reconstruct(scan, center=scan.attrs["true_center"], rows=6, backend="numpy")
    wrong = tomolab.reconstruct(scan, center=scan.attrs["true_center"] + 2, rows=6, backend="numpy")
    assert _rel_error(wrong.values, truth, 128) > 1.5 * _rel_error(right.values, truth, 128)


def test_auto_center(scan):
    vol = tomolab.reconstruct(scan, center="auto", rows="5:7", backend="numpy")
    assert abs(vol.attrs["center"] - scan.attrs["true_center"]) <= 0.5
    assert vol.attrs["center_source"].startswith("auto")


def test_progress_and_cancel(scan, monkeypatch):
    import tomolab.engine.pipeline as pipeline

    # slabs of 2 rows whatever the time they take (the memory ceiling alone decides)
    monkeypatch.setattr(pipeline, "slab_height", lambda *a, **k: 2)
    monkeypatch.setattr(pipeline, "CPU_SLAB_SECONDS", 1e6)
    calls = []
    tomolab.reconstruct(scan, center=70.0, rows="0:6", backend="numpy",
                        progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 6), (2, 6), (4, 6), (6, 6)]  # once at the start, then after each slab
    done = []
    with pytest.raises(tomolab.errors.Cancelled, match="after 2 of 6 rows"):
        tomolab.reconstruct(scan, center=70.0, rows="0:6", backend="numpy",
                            cancel=lambda: len(done) > 1,
                            progress=lambda d, total: done.append(d))
    assert done == [0, 2]


def test_zero_and_negative_counts_do_not_make_nan():
    counts = np.random.default_rng(1).poisson(50, size=(90, 2, 64)).astype(np.uint16)
    counts[:, :, 10:20] = 0  # dead columns: counts below the dark level
    scan = tomolab.from_arrays(counts, np.linspace(0, np.pi, 90, endpoint=False),
                               flats=np.full((2, 2, 64), 60, np.uint16),
                               darks=np.full((2, 2, 64), 5, np.uint16))
    vol = tomolab.reconstruct(scan, center=31.5, backend="numpy")
    assert np.isfinite(vol.values).all()


@pytest.mark.parametrize("rows, message", [
    (12, r"rows=12: row is outside the detector; fix: pick a row between 0 and 11"),
    ("10:40", r"rows='10:40': row range is outside the detector or empty; fix: use a range within 0:12"),
    ("a:b", r"rows='a:b'"),
])
def test_rows_out_of_range(scan, rows, message):
    with pytest.raises(ParameterError, match=message):
        tomolab.reconstruct(scan, center=64.0, rows=rows, backend="numpy")


@pytest.mark.parametrize("center", [-1.0, 128.0, float("nan"), "left"])
def test_center_outside_the_detector(scan, center):
    with pytest.raises(ParameterError, match=r"center=.*fix: pass a"):
        tomolab.reconstruct(scan, center=center, rows=0, backend="numpy")


def test_unknown_names(scan):
    with pytest.raises(ParameterError, match="algorithm='art'.*fbp"):
        tomolab.reconstruct(scan, center=64.0, algorithm="art")
    with pytest.raises(ParameterError, match="backend='opencl'.*numpy"):
        tomolab.reconstruct(scan, center=64.0, backend="opencl")


def test_missing_flats_says_how_to_proceed():
    with pytest.warns(UserWarning):
        scan = tomolab.from_arrays(np.ones((60, 2, 32), np.float32),
                                   np.linspace(0, np.pi, 60, endpoint=False))
    with pytest.raises(ParameterError, match="no flat fields.*normalize=False"):
        tomolab.reconstruct(scan, center=16.0, backend="numpy")
    vol = tomolab.reconstruct(scan, center=16.0, backend="numpy", normalize=False)
    assert np.allclose(vol.values, 0, atol=1e-6)  # transmission 1 everywhere: nothing there


@gpu_test
def test_cpu_and_gpu_volumes_agree(scan):
    # one algorithm on both (algorithm="auto" picks the fastest of each backend)
    cpu = tomolab.reconstruct(scan, center=71.3, rows="2:10", backend="numpy", algorithm="fbp")
    gpu = tomolab.reconstruct(scan, center=71.3, rows="2:10", backend="cupy", algorithm="fbp")
    rel = np.linalg.norm(gpu.values - cpu.values) / np.linalg.norm(cpu.values)
    assert rel < 1e-4, rel
    assert gpu.attrs["backend"] == "cupy"


def test_a_centre_per_row(scan):
    true_center = scan.attrs["true_center"]
    per_row = tomolab.reconstruct(scan, center=[true_center] * 4, rows="2:6", backend="numpy")
    single = tomolab.reconstruct(scan, center=true_center, rows="2:6", backend="numpy")
    assert np.allclose(per_row.values, single.values, atol=1e-3 * float(np.abs(single).max()))
    assert list(per_row["center"].values) == [true_center] * 4

    class Axis:  # anything with a center(rows) method, as an axis fit has
        def center(self, r):
            return true_center + 0.0 * np.asarray(r)

    fitted = tomolab.reconstruct(scan, center=Axis(), rows="2:6", backend="numpy")
    assert fitted.attrs["center_source"] == "per row, from an axis fit"
    assert np.allclose(fitted.values, single.values, atol=1e-3 * float(np.abs(single).max()))
    with pytest.raises(ParameterError, match="one centre per reconstructed row"):
        tomolab.reconstruct(scan, center=[70.0, 71.0], rows="2:6", backend="numpy")


@gpu_test
def test_gpu_streaming_over_many_slabs_matches_the_cpu(scan, monkeypatch):
    """Several overlapped slabs, the last one short: the same volume as the CPU, in order."""
    import tomolab.engine.pipeline as pipeline

    monkeypatch.setattr(pipeline, "slab_height", lambda *a, **k: 3)
    done = []
    gpu = tomolab.reconstruct(scan, center=71.3, rows="1:12", backend="cupy", algorithm="fbp",
                              progress=lambda d, t: done.append(d))
    cpu = tomolab.reconstruct(scan, center=71.3, rows="1:12", backend="numpy", algorithm="fbp")
    assert done == [0, 3, 6, 9, 11]
    assert np.linalg.norm(gpu.values - cpu.values) / np.linalg.norm(cpu.values) < 1e-4
    with pytest.raises(tomolab.errors.Cancelled):
        tomolab.reconstruct(scan, center=71.3, rows="1:12", backend="cupy",
                            cancel=lambda: len(done) > 5, progress=lambda d, t: done.append(d))


def test_ring_and_zinger_removal_in_the_pipeline():
    """On this strongly absorbing phantom the median window must stay narrow (see
    tests/test_prep_stripes.py for the measured limits); then the rings go and nothing else."""
    scan = tomolab.data.simulate_scan(128, n_rows=8, n_angles=240, photons=50000, ring_errors=0.01,
                                      zingers=1e-3, seed=3)
    truth = tomolab.data.true_volume(scan, rows=slice(2, 6))
    plain = tomolab.reconstruct(scan, center=scan.attrs["true_center"], rows="2:6", backend="numpy")
    cleaned = tomolab.reconstruct(scan, center=scan.attrs["true_center"], rows="2:6",
                                  backend="numpy", stripes={"method": "sorting", "size": 5},
                                  zingers=0.2)
    assert cleaned.attrs["stripes"] == "sorting" and cleaned.attrs["stripes_size"] == 5
    assert cleaned.attrs["zingers_threshold"] == 0.2
    assert _rel_error(cleaned.values, truth, 128) < 0.9 * _rel_error(plain.values, truth, 128)


def test_zingers_and_halo_leave_slab_edges_alone(monkeypatch):
    """2D steps read extra rows: slabs of 2 rows give the same volume as one slab."""
    import tomolab.engine.pipeline as pipeline

    scan = tomolab.data.simulate_scan(64, n_rows=8, n_angles=90, zingers=1e-3, seed=2)
    whole = tomolab.reconstruct(scan, center=36.0, backend="numpy", zingers=0.2)
    monkeypatch.setattr(pipeline, "slab_height", lambda *a, **k: 2)
    slabs = tomolab.reconstruct(scan, center=36.0, backend="numpy", zingers=0.2)
    assert np.allclose(whole.values, slabs.values, atol=1e-6 * float(np.abs(whole).max()))


def test_phase_option_uses_the_scan_metadata():
    scan = tomolab.data.simulate_scan(64, n_rows=6, n_angles=90)
    vol = tomolab.reconstruct(scan, center=36.0, backend="numpy", phase=50.0)
    assert vol.attrs["phase_delta_beta"] == 50.0 and vol.attrs["phase_energy"] == scan.attrs["energy"]
    assert np.isfinite(vol.values).all()
    bare = tomolab.from_arrays(scan.projections.values, scan.angle.values, flats=scan.flats.values,
                               darks=scan.darks.values)
    with pytest.raises(ParameterError, match=r"phase\['energy'\].*fix: pass phase="):
        tomolab.reconstruct(bare, center=36.0, backend="numpy", phase=50.0)
    with pytest.raises(ParameterError, match=r"phase\['delta_beta'\]=-1"):
        tomolab.reconstruct(scan, center=36.0, backend="numpy", phase=-1)


def test_unknown_stripe_method(scan):
    with pytest.raises(ParameterError, match="stripes='magic'.*sorting"):
        tomolab.reconstruct(scan, center=64.0, stripes="magic", backend="numpy")


@gpu_test
def test_gpu_preprocessing_matches_cpu(scan, monkeypatch):
    import tomolab.engine.pipeline as pipeline

    monkeypatch.setattr(pipeline, "MAX_GPU_SLAB_ROWS", 4)
    kwargs = dict(center=71.3, rows="0:12", zingers=0.2, stripes="sorting", phase=20.0,
                  algorithm="fbp")
    gpu = tomolab.reconstruct(scan, backend="cupy", **kwargs)
    cpu = tomolab.reconstruct(scan, backend="numpy", **kwargs)
    # sorting-based stripe removal orders nearly equal values as cuFFT/FFTW rounding lets it
    # (tests/test_prep_stripes.py measures this); measured 1.1e-4 on an H100, 2026-11-25
    assert np.linalg.norm(gpu.values - cpu.values) / np.linalg.norm(cpu.values) < 3e-4


def test_tomo_accessor_is_the_api():
    scan = tomolab.data.simulate_scan(64, n_rows=3, n_angles=90)
    a = scan.tomo.reconstruct(center=36.0, rows=1, backend="numpy")
    b = tomolab.reconstruct(scan, center=36.0, rows=1, backend="numpy")
    assert np.array_equal(a.values, b.values)
    assert scan.tomo.find_center(backend="numpy") == tomolab.find_center(scan, backend="numpy")


def test_import_tomolab_is_light():
    import subprocess
    import sys

    code = ("import sys, tomolab; heavy = [m for m in ('cupy', 'xarray', 'dask', 'h5py', 'numba', "
            "'scipy', 'ipyvolume', 'jupyterhub', 'ipywidgets') if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_lazy_volume_computes_only_the_slabs_it_needs(scan, monkeypatch):
    import tomolab.engine.pipeline as pipeline

    calls = []
    real = pipeline.reconstruct_rows
    monkeypatch.setattr(pipeline, "reconstruct_rows",
                        lambda s, rows, **k: calls.append((rows.start, rows.stop)) or real(s, rows, **k))
    import tomolab.engine
    monkeypatch.setattr(tomolab.engine, "reconstruct_rows", pipeline.reconstruct_rows)
    lazy = tomolab.reconstruct(scan, center=71.3, backend="numpy", lazy=4)
    assert calls == [] and lazy.chunks[0] == (4, 4, 4)
    one = lazy.isel(z=5).values
    assert calls == [(4, 8)]
    eager = tomolab.reconstruct(scan, center=71.3, rows=5, backend="numpy")
    assert np.array_equal(one, eager.values[0])


def test_a_volume_larger_than_host_memory_is_refused_with_the_ways_out(monkeypatch, tmp_path):
    import tomolab.devices as devices
    from tomolab.api.reconstruct import plan_reconstruction

    scan = tomolab.data.simulate_scan(64, n_rows=8, n_angles=60)
    plan = plan_reconstruction(scan, center=32.0, backend="numpy")
    four_rows = plan.memory_needed(range(4))["numpy"]
    # room for 4 of the 8 slices (and a slab's working memory) within the 10 % margin;
    # real limits (RLIMIT_AS in a child process) are in test_resource_guards.py
    monkeypatch.setattr(devices, "host_memory_available", lambda: int(four_rows / 0.9) + 1)
    with pytest.raises(ParameterError, match="reconstruct_to.*rows='A:B'") as info:
        tomolab.reconstruct(scan, center=32.0, backend="numpy")
    needed = devices.human_bytes(plan.memory_needed(range(8))["numpy"])
    assert "rows='0:8'" in str(info.value) and f"needs {needed} of host memory" in str(info.value)
    assert tomolab.reconstruct(scan, center=32.0, rows="0:3", backend="numpy").shape == (3, 64, 64)
    streamed = tomolab.reconstruct_to(scan, tmp_path / "v.zarr", center=32.0, slab_rows=2,
                                      backend="numpy")  # slab by slab: fits
    assert streamed.shape == (8, 64, 64)
