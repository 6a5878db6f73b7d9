"""tomolab.widgets in Python: set values, check state and computed results."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from tomolab.testing import CountingArray

pytest.importorskip("ipywidgets")
pytest.importorskip("holoviews")
pytest.importorskip("jupyter_bokeh")
xr = pytest.importorskip("xarray")
da = pytest.importorskip("dask.array")

import traitlets  # noqa: E402

from tomolab.errors import ParameterError  # noqa: E402
from tomolab.widgets import (  # noqa: E402
    Cancelled, Segmenter, SliceViewer, TaskBar, dask_progress, format_error,
)


def phantom(shape=(24, 32, 40), seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(shape).astype(np.float32)


# -- TaskBar ---------------------------------------------------------------------

def test_taskbar_runs_in_background_and_reports_progress():
    bar = TaskBar()
    seen = []
    bar.observe(lambda c: seen.append(c["new"]), "progress")

    def work(progress, n):
        for i in range(n):
            progress(i / n, f"step {i}")
        return n * 10

    done = []
    bar.run(work, 4, on_done=done.append)
    assert bar.wait(10) == 40
    assert bar.state == "done" and done == [40] and bar.progress == 1.0
    assert seen == [0.25, 0.5, 0.75, 1.0]  # 0.0 is the start value: no change event
    assert bar.message == "step 3"


def test_taskbar_cancel_stops_the_work():
    bar = TaskBar()
    started, steps = threading.Event(), []

    def work(progress):
        started.set()
        for i in range(1000):
            steps.append(i)
            progress(i / 1000)
            time.sleep(0.005)
        return "finished"

    bar.run(work)
    started.wait(5)
    assert bar.running and not bar.cancel_button.disabled
    bar.cancel_button.click()
    assert bar.cancel_button.disabled  # at once, before the work has stopped
    assert bar.wait(10) is None
    assert bar.state == "cancelled" and len(steps) < 1000
    # the user sees that the cancel took effect: the stopped bar, "cancelled", no Cancel button
    assert bar._row.layout.display == "flex" and bar.cancel_button.layout.display == "none"
    assert bar.status.value.startswith("cancelled") and 0 < bar.bar.value < 1
    bar.run(lambda progress: "again", background=False)  # a rerun hides it again when done
    assert bar.state == "done" and bar._row.layout.display == "none"


def test_taskbar_cancels_a_dask_computation():
    bar = TaskBar()
    arr = da.ones((200, 100), chunks=(1, 100))

    def work(progress):
        def slow(block):
            time.sleep(0.01)
            if progress.cancelled is False and block.sum() < 0:
                raise AssertionError
            return block
        with dask_progress(progress):
            return arr.map_blocks(slow).sum().compute(scheduler="sync")

    bar.run(work)
    time.sleep(0.3)
    bar.cancel()
    bar.wait(20)
    assert bar.state == "cancelled"
    assert 0 < bar.progress < 1


def test_taskbar_shows_errors_as_one_readable_line():
    bar = TaskBar()

    def work(progress):
        raise ParameterError("centre is outside the detector", where="center", value=900.0,
                             fix="pass a column in [0, 511]")

    assert bar.run(work, background=False) is None
    assert bar.state == "error"
    assert bar.error == "center=900.0: centre is outside the detector; fix: pass a column in [0, 511]"
    assert "centre is outside the detector" in bar.error_label.value
    assert "Traceback" not in bar.error_label.value
    assert isinstance(bar.exception, ParameterError)
    # the next successful run clears it
    bar.run(lambda p: 1, background=False)
    assert bar.error == "" and bar.error_label.value == ""


def test_taskbar_refuses_a_second_concurrent_task():
    bar = TaskBar()
    gate = threading.Event()
    bar.run(lambda p: gate.wait(5))
    assert bar.run(lambda p: 2) is None
    assert "already running" in bar.error
    gate.set()
    bar.wait(5)


def test_format_error():
    assert format_error(ValueError("bad")) == "ValueError: bad"
    assert format_error(Cancelled()) == "Cancelled"


# -- SliceViewer -----------------------------------------------------------------

@pytest.mark.parametrize("lazy", [False, True], ids=["numpy", "dask"])
def test_sliceviewer_shows_the_slice_the_sliders_select(lazy):
    vol = phantom()
    volume = xr.DataArray(vol, dims=("z", "y", "x"))
    if lazy:
        volume = volume.chunk({"z": 4})
    viewer = SliceViewer(volume)
    for z in (0, 7, 23):
        viewer.z_slider.value = z
        assert viewer.z == z
        np.testing.assert_array_equal(viewer.displayed("z"), vol[z])
        assert np.isclose(viewer.displayed("z").mean(), vol[z].mean())
    viewer.y_slider.value = 5
    np.testing.assert_array_equal(viewer.displayed("y"), vol[:, 5, :])
    viewer.x_slider.value = 39
    np.testing.assert_array_equal(viewer.displayed("x"), vol[:, :, 39])


def test_sliceviewer_moving_z_reads_only_that_slice():
    vol = phantom((40, 16, 16))
    src = CountingArray(vol)
    volume = xr.DataArray(da.from_array(src, chunks=(1, 16, 16)), dims=("z", "y", "x"))
    viewer = SliceViewer(volume, orthogonal=False)
    src.reads.clear()
    viewer.z_slider.value = 3
    assert src.reads == [16 * 16]
    np.testing.assert_array_equal(viewer.displayed("z"), vol[3])
    src.reads.clear()
    viewer.clim = (0.2, 0.4)  # contrast: reads nothing
    assert src.reads == []


def test_sliceviewer_contrast_from_percentiles_and_editable():
    vol = phantom()
    viewer = SliceViewer(vol, percentiles=(2, 98))
    np.testing.assert_allclose(viewer.clim, np.percentile(vol, [2, 98]), rtol=1e-5)
    assert viewer.clim_slider.value == pytest.approx(viewer.clim)
    viewer.clim_slider.value = (0.25, 0.5)
    assert viewer.clim == (0.25, 0.5)
    from holoviews.plotting.bokeh.raster import RasterPlot

    mappers = [p.handles["color_mapper"] for p in viewer._plot.traverse(lambda p: p, [RasterPlot])]
    assert len(mappers) == 3
    assert all((m.low, m.high) == (0.25, 0.5) for m in mappers)


def test_sliceviewer_histogram_counts_the_data():
    from holoviews.plotting.bokeh.chart import HistogramPlot

    vol = phantom((10, 10, 10))
    viewer = SliceViewer(vol)
    (hist,) = viewer._plot.traverse(lambda p: p, [HistogramPlot])
    assert int(np.sum(hist.handles["source"].data["top"])) == vol.size


def test_sliceviewer_validates():
    viewer = SliceViewer(phantom())
    with pytest.raises(traitlets.TraitError, match="outside the volume"):
        viewer.z = 24
    with pytest.raises(traitlets.TraitError, match="low < high"):
        viewer.clim = (1.0, 0.5)
    assert viewer.z == 12  # unchanged, the middle slice


def test_sliceviewer_big_slices_are_block_averaged():
    vol = phantom((2, 64, 96))
    viewer = SliceViewer(vol, max_pixels=32, orthogonal=False)
    shown = viewer.displayed("z")
    assert shown.shape == (32, 32)  # blocks of 2 x 3; coordinates keep the aspect
    np.testing.assert_allclose(shown[0, 0], vol[1, :2, :3].mean(), rtol=1e-5)
    np.testing.assert_allclose(shown[5, 7], vol[1, 10:12, 21:24].mean(), rtol=1e-5)


# -- VolumeViewer ----------------------------------------------------------------

def block_mean(a, f):
    nz, ny, nx = (n // k for n, k in zip(a.shape, f))
    return a[:nz * f[0], :ny * f[1], :nx * f[2]].reshape(nz, f[0], ny, f[1], nx, f[2]).mean(axis=(1, 3, 5))


def test_volumeviewer_sends_the_block_mean():
    pytest.importorskip("ipyvolume")
    from tomolab.widgets import VolumeViewer

    vol = phantom((32, 48, 64))
    viewer = VolumeViewer(vol, max_shape=(16, 16, 16))
    assert viewer.task.state == "done"
    np.testing.assert_allclose(viewer.preview.values, block_mean(vol, (2, 3, 4)), rtol=1e-5)
    np.testing.assert_allclose(viewer.ipv_volume.data, block_mean(vol, (2, 3, 4)), rtol=1e-5)
    assert viewer.ipv_volume in viewer.figure.volumes
    viewer.max_shape = (8, 8, 8)
    viewer.wait(30)
    assert viewer.ipv_volume.data.shape == (8, 8, 8)


def test_volumeviewer_lazy_in_background_never_loads_whole():
    pytest.importorskip("ipyvolume")
    from tomolab.widgets import VolumeViewer

    vol = phantom((64, 32, 32))
    src = CountingArray(vol)
    volume = xr.DataArray(da.from_array(src, chunks=(8, 32, 32)), dims=("z", "y", "x"))
    viewer = VolumeViewer(volume, max_shape=(16, 16, 16))
    preview = viewer.wait(60)
    assert viewer.task.state == "done", viewer.task.error
    assert max(src.reads) <= 8 * 32 * 32 and sum(src.reads) == vol.size
    np.testing.assert_allclose(preview.values, block_mean(vol, (4, 2, 2)), rtol=1e-5)


def test_volumeviewer_controls_reach_ipyvolume():
    pytest.importorskip("ipyvolume")
    from tomolab.widgets import VolumeViewer

    viewer = VolumeViewer(phantom((16, 16, 16)))
    viewer.threshold_slider.value = (0.3, 0.8)
    assert viewer.threshold == pytest.approx((0.3, 0.8), abs=1e-3)
    assert (viewer.ipv_volume.show_min, viewer.ipv_volume.show_max) == pytest.approx((0.3, 0.8), abs=1e-3)
    viewer.opacity_slider.value = 10.0
    assert viewer.ipv_volume.opacity_scale == pytest.approx(10.0)
    viewer.method_buttons.value = "MAX_INTENSITY"
    assert viewer.ipv_volume.rendering_method == "MAX_INTENSITY"
    with pytest.raises(traitlets.TraitError):
        viewer.opacity = 0.0
    with pytest.raises(traitlets.TraitError):
        viewer.max_shape = (1, 8, 8)


# -- Segmenter -------------------------------------------------------------------

def two_phase(shape=(40, 64, 64), fraction_radius=20, noise=0.08, seed=3):
    """A sphere (0.8) in a background (0.2) with Gaussian noise; returns (volume, truth mask).

    With noise 0.08 the phases are 7.5 sigma apart: a threshold between them
    misclassifies well under 0.1 % of the voxels, so Otsu's fraction must be
    within 1 % of the truth.
    """
    z, y, x = np.indices(shape)
    c = [n / 2 for n in shape]
    inside = (z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 < fraction_radius ** 2
    vol = 0.2 + 0.6 * inside + noise * np.random.default_rng(seed).standard_normal(shape)
    return vol.astype(np.float32), inside


def test_segmenter_otsu_fraction_matches_truth():
    vol, inside = two_phase()
    seg = Segmenter(vol, orthogonal=False)
    assert seg.method == "otsu"
    assert 0.35 < seg.threshold < 0.65
    assert abs(seg.fraction - inside.mean()) < 0.01
    assert f"{100 * seg.fraction:.2f} %" in seg.fraction_label.value
    mask = seg.mask()
    assert mask.attrs["threshold"] == seg.threshold and mask.attrs["method"] == "otsu"
    assert abs(float(mask.mean()) - inside.mean()) < 0.01


def test_segmenter_otsu_on_a_subsample_of_a_lazy_volume():
    vol, inside = two_phase((64, 64, 64))
    lazy = xr.DataArray(vol, dims=("z", "y", "x")).chunk({"z": 8})
    seg = Segmenter(lazy, max_samples=40_000, orthogonal=False)
    assert abs(seg.fraction - inside.mean()) < 0.01
    assert seg.mask().chunks is not None


def test_segmenter_manual_threshold_and_overlay():
    vol, inside = two_phase(noise=0.0)
    seg = Segmenter(vol, orthogonal=False)
    seg.threshold_slider.value = 0.9  # above every voxel
    assert seg.method == "manual" and seg.fraction == 0.0
    seg.threshold = 0.5
    assert seg.fraction == pytest.approx(inside.mean())
    # the overlay on the shown slice tints exactly the voxels above the threshold
    z = seg.viewer.z
    from holoviews.plotting.bokeh.raster import RasterPlot

    for plot in seg.viewer._plot.traverse(lambda p: p, [RasterPlot]):
        if plot.current_frame.vdims[0].name == "mask":
            tint = np.asarray(plot.handles["source"].data["image"][0])
    np.testing.assert_array_equal(np.isfinite(tint), vol[z] > 0.5)
    seg.method_buttons.value = "otsu"
    assert seg.method == "otsu" and abs(seg.fraction - inside.mean()) < 0.01


def test_segmenter_rejects_out_of_range_threshold():
    vol, _ = two_phase()
    seg = Segmenter(vol, orthogonal=False)
    with pytest.raises(traitlets.TraitError, match="outside the data range"):
        seg.threshold = 100.0


# -- units, aspect, and the JavaScript each display brings -------------------------

def reconstruction_like(shape=(4, 64, 64), pixel_size=0.65e-6):
    """A volume as tomolab.reconstruct makes it: coordinates in metres, values in 1/m."""
    nz, ny, nx = shape
    centred = lambda n: (np.arange(n) - (n - 1) / 2) * pixel_size  # noqa: E731
    return xr.DataArray(
        phantom(shape), dims=("z", "y", "x"),
        coords={"z": ("z", np.arange(nz) * pixel_size, {"units": "m"}),
                "y": ("y", centred(ny), {"units": "m"}), "x": ("x", centred(nx), {"units": "m"})},
        attrs={"units": "1/m", "long_name": "linear attenuation coefficient"})


def _figures_by_title(viewer):
    return {m.title.text: m for m in viewer._plot.state.references()
            if hasattr(m, "x_range") and hasattr(m, "renderers") and getattr(m, "title", None)}


def test_sliceviewer_axes_colorbars_and_contrast_in_physical_units():
    from bokeh.models import ColorBar

    volume = reconstruction_like()
    viewer = SliceViewer(volume)
    figures = _figures_by_title(viewer)
    xy = next(f for t, f in figures.items() if t.startswith("xy"))
    assert xy.xaxis[0].axis_label == "x (µm)" and xy.yaxis[0].axis_label == "y (µm)"
    # the x axis spans the volume's width in µm, not in voxels
    width_um = float(np.ptp(volume.x.values)) / 1e-6
    assert xy.x_range.end - xy.x_range.start == pytest.approx(width_um + 0.65, rel=0.05)
    bars = [m for m in viewer._plot.state.references() if isinstance(m, ColorBar)]
    assert len(bars) == 3 and all(bar.title == "μ (1/m)" for bar in bars)
    hist = figures["histogram"]
    assert hist.xaxis[0].axis_label == "μ (1/m)"
    assert viewer.clim_slider.description == "contrast 1/m"
    # and a volume without physical coordinates says voxels
    plain = _figures_by_title(SliceViewer(phantom((4, 16, 16)), orthogonal=False))
    xy = next(f for t, f in plain.items() if t.startswith("xy"))
    assert xy.xaxis[0].axis_label == "x (px)"


def test_sliceviewer_thin_volume_cuts_keep_a_readable_height_and_say_so():
    from tomolab.widgets._slices import MIN_CUT_HEIGHT

    viewer = SliceViewer(reconstruction_like((4, 96, 96)), size=384)
    figures = _figures_by_title(viewer)
    xz = next(f for t, f in figures.items() if t.startswith("xz"))
    assert xz.frame_height >= MIN_CUT_HEIGHT  # 4 of 96 rows would be a 13 px strip
    true_height = xz.frame_width * 4 / 96
    assert viewer.stretch["y"] == pytest.approx(xz.frame_height / true_height, rel=0.02)
    assert f"stretched ×{viewer.stretch['y']:.1f}" in xz.title.text
    xy = next(f for t, f in figures.items() if t.startswith("xy"))
    assert "stretched" not in xy.title.text
    # a cube is shown at its true aspect, with no note
    cube = _figures_by_title(SliceViewer(reconstruction_like((32, 32, 32)), size=320))
    assert not any("stretched" in t for t in cube)


@pytest.mark.parametrize("make", ["slice_viewer", "segmenter", "center_sweep", "panel"])
def test_each_display_first_loads_bokehjs(make):
    """Displayed twice in one kernel (a reloaded page): BokehJS comes before the widget each time."""
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.display import display
    from IPython.utils.capture import capture_output

    import tomolab
    from tomolab.viz import bokehjs_bundle
    from tomolab.widgets import CenterSweep, ReconstructionPanel

    InteractiveShell.instance()
    widget = {
        "slice_viewer": lambda: SliceViewer(phantom((4, 8, 8))),
        "segmenter": lambda: Segmenter(phantom((4, 8, 8)), orthogonal=False),
        "center_sweep": lambda: CenterSweep(tomolab.data.simulate_scan(32, n_rows=2, n_angles=30),
                                            backend="numpy", compute=False),
        "panel": lambda: ReconstructionPanel(None, background=False),
    }[make]()
    load_mime = "application/vnd.bokehjs_load.v0+json"
    for _ in range(2):
        with capture_output() as captured:
            display(widget)
        mimes = [sorted(out.data) for out in captured.outputs]
        assert load_mime in mimes[0], mimes
        assert captured.outputs[0].data[load_mime] == bokehjs_bundle()[load_mime]
        view = captured.outputs[1].data["application/vnd.jupyter.widget-view+json"]
        assert view["model_id"] == widget.model_id


def test_bokehjs_bundle_is_inline_and_skips_a_page_that_has_it():
    import bokeh

    from tomolab.viz import bokehjs_bundle

    code = bokehjs_bundle()["application/javascript"]
    wrapper = code[:code.index("var pieces")] + code[code.index("\n  for (var i") :]
    assert "script.textContent" in wrapper and ".src" not in wrapper  # inline, fetches nothing
    assert f'window.Bokeh.version === "{bokeh.__version__}"' in code
    assert "BEGIN bokeh.min.js" in code and len(code) > 500_000
