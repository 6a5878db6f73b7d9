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

from tomolab.widgets._bokeh import HoloViewsWidget, LoadsBokehJS
from tomolab.widgets._task import TaskBar, guarded, on_kernel_thread

__all__ = ["CenterOverlay", "CenterSweep", "PhaseSweep", "SweepView"]

#: the widest a notebook's output area is in a narrow window (px): controls must fit it
NOTEBOOK_WIDTH = 750


def _row_input(scan, row):
    """The detector-row box of a sweep (default: the middle row)."""
    n_rows = int(scan.sizes["row"])
    return widgets.BoundedIntText(value=n_rows // 2 if row is None else row, min=0,
                                  max=n_rows - 1, description="row",
                                  layout=widgets.Layout(width="160px"))


def _px(width: int) -> widgets.Layout:
    return widgets.Layout(width=f"{int(width)}px")


class SweepView(LoadsBokehJS, widgets.VBox):
    """A stack of trial slices with a slider, the score curve and a "use this" button.

    Parameters
    ----------
    dim : str
        Name of the parameter dimension (``"center"`` or ``"ratio"``).
    label : str
        How the parameter is called on screen.
    unit : str
        Unit of the parameter on screen (``"px"`` for the centre; ``""`` for δ/β).
    value_format : str
        Format of the parameter on screen.
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
                 log_axis: bool = False, controls=(), unit: str = "", value_format: str = ".4g",
                 **kwargs):
        import holoviews as hv

        from tomolab.viz import ensure_extension

        ensure_extension()
        self.dim, self.label, self.max_pixels, self.log_axis = dim, label, max_pixels, log_axis
        self.unit, self.value_format = unit, value_format
        self._size = size
        self.stack = None
        self._clim = None  # one contrast for the whole stack, so slices compare
        self.task = TaskBar()
        # the slider walks the candidates and reads out their value (the index stays inside)
        self.slider = widgets.SelectionSlider(options=[("—", 0)], value=0, description=label,
                                              continuous_update=True, readout=True,
                                              layout=_px(min(size + 120, 460)))
        self.readout = widgets.Label("")
        self.use_button = widgets.Button(description=f"Use this {label}", icon="check",
                                         button_style="success", disabled=True,
                                         layout=widgets.Layout(width="auto"))
        self.summary = widgets.HTML("")
        self.adopted = widgets.HTML("", layout=widgets.Layout(margin="0 0 0 8px"))
        self.placeholder = widgets.HTML(
            f'<div class="tomolab-placeholder" style="width:{size}px;max-width:100%;'
            f'padding:2em 1em;border:1px dashed #999;color:#555;text-align:center">'
            f"Press <b>Compute</b>: the {label} range above is reconstructed once as a stack of "
            f"trial slices; the slider then pages through them and the score curve shows the "
            f"sharpest.</div>")
        super().__init__(**kwargs)
        widgets.link((self, "index"), (self.slider, "value"))
        self.use_button.on_click(lambda _: self.use_current())

        Shown = hv.streams.Stream.define("Shown", index=0, revision=0)
        self._shown = Shown(index=0, revision=0)
        image = hv.DynamicMap(self._image, streams=[self._shown])
        curve = hv.DynamicMap(self._curve, streams=[self._shown])
        self.layout_plot = (image + curve).opts(shared_axes=False)
        self.plot_widget, self._plot = HoloViewsWidget(self.layout_plot)
        self._controls = list(controls)
        self.children = self._layout(self.placeholder)

    def _layout(self, plot):
        return [*self._controls, widgets.HBox([self.slider, self.readout]), plot,
                widgets.HBox([self.use_button, self.summary]), self.adopted, self.task]

    def format_value(self, value) -> str:
        """``value`` of the parameter as shown on screen (with its unit).

        A ``value_format`` of ``"plain"`` writes a number as people do: no
        exponent, three significant digits (``1200``, ``316``, ``13.3``, ``0.5``).
        """
        value = float(value)
        if self.value_format == "plain":
            text = f"{value:.0f}" if abs(value) >= 100 else f"{float(f'{value:.3g}'):g}"
        else:
            text = format(value, self.value_format)
        return f"{text} {self.unit}" if self.unit else text

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
            self.slider.options = [(self.format_value(v), i)
                                   for i, v in enumerate(stack[self.dim].values)]
            self.index = best_index
            self.slider.value = best_index
        self.use_button.disabled = False
        self.summary.value = (f"best {self.label}: <b>{self.format_value(self.best)}</b> "
                              f"({stack.attrs.get('seconds', 0):.2f} s for "
                              f"{stack.sizes[self.dim]} trial slices)")
        self._update_readout()
        self._shown.event(index=self.index, revision=self._shown.revision + 1)
        if self.children[len(self._controls) + 1] is not self.plot_widget:
            # the figure was never shown: its first bundle is the empty frame, and the updates
            # since went to no view. Send the figure as it is now, then show it.
            self.plot_widget.update_from_model(self._plot.state)
            self.children = self._layout(self.plot_widget)

    @traitlets.validate("index")
    def _valid_index(self, proposal):
        n = self.stack.sizes[self.dim] if self.stack is not None else 1
        if not 0 <= proposal["value"] < n:
            raise traitlets.TraitError(f"index={proposal['value']} is outside the stack (0..{n - 1})")
        return proposal["value"]

    @traitlets.observe("index")
    @on_kernel_thread
    def _on_index(self, change):
        # indexing only: nothing is computed when the slider moves
        self._update_readout()
        self._shown.event(index=change["new"])

    def _update_readout(self):
        if self.stack is None:
            self.readout.value = ""
            return
        score = float(self.stack["score"].values[self.index])
        self.readout.value = f"score {score:.2f}"

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
        """Adopt the parameter of the slice shown as :attr:`value` (and say so)."""
        if self.stack is not None:
            self.value = self.current

    @traitlets.observe("value")
    def _on_value(self, change):
        self.adopted.value = ("" if change["new"] is None else
                              f'<span class="tomolab-adopted" style="color:#1b7f3b">&#10004; '
                              f"using {self.label} <b>{self.format_value(change['new'])}</b></span>")

    def _compute_stack(self, trials, sweep):
        """Run ``sweep(trials(), progress)`` through the task bar; the result goes to :meth:`show_stack`.

        ``progress`` is the task's :class:`~tomolab.widgets._task.Progress`: the
        sweep reports to it between batches, where a cancel also takes effect.
        An error in ``trials`` (the controls) shows in the bar and computes nothing;
        ``self.background`` (set by the subclass) says where the sweep runs.
        """
        with self.task.guard():
            values = trials()
        if self.task.error:
            return

        def work(progress):
            progress(0.0, f"{values.size} trial slices: starting")
            return sweep(values, progress)

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
        from tomolab.viz import in_length_unit, value_label

        plane, units = in_length_unit(self.shown())
        return hv.Image(plane.rename("value"),
                        kdims=[hv.Dimension("x", unit=units["x"]), hv.Dimension("y", unit=units["y"])],
                        vdims=[hv.Dimension("value", label=value_label(self.stack))]).opts(
            cmap="gray", clim=tuple(self._clim), width=self._size, height=self._size,
            title=f"{self.label} {self.format_value(self.current)}",
            tools=["hover", "box_zoom", "wheel_zoom"],
            active_tools=["wheel_zoom"], framewise=True)  # axes follow the stack, not the placeholder

    def _curve(self, index, revision):
        import holoviews as hv

        opts = dict(width=self._size, height=self._size // 2 + 60, logx=self.log_axis,
                    title="score (1 = sharpest)", tools=["hover"], framewise=True,
                    xlabel=f"{self.label} ({self.unit})" if self.unit else self.label)
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
                                                    description="from px",
                                                    layout=widgets.Layout(width="170px"))
        self.stop_input = widgets.BoundedFloatText(value=n_cols - 1.0, min=0.0, max=n_cols - 1,
                                                   step=0.5, description="to px",
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
        super().__init__(dim="center", label="centre", size=size, controls=controls, unit="px",
                         value_format=".2f", **kwargs)
        self._half_width = half_width
        self.estimate_button.on_click(lambda _: self.estimate())
        self.compute_button.on_click(lambda _: self.compute())
        if compute:
            self.estimate()
            self.compute()

    @guarded
    def estimate(self):
        """Auto-estimate the centre (:func:`tomolab.find_center`) and centre the range on it.

        The label names the methods that found it: Vo's and the 0°/180° pair
        on a scan over 180°, the centroid fit on one of less.
        """
        import tomolab
        from tomolab.center import LOW_SCORE

        from tomolab.errors import TomolabError

        try:
            found = tomolab.find_center(self.scan, row=int(self.row_input.value),
                                        backend=self.backend)
        except TomolabError as exc:  # in a widget's words: where a user types a centre
            raise exc.renamed({"center=COLUMN": "'centre px' in the panel"}) from None
        center, score = found
        methods = " + ".join(getattr(found, "estimates", {})) or "auto"
        n_cols = int(self.scan.sizes["col"])
        self.start_input.value = max(0.0, np.floor(center) - self._half_width)
        self.stop_input.value = min(n_cols - 1.0, np.floor(center) + self._half_width)
        trust = "" if score >= LOW_SCORE else " — <b>low score: check the sweep</b>"
        if methods == "centroid":  # a scan of less than 180°
            trust += (" — <small>less than 180°: the trial slices' sharpness moves little "
                      "with the centre; trust the centroid fit over the score curve</small>")
        self.estimate_label.value = (f"estimate <b>{center:.2f} px</b> ({methods}, score "
                                     f"{score:.2f}){trust}")
        return center

    def centers(self) -> np.ndarray:
        """The trial centres the controls describe."""
        from tomolab.errors import ParameterError

        start, stop, step = (float(w.value) for w in (self.start_input, self.stop_input,
                                                      self.step_input))
        if not stop > start:
            raise ParameterError("the range is empty", where="to px", value=stop,
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

        self._compute_stack(self.centers, lambda centers, handle: tomolab.sweep_center(
            self.scan, row=int(self.row_input.value), centers=centers, backend=self.backend,
            progress=lambda done, total: handle(done / total, f"{done} of {total} centres"),
            cancel=lambda: handle.cancelled))


def _no_pair_reason(scan) -> str:
    """Why ``scan`` has no 0°/180° overlay (no two projections 180° apart), or ``""``."""
    from tomolab.center import angular_coverage, opposite_pair
    from tomolab.errors import ParameterError

    angles = scan["angle"].values
    try:
        opposite_pair(angles)
    except ParameterError:
        return (f"The 0°/180° overlay needs two projections 180° apart, and this scan has none: "
                f"{angular_coverage(angles).describe()}. Find the centre with the trial slices "
                f"(centred on the centroid fit, which works on the range present), or give it "
                f"yourself ('centre px' in the panel, center= in a script).")
    return ""


class CenterOverlay(LoadsBokehJS, widgets.VBox):
    """Check the centre by eye: the 0° projection over the mirrored 180° one, shifted by hand.

    The image is the 0° projection minus the mirrored 180° projection moved
    by :attr:`shift` columns (line integrals, flat/dark corrected). At the
    right shift the two cancel and the image goes flat grey; a feature drawn
    twice (dark beside bright) shows which way to move. The shift means the
    centre ``(cols - 1) / 2 + shift / 2``
    (:func:`tomolab.viz.center_from_shift`), the column every tomolab
    function takes; "Use this centre" sets :attr:`value`.

    On a scan without two projections 180° apart (a ±60° tilt series,
    0°–120°) there is nothing to overlay: the widget says so in words, with
    the range the scan covers (:meth:`tomolab.center.Coverage.describe`),
    and :attr:`unavailable` holds that sentence; the controls stay disabled.

    Parameters
    ----------
    scan : xarray.Dataset
        A scan with two projections 180° apart (within one angular step).
    center : float, optional
        Where to start (default: the detector middle).
    backend : str
        Where to correct the two projections.
    size : int
        Width of the image in screen pixels.
    max_pixels : int
        Largest side of the image sent to the browser (block-averaged).

    Traits
    ------
    shift : float
        Columns the mirrored 180° projection is moved by; validated to keep the centre on the detector.
    value : float or None
        The adopted centre (detector column in pixels).

    Examples
    --------
    >>> import numpy as np, tomolab
    >>> scan = tomolab.data.simulate_scan(64, n_rows=4, n_angles=90)
    >>> overlay = CenterOverlay(scan, center=32.0, backend="numpy")
    >>> overlay.shift, overlay.center
    (1.0, 32.0)
    >>> overlay.shift = 3.0; overlay.use_current(); overlay.value
    33.0
    >>> tilt = tomolab.data.simulate_scan(64, n_rows=4, n_angles=61, angle_range=np.radians(122))
    >>> note = CenterOverlay(tilt, backend="numpy").unavailable
    >>> note.split(":")[0]
    'The 0°/180° overlay needs two projections 180° apart, and this scan has none'
    >>> "angles cover 0°–120° (61 projections)" in note
    True
    """

    shift = traitlets.Float(0.0, help="columns the mirrored 180° projection is moved by")
    value = traitlets.Float(allow_none=True, default_value=None, help="the adopted centre")

    def __init__(self, scan, *, center: float | None = None, backend: str = "auto",
                 size: int = 420, max_pixels: int = 768, **kwargs):
        import holoviews as hv

        from tomolab.viz import (
            ensure_extension,
            opposite_projections,
            shift_from_center,
        )

        ensure_extension()
        self.scan, self.backend, self.max_pixels, self._size = scan, backend, max_pixels, size
        self.n_cols = n_cols = int(scan.sizes["col"])
        self.task = TaskBar()
        self.pair = None
        #: why there is no overlay to draw (the scan has no projections 180° apart), or ""
        self.unavailable = ""
        with self.task.guard():
            from tomolab.devices import resolve_backend

            self.unavailable = _no_pair_reason(scan)
            if not self.unavailable:
                self.pair = opposite_projections(scan, backend=resolve_backend(backend))
        limit = float(n_cols - 1)
        self.shift_slider = widgets.FloatSlider(value=0.0, min=-limit, max=limit, step=0.5,
                                                description="shift px", readout_format=".1f",
                                                continuous_update=True,
                                                layout=_px(min(size + 120, 460)),
                                                disabled=self.pair is None)
        self.readout = widgets.HTML("")
        self.use_button = widgets.Button(description="Use this centre", icon="check",
                                         button_style="success", disabled=self.pair is None,
                                         layout=widgets.Layout(width="auto"))
        self.adopted = widgets.HTML("", layout=widgets.Layout(margin="0 0 0 8px"))
        help_text = widgets.HTML(
            "<small>0° projection minus the mirrored 180° one: drag the shift until the "
            "sample disappears into flat grey; the centre is (columns − 1)/2 + shift/2.</small>")
        super().__init__(**kwargs)
        widgets.link((self, "shift"), (self.shift_slider, "value"))
        self.use_button.on_click(lambda _: self.use_current())
        if self.pair is not None:
            reference = np.abs(self.pair.values[0])
            self._clim = float(np.percentile(reference, 99.5)) / 2 or 1.0
        else:
            self._clim = 1.0

        Shift = hv.streams.Stream.define("Shift", shift=0.0)
        self._stream = Shift(shift=0.0)
        self.plot_widget, self._plot = HoloViewsWidget(
            hv.DynamicMap(self._image, streams=[self._stream]))
        if self.unavailable:  # nothing to overlay: say why, in place of the controls
            import html

            self.children = [widgets.HTML(
                f'<div class="tomolab-unavailable" style="color:#b35900;max-width:{size + 120}px">'
                f"&#9888; {html.escape(self.unavailable, quote=False)}</div>"), self.task]
        else:
            self.children = [help_text, widgets.HBox([self.shift_slider, self.readout]),
                             self.plot_widget, widgets.HBox([self.use_button, self.adopted]),
                             self.task]
        start = (n_cols - 1) / 2.0 if center is None else float(center)
        self.shift = shift_from_center(n_cols, start)

    @property
    def center(self) -> float:
        """The centre (detector column) that the current shift means."""
        from tomolab.viz import center_from_shift

        return center_from_shift(self.n_cols, self.shift)

    @traitlets.validate("shift")
    def _valid_shift(self, proposal):
        value = float(proposal["value"])
        if not abs(value) <= self.n_cols - 1:
            raise traitlets.TraitError(
                f"shift px={value}: the centre would leave the detector; "
                f"fix: use a shift within ±{self.n_cols - 1}")
        return value

    @traitlets.observe("shift")
    @on_kernel_thread
    def _on_shift(self, change):
        self.readout.value = f"→ centre <b>{self.center:.2f} px</b>"
        self._stream.event(shift=change["new"])

    def difference(self, shift: float | None = None):
        """The image shown for ``shift`` (default: the current one): full resolution, (row, col)."""
        from tomolab.viz import mirror_overlay

        if self.pair is None:
            from tomolab.errors import ParameterError

            raise ParameterError(self.unavailable or "the opposite projections could not be read",
                                 where="shift", value=shift,
                                 fix="find the centre with the trial slices instead")
        shift = self.shift if shift is None else float(shift)
        return mirror_overlay(self.pair.values[0], self.pair.values[1], shift)

    def use_current(self):
        """Adopt the centre of the current shift as :attr:`value` (and say so)."""
        if self.pair is not None:
            self.value = self.center

    @traitlets.observe("value")
    def _on_value(self, change):
        self.adopted.value = ("" if change["new"] is None else
                              f'<span class="tomolab-adopted" style="color:#1b7f3b">&#10004; '
                              f"using centre <b>{change['new']:.2f} px</b></span>")

    def _image(self, shift):
        import holoviews as hv
        import xarray as xr

        from tomolab.viz import block_downsample

        if self.pair is None:
            data = xr.DataArray(np.full((2, 2), np.nan, np.float32), dims=("row", "col"),
                                coords={"row": [0, 1], "col": [0, 1]})
            title = "no projections 180° apart"
        else:
            data = xr.DataArray(self.difference(shift), dims=("row", "col"),
                                coords={"row": self.pair["row"].values,
                                        "col": self.pair["col"].values})
            data = block_downsample(data, (self.max_pixels, self.max_pixels))
            degrees = np.degrees(self.pair["angle"].values)
            title = f"{degrees[0]:.0f}° − mirrored {degrees[1]:.1f}°"
        # the image at its true aspect, but never a strip: a few rows are stretched (and it says so)
        width = max(self._size - 60, 100)
        true_height = width * self.pair.sizes["row"] / self.n_cols if self.pair is not None \
            else width
        height = int(np.clip(true_height, 100, 2 * self._size))
        if height > 1.05 * true_height:
            title += f" (rows ×{height / true_height:.1f})"
        return hv.Image(data.rename("difference"),
                        kdims=[hv.Dimension("col", unit="px"), hv.Dimension("row", unit="px")],
                        vdims=["difference"]).opts(
            cmap="RdBu_r", clim=(-self._clim, self._clim), frame_width=width, frame_height=height,
            invert_yaxis=True, colorbar=True, title=title, tools=["hover"], framewise=False)


#: the phase sweep's keywords as the labels of its boxes
PHASE_LABELS = {"energy": "energy keV", "distance": "distance m", "pixel_size": "pixel µm",
                "ratios": "from/to"}


class PhaseSweep(SweepView):
    """Choose δ/β by eye: Paganin-retrieved trial slices over a log-spaced range.

    Energy (keV), propagation distance (m) and pixel size (µm) start from
    the scan's metadata and can be edited. Compute runs :func:`tomolab.sweep_phase` once;
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
        narrow = {"description_width": "88px"}
        self.low_input = widgets.FloatLogSlider(value=float(ratios.min()), base=10, min=-1, max=5,
                                                description="δ/β from", readout_format=".3r",
                                                style=narrow, layout=_px(300))
        self.high_input = widgets.FloatLogSlider(value=float(ratios.max()), base=10, min=-1, max=5,
                                                 description="to", readout_format=".3r",
                                                 style=narrow, layout=_px(300))
        self.count_input = widgets.BoundedIntText(value=ratios.size, min=2, max=101,
                                                  description="trials", style=narrow,
                                                  layout=_px(170))
        attrs = scan.attrs
        # lengths as a beamline user reads them: the pixel in µm, the distance in m
        self.energy_input = widgets.FloatText(value=float(attrs.get("energy") or 0.0),
                                              description="energy keV", style=narrow,
                                              layout=_px(220))
        self.distance_input = widgets.FloatText(value=float(attrs.get("distance") or 0.0),
                                                description="distance m", style=narrow,
                                                layout=_px(220))
        self.pixel_input = widgets.FloatText(value=round(float(attrs.get("pixel_size") or 0.0) * 1e6, 6),
                                             description="pixel µm", style=narrow,
                                             layout=_px(220))
        self.compute_button = widgets.Button(description="Compute", icon="play",
                                             button_style="primary", layout=_px(110))
        self.row_input.layout = _px(170)
        self.row_input.style = narrow
        wrap = dict(flex_flow="row wrap", max_width=f"{NOTEBOOK_WIDTH}px")
        controls = [widgets.HBox([self.energy_input, self.distance_input, self.pixel_input],
                                 layout=widgets.Layout(**wrap)),
                    widgets.HBox([self.low_input, self.high_input], layout=widgets.Layout(**wrap)),
                    widgets.HBox([self.row_input, self.count_input, self.compute_button],
                                 layout=widgets.Layout(**wrap))]
        super().__init__(dim="ratio", label="δ/β", size=size, log_axis=True, controls=controls,
                         value_format="plain", **kwargs)
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
        from tomolab.errors import TomolabError

        def trials():
            self._check_boxes()
            return self.ratios()

        def sweep(ratios, handle):
            try:
                return sweep_phase(
                    self.scan, row=int(self.row_input.value), ratios=ratios, center=self.center,
                    energy=float(self.energy_input.value) or None,
                    distance=float(self.distance_input.value) or None,
                    pixel_size=self.pixel_size, backend=self.backend,
                    progress=lambda done, total: handle(done / total, f"{done} of {total} δ/β"),
                    cancel=lambda: handle.cancelled)
            except TomolabError as exc:  # e.g. a scan without a distance: name the box
                raise exc.renamed(PHASE_LABELS) from None

        self._compute_stack(trials, sweep)

    def _check_boxes(self):
        """Refuse an implausible energy, distance or pixel size as typed (0: the scan's own)."""
        from tomolab.errors import ParameterError
        from tomolab.sanity import RANGES

        typed = (("energy", self.energy_input.value, 1.0, "keV", "e.g. 25"),
                 ("distance", self.distance_input.value, 1.0, "m", "e.g. 0.5"),
                 ("pixel_size", self.pixel_input.value, 1e-6, "µm", "e.g. 6.5"))
        for key, value, to_si, unit, example in typed:
            low, high, _, what = RANGES[key]
            if float(value) == 0.0:
                continue
            if not low <= float(value) * to_si <= high:
                raise ParameterError(f"{what} {float(value):g} {unit} is outside "
                                     f"{low / to_si:g} to {high / to_si:g} {unit}",
                                     where=PHASE_LABELS[key], value=float(value),
                                     fix=f"type it in {unit}, {example}, or 0 for the scan's own")

    @property
    def pixel_size(self) -> float | None:
        """The pixel size in metres (entered in µm); None: the scan's own."""
        microns = float(self.pixel_input.value)
        return microns * 1e-6 if microns else None
