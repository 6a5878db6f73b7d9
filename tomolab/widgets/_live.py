"""LiveView: the three slices of a :class:`tomolab.live.LiveReconstruction`, updating as frames arrive."""

from __future__ import annotations

import html
import threading

import ipywidgets as widgets
import numpy as np
import traitlets

from tomolab.widgets._bokeh import HoloViewsWidget, LoadsBokehJS
from tomolab.viz import MAX_SLICE_PIXELS
from tomolab.widgets._task import TaskBar, call_in_kernel_thread, guarded, on_kernel_thread

__all__ = ["LiveView"]

#: the least height (screen pixels) of an xz / yz view
MIN_PLANE_HEIGHT = 100

#: which slice each view shows, its axes, and the trait(s) that move it
_VIEWS = {"xy": ("x", "y"), "xz": ("x", "z"), "yz": ("y", "z")}


def stats_line(stats: dict) -> str:
    """The one-line summary of :attr:`tomolab.live.LiveReconstruction.stats` that the view shows.

    Examples
    --------
    >>> stats_line({"state": "running", "in_slices": 120, "dropped": 0, "missing": 2,
    ...             "duplicates": 1, "errors": 0, "ingest_gbps": 0.0213, "latency_median": 0.012,
    ...             "latency_p95": 0.031})
    'running · 120 projections in the slices · 0 dropped · 2 missing · 1 duplicate · 0 errors · 0.021 GB/s · latency 12 ms (p95 31 ms)'
    """
    parts = [stats["state"], f"{stats['in_slices']} projections in the slices",
             f"{stats['dropped']} dropped", f"{stats['missing']} missing",
             f"{stats['duplicates']} duplicate{'' if stats['duplicates'] == 1 else 's'}",
             f"{stats['errors']} error{'' if stats['errors'] == 1 else 's'}",
             f"{stats['ingest_gbps']:.3f} GB/s"]
    if stats.get("latency_median") is not None:
        parts.append(f"latency {1e3 * stats['latency_median']:.0f} ms "
                     f"(p95 {1e3 * stats['latency_p95']:.0f} ms)")
    return " · ".join(parts)


class LiveView(LoadsBokehJS, widgets.VBox):
    """The ``xy``, ``xz`` and ``yz`` slices of a live reconstruction, redrawn while frames arrive.

    The view takes a :meth:`~tomolab.live.LiveReconstruction.snapshot` at most
    ``refresh_hz`` times a second, and only when new frames went into the
    slices (a thread of its own, from :meth:`start` until :meth:`close`,
    decides; the redraw runs on the kernel's thread, as the browser's own
    changes to the Bokeh figures do, so a cell that keeps the kernel busy
    holds the redraws until it ends -- the reconstruction itself goes on).
    Moving a slider (on release) or typing a centre recomputes the slices
    from the live reconstruction's buffer at once. The stats line gives
    frames, drops, missing frames, errors, GB/s and latency; when the source
    is lost a message says so and the slices stay. When the scan has ended,
    *Reconstruct the volume* runs :func:`tomolab.reconstruct_to` of the
    frames that arrived (:meth:`~tomolab.live.LiveReconstruction.to_scan`)
    into the path in the box, with the view's centre.

    Parameters
    ----------
    live : tomolab.live.LiveReconstruction
        Started or not: *Start* starts it (the view starts it too when
        ``start=True``).
    refresh_hz : float
        Redraws a second, at most.
    size : int
        Width in screen pixels of each view.
    cmap : str
        Colormap.
    max_pixels : int or None
        Largest side (pixels) of a slice sent to the browser: larger planes
        are block-averaged down (a 2048-wide detector's three planes are
        48 MB a redraw in full); ``None`` sends them whole. :attr:`snapshot`
        keeps the full slices.
    start : bool
        Start the live reconstruction and the redraws now.

    Traits
    ------
    slice_row : int
        Detector row of the ``xy`` slice.
    point_y, point_x : int
        The voxel ``(y, x)`` of the slice grid that the ``xz`` and ``yz``
        planes go through. All three are validated to lie in the slices.
    center : float
        Rotation axis column in pixels.
    clim : (float, float)
        Display range (``auto_contrast`` sets it from each snapshot's percentiles).
    revision : int
        Snapshots drawn so far.
    """

    slice_row = traitlets.Int(0, help="detector row of the xy slice")
    point_y = traitlets.Int(0, help="voxel row of the xz plane")
    point_x = traitlets.Int(0, help="voxel column of the yz plane")
    center = traitlets.Float(0.0, help="rotation axis column (pixels)")
    clim = traitlets.Tuple(traitlets.Float(), traitlets.Float(), default_value=(0.0, 1.0))
    revision = traitlets.Int(0, help="snapshots drawn")

    def __init__(self, live, *, refresh_hz: float = 5.0, size: int = 320, cmap: str = "gray",
                 max_pixels: int | None = MAX_SLICE_PIXELS, start: bool = True, **kwargs):
        from tomolab.viz import ensure_extension

        ensure_extension()
        self.live = live
        self._size, self._cmap = int(size), cmap
        self.max_pixels = max_pixels
        self.refresh_hz = float(refresh_hz)
        self.snapshot = None
        self._drawn_version = -1
        self._lock = threading.RLock()
        self._shown = None  # the planes of self.snapshot as the browser gets them
        self._draw = None  # the plots are made with the first snapshot (its shape sets theirs)
        self._plot = None
        self._closing = threading.Event()
        self._redraw_queued = threading.Event()
        self._refreshing = self._refresh_again = False
        self._thread = None

        self.task = TaskBar()
        slider = {"min": 0, "max": 1, "value": 0, "continuous_update": False}
        self.z_slider = widgets.IntSlider(description="z (row)", **slider)
        self.y_slider = widgets.IntSlider(description="y", **slider)
        self.x_slider = widgets.IntSlider(description="x", **slider)
        self.center_input = widgets.BoundedFloatText(value=live.center, min=0.0, max=1e6, step=0.25,
                                                     description="centre px")
        self.clim_slider = widgets.FloatRangeSlider(
            value=(0.0, 1.0), min=0.0, max=1.0, step=1e-3, description="contrast",
            readout_format=".3g", continuous_update=False, layout=widgets.Layout(width="50%"))
        self.auto_contrast = widgets.Checkbox(value=True, description="auto contrast", indent=False)
        self.start_button = widgets.Button(description="Start", icon="play")
        self.stop_button = widgets.Button(description="Stop", icon="stop")
        self.stats_label = widgets.HTML(stats_line(live.stats))
        self.message = widgets.HTML("")
        self.output_input = widgets.Text(value="live_volume.zarr", description="volume to",
                                         layout=widgets.Layout(width="40%"))
        self.volume_button = widgets.Button(description="Reconstruct the volume", icon="cubes",
                                            disabled=True, layout=widgets.Layout(width="auto"))
        self.volume_label = widgets.HTML("")
        self.volume = None

        super().__init__(**kwargs)
        self.center = live.center
        widgets.link((self, "clim"), (self.clim_slider, "value"))
        for name, slider in (("slice_row", self.z_slider), ("point_y", self.y_slider),
                             ("point_x", self.x_slider)):
            widgets.link((self, name), (slider, "value"))

        self.plot_widget = widgets.HTML("<i>the slices appear with the first projection</i>")
        self.start_button.on_click(lambda _: self.start())
        self.stop_button.on_click(lambda _: self.stop())
        self.volume_button.on_click(lambda _: self.reconstruct_volume())
        self.center_input.observe(self._on_center_box, "value")
        self.children = [
            widgets.HBox([self.start_button, self.stop_button, self.center_input,
                          self.auto_contrast]),
            widgets.HBox([self.z_slider, self.y_slider, self.x_slider]),
            self.clim_slider, self.plot_widget, self.stats_label, self.message,
            widgets.HBox([self.output_input, self.volume_button]), self.volume_label, self.task]
        if start:
            self.start()

    # -- running ---------------------------------------------------------------
    def start(self):
        """Start (or resume) the live reconstruction and the redraws."""
        with self.task.guard():
            self.live.start()
            if self._thread is None or not self._thread.is_alive():
                self._closing.clear()
                self._thread = threading.Thread(target=self._redraw_loop, daemon=True,
                                                name="tomolab-live-view")
                self._thread.start()
        self.refresh()

    def stop(self):
        """Stop receiving frames (the slices stay; *Start* resumes)."""
        with self.task.guard():
            self.live.stop()
        self.refresh()

    def close(self):
        self._closing.set()
        super().close()

    def _redraw_loop(self):
        # Bokeh documents are not thread-safe and the browser changes them too (on the kernel's
        # thread): the redraw itself runs there, one at a time, and none piles up while a cell runs
        period = 1.0 / max(self.refresh_hz, 0.1)
        while not self._closing.wait(period):
            if not self._redraw_queued.is_set():
                self._redraw_queued.set()
                call_in_kernel_thread(self._queued_refresh)
            if not self.live.running and self._drawn_version == self.live.version:
                call_in_kernel_thread(self._queued_refresh)
                return

    def _queued_refresh(self):
        self._redraw_queued.clear()
        try:
            self.refresh()
        except Exception as exc:  # noqa: BLE001 - shown in the widget, the redraws go on
            self.task.show_error(exc)

    # -- drawing ---------------------------------------------------------------
    @on_kernel_thread
    def refresh(self):
        """Draw a new snapshot if new frames went into the slices, and update the stats line.

        In a kernel it runs on the kernel's thread, whoever calls it (a button
        or slider runs on a subshell's thread; see :func:`on_kernel_thread`).
        """
        live = self.live
        stats = live.stats
        self.stats_label.value = html.escape(stats_line(stats))
        self._update_message(stats)
        with self._lock:  # one redraw at a time, from whichever thread
            if self._refreshing:
                # re-entered on this thread (an observer of a trait the redraw sets asked for
                # one): drawn here, the outer redraw would then draw its older snapshot over
                # it; the redraw in progress draws once more when it is done instead
                self._refresh_again = True
                return
            self._refreshing = True
            try:
                self._refresh_again = True
                while self._refresh_again:
                    self._refresh_again = False
                    self._draw_latest()
            finally:
                self._refreshing = False

    def _draw_latest(self):
        live = self.live
        if live.version == self._drawn_version:
            return
        self._drawn_version = live.version
        snapshot = live.snapshot()
        if snapshot is None:
            return
        self.snapshot = snapshot
        self._fit_sliders(snapshot)
        shown = self._shown_planes(snapshot)
        if self.auto_contrast.value:
            self._auto_clim(shown)  # the redraw below carries it: no draw of its own
        self.revision += 1
        self._shown = shown  # every view draws this one
        if self._draw is None:
            call_in_kernel_thread(self._make_plots)  # widgets are made on the kernel's thread
        else:
            self._draw.event(revision=self.revision, clim=tuple(self.clim))

    def _shown_planes(self, snapshot):
        """The three planes as the browser gets them: block-averaged to ``max_pixels`` a side."""
        from tomolab.viz import block_downsample, in_length_unit

        shown = {}
        for name in _VIEWS:
            plane, units = in_length_unit(snapshot[name])
            if self.max_pixels is not None and max(plane.shape) > self.max_pixels:
                plane = block_downsample(plane, (self.max_pixels,) * plane.ndim)
            shown[name] = (plane, units)
        return shown

    def _auto_clim(self, shown):
        from tomolab.viz import subsample

        values = np.concatenate([subsample(plane.values, 300_000) for plane, _ in shown.values()])
        if values.size:
            low, high = (float(v) for v in np.percentile(values, (0.5, 99.5)))
            if not high > low:
                high = low + 1e-6
            span = high - low
            self.clim_slider.min, self.clim_slider.max = low - span, high + span
            self.clim_slider.step = span / 500
            self.clim = (low, high)

    def _make_plots(self):
        """The three views, once the first snapshot gives their shapes."""
        import holoviews as hv

        if self._draw is not None:
            return
        Draw = hv.streams.Stream.define("Draw", revision=0, clim=(0.0, 1.0), cmap=self._cmap)
        draw = Draw(revision=self.revision, clim=tuple(self.clim), cmap=self._cmap)
        views = [hv.DynamicMap(self._view_callback(name, self._size), streams=[draw])
                 for name in _VIEWS]
        placeholder = self.plot_widget
        self.plot_widget, self._plot = HoloViewsWidget(hv.Layout(views).cols(2)
                                                       .opts(shared_axes=False))
        self._draw = draw
        self.children = [self.plot_widget if child is placeholder else child
                         for child in self.children]
    def _fit_sliders(self, snapshot):
        # the positions follow the snapshot: no recompute. hold_trait_notifications sends the
        # notifications when it ends, so _following must outlast it (inside, it was reset
        # first: _on_index then moved the slices and redrew from inside this redraw)
        attrs = snapshot.attrs
        self._following = True
        try:
            with self.hold_trait_notifications():
                self.z_slider.max = snapshot.sizes["z"] - 1
                self.y_slider.max = self.x_slider.max = snapshot.sizes["x"] - 1
                self.slice_row, self.point_y, self.point_x = (attrs["z"], attrs["point_y"],
                                                              attrs["point_x"])
        finally:
            self._following = False

    def _update_message(self, stats):
        state = stats["state"]
        text = ""
        if state == "lost":
            text = (f"<b style='color:#b00'>The source was lost</b> ({html.escape(stats['reason'])}); "
                    f"the slices show the {stats['in_slices']} projections that arrived.")
        elif state == "ended":
            text = f"The scan has ended ({html.escape(stats['reason'])})."
        elif state == "waiting":
            text = "Waiting for frames…"
        if stats["errors"] and stats.get("last_error"):
            text += f" Last problem: {html.escape(stats['last_error'])}"
        self.message.value = text
        self.volume_button.disabled = state not in ("ended", "lost", "stopped") or \
            not self.live.keep_frames or self.task.running

    def displayed(self, name: str = "xy") -> np.ndarray:
        """The image array the Bokeh plot of view ``name`` holds (what the browser draws)."""
        from holoviews.plotting.bokeh.raster import RasterPlot

        if self._plot is None:
            raise KeyError(f"no view {name!r} yet: no projection is in the slices")
        for plot in self._plot.traverse(lambda p: p, [RasterPlot]):
            frame = plot.current_frame
            if frame is not None and frame.group == name:
                return np.asarray(plot.handles["source"].data["image"][0])
        raise KeyError(f"no view {name!r}")

    def _view_callback(self, name, size):
        import holoviews as hv

        from tomolab.viz import value_label

        hdim, vdim = _VIEWS[name]

        def callback(revision, clim, cmap):
            snapshot, shown = self.snapshot, self._shown  # the latest: revision only triggers
            plane, units = shown[name]
            # a detector of a few rows would give a strip of a few pixels: stretched to 100
            height = max(MIN_PLANE_HEIGHT, int(size * plane.sizes[vdim] / plane.sizes[hdim]))
            attrs = snapshot.attrs
            where = {"xy": f"row {attrs['z']}", "xz": f"y = {attrs['point_y']}",
                     "yz": f"x = {attrs['point_x']}"}[name]
            return hv.Image(plane.rename("value"), group=name,
                            kdims=[hv.Dimension(hdim, unit=units[hdim]),
                                   hv.Dimension(vdim, unit=units[vdim])],
                            vdims=[hv.Dimension("value", label=value_label(snapshot[name]))]).opts(
                cmap=cmap, clim=tuple(clim), invert_yaxis=True, colorbar=name == "yz",
                frame_width=size, frame_height=height, tools=["hover"], toolbar="right",
                title=f"{name} at {where} ({attrs['n_projections']} projections)")

        return callback

    # -- controls --------------------------------------------------------------
    @traitlets.validate("slice_row", "point_y", "point_x")
    def _valid_index(self, proposal):
        name, value = proposal["trait"].name, proposal["value"]
        top = (self.z_slider if name == "slice_row" else self.x_slider).max \
            if self.snapshot is not None else None
        if value < 0 or (top is not None and value > top):
            raise traitlets.TraitError(f"{name}={value} is outside the slices (0 <= {name} <= {top})")
        return value

    @traitlets.observe("slice_row", "point_y", "point_x")
    @on_kernel_thread
    @guarded
    def _on_index(self, change):
        if getattr(self, "_following", False) or self.snapshot is None:
            return
        if change["name"] == "slice_row":
            self.live.set_slices(z=change["new"])
        else:
            self.live.set_slices(point=(self.point_y, self.point_x))
        self.refresh()

    def _on_center_box(self, change):
        self.center = float(change["new"])

    @traitlets.observe("center")
    @on_kernel_thread
    @guarded
    def _on_center(self, change):
        if change["new"] == self.live.center:
            return
        self.live.set_center(change["new"])
        self.center_input.value = change["new"]
        self.refresh()

    @traitlets.observe("clim")
    @on_kernel_thread
    @guarded
    def _on_clim(self, change):
        if getattr(self, "_draw", None) is None:
            return
        with self._lock:  # a redraw in progress elsewhere finishes first
            if not self._refreshing:  # a redraw of this thread's sends the range with its image
                self._draw.event(clim=tuple(change["new"]))

    def reconstruct_volume(self, path=None, *, background: bool = True, **options):
        """Run :func:`tomolab.reconstruct_to` of the frames that arrived, with the view's centre.

        ``path`` defaults to the box's; ``options`` go to :func:`tomolab.reconstruct_to`
        (the live filter and backend are used unless given). The volume, read
        lazily from the file, lands in :attr:`volume`.
        """
        import tomolab

        target = (path or self.output_input.value).strip() if isinstance(
            path or self.output_input.value, str) else path
        live = self.live
        params = {"center": float(live.center), "filter": live.filter, "backend": live.backend,
                  **options}

        def work(progress):
            progress(0.0, "gathering the frames")
            scan = live.to_scan()

            def report(done, total):
                progress(done / max(total, 1), f"{done} of {total} rows")

            return tomolab.reconstruct_to(scan, target, progress=report,
                                          cancel=lambda: progress.cancelled, **params)

        def done(volume):
            self.volume = volume
            self.volume_label.value = html.escape(
                f"{volume.sizes['z']} slices of {volume.sizes['y']} × {volume.sizes['x']} from "
                f"{volume.attrs.get('n_angles')} projections, centre {params['center']}, in {target}")

        return self.task.run(work, on_done=done, background=background)
