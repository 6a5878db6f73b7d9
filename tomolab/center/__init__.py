"""Centre-of-rotation finding on raw arrays (numpy or cupy).

Each method in :data:`CENTER_METHODS` takes line-integral data and returns
``(center, score)``: the axis as a detector column in pixels, and a score in
[0, 1] that says how far to trust it (below :data:`LOW_SCORE`: check with a
sweep, :mod:`tomolab.sweep`).
"""

from tomolab.center.axis import AxisFit, fit_axis
from tomolab.center.centroid import CenterScore, CentroidFit, centroid_fit, find_center_centroid
from tomolab.center.coverage import Coverage, LimitedAngleWarning, angular_coverage
from tomolab.center.phase_correlation import find_center_phase_correlation, opposite_pair
from tomolab.center.vo import find_center_vo, vo_metric

#: below this score a centre estimate should not be trusted without a sweep
LOW_SCORE = 0.3

#: centre-finding methods: name -> function on (line-integral data) -> (center, score);
#: "vo" takes a 180° sinogram (angle, col), "phase-correlation" two opposite projections,
#: "centroid" a sinogram of any angular range and its angles (for scans of less than 180°)
CENTER_METHODS = {
    "vo": find_center_vo,
    "phase-correlation": find_center_phase_correlation,
    "centroid": find_center_centroid,
}

__all__ = ["AxisFit", "CENTER_METHODS", "CenterScore", "CentroidFit", "Coverage", "LOW_SCORE",
           "LimitedAngleWarning", "angular_coverage", "centroid_fit", "find_center_centroid",
           "find_center_vo", "find_center_phase_correlation", "fit_axis", "opposite_pair",
           "vo_metric"]
