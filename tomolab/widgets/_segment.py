"""Segmenter: threshold or Otsu with a live overlay and the volume fraction."""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import traitlets

from tomolab.viz import as_volume, subsample
from tomolab.widgets._bokeh import LoadsBokehJS
from tomolab.widgets._slices import SliceViewer
from tomolab.widgets._task import TaskBar, guarded

__all__ = ["Segmenter", "otsu_threshold", "volume_fraction"]

_MAX_SAMPLES = 2_000_000


def otsu_threshold(volume, *, max_samples=_MAX_SAMPLES):
    """Otsu threshold (:func:`skimage.filters.threshold_otsu`) of a subsample of ``volume``.

    At most ``max_samples`` voxels are read (a regular subsample, see
    :func:`tomolab.viz.subsample`); smaller volumes are used whole.

    Examples
    --------
    >>> import numpy as np
    >>> vol = np.zeros((10, 10, 10)); vol[5:] = 1.0
    >>> 0.0 < otsu_threshold(vol) < 1.0
    True
    """
    from skimage.filters import threshold_otsu

    return float(threshold_otsu(subsample(volume, max_samples)))


def volume_fraction(volume, threshold, *, max_samples=_MAX_SAMPLES):
    """Fraction of voxels above ``threshold`` (estimated on a subsample when large).

    Examples
    --------
    >>> import numpy as np
    >>> volume_fraction(np.arange(10.0), 6.5)
    0.3
    """
    values = subsample(volume, max_samples)
    return float(np.count_nonzero(values > threshold) / max(values.size, 1))


class Segmenter(LoadsBokehJS, widgets.VBox):
    """Threshold a volume (by hand or Otsu) with a live overlay and the volume fraction.

    Voxels above ``threshold`` are the phase of interest: they are tinted on
    every slice of the embedded :class:`SliceViewer`, and ``fraction`` is
    their share of the volume. Otsu's threshold and the fraction are
    computed on a regular subsample of at most ``max_samples`` voxels (the
    whole volume when it is smaller), so a large lazy volume is not read
    whole; :meth:`mask` gives the full lazy mask.

    Parameters
    ----------
    volume : xarray.DataArray or array-like
        Volume with dims ``(z, y, x)``.
    method : {'otsu', 'manual'}
        Start with Otsu's threshold, or with ``threshold``.
    threshold : float, optional
        Initial threshold for ``method='manual'``.
    max_samples : int
        Largest number of voxels read for Otsu and the fraction.
    **viewer_kwargs
        Passed to :class:`SliceViewer`.

    Traits
    ------
    method : {'otsu', 'manual'}
        Setting 'otsu' sets ``threshold`` to Otsu's value; moving the
        threshold slider switches to 'manual'.
    threshold : float
        Voxels ``> threshold`` are in the mask; kept inside the data range.
    fraction : float
        Volume fraction of the mask (read-only in spirit: it follows
        ``threshold``).

    Examples
    --------
    >>> import numpy as np
    >>> vol = np.zeros((8, 16, 16), np.float32); vol[:, :, 4:] = 1.0
    >>> seg = Segmenter(vol)
    >>> round(seg.fraction, 3)
    0.75
    """

    method = traitlets.Enum(["otsu", "manual"], default_value="otsu", help="how the threshold is set")
    threshold = traitlets.Float(0.0, help="voxels above it are in the mask")
    fraction = traitlets.Float(0.0, help="volume fraction above the threshold")

    def __init__(self, volume, *, method="otsu", threshold=None, max_samples=_MAX_SAMPLES,
                 **viewer_kwargs):
        self.volume = as_volume(volume)
        self.max_samples = int(max_samples)
        # read once: Otsu and every fraction use this subsample (the whole volume when small)
        self._sample = sample = subsample(self.volume, self.max_samples)
        self._range = (float(sample.min()), float(sample.max())) if sample.size else (0.0, 1.0)
        self._otsu = None
        self.task = TaskBar()
        self.viewer = SliceViewer(self.volume, overlay=self._overlay, **viewer_kwargs)
        lo, hi = self._range
        self.threshold_slider = widgets.FloatSlider(
            value=lo, min=lo, max=hi if hi > lo else lo + 1, step=(hi - lo) / 1000 if hi > lo else 0.001,
            description="threshold", readout_format=".4g", continuous_update=False,
            layout=widgets.Layout(width="60%"))
        self.method_buttons = widgets.ToggleButtons(options=[("Otsu", "otsu"), ("manual", "manual")],
                                                    value="manual", description="method")
        self.fraction_label = widgets.HTML("")
        super().__init__()
        widgets.link((self, "threshold"), (self.threshold_slider, "value"))
        self.method_buttons.observe(self._on_method_button, "value")
        self.children = [widgets.HBox([self.method_buttons, self.fraction_label]),
                         self.threshold_slider, self.viewer, self.task]
        if method not in ("otsu", "manual"):
            raise traitlets.TraitError(f"method must be 'otsu' or 'manual', got {method!r}")
        with self.hold_trait_notifications():
            if method == "manual":
                self.method = "manual"
                self.threshold = float(threshold if threshold is not None else (lo + hi) / 2)
            else:
                self._otsu = float(otsu_threshold(self._sample))
                self.threshold = self._otsu
                self.method = "otsu"
        self.method_buttons.value = self.method
        self._update()

    # -- traits ---------------------------------------------------------------
    @traitlets.validate("threshold")
    def _valid_threshold(self, proposal):
        lo, hi = self._range
        value = float(proposal["value"])
        if not lo <= value <= hi:
            raise traitlets.TraitError(f"threshold={value} is outside the data range [{lo}, {hi}]")
        return value

    @traitlets.observe("method")
    @guarded
    def _on_method(self, change):
        self.method_buttons.value = change["new"]
        if change["new"] == "otsu":
            if self._otsu is None:
                self._otsu = otsu_threshold(self._sample)
            self.threshold = self._otsu

    def _on_method_button(self, change):
        self.method = change["new"]

    @traitlets.observe("threshold")
    @guarded
    def _on_threshold(self, change):
        if self.method == "otsu" and change["new"] != self._otsu:
            self.method = "manual"
        self._update()

    def _update(self):
        self.fraction = volume_fraction(self._sample, self.threshold)
        self.fraction_label.value = (f"volume fraction <b>{100 * self.fraction:.2f} %</b> "
                                     f"above {self.threshold:.4g}")
        self.viewer.refresh()

    # -- results --------------------------------------------------------------
    def mask(self):
        """The full mask ``volume > threshold`` (lazy when the volume is), with its parameters."""
        out = self.volume > self.threshold
        out.attrs = {"threshold": self.threshold, "method": self.method,
                     "volume_fraction_estimate": self.fraction,
                     "source": "tomolab.widgets.Segmenter"}
        return out.rename("mask")

    def _overlay(self, axis, index, plane):
        import holoviews as hv

        from tomolab.viz import SLICE_AXES

        hdim, vdim = SLICE_AXES[axis]
        above = plane > self.threshold
        tint = plane.copy(data=np.where(above.values, 1.0, np.nan)).rename("mask")
        return hv.Image(tint, kdims=[hdim, vdim], vdims=["mask"]).opts(
            cmap=["#ff3030"], alpha=0.45, clim=(0, 1), clipping_colors={"NaN": "transparent"},
            colorbar=False, tools=[])
