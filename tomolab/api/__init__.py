"""The api: thin functions that take and return xarray objects.

Every function validates all its arguments against the scan first
(:mod:`tomolab.api.validate`, naming the parameter, the value and the fix),
then plans, then computes through the engine and the processing packages, and
records in the attrs of what it returns the parameters that made it
(:func:`tomolab.api.provenance.provenance`, built in one place).

* :mod:`~tomolab.api.center`: :func:`find_center`, :func:`sweep_center`
* :mod:`~tomolab.api.reconstruct`: :func:`reconstruct`, :func:`plan_reconstruction`
* :mod:`~tomolab.api.volume`: :func:`reconstruct_to` (streamed to disk, resumable)
* :mod:`~tomolab.api.phase`: :func:`sweep_phase`
* :mod:`~tomolab.api.geometry`: :func:`stitch_360`, :func:`find_axis`
* :mod:`~tomolab.api.accessor`: the ``.tomo`` accessor on scans
"""

from tomolab.api.center import (CENTER_AGREEMENT, CenterEstimate, combine_centers, find_center,
                                sweep_binning, sweep_center)
from tomolab.api.geometry import default_axis_rows, find_axis, stitch_360
from tomolab.api.phase import DEFAULT_RATIOS, physical_parameter, sweep_phase
from tomolab.api.reconstruct import (HALF_PRECISION_KERNEL, ReconstructionPlan, plan_reconstruction,
                                     preprocessing_steps, reconstruct)
from tomolab.api.validate import check_center, resolve_rows
from tomolab.api.volume import reconstruct_to

__all__ = ["CENTER_AGREEMENT", "CenterEstimate", "DEFAULT_RATIOS", "HALF_PRECISION_KERNEL",
           "ReconstructionPlan", "check_center", "combine_centers", "default_axis_rows",
           "find_axis", "find_center", "physical_parameter", "plan_reconstruction",
           "preprocessing_steps", "reconstruct", "reconstruct_to", "resolve_rows",
           "stitch_360", "sweep_binning", "sweep_center", "sweep_phase"]
