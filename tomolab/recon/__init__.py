"""Reconstruction algorithms on raw arrays (numpy or cupy).

Algorithms are chosen by name from :data:`ALGORITHMS`; each takes line-integral
sinograms ``(z, angle, col)``, angles in radians and the centre column, and
returns slices ``(z, y, x)`` in attenuation per pixel.
"""

from tomolab.recon.backproject import backproject
from tomolab.recon.fbp import fbp, fbp_centers
from tomolab.recon.filters import FILTERS, filter_sinograms, fourier_filter, padded_width
from tomolab.recon.gridrec import gridrec

ALGORITHMS = {"fbp": fbp, "gridrec": gridrec}

__all__ = ["ALGORITHMS", "FILTERS", "backproject", "fbp", "fbp_centers", "filter_sinograms",
           "fourier_filter", "gridrec", "padded_width"]
