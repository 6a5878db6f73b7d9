"""ReconstructionPanel: the whole workflow for one scan in one widget.

File → preview → centre → phase → preprocessing → reconstruction → output →
viewers, as the steps of an :class:`ipywidgets.Accordion`. Every step calls
the same function a script would (:func:`tomolab.open_scan`,
:func:`tomolab.find_center`, :func:`tomolab.sweep_center`,
:func:`tomolab.sweep_phase`, :func:`tomolab.reconstruct`,
:func:`tomolab.save_volume`); the panel only wires their results together.
"""

from __future__ import annotations

import html
import os
from contextlib import contextmanager
from pathlib import Path

import ipywidgets as widgets
import numpy as np
import traitlets
import xarray as xr

from tomolab.widgets._bokeh import HoloViewsWidget, LoadsBokehJS
from tomolab.widgets._task import TaskBar, call_in_kernel_thread, on_kernel_thread

__all__ = ["ReconstructionPanel"]

#: the steps of the workflow, in order (titles of the accordion sections)
STEPS = ("file", "preview", "centre", "phase", "preprocessing", "reconstruction", "output",
         "viewers")

_SUFFIX = {"zarr": ".zarr", "hdf5": ".h5", "tiff": ""}

#: parameter names (as tomolab's functions call them) -> the label of the panel's field
FIELD_LABELS = {"center": "centre px", "centers": "centre px", "rows": "rows", "row": "rows",
                "zingers": "zingers", "zingers_threshold": "zingers", "stripes": "stripes",
                "phase": "δ/β", "delta_beta": "δ/β", "filter": "filter",
                "algorithm": "algorithm", "iterations": "iterations", "regularization": "λ (TV)",
                "path": "output", "format": "format",
                "overwrite=True": "tick 'overwrite'", "overwrite": "overwrite"}


def labelled(exc: BaseException) -> BaseException:
    """``exc`` naming the panel's field (``centre px``) where it named a keyword (``center``).

    Examples
    --------
    >>> from tomolab.errors import ParameterError
    >>> str(labelled(ParameterError("centre is outside the detector", where="center", value=900.0)))
    'centre px=900.0: centre is outside the detector'
    """
    from tomolab.errors import TomolabError

    if isinstance(exc, TomolabError):
        return exc.renamed(FIELD_LABELS)
    return exc


@contextmanager
def errors_to(bar: TaskBar):
    """Show any error raised inside on ``bar`` (the step where the action happened), labelled."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 -- every error is shown, where it belongs
        bar.show_error(labelled(exc))
    else:
        bar.clear_error()


def _labelled_work(fn):
    """Wrap task work so that its errors name the panel's fields too."""
    def work(progress):
        try:
            return fn(progress)
        except Exception as exc:
            new = labelled(exc)
            if new is exc:
                raise
            raise new from exc
    return work


class ReconstructionPanel(LoadsBokehJS, widgets.VBox):
    """Open a scan, find its centre (and δ/β), reconstruct, save and look, in one widget.

    The steps, in an accordion that opens the next one as you go:

    1. **file** -- a path and *Open*; shows :func:`tomolab.io.describe` of the scan.
    2. **preview** -- the middle row reconstructed at the automatic centre, with
       axes in µm (*Refresh* redoes it at the current centre and δ/β).
    3. **centre** -- an embedded :class:`CenterSweep` and, beside it, a
       :class:`CenterOverlay` (0° over the mirrored 180° projection); "Use this
       centre" in either sets :attr:`center` and says so.
    4. **phase** -- a checkbox and an embedded :class:`PhaseSweep`; "Use this δ/β"
       sets :attr:`delta_beta` (None: no phase retrieval).
    5. **preprocessing** -- zinger threshold (0: off) and stripe removal.
    6. **reconstruction** -- rows, filter, algorithm, centre; for the iterative
       algorithms (``sirt``, ``cgls``, ``tv``) an iteration count and, for
       ``tv``, a regularisation slider (λ; "auto": a twentieth of each slice's
       largest FBP value) whose release previews one slice with those
       settings (*Preview slice* does it too); *Reconstruct* runs
       :func:`tomolab.reconstruct` with a progress bar and a cancel button.
       A scan of less than 180° says here which wedge of directions it
       misses and suggests the iterative algorithms.
    7. **output** -- path and format (zarr, TIFF folder, HDF5); *Save* writes
       with :func:`tomolab.save_volume` (atomically: nothing half-written).
    8. **viewers** -- :class:`SliceViewer` and :class:`VolumeViewer` of :attr:`volume`.

    Errors (a bad path, a centre off the detector, a failed save) show as a
    readable line in the step where the action happened, naming the field's
    label, never as a traceback.

    Parameters
    ----------
    path_or_scan : str, os.PathLike or xarray.Dataset, optional
        A scan file (opened with :func:`tomolab.open_scan`) or an opened scan.
    backend : {"auto", "numpy", "cupy"}
        Where to compute (``"auto"``: the GPU when CuPy sees one).
    background : bool
        Run long work in a thread (default) so the notebook stays responsive
        and Cancel works; ``False`` runs it in the calling thread (scripts, tests).
    size : int
        Width in screen pixels of the sweep images and the preview.
    client : dask.distributed.Client, "active" or "hub", optional
        Reconstruct on a dask cluster (:func:`tomolab.reconstruct_to`):
        Reconstruct then writes straight into the output of step 7 (zarr or
        a TIFF folder on a file system the workers see) and :attr:`volume` is
        read lazily from it. The :attr:`client` trait can be set later too.

    Traits
    ------
    scan : xarray.Dataset or None
        The opened scan.
    center : float or None
        Rotation axis column in pixels used by the reconstruction; validated
        to lie on the detector. Set by the auto estimate, the centre sweep,
        the centre box or by assignment.
    delta_beta : float or None
        δ/β for Paganin phase retrieval; None reconstructs without it.
    volume : xarray.DataArray or None
        The last reconstruction (set by Reconstruct, or assigned to view and save one).
    client : dask.distributed.Client, str or None
        Where Reconstruct runs: None in this process, else on that cluster.

    Examples
    --------
    >>> import tomolab
    >>> from tomolab.widgets import ReconstructionPanel
    >>> scan = tomolab.data.simulate_scan(64, n_rows=4, n_angles=90)
    >>> panel = ReconstructionPanel(scan, backend="numpy", background=False)
    >>> abs(panel.center - scan.attrs["true_center"]) < 1
    True
    >>> panel.reconstruct().dims
    ('z', 'y', 'x')
    """

    scan = traitlets.Instance(xr.Dataset, allow_none=True, help="the opened scan")
    center = traitlets.Float(None, allow_none=True, help="rotation axis column in pixels")
    delta_beta = traitlets.Float(None, allow_none=True,
                                 help="δ/β for phase retrieval; None: no phase retrieval")
    volume = traitlets.Instance(xr.DataArray, allow_none=True, help="the last reconstruction")
    client = traitlets.Any(None, allow_none=True,
                           help="a dask client, 'active' or 'hub': Reconstruct runs on that "
                                "cluster into the output of step 7; None: in this process")

    def __init__(self, path_or_scan=None, *, backend: str = "auto", background: bool = True,
                 size: int = 360, client=None, **kwargs):
        from tomolab.prep import STRIPE_METHODS
        from tomolab.recon import ALGORITHMS, FILTERS

        self.backend, self.background, self._size = backend, bool(background), size
        self.center_sweep = None
        self.phase_sweep = None
        self.slice_viewer = None
        self.volume_viewer = None
        self.task = TaskBar()  # step 6: the reconstruction's progress, cancel and errors
        self.file_task = TaskBar()  # step 1: opening the scan
        self.phase_task = TaskBar()  # step 4
        self.viewer_task = TaskBar()  # step 8
        self.center_overlay = None
        self.center_note = widgets.HTML("")  # step 3: which centre was adopted
        narrow = widgets.Layout(width="auto")

        # 1. file
        self.path_input = widgets.Text(
            value="" if path_or_scan is None or isinstance(path_or_scan, xr.Dataset)
            else os.fspath(path_or_scan),
            placeholder="scan file: DXchange / NXtomo HDF5, or a TIFF folder",
            description="scan", layout=widgets.Layout(width="70%"))
        self.open_button = widgets.Button(description="Open", icon="folder-open",
                                          button_style="primary", layout=narrow)
        self.description = widgets.HTML("")
        file_step = widgets.VBox([widgets.HBox([self.path_input, self.open_button]),
                                  self.file_task, self.description])

        # 2. preview
        self.preview_task = TaskBar()
        self.preview_slice = None  # the last preview (a DataArray (z, y, x) of one row)
        self.preview_label = widgets.HTML("open a scan first")
        self.preview_button = widgets.Button(description="Refresh preview", icon="refresh",
                                             layout=narrow)
        self.preview_plot, self._preview_hv = HoloViewsWidget(self._preview_view())
        self._preview_step = preview_step = widgets.VBox(
            [widgets.HBox([self.preview_button, self.preview_label]), self.preview_plot,
             self.preview_task])

        # 3. centre, 4. phase: the sweeps are built when a scan is opened
        self.center_box = widgets.VBox([widgets.HTML("open a scan first")])
        self.phase_checkbox = widgets.Checkbox(value=False, description="phase retrieval (Paganin)",
                                               indent=False)
        self.phase_box = widgets.VBox([])
        phase_step = widgets.VBox([self.phase_checkbox, self.phase_task, self.phase_box])

        # 5. preprocessing
        self.zingers_input = widgets.BoundedFloatText(
            value=0.0, min=0.0, max=10.0, step=0.05, description="zingers",
            tooltip="relative threshold of the zinger filter (e.g. 0.1); 0: off",
            layout=widgets.Layout(width="200px"))
        self.stripes_input = widgets.Dropdown(
            options=[("none", None)] + [(name, name) for name in STRIPE_METHODS],
            value=None, description="stripes")
        prep_step = widgets.VBox([widgets.HBox([self.zingers_input, self.stripes_input]),
                                  widgets.HTML("<small>zingers: relative threshold (0 = off); "
                                               "stripes: ring-removal method</small>")])

        # 6. reconstruction
        self.rows_input = widgets.Text(value="", description="rows",
                                       placeholder="A:B (all when empty)",
                                       layout=widgets.Layout(width="220px"))
        self.filter_input = widgets.Dropdown(options=sorted(FILTERS), value="ramp",
                                             description="filter",
                                             layout=widgets.Layout(width="220px"))
        # auto: the fastest accurate method on the backend (tomolab.recon.AUTO)
        self.algorithm_input = widgets.Dropdown(options=["auto", *sorted(ALGORITHMS)], value="auto",
                                                description="algorithm",
                                                layout=widgets.Layout(width="220px"))
        self.center_input = widgets.FloatText(value=0.0, description="centre px", step=0.25,
                                              layout=widgets.Layout(width="220px"))
        self.reconstruct_button = widgets.Button(description="Reconstruct", icon="play",
                                                 button_style="primary", layout=narrow)
        self.recon_label = widgets.HTML("")
        self.coverage_note = widgets.HTML("")  # a scan of less than 180°: the wedge it misses
        # the iterative algorithms: iterations, λ of tv, and a one-slice preview of them
        self.iterations_input = widgets.BoundedIntText(
            value=50, min=1, max=5000, description="iterations",
            layout=widgets.Layout(width="220px"))
        self.regularization_auto = widgets.Checkbox(value=True, description="λ auto",
                                                    indent=False, layout=narrow)
        self.regularization_input = widgets.FloatLogSlider(
            value=1e-3, base=10, min=-6, max=0, step=0.05, description="λ (TV)",
            readout_format=".2e", continuous_update=False, disabled=True,
            layout=widgets.Layout(width="360px"))
        self.iteration_preview_button = widgets.Button(description="Preview slice", icon="eye",
                                                       layout=narrow)
        self.iteration_preview_task = TaskBar()
        self.iteration_preview = None  # the last one-slice preview of step 6 (z, y, x)
        self._rerun = {}  # previews asked for while their task ran: rerun with the newest settings
        self.iteration_preview_label = widgets.HTML("")
        self.iteration_preview_plot, self._iteration_hv = HoloViewsWidget(
            self._slice_view(None, "no preview yet"))
        self._regularization_box = widgets.HBox([self.regularization_input,
                                                 self.regularization_auto])
        self.iteration_box = widgets.VBox([
            widgets.HBox([self.iterations_input, self.iteration_preview_button,
                          self.iteration_preview_label]),
            self._regularization_box, self.iteration_preview_plot,
            self.iteration_preview_task])
        recon_step = widgets.VBox([
            self.coverage_note,
            widgets.HBox([self.rows_input, self.center_input]),
            widgets.HBox([self.filter_input, self.algorithm_input]),
            self.iteration_box,
            widgets.HBox([self.reconstruct_button, self.recon_label]), self.task])

        # 7. output
        self.output_input = widgets.Text(value="", description="output",
                                         placeholder="volume.zarr", layout=widgets.Layout(width="60%"))
        self.format_input = widgets.Dropdown(options=[("zarr", "zarr"), ("TIFF folder", "tiff"),
                                                      ("HDF5", "hdf5")],
                                             value="zarr", description="format",
                                             layout=widgets.Layout(width="220px"))
        self.overwrite_input = widgets.Checkbox(value=False, description="overwrite", indent=False,
                                                layout=narrow)
        self.save_button = widgets.Button(description="Save", icon="save", button_style="success",
                                          disabled=True, layout=narrow)
        self.save_task = TaskBar()
        self.save_label = widgets.HTML("")
        output_step = widgets.VBox([
            widgets.HBox([self.output_input, self.format_input, self.overwrite_input]),
            widgets.HBox([self.save_button, self.save_label]), self.save_task])

        # 8. viewers
        self.viewer_box = widgets.VBox([widgets.HTML("reconstruct to see the volume here")])
        viewer_step = widgets.VBox([self.viewer_task, self.viewer_box])

        self.steps = widgets.Accordion(
            children=[file_step, preview_step, self.center_box, phase_step, prep_step, recon_step,
                      output_step, viewer_step],
            titles=tuple(f"{i + 1}. {name}" for i, name in enumerate(STEPS)))
        self.steps.selected_index = 0
        super().__init__(client=client, **kwargs)
        self.children = [self.steps]

        self.open_button.on_click(lambda _: self.open_scan())
        self.preview_button.on_click(lambda _: self.preview())
        self.reconstruct_button.on_click(lambda _: self.reconstruct())
        self.save_button.on_click(lambda _: self.save())
        self.center_input.observe(self._on_center_input, "value")
        # ticking it builds the δ/β sweep and its figure: on the kernel's thread (on_kernel_thread)
        self.phase_checkbox.observe(on_kernel_thread(self._on_phase_checkbox), "value")
        self.format_input.observe(self._on_format, "value")
        self.algorithm_input.observe(self._on_algorithm, "value")
        self.regularization_auto.observe(self._on_regularization_auto, "value")
        self.regularization_input.observe(lambda _: self.preview_iterations(), "value")
        self.iteration_preview_button.on_click(lambda _: self.preview_iterations())
        for task, method in ((self.preview_task, self.preview),
                             (self.iteration_preview_task, self.preview_iterations)):
            task.observe(lambda change, method=method: self._on_preview_state(method, change),
                         "state")
        self._on_algorithm({"new": self.algorithm_input.value})
        if path_or_scan is not None:
            self.open_scan(path_or_scan)

    # -- helpers ----------------------------------------------------------------
    def show_step(self, name: str):
        """Open the accordion section ``name`` (one of :data:`STEPS`)."""
        self.steps.selected_index = STEPS.index(name)

    def _require_scan(self):
        from tomolab.errors import ParameterError

        if self.scan is None:
            raise ParameterError("no scan is open", where="scan", value=None,
                                 fix="type a path in step 1 and press Open")
        return self.scan

    def _preview_view(self):
        """The preview as a holoviews image: axes in µm/mm, a colour bar in the volume's unit."""
        return self._slice_view(self.preview_slice, "no preview yet")

    def _slice_view(self, slab, empty_title: str, title: str | None = None):
        """One slice (a volume of one row, or None) as a holoviews image with axes and a colour bar."""
        import holoviews as hv

        from tomolab.viz import contrast_limits, ensure_extension, in_length_unit, value_label

        ensure_extension()
        if slab is None:  # an empty frame (no solid square) until a preview exists
            data = xr.DataArray(np.full((2, 2), np.nan, np.float32), dims=("y", "x"),
                                coords={"y": [0, 1], "x": [0, 1]})
            units, label, clim, title = {"x": "px", "y": "px"}, "value", (0.0, 1.0), empty_title
        else:
            plane = slab.isel(z=0)
            data, units = in_length_unit(plane)
            label, clim = value_label(slab), contrast_limits(plane.values)
            title = title or f"row {int(slab['row'].values[0])}"
        return hv.Image(data.rename("value"),
                        kdims=[hv.Dimension("x", unit=units["x"]), hv.Dimension("y", unit=units["y"])],
                        vdims=[hv.Dimension("value", label=label)]).opts(
            cmap="gray", clim=tuple(clim), width=self._size + 90, height=self._size,
            colorbar=True, invert_yaxis=True, title=title, tools=["hover"], framewise=True)

    # -- traits -----------------------------------------------------------------
    @traitlets.validate("center")
    def _valid_center(self, proposal):
        value = proposal["value"]
        if value is None or self.scan is None:
            return value
        from tomolab.api import check_center
        from tomolab.errors import TomolabError

        try:
            return check_center(self.scan, value)
        except TomolabError as exc:
            raise traitlets.TraitError(str(labelled(exc))) from None

    @traitlets.validate("delta_beta")
    def _valid_delta_beta(self, proposal):
        value = proposal["value"]
        if value is not None and not (np.isfinite(value) and value > 0):
            from tomolab.errors import ParameterError

            raise traitlets.TraitError(str(labelled(ParameterError(
                "δ/β must be a positive number", where="delta_beta", value=value,
                fix="choose a positive δ/β (e.g. 300) in the phase step, or untick phase "
                    "retrieval"))))
        return value

    @traitlets.observe("center")
    def _on_center(self, change):
        if change["new"] is None:
            return
        if self.center_input.value != change["new"]:
            self.center_input.value = change["new"]
        if self.phase_sweep is not None:
            self.phase_sweep.center = float(change["new"])

    def _on_center_input(self, change):
        with errors_to(self.task):  # the box is in step 6
            if self.scan is not None and change["new"] != self.center:
                self._check_center(change["new"])
                self.center = float(change["new"])

    def _check_center(self, value):
        from tomolab.api import check_center

        return check_center(self._require_scan(), value)

    @traitlets.observe("delta_beta")
    def _on_delta_beta(self, change):
        on = change["new"] is not None
        if self.phase_checkbox.value != on:
            self.phase_checkbox.value = on

    def _on_phase_checkbox(self, change):
        with errors_to(self.phase_task):
            if not change["new"]:
                self.delta_beta = None
                self.phase_box.children = []
                return
            self._require_scan()
            self._ensure_phase_sweep()
            self.phase_box.children = [self.phase_sweep]
            if self.delta_beta is None and self.phase_sweep.value is not None:
                self.delta_beta = self.phase_sweep.value

    def _ensure_phase_sweep(self):
        from tomolab.errors import ParameterError
        from tomolab.widgets._sweep import PhaseSweep

        if self.phase_sweep is None:
            if self.center is None:
                raise ParameterError("phase retrieval needs the centre first", where="centre px",
                                     value=None, fix="choose a centre in step 3")
            self.phase_sweep = PhaseSweep(self.scan, center=self.center, backend=self.backend,
                                          size=self._size, compute=False,
                                          background=self.background)
            self.phase_sweep.observe(self._on_phase_value, "value")
        return self.phase_sweep

    def _on_phase_value(self, change):
        if change["new"] is not None:
            self.delta_beta = float(change["new"])

    def _on_sweep_value(self, change):
        self._adopt_center(change["new"], self.center_sweep, "the sweep")

    def _on_overlay_value(self, change):
        self._adopt_center(change["new"], self.center_overlay, "the 0°/180° overlay")

    def _adopt_center(self, value, source, name):
        """A centre chosen in step 3: use it, say so there and in step 6, refresh the preview."""
        if value is None:
            return
        with errors_to(source.task):
            self._check_center(value)
            self.center = float(value)
        if source.task.error:
            return
        self.center_note.value = (f'<span class="tomolab-adopted" style="color:#1b7f3b">&#10004; '
                                  f"centre <b>{self.center:.2f} px</b> from {name} is used for the "
                                  f"preview and the reconstruction</span>")
        self.recon_label.value = f"centre {self.center:.2f} px (from {name})"
        self.preview()

    def _iterative(self) -> bool:
        from tomolab.api.validate import ITERATIVE_ALGORITHMS

        return self.algorithm_input.value in ITERATIVE_ALGORITHMS

    def _on_algorithm(self, change):
        """Show the iteration controls for an iterative algorithm, λ for tv only."""
        self.iteration_box.layout.display = None if self._iterative() else "none"
        self._regularization_box.layout.display = None if change["new"] == "tv" else "none"

    def _on_regularization_auto(self, change):
        self.regularization_input.disabled = bool(change["new"])
        self.preview_iterations()

    def _algorithm_options(self) -> dict:
        """``algorithm`` and, for an iterative one, its ``iterations`` (and tv's ``regularization``)."""
        options = {"algorithm": self.algorithm_input.value}
        if self._iterative():
            options["iterations"] = int(self.iterations_input.value)
            if self.algorithm_input.value == "tv":
                options["regularization"] = (None if self.regularization_auto.value
                                             else float(self.regularization_input.value))
        return options

    def _on_format(self, change):
        with errors_to(self.save_task):  # the format is chosen in step 7
            text = self.output_input.value.strip()
            if text:
                path = Path(text)
                stem = path.with_suffix("") if path.suffix.lower() in (
                    ".zarr", ".h5", ".hdf5", ".hdf", ".nxs", ".tif", ".tiff") else path
                self.output_input.value = str(stem) + _SUFFIX[change["new"]]

    @traitlets.observe("volume")
    def _on_volume(self, change):
        volume = change["new"]
        self.save_button.disabled = volume is None
        if volume is None:
            self.viewer_box.children = [widgets.HTML("reconstruct to see the volume here")]
            self.slice_viewer = self.volume_viewer = None
            return
        with errors_to(self.viewer_task):
            from tomolab.widgets._slices import SliceViewer
            from tomolab.widgets._volume import VolumeViewer

            self.slice_viewer = SliceViewer(volume, size=self._size)
            self.volume_viewer = VolumeViewer(volume, max_shape=(128, 128, 128), size=self._size,
                                              background=None if self.background else False)
            self.viewer_box.children = [self.slice_viewer, self.volume_viewer]
            self.show_step("viewers")

    # -- steps --------------------------------------------------------------------
    def open_scan(self, path_or_scan=None):
        """Open a scan (a path, or the path typed in step 1, or an opened scan).

        Finds the centre automatically, builds the centre sweep (press its
        Compute, or call ``panel.center_sweep.compute()``) and the 0°/180°
        overlay, and reconstructs the middle row as a preview. Errors show in
        step 1, which stays open.
        """
        with errors_to(self.file_task):
            self._open_scan(path_or_scan)
        if self.file_task.error:
            self.show_step("file")
            return
        self.show_step("preview")
        self.preview()

    def _open_scan(self, path_or_scan):
        import tomolab
        from tomolab.errors import ParameterError

        if path_or_scan is None:
            text = self.path_input.value.strip()
            if not text:
                raise ParameterError("no scan path given", where="scan", value="",
                                     fix="type the path of a scan file and press Open")
            path_or_scan = text
        if isinstance(path_or_scan, xr.Dataset):
            scan = path_or_scan
        else:
            self.path_input.value = os.fspath(path_or_scan)
            scan = tomolab.open_scan(path_or_scan)
        # a new scan: forget everything that belonged to the last one
        with self.hold_trait_notifications():
            self.center = None
            self.delta_beta = None
            self.volume = None
        self.phase_sweep = None
        self.phase_box.children = []
        self.scan = scan
        self.description.value = (
            '<pre style="white-space:pre-wrap;font-size:90%">'
            + html.escape(tomolab.io.describe(scan)) + "</pre>")
        n_rows = int(scan.sizes["row"])
        self.rows_input.placeholder = f"A:B (all: 0:{n_rows})"
        self.coverage_note.value = self._coverage_text(scan)
        if not self.output_input.value:
            source = scan.attrs.get("source_file")
            stem = Path(source).with_suffix("") if source else Path("volume")
            self.output_input.value = f"{stem}_recon" + _SUFFIX[self.format_input.value]

        from tomolab.widgets._sweep import CenterOverlay, CenterSweep

        self.center_sweep = CenterSweep(scan, backend=self.backend, size=self._size,
                                        compute=False, background=self.background)
        self.center_sweep.observe(self._on_sweep_value, "value")
        estimate = self.center_sweep.estimate()  # errors show in the sweep's own bar
        if estimate is not None:
            self.center = float(estimate)
        self.center_overlay = CenterOverlay(scan, center=self.center, backend=self.backend,
                                            size=self._size)
        self.center_overlay.observe(self._on_overlay_value, "value")
        tabs = widgets.Tab(children=[self.center_sweep, self.center_overlay],
                           titles=("trial slices", "0°/180° overlay"))
        self.center_box.children = [self.center_note, tabs]

    @staticmethod
    def _coverage_text(scan) -> str:
        """For a scan of less than 180°: the wedge it misses and what to do (HTML); else ``""``."""
        from tomolab.api.validate import iterative_hint
        from tomolab.center import angular_coverage

        coverage = angular_coverage(scan["angle"].values)
        if not coverage.limited:
            return ""
        return (f'<span class="tomolab-limited" style="color:#b35900">&#9888; '
                f"{html.escape(coverage.describe(), quote=False)}: FBP shows streaks and a missing "
                f"wedge; {html.escape(iterative_hint(), quote=False)} (the centre comes from the "
                f"centroid fit)</span>")

    def _busy_then_rerun(self, task, method) -> bool:
        """True when ``task`` runs: it is cancelled, and ``method`` runs again once it ends.

        The newest settings win (a centre adopted, a λ moved while a preview
        runs), instead of "a task is already running" and an older picture.
        """
        if not task.running:
            return False
        self._rerun[method.__name__] = method
        task.cancel()
        return True

    def _on_preview_state(self, method, change):
        if change["new"] != "running" and self._rerun.pop(method.__name__, None) is not None:
            call_in_kernel_thread(method)

    def preview_iterations(self):
        """One row with the algorithm, iterations and λ of step 6, shown in step 6.

        Runs when the λ slider is released or "λ auto" is ticked, and on
        *Preview slice*; the row is the middle of the rows field (or of the
        detector). Errors show in step 6's preview bar.
        """
        import tomolab

        if not self._iterative() or self.scan is None:
            return None
        if self._busy_then_rerun(self.iteration_preview_task, self.preview_iterations):
            return None
        with errors_to(self.iteration_preview_task):
            scan = self._require_scan()
            if self.center is None:
                from tomolab.errors import ParameterError

                raise ParameterError("no centre chosen", where="centre px", value=None,
                                     fix="use the centre step, or type a column in 'centre px'")
            from tomolab.api import resolve_rows

            rows = resolve_rows(scan, self.rows_input.value.strip() or None)
        if self.iteration_preview_task.error:
            return None
        row = rows.start + len(rows) // 2
        options = dict(self._options(), **self._algorithm_options())
        center = float(self.center)

        @_labelled_work
        def work(progress):
            progress(0.0, f"row {row}: {options['algorithm']}, {options['iterations']} iterations")
            return tomolab.reconstruct(scan, center=center, rows=row,
                                      backend=self.backend, filter=self.filter_input.value,
                                      progress=lambda done, total: progress(done / max(total, 1)),
                                      cancel=lambda: progress.cancelled, **options)

        def show(slab):
            self.iteration_preview = slab
            title = f"row {row}: {slab.attrs.get('algorithm')}"
            if slab.attrs.get("regularization") is not None:
                title += f", λ {slab.attrs['regularization']:.2e}"
            old = self.iteration_preview_plot
            self.iteration_preview_plot, self._iteration_hv = HoloViewsWidget(
                self._slice_view(slab, "no preview yet", title))
            children = list(self.iteration_box.children)
            children[children.index(old)] = self.iteration_preview_plot
            self.iteration_box.children = children
            widgets.Widget.close(old)
            self.iteration_preview_label.value = f"row {row} in {slab.attrs['seconds']:.2f} s"

        return self.iteration_preview_task.run(work, on_done=show, background=self.background)

    def preview(self):
        """Reconstruct the middle row at the current centre (and δ/β) into the preview image."""
        import tomolab

        if self._busy_then_rerun(self.preview_task, self.preview):
            return None
        with errors_to(self.preview_task):
            scan = self._require_scan()
        if self.preview_task.error:
            return None
        row = int(scan.sizes["row"]) // 2
        center = self.center if self.center is not None else "auto"
        options = self._options()

        @_labelled_work
        def work(progress):
            progress(0.05, f"row {row}")
            return tomolab.reconstruct(scan, center=center, rows=row,
                                      backend=self.backend, **options)

        def show(slab):
            self.preview_slice = slab
            # a new figure each time (one small image): its labels and units follow the scan
            old = self.preview_plot
            self.preview_plot, self._preview_hv = HoloViewsWidget(self._preview_view())
            self._preview_step.children = [self._preview_step.children[0], self.preview_plot,
                                           self.preview_task]
            widgets.Widget.close(old)  # its comm; BokehModel.close fails on a never-shown figure
            phase = f", δ/β {slab.attrs['phase_delta_beta']:.4g}" \
                if "phase_delta_beta" in slab.attrs else ""
            self.preview_label.value = (f"row {row} at centre <b>{slab.attrs['center']:.2f}</b> px"
                                        f"{phase} ({slab.attrs['seconds']:.2f} s)")

        return self.preview_task.run(work, on_done=show, background=self.background)

    def _options(self) -> dict:
        """Preprocessing and phase options for :func:`tomolab.reconstruct`."""
        zingers = float(self.zingers_input.value)
        return dict(zingers=zingers if zingers > 0 else None, stripes=self.stripes_input.value,
                    phase=self.delta_beta)

    def reconstruct(self):
        """Reconstruct the rows chosen in step 6 with the panel's parameters; sets :attr:`volume`.

        Runs through the panel's :class:`TaskBar`: a progress bar per slab and
        a Cancel button. Returns the volume when ``background=False``.
        """
        import tomolab
        from tomolab.errors import ParameterError

        client, target = self.client, None
        with errors_to(self.task):
            scan = self._require_scan()
            if self.center is None:
                raise ParameterError("no centre chosen", where="centre px", value=None,
                                     fix="use the centre step, or type a column in 'centre px'")
            if self.center_input.value != self.center:  # the box shows a refused value
                self._check_center(self.center_input.value)
            if client is not None:  # on a cluster: the workers write the output of step 7
                text = self.output_input.value.strip()
                if not text:
                    raise ParameterError("a cluster writes straight to the output: none given",
                                         where="output", value="",
                                         fix="type where the volume should go, e.g. volume.zarr")
                target = Path(text).expanduser()
        if self.task.error:
            return None
        params = dict(center=float(self.center), rows=self.rows_input.value.strip() or None,
                      filter=self.filter_input.value, backend=self.backend,
                      **self._algorithm_options(), **self._options())
        if target is not None:
            params.update(client=client, format=self.format_input.value,
                          overwrite=bool(self.overwrite_input.value))

        @_labelled_work
        def work(handle):
            def report(done, total):
                handle(done / max(total, 1), f"{done} of {total} rows")

            handle(0.0, "starting" if target is None else f"starting on the cluster: {target.name}")
            if target is not None:
                return tomolab.reconstruct_to(scan, target, progress=report,
                                          cancel=lambda: handle.cancelled, **params)
            return tomolab.reconstruct(scan, progress=report,
                                      cancel=lambda: handle.cancelled, **params)

        def done(volume):
            where = (f"in {volume.attrs['seconds']:.2f} s" if target is None
                     else f"on the cluster into <code>{target}</code>")
            self.recon_label.value = (f"{volume.sizes['z']} slices of {volume.sizes['y']} × "
                                      f"{volume.sizes['x']} on {volume.attrs['backend']} {where}")
            self.volume = volume

        self.show_step("reconstruction")
        return self.task.run(work, on_done=done, background=self.background)

    def save(self, path=None, format=None, *, overwrite=None):
        """Save :attr:`volume` with :func:`tomolab.save_volume` (atomic: a failed save leaves nothing).

        Parameters default to the output step's fields.
        """
        import tomolab
        from tomolab.errors import ParameterError

        with errors_to(self.save_task):
            if self.volume is None:
                raise ParameterError("there is no volume to save", where="volume", value=None,
                                     fix="reconstruct first (step 6)")
            if path is not None:
                self.output_input.value = os.fspath(path)
            if format is not None:
                self.format_input.value = format
            if overwrite is not None:
                self.overwrite_input.value = bool(overwrite)
            text = self.output_input.value.strip()
            if not text:
                raise ParameterError("no output path given", where="output", value="",
                                     fix="type where the volume should go, e.g. volume.zarr")
        if self.save_task.error:
            return None
        volume, target = self.volume, Path(text).expanduser()
        fmt, replace = self.format_input.value, bool(self.overwrite_input.value)

        @_labelled_work
        def work(progress):
            progress(0.0, f"writing {target.name}")
            tomolab.save_volume(volume, target, format=fmt, overwrite=replace)
            return target

        def done(written):
            self.save_label.value = f"saved <code>{written}</code> ({fmt})"

        self.save_label.value = ""
        return self.save_task.run(work, on_done=done, background=self.background)
