"""Reconstruction algorithms on raw arrays (numpy or cupy).

Algorithms are chosen by name from :data:`ALGORITHMS`; each takes line-integral
sinograms ``(z, angle, col)``, angles in radians and the centre column, and
returns slices ``(z, y, x)`` in attenuation per pixel.

The rotation centre is a detector column in pixels (0-based, pixel centres on
integers) in every function here, never an offset from the middle: ``center``
of :func:`fbp`, :func:`gridrec` and :func:`backproject` (one column, or one per
slice for a tilted axis), ``centers`` of :func:`fbp_centers` (trial columns),
and ``center``/``centers``/``to_column`` of :func:`filter_sinograms`, which
moves the axis from its column to ``to_column`` by a phase ramp in the filter's
FFT. That is how one backprojection serves many centres: each sinogram (a slice
of a tilted axis, or a trial centre) is filtered onto one common column and
backprojected with that column. The slices are ``size × size`` pixels
(default: the detector width) with the axis at their middle, ``(size - 1) / 2``.
"""

from tomolab.recon.backproject import backproject
from tomolab.recon.fbp import fbp, fbp_bytes, fbp_centers
from tomolab.recon.filters import FILTERS, filter_sinograms, fourier_filter, padded_width
from tomolab.recon.gridrec import gridrec
from tomolab.recon.points import backproject_points, plane_points

ALGORITHMS = {"fbp": fbp, "gridrec": gridrec}

__all__ = ["ALGORITHMS", "FILTERS", "backproject", "backproject_points", "fbp", "fbp_bytes", "fbp_centers", "filter_sinograms",
           "fourier_filter", "gridrec", "padded_width", "plane_points"]
