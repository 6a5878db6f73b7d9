"""Notebook widgets: ipywidgets containers whose traits are the API.

Each widget composes the layers below (:mod:`tomolab.viz` and the
processing functions) and computes nothing itself. Long work runs through
:class:`TaskBar` (progress bar, cancel, readable errors).
"""

from tomolab.widgets._panel import ReconstructionPanel
from tomolab.widgets._segment import Segmenter, otsu_threshold, volume_fraction
from tomolab.widgets._slices import SliceViewer
from tomolab.widgets._sweep import CenterOverlay, CenterSweep, PhaseSweep, SweepView
from tomolab.widgets._task import Cancelled, Progress, TaskBar, dask_progress, format_error, guarded
from tomolab.widgets._volume import VolumeViewer

__all__ = ["Cancelled", "CenterOverlay", "CenterSweep", "PhaseSweep", "Progress", "ReconstructionPanel", "Segmenter", "SliceViewer",
           "SweepView", "TaskBar", "VolumeViewer",
           "dask_progress", "format_error", "guarded", "otsu_threshold", "volume_fraction"]
