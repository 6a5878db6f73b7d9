"""Preprocessing: pure array functions on numpy or cupy arrays.

The usual order for a slab ``(angle, row, col)``::

    normalize -> remove_zingers -> remove_stripes -> retrieve_phase | minus_log

Every function takes the data first and its options keyword-only, keeps the
array module of its input (a cupy slab stays on the GPU) and raises
:class:`tomolab.errors.ParameterError` naming the parameter, the value and
the fix. :data:`PREPROCESSING_STEPS` maps step names to these functions for
pipelines; :data:`STRIPE_METHODS` the stripe-removal methods.

Examples
--------
>>> import numpy as np
>>> from tomolab import prep
>>> proj = np.full((3, 4, 5), 50, dtype=np.uint16)
>>> flats, darks = np.full((2, 4, 5), 100, np.uint16), np.zeros((1, 4, 5), np.uint16)
>>> line_integrals = prep.minus_log(prep.normalize(proj, flats, darks))
>>> float(line_integrals[0, 0, 0]) == float(np.float32(np.log(2)))
True
"""

from tomolab.prep.normalize import (defective_pixels, minus_log, normalize, normalize_interpolated,
                                    repair_pixels)
from tomolab.prep.phase import (fresnel_propagate, padded_shape, paganin_halo, paganin_length,
                                retrieve_phase, wavelength)
from tomolab.prep.stripes import (STRIPE_METHODS, remove_stripes, remove_stripes_filtering,
                                  remove_stripes_fourier_wavelet, remove_stripes_offsets,
                                  remove_stripes_sorting)
from tomolab.prep.half_acquisition import (OverlapFit, find_overlap, opposite_projections,
                                           stitch_half_acquisition)
from tomolab.prep.zingers import remove_zingers

#: Preprocessing steps by name, in their usual order, for pipelines and CLIs.
PREPROCESSING_STEPS = {
    "normalize": normalize,
    "normalize_interpolated": normalize_interpolated,
    "remove_zingers": remove_zingers,
    "remove_stripes": remove_stripes,
    "retrieve_phase": retrieve_phase,
    "minus_log": minus_log,
}

__all__ = [
    "normalize", "normalize_interpolated", "minus_log", "defective_pixels", "repair_pixels",
    "remove_zingers",
    "remove_stripes", "remove_stripes_sorting", "remove_stripes_filtering",
    "remove_stripes_fourier_wavelet", "remove_stripes_offsets", "STRIPE_METHODS", "retrieve_phase",
    "fresnel_propagate", "wavelength", "paganin_length", "paganin_halo", "padded_shape",
    "PREPROCESSING_STEPS", "OverlapFit", "find_overlap",
    "opposite_projections", "stitch_half_acquisition",
]
