"""Notebook widgets: ipywidgets containers whose traits are the API.

Each widget composes the layers below (:mod:`tomolab.viz` and the
processing functions) and computes nothing itself. Long work runs through
:class:`TaskBar` (progress bar, cancel, readable errors).

They need the notebook stack: ``pip install "tomolab[notebook]"``.
"""


def _require_notebook_stack():
    """Fail at import, naming the extra to install, when the notebook stack is missing."""
    import importlib.util

    # what the ``notebook`` extra brings that the widgets and viewers use
    stack = ("ipywidgets", "traitlets", "jupyter_bokeh", "bokeh", "holoviews", "panel", "ipyvolume")
    missing = []
    for name in stack:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # ValueError: blocked by a None in sys.modules
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise ImportError(f"tomolab.widgets needs the notebook stack ({', '.join(missing)} not "
                          'installed); install it with: pip install "tomolab[notebook]"')


_require_notebook_stack()

from tomolab.widgets._live import LiveView
from tomolab.widgets._panel import ReconstructionPanel
from tomolab.widgets._segment import Segmenter, otsu_threshold, volume_fraction
from tomolab.widgets._slices import SliceViewer
from tomolab.widgets._sweep import CenterOverlay, CenterSweep, PhaseSweep, SweepView
from tomolab.widgets._task import Cancelled, Progress, TaskBar, dask_progress, format_error, guarded
from tomolab.widgets._volume import VolumeViewer

__all__ = ["Cancelled", "CenterOverlay", "CenterSweep", "LiveView", "PhaseSweep", "Progress", "ReconstructionPanel", "Segmenter", "SliceViewer",
           "SweepView", "TaskBar", "VolumeViewer",
           "dask_progress", "format_error", "guarded", "otsu_threshold", "volume_fraction"]
