"""SliceViewer: orthogonal slices of a (possibly huge, lazy) volume."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import traitlets

from tomolab.viz import SLICE_AXES, as_volume, contrast_limits, get_slice, subsample, with_coords
from tomolab.widgets._bokeh import HoloViewsWidget, LoadsBokehJS
from tomolab.widgets._task import TaskBar, guarded, on_kernel_thread

__all__ = ["SliceViewer"]


#: the least height (screen pixels) of an xz / yz image; thinner volumes are stretched to it
MIN_CUT_HEIGHT = 100


class SliceViewer(LoadsBokehJS, widgets.VBox):
    """Slices of a ``(z, y, x)`` volume with sliders, contrast and a histogram.

    The ``xy`` view shows ``volume[z]``; with ``orthogonal=True`` the ``xz``
    view (at ``y``) and the ``yz`` view (at ``x``) sit beside it. Moving a
    slider reads only the slice it shows (a lazy dask/zarr volume reads the
    chunks that hold that plane); the last slice of each view is cached, so
    changing the contrast reads nothing. Contrast limits start at
    percentiles of a subsample of the volume, and the histogram of that
    subsample shows them as two vertical lines.

    Slices with a side longer than ``max_pixels`` are block-averaged to fit
    before they go to the browser (see :func:`tomolab.viz.get_slice`).

    Axes are in µm or mm (whichever reads better) when the volume's
    coordinates are in metres, as :func:`tomolab.reconstruct` makes them, and
    in voxels otherwise; the colour bars, the histogram and the contrast
    range are in the volume's unit (1/m for a reconstruction). An ``xz`` or
    ``yz`` view of a thin volume is stretched to a readable height
    (:data:`MIN_CUT_HEIGHT`) and its title says by how much.

    Parameters
    ----------
    volume : xarray.DataArray or array-like
        Volume with dims ``(z, y, x)``, in memory, dask- or zarr-backed.
    orthogonal : bool
        Also show the ``xz`` and ``yz`` views.
    percentiles : (float, float)
        Percentiles of the data for the initial contrast limits.
    max_pixels : int
        Largest side of a slice sent to the browser.
    cmap : str
        Colormap.
    size : int
        Width in pixels of the ``xy`` view.
    overlay : callable, optional
        ``overlay(axis, index, plane) -> holoviews element`` drawn on top of
        each view (used by :class:`~tomolab.widgets.Segmenter`); call
        :meth:`refresh` when what it draws changes.

    Traits
    ------
    z, y, x : int
        Slice positions (voxel indices), validated to lie inside the volume.
    clim : (float, float)
        Display range; validated to ``low < high``.
    cmap : str
        Colormap name.

    Examples
    --------
    >>> import numpy as np
    >>> viewer = SliceViewer(np.random.rand(8, 16, 16))
    >>> viewer.z_slider.value = 3
    >>> np.array_equal(viewer.shown("z").values, viewer.volume[3].values)
    True
    """

    z = traitlets.Int(0, help="index of the xy slice")
    y = traitlets.Int(0, help="index of the xz slice")
    x = traitlets.Int(0, help="index of the yz slice")
    clim = traitlets.Tuple(traitlets.Float(), traitlets.Float(), default_value=(0.0, 1.0),
                           help="display range (low, high)")
    cmap = traitlets.Unicode("gray", help="colormap name")

    def __init__(self, volume, *, orthogonal=True, percentiles=(0.5, 99.5), max_pixels=1024,
                 cmap="gray", size=420, overlay=None, **kwargs):
        import holoviews as hv

        from tomolab.viz import ensure_extension

        ensure_extension()  # BokehJS inline, before any holoviews options
        self.volume = as_volume(volume)
        self.orthogonal = bool(orthogonal)
        self.max_pixels = max_pixels
        self._overlay = overlay
        self._cache: dict[str, tuple[int, object]] = {}
        nz, ny, nx = (self.volume.sizes[d] for d in ("z", "y", "x"))

        sample = subsample(self.volume)
        if sample.size:
            vmin, vmax = float(sample.min()), float(sample.max())
        else:
            vmin, vmax = 0.0, 1.0
        lo, hi = contrast_limits(sample, percentiles)
        if not vmax > vmin:
            vmin, vmax = lo, hi

        self.task = TaskBar()
        self.z_slider = widgets.IntSlider(value=nz // 2, min=0, max=nz - 1, description="z",
                                          continuous_update=False)
        self.y_slider = widgets.IntSlider(value=ny // 2, min=0, max=ny - 1, description="y",
                                          continuous_update=False)
        self.x_slider = widgets.IntSlider(value=nx // 2, min=0, max=nx - 1, description="x",
                                          continuous_update=False)
        step = (vmax - vmin) / 500 if vmax > vmin else 0.01
        from tomolab.viz import value_label

        self.value_label = value_label(self.volume)
        units = self.volume.attrs.get("units")
        self.clim_slider = widgets.FloatRangeSlider(
            value=(lo, hi), min=vmin, max=vmax, step=step,
            description=f"contrast {units}" if units else "contrast",
            style={"description_width": "initial"},
            readout_format=".3g", continuous_update=False, layout=widgets.Layout(width="60%"))
        # one length unit for every view, from the largest extent of the volume
        self._length_unit = self._pick_length_unit()

        super().__init__(**kwargs)
        with self.hold_trait_notifications():
            self.z, self.y, self.x = nz // 2, ny // 2, nx // 2
            self.clim = (lo, hi)
            self.cmap = cmap
        for name in ("z", "y", "x"):
            widgets.link((self, name), (getattr(self, f"{name}_slider"), "value"))
        widgets.link((self, "clim"), (self.clim_slider, "value"))

        # holoviews streams: one per view (its slice index) + one for display settings
        Index = hv.streams.Stream.define("Index", index=0)
        # revision: bumped by refresh(), so DynamicMap's memo never serves a stale overlay
        Display = hv.streams.Stream.define("Display", clim=(lo, hi), cmap=cmap, revision=0)
        self._display = Display(clim=(lo, hi), cmap=cmap, revision=0)
        self._streams = {}
        views = []
        shape = {"z": nz, "y": ny, "x": nx}
        aspect = {}
        self.stretch = {}
        for axis in ("z", "y", "x") if self.orthogonal else ("z",):
            stream = Index(index=getattr(self, axis))
            self._streams[axis] = stream
            hdim, vdim = SLICE_AXES[axis]
            # sizes of the image itself (axes, title and colour bar come on top)
            width = max(int((size - 60) * shape[hdim] / max(nx, 1)), 100)
            true_height = width * shape[vdim] / max(shape[hdim], 1)
            height = int(round(true_height))
            if axis != "z" and true_height < MIN_CUT_HEIGHT:
                height = MIN_CUT_HEIGHT  # a 4-row volume would be a 4-pixel strip
            self.stretch[axis] = height / max(true_height, 1e-9)
            aspect[axis] = (width, max(height, 40))
            dmap = hv.DynamicMap(self._view_callback(axis, *aspect[axis]),
                                 streams=[stream, self._display])
            views.append(dmap)

        counts, edges = np.histogram(sample, bins=128, range=(vmin, vmax))
        hist = hv.Histogram((edges, counts), kdims=[hv.Dimension("value", label=self.value_label)],
                            vdims=["count"]).opts(
            width=size, height=160, color="#888888", line_color=None, title="histogram", xticks=4,
            tools=[], default_tools=["xpan", "xwheel_zoom", "reset"])
        lines = hv.DynamicMap(
            lambda clim, cmap, revision: hv.VLines(list(clim)).opts(color="#d62728", line_width=2),
            streams=[self._display])
        views.append(hist * lines)
        self.layout_plot = hv.Layout(views).cols(2).opts(shared_axes=False)
        self.plot_widget, self._plot = HoloViewsWidget(self.layout_plot)

        controls = [self.z_slider]
        if self.orthogonal:
            controls += [self.y_slider, self.x_slider]
        self.children = [widgets.HBox(controls), self.clim_slider, self.plot_widget, self.task]

    # -- traits ---------------------------------------------------------------
    @traitlets.validate("z", "y", "x")
    def _valid_index(self, proposal):
        name, value = proposal["trait"].name, proposal["value"]
        n = self.volume.sizes[name]
        if not 0 <= value < n:
            raise traitlets.TraitError(f"{name}={value} is outside the volume (0 <= {name} < {n})")
        return value

    @traitlets.validate("clim")
    def _valid_clim(self, proposal):
        lo, hi = (float(v) for v in proposal["value"])
        if not hi > lo:
            raise traitlets.TraitError(f"clim needs low < high, got ({lo}, {hi})")
        return (lo, hi)

    @traitlets.observe("z", "y", "x")
    @on_kernel_thread
    @guarded
    def _on_index(self, change):
        stream = getattr(self, "_streams", {}).get(change["name"])
        if stream is not None:
            stream.event(index=change["new"])

    @traitlets.observe("clim", "cmap")
    @on_kernel_thread
    @guarded
    def _on_display(self, change):
        if hasattr(self, "_display"):
            self._display.event(clim=tuple(self.clim), cmap=self.cmap)

    # -- data -----------------------------------------------------------------
    def plane(self, axis, index):
        """The slice ``axis=index`` as sent to the browser (read once, cached)."""
        cached = self._cache.get(axis)
        if cached is not None and cached[0] == index:
            return cached[1]
        plane = with_coords(get_slice(self.volume, axis, index, max_pixels=self.max_pixels))
        self._cache[axis] = (index, plane)
        return plane

    def shown(self, axis="z"):
        """The slice currently shown in the view normal to ``axis`` (a DataArray)."""
        return self.plane(axis, getattr(self, axis))

    def displayed(self, axis="z"):
        """The image array the Bokeh plot holds for the view normal to ``axis``.

        This is what the browser draws (rows along the view's vertical dim),
        read back from the live Bokeh model; tests compare it with the volume.
        """
        from holoviews.plotting.bokeh.raster import RasterPlot

        hdim, vdim = SLICE_AXES[axis]
        for plot in self._plot.traverse(lambda p: p, [RasterPlot]):
            frame = plot.current_frame
            if frame is not None and [d.name for d in frame.kdims] == [hdim, vdim] \
                    and frame.vdims[0].name == "value":
                return np.asarray(plot.handles["source"].data["image"][0])
        raise KeyError(f"no view normal to {axis!r}")

    def _pick_length_unit(self):
        from tomolab.viz import length_unit

        extents = [float(np.ptp(self.volume[d].values)) for d in ("z", "y", "x")
                   if d in self.volume.coords and self.volume[d].attrs.get("units") == "m"]
        return length_unit(max(extents, default=0.0))

    @on_kernel_thread
    def refresh(self):
        """Redraw every view (e.g. after the overlay changed); reads nothing new."""
        self._display.event(revision=self._display.revision + 1)

    def _view_callback(self, axis, width, height):
        import holoviews as hv

        hdim, vdim = SLICE_AXES[axis]
        title = {"z": "xy", "y": "xz", "x": "yz"}[axis]

        from tomolab.viz import in_length_unit

        stretch = self.stretch.get(axis, 1.0)
        note = f" ({vdim} stretched ×{stretch:.1f})" if stretch > 1.05 else ""

        def callback(index, clim, cmap, revision):
            plane = self.plane(axis, index)
            shown, dims_units = in_length_unit(plane, self._length_unit)
            img = hv.Image(shown.rename("value"),
                           kdims=[hv.Dimension(hdim, unit=dims_units[hdim]),
                                  hv.Dimension(vdim, unit=dims_units[vdim])],
                           vdims=[hv.Dimension("value", label=self.value_label)]).opts(
                cmap=cmap, clim=tuple(clim), invert_yaxis=True, colorbar=True,
                frame_width=width, frame_height=height, title=f"{title} at {axis}={index}{note}",
                tools=["hover"], toolbar="right")
            if self._overlay is not None:
                over = self._overlay(axis, index, shown)
                if over is not None:
                    return img * over
            return img

        return callback
