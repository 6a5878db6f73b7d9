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
    x = widget.stack.x.values
    assert image.x_range.start <= x.min() and image.x_range.end >= x.max()
    assert image.x_range.end - image.x_range.start < 2 * (x.max() - x.min())
    centres = widget.stack.center.values
    assert curve.x_range.start <= centres.min() and curve.x_range.end >= centres.max()


def test_bad_range_is_a_message_in_the_widget(sweep):
    widget, _ = sweep
    widget.start_input.value, widget.stop_input.value = 60.0, 50.0
    widget.compute()
    assert "the range is empty" in widget.task.error and "fix" in widget.task.error
