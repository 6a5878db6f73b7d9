"""The CPU kernel of the uint16 output (Numba), in its own module so Numba loads on first use."""

import numba
import numpy as np


@numba.njit(nogil=True, cache=True)
def to_uint16(values, offset, scale, out):
    """``out = round((values - offset) / scale)`` clipped to 0 .. 65535; returns the count clipped.

    One pass over the data in float64 registers (no float64 copy of a slab);
    NaN counts as clipped and is stored as 0. Serial and free of the GIL:
    callers split the data over threads of their own, which is safe with every
    Numba threading layer (the writer thread encodes while the compute thread
    runs Numba's parallel kernels).
    """
    clipped = 0
    for i in range(values.size):
        q = np.rint((np.float64(values[i]) - offset) / scale)
        if q >= 0.0 and q <= 65535.0:
            out[i] = np.uint16(q)
        else:
            out[i] = np.uint16(65535) if q > 65535.0 else np.uint16(0)
            clipped += 1
    return clipped
