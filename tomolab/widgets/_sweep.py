"""Sweep widgets: trial slices computed once, a slider that only indexes them.

:class:`SweepView` shows any stack ``(parameter, y, x)`` that carries a
``score`` coordinate along the parameter (as :func:`tomolab.sweep_center`
returns): the trial slice at the slider's position, the score curve with the
current and the best candidates marked, and a button that adopts the value
shown. :class:`CenterSweep` and :class:`PhaseSweep` add the controls that
decide what to compute, and compute it in one batched call on Compute.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import traitlets

from tomolab.widgets._bokeh import HoloViewsWidget
from tomolab.widgets._task import TaskBar, guarded

__all__ = ["SweepView", "CenterSweep", "PhaseSweep"]


def _row_input(scan, row):
    """The detector-row box of a sweep (default: the middle row)."""
    n_rows = int(scan.sizes["row"])
    return widgets.BoundedIntText(value=n_rows // 2 if row is None else row, min=0,
                                  max=n_rows - 1, description="row",
                                  layout=widgets.Layout(width="160px"))


class SweepView(widgets.VBox):
    """A stack of trial slices with a slider, the score curve and a "use this" button.

    Parameters
    ----------
    dim : str
        Name of the parameter dimension (``"center"`` or ``"ratio"``).
    label : str
        How the parameter is called on screen.
    size : int
        Width of the image in screen pixels.
    max_pixels : int
        Largest side of a trial slice sent to the browser (block-averaged).

    Traits
    ------
    index : int
        Position in the stack of the slice shown; validated to lie in the stack.
    value : float
        The adopted parameter value (set by "use this", or by assignment).
    best : float
        The best-scoring parameter of the current stack.
    """

    index = traitlets.Int(0, help="position in the stack of the slice shown")
    value = traitlets.Float(allow_none=True, default_value=None, help="the adopted value")
    best = traitlets.Float(allow_none=True, default_value=None, help="best-scoring value")

    def __init__(self, *, dim: str, label: str, size: int = 420, max_pixels: int = 768,
                 log_axis: bool = False, controls=(), **kwargs):
        import holoviews as hv

        from tomolab.viz import ensure_extension

        ensure_extension()
        self.dim, self.label, self.max_pixels, self.log_axis = dim, label, max_pixels, log_axis
        self._size = size
        self.stack = None
        self._clim = None  # one contrast for the whole stack, so slices compare
        self.task = TaskBar()
        self.slider = widgets.IntSlider(value=0, min=0, max=0, description=label,
                                        continuous_update=True, readout=True,
                                        layout=widgets.Layout(width="60%"))
        self.readout = widgets.Label("")
        self.use_button = widgets.Button(description=f"Use this {label}", icon="check",
                                         button_style="success", disabled=True)
        self.summary = widgets.HTML("")
        super().__init__(**kwargs)
        widgets.link((self, "index"), (self.slider, "value"))
        self.use_button.on_click(lambda _: self.use_current())

        Shown = hv.streams.Stream.define("Shown", index=0, revision=0)
        self._shown = Shown(index=0, revision=0)
        image = hv.DynamicMap(self._image, streams=[self._shown])
        curve = hv.DynamicMap(self._curve, streams=[self._shown])
        self.layout_plot = (image + curve).opts(shared_axes=False)
        self.plot_widget, self._plot = HoloViewsWidget(self.layout_plot)
        self.children = [*controls, widgets.HBox([self.slider, self.readout]),
                         self.plot_widget, widgets.HBox([self.use_button, self.summary]), self.task]

    # -- the stack -------------------------------------------------------------
    def show_stack(self, stack):
        """Show a new stack; the slider jumps to its best candidate."""
        if self.dim not in stack.dims or "score" not in stack.coords:
            raise ValueError(f"a sweep stack needs a {self.dim!r} dimension and a 'score' coordinate")
        self.stack = stack
        self._clim = None
        scores = stack["score"].values
        best_index = int(np.argmax(scores))
        self.best = float(stack[self.dim].values[best_index])
        with self.hold_trait_notifications():
            self.slider.max = stack.sizes[self.dim] - 1
            self.index = best_index
        self.use_button.disabled = False
        self.summary.value = (f"best {self.label}: <b>{self.best:.4g}</b> "
                              f"({stack.attrs.get('seconds', 0):.2f} s for "
                              f"{stack.sizes[self.dim]} trial slices)")
        self._update_readout()
        self._shown.event(index=self.index, revision=self._shown.revision + 1)

    @traitlets.validate("index")
    def _valid_index(self, proposal):
        n = self.stack.sizes[self.dim] if self.stack is not None else 1
        if not 0 <= proposal["value"] < n:
            raise traitlets.TraitError(f"index={proposal['value']} is outside the stack (0..{n - 1})")
        return proposal["value"]

    @traitlets.observe("index")
    def _on_index(self, change):
        # indexing only: nothing is computed when the slider moves
        self._update_readout()
        self._shown.event(index=change["new"])

    def _update_readout(self):
        if self.stack is None:
            self.readout.value = ""
            return
        score = float(self.stack["score"].values[self.index])
        self.readout.value = f"{self.label} {self.current:.4g} — score {score:.2f}"

    @property
    def current(self) -> float | None:
        """The parameter of the slice shown."""
        if self.stack is None:
            return None
        return float(self.stack[self.dim].values[self.index])

    def shown(self):
        """The trial slice on screen (block-averaged to ``max_pixels``), as a DataArray."""
        from tomolab.viz import get_slice

        plane = self.stack.rename({self.dim: "z"})
        return get_slice(plane, "z", self.index, max_pixels=self.max_pixels)

    def use_current(self):
        """Adopt the parameter of the slice shown as :attr:`value`."""
        if self.stack is not None:
            self.value = self.current

    def _compute_stack(self, trials, sweep):
        """Run ``sweep(trials())`` through the task bar; the result goes to :meth:`show_stack`.

        An error in ``trials`` (the controls) shows in the bar and computes nothing;
        ``self.background`` (set by the subclass) says where the sweep runs.
        """
        with self.task.guard():
            values = trials()
        if self.task.error:
            return

        def work(progress):
            progress(0.05, f"{values.size} trial slices")
            return sweep(values)

        self.task.run(work, on_done=self.show_stack, background=self.background)

    # -- drawing ------------------------------------------------------------------
    def _image(self, index, revision):
        import holoviews as hv

        if self.stack is None:
            return hv.Image(np.zeros((2, 2)), kdims=["x", "y"]).opts(
                width=self._size, height=self._size, title="press Compute", framewise=True)
        from tomolab.viz import contrast_limits

        if self._clim is None:
            self._clim = contrast_limits(self.stack.values[:, ::4, ::4])
        plane = self.shown()
        return hv.Image(plane.rename("value"), kdims=["x", "y"], vdims=["value"]).opts(
            cmap="gray", clim=tuple(self._clim), width=self._size, height=self._size,
            title=f"{self.label} {self.current:.4g}", tools=["hover", "box_zoom", "wheel_zoom"],
            active_tools=["wheel_zoom"], framewise=True)  # axes follow the stack, not the placeholder

    def _curve(self, index, revision):
        import holoviews as hv

        opts = dict(width=self._size, height=self._size // 2 + 60, logx=self.log_axis,
                    title="score (1 = sharpest)", tools=["hover"], framewise=True)
        if self.stack is None:  # same element types as below: DynamicMaps must not change type
            return (hv.Curve([], self.label, "score").opts(**opts) * hv.VLine(0.0)
                    * hv.Scatter([], self.label, "score"))
        params = self.stack[self.dim].values
        scores = self.stack["score"].values
        span = params.max() - params.min()
        low, high = (params.min() - 0.02 * span, params.max() + 0.02 * span) if not self.log_axis \
            else (params.min() / 1.05, params.max() * 1.05)
        # explicit limits: the axes must follow each new stack, not the empty first frame
        opts.update(xlim=(float(low), float(high)), ylim=(-0.05, 1.05))
        curve = hv.Curve((params, scores), self.label, "score").opts(**opts)
        here = hv.Scatter([(params[index], scores[index])], self.label, "score").opts(
            color="#d62728", size=10)
        best = hv.VLine(self.best).opts(color="#2ca02c", line_dash="dashed")
        return curve * best * here


class CenterSweep(SweepView):
    """Find the rotation centre by eye: a batched sweep of trial slices around an estimate.

    Compute runs :func:`tomolab.sweep_center` once for the whole range; the
    slider then only indexes the stack (instant), the score curve shows where
    the sharpest slice is, and "Use this centre" sets :attr:`value`, which the
    next step (:class:`ReconstructionPanel`, a script) reads.

    Parameters
    ----------
    scan : xarray.Dataset
    row : int, optional
        Detector row (default: the middle one).
    half_width, step : float
        Default range: estimate ± ``half_width`` in steps of ``step`` pixels.
    backend : str
        ``"auto"``, ``"numpy"`` or ``"cupy"``.
    compute : bool
        Compute the first sweep now (default) or wait for the button.

    Traits
    ------
    value : float
        The chosen centre (detector column in pixels).
    index, best :
        See :class:`SweepView`.

    Examples
    --------
    >>> import tomolab
    >>> scan = tomolab.data.simulate_scan(64, n_rows=4, n_angles=90)
    >>> sweep = CenterSweep(scan, backend="numpy", background=False)
    >>> abs(sweep.best - scan.attrs["true_center"]) <= 0.5
    True
    >>> sweep.index = 0; sweep.use_current(); sweep.value == float(sweep.stack.center[0])
    True
    """

    def __init__(self, scan, *, row: int | None = None, half_width: float = 10.0,
                 step: float = 0.5, backend: str = "auto", size: int = 420,
                 compute: bool = True, background: bool = True, **kwargs):
        n_cols = int(scan.sizes["col"])
        self.scan, self.backend, self.background = scan, backend, background
        self.row_input = _row_input(scan, row)
        self.start_input = widgets.BoundedFloatText(value=0.0, min=0.0, max=n_cols - 1, step=0.5,
                                                    description="from",
                                                    layout=widgets.Layout(width="170px"))
        self.stop_input = widgets.BoundedFloatText(value=n_cols - 1.0, min=0.0, max=n_cols - 1,
                                                   step=0.5, description="to",
                                                   layout=widgets.Layout(width="170px"))
        self.step_input = widgets.BoundedFloatText(value=step, min=0.05, max=50.0, step=0.05,
                                                   description="step",
                                                   layout=widgets.Layout(width="150px"))
        self.estimate_button = widgets.Button(description="Auto estimate", icon="magic")
        self.compute_button = widgets.Button(description="Compute", icon="play",
                                             button_style="primary")
        self.estimate_label = widgets.HTML("")
        controls = [widgets.HBox([self.row_input, self.start_input, self.stop_input,
                                  self.step_input]),
                    widgets.HBox([self.estimate_button, self.compute_button,
                                  self.estimate_label])]
        super().__init__(dim="center", label="centre", size=size, controls=controls, **kwargs)
        self._half_width = half_width
        self.estimate_button.on_click(lambda _: self.estimate())
        self.compute_button.on_click(lambda _: self.compute())
        if compute:
            self.estimate()
            self.compute()

    @guarded
    def estimate(self):
        """Auto-estimate the centre (Vo's method) and centre the range on it."""
        import tomolab
        from tomolab.center import LOW_SCORE

        center, score = tomolab.find_center(self.scan, row=int(self.row_input.value),
                                            backend=self.backend)
        n_cols = int(self.scan.sizes["col"])
        self.start_input.value = max(0.0, np.floor(center) - self._half_width)
        self.stop_input.value = min(n_cols - 1.0, np.floor(center) + self._half_width)
        trust = "" if score >= LOW_SCORE else " — <b>low score: check the sweep</b>"
        self.estimate_label.value = f"estimate {center:.2f} px (score {score:.2f}){trust}"
        return center

    def centers(self) -> np.ndarray:
        """The trial centres the controls describe."""
        from tomolab.errors import ParameterError

        start, stop, step = (float(w.value) for w in (self.start_input, self.stop_input,
                                                      self.step_input))
        if not stop > start:
            raise ParameterError("the range is empty", where="to", value=stop,
                                 fix=f"make 'to' larger than 'from' ({start})")
        count = int(np.floor((stop - start) / step + 1e-9)) + 1
        if count > 401:
            raise ParameterError("too many trial centres", where="step", value=step,
                                 fix=f"use at most 401 centres: a step of at least "
                                     f"{(stop - start) / 400:.2f}")
        return start + step * np.arange(count)

    def compute(self):
        """Compute the whole stack once (in the background unless told otherwise)."""
        import tomolab

        self._compute_stack(self.centers, lambda centers: tomolab.sweep_center(
            self.scan, row=int(self.row_input.value), centers=centers, backend=self.backend))


class PhaseSweep(SweepView):
    """Choose δ/β by eye: Paganin-retrieved trial slices over a log-spaced range.

    Energy, propagation distance and pixel size start from the scan's
    metadata and can be edited. Compute runs :func:`tomolab.sweep_phase` once;
    the slider indexes the stack; "Use this δ/β" sets :attr:`value`.

    Traits
    ------
    value : float
        The chosen δ/β.
    """

    def __init__(self, scan, *, center: float, row: int | None = None, ratios=None,
                 backend: str = "auto", size: int = 420, compute: bool = True,
                 background: bool = True, **kwargs):
        self.scan, self.backend, self.background = scan, backend, background
        self.center = float(center)
        ratios = np.geomspace(10, 3000, 25) if ratios is None else np.asarray(ratios, float)
        self.row_input = _row_input(scan, row)
        self.low_input = widgets.FloatLogSlider(value=float(ratios.min()), base=10, min=-1, max=5,
                                                description="δ/β from", readout_format=".3g")
        self.high_input = widgets.FloatLogSlider(value=float(ratios.max()), base=10, min=-1, max=5,
                                                 description="to", readout_format=".3g")
        self.count_input = widgets.BoundedIntText(value=ratios.size, min=2, max=101,
                                                  description="trials",
                                                  layout=widgets.Layout(width="160px"))
        attrs = scan.attrs
        self.energy_input = widgets.FloatText(value=float(attrs.get("energy") or 0.0),
                                              description="energy keV")
        self.distance_input = widgets.FloatText(value=float(attrs.get("distance") or 0.0),
                                                description="distance m")
        self.pixel_input = widgets.FloatText(value=float(attrs.get("pixel_size") or 0.0),
                                             description="pixel m")
        self.compute_button = widgets.Button(description="Compute", icon="play",
                                             button_style="primary")
        controls = [widgets.HBox([self.energy_input, self.distance_input, self.pixel_input]),
                    widgets.HBox([self.row_input, self.low_input, self.high_input,
                                  self.count_input, self.compute_button])]
        super().__init__(dim="ratio", label="δ/β", size=size, log_axis=True, controls=controls,
                         **kwargs)
        self.compute_button.on_click(lambda _: self.compute())
        if compute:
            self.compute()

    def ratios(self) -> np.ndarray:
        """The trial δ/β values the controls describe (log-spaced)."""
        from tomolab.errors import ParameterError

        low, high = float(self.low_input.value), float(self.high_input.value)
        if not high > low:
            raise ParameterError("the δ/β range is empty", where="to", value=high,
                                 fix=f"make 'to' larger than 'from' ({low:.3g})")
        return np.geomspace(low, high, int(self.count_input.value))

    def compute(self):
        """Compute the whole stack once (in the background unless told otherwise)."""
        from tomolab.api import sweep_phase

        self._compute_stack(self.ratios, lambda ratios: sweep_phase(
            self.scan, row=int(self.row_input.value), ratios=ratios, center=self.center,
            energy=float(self.energy_input.value) or None,
            distance=float(self.distance_input.value) or None,
            pixel_size=float(self.pixel_input.value) or None, backend=self.backend))
