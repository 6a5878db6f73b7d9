"""Full volumes streamed to zarr: bounded memory, nothing at the path until done, resumable."""

from __future__ import annotations

import numpy as np
import pytest

import tomolab
from tomolab.errors import Cancelled
from tomolab.errors import ParameterError
from tomolab.testing import gpu_test


@pytest.fixture(scope="module")
def scan():
    return tomolab.data.simulate_scan(64, n_rows=10, n_angles=90, seed=7)


@pytest.mark.parametrize("name", ["vol.zarr", "vol.h5", "vol_tiff"])
def test_streamed_volume_equals_the_in_memory_one(scan, tmp_path, name):
    out = tmp_path / name
    streamed = tomolab.reconstruct_to(scan, out, center=36.2, slab_rows=3, backend="numpy")
    direct = tomolab.reconstruct(scan, center=36.2, backend="numpy")
    assert np.array_equal(streamed.values, direct.values)
    assert streamed.attrs["center"] == 36.2 and streamed.attrs["filter"] == "ramp"
    assert "fingerprint" not in streamed.attrs and "slabs_done" not in streamed.attrs
    assert np.allclose(streamed["z"].values, direct["z"].values)
    assert np.array_equal(tomolab.io.open_volume(out).values, direct.values)
    assert [p.name for p in tmp_path.iterdir()] == [name]  # no partial output left


def test_zarr_output_keeps_rows_and_no_resume_bookkeeping(scan, tmp_path):
    import xarray as xr

    out = tmp_path / "vol.zarr"
    streamed = tomolab.reconstruct_to(scan, out, center=36.2, slab_rows=4, backend="numpy")
    assert list(streamed["row"].values) == list(range(10))
    group_attrs = xr.open_zarr(out).attrs
    assert "fingerprint" not in group_attrs and "slabs_done" not in group_attrs


def _count_computed_rows(monkeypatch):
    """Record the rows each call of the engine computes."""
    import tomolab.engine

    calls = []
    real = tomolab.engine.reconstruct_rows

    def counting(scan, rows, **kwargs):
        calls.append((rows.start, rows.stop))
        return real(scan, rows, **kwargs)
    monkeypatch.setattr(tomolab.engine, "reconstruct_rows", counting)
    return calls


@pytest.mark.parametrize("name", ["vol.zarr", "vol.h5", "vol_tiff"])
def test_killed_run_resumes_without_redoing_slabs(scan, tmp_path, monkeypatch, name):
    from tomolab.engine import pipeline

    monkeypatch.setattr(pipeline, "CPU_SLAB_SECONDS", 1e6)  # slabs of slab_rows, however slow
    out = tmp_path / name
    reference = tomolab.reconstruct(scan, center=36.2, backend="numpy").values
    finished = []
    with pytest.raises(Cancelled, match="run again with the same parameters"):
        tomolab.reconstruct_to(scan, out, center=36.2, slab_rows=3, backend="numpy",
                               progress=lambda done, total: finished.append(done),
                               cancel=lambda: len(finished) >= 3)
    assert finished == [0, 3, 6]
    assert not out.exists()  # nothing half-written at the output path
    assert (tmp_path / f".{name}.partial").exists()
    calls = _count_computed_rows(monkeypatch)
    progress = []
    resumed = tomolab.reconstruct_to(scan, out, center=36.2, slab_rows=3, backend="numpy",
                                     progress=lambda done, total: progress.append((done, total)))
    assert calls == [(6, 10)]  # only the rows of the slabs that were not finished
    assert progress == [(6, 10), (9, 10), (10, 10)]
    assert np.array_equal(resumed.values, reference)
    assert not (tmp_path / f".{name}.partial").exists()


def test_other_parameters_start_afresh(scan, tmp_path):
    out = tmp_path / "vol.zarr"
    with pytest.raises(Cancelled):
        tomolab.reconstruct_to(scan, out, center=36.2, slab_rows=3, backend="numpy",
                               cancel=iter([False, True]).__next__)
    with pytest.warns(UserWarning, match="other parameters; starting afresh"):
        vol = tomolab.reconstruct_to(scan, out, center=35.0, slab_rows=3, backend="numpy")
    assert np.array_equal(vol.values, tomolab.reconstruct(scan, center=35.0, backend="numpy").values)


def test_stream_slabs_and_output_slabs_need_not_line_up(scan, tmp_path, monkeypatch):
    # the engine's slabs (max_height) and the output's (slab_rows) are the same here; force
    # the engine to smaller ones so output slabs are assembled from pieces
    import tomolab.engine.pipeline as pipeline

    monkeypatch.setattr(pipeline, "slab_height", lambda *a, **k: 2)
    vol = tomolab.reconstruct_to(scan, tmp_path / "vol.zarr", center=36.2, slab_rows=3,
                                 backend="numpy")
    assert np.array_equal(vol.values, tomolab.reconstruct(scan, center=36.2, backend="numpy").values)


@pytest.mark.parametrize("name", ["vol.zarr", "vol.h5", "vol_tiff"])
def test_tilted_axis_centres_per_row_are_kept(scan, tmp_path, name):
    # one centre per row: slabs of 4 rows give the volume computed in one piece
    centers = np.linspace(35.5, 37.0, 10)
    vol = tomolab.reconstruct_to(scan, tmp_path / name, center=centers, slab_rows=4,
                                 backend="numpy")
    direct = tomolab.reconstruct(scan, center=centers, backend="numpy")
    assert np.array_equal(vol.values, direct.values)
    assert np.allclose(vol["center"].values, centers)
    assert list(vol["row"].values) == list(range(10))


def test_refuses_existing_output_and_bad_options(scan, tmp_path):
    (tmp_path / "vol.zarr").mkdir()
    with pytest.raises(ParameterError, match="exists.*overwrite=True"):
        tomolab.reconstruct_to(scan, tmp_path / "vol.zarr", center=36.0)
    with pytest.raises(ParameterError, match="format"):
        tomolab.reconstruct_to(scan, tmp_path / "vol.npy", center=36.0)
    with pytest.raises(ParameterError, match="multiscale"):
        tomolab.reconstruct_to(scan, tmp_path / "vol.h5", center=36.0, multiscale=2)
    with pytest.raises(ParameterError, match="slab_rows"):
        tomolab.reconstruct_to(scan, tmp_path / "v2.zarr", center=36.0, slab_rows=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vol.zarr"]


def test_multiscale_levels_are_block_means_with_ome_metadata(scan, tmp_path):
    import xarray as xr
    import zarr

    out = tmp_path / "vol.zarr"
    vol = tomolab.reconstruct_to(scan, out, center=36.2, slab_rows=4, multiscale=2, backend="numpy")
    store = xr.open_zarr(out)
    full = vol.values
    expected = full[:10 // 2 * 2].reshape(5, 2, 32, 2, 32, 2).mean(axis=(1, 3, 5))
    assert np.allclose(store["level1"].values, expected, rtol=1e-5)
    assert store["level2"].shape == (2, 16, 16)
    meta = dict(zarr.open_group(str(out), mode="r").attrs)["multiscales"][0]
    assert [d["path"] for d in meta["datasets"]] == ["volume", "level1", "level2"]
    scale = meta["datasets"][1]["coordinateTransformations"][0]["scale"]
    assert np.allclose(scale, [2 * scan.attrs["pixel_size"]] * 3)
    assert [a["name"] for a in meta["axes"]] == ["z", "y", "x"]


@gpu_test
@pytest.mark.parametrize("name, slab_rows", [("vol.zarr", 4), ("vol.h5", 3), ("vol_tiff", 10)])
def test_gpu_stream_writes_what_reconstruct_returns(scan, tmp_path, name, slab_rows, monkeypatch):
    # the GPU writer thread feeds the sink; engine slabs of 4 rows against output slabs of
    # 3 (assembled from pieces), 4 (passed straight through) and 10 (one output slab)
    import tomolab.engine.pipeline as pipeline

    monkeypatch.setattr(pipeline, "MAX_GPU_SLAB_ROWS", 4)
    stats = {}
    vol = tomolab.reconstruct_to(scan, tmp_path / name, center=36.2, slab_rows=slab_rows,
                                 backend="cupy", stats=stats)
    direct = tomolab.reconstruct(scan, center=36.2, backend="cupy")
    assert np.array_equal(vol.values, direct.values)
    assert stats["slabs"] >= 3 and stats["compute"] > 0
