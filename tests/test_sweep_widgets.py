"""CenterSweep and PhaseSweep in Python: the stack is computed once, the slider only indexes it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("ipywidgets")
pytest.importorskip("holoviews")
pytest.importorskip("jupyter_bokeh")

import tomolab  # noqa: E402
from tomolab.widgets import CenterSweep  # noqa: E402


@pytest.fixture(scope="module")
def sweep():
    scan = tomolab.data.simulate_scan(96, n_rows=4, n_angles=120)
    return CenterSweep(scan, backend="numpy", background=False), scan


def _figures(widget):
    """The (image, score curve) Bokeh figures; references() is a set, so tell them by title."""
    figures = [m for m in widget._plot.state.references()
               if hasattr(m, "x_range") and hasattr(m, "renderers")]
    curve = next(f for f in figures if f.title.text.startswith("score"))
    image = next(f for f in figures if f is not curve)
    return image, curve


def test_best_centre_and_use_this(sweep):
    widget, scan = sweep
    assert abs(widget.best - scan.attrs["true_center"]) <= 0.5
    assert widget.stack.center.values[widget.index] == widget.best  # the slider starts there
    widget.index = 3
    widget.use_current()
    assert widget.value == float(widget.stack.center.values[3])


def test_moving_the_slider_computes_nothing(sweep, monkeypatch):
    widget, _ = sweep
    monkeypatch.setattr(tomolab, "sweep_center", lambda *a, **k: pytest.fail("recomputed"))
    for i in (0, 5, 10):
        widget.index = i
        assert np.array_equal(widget.shown().values, widget.stack.values[i])


def test_plot_axes_follow_the_stack_not_the_empty_first_frame(sweep):
    """The browser showed empty plots once: the axes kept the placeholder's ranges."""
    widget, _ = sweep
    image, curve = _figures(widget)
    x = widget.stack.x.values / 1e-6  # the axes are in µm (the scan's pixel is 1 µm)
    assert image.xaxis[0].axis_label == "x (µm)"
    assert image.x_range.start <= x.min() and image.x_range.end >= x.max()
    assert image.x_range.end - image.x_range.start < 2 * (x.max() - x.min())
    centres = widget.stack.center.values
    assert curve.x_range.start <= centres.min() and curve.x_range.end >= centres.max()


def test_bad_range_is_a_message_in_the_widget(sweep):
    widget, _ = sweep
    widget.start_input.value, widget.stop_input.value = 60.0, 50.0
    widget.compute()
    assert "the range is empty" in widget.task.error and "fix" in widget.task.error


def test_readouts_name_the_value_not_the_index(sweep):
    """The slider reads out the candidate's centre in px; its index stays inside."""
    widget, _ = sweep
    widget.index = 4
    centre = float(widget.stack.center.values[4])
    assert widget.slider.label == f"{centre:.2f} px"
    assert widget.readout.value.startswith("score ") and str(4) not in widget.readout.value[:6]
    assert f"{widget.best:.2f} px" in widget.summary.value
    _, curve = _figures(widget)
    assert curve.xaxis[0].axis_label == "centre (px)"


def test_use_this_centre_confirms_what_was_adopted(sweep):
    widget, _ = sweep
    widget.index = 2
    widget.use_button.click()
    assert widget.value == float(widget.stack.center.values[2])
    assert "tomolab-adopted" in widget.adopted.value
    assert f"{widget.value:.2f} px" in widget.adopted.value


def test_before_compute_a_placeholder_explains_what_to_do():
    scan = tomolab.data.simulate_scan(48, n_rows=2, n_angles=60)
    widget = CenterSweep(scan, backend="numpy", background=False, compute=False)
    assert widget.placeholder in widget.children and widget.plot_widget not in widget.children
    assert "Compute" in widget.placeholder.value
    widget.compute()
    assert widget.plot_widget in widget.children and widget.placeholder not in widget.children
    # the figure the browser gets when it first shows the plot is the stack, not the empty frame
    bundle = str(widget.plot_widget.render_bundle)
    assert "press Compute" not in bundle and f"centre {widget.best:.2f} px" in bundle


def _declared_width(w):
    text = w.layout.width or ""
    assert text.endswith("px"), f"{w.description!r} has no width in px ({text!r})"
    return int(text[:-2])


def test_phase_sweep_controls_fit_a_narrow_notebook():
    from tomolab.widgets import PhaseSweep
    from tomolab.widgets._sweep import NOTEBOOK_WIDTH

    scan = tomolab.data.simulate_scan(48, n_rows=2, n_angles=60)
    widget = PhaseSweep(scan, center=scan.attrs["true_center"], backend="numpy",
                        background=False, compute=False)
    rows = [c for c in widget.children if isinstance(c, __import__("ipywidgets").HBox)]
    for row in rows[:3]:  # the control rows
        assert sum(_declared_width(w) for w in row.children) <= NOTEBOOK_WIDTH
    # the pixel size is entered in µm and reaches the sweep in metres
    assert widget.pixel_input.description == "pixel µm"
    assert widget.pixel_input.value == pytest.approx(scan.attrs["pixel_size"] * 1e6)
    widget.pixel_input.value = 2.5
    assert widget.pixel_size == pytest.approx(2.5e-6)
    assert widget.placeholder in widget.children


@pytest.mark.parametrize("true_center", [43.6, 51.3])
def test_overlay_shift_maps_to_the_centre_of_a_simulated_scan(true_center):
    """centre = (cols - 1)/2 + shift/2: the shift that cancels the pair is the known centre."""
    from tomolab.viz import center_from_shift
    from tomolab.widgets import CenterOverlay

    scan = tomolab.data.simulate_scan(96, n_rows=4, n_angles=180, center=true_center,
                                      angle_range=2 * np.pi)
    overlay = CenterOverlay(scan, backend="numpy")
    assert overlay.task.error == ""
    assert np.degrees(np.diff(overlay.pair["angle"].values))[0] == pytest.approx(180.0)
    shifts = np.arange(-30.0, 30.01, 0.25)
    mismatch = [float(np.mean(overlay.difference(s)[:, 10:-10] ** 2)) for s in shifts]
    best = shifts[int(np.argmin(mismatch))]
    assert abs(center_from_shift(96, best) - true_center) <= 0.25
    # the slider's shift and the adopted value follow the same relation
    overlay.shift = best
    assert overlay.center == pytest.approx((96 - 1) / 2 + best / 2)
    assert f"{overlay.center:.2f} px" in overlay.readout.value
    overlay.use_button.click()
    assert overlay.value == overlay.center and f"{overlay.value:.2f} px" in overlay.adopted.value
    with pytest.raises(__import__("traitlets").TraitError, match="shift px"):
        overlay.shift = 500.0


def test_overlay_without_an_opposite_pair_says_so_in_words():
    from tomolab.widgets import CenterOverlay

    scan = tomolab.data.simulate_scan(48, n_rows=2, n_angles=30, angle_range=np.pi / 2)
    overlay = CenterOverlay(scan, backend="numpy")
    assert overlay.pair is None and overlay.task.error == ""  # not an error: a fact of the scan
    assert "needs two projections 180° apart" in overlay.unavailable
    assert "angles cover 0°–87° (30 projections)" in overlay.unavailable
    assert overlay.unavailable in overlay.children[0].value
    assert overlay.shift_slider.disabled and overlay.use_button.disabled
    overlay.use_current()
    assert overlay.value is None


def test_phase_sweep_reads_out_plain_numbers():
    from tomolab.widgets import PhaseSweep

    scan = tomolab.data.simulate_scan(48, n_rows=2, n_angles=60)
    widget = PhaseSweep(scan, center=scan.attrs["true_center"], backend="numpy",
                        background=False, compute=False)
    assert [widget.format_value(v) for v in (1234.5, 316.2, 13.33, 0.5)] == \
        ["1234", "316", "13.3", "0.5"]
    assert "e+" not in widget.low_input.readout_format + widget.high_input.readout_format


@pytest.mark.parametrize("box, typed, says", [
    ("energy_input", -5.0, "energy keV=-5.0"),
    ("energy_input", 1e7, "energy keV=10000000.0"),
    ("distance_input", 650.0, "distance m=650.0"),
    ("pixel_input", -3.0, "pixel µm=-3.0"),
    ("pixel_input", 5e4, "pixel µm=50000.0"),
])
def test_phase_sweep_refuses_implausible_boxes_in_their_own_units(box, typed, says):
    from tomolab.widgets import PhaseSweep

    scan = tomolab.data.simulate_scan(48, n_rows=2, n_angles=60)
    widget = PhaseSweep(scan, center=scan.attrs["true_center"], backend="numpy",
                        background=False, compute=False)
    getattr(widget, box).value = typed
    widget.compute()
    assert widget.task.error.startswith(says), widget.task.error
    assert "fix: type it in" in widget.task.error and widget.stack is None
    getattr(widget, box).value = 0.0  # the scan's own value again: computes
    widget.compute()
    assert not widget.task.error and widget.stack is not None


def test_phase_sweep_names_its_box_for_a_missing_distance():
    from tomolab.widgets import PhaseSweep

    scan = tomolab.data.simulate_scan(48, n_rows=2, n_angles=60)
    scan.attrs.pop("distance", None)
    widget = PhaseSweep(scan, center=scan.attrs["true_center"], backend="numpy",
                        background=False, compute=False)
    widget.distance_input.value = 0.0
    widget.compute()
    assert widget.task.error.startswith("distance m"), widget.task.error
    assert "distance=" not in widget.task.error


def _wide_range(widget, count):
    """Set the centre range of ``widget`` to ``count`` trial centres 0.5 px apart, around the truth."""
    start = np.floor(widget.scan.attrs["true_center"]) - 0.25 * (count - 1)
    widget.start_input.value = start
    widget.stop_input.value = start + 0.5 * (count - 1)
    widget.step_input.value = 0.5
    assert widget.centers().size == count


def test_progress_moves_during_a_cpu_sweep():
    scan = tomolab.data.simulate_scan(96, n_rows=4, n_angles=120)
    widget = CenterSweep(scan, backend="numpy", background=False, compute=False)
    _wide_range(widget, 61)
    seen = []
    widget.task.observe(lambda change: seen.append((widget.task.progress, widget.task.message)),
                        "message")
    widget.compute()
    assert widget.task.state == "done", widget.task.error
    between = [(p, m) for p, m in seen if 0 < p < 1]
    assert len(between) >= 2, seen  # batches of two centres first, then more: several reports
    fractions = [p for p, _ in between]
    assert fractions == sorted(fractions) and len(set(fractions)) == len(fractions)
    assert all(m.endswith("of 61 centres") for _, m in between)
    assert widget.stack.sizes["center"] == 61


def test_cancel_ends_the_sweep_the_bar_says_so_and_a_rerun_works():
    import threading

    scan = tomolab.data.simulate_scan(96, n_rows=4, n_angles=120)
    widget = CenterSweep(scan, backend="numpy", background=True, compute=False)
    _wide_range(widget, 61)
    reported, release = threading.Event(), threading.Event()

    def hold(change):  # the sweep's first batch is reported: keep it there until Cancel is pressed
        if 0 < change["new"] < 1 and not reported.is_set():
            reported.set()
            release.wait(10)

    widget.task.observe(hold, "progress")
    widget.compute_button.click()
    assert reported.wait(30), widget.task.error
    widget.task.cancel_button.click()  # as the user does
    assert widget.task.cancel_button.description == "Cancelling…"
    release.set()
    widget.task.wait(30)
    assert widget.task.state == "cancelled" and widget.task.error == ""
    message = widget.task.message
    assert message.startswith("cancelled") and "of 61 centres" in message
    done = int(message.split("(")[1].split(" of")[0])
    assert 0 < done < 61  # stopped between batches, not after the last one
    assert widget.task.status.value == message and widget.task._row.layout.display == "flex"
    assert widget.stack is None and widget.placeholder in widget.children

    widget.task.unobserve(hold, "progress")
    widget.compute_button.click()  # again, to the end
    widget.task.wait(60)
    assert widget.task.state == "done", widget.task.error
    assert widget.stack.sizes["center"] == 61 and widget.plot_widget in widget.children
    assert abs(widget.best - scan.attrs["true_center"]) <= 0.5


def test_phase_sweep_reports_progress_and_cancels():
    from tomolab.data.phase_contrast import simulate_phase_scan
    from tomolab.widgets import PhaseSweep

    scan = simulate_phase_scan(64, n_rows=12, n_angles=90, delta_beta=200.0, distance=0.1)
    widget = PhaseSweep(scan, center=scan.attrs["true_center"], backend="numpy",
                        background=False, compute=False)

    def press_cancel(change):  # once the first batch of ratios is reported
        if 0 < change["new"] < 1:
            widget.task.cancel()

    widget.task.observe(press_cancel, "progress")
    widget.compute()
    assert widget.task.state == "cancelled" and "of 25 δ/β" in widget.task.message
    assert widget.stack is None
    widget.task.unobserve(press_cancel, "progress")
    seen = []
    widget.task.observe(lambda change: seen.append(change["new"]), "progress")
    widget.compute()
    assert widget.task.state == "done", widget.task.error
    assert widget.stack.sizes["ratio"] == 25 and len([p for p in seen if 0 < p < 1]) >= 2
