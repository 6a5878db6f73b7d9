"""Turn volumes into things a browser can show.

Pure helpers, no widgets: block-averaged downsampling for 3-D views,
contrast limits from percentiles of a subsample, holoviews images of slices,
the one PNG encoder (:func:`png_bytes`, :func:`save_png`), and the notebook
set-up that keeps every JavaScript resource local.

>>> import numpy as np
>>> import tomolab.viz as tv
>>> vol = np.random.default_rng(0).random((64, 64, 64), dtype=np.float32)
>>> tv.block_downsample(vol, max_shape=(16, 16, 16)).shape
(16, 16, 16)
"""

from tomolab.viz._arrays import (
    as_volume,
    block_downsample,
    block_factors,
    contrast_limits,
    subsample,
)
from tomolab.viz._images import (
    MAX_SLICE_PIXELS,
    SLICE_AXES,
    datashader_available,
    get_slice,
    histogram,
    in_length_unit,
    length_unit,
    slice_image,
    value_label,
    with_coords,
)
from tomolab.viz._notebook import bokehjs_bundle, ensure_extension, setup_notebook
from tomolab.viz._overlay import (
    center_from_shift,
    mirror_overlay,
    opposite_projections,
    shift_from_center,
)
from tomolab.viz._png import PNG_PERCENTILES, png_bytes, save_png

__all__ = [
    "MAX_SLICE_PIXELS",
    "PNG_PERCENTILES",
    "SLICE_AXES",
    "as_volume",
    "block_downsample",
    "block_factors",
    "bokehjs_bundle",
    "center_from_shift",
    "contrast_limits",
    "datashader_available",
    "ensure_extension",
    "get_slice",
    "histogram",
    "in_length_unit",
    "length_unit",
    "mirror_overlay",
    "opposite_projections",
    "png_bytes",
    "save_png",
    "setup_notebook",
    "shift_from_center",
    "slice_image",
    "subsample",
    "value_label",
    "with_coords",
]
