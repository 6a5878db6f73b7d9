"""ReconstructionPanel driven from Python on a simulated scan written to a real DXchange file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("holoviews")
pytest.importorskip("ipyvolume")

import tomolab  # noqa: E402
from tomolab.widgets import ReconstructionPanel  # noqa: E402


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """A DXchange file of the analytic phantom (as ``tomolab demo`` writes it), and its truth."""
    from tomolab.data import (iter_projection_slabs, simulate_flats_darks, simulation_attrs,
                              simulation_parameters)

    params = simulation_parameters(96, 8, 150, seed=3)
    flats, darks = simulate_flats_darks(params)
    path = tmp_path_factory.mktemp("scan") / "sample.h5"
    tomolab.io.write_dxchange(path, iter_projection_slabs(params), params.angles, flats, darks,
                              pixel_size=params.pixel_size, energy=params.energy,
                              distance=params.distance, attrs=simulation_attrs(params))
    return path, params


def test_open_sweep_reconstruct_save_reopen(sample, tmp_path):
    path, params = sample
    panel = ReconstructionPanel(path, backend="numpy", background=False)
    assert panel.file_task.error == "" and panel.scan is not None
    assert "dxchange" in panel.description.value and str(path.name) in panel.description.value
    # the auto estimate sets the centre and the preview shows the middle row at it, with axes
    assert abs(panel.center - params.center) < 1.0
    assert panel.preview_task.state == "done"
    assert panel.preview_slice.attrs["center"] == panel.center
    figure = next(m for m in panel._preview_hv.state.references() if hasattr(m, "xaxis"))
    assert figure.xaxis[0].axis_label == "x (µm)" and figure.yaxis[0].axis_label == "y (µm)"

    sweep = panel.center_sweep
    sweep.compute()
    assert sweep.task.state == "done", sweep.task.error
    sweep.index = int(np.argmax(sweep.stack["score"].values))
    sweep.use_button.click()
    assert panel.center == sweep.value
    assert abs(panel.center - params.center) <= 0.5
    assert panel.center_input.value == panel.center
    # the adoption is confirmed in step 3 and step 6, and the preview follows it
    assert f"{panel.center:.2f} px" in panel.center_note.value and "sweep" in panel.center_note.value
    assert f"{panel.center:.2f} px" in panel.recon_label.value
    assert panel.preview_slice.attrs["center"] == panel.center

    panel.rows_input.value = "2:6"
    panel.algorithm_input.value = "gridrec"
    volume = panel.reconstruct()
    assert panel.task.state == "done", panel.task.error
    assert volume is panel.volume
    assert volume.sizes["z"] == 4 and list(volume["row"].values) == [2, 3, 4, 5]
    assert volume.attrs["center"] == panel.center and volume.attrs["algorithm"] == "gridrec"
    # the reconstruction is the phantom: a few % RMS inside the sample
    truth = tomolab.data.true_volume(panel.scan, rows=slice(2, 6))
    n = volume.sizes["x"]
    yy, xx = np.mgrid[:n, :n] - (n - 1) / 2.0
    inside = np.hypot(yy, xx) < 0.35 * n
    err = np.sqrt(np.mean((volume.values - truth)[:, inside] ** 2) / np.mean(truth[:, inside] ** 2))
    assert err < 0.2
    # the viewers show it
    assert panel.slice_viewer is not None and panel.volume_viewer is not None
    assert panel.viewer_box.children == (panel.slice_viewer, panel.volume_viewer)
    assert panel.volume_viewer.wait() is not None

    out = tmp_path / "volume.zarr"
    panel.save(out, "zarr")
    assert panel.save_task.state == "done", panel.save_task.error
    back = tomolab.io.open_volume(out)
    np.testing.assert_array_equal(back.values, volume.values)
    assert back.attrs["center"] == volume.attrs["center"]


@pytest.mark.parametrize("fmt,name", [("hdf5", "volume.h5"), ("tiff", "volume_tiff")])
def test_save_other_formats(sample, tmp_path, fmt, name):
    path, params = sample
    panel = ReconstructionPanel(path, backend="numpy", background=False)
    panel.rows_input.value = "3:5"
    panel.reconstruct()
    panel.save(tmp_path / name, fmt)
    assert panel.save_task.state == "done", panel.save_task.error
    back = tomolab.io.open_volume(tmp_path / name)
    np.testing.assert_array_equal(np.asarray(back.values), panel.volume.values)


def test_format_choice_sets_the_suffix(sample):
    panel = ReconstructionPanel(sample[0], backend="numpy", background=False)
    assert panel.output_input.value.endswith("sample_recon.zarr")
    panel.format_input.value = "hdf5"
    assert panel.output_input.value.endswith("sample_recon.h5")
    panel.format_input.value = "tiff"
    assert panel.output_input.value.endswith("sample_recon")


def _errors(panel):
    """Which task bars of the panel show an error: {step name: message}."""
    bars = {"file": panel.file_task, "preview": panel.preview_task, "phase": panel.phase_task,
            "reconstruction": panel.task, "output": panel.save_task, "viewers": panel.viewer_task}
    if panel.center_sweep is not None:
        bars["centre"] = panel.center_sweep.task
    return {name: bar.error for name, bar in bars.items() if bar.error}


@pytest.mark.parametrize("case", ["missing", "empty", "not_hdf5", "folder"])
def test_a_bad_path_shows_in_step_1_and_nowhere_else(tmp_path, case):
    text = {"missing": str(tmp_path / "no_such_scan.h5"), "empty": "   ",
            "not_hdf5": str(tmp_path / "notes.h5"), "folder": str(tmp_path)}[case]
    (tmp_path / "notes.h5").write_text("not HDF5")
    panel = ReconstructionPanel(None, backend="numpy", background=False)
    panel.path_input.value = text
    panel.open_button.click()  # as the user does; no exception
    assert panel.scan is None
    errors = _errors(panel)
    assert list(errors) == ["file"], errors
    message = errors["file"]
    assert "Traceback" not in message and "tomolab-error" in panel.file_task.error_label.value
    if case == "empty":
        assert message.startswith("scan=''") and "type the path" in message
    else:
        assert Path(text).name in message
    assert panel.steps.selected_index == 0  # step 1 stays open, showing it

    # nothing open: the later steps say so instead of raising
    panel.reconstruct()
    assert "no scan is open" in panel.task.error
    panel.preview()
    assert "no scan is open" in panel.preview_task.error


def test_bad_values_show_errors_and_keep_the_state(sample, tmp_path):
    path, _ = sample
    panel = ReconstructionPanel(path, backend="numpy", background=False)
    good = panel.center
    panel.center_input.value = 1.0e6  # off the detector: the box's label, not the keyword
    assert panel.center == good and "centre is outside the detector" in panel.task.error
    assert panel.task.error.startswith("centre px=1000000.0")
    assert list(_errors(panel)) == ["reconstruction"]
    with pytest.raises(Exception, match="centre px=-5.0.*outside the detector"):
        panel.center = -5.0
    panel.reconstruct()  # never at a centre other than the one the box shows
    assert panel.volume is None and panel.task.error.startswith("centre px=1000000.0")
    panel.center_input.value = good
    panel.rows_input.value = "7:3"
    assert panel.reconstruct() is None
    assert panel.task.state == "error" and "rows" in panel.task.error and panel.volume is None

    panel.save(tmp_path / "nothing.zarr")
    assert "no volume to save" in panel.save_task.error
    assert not (tmp_path / "nothing.zarr").exists()

    # an existing output is not replaced unless asked
    panel.rows_input.value = "4"
    panel.reconstruct()
    foreign = tmp_path / "foreign.zarr"
    foreign.mkdir()
    (foreign / "keep").write_text("old")
    panel.save(foreign, "zarr")
    assert panel.save_task.state == "error" and "exists" in panel.save_task.error
    # not even when asked: tomolab replaces only what it wrote, and says so in the panel's words
    panel.save(foreign, "zarr", overwrite=True)
    assert panel.save_task.state == "error" and "tick 'overwrite'" in panel.save_task.error
    assert (foreign / "keep").read_text() == "old"
    target = tmp_path / "existing.zarr"
    panel.save(target, "zarr", overwrite=False)  # the tick box kept the last value
    assert panel.save_task.state == "done", panel.save_task.error
    panel.save(target, "zarr")
    assert panel.save_task.state == "error" and "exists" in panel.save_task.error
    panel.save(target, "zarr", overwrite=True)
    assert panel.save_task.state == "done", panel.save_task.error
    assert tomolab.io.open_volume(target).sizes["z"] == 1


def test_cancel_stops_the_reconstruction(sample):
    path, _ = sample
    panel = ReconstructionPanel(path, backend="numpy", background=False)

    def press_cancel(change):  # as the user would, once the first slab has been reported
        if change["new"] > 0:
            panel.task.cancel()

    panel.task.observe(press_cancel, "progress")
    assert panel.reconstruct() is None
    assert panel.task.state == "cancelled" and panel.task.error == ""
    assert panel.volume is None


def test_cancel_in_the_background(sample):
    path, _ = sample
    panel = ReconstructionPanel(path, backend="numpy", background=False)
    panel.background = True
    import threading

    started = threading.Event()
    release = threading.Event()

    def hold(change):  # keep the work at its first report until the test pressed Cancel
        if change["new"] == "starting":
            started.set()
            release.wait(10)

    panel.task.observe(hold, "message")
    panel.reconstruct()
    assert started.wait(10)
    panel.task.cancel()
    release.set()
    panel.task.wait(30)
    assert panel.task.state == "cancelled" and panel.volume is None


def test_phase_step_feeds_the_reconstruction():
    from tomolab.data import simulate_phase_scan

    scan = simulate_phase_scan(64, n_rows=12, n_angles=90, delta_beta=200.0, distance=0.1)
    panel = ReconstructionPanel(scan, backend="numpy", background=False)
    assert panel.delta_beta is None and panel.phase_sweep is None
    panel.center = scan.attrs["true_center"]
    panel.phase_checkbox.value = True
    sweep = panel.phase_sweep
    assert panel.phase_box.children == (sweep,) and sweep.center == panel.center
    sweep.compute()
    assert sweep.task.state == "done", sweep.task.error
    sweep.use_current()
    assert panel.delta_beta == sweep.value == sweep.best
    assert 50 <= panel.delta_beta <= 800  # the truth is 200; the score picks near it
    panel.rows_input.value = "5:7"
    volume = panel.reconstruct()
    assert volume.attrs["phase_delta_beta"] == panel.delta_beta

    panel.phase_checkbox.value = False
    assert panel.delta_beta is None
    assert "phase_delta_beta" not in panel.reconstruct().attrs
    panel.delta_beta = 100.0  # assigning a value switches phase retrieval on
    assert panel.phase_checkbox.value is True


def test_preprocessing_options_reach_the_reconstruction(sample):
    panel = ReconstructionPanel(sample[0], backend="numpy", background=False)
    panel.zingers_input.value = 0.2
    panel.stripes_input.value = "sorting"
    panel.rows_input.value = "4"
    volume = panel.reconstruct()
    assert volume.attrs["zingers_threshold"] == 0.2 and volume.attrs["stripes"] == "sorting"


def test_no_widget_shadows_the_ipywidgets_api():
    """A method that shadows ipywidgets' own (``open`` did once: it opens the comm) leaves the
    widget without a comm, and the browser shows "Error displaying widget: model not found"."""
    import inspect

    import ipywidgets

    import tomolab.widgets as tw

    api = {name for name in dir(ipywidgets.DOMWidget) if not name.startswith("_")}
    for cls_name in tw.__all__:
        cls = getattr(tw, cls_name)
        if isinstance(cls, type) and issubclass(cls, ipywidgets.Widget):
            for klass in cls.__mro__:
                if klass.__module__.startswith("tomolab"):
                    # an override that hands on to ipywidgets' own (``super().close()``) keeps
                    # the comm's behaviour; any other shadowing does not
                    clash = {n for n, v in vars(klass).items() if callable(v) and n in api
                             and f"super().{n}(" not in inspect.getsource(v)}
                    assert not clash, f"{klass.__name__} shadows ipywidgets: {sorted(clash)}"
    panel = tw.ReconstructionPanel(None, background=False)
    assert panel.comm is not None


def test_nothing_open_each_step_says_so_in_its_own_place():
    panel = ReconstructionPanel(None, backend="numpy", background=False)
    panel.reconstruct()
    assert "no scan is open" in panel.task.error
    panel.preview()
    assert "no scan is open" in panel.preview_task.error
    panel.phase_checkbox.value = True
    assert "no scan is open" in panel.phase_task.error
    panel.save()
    assert "no volume to save" in panel.save_task.error
    assert panel.file_task.error == ""


def test_the_overlay_sits_beside_the_sweep_and_its_centre_is_adopted(sample):
    from tomolab.viz import shift_from_center

    panel = ReconstructionPanel(sample[0], backend="numpy", background=False)
    overlay = panel.center_overlay
    assert overlay is not None and overlay.task.error == ""
    tabs = panel.center_box.children[-1]
    assert tabs.children == (panel.center_sweep, overlay)
    assert overlay.center == pytest.approx(panel.center)  # it starts at the auto estimate
    overlay.shift = shift_from_center(panel.scan.sizes["col"], 50.5)
    overlay.use_button.click()
    assert panel.center == 50.5 and panel.center_input.value == 50.5
    assert "50.50 px" in panel.center_note.value and "overlay" in panel.center_note.value
    assert panel.preview_slice.attrs["center"] == 50.5


def test_the_centre_step_shows_progress_and_cancels_in_its_own_bar(sample):
    panel = ReconstructionPanel(sample[0], backend="numpy", background=False)
    sweep, adopted = panel.center_sweep, panel.center
    seen = []

    def press_cancel(change):  # as the user would, once the first centres are reported
        seen.append(change["new"])
        if 0 < change["new"] < 1:
            sweep.task.cancel()

    sweep.task.observe(press_cancel, "progress")
    sweep.compute_button.click()
    assert sweep.task.state == "cancelled" and "centres" in sweep.task.message
    assert any(0 < p < 1 for p in seen) and sweep.stack is None
    assert panel.center == adopted  # nothing adopted from a cancelled sweep
    assert panel.task.state == "idle" and panel.task.error == ""  # step 6 knows nothing of it
    sweep.task.unobserve(press_cancel, "progress")
    sweep.compute_button.click()
    assert sweep.task.state == "done" and sweep.stack is not None


def test_a_centre_adopted_while_the_preview_runs_is_the_one_previewed(sample):
    """The newest centre wins: the preview in hand is cancelled and rerun, never refused."""
    import threading
    import time

    path, _ = sample
    panel = ReconstructionPanel(path, backend="numpy", background=False)
    panel.background = True
    started, release = threading.Event(), threading.Event()

    def hold(change):  # keep the first preview busy until the next centres came
        if change["new"] and not started.is_set():
            started.set()
            release.wait(10)

    panel.preview_task.observe(hold, "message")
    centers = [panel.center - 1.0, panel.center + 0.5, panel.center + 1.0]
    panel.center = centers[0]
    panel.preview()
    assert started.wait(10)
    for center in centers[1:]:
        panel.center = center
        panel.preview()
    release.set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (panel.preview_task.running or panel._rerun):
        time.sleep(0.05)
    assert panel.preview_task.error == ""
    assert panel.preview_slice.attrs["center"] == pytest.approx(centers[-1])
