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

The iterative methods (:func:`sirt`, :func:`cgls`, :func:`tv`, listed in
:data:`ITERATIVE`) fit the slices to the sinograms with a matched projector
pair, :func:`forward_project` and its exact adjoint :func:`back_project_adjoint`,
for scans with few angles, a missing wedge or low dose.
"""

from tomolab.recon.backproject import backproject
from tomolab.recon.fbp import fbp, fbp_bytes, fbp_centers
from tomolab.recon.filters import FILTERS, filter_sinograms, fourier_filter, padded_width
from tomolab.recon.gridrec import gridrec
from tomolab.recon.iterative import ITERATIVE, cgls, iterative_bytes, sirt, tv
from tomolab.recon.project import back_project_adjoint, forward_project
from tomolab.recon.points import backproject_points, plane_points

ALGORITHMS = {"fbp": fbp, "gridrec": gridrec, **ITERATIVE}

#: ``algorithm="auto"``: per backend, the fastest method that meets the accuracy bar (RMS error
#: against the analytic phantom no worse than FBP ramp; within 1e-3 of FBP on smooth phantoms).
#: Each entry is justified by a section of benchmarks/RESULTS.md:
#: numpy -- "The default algorithm on the CPU (issue 16)": gridrec, several times FBP's speed with
#: a smaller phantom error and 1e-4 of FBP on smooth phantoms;
#: cupy -- "Gridrec on the GPU as a gather (issue 16, GPU part)": on an H100, 13.9 ms for 16 slices
#: of 2048² from 1800 angles against FBP's 41.3 ms, a 2048³ volume host to host in 3.5 s against
#: 5.7 s, and 1.9e-5 from FBP on a smooth phantom, so gridrec.
AUTO = {"numpy": "gridrec", "cupy": "gridrec"}

__all__ = ["ALGORITHMS", "AUTO", "FILTERS", "ITERATIVE", "back_project_adjoint", "backproject",
           "backproject_points", "cgls", "fbp", "fbp_bytes", "fbp_centers", "filter_sinograms",
           "forward_project", "fourier_filter", "gridrec", "iterative_bytes", "padded_width",
           "plane_points", "sirt", "tv"]
