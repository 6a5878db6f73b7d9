"""VolumeViewer: a 3-D view (ipyvolume) of a block-averaged volume."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import traitlets

from tomolab.viz import as_volume, block_downsample, contrast_limits
from tomolab.widgets._task import TaskBar, dask_progress, guarded

__all__ = ["VolumeViewer"]

#: In-memory volumes up to this many voxels are reduced on the spot; larger or
#: lazy ones in a background task with a progress bar and a cancel button.
_SYNC_VOXELS = 64 ** 3


class VolumeViewer(widgets.VBox):
    """Volume rendering of a ``(z, y, x)`` volume, block-averaged to fit the browser.

    The volume is reduced by block averaging (:func:`tomolab.viz.block_downsample`)
    to at most ``max_shape`` voxels -- about 256³ (64 MB of float32) by
    default, what WebGL volume textures take -- in one lazy pass over a
    dask/zarr-backed volume: the full volume is never loaded. The reduction
    of a lazy or large volume runs in the background with a progress bar and
    a cancel button; ``wait()`` blocks until it is done.

    Parameters
    ----------
    volume : xarray.DataArray or array-like
        Volume with dims ``(z, y, x)``.
    max_shape : (int, int, int)
        Largest shape sent to the browser.
    background : bool, optional
        Reduce in a background thread; default: for lazy volumes and those
        over 64³ voxels.
    size : int
        Figure width and height in pixels.

    Traits
    ------
    max_shape : (int, int, int)
        Changing it recomputes the preview.
    threshold : (float, float)
        Shown data range: values below ``threshold[0]`` are transparent and
        the transfer function spans the range. Validated to ``low < high``.
    opacity : float
        Overall opacity scale (> 0).
    method : {'NORMAL', 'MAX_INTENSITY'}
        Ray-casting mode: transfer-function rendering or maximum-intensity
        projection.
    preview : xarray.DataArray or None
        The block-averaged volume that was sent (None until ready).

    Examples
    --------
    >>> import numpy as np
    >>> viewer = VolumeViewer(np.random.rand(32, 32, 32), max_shape=(16, 16, 16))
    >>> viewer.preview.shape
    (16, 16, 16)
    """

    max_shape = traitlets.Tuple(traitlets.Int(), traitlets.Int(), traitlets.Int(),
                                default_value=(256, 256, 256), help="largest preview shape")
    threshold = traitlets.Tuple(traitlets.Float(), traitlets.Float(), default_value=(0.0, 1.0),
                                help="shown data range (low, high)")
    opacity = traitlets.Float(1.0, help="opacity scale")
    method = traitlets.Enum(["NORMAL", "MAX_INTENSITY"], default_value="NORMAL",
                            help="ray-casting mode")
    preview = traitlets.Any(None, allow_none=True, help="the block-averaged volume shown")

    def __init__(self, volume, max_shape=(256, 256, 256), *, background=None, size=400, **kwargs):
        import ipyvolume as ipv

        self.volume = as_volume(volume)
        if background is None:
            background = self.volume.chunks is not None or self.volume.size > _SYNC_VOXELS
        self._background = bool(background)
        self.task = TaskBar()
        self.threshold_slider = widgets.FloatRangeSlider(
            value=(0.0, 1.0), min=0.0, max=1.0, step=0.001, description="threshold",
            readout_format=".3g", continuous_update=False, layout=widgets.Layout(width="60%"))
        self.opacity_slider = widgets.FloatLogSlider(value=1.0, base=10, min=-2, max=2,
                                                     step=0.05, description="opacity")
        self.method_buttons = widgets.ToggleButtons(
            options=[("volume", "NORMAL"), ("max. intensity", "MAX_INTENSITY")],
            value="NORMAL", description="render")
        self.tf = ipv.TransferFunctionWidgetJs3(level1=0.25, opacity1=0.02, width1=0.1,
                                                level2=0.6, opacity2=0.1, width2=0.1,
                                                level3=0.9, opacity3=0.2, width3=0.1)
        self.ipv_volume = ipv.Volume(tf=self.tf, data_min=0.0, data_max=1.0, show_min=0.0,
                                     show_max=1.0, lighting=False)
        # the volume joins the figure once it has data: ipyvolume's view fails on an empty one
        self.figure = ipv.Figure(volumes=[], width=size, height=size, animation=0)
        super().__init__(**kwargs)
        widgets.link((self, "opacity"), (self.opacity_slider, "value"))
        widgets.link((self, "method"), (self.method_buttons, "value"))
        widgets.link((self, "threshold"), (self.threshold_slider, "value"))
        self.children = [self.figure, self.threshold_slider,
                         widgets.HBox([self.opacity_slider, self.method_buttons]), self.task]
        # set last: this starts the first reduction
        self.max_shape = tuple(int(n) for n in max_shape)

    # -- traits ---------------------------------------------------------------
    @traitlets.validate("max_shape")
    def _valid_max_shape(self, proposal):
        shape = tuple(int(n) for n in proposal["value"])
        if any(n < 2 for n in shape):
            raise traitlets.TraitError(f"max_shape needs every entry >= 2, got {shape}")
        return shape

    @traitlets.validate("threshold")
    def _valid_threshold(self, proposal):
        lo, hi = (float(v) for v in proposal["value"])
        if not hi > lo:
            raise traitlets.TraitError(f"threshold needs low < high, got ({lo}, {hi})")
        return (lo, hi)

    @traitlets.validate("opacity")
    def _valid_opacity(self, proposal):
        if not proposal["value"] > 0:
            raise traitlets.TraitError(f"opacity must be > 0, got {proposal['value']}")
        return float(proposal["value"])

    @traitlets.observe("max_shape")
    @guarded
    def _on_max_shape(self, change):
        self.task.run(self._reduce, tuple(change["new"]), on_done=self._show,
                      background=self._background)

    @traitlets.observe("threshold")
    @guarded
    def _on_threshold(self, change):
        lo, hi = change["new"]
        self.ipv_volume.show_min, self.ipv_volume.show_max = lo, hi

    @traitlets.observe("opacity")
    def _on_opacity(self, change):
        self.ipv_volume.opacity_scale = change["new"]

    @traitlets.observe("method")
    def _on_method(self, change):
        self.ipv_volume.rendering_method = change["new"]

    # -- work -----------------------------------------------------------------
    def _reduce(self, progress, max_shape):
        small = block_downsample(self.volume, max_shape)
        if small.chunks is not None:
            with dask_progress(progress):
                small = small.compute(scheduler="threads")
        return small

    def _show(self, small):
        data = np.ascontiguousarray(small.values, dtype=np.float32)
        finite = data[np.isfinite(data)]
        vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if not vmax > vmin:
            vmax = vmin + 1.0
        lo, hi = contrast_limits(data, (1.0, 99.9))
        lo, hi = max(lo, vmin), min(hi, vmax)
        if not hi > lo:
            lo, hi = vmin, vmax
        # extent in voxels of the *original* volume, so positions read like the slice viewer's
        nz, ny, nx = self.volume.shape
        extent = [[0, nx], [0, ny], [0, nz]]
        with self.ipv_volume.hold_sync():
            self.ipv_volume.data_min, self.ipv_volume.data_max = vmin, vmax
            self.ipv_volume.extent_original = extent
            self.ipv_volume.data_max_shape = max(data.shape)
            self.ipv_volume.data_original = data
            self.ipv_volume.data = data
            self.ipv_volume.extent = extent
        with self.figure.hold_sync():
            self.figure.xlim, self.figure.ylim, self.figure.zlim = [0, nx], [0, ny], [0, nz]
            if self.ipv_volume not in self.figure.volumes:
                self.figure.volumes = [*self.figure.volumes, self.ipv_volume]
        with self.threshold_slider.hold_trait_notifications():
            self.threshold_slider.min, self.threshold_slider.max = min(vmin, self.threshold_slider.min), max(vmax, self.threshold_slider.max)
            self.threshold_slider.value = (lo, hi)
            self.threshold_slider.min, self.threshold_slider.max = vmin, vmax
            self.threshold_slider.step = (vmax - vmin) / 1000
        self.threshold = (lo, hi)
        self.preview = small

    def wait(self, timeout=None):
        """Block until the preview is ready (or failed); return it."""
        self.task.wait(timeout)
        return self.preview
