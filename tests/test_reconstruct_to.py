"""Full volumes streamed to zarr: bounded memory, nothing at the path until done, resumable."""

from __future__ import annotations

import numpy as np
import pytest

import tomolab
from tomolab.engine import Cancelled
from tomolab.errors import ParameterError


@pytest.fixture(scope="module")
def scan():
    return tomolab.data.simulate_scan(64, n_rows=10, n_angles=90, seed=7)


def test_streamed_volume_equals_the_in_memory_one(scan, tmp_path):
    out = tmp_path / "vol.zarr"
    streamed = tomolab.reconstruct_to(scan, out, center=36.2, slab_rows=3, backend="numpy")
    direct = tomolab.reconstruct(scan, center=36.2, backend="numpy")
    assert np.array_equal(streamed.values, direct.values)
    assert list(streamed["row"].values) == list(range(10))
    assert streamed.attrs["center"] == 36.2 and streamed.attrs["filter"] == "ramp"
    assert "fingerprint" not in streamed.attrs
    import xarray as xr
    group_attrs = xr.open_zarr(out).attrs
    assert "fingerprint" not in group_attrs and "slabs_done" not in group_attrs
    assert np.array_equal(tomolab.io.open_volume(out).values, direct.values)


def test_killed_run_resumes_without_redoing_slabs(scan, tmp_path, monkeypatch):
    import tomolab.api as api

    out = tmp_path / "vol.zarr"
    reference = tomolab.reconstruct_to(scan, tmp_path / "ref.zarr", center=36.2, slab_rows=3,
                                       backend="numpy").values
    calls = []
    real = api.reconstruct
    monkeypatch.setattr(api, "reconstruct", lambda *a, **k: calls.append(k["rows"]) or real(*a, **k))
    with pytest.raises(Cancelled, match="run again with the same parameters"):
        tomolab.reconstruct_to(scan, out, center=36.2, slab_rows=3, backend="numpy",
                               cancel=lambda: len(calls) >= 2)
    assert not out.exists()  # nothing half-written at the output path
    assert (tmp_path / ".vol.zarr.partial").exists()
    assert calls == [(0, 3), (3, 6)]
    calls.clear()
    resumed = tomolab.reconstruct_to(scan, out, center=36.2, slab_rows=3, backend="numpy")
    assert calls == [(6, 9), (9, 10)]  # only the slabs that were not finished
    assert np.array_equal(resumed.values, reference)
    assert not (tmp_path / ".vol.zarr.partial").exists()


def test_other_parameters_start_afresh(scan, tmp_path):
    out = tmp_path / "vol.zarr"
    with pytest.raises(Cancelled):
        tomolab.reconstruct_to(scan, out, center=36.2, slab_rows=3, backend="numpy",
                               cancel=iter([False, True]).__next__)
    with pytest.warns(UserWarning, match="other parameters; starting afresh"):
        vol = tomolab.reconstruct_to(scan, out, center=35.0, slab_rows=3, backend="numpy")
    assert np.array_equal(vol.values, tomolab.reconstruct(scan, center=35.0, backend="numpy").values)


def test_refuses_existing_output_and_other_formats(scan, tmp_path):
    (tmp_path / "vol.zarr").mkdir()
    with pytest.raises(ParameterError, match="output exists.*overwrite=True"):
        tomolab.reconstruct_to(scan, tmp_path / "vol.zarr", center=36.0)
    with pytest.raises(ParameterError, match="NAME.zarr"):
        tomolab.reconstruct_to(scan, tmp_path / "vol.h5", center=36.0)


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
