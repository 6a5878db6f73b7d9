"""Reading and writing scans and volumes: lazy readers, atomic writers.

Readers return an :class:`xarray.Dataset` whose variables are dask arrays;
nothing but metadata is read until you compute. Writers stream in slabs and
rename a finished temporary file into place.

The public API::

    open_scan(path, *, layout="auto", angles=None, chunks="auto", entry=None, flats=None, darks=None)
    from_arrays(projections, angles, flats=None, darks=None, *, pixel_size=None, energy=None,
                distance=None, chunks="auto", attrs=None)
    describe(scan_or_path) -> str
    write_dxchange / write_nxtomo / write_tiff_stack(path, projections, angles, flats=None,
                darks=None, *, pixel_size=None, energy=None, distance=None, attrs=None, ...)
    save_volume(volume, path, *, format="auto", overwrite=False), open_volume(path)
    DTYPES, check_dtype, check_value_range, uint16_encoding   # 16-bit outputs of reconstruct_to

For the engine and the api's streamed writes::

    read_frames(data_array, rows, *, out=None, threads=8)   # rows of every frame, as numpy
    read_sample(data_array, frames, rows)                   # rows of a few frames (checks)
    frame_runs(indices) -> [(start, stop), ...]              # ascending indices as runs
    layout_paths(h5file, *, layout="auto", entry=None)     # where a growing file's frames are
    open_sink(path, *, shape, coords, attrs, slab_rows, fingerprint, source=None, ...) -> SlabSink
    check_replaceable(path, protect=())    # never the scan, its folder, cwd, home, /
    check_overwritable(path)               # overwrite replaces only tomolab's own outputs
    OutputLock(path)                       # .NAME.lock: one writer per output
    FrameSpool(path, *, frame_shape, dtype, expected=None)  # a DXchange scan appended frame by frame
"""

from __future__ import annotations

from tomolab.io._build import ScanWarning, from_arrays, read_frames, read_sample
from tomolab.io._encode import DTYPES, check_dtype, check_value_range, encode_rows, uint16_encoding
from tomolab.io._guard import OutputLock, check_free_space, check_overwritable
from tomolab.io._hdf5 import layout_paths
from tomolab.io._lazy import frame_runs
from tomolab.io._open import LAYOUTS, describe, open_scan
from tomolab.io._sinks import SlabSink, open_sink
from tomolab.io._spool import FrameSpool
from tomolab.io._write import (
    check_replaceable,
    open_volume,
    save_volume,
    write_dxchange,
    write_nxtomo,
    write_tiff_stack,
)

__all__ = [
    "open_scan", "from_arrays", "describe", "save_volume", "open_volume",
    "write_dxchange", "write_nxtomo", "write_tiff_stack", "ScanWarning", "LAYOUTS",
    "read_frames", "read_sample", "frame_runs", "open_sink", "SlabSink", "check_replaceable",
    "check_overwritable", "OutputLock", "check_free_space", "DTYPES", "check_dtype",
    "check_value_range", "uint16_encoding", "encode_rows", "layout_paths", "FrameSpool",
]
